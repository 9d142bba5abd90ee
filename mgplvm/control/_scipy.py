"""CPU backend: Bartels–Stewart through LAPACK (``?gees`` + ``?trsyl``) and scipy's Riccati solvers.

Hand-written because PyTorch has no Schur decomposition.  The Lyapunov/Sylvester solves call
the LAPACK routines that :func:`scipy.linalg.solve_sylvester` uses, directly, so that

* the eigenvalues come out of the Schur factorisation for free (near-singularity and stability
  checks cost nothing), and
* the Schur factors of A are cached and reused for the adjoint solve with Aᴴ (backward pass) and
  for tangent solves (forward mode): only a triangular ``?trsyl`` solve and two products are
  left, which is what keeps backward/forward cost low.

The discrete Lyapunov (Stein) equation is mapped to a continuous one by the bilinear transform
M = (A + I)⁻¹(A − I), exactly as :func:`scipy.linalg.solve_discrete_lyapunov` does for n ≥ 10.
Every routine loops over a flattened batch; factors of a shared (broadcast) A are computed once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla
from scipy.linalg import get_lapack_funcs

__all__ = ["care", "clyap", "dare", "dlyap", "sylvester"]

_FUNCS: dict[tuple[str, str], Any] = {}
_LWORK: dict[tuple[str, int], int] = {}


def _lapack(name: str, dtype: np.dtype) -> Any:
    key = (name, dtype.char)
    f = _FUNCS.get(key)
    if f is None:
        (f,) = get_lapack_funcs((name,), dtype=dtype)
        _FUNCS[key] = f
    return f


def _select(*args: Any) -> int:
    return 0


@dataclass
class Factor:
    """Schur factorisation M = Z T Zᴴ of a matrix derived from ``src`` (cache entry)."""

    src: np.ndarray  # the matrix the factor was computed for (used to validate cache hits)
    T: np.ndarray
    Z: np.ndarray
    eig: np.ndarray  # eigenvalues of M (complex)
    lu: Any = None  # dlyap only: LU factors of src + I


def schur(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real (quasi-triangular) or complex Schur form a = Z T Zᴴ, plus eigenvalues."""
    n = a.shape[0]
    a = np.array(a, order="F", copy=True)
    gees = _lapack("gees", a.dtype)
    key = (a.dtype.char, n)
    lwork = _LWORK.get(key)
    if lwork is None:
        res = gees(_select, a, lwork=-1)
        lwork = max(int(np.real(res[-2][0])), 3 * n, 1)
        _LWORK[key] = lwork
    res = gees(_select, a, lwork=lwork, overwrite_a=1)
    if res[-1] != 0:
        raise np.linalg.LinAlgError(f"Schur decomposition failed (LAPACK ?gees info={res[-1]})")
    if np.iscomplexobj(a):
        T, _, w, Z = res[:4]
        return T, Z, w
    T, _, wr, wi, Z = res[:5]
    return T, Z, wr + 1j * wi


def _lookup(
    entries: list[Factor | None], i: int, src: np.ndarray, make: Callable[[np.ndarray], Factor]
) -> tuple[Factor, str]:
    """Cached factor for ``src`` (op "N") or for ``srcᴴ`` (op "C"); computed when missing."""
    e = entries[i]
    if e is not None and e.src.shape == src.shape:
        if np.array_equal(e.src, src):
            return e, "N"
        if np.array_equal(e.src, src.conj().T):
            return e, "C"
    e = make(src)
    entries[i] = e
    return e, "N"


def _schur_factor(src: np.ndarray) -> Factor:
    T, Z, eig = schur(src)
    return Factor(src.copy(), T, Z, eig)


def _entries(cache: dict[str, Any], key: str, count: int) -> list[Factor | None]:
    lst = cache.get(key)
    if lst is None or len(lst) != count:
        lst = [None] * count
        cache[key] = lst
    return lst


def _op(op: str, real: bool) -> str:
    return "T" if (op == "C" and real) else op


def _flip(op: str) -> str:
    return "C" if op == "N" else "N"


def _trsyl(fa: Factor, opa: str, fb: Factor, opb: str, F: np.ndarray) -> np.ndarray:
    """Solve op(T_a) Y + Y op(T_b) = F."""
    real = not np.iscomplexobj(fa.T)
    trsyl = _lapack("trsyl", fa.T.dtype)
    Y, scale, info = trsyl(fa.T, fb.T, F, trana=_op(opa, real), tranb=_op(opb, real))
    if info < 0:  # pragma: no cover - argument error
        raise ValueError(f"LAPACK ?trsyl: illegal value in argument {-info}")
    return Y / scale if scale != 1.0 else Y


def _eig(f: Factor, op: str) -> np.ndarray:
    return f.eig if op == "N" else f.eig.conj()


class Worst:
    """Track the worst (smallest relative) eigenvalue separation over a batch."""

    def __init__(self) -> None:
        self.rel = np.inf
        self.msg = ""

    def update(self, sep: float, scale: float, msg: Callable[[], str]) -> None:
        rel = sep / scale if scale > 0 else 0.0
        if rel < self.rel:
            self.rel, self.msg, self.sep, self.scale = rel, msg(), sep, scale


def _pair_min(
    la: np.ndarray, mu: np.ndarray, fn: Callable[[Any, Any], Any]
) -> tuple[float, int, int]:
    v = np.abs(fn(la[:, None], mu[None, :]))
    k = int(np.argmin(v))
    i, j = divmod(k, v.shape[1])
    return float(v[i, j]), i, j


def sylvester(
    A: np.ndarray,
    ia: np.ndarray,
    B: np.ndarray,
    ib: np.ndarray,
    Q: np.ndarray,
    iq: np.ndarray,
    cache: dict[str, Any],
    check: bool,
) -> tuple[np.ndarray, Worst | None]:
    """AX + XB = Q for systems k: A[ia[k]], B[ib[k]], Q[iq[k]] (flattened batches)."""
    N = len(ia)
    out = np.empty((N, A.shape[-2], B.shape[-1]), dtype=np.result_type(A, Q))
    ea = _entries(cache, "sylv:A", A.shape[0])
    eb = _entries(cache, "sylv:B", B.shape[0])
    worst = Worst() if check else None
    for k in range(N):
        fa, opa = _lookup(ea, int(ia[k]), A[ia[k]], _schur_factor)
        fb, opb = _lookup(eb, int(ib[k]), B[ib[k]], _schur_factor)
        F = fa.Z.conj().T @ Q[iq[k]] @ fb.Z
        Y = _trsyl(fa, opa, fb, opb, F)
        out[k] = fa.Z @ Y @ fb.Z.conj().T
        if worst is not None:
            la, mb = _eig(fa, opa), _eig(fb, opb)
            sep, i, j = _pair_min(la, mb, np.add)
            scale = np.linalg.norm(A[ia[k]]) + np.linalg.norm(B[ib[k]])
            worst.update(
                sep,
                scale,
                lambda la=la, mb=mb, i=i, j=j, k=k: (
                    f"eigenvalues λ = {la[i]:.3g} of A and μ = {mb[j]:.3g} of B give "
                    f"|λ + μ| = {abs(la[i] + mb[j]):.2e} (system {k})"
                ),
            )
    return out, worst


def clyap(
    A: np.ndarray,
    ia: np.ndarray,
    Q: np.ndarray,
    iq: np.ndarray,
    cache: dict[str, Any],
    check: bool,
    stable: bool,
) -> tuple[np.ndarray, Worst | None, tuple[int, complex] | None]:
    """AX + XAᴴ = Q.  Returns (X, worst separation, first unstable (system, eigenvalue))."""
    N = len(ia)
    out = np.empty((N, *Q.shape[-2:]), dtype=np.result_type(A, Q))
    ea = _entries(cache, "clyap:A", A.shape[0])
    worst = Worst() if check else None
    unstable = None
    for k in range(N):
        f, op = _lookup(ea, int(ia[k]), A[ia[k]], _schur_factor)
        F = f.Z.conj().T @ Q[iq[k]] @ f.Z
        Y = _trsyl(f, op, f, _flip(op), F)
        out[k] = f.Z @ Y @ f.Z.conj().T
        lam = _eig(f, op)
        if stable and unstable is None and lam.real.max() >= 0:
            unstable = (k, complex(lam[np.argmax(lam.real)]))
        if worst is not None:
            sep, i, j = _pair_min(lam, lam.conj(), np.add)
            scale = 2 * np.linalg.norm(A[ia[k]])
            worst.update(
                sep,
                scale,
                lambda lam=lam, i=i, j=j, k=k: (
                    f"eigenvalues λᵢ = {lam[i]:.3g}, λⱼ = {lam[j]:.3g} of A give "
                    f"|λᵢ + λ̄ⱼ| = {abs(lam[i] + lam[j].conjugate()):.2e} (system {k})"
                ),
            )
    return out, worst, unstable


def _dlyap_factor(src: np.ndarray) -> Factor:
    n = src.shape[0]
    eye = np.eye(n, dtype=src.dtype)
    with np.errstate(all="ignore"):
        lu = sla.lu_factor(src + eye, check_finite=False)
    if not np.all(np.isfinite(lu[0])) or np.min(np.abs(np.diag(lu[0]))) == 0:
        raise np.linalg.LinAlgError(
            "the discrete Lyapunov equation is singular: A has the eigenvalue −1 (1 − λᵢλ̄ⱼ = 0)"
        )
    M = sla.lu_solve(lu, src - eye, check_finite=False)
    T, Z, eig = schur(M)
    return Factor(src.copy(), T, Z, eig, lu)


def dlyap(
    A: np.ndarray,
    ia: np.ndarray,
    Q: np.ndarray,
    iq: np.ndarray,
    cache: dict[str, Any],
    check: bool,
    stable: bool,
) -> tuple[np.ndarray, Worst | None, tuple[int, complex] | None]:
    """AXAᴴ − X + Q = 0 via M = (A + I)⁻¹(A − I): MX + XMᴴ = −2(A + I)⁻¹Q(Aᴴ + I)⁻¹."""
    N = len(ia)
    out = np.empty((N, *Q.shape[-2:]), dtype=np.result_type(A, Q))
    ea = _entries(cache, "dlyap:A", A.shape[0])
    worst = Worst() if check else None
    unstable = None
    for k in range(N):
        f, op = _lookup(ea, int(ia[k]), A[ia[k]], _dlyap_factor)
        tr = 0 if op == "N" else 2  # (A + I)⁻¹ or (Aᴴ + I)⁻¹
        P = sla.lu_solve(f.lu, Q[iq[k]], trans=tr, check_finite=False)
        C = sla.lu_solve(f.lu, P.conj().T, trans=tr, check_finite=False).conj().T
        F = f.Z.conj().T @ (-2.0 * C) @ f.Z
        Y = _trsyl(f, op, f, _flip(op), F)
        out[k] = f.Z @ Y @ f.Z.conj().T
        mu = _eig(f, op)
        with np.errstate(all="ignore"):
            lam = (1 + mu) / (1 - mu)
        if stable and unstable is None and np.abs(lam).max() >= 1:
            unstable = (k, complex(lam[np.argmax(np.abs(lam))]))
        if worst is not None:
            sep, i, j = _pair_min(lam, lam.conj(), lambda x, y: 1 - x * y)
            scale = 1 + np.linalg.norm(A[ia[k]]) ** 2
            worst.update(
                sep,
                scale,
                lambda lam=lam, i=i, j=j, k=k: (
                    f"eigenvalues λᵢ = {lam[i]:.3g}, λⱼ = {lam[j]:.3g} of A give "
                    f"|1 − λᵢλ̄ⱼ| = {abs(1 - lam[i] * lam[j].conjugate()):.2e} (system {k})"
                ),
            )
    return out, worst, unstable


def _riccati(
    solver: Callable[..., np.ndarray],
    name: str,
    A: np.ndarray,
    ia: np.ndarray,
    B: np.ndarray,
    ib: np.ndarray,
    Q: np.ndarray,
    iq: np.ndarray,
    R: np.ndarray,
    ir: np.ndarray,
) -> np.ndarray:
    N = len(ia)
    n = A.shape[-1]
    dtype = np.result_type(A, B, Q, R)
    out = np.empty((N, n, n), dtype=dtype)
    for k in range(N):
        try:
            X = solver(A[ia[k]], B[ib[k]], Q[iq[k]], R[ir[k]])
        except (np.linalg.LinAlgError, ValueError) as err:
            raise np.linalg.LinAlgError(
                f"{name}: no stabilising solution for system {k} ({err}). Check that (A, B) is "
                "stabilisable and that the Hamiltonian/symplectic pencil has no eigenvalues on "
                "the stability boundary ((A, Q) detectable)."
            ) from err
        out[k] = X
    return out


def care(*args: np.ndarray) -> np.ndarray:
    """AᴴX + XA − XBR⁻¹BᴴX + Q = 0 per system (scipy.linalg.solve_continuous_are)."""
    return _riccati(sla.solve_continuous_are, "CARE", *args)


def dare(*args: np.ndarray) -> np.ndarray:
    """AᴴXA − X − AᴴXB(R + BᴴXB)⁻¹BᴴXA + Q = 0 (scipy.linalg.solve_discrete_are)."""
    return _riccati(sla.solve_discrete_are, "DARE", *args)
