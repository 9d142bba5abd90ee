"""Differentiable Sylvester, Lyapunov and Riccati solvers (scipy's names and conventions).

All functions accept leading batch dimensions (broadcast between arguments), float32/float64/
complex64/complex128 tensors on any device, and are differentiable to any order in reverse
mode (adjoint equations) and forward mode (tangent equations); see DESIGN.md §4.  Empty
equations (n = 0, or an empty batch) return the empty solution of the right shape.

Backends (``backend=``):

``"scipy"``  Bartels–Stewart (Schur + triangular solve, LAPACK via scipy) on CPU, one system at a
             time; CARE by Laub's ordered Schur method on the Hamiltonian (LAPACK ``?gees``),
             handing any system it does not solve cleanly (residual, conditioning) to scipy's
             ``solve_continuous_are`` (QZ); DARE likewise by QZ on the 2n × 2n symplectic
             pencil, with scipy's ``solve_discrete_are`` as its fallback.
``"torch"``  matmul/LU-only iterations, batched, on any device: Cayley transform + squared
             Smith doubling (continuous Lyapunov, Sylvester; one inverse, then products), with
             the Newton sign function for any system it leaves unconverged; squared Smith
             doubling (discrete Lyapunov), Hamiltonian sign function + Newton–Kleinman (CARE),
             structured doubling (DARE).  They need
             stability (A Hurwitz, ρ(A) < 1, separated spectra); failures are reported.
             Single-precision Riccati inputs are iterated in double precision (like scipy).
``"kron"``   dense Kronecker/vec linear solve, for tiny systems.
``"auto"``   Kronecker for n ≤ 4; torch iterations on accelerators and for batches (≥ 8) of small
             systems on CPU; scipy otherwise.  Systems the torch method cannot handle (e.g. an
             unstable A) fall back to scipy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._common import (
    SolveInfo,
    _Config,
    as_tensor,
    broadcast_batch,
    check_backend,
    check_dims,
    check_inputs,
)
from ._functions import (
    CAREFn,
    CLyapFn,
    DAREFn,
    DLyapFn,
    SylvesterFn,
    call,
    care_residual,
    dare_residual,
)

__all__ = [
    "solve_continuous_are",
    "solve_continuous_lyapunov",
    "solve_discrete_are",
    "solve_discrete_lyapunov",
    "solve_sylvester",
]

_nrm = torch.linalg.matrix_norm


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


def _info(cfg: _Config, residuals: Tensor) -> SolveInfo:
    res = residuals.detach()
    worst = float(res.max()) if res.numel() else 0.0
    return SolveInfo(worst, cfg.record.backend, cfg.record.iterations, res)


def _config(backend: str, check: bool, maxiter: int) -> _Config:
    return _Config(backend=check_backend(backend), check=bool(check), maxiter=int(maxiter))


def solve_sylvester(
    A: Tensor,
    B: Tensor,
    Q: Tensor,
    *,
    backend: str = "auto",
    check: bool = True,
    return_info: bool = False,
    maxiter: int = 100,
) -> Tensor | tuple[Tensor, SolveInfo]:
    """Solve AX + XB = Q for X.

    Args:
        A: (..., n, n).  B: (..., m, m).  Q: (..., n, m).  Batch dims broadcast.
        backend: "auto", "scipy", "torch" or "kron" (see module docstring).
        check: validate values (NaN/inf) and warn when min |λ(A) + μ(B)| is tiny.
        return_info: also return a :class:`SolveInfo` (relative residual
            ‖AX + XB − Q‖ / (‖A‖‖X‖ + ‖X‖‖B‖ + ‖Q‖), backend, iterations).
        maxiter: iteration cap of the torch backend.

    Returns:
        X: (..., n, m); ``(X, info)`` if ``return_info``.
    """
    A, B, Q = as_tensor(A, "A"), as_tensor(B, "B"), as_tensor(Q, "Q")
    named = [("A", A), ("B", B), ("Q", Q)]
    check_inputs(named, square=("A", "B"))
    check_dims(
        [
            ("A.shape[-1]", A.shape[-1], "Q.shape[-2]", Q.shape[-2]),
            ("B.shape[-1]", B.shape[-1], "Q.shape[-1]", Q.shape[-1]),
        ]
    )
    broadcast_batch(named)
    cfg = _config(backend, check, maxiter)
    X = call(SylvesterFn, A, B, Q, cfg)
    if not return_info:
        return X
    with torch.no_grad():
        res = _safe_div(_nrm(A @ X + X @ B - Q), _nrm(A) * _nrm(X) + _nrm(X) * _nrm(B) + _nrm(Q))
    return X, _info(cfg, res)


def solve_continuous_lyapunov(
    A: Tensor,
    Q: Tensor,
    *,
    backend: str = "auto",
    check: bool = True,
    return_info: bool = False,
    maxiter: int = 100,
) -> Tensor | tuple[Tensor, SolveInfo]:
    """Solve AX + XAᴴ = Q for X (scipy's ``solve_continuous_lyapunov`` convention).

    The infinite-horizon controllability Gramian is ``solve_continuous_lyapunov(A, -B @ B.mH)``.

    Args:
        A: (..., n, n).  Q: (..., n, n) (need not be Hermitian).  Batch dims broadcast.
        backend: "auto", "scipy", "torch" (Cayley–Smith doubling / Newton sign iteration,
            needs A Hurwitz or anti-Hurwitz) or "kron".
        check: validate values and warn when min |λᵢ + λ̄ⱼ| is tiny (near-singular equation).
        return_info: also return :class:`SolveInfo` with the relative residual
            ‖AX + XAᴴ − Q‖ / (2‖A‖‖X‖ + ‖Q‖).
        maxiter: iteration cap of the torch backend.

    Returns:
        X: (..., n, n); ``(X, info)`` if ``return_info``.
    """
    A, Q = as_tensor(A, "A"), as_tensor(Q, "Q")
    named = [("A", A), ("Q", Q)]
    check_inputs(named, square=("A", "Q"))
    check_dims([("A.shape[-1]", A.shape[-1], "Q.shape[-1]", Q.shape[-1])])
    broadcast_batch(named)
    cfg = _config(backend, check, maxiter)
    X = call(CLyapFn, A, Q, cfg)
    if not return_info:
        return X
    with torch.no_grad():
        res = _safe_div(_nrm(A @ X + X @ A.mH - Q), 2 * _nrm(A) * _nrm(X) + _nrm(Q))
    return X, _info(cfg, res)


def solve_discrete_lyapunov(
    A: Tensor,
    Q: Tensor,
    *,
    backend: str = "auto",
    check: bool = True,
    return_info: bool = False,
    maxiter: int = 64,
) -> Tensor | tuple[Tensor, SolveInfo]:
    """Solve AXAᴴ − X + Q = 0 for X (scipy's ``solve_discrete_lyapunov`` convention).

    Args:
        A: (..., n, n).  Q: (..., n, n).  Batch dims broadcast.
        backend: "auto", "scipy" (bilinear map to a continuous equation + Bartels–Stewart),
            "torch" (squared Smith doubling, needs spectral radius ρ(A) < 1) or "kron".
        check: validate values and warn when min |1 − λᵢλ̄ⱼ| is tiny.
        return_info: also return :class:`SolveInfo` with the relative residual
            ‖AXAᴴ − X + Q‖ / (‖A‖²‖X‖ + ‖X‖ + ‖Q‖).
        maxiter: doubling-step cap of the torch backend (2^maxiter terms).

    Returns:
        X: (..., n, n); ``(X, info)`` if ``return_info``.
    """
    A, Q = as_tensor(A, "A"), as_tensor(Q, "Q")
    named = [("A", A), ("Q", Q)]
    check_inputs(named, square=("A", "Q"))
    check_dims([("A.shape[-1]", A.shape[-1], "Q.shape[-1]", Q.shape[-1])])
    broadcast_batch(named)
    cfg = _config(backend, check, maxiter)
    X = call(DLyapFn, A, Q, cfg)
    if not return_info:
        return X
    with torch.no_grad():
        res = _safe_div(_nrm(A @ X @ A.mH - X + Q), _nrm(A) ** 2 * _nrm(X) + _nrm(X) + _nrm(Q))
    return X, _info(cfg, res)


def _riccati_inputs(A: Any, B: Any, Q: Any, R: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    A, B, Q, R = (as_tensor(t, nm) for t, nm in zip((A, B, Q, R), "ABQR", strict=True))
    named = [("A", A), ("B", B), ("Q", Q), ("R", R)]
    check_inputs(named, square=("A", "Q", "R"))
    n, m = A.shape[-1], B.shape[-1]
    check_dims(
        [
            ("A.shape[-1]", n, "B.shape[-2]", B.shape[-2]),
            ("A.shape[-1]", n, "Q.shape[-1]", Q.shape[-1]),
            ("B.shape[-1]", m, "R.shape[-1]", R.shape[-1]),
        ]
    )
    broadcast_batch(named)
    return A, B, Q, R


def solve_continuous_are(
    A: Tensor,
    B: Tensor,
    Q: Tensor,
    R: Tensor,
    *,
    backend: str = "auto",
    check: bool = True,
    return_info: bool = False,
    maxiter: int = 100,
) -> Tensor | tuple[Tensor, SolveInfo]:
    """Stabilising solution of AᴴX + XA − XBR⁻¹BᴴX + Q = 0 (scipy's ``solve_continuous_are``).

    Q and R must be Hermitian (checked to √eps; their Hermitian parts are used, so gradients
    are Hermitian) and R positive definite.  The optimal gain is K = R⁻¹BᴴX.

    Args:
        A: (..., n, n).  B: (..., n, m).  Q: (..., n, n).  R: (..., m, m).  Batch dims broadcast.
        backend: "auto", "scipy" (Laub's ordered Schur method, scipy's QZ solver where Laub's
            residual or conditioning is not clean) or "torch" (Hamiltonian sign function +
            Newton–Kleinman).
        check: validate values, symmetry of Q, R and positive definiteness of R, and warn
            (:class:`InaccurateSolutionWarning`) when the relative residual of the solution
            exceeds ``max(1e-6, 100·eps)`` (badly conditioned, e.g. strongly non-normal A).
        return_info: also return :class:`SolveInfo` with the relative residual.
        maxiter: iteration cap of the torch backend.

    Returns:
        X: (..., n, n) Hermitian; ``(X, info)`` if ``return_info``.
    """
    A, B, Q, R = _riccati_inputs(A, B, Q, R)
    cfg = _config(backend, check, maxiter)
    X = call(CAREFn, A, B, Q, R, cfg)
    if not return_info:
        return X
    with torch.no_grad():
        res = care_residual(A, B, Q, R, X)
    return X, _info(cfg, res)


def solve_discrete_are(
    A: Tensor,
    B: Tensor,
    Q: Tensor,
    R: Tensor,
    *,
    backend: str = "auto",
    check: bool = True,
    return_info: bool = False,
    maxiter: int = 100,
) -> Tensor | tuple[Tensor, SolveInfo]:
    """Stabilising solution of AᴴXA − X − AᴴXB(R + BᴴXB)⁻¹BᴴXA + Q = 0 (scipy's
    ``solve_discrete_are``).

    Q and R must be Hermitian (their Hermitian parts are used) and R positive definite.  The
    optimal gain is K = (R + BᴴXB)⁻¹BᴴXA, closed loop A − BK.

    Args:
        A: (..., n, n).  B: (..., n, m).  Q: (..., n, n).  R: (..., m, m).  Batch dims broadcast.
        backend: "auto", "scipy" (QZ on the 2n × 2n symplectic pencil, scipy's extended-pencil
            solver where its residual or conditioning is not clean) or "torch" (structured
            doubling algorithm).
        check: validate values, symmetry of Q, R and positive definiteness of R, and warn
            (:class:`InaccurateSolutionWarning`) when the relative residual of the solution
            exceeds ``max(1e-6, 100·eps)`` (badly conditioned, e.g. strongly non-normal A).
        return_info: also return :class:`SolveInfo` with the relative residual.
        maxiter: iteration cap of the torch backend.

    Returns:
        X: (..., n, n) Hermitian; ``(X, info)`` if ``return_info``.
    """
    A, B, Q, R = _riccati_inputs(A, B, Q, R)
    cfg = _config(backend, check, maxiter)
    X = call(DAREFn, A, B, Q, R, cfg)
    if not return_info:
        return X
    with torch.no_grad():
        res = dare_residual(A, B, Q, R, X)
    return X, _info(cfg, res)
