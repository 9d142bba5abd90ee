"""Controllability and observability Gramians (infinite or finite horizon, continuous or
discrete time), differentiable in A, B/C and the horizon T."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import (
    _Config,
    as_tensor,
    broadcast_batch,
    check_backend,
    check_dims,
    check_inputs,
    real_dtype,
)
from ._functions import CLyapFn, DLyapFn, call

__all__ = ["controllability_gramian", "observability_gramian"]


def controllability_gramian(
    A: Tensor,
    B: Tensor,
    T: float | Tensor | None = None,
    *,
    discrete: bool = False,
    backend: str = "auto",
    theta: float = 0.5,
) -> Tensor:
    """Controllability Gramian of ẋ = Ax + Bu (or x_{k+1} = Ax_k + Bu_k if ``discrete``).

    Continuous time: W_c(T) = ∫₀ᵀ e^{At} BBᴴ e^{Aᴴt} dt.  ``T=None`` gives the infinite
    horizon, the solution of AW + WAᴴ + BBᴴ = 0 (A must be Hurwitz).  A finite T works for any
    A, stable or not: Van Loan's block exponential exp([[−A, BBᴴ], [0, Aᴴ]]t₀) gives W(t₀) on a
    short step t₀ = T/2ᵏ (‖A‖₁t₀ ≤ ``theta``), then W(2t) = W(t) + e^{At}W(t)e^{Aᴴt} doubles
    it k times — a sum of positive semi-definite terms, so the large e^{−AT} of a one-shot
    Van Loan exponential never appears.  Differentiable in A, B and T (through matrix_exp).

    Discrete time: W_c(T) = Σ_{k<T} AᵏBBᴴ(Aᴴ)ᵏ for an integer T ≥ 0 (binary doubling), or, with
    ``T=None``, the solution of AWAᴴ − W + BBᴴ = 0 (spectral radius ρ(A) < 1).

    Args:
        A: (..., n, n).  B: (..., n, m).
        T: horizon (float, or a tensor broadcastable to the batch shape); None = infinite.
        discrete: discrete-time system.
        backend: Lyapunov backend for the infinite horizon ("auto", "scipy", "torch", "kron").
        theta: step-size bound ‖A‖₁t₀ of the Van Loan exponential.

    Returns:
        W: (..., n, n) Hermitian positive semi-definite.
    """
    A, B = as_tensor(A, "A"), as_tensor(B, "B")
    named = [("A", A), ("B", B)]
    check_inputs(named, square=("A",))
    check_dims([("A.shape[-1]", A.shape[-1], "B.shape[-2]", B.shape[-2])])
    broadcast_batch(named)
    check_backend(backend)
    BB = B @ B.mH
    if T is None:
        if discrete:
            cfg = _Config(backend=backend, require_stable="discrete")
            W = call(DLyapFn, A, BB, cfg)
        else:
            cfg = _Config(backend=backend, require_stable="continuous")
            W = call(CLyapFn, A, -BB, cfg)
        return 0.5 * (W + W.mH)
    if discrete:
        return _discrete_finite(A, BB, T)
    return _van_loan_doubling(A, BB, T, theta)


def observability_gramian(
    A: Tensor,
    C: Tensor,
    T: float | Tensor | None = None,
    *,
    discrete: bool = False,
    backend: str = "auto",
    theta: float = 0.5,
) -> Tensor:
    """Observability Gramian W_o(T) = ∫₀ᵀ e^{Aᴴt} CᴴC e^{At} dt of ẋ = Ax, y = Cx.

    ``T=None``: infinite horizon, AᴴW + WA + CᴴC = 0 (A Hurwitz).  ``discrete``:
    Σ_{k<T} (Aᴴ)ᵏCᴴCAᵏ, or AᴴWA − W + CᴴC = 0 for ``T=None``.  This is the controllability
    Gramian of (Aᴴ, Cᴴ); see :func:`controllability_gramian` for the method and arguments.
    Shapes: A (..., n, n), C (..., p, n) → W (..., n, n).
    """
    A, C = as_tensor(A, "A"), as_tensor(C, "C")
    check_inputs([("A", A), ("C", C)], square=("A",))
    check_dims([("A.shape[-1]", A.shape[-1], "C.shape[-1]", C.shape[-1])])
    return controllability_gramian(A.mH, C.mH, T, discrete=discrete, backend=backend, theta=theta)


def _horizon(T: float | Tensor, A: Tensor) -> Tensor:
    rdt = real_dtype(A.dtype)
    Tt = T if isinstance(T, Tensor) else torch.tensor(float(T), dtype=rdt, device=A.device)
    if Tt.is_complex() or not Tt.dtype.is_floating_point:
        Tt = Tt.to(rdt)
    if Tt.dtype != rdt:
        raise TypeError(f"T has dtype {Tt.dtype} but A needs a {rdt} horizon")
    if not bool(torch.isfinite(Tt.detach()).all()) or bool((Tt.detach() < 0).any()):
        raise ValueError("the horizon T must be finite and ≥ 0")
    return Tt


def _van_loan_doubling(A: Tensor, BB: Tensor, T: float | Tensor, theta: float) -> Tensor:
    n = A.shape[-1]
    Tt = _horizon(T, A)
    try:
        batch = torch.broadcast_shapes(A.shape[:-2], BB.shape[:-2], Tt.shape)
    except RuntimeError as err:
        raise ValueError(
            f"T of shape {tuple(Tt.shape)} does not broadcast with the batch {tuple(A.shape[:-2])}"
        ) from err
    span = float((torch.linalg.matrix_norm(A.detach(), ord=1) * Tt.detach().abs()).max())
    k = max(0, math.ceil(math.log2(span / theta))) if span > theta else 0
    t0 = (Tt / 2**k)[..., None, None]
    A_, BB_ = A.expand(*batch, n, n), BB.expand(*batch, n, n)
    top = torch.cat([-A_, BB_], -1)
    bot = torch.cat([torch.zeros_like(A_), A_.mH], -1)
    E = torch.linalg.matrix_exp(torch.cat([top, bot], -2) * t0)
    Phi = E[..., n:, n:].mH  # e^{A t₀}
    W = Phi @ E[..., :n, n:]  # ∫₀^{t₀} e^{As} BBᴴ e^{Aᴴs} ds
    for _ in range(k):
        W = W + Phi @ W @ Phi.mH
        Phi = Phi @ Phi
    return 0.5 * (W + W.mH)


def _discrete_finite(A: Tensor, BB: Tensor, T: float | Tensor) -> Tensor:
    steps = int(T.item()) if isinstance(T, Tensor) else int(T)
    if steps != T or steps < 0:
        raise ValueError(f"a discrete-time horizon must be an integer ≥ 0, got {T!r}")
    n = A.shape[-1]
    batch = torch.broadcast_shapes(A.shape[:-2], BB.shape[:-2])
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    Wp, Pp = BB.expand(*batch, n, n), A.expand(*batch, n, n)  # block of length L = 2^j
    W, P = torch.zeros_like(Wp), eye.expand(*batch, n, n)  # terms [0, r) and A^r
    while steps:
        if steps & 1:
            W = W + P @ Wp @ P.mH
            P = P @ Pp
        steps >>= 1
        if steps:
            Wp = Wp + Pp @ Wp @ Pp.mH
            Pp = Pp @ Pp
    return 0.5 * (W + W.mH)
