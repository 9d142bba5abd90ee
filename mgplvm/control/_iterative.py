"""Matmul/LU-only iterations for batched (and CUDA) solves, on torch tensors.

Hand-written because PyTorch has no Schur decomposition, so Bartels–Stewart cannot run on
batched or CUDA tensors.  Every routine works on leading batch dimensions, on any device and in
float32/float64/complex64/complex128.  None of them is ever differentiated through: the autograd
Functions in :mod:`mgplvm.control._functions` call them without gradient tracking and supply the
adjoint equations themselves.  On CPU the small real matrix products go through numpy's
matmul (:func:`_mm`), which is faster there than torch's batched kernel.

Each routine returns the solution together with a boolean ``ok`` mask (batch shape) that tells
which systems met the method's precondition (e.g. a Hurwitz ``A`` for the Lyapunov sign
iteration); the caller decides whether to fall back or raise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "cayley_smith",
    "kron_dlyap",
    "kron_sylvester",
    "sda_dare",
    "sign_care",
    "sign_lyapunov",
    "sign_sylvester",
    "smith_dlyap",
]


def _eps(x: Tensor) -> float:
    return torch.finfo(x.real.dtype if x.is_complex() else x.dtype).eps


def _fro(x: Tensor) -> Tensor:
    """Frobenius norm over the last two dims, kept as (..., 1, 1) for broadcasting."""
    return torch.linalg.matrix_norm(x).unsqueeze(-1).unsqueeze(-1)


def _eye_like(x: Tensor, n: int | None = None) -> Tensor:
    n = x.shape[-1] if n is None else n
    return torch.eye(n, dtype=x.dtype, device=x.device)


_NUMPY_MATMUL_DTYPES = (torch.float32, torch.float64)
_NUMPY_MATMUL_MAX_SIDE = 64


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` with broadcasting.  Real CPU matrices of side ≤ 64 go through numpy's matmul
    (one BLAS call per matrix, zero-copy views both ways): for the stacks of small products in
    these iterations it is faster than torch's batched CPU kernel in float32/float64 (section 4
    of ``benchmarks/solvers.py`` prints the ratio).  Complex, CUDA and larger matrices use
    ``torch.matmul``.  Never differentiated (see the module docstring)."""
    if (
        a.device.type == "cpu"
        and b.device.type == "cpu"
        and a.dtype in _NUMPY_MATMUL_DTYPES
        and b.dtype == a.dtype
        and max(a.shape[-2], a.shape[-1], b.shape[-1]) <= _NUMPY_MATMUL_MAX_SIDE
    ):
        with np.errstate(all="ignore"):  # overflow in a diverging system gives inf, as in torch
            return torch.from_numpy(np.matmul(a.detach().numpy(), b.detach().numpy()))
    return a @ b


def _max(x: Tensor) -> float:
    return float(x.max()) if x.numel() else 0.0


def _inv_logdet(M: Tensor) -> tuple[Tensor, Tensor]:
    """M⁻¹ and log|det M| (..., 1, 1) from one LU factorisation."""
    LU, piv, _ = torch.linalg.lu_factor_ex(M)
    eye = _eye_like(M).expand_as(M)
    Mi = torch.linalg.lu_solve(LU, piv, eye)
    logdet = LU.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
    return Mi, logdet[..., None, None]


def _rel_change(new: Tensor, old: Tensor) -> float:
    return _max((_fro(new - old) / _fro(new)).nan_to_num(nan=math.inf))


def sign_sylvester(
    A: Tensor, B: Tensor, Q: Tensor, *, maxiter: int = 100
) -> tuple[Tensor, Tensor, int]:
    """Solve AX + XB = Q through the Newton sign iteration of M = [[A, −Q], [0, −B]].

    If the spectra of A and −B are separated by the imaginary axis,
    sign(M) = [[s I, −2 s X], [0, −s I]] with s = ±1 (s = −1: A and B Hurwitz).  The blocks
    are iterated separately, M ← (μM + M⁻¹/μ)/2 with A_k, D_k = −B_k and
    C_k ← (μC_k − A_k⁻¹C_kD_k⁻¹/μ)/2, determinant scaling μ = |det M_k|^{−1/(n+m)} until the
    iteration settles.  Shapes: A (..., n, n), B (..., m, m), Q (..., n, m) (broadcast).

    Returns (X, ok, iterations); ``ok`` is False where the spectra were not separated.
    """
    tol = math.sqrt(10 * _eps(A))
    n, m = A.shape[-1], B.shape[-1]
    batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2], Q.shape[:-2])
    Ak = A.expand(*batch, n, n)
    Dk = (-B).expand(*batch, m, m)
    Ck = (-Q).expand(*batch, n, m)
    scale = True
    it = 0
    for it in range(1, maxiter + 1):  # noqa: B007
        Ai, ldA = _inv_logdet(Ak)
        Di, ldD = _inv_logdet(Dk)
        if scale:
            mu = torch.exp(-(ldA + ldD) / (n + m))
            mu = torch.where(torch.isfinite(mu), mu, torch.ones_like(mu))
        else:
            mu = torch.ones((), dtype=ldA.dtype, device=A.device)
        A_new = 0.5 * (mu * Ak + Ai / mu)
        D_new = 0.5 * (mu * Dk + Di / mu)
        Ck = 0.5 * (mu * Ck - _mm(_mm(Ai, Ck), Di) / mu)
        d = max(_rel_change(A_new, Ak), _rel_change(D_new, Dk))
        Ak, Dk = A_new, D_new
        if d < 1e-2:
            scale = False
        if d <= tol:
            break
    trace = Ak.diagonal(dim1=-2, dim2=-1).real.sum(-1)
    one = torch.ones((), dtype=trace.dtype, device=A.device)
    s = torch.where(trace >= 0, one, -one)[..., None, None]
    lim = 1e3 * tol
    ok = (_fro(Ak - s * _eye_like(A, n)) <= lim * math.sqrt(n)) & (
        _fro(Dk + s * _eye_like(A, m)) <= lim * math.sqrt(m)
    )
    ok = ok[..., 0, 0] & torch.isfinite(Ck).flatten(-2).all(-1)
    return -Ck / (2 * s), ok, it


def sign_lyapunov(
    A: Tensor, Q: Tensor, *, maxiter: int = 100, return_sign: bool = False
) -> tuple[Any, ...]:
    """Solve AX + XAᴴ = Q by the Newton sign iteration of [[A, −Q], [0, −Aᴴ]].

    Needs A Hurwitz (or anti-Hurwitz): A ← (μA + A⁻¹/μ)/2, C ← (μC + A⁻¹CA⁻ᴴ/μ)/2 (one LU per
    step, determinant scaling μ = |det A_k|^{−1/n} early on) converges to A → sI, X = −C/(2s).
    Shapes: A (..., n, n), Q (..., n, n).  Returns (X, ok, iterations), plus a mask that is
    True where A was Hurwitz (s = −1) when ``return_sign``.
    """
    tol = math.sqrt(10 * _eps(A))
    batch = torch.broadcast_shapes(A.shape[:-2], Q.shape[:-2])
    n = A.shape[-1]
    Ak = A.expand(*batch, n, n)
    Ck = (-Q).expand(*batch, n, n)
    scale = True
    it = 0
    for it in range(1, maxiter + 1):  # noqa: B007
        Ai, ld = _inv_logdet(Ak)
        if scale:
            mu = torch.exp(-ld / n)
            mu = torch.where(torch.isfinite(mu), mu, torch.ones_like(mu))
            half_mu = 0.5 * mu
            A_new = torch.addcmul(half_mu * Ak, Ai, 0.5 / mu)
            P = Ai * torch.rsqrt(2 * mu)
        else:
            A_new = 0.5 * (Ak + Ai)
            half_mu = 0.5
            P = Ai * math.sqrt(0.5)
        # C ← μC/2 + (A⁻¹/√(2μ)) C (A⁻¹/√(2μ))ᴴ
        Ck = half_mu * Ck + _mm(_mm(P, Ck), P.mH)
        d = _rel_change(A_new, Ak)
        Ak = A_new
        if d < 1e-2:
            scale = False
        if d <= tol:
            break
    trace = Ak.diagonal(dim1=-2, dim2=-1).real.sum(-1)
    one = torch.ones((), dtype=trace.dtype, device=A.device)
    s = torch.where(trace >= 0, one, -one)[..., None, None]
    ok = (_fro(Ak - s * _eye_like(A, n)) <= 1e3 * tol * math.sqrt(n))[..., 0, 0]
    ok = ok & torch.isfinite(Ck).flatten(-2).all(-1)
    X = -Ck / (2 * s)
    if return_sign:
        return X, ok, it, s[..., 0, 0] < 0
    return X, ok, it


def smith_dlyap(A: Tensor, Q: Tensor, *, maxiter: int = 64) -> tuple[Tensor, Tensor, int]:
    """Solve AXAᴴ − X + Q = 0 by squared Smith doubling (needs spectral radius ρ(A) < 1).

    X_{k+1} = X_k + A_k X_k A_kᴴ, A_{k+1} = A_k², X_0 = Q, A_0 = A, so that after k steps
    X_k = Σ_{j<2^k} A^j Q A^jᴴ.  Stops once ‖A_k‖_F² is below machine precision (the remaining
    tail is then negligible).  Shapes: A (..., n, n), Q (..., n, n).  Returns (X, ok, iters).
    """
    eps = _eps(A)
    batch = torch.broadcast_shapes(A.shape[:-2], Q.shape[:-2])
    n = A.shape[-1]
    Ak = A.expand(*batch, n, n)
    X = Q.expand(*batch, n, n)
    it = 0
    thresh = 0.01 * eps
    nrm = _fro(Ak)
    for it in range(1, maxiter + 1):  # noqa: B007
        if _max(nrm.nan_to_num(nan=math.inf)) <= math.sqrt(thresh):  # no float ** 2 overflow
            break
        X = X + _mm(_mm(Ak, X), Ak.mH)
        Ak = _mm(Ak, Ak)
        nrm = _fro(Ak)
        if not math.isfinite(_max(nrm.nan_to_num(nan=math.inf))):
            break
    ok = (nrm**2 <= thresh)[..., 0, 0] & torch.isfinite(X).flatten(-2).all(-1)
    return X, ok, it


def _geometric_mean_abs_eig(M: Tensor) -> Tensor:
    """|det M|^{1/n}, the geometric mean of |λ(M)|, from one LU, as (..., 1, 1).  0 or inf for
    a (numerically) singular or huge M: the caller's iteration then fails for that system."""
    return torch.linalg.slogdet(M)[1].div(M.shape[-1]).exp()[..., None, None]


def cayley_smith(
    A: Tensor, Q: Tensor, B: Tensor | None = None, *, maxiter: int = 50
) -> tuple[Tensor, Tensor, int, Tensor]:
    """Solve AX + XB = Q (AX + XAᴴ = Q when ``B`` is None) by a Cayley transform and squared
    Smith doubling: one inverse per coefficient matrix, then matrix products only.

    With one real shift p, (A + pI)X(B + pI) − (A − pI)X(B − pI) = 2p(AX + XB) turns the
    equation into the Stein equation X = A_d X B_d + X₀ with M_A = (A − pI)⁻¹,
    M_B = (B − pI)⁻¹, A_d = I + 2p M_A, B_d = I + 2p M_B and X₀ = −2p M_A Q M_B.  Its solution
    Σ_j A_d^j X₀ B_d^j is summed by doubling: X ← X + A_k X B_k, A_k ← A_k², B_k ← B_k², so
    after k steps 2^k terms are in.  ρ(A_d), ρ(B_d) < 1 exactly when A and B are both Hurwitz
    (p > 0) or both anti-Hurwitz (p < 0); |p| is the geometric mean of |λ| (from det A, det B),
    the optimal single shift for a real spectrum, and its sign is that of −Re tr(A + B).
    The iteration stops once ‖A_k‖_F ‖B_k‖_F ≤ √eps: the remaining tail A_{k+1} X B_{k+1} is
    then below eps relative to X.  Each system of the batch has its own shift.  Hand-written:
    torch has neither this nor a Schur decomposition for Bartels–Stewart.

    Shapes: A (..., n, n), B (..., m, m), Q (..., n, m), broadcast.  Returns (X, ok, iterations,
    hurwitz): ``ok`` is False where the doubling did not converge (spectra not separated by the
    imaginary axis, or too close to it for ``maxiter`` doublings); ``hurwitz`` marks p > 0.
    """
    lyap = B is None
    n = A.shape[-1]
    trace = A.diagonal(dim1=-2, dim2=-1).real.sum(-1)
    if lyap:
        p = _geometric_mean_abs_eig(A)
    else:
        m = B.shape[-1]
        p = (_geometric_mean_abs_eig(A) * _geometric_mean_abs_eig(B)).sqrt()
        trace = trace * (1 / n) + B.diagonal(dim1=-2, dim2=-1).real.sum(-1) * (1 / m)
    p = p.copysign(-trace[..., None, None])  # p > 0 for Hurwitz A (and B)
    MA = torch.linalg.inv_ex(A - p * _eye_like(A, n))[0]
    MB = MA.mH if lyap else torch.linalg.inv_ex(B - p * _eye_like(B, m))[0]
    X = (-2 * p) * _mm(_mm(MA, Q), MB)
    Ak = torch.addcmul(_eye_like(A, n), MA, 2 * p)
    Bk = Ak.mH if lyap else torch.addcmul(_eye_like(B, m), MB, 2 * p)
    thresh = math.sqrt(_eps(A))
    huge = math.sqrt(torch.finfo(p.dtype).max)
    batch = X.shape[:-2]
    Xf, nrm, it = _doubling(
        X.reshape(-1, *X.shape[-2:]),
        _flat_or_shared(Ak, batch),
        None if lyap else _flat_or_shared(Bk, batch),
        thresh,
        huge,
        maxiter,
    )
    X = Xf.reshape(X.shape)
    ok = (nrm.reshape(batch) <= thresh) & X.sum((-2, -1)).isfinite()  # NaN/inf reach the sum
    return X, ok, it, (p[..., 0, 0] > 0).expand(batch)


def _flat_or_shared(M: Tensor, batch: torch.Size) -> Tensor:
    """M (..., n, n) as (count, n, n) over ``batch``, or as (n, n) when one M serves every
    system (its powers are then computed once)."""
    if M.dim() == 2 or M.shape[:-2].numel() == 1:
        return M.reshape(M.shape[-2:])
    return M.expand(*batch, *M.shape[-2:]).reshape(-1, *M.shape[-2:])


def _doubling(
    X: Tensor, Ak: Tensor, Bk: Tensor | None, thresh: float, huge: float, maxiter: int
) -> tuple[Tensor, Tensor, int]:
    """The doubling X ← X + A_k X B_k, A_k ← A_k², B_k ← B_k² (B_k = A_kᴴ when ``Bk`` is None)
    on a flat batch X (b, n, m), with A_k, B_k per system (b, ·, ·) or shared (2-D).  It stops
    when ‖A_k‖_F‖B_k‖_F ≤ ``thresh`` for every system (or it diverged past ``huge``) and
    iterates only on the systems still converging: once a quarter of the active ones have
    settled, the others are gathered, so a few slow systems do not keep the whole batch
    iterating.  Returns X, the final ‖A_k‖_F‖B_k‖_F per system (b,) and the iteration count."""
    lyap = Bk is None
    per_system = Ak.dim() == 3 and (lyap or Bk.dim() == 3)
    out = nrm_all = idx = None  # settled results, and the active systems' batch indices
    nrm = X.new_zeros(X.shape[:1], dtype=X.real.dtype)
    it = 0
    for it in range(1, maxiter + 1):  # noqa: B007
        Bm = Ak.mH if lyap else Bk
        X = _mm(_mm(Ak, X), Bm).add_(X)
        nA = torch.linalg.matrix_norm(Ak)
        nrm = (nA.square() if lyap else nA * torch.linalg.matrix_norm(Bk)).expand(X.shape[:1])
        n_active = 0
        if not float(nrm.max() if nrm.numel() else 0.0) <= thresh:
            active = (nrm > thresh) & (nrm < huge)  # NaN (diverged) is inactive as well
            n_active = int(active.sum())
        if n_active == 0 or (per_system and n_active <= 0.75 * nrm.shape[0]):
            # write the settled systems back
            if idx is None:
                out, nrm_all = X, nrm.clone()
                idx = torch.arange(X.shape[0], device=X.device)
            else:
                out = out.index_copy(0, idx, X)
                nrm_all = nrm_all.index_copy(0, idx, nrm)
            if n_active == 0:
                return out, nrm_all, it
            keep = active.nonzero()[:, 0]  # keep iterating on the rest only
            idx, X, Ak = idx[keep], X[keep], Ak[keep]
            Bk = None if lyap else Bk[keep]
        Ak = _mm(Ak, Ak)
        Bk = None if lyap else _mm(Bk, Bk)
    if idx is None:
        return X, nrm, it
    return out.index_copy(0, idx, X), nrm_all.index_copy(0, idx, nrm), it


def _newton_sign(M: Tensor, *, maxiter: int = 100) -> tuple[Tensor, int]:
    """Newton iteration for sign(M), determinant scaling early on (no spectral decomposition)."""
    tol = math.sqrt(10 * _eps(M))
    N = M.shape[-1]
    Mk = M
    scale = True
    it = 0
    for it in range(1, maxiter + 1):  # noqa: B007
        Mi, ld = _inv_logdet(Mk)
        if scale:
            mu = torch.exp(-ld / N)
            mu = torch.where(torch.isfinite(mu), mu, torch.ones_like(mu))
        else:
            mu = torch.ones((), dtype=ld.dtype, device=M.device)
        M_new = 0.5 * (mu * Mk + Mi / mu)
        d = _rel_change(M_new, Mk)
        Mk = M_new
        if d < 1e-2:
            scale = False
        if d <= tol:
            break
    return Mk, it


def sign_care(A: Tensor, G: Tensor, Q: Tensor, *, maxiter: int = 100) -> tuple[Tensor, Tensor, int]:
    """Stabilising solution of AᴴX + XA − XGX + Q = 0 (G = BR⁻¹Bᴴ) by the Hamiltonian sign.

    W = sign(H), H = [[A, −G], [−Q, −Aᴴ]]; the stable invariant subspace [I; X] is the null
    space of W + I, so [[W₁₂], [W₂₂ + I]] X = −[[W₁₁ + I], [W₂₁]] (least squares).
    Shapes: A, G, Q (..., n, n).  Returns (X, ok, iterations), X Hermitian.
    """
    batch = torch.broadcast_shapes(A.shape[:-2], G.shape[:-2], Q.shape[:-2])
    n = A.shape[-1]
    A, G, Q = (t.expand(*batch, n, n) for t in (A, G, Q))
    H = torch.cat([torch.cat([A, -G], -1), torch.cat([-Q, -A.mH], -1)], -2)
    W, it = _newton_sign(H, maxiter=maxiter)
    I = _eye_like(A, n)
    lhs = torch.cat([W[..., :n, n:], W[..., n:, n:] + I], -2)
    rhs = -torch.cat([W[..., :n, :n] + I, W[..., n:, :n]], -2)
    X = _lstsq(lhs, rhs)
    X = 0.5 * (X + X.mH)
    ok = torch.isfinite(X).flatten(-2).all(-1)
    return X, ok, it


def _lstsq(L: Tensor, R: Tensor) -> Tensor:
    """Full-column-rank least squares by QR (works on CPU and CUDA, batched)."""
    Qm, Rm = torch.linalg.qr(L)
    return torch.linalg.solve_triangular(Rm, Qm.mH @ R, upper=True)


def sda_dare(A: Tensor, G: Tensor, Q: Tensor, *, maxiter: int = 100) -> tuple[Tensor, Tensor, int]:
    """Stabilising solution of X = AᴴX(I + GX)⁻¹A + Q (the DARE, G = BR⁻¹Bᴴ) by SDA.

    Structured doubling (Chu, Fan & Lin 2005): with W = I + G_k H_k,
    A_{k+1} = A_k W⁻¹ A_k, G_{k+1} = G_k + A_k W⁻¹ G_k A_kᴴ, H_{k+1} = H_k + A_kᴴ H_k W⁻¹ A_k,
    H_k → X quadratically.  Shapes: A, G, Q (..., n, n).  Returns (X, ok, iterations).
    """
    eps = _eps(A)
    batch = torch.broadcast_shapes(A.shape[:-2], G.shape[:-2], Q.shape[:-2])
    n = A.shape[-1]
    Ak, Gk, Hk = (t.expand(*batch, n, n) for t in (A, G, Q))
    I = _eye_like(A, n)
    it = 0
    for it in range(1, maxiter + 1):  # noqa: B007
        W = I + _mm(Gk, Hk)
        V = torch.linalg.solve_ex(W, torch.cat([Ak, Gk], -1))[0]
        V1, V2 = V[..., :n], V[..., n:]
        A_new = _mm(Ak, V1)
        G_new = Gk + _mm(_mm(Ak, V2), Ak.mH)
        H_new = Hk + _mm(_mm(Ak.mH, Hk), V1)
        G_new = 0.5 * (G_new + G_new.mH)
        H_new = 0.5 * (H_new + H_new.mH)
        d = _max((_fro(H_new - Hk) / _fro(H_new)).nan_to_num(nan=math.inf))
        Ak, Gk, Hk = A_new, G_new, H_new
        if d <= 10 * eps or _max(_fro(Ak)) <= math.sqrt(0.01 * eps):
            break
    ok = torch.isfinite(Hk).flatten(-2).all(-1)
    return Hk, ok, it


def kron_sylvester(A: Tensor, B: Tensor, Q: Tensor) -> tuple[Tensor, Tensor]:
    """Solve AX + XB = Q by the Kronecker (vec) system (I ⊗ A + Bᵀ ⊗ I) vec X = vec Q.

    O((nm)³); meant for tiny systems.  Shapes: A (..., n, n), B (..., m, m), Q (..., n, m).
    Returns (X, ok) with ok False where the system was exactly singular.
    """
    n, m = A.shape[-1], B.shape[-1]
    batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2], Q.shape[:-2])
    In, Im = _eye_like(A, n), _eye_like(A, m)
    # column-major vec: index (j, i) <-> X[i, j]
    K = torch.einsum("jl,...ik->...jilk", Im, A) + torch.einsum("...lj,ik->...jilk", B, In)
    K = K.reshape(*K.shape[:-4], n * m, n * m).expand(*batch, n * m, n * m)
    rhs = Q.mT.reshape(*Q.shape[:-2], n * m).expand(*batch, n * m)
    x, info = torch.linalg.solve_ex(K, rhs.unsqueeze(-1))
    X = x[..., 0].reshape(*batch, m, n).mT
    return X, (info == 0) & torch.isfinite(X).flatten(-2).all(-1)


def kron_dlyap(A: Tensor, Q: Tensor) -> tuple[Tensor, Tensor]:
    """Solve AXAᴴ − X + Q = 0 by the Kronecker system (Ā ⊗ A − I) vec X = −vec Q."""
    n = A.shape[-1]
    batch = torch.broadcast_shapes(A.shape[:-2], Q.shape[:-2])
    K = torch.einsum("...jl,...ik->...jilk", A.conj(), A).reshape(*A.shape[:-2], n * n, n * n)
    K = (K - _eye_like(A, n * n)).expand(*batch, n * n, n * n)
    rhs = (-Q).mT.reshape(*Q.shape[:-2], n * n).expand(*batch, n * n)
    x, info = torch.linalg.solve_ex(K, rhs.unsqueeze(-1))
    X = x[..., 0].reshape(*batch, n, n).mT
    return X, (info == 0) & torch.isfinite(X).flatten(-2).all(-1)
