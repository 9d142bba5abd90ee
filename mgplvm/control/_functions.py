"""Autograd Functions for the Sylvester, Lyapunov and Riccati equations.

Hand-written because PyTorch has neither a Schur decomposition nor these adjoints.  Each solver
is a :class:`torch.autograd.Function` whose

* ``forward`` dispatches to a backend (scipy Bartels–Stewart, matmul-only torch iterations,
  Kronecker) without ever recording the solver's iterations;
* ``backward`` solves the adjoint equation (one more solve of the same kind, DESIGN §4) by
  calling the same Function, so the backward pass is itself differentiable (double backward);
* ``jvp`` solves the tangent equation, again with the same Function (forward mode,
  ``torch.func.jvp`` / ``jacfwd`` and ``torch.autograd.forward_ad`` dual tensors: ``forward``
  never returns a view, see :func:`_owned`);
* ``vmap`` moves the vmapped dimension to the front and relies on the native batching
  (torch.func.vmap).  The legacy vmap of ``gradcheck(check_batched_grad=True)`` and
  ``jacobian(vectorize=True)`` calls ``forward`` with its BatchedTensors instead; those are
  solved sample by sample through a custom op (:func:`_solve`).

All derivatives are the implicit-function-theorem ones; the real inner product
⟨U, V⟩ = Re tr(UᴴV) defines the cotangents (PyTorch's convention for complex tensors).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from . import _iterative as it
from . import _scipy as sp
from ._common import (
    KRON_LIMIT,
    KRON_MAX_N,
    StabilityError,
    _Config,
    bshape,
    check_finite,
    check_posdef,
    eps_of,
    freeze_signature,
    hermitian_part,
    real_dtype,
    sum_to,
    vmap_align,
    warn_inaccurate,
    warn_near_singular,
)

# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
# CPU torch iterations run on chunks of ≈ this many matrix entries: 512 systems of 16 × 16, at or
# near the fastest of 128–1024 systems per chunk on every batch problem of benchmarks/solvers.py
# (`--chunk-sizes`) once the products go through numpy; one chunk of 1024 was clearly slower
_CHUNK_ELEMS = 1 << 17


def _count(batch: torch.Size) -> int:
    return math.prod(batch)


def _to_numpy(t: Tensor, batch: torch.Size) -> tuple[np.ndarray, np.ndarray]:
    """(flattened array of t's own batch, index of each broadcast system into it)."""
    own = t.shape[:-2]
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    if t.requires_grad:  # (no torch op otherwise: each costs µs next to a small LAPACK call)
        t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if not own:  # unbatched fast path
        return t.numpy()[None], _zeros(_count(batch))
    cnt = _count(own)
    arr = t.reshape(cnt, *t.shape[-2:]).numpy()
    if own == batch:
        idx = np.arange(cnt)
    elif cnt == 1:
        idx = np.zeros(_count(batch), dtype=np.int64)
    else:
        idx = np.broadcast_to(np.arange(cnt).reshape(own), batch).reshape(-1)
    return arr, idx


_ZEROS: dict[int, np.ndarray] = {}


def _zeros(count: int) -> np.ndarray:
    z = _ZEROS.get(count)
    if z is None:
        z = np.zeros(count, dtype=np.int64)
        z.flags.writeable = False
        if count <= 64:
            _ZEROS[count] = z
    return z


def _from_numpy(x: np.ndarray, like: Tensor, batch: torch.Size) -> Tensor:
    if not batch:
        x = x[0]
    out = torch.from_numpy(x)
    if not batch and out.dtype == like.dtype and like.device.type == "cpu":
        return out
    if out.dtype != like.dtype or out.device != like.device:
        out = out.to(dtype=like.dtype, device=like.device)
    return out.reshape(*batch, *x.shape[-2:])


def _resolve(cfg: _Config, kind: str, n: int, count: int, device: torch.device) -> str:
    """Backend for "auto": Kronecker for n ≤ 4 (linear equations), torch iterations on
    accelerators and for batches of small systems on CPU, scipy (Bartels–Stewart) otherwise."""
    if cfg.backend != "auto":
        return cfg.backend
    if kind in ("sylv", "clyap", "dlyap") and n <= KRON_MAX_N:
        return "kron"
    if device.type != "cpu":
        return "torch"
    if kind in ("care", "dare"):
        return "torch" if count >= 8 and n <= 32 else "scipy"
    return "torch" if count >= 8 and n <= 64 else "scipy"


def _chunked(
    fn: Callable[..., tuple[Any, ...]], tensors: list[Tensor], batch: torch.Size, n: int
) -> tuple[Tensor, Tensor, int]:
    """Run a torch iteration on CPU in cache-sized chunks of the flattened batch."""
    count = _count(batch)
    dev = tensors[0].device
    step = max(1, _CHUNK_ELEMS // max(1, n * n))
    if dev.type != "cpu" or count <= step:
        X, ok, k = fn(*tensors)
        return X.expand(*batch, *X.shape[-2:]), ok, k
    flat = [t.expand(*batch, *t.shape[-2:]).reshape(count, *t.shape[-2:]) for t in tensors]
    xs, oks, kmax = [], [], 0
    for s in range(0, count, step):
        X, ok, k = fn(*(t[s : s + step] for t in flat))
        xs.append(X)
        oks.append(ok)
        kmax = max(kmax, k)
    X = torch.cat(xs).reshape(*batch, *xs[0].shape[-2:])
    return X, torch.cat(oks).reshape(*batch, *oks[0].shape[1:]), kmax


def _check_finite_np(*named: tuple[str, np.ndarray]) -> None:
    """NaN/inf check in numpy (keeps torch's OpenMP pool idle before LAPACK calls)."""
    for name, a in named:
        if not np.isfinite(a.sum()) and not np.isfinite(a).all():
            nn = int(np.isnan(a).sum())
            ni = int((~np.isfinite(a)).sum()) - nn
            raise ValueError(f"{name} contains non-finite values ({nn} NaN, {ni} inf)")


_nrm = torch.linalg.matrix_norm


def _suspect(X: Tensor, Q: Tensor, scale: Tensor) -> bool:
    """Whether the (cheap) bound sep ≤ ‖Q‖/‖X‖ allows sep/scale < √eps for some system, i.e.
    whether the eigenvalue-based near-singularity check is worth running."""
    bound = _nrm(Q) / (scale * _nrm(X)).clamp_min(torch.finfo(scale.dtype).tiny)
    return bool((bound < 10 * math.sqrt(eps_of(real_dtype(X.dtype)))).any())


def _first_bad(ok: Tensor) -> int:
    return int((~ok.reshape(-1)).nonzero()[0, 0])


def _eigvals(M: Tensor) -> Tensor:
    return torch.linalg.eigvals(M.detach())


def _eig_check_torch(kind: str, mats: list[Tensor], batch: torch.Size) -> None:
    """Near-singularity check from eigenvalues (used by the kron/torch backends)."""
    A = mats[0].expand(*batch, *mats[0].shape[-2:]).reshape(-1, *mats[0].shape[-2:])
    if A.shape[0] == 0:
        return
    lam = _eigvals(A)
    nrmA = torch.linalg.matrix_norm(A.detach())
    if kind == "sylv":
        B = mats[1].expand(*batch, *mats[1].shape[-2:]).reshape(-1, *mats[1].shape[-2:])
        mu = _eigvals(B)
        v = (lam[:, :, None] + mu[:, None, :]).abs()
        scale = nrmA + torch.linalg.matrix_norm(B.detach())
        label = "|λ(A) + μ(B)|"
    elif kind == "clyap":
        mu = lam
        v = (lam[:, :, None] + lam.conj()[:, None, :]).abs()
        scale = 2 * nrmA
        label = "|λᵢ + λ̄ⱼ| for eigenvalues of A"
    else:
        mu = lam
        v = (1 - lam[:, :, None] * lam.conj()[:, None, :]).abs()
        scale = 1 + nrmA**2
        label = "|1 − λᵢλ̄ⱼ| for eigenvalues of A"
    sep = v.flatten(1).min(1).values
    rel = sep / scale.clamp_min(torch.finfo(scale.dtype).tiny)
    k = int(rel.argmin())
    flat = int(v[k].argmin())
    i, j = divmod(flat, v.shape[-1])
    what = f"{label} = {float(sep[k]):.2e} at λ = {complex(lam[k, i]):.3g}, {complex(mu[k, j]):.3g}"
    warn_near_singular(float(sep[k]), float(scale[k]), what + f" (system {k})", A.dtype)


def _raise_unstable(kind: str, A: Tensor, ok: Tensor, batch: torch.Size, why: str) -> None:
    k = _first_bad(ok)
    Ak = A.expand(*batch, *A.shape[-2:]).reshape(-1, *A.shape[-2:])[k]
    lam = _eigvals(Ak)
    if kind == "discrete":
        j = int(lam.abs().argmax())
        detail = (
            f"spectral radius {float(lam.abs()[j]):.6g} ≥ 1 at eigenvalue {complex(lam[j]):.4g}"
        )
    else:
        j = int(lam.real.argmax())
        detail = f"eigenvalue {complex(lam[j]):.4g} with Re λ = {float(lam.real[j]):.4g}"
    raise StabilityError(f"{why}: system {k} has {detail}")


def _finish_scipy_checks(worst: sp.Worst | None, unstable: Any, cfg: _Config, dtype: Any) -> None:
    if unstable is not None:
        k, lam = unstable
        if cfg.require_stable == "discrete":
            raise StabilityError(
                f"the infinite-horizon discrete Gramian needs spectral radius < 1: system {k} has "
                f"eigenvalue {lam:.4g} (|λ| = {abs(lam):.6g}); pass a finite T"
            )
        raise StabilityError(
            f"the infinite-horizon Gramian needs A Hurwitz: system {k} has eigenvalue {lam:.4g} "
            f"(Re λ = {lam.real:.4g} ≥ 0); pass a finite T"
        )
    if worst is not None and np.isfinite(worst.rel):
        warn_near_singular(worst.sep, worst.scale, lambda: worst.msg, dtype)


# ------------------------------------------------------------------------------------------
# forward solvers (plain tensors, no autograd)
# ------------------------------------------------------------------------------------------
def _fallback(cfg: _Config, backend: str, ok: Tensor) -> bool:
    """Whether systems that failed the torch method should be re-solved by scipy."""
    return cfg.backend == "auto" and backend == "torch" and not bool(ok.all())


def _empty(batch: torch.Size, n: int, m: int, like: Tensor) -> Tensor | None:
    """The (empty) solution when the equation has no unknowns (n·m = 0 or an empty batch)."""
    if n * m * _count(batch):
        return None
    return torch.zeros(*batch, n, m, dtype=like.dtype, device=like.device)


def sylvester_forward(A: Tensor, B: Tensor, Q: Tensor, cfg: _Config) -> Tensor:
    n, m = A.shape[-1], B.shape[-1]
    batch = bshape(A.shape[:-2], B.shape[:-2], Q.shape[:-2])
    if (X := _empty(batch, n, m, Q)) is not None:
        return X
    rec = cfg.record
    backend = _resolve(cfg, "sylv", max(n, m), _count(batch), A.device)
    if backend == "scipy" and not batch and A.device.type == "cpu":
        rec.backends.add("scipy")
        return _sylvester_single(A, B, Q, cfg)
    if cfg.check and backend != "scipy":
        check_finite(("A", A), ("B", B), ("Q", Q))
    if backend == "kron":
        if n * m > KRON_LIMIT:
            raise ValueError(f"backend='kron' is limited to n·m ≤ {KRON_LIMIT} (got {n * m})")
        if cfg.check:
            _eig_check_torch("sylv", [A, B], batch)
        X, ok = it.kron_sylvester(A, B, Q)
        rec.backends.add("kron")
        if not bool(ok.all()):
            raise torch.linalg.LinAlgError("the Sylvester equation is singular (λ(A) + μ(B) = 0)")
        return X
    if backend == "torch":
        X, ok, k = _chunked(
            lambda a, b, q: _sylv_iterate(a, b, q, cfg.maxiter), [A, B, Q], batch, max(n, m)
        )
        rec.iterations = max(rec.iterations, k)
        rec.backends.add("torch")
        if bool(ok.all()):
            if cfg.check and (k > 12 or _suspect(X, Q, _nrm(A) + _nrm(B))):
                _eig_check_torch("sylv", [A, B], batch)
            return X
        if cfg.backend != "auto":
            k0 = _first_bad(ok)
            raise StabilityError(
                "backend='torch' (Cayley–Smith / sign iteration) needs the spectra of A and −B "
                "separated by the "
                f"imaginary axis (both Hurwitz or both anti-Hurwitz); system {k0} is not. "
                "Use backend='scipy' or 'kron'."
            )
        return _patch(
            X, ok, batch, lambda a, b, q: sylvester_forward(a, b, q, _scipy_cfg(cfg)), [A, B, Q]
        )
    rec.backends.add("scipy")
    a, ia = _to_numpy(A, batch)
    b, ib = _to_numpy(B, batch)
    q, iq = _to_numpy(Q, batch)
    if cfg.check:
        _check_finite_np(("A", a), ("B", b), ("Q", q))
    x, worst = sp.sylvester(a, ia, b, ib, q, iq, rec.cache, cfg.check)
    _finish_scipy_checks(worst, None, cfg, A.dtype)
    return _from_numpy(x, Q, batch)


def _scipy_cfg(cfg: _Config) -> _Config:
    return cfg.replace(backend="scipy", check=False)


def _splice(
    outs: list[Tensor],
    ok: Tensor,
    batch: torch.Size,
    solve: Callable[..., tuple[Tensor, ...]],
    inputs: list[Tensor],
) -> list[Tensor]:
    """Re-solve the systems where ``ok`` is False: ``solve`` gets their (flattened) inputs and
    returns one tensor per entry of ``outs`` (each with leading dims ``batch``), which are spliced
    into copies of ``outs``."""
    count = _count(batch)
    bad = (~ok.reshape(-1)).nonzero()[:, 0]
    flat = [t.expand(*batch, *t.shape[-2:]).reshape(count, *t.shape[-2:]) for t in inputs]
    fixed = solve(*(t[bad] for t in flat))
    res = []
    for o, f in zip(outs, fixed, strict=True):
        of = o.reshape(count, *o.shape[len(batch) :]).clone()
        of[bad] = f
        res.append(of.reshape(o.shape))
    return res


def _patch(
    X: Tensor, ok: Tensor, batch: torch.Size, solve: Callable[..., Tensor], inputs: list[Tensor]
) -> Tensor:
    """Re-solve the systems where ``ok`` is False (with ``solve``) and splice them into X."""
    return _splice([X], ok, batch, lambda *t: (solve(*t),), inputs)[0]


def _resolved(t: Tensor) -> Tensor:
    return t.resolve_conj().resolve_neg() if t.is_conj() or t.is_neg() else t


def _single_result(
    x: np.ndarray,
    sep: tuple[float, float, Any] | None,
    named: list[tuple[str, np.ndarray]],
    cfg: _Config,
    dtype: Any,
    overflow: str,
) -> Tensor:
    """The checks after a lean single-system solve: a non-finite X is traced to NaN/inf inputs,
    else to a singular equation, else reported as ``overflow``; a near-singular equation warns."""
    if cfg.check and not np.isfinite(x.sum()):
        _check_finite_np(*named)
        if sep is not None:
            warn_near_singular(sep[0], sep[1], sep[2], dtype)  # raises if singular
        raise torch.linalg.LinAlgError(overflow)
    if sep is not None:
        warn_near_singular(sep[0], sep[1], sep[2], dtype)
    return torch.from_numpy(x)


def _sylvester_single(A: Tensor, B: Tensor, Q: Tensor, cfg: _Config) -> Tensor:
    """Unbatched CPU scipy solve of AX + XB = Q with as little Python around LAPACK as possible
    (NaN/inf inputs are diagnosed from the output, which they reach)."""
    a, b, q = (_resolved(t).detach().numpy() for t in (A, B, Q))
    try:
        x, sep = sp.sylvester1(a, b, q, cfg.record.cache, cfg.check)
    except np.linalg.LinAlgError:  # ?gees fails on NaN/inf input: say so
        if cfg.check:
            _check_finite_np(("A", a), ("B", b), ("Q", q))
        raise
    return _single_result(
        x, sep, [("A", a), ("B", b), ("Q", q)], cfg, A.dtype,
        "the Sylvester solution overflowed (ill-conditioned A, B)",
    )


def _clyap_single(A: Tensor, Q: Tensor, cfg: _Config) -> Tensor:
    """Unbatched CPU scipy solve with as little Python around LAPACK as possible."""
    a, q = _resolved(A).detach().numpy(), _resolved(Q).detach().numpy()
    try:
        x, sep, f = sp.clyap1(a, q, cfg.record.cache, cfg.check)
    except np.linalg.LinAlgError:  # ?gees fails on NaN/inf input: say so
        if cfg.check:
            _check_finite_np(("A", a), ("Q", q))
        raise
    if cfg.require_stable == "continuous" and f.eig.real.max() >= 0:
        lam = complex(f.eig[np.argmax(f.eig.real)])
        _finish_scipy_checks(None, (0, lam), cfg, A.dtype)
    return _single_result(
        x, sep, [("A", a), ("Q", q)], cfg, A.dtype,
        "the Lyapunov solution overflowed (ill-conditioned A)",
    )


def clyap_forward(A: Tensor, Q: Tensor, cfg: _Config) -> Tensor:
    n = A.shape[-1]
    batch = bshape(A.shape[:-2], Q.shape[:-2])
    if (X := _empty(batch, n, n, Q)) is not None:
        return X
    rec = cfg.record
    backend = _resolve(cfg, "clyap", n, _count(batch), A.device)
    if backend == "scipy" and not batch and A.device.type == "cpu":
        rec.backends.add("scipy")
        return _clyap_single(A, Q, cfg)
    if cfg.check and backend != "scipy":
        check_finite(("A", A), ("Q", Q))
    if backend == "kron":
        if n * n > KRON_LIMIT:
            raise ValueError(f"backend='kron' is limited to n² ≤ {KRON_LIMIT} (got n = {n})")
        if cfg.require_stable:
            lam = _eigvals(A.expand(*batch, n, n))
            ok = (lam.real < 0).all(-1)
            if not bool(ok.all()):
                _raise_unstable(
                    "continuous",
                    A,
                    ok,
                    batch,
                    "the infinite-horizon Gramian needs A Hurwitz (pass a finite T)",
                )
        if cfg.check:
            _eig_check_torch("clyap", [A], batch)
        X, ok = it.kron_sylvester(A, A.mH, Q)
        rec.backends.add("kron")
        if not bool(ok.all()):
            raise torch.linalg.LinAlgError(
                "the Lyapunov equation is singular (λᵢ + λ̄ⱼ = 0 for eigenvalues of A)"
            )
        return X
    if backend == "torch":
        X, flags, k = _chunked(lambda a, q: _lyap_iterate(a, q, cfg.maxiter), [A, Q], batch, n)
        ok, hurwitz = flags[..., 0], flags[..., 1]
        rec.iterations = max(rec.iterations, k)
        rec.backends.add("torch")
        if cfg.require_stable and not bool((ok & hurwitz).all()):
            _raise_unstable(
                "continuous",
                A,
                ok & hurwitz,
                batch,
                "the infinite-horizon Gramian needs A Hurwitz (pass a finite T)",
            )
        if bool(ok.all()):
            if cfg.check and (k > 12 or _suspect(X, Q, 2 * _nrm(A))):
                _eig_check_torch("clyap", [A], batch)
            return X
        if cfg.backend != "auto":
            _raise_unstable(
                "continuous",
                A,
                ok,
                batch,
                "backend='torch' (Cayley–Smith / sign iteration) needs A Hurwitz or "
                "anti-Hurwitz; use "
                "backend='scipy'",
            )
        return _patch(X, ok, batch, lambda a, q: clyap_forward(a, q, _scipy_cfg(cfg)), [A, Q])
    rec.backends.add("scipy")
    a, ia = _to_numpy(A, batch)
    q, iq = _to_numpy(Q, batch)
    if cfg.check:
        _check_finite_np(("A", a), ("Q", q))
    x, worst, unstable = sp.clyap(
        a, ia, q, iq, rec.cache, cfg.check, cfg.require_stable == "continuous"
    )
    _finish_scipy_checks(worst, unstable, cfg, A.dtype)
    return _from_numpy(x, Q, batch)


def _lyap_iterate(A: Tensor, Q: Tensor, maxiter: int) -> tuple[Tensor, Tensor, int]:
    """Batched AX + XAᴴ = Q: Cayley transform + squared Smith doubling (one inverse, then
    products; fastest on CPU batches), and the Newton sign iteration for any system it leaves
    unconverged.  Returns X, flags (..., 2) = (ok, A Hurwitz) and the iteration count."""
    X, ok, k, hurwitz = it.cayley_smith(A, Q, maxiter=min(maxiter, 50))
    flags = torch.stack([ok, hurwitz], -1)
    if bool(ok.all()):
        return X, flags, k
    ks = [k]

    def sign(a: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        Xs, oks, k2, hs = it.sign_lyapunov(a, q, maxiter=maxiter, return_sign=True)
        ks.append(k2)
        return Xs, torch.stack([oks, hs], -1)

    X, flags = _splice([X, flags], ok, X.shape[:-2], sign, [A, Q])
    return X, flags, max(ks)


def _sylv_iterate(A: Tensor, B: Tensor, Q: Tensor, maxiter: int) -> tuple[Tensor, Tensor, int]:
    """Batched AX + XB = Q, as :func:`_lyap_iterate` (Cayley–Smith, sign iteration for what it
    leaves).  Returns X, ok and the iteration count."""
    X, ok, k, _ = it.cayley_smith(A, Q, B, maxiter=min(maxiter, 50))
    if bool(ok.all()):
        return X, ok, k
    ks = [k]

    def sign(a: Tensor, b: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        Xs, oks, k2 = it.sign_sylvester(a, b, q, maxiter=maxiter)
        ks.append(k2)
        return Xs, oks

    X, ok = _splice([X, ok], ok, X.shape[:-2], sign, [A, B, Q])
    return X, ok, max(ks)


def dlyap_forward(A: Tensor, Q: Tensor, cfg: _Config) -> Tensor:
    n = A.shape[-1]
    batch = bshape(A.shape[:-2], Q.shape[:-2])
    if (X := _empty(batch, n, n, Q)) is not None:
        return X
    rec = cfg.record
    backend = _resolve(cfg, "dlyap", n, _count(batch), A.device)
    if cfg.check and backend != "scipy":
        check_finite(("A", A), ("Q", Q))
    if backend == "kron":
        if n * n > KRON_LIMIT:
            raise ValueError(f"backend='kron' is limited to n² ≤ {KRON_LIMIT} (got n = {n})")
        if cfg.require_stable:
            lam = _eigvals(A.expand(*batch, n, n))
            ok = (lam.abs() < 1).all(-1)
            if not bool(ok.all()):
                _raise_unstable(
                    "discrete",
                    A,
                    ok,
                    batch,
                    "the infinite-horizon Gramian needs ρ(A) < 1 (pass a finite T)",
                )
        if cfg.check:
            _eig_check_torch("dlyap", [A], batch)
        X, ok = it.kron_dlyap(A, Q)
        rec.backends.add("kron")
        if not bool(ok.all()):
            raise torch.linalg.LinAlgError(
                "the discrete Lyapunov equation is singular (λᵢλ̄ⱼ = 1 for eigenvalues of A)"
            )
        return X
    if backend == "torch":
        X, ok, k = _chunked(
            lambda a, q: it.smith_dlyap(a, q, maxiter=min(cfg.maxiter, 64)), [A, Q], batch, n
        )
        rec.iterations = max(rec.iterations, k)
        rec.backends.add("torch")
        if bool(ok.all()):
            if cfg.check and (k > 25 or _suspect(X, Q, 1 + _nrm(A) ** 2)):
                _eig_check_torch("dlyap", [A], batch)
            return X
        if cfg.backend != "auto" or cfg.require_stable:
            _raise_unstable(
                "discrete",
                A,
                ok,
                batch,
                "the infinite-horizon Gramian needs ρ(A) < 1 (pass a finite T)"
                if cfg.require_stable
                else "backend='torch' (Smith doubling) needs spectral radius ρ(A) < 1; use "
                "backend='scipy'",
            )
        return _patch(X, ok, batch, lambda a, q: dlyap_forward(a, q, _scipy_cfg(cfg)), [A, Q])
    rec.backends.add("scipy")
    a, ia = _to_numpy(A, batch)
    q, iq = _to_numpy(Q, batch)
    if cfg.check:
        _check_finite_np(("A", a), ("Q", q))
    x, worst, unstable = sp.dlyap(
        a, ia, q, iq, rec.cache, cfg.check, cfg.require_stable == "discrete"
    )
    _finish_scipy_checks(worst, unstable, cfg, A.dtype)
    return _from_numpy(x, Q, batch)


# ------------------------------------------------------------------------------------------
# Riccati forward
# ------------------------------------------------------------------------------------------
def _riccati_prepare(
    A: Tensor, B: Tensor, Q: Tensor, R: Tensor, cfg: _Config
) -> tuple[Tensor, Tensor]:
    if cfg.check:
        check_finite(("A", A), ("B", B), ("Q", Q), ("R", R))
    Qs = hermitian_part("Q", Q, cfg.check)
    Rs = hermitian_part("R", R, cfg.check)
    if cfg.check:
        check_posdef("R", Rs)
    return Qs, Rs


def _hermitian_np(name: str, t: np.ndarray, check: bool) -> np.ndarray:
    """numpy twin of :func:`hermitian_part` (the scipy path never touches torch kernels)."""
    th = t.conj().swapaxes(-1, -2)
    if check:
        d = t - th
        if t.shape[0] == 1:  # one system: two BLAS dot products
            den = np.vdot(t, t).real
            worst = math.sqrt(np.vdot(d, d).real / den) if den > 0 else 0.0
        else:
            asym = np.sqrt(np.sum((d * d.conj()).real, axis=(-2, -1)))
            nrm = np.sqrt(np.sum((t * t.conj()).real, axis=(-2, -1)))
            rel = asym / np.where(nrm > 0, nrm, 1.0)
            worst = float(rel.max()) if rel.size else 0.0
        tol = math.sqrt(float(np.finfo(t.dtype).eps))
        if worst > tol:
            kind = "Hermitian" if np.iscomplexobj(t) else "symmetric"
            raise ValueError(
                f"{name} must be {kind}: ‖{name} − {name}ᴴ‖/‖{name}‖ = {worst:.2e} > {tol:.1e}"
            )
    return 0.5 * (t + th)


def _riccati_scipy(
    solver: Callable[..., tuple[np.ndarray, Any]],
    name: str,
    A: Tensor,
    B: Tensor,
    Q: Tensor,
    R: Tensor,
    cfg: _Config,
    batch: torch.Size,
) -> Tensor:
    """scipy Riccati solve with the input checks done in numpy (same checks and messages as
    :func:`_riccati_prepare`).  With ``cfg.check``, a solution whose relative residual exceeds
    :func:`residual_tol` (only possible for systems scipy's QZ solver took over) issues an
    :class:`InaccurateSolutionWarning` (``name``: "CARE" / "DARE")."""
    (a, ia), (b, ib), (q, iq), (r, ir) = (_to_numpy(t, batch) for t in (A, B, Q, R))
    if cfg.check:
        _check_finite_np(("A", a), ("B", b), ("Q", q), ("R", r))
    q = _hermitian_np("Q", q, cfg.check)
    r = _hermitian_np("R", r, cfg.check)
    if cfg.check:
        try:
            np.linalg.cholesky(r)
        except np.linalg.LinAlgError:
            ev = float(np.linalg.eigvalsh(r).min())
            msg = f"R must be positive definite (smallest eigenvalue {ev:.3e})"
            raise ValueError(msg) from None
    x, worst = solver(a, ia, b, ib, q, iq, r, ir)
    if cfg.check and worst is not None:
        warn_inaccurate(name, worst[0], worst[1], A.dtype)
    x = 0.5 * (x + x.conj().swapaxes(-1, -2))  # in numpy: the scipy path runs no torch kernel
    return _from_numpy(x, A, batch)


def _riccati_scipy_cfg(cfg: _Config) -> _Config:
    """Config of a scipy Riccati solve that takes over from the torch backend: the inputs were
    checked already, but the accuracy check (and warning) of the scipy solve is kept."""
    return cfg.replace(backend="scipy")


def _gain_matrix(B: Tensor, R: Tensor) -> Tensor:
    """G = B R⁻¹ Bᴴ through a Cholesky factor of R."""
    L = torch.linalg.cholesky(R)
    W = torch.linalg.solve_triangular(L, B.mH, upper=False)
    return W.mH @ W


def care_residual(A: Tensor, B: Tensor, Q: Tensor, R: Tensor, X: Tensor) -> Tensor:
    """‖AᴴX + XA − XBR⁻¹BᴴX + Q‖ / (2‖A‖‖X‖ + ‖XBR⁻¹BᴴX‖ + ‖Q‖) (Frobenius)."""
    G = _gain_matrix(B, 0.5 * (R + R.mH))
    XGX = X @ G @ X
    AX = A.mH @ X
    res = AX + AX.mH - XGX + 0.5 * (Q + Q.mH)
    nrm = torch.linalg.matrix_norm
    den = 2 * nrm(A) * nrm(X) + nrm(XGX) + nrm(Q)
    return nrm(res) / den.clamp_min(torch.finfo(den.dtype).tiny)


def dare_residual(A: Tensor, B: Tensor, Q: Tensor, R: Tensor, X: Tensor) -> Tensor:
    """‖AᴴXA − X − AᴴXB(R + BᴴXB)⁻¹BᴴXA + Q‖ / (‖A‖²‖X‖ + ‖X‖ + ‖…‖ + ‖Q‖)."""
    Rs = 0.5 * (R + R.mH)
    XB = X @ B
    P = XB.mH @ A
    T = P.mH @ torch.linalg.solve(Rs + B.mH @ XB, P)
    res = A.mH @ X @ A - X - T + 0.5 * (Q + Q.mH)
    nrm = torch.linalg.matrix_norm
    den = nrm(A) ** 2 * nrm(X) + nrm(X) + nrm(T) + nrm(Q)
    return nrm(res) / den.clamp_min(torch.finfo(den.dtype).tiny)


_DOUBLE = {torch.float32: torch.float64, torch.complex64: torch.complex128}


def _promote(ts: list[Tensor]) -> list[Tensor]:
    """Single → double precision for the torch Riccati iterations: the nonlinear equations lose
    κ·eps digits, and in float32 that is often more than the 1e-4 users expect (scipy's
    solvers upcast the same way)."""
    wd = _DOUBLE.get(ts[0].dtype)
    return ts if wd is None else [t.to(wd) for t in ts]


def _riccati_tol(dtype: torch.dtype, n: int) -> float:
    return 1e3 * n * eps_of(real_dtype(dtype))


def care_forward(A: Tensor, B: Tensor, Q: Tensor, R: Tensor, cfg: _Config) -> Tensor:
    n = A.shape[-1]
    batch = bshape(A.shape[:-2], B.shape[:-2], Q.shape[:-2], R.shape[:-2])
    if (X := _empty(batch, n, n, A)) is not None:
        return X
    rec = cfg.record
    backend = _resolve(cfg, "care", n, _count(batch), A.device)
    if backend == "scipy":
        rec.backends.add("scipy")
        return _riccati_scipy(sp.care, "CARE", A, B, Q, R, cfg, batch)
    Qs, Rs = _riccati_prepare(A, B, Q, R, cfg)
    if backend == "kron":
        raise ValueError("backend='kron' is not available for the (nonlinear) Riccati equation")
    if backend == "torch":
        X, ok, k = _chunked(_care_torch, _promote([A, B, Qs, Rs]), batch, 2 * n)
        X = X.to(A.dtype)
        rec.iterations = max(rec.iterations, k)
        rec.backends.add("torch")
        if bool(ok.all()):
            return X
        if cfg.backend != "auto":
            raise torch.linalg.LinAlgError(
                f"backend='torch' (Hamiltonian sign + Newton–Kleinman) failed for system "
                f"{_first_bad(ok)}: no stabilising solution found (is (A, B) stabilisable and "
                "(A, Q) detectable?). Try backend='scipy'."
            )
        fallback = _riccati_scipy_cfg(cfg)
        return _patch(X, ok, batch, lambda *t: care_forward(*t, fallback), [A, B, Qs, Rs])
    rec.backends.add("scipy")
    return _riccati_scipy(sp.care, "CARE", A, B, Qs, Rs, _scipy_cfg(cfg), batch)


def _care_torch(A: Tensor, B: Tensor, Q: Tensor, R: Tensor) -> tuple[Tensor, Tensor, int]:
    n = A.shape[-1]
    G = _gain_matrix(B, R)
    X, ok, k = it.sign_care(A, G, Q)
    tol = _riccati_tol(A.dtype, n)
    res = care_residual(A, B, Q, R, X).nan_to_num(nan=math.inf)
    if float(res.max()) > tol:  # one Newton–Kleinman step from the sign-function solution
        K = torch.cholesky_solve(B.mH @ X, torch.linalg.cholesky(R))
        Acl = A - B @ K
        X1, ok1, k1 = it.sign_lyapunov(Acl.mH, -(Q + K.mH @ R @ K))
        X1 = 0.5 * (X1 + X1.mH)
        res1 = care_residual(A, B, Q, R, X1).nan_to_num(nan=math.inf)
        better = (res1 < res)[..., None, None] & ok1[..., None, None]
        X = torch.where(better, X1, X)
        res = torch.minimum(res, res1)
        k += k1
    ok = ok & (res <= max(tol, math.sqrt(eps_of(real_dtype(A.dtype)))))
    return X, ok, k


def dare_forward(A: Tensor, B: Tensor, Q: Tensor, R: Tensor, cfg: _Config) -> Tensor:
    n = A.shape[-1]
    batch = bshape(A.shape[:-2], B.shape[:-2], Q.shape[:-2], R.shape[:-2])
    if (X := _empty(batch, n, n, A)) is not None:
        return X
    rec = cfg.record
    backend = _resolve(cfg, "dare", n, _count(batch), A.device)
    if backend == "scipy":
        rec.backends.add("scipy")
        return _riccati_scipy(sp.dare, "DARE", A, B, Q, R, cfg, batch)
    Qs, Rs = _riccati_prepare(A, B, Q, R, cfg)
    if backend == "kron":
        raise ValueError("backend='kron' is not available for the (nonlinear) Riccati equation")
    if backend == "torch":
        X, ok, k = _chunked(_dare_torch, _promote([A, B, Qs, Rs]), batch, 2 * n)
        X = X.to(A.dtype)
        rec.iterations = max(rec.iterations, k)
        rec.backends.add("torch")
        if bool(ok.all()):
            return X
        if cfg.backend != "auto":
            raise torch.linalg.LinAlgError(
                f"backend='torch' (structured doubling) failed for system {_first_bad(ok)}: no "
                "stabilising solution found (is (A, B) stabilisable and (A, Q) detectable?). "
                "Try backend='scipy'."
            )
        fallback = _riccati_scipy_cfg(cfg)
        return _patch(X, ok, batch, lambda *t: dare_forward(*t, fallback), [A, B, Qs, Rs])
    rec.backends.add("scipy")
    return _riccati_scipy(sp.dare, "DARE", A, B, Qs, Rs, _scipy_cfg(cfg), batch)


def _dare_torch(A: Tensor, B: Tensor, Q: Tensor, R: Tensor) -> tuple[Tensor, Tensor, int]:
    n = A.shape[-1]
    G = _gain_matrix(B, R)
    X, ok, k = it.sda_dare(A, G, Q)
    res = dare_residual(A, B, Q, R, X).nan_to_num(nan=math.inf)
    tol = max(_riccati_tol(A.dtype, n), math.sqrt(eps_of(real_dtype(A.dtype))))
    return X, ok & (res <= tol), k


# ------------------------------------------------------------------------------------------
# autograd Functions
# ------------------------------------------------------------------------------------------
def call(fn: Any, *args: Any) -> Tensor:
    """``fn.apply(*args)``, or the bare forward when no derivative can be requested.

    Skips the autograd.Function bookkeeping (tens of µs, which matters for small systems) when
    no input requires grad, no forward-AD level is open and no torch.func transform is active.
    """
    if (
        torch._C._are_functorch_transforms_active()
        or fwAD._current_level >= 0
        or (
            torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)
        )
    ):
        return fn.apply(*args)
    return fn.forward(*args)


def _owned(X: Tensor) -> Tensor:
    """X, copied if it is a view (e.g. an expanded or transposed iteration result): the output
    of an autograd.Function must not be a view for forward-mode AD (``forward_ad`` dual tensors
    hit an internal assert on a view whose layout its tangent does not share)."""
    return X.clone(memory_format=torch.contiguous_format) if X._is_view() else X


# ------------------------------------------------------------------------------------------
# legacy batching (torch._vmap_internals): gradcheck(check_batched_grad=True),
# torch.autograd.functional.jacobian(vectorize=True)
# ------------------------------------------------------------------------------------------
_LEGACY_OPS: dict[int, Any] = {}


def _legacy_batched(*ts: Any) -> bool:
    """Whether a tensor argument is a BatchedTensor of the legacy vmap.

    Those reach ``forward`` directly (torch.func's vmap goes through the ``vmap`` staticmethods
    instead) and carry no data that numpy or LAPACK could read."""
    try:
        level = torch._C._vmapmode_increment_nesting()
        torch._C._vmapmode_decrement_nesting()
    except AttributeError:  # pragma: no cover - legacy vmap removed from torch
        return False
    if level <= 1:  # not inside a legacy vmap: nothing to look at
        return False
    return any(
        isinstance(t, Tensor)
        and "Batched" in str(torch._C._dispatch_keys(t)).replace("FuncTorchBatched", "")
        for t in ts
    )


_FORWARDS: dict[str, Callable[..., Tensor]] = {
    "sylv": sylvester_forward,
    "clyap": clyap_forward,
    "dlyap": dlyap_forward,
    "care": care_forward,
    "dare": dare_forward,
}


def _legacy_op(arity: int) -> Any:
    """Custom op ``mgplvm_control::solve<arity>`` (registered on first use) running one
    equation's forward on ``arity`` tensors: the legacy vmap's per-sample fallback calls it on
    plain tensors."""
    op = _LEGACY_OPS.get(arity)
    if op is None:

        def run(kind: str, *args: Any) -> Tensor:
            *ts, backend, check, maxiter, stable = args
            cfg = _Config(backend, check, maxiter, require_stable=stable or None)
            return _FORWARDS[kind](*ts, cfg).clone()  # an op's output may not alias an input

        tensors = ", ".join(f"Tensor t{i}" for i in range(arity))
        options = "str backend, bool check, int maxiter, str stable"
        schema = f"(str kind, {tensors}, {options}) -> Tensor"
        op = torch.library.custom_op(
            f"mgplvm_control::solve{arity}", run, mutates_args=(), schema=schema
        )
        _LEGACY_OPS[arity] = op
    return op


def _solve(kind: str, cfg: _Config, *ts: Tensor) -> Tensor:
    """Forward of equation ``kind``: per sample through a custom op under the legacy vmap, else
    directly (the output is never a view)."""
    if _legacy_batched(*ts):
        op = _legacy_op(len(ts))
        return op(kind, *ts, cfg.backend, cfg.check, cfg.maxiter, cfg.require_stable or "")
    return _owned(_FORWARDS[kind](*ts, cfg))


def _sub(acc: Tensor | None, term: Tensor) -> Tensor:
    return -term if acc is None else acc - term


def _add(acc: Tensor | None, term: Tensor) -> Tensor:
    return term if acc is None else acc + term


def _herm(t: Tensor) -> Tensor:
    return 0.5 * (t + t.mH)


@freeze_signature
class SylvesterFn(torch.autograd.Function):
    """X = sylv(A, B, Q): AX + XB = Q.

    Adjoint: Y = sylv(Aᴴ, Bᴴ, X̄); Q̄ = Y, Ā = −YXᴴ, B̄ = −XᴴY.
    Tangent: Ẋ = sylv(A, B, Q̇ − ȦX − XḂ).
    """

    @staticmethod
    def forward(A: Tensor, B: Tensor, Q: Tensor, cfg: _Config) -> Tensor:  # type: ignore[override]
        return _solve("sylv", cfg, A, B, Q)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        A, B, Q, cfg = inputs
        ctx.cfg = cfg
        ctx.shapes = (A.shape, B.shape, Q.shape)
        ctx.save_for_backward(A, B, output)
        ctx.save_for_forward(A, B, output)

    @staticmethod
    def backward(ctx: Any, gX: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        A, B, X = ctx.saved_tensors
        Y = SylvesterFn.apply(A.mH, B.mH, gX, ctx.cfg.child())
        nA, nB, nQ = ctx.needs_input_grad[:3]
        gA = sum_to(-(Y @ X.mH), ctx.shapes[0]) if nA else None
        gB = sum_to(-(X.mH @ Y), ctx.shapes[1]) if nB else None
        gQ = sum_to(Y, ctx.shapes[2]) if nQ else None
        return gA, gB, gQ, None

    @staticmethod
    def jvp(ctx: Any, dA: Tensor | None, dB: Tensor | None, dQ: Tensor | None, _: Any) -> Tensor:
        A, B, X = ctx.saved_tensors
        rhs = dQ
        if dA is not None:
            rhs = _sub(rhs, dA @ X)
        if dB is not None:
            rhs = _sub(rhs, X @ dB)
        if rhs is None:
            return torch.zeros_like(X)
        return SylvesterFn.apply(A, B, rhs, ctx.cfg.child())

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], A: Tensor, B: Tensor, Q: Tensor, cfg: _Config):
        A, B, Q, cfg = vmap_align(in_dims, (A, B, Q, cfg), info.batch_size)
        return SylvesterFn.apply(A, B, Q, cfg), 0


@freeze_signature
class CLyapFn(torch.autograd.Function):
    """X = clyap(A, Q): AX + XAᴴ = Q.

    Adjoint: Y = clyap(Aᴴ, X̄); Q̄ = Y, Ā = −(YXᴴ + YᴴX).
    Tangent: Ẋ = clyap(A, Q̇ − ȦX − XȦᴴ).
    """

    @staticmethod
    def forward(A: Tensor, Q: Tensor, cfg: _Config) -> Tensor:  # type: ignore[override]
        return _solve("clyap", cfg, A, Q)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        A, Q, cfg = inputs
        ctx.cfg = cfg
        ctx.shapes = (A.shape, Q.shape)
        ctx.save_for_backward(A, output)
        ctx.save_for_forward(A, output)

    @staticmethod
    def backward(ctx: Any, gX: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        A, X = ctx.saved_tensors
        Y = CLyapFn.apply(A.mH, gX, ctx.cfg.child())
        nA, nQ = ctx.needs_input_grad[:2]
        gA = sum_to(-(Y @ X.mH + Y.mH @ X), ctx.shapes[0]) if nA else None
        gQ = sum_to(Y, ctx.shapes[1]) if nQ else None
        return gA, gQ, None

    @staticmethod
    def jvp(ctx: Any, dA: Tensor | None, dQ: Tensor | None, _: Any) -> Tensor:
        A, X = ctx.saved_tensors
        rhs = dQ
        if dA is not None:
            rhs = _sub(rhs, dA @ X + X @ dA.mH)
        if rhs is None:
            return torch.zeros_like(X)
        return CLyapFn.apply(A, rhs, ctx.cfg.child())

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], A: Tensor, Q: Tensor, cfg: _Config):
        A, Q, cfg = vmap_align(in_dims, (A, Q, cfg), info.batch_size)
        return CLyapFn.apply(A, Q, cfg), 0


@freeze_signature
class DLyapFn(torch.autograd.Function):
    """X = dlyap(A, Q): AXAᴴ − X + Q = 0.

    Adjoint: S = dlyap(Aᴴ, X̄); Q̄ = S, Ā = SAXᴴ + SᴴAX.
    Tangent: Ẋ = dlyap(A, Q̇ + ȦXAᴴ + AXȦᴴ).
    """

    @staticmethod
    def forward(A: Tensor, Q: Tensor, cfg: _Config) -> Tensor:  # type: ignore[override]
        return _solve("dlyap", cfg, A, Q)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        A, Q, cfg = inputs
        ctx.cfg = cfg
        ctx.shapes = (A.shape, Q.shape)
        ctx.save_for_backward(A, output)
        ctx.save_for_forward(A, output)

    @staticmethod
    def backward(ctx: Any, gX: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        A, X = ctx.saved_tensors
        S = DLyapFn.apply(A.mH, gX, ctx.cfg.child())
        nA, nQ = ctx.needs_input_grad[:2]
        gA = sum_to(S @ A @ X.mH + S.mH @ A @ X, ctx.shapes[0]) if nA else None
        gQ = sum_to(S, ctx.shapes[1]) if nQ else None
        return gA, gQ, None

    @staticmethod
    def jvp(ctx: Any, dA: Tensor | None, dQ: Tensor | None, _: Any) -> Tensor:
        A, X = ctx.saved_tensors
        rhs = dQ
        if dA is not None:
            rhs = _add(rhs, dA @ X @ A.mH + A @ X @ dA.mH)
        if rhs is None:
            return torch.zeros_like(X)
        return DLyapFn.apply(A, rhs, ctx.cfg.child())

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], A: Tensor, Q: Tensor, cfg: _Config):
        A, Q, cfg = vmap_align(in_dims, (A, Q, cfg), info.batch_size)
        return DLyapFn.apply(A, Q, cfg), 0


def _lyap_cfg(cfg: _Config) -> _Config:
    """Config of the Lyapunov solves inside a Riccati derivative (own factor cache)."""
    return _Config(backend=cfg.backend, check=False, maxiter=cfg.maxiter)


@freeze_signature
class CAREFn(torch.autograd.Function):
    """X = care(A, B, Q, R): AᴴX + XA − XBR⁻¹BᴴX + Q = 0 (Q, R used through their Hermitian
    parts).  With K = R⁻¹BᴴX, Ã = A − BK and S solving ÃS + SÃᴴ + herm(X̄) = 0:
    Q̄ = S, R̄ = KSKᴴ, Ā = XSᴴ + XᴴS (= 2XS), B̄ = −ĀKᴴ.
    Tangent: ÃᴴẊ + ẊÃ + E = 0, E = ȦᴴX + XȦ − XḂK − KᴴḂᴴX + KᴴṘK + Q̇.
    """

    @staticmethod
    def forward(A: Tensor, B: Tensor, Q: Tensor, R: Tensor, cfg: _Config) -> Tensor:  # type: ignore[override]
        return _solve("care", cfg, A, B, Q, R)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        A, B, Q, R, cfg = inputs
        ctx.cfg = cfg
        ctx.shapes = (A.shape, B.shape, Q.shape, R.shape)
        ctx.save_for_backward(A, B, R, output)
        ctx.save_for_forward(A, B, R, output)

    @staticmethod
    def _closed_loop(A: Tensor, B: Tensor, R: Tensor, X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        Rs = _herm(R)
        K = torch.linalg.solve(Rs, B.mH @ X)
        return Rs, K, A - B @ K

    @staticmethod
    def backward(ctx: Any, gX: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        A, B, R, X = ctx.saved_tensors
        _, K, Acl = CAREFn._closed_loop(A, B, R, X)
        S = CLyapFn.apply(Acl, -_herm(gX), _lyap_cfg(ctx.cfg))
        nA, nB, nQ, nR = ctx.needs_input_grad[:4]
        gA = X @ S.mH + X.mH @ S
        out = (
            sum_to(gA, ctx.shapes[0]) if nA else None,
            sum_to(-(gA @ K.mH), ctx.shapes[1]) if nB else None,
            sum_to(_herm(S), ctx.shapes[2]) if nQ else None,
            sum_to(_herm(K @ S @ K.mH), ctx.shapes[3]) if nR else None,
            None,
        )
        return out

    @staticmethod
    def jvp(ctx: Any, dA: Any, dB: Any, dQ: Any, dR: Any, _: Any) -> Tensor:
        A, B, R, X = ctx.saved_tensors
        _, K, Acl = CAREFn._closed_loop(A, B, R, X)
        E = None
        if dA is not None:
            XdA = X @ dA
            E = _add(E, XdA + XdA.mH)
        if dB is not None:
            XdBK = X @ dB @ K
            E = _sub(E, XdBK + XdBK.mH)
        if dR is not None:
            E = _add(E, K.mH @ _herm(dR) @ K)
        if dQ is not None:
            E = _add(E, _herm(dQ))
        if E is None:
            return torch.zeros_like(X)
        return CLyapFn.apply(Acl.mH, -E, _lyap_cfg(ctx.cfg))

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple[Any, ...],
        A: Tensor,
        B: Tensor,
        Q: Tensor,
        R: Tensor,
        cfg: _Config,
    ):
        A, B, Q, R, cfg = vmap_align(in_dims, (A, B, Q, R, cfg), info.batch_size)
        return CAREFn.apply(A, B, Q, R, cfg), 0


@freeze_signature
class DAREFn(torch.autograd.Function):
    """X = dare(A, B, Q, R): AᴴXA − X − AᴴXB(R + BᴴXB)⁻¹BᴴXA + Q = 0 (Hermitian parts of Q,
    R).  With K = (R + BᴴXB)⁻¹BᴴXA, Ã = A − BK and S solving ÃSÃᴴ − S + herm(X̄) = 0:
    Q̄ = S, R̄ = KSKᴴ, Ā = XÃSᴴ + XᴴÃS (= 2XÃS), B̄ = −ĀKᴴ.
    Tangent: ÃᴴẊÃ − Ẋ + E = 0, E = ȦᴴXÃ + ÃᴴXȦ − ÃᴴXḂK − KᴴḂᴴXÃ + KᴴṘK + Q̇.
    """

    @staticmethod
    def forward(A: Tensor, B: Tensor, Q: Tensor, R: Tensor, cfg: _Config) -> Tensor:  # type: ignore[override]
        return _solve("dare", cfg, A, B, Q, R)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        A, B, Q, R, cfg = inputs
        ctx.cfg = cfg
        ctx.shapes = (A.shape, B.shape, Q.shape, R.shape)
        ctx.save_for_backward(A, B, R, output)
        ctx.save_for_forward(A, B, R, output)

    @staticmethod
    def _closed_loop(A: Tensor, B: Tensor, R: Tensor, X: Tensor) -> tuple[Tensor, Tensor]:
        XB = X @ B
        K = torch.linalg.solve(_herm(R) + B.mH @ XB, XB.mH @ A)
        return K, A - B @ K

    @staticmethod
    def backward(ctx: Any, gX: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        A, B, R, X = ctx.saved_tensors
        K, Acl = DAREFn._closed_loop(A, B, R, X)
        S = DLyapFn.apply(Acl, _herm(gX), _lyap_cfg(ctx.cfg))
        nA, nB, nQ, nR = ctx.needs_input_grad[:4]
        XAcl = X @ Acl
        gA = XAcl @ S.mH + X.mH @ Acl @ S
        return (
            sum_to(gA, ctx.shapes[0]) if nA else None,
            sum_to(-(gA @ K.mH), ctx.shapes[1]) if nB else None,
            sum_to(_herm(S), ctx.shapes[2]) if nQ else None,
            sum_to(_herm(K @ S @ K.mH), ctx.shapes[3]) if nR else None,
            None,
        )

    @staticmethod
    def jvp(ctx: Any, dA: Any, dB: Any, dQ: Any, dR: Any, _: Any) -> Tensor:
        A, B, R, X = ctx.saved_tensors
        K, Acl = DAREFn._closed_loop(A, B, R, X)
        E = None
        if dA is not None:
            T = dA.mH @ X @ Acl
            E = _add(E, T + T.mH)
        if dB is not None:
            T = Acl.mH @ X @ dB @ K
            E = _sub(E, T + T.mH)
        if dR is not None:
            E = _add(E, K.mH @ _herm(dR) @ K)
        if dQ is not None:
            E = _add(E, _herm(dQ))
        if E is None:
            return torch.zeros_like(X)
        return DLyapFn.apply(Acl.mH, E, _lyap_cfg(ctx.cfg))

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple[Any, ...],
        A: Tensor,
        B: Tensor,
        Q: Tensor,
        R: Tensor,
        cfg: _Config,
    ):
        A, B, Q, R, cfg = vmap_align(in_dims, (A, B, Q, R, cfg), info.batch_size)
        return DAREFn.apply(A, B, Q, R, cfg), 0

