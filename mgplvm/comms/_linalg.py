"""Bridge to :mod:`mgplvm.control` (differentiable Lyapunov solvers and Gramians).

TEMPORARY: while ``mgplvm.control`` is not yet available in this tree, a small scipy-backed
fallback (Bartels–Stewart forward solve, adjoint formulas of DESIGN §4 for the backward pass) is
used instead.  Remove the fallback once ``mgplvm.control`` has landed.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import scipy.linalg as sla
import torch
from torch import Tensor

__all__ = [
    "clyap",
    "dlyap",
    "obs_gramian",
    "obs_gramian_doubling",
    "using_fallback",
]


def _control():
    try:
        mod = importlib.import_module("mgplvm.control")
    except ImportError:
        return None
    needed = ("solve_continuous_lyapunov", "solve_discrete_lyapunov", "observability_gramian")
    return mod if all(hasattr(mod, n) for n in needed) else None


def using_fallback() -> bool:
    """True while the temporary scipy fallback is used instead of :mod:`mgplvm.control`."""
    return _control() is None


# --------------------------------------------------------------------------------------------
# TEMPORARY fallback (scipy forward, adjoint backward).  Delete when mgplvm.control lands.
# --------------------------------------------------------------------------------------------
def _batched_np(fn, A: Tensor, Q: Tensor) -> Tensor:
    A, Q = torch.broadcast_tensors(A, Q)
    batch = A.shape[:-2]
    a = A.detach().reshape(-1, *A.shape[-2:]).cpu().numpy()
    q = Q.detach().reshape(-1, *Q.shape[-2:]).cpu().numpy()
    out = np.stack([fn(a[i], q[i]) for i in range(a.shape[0])])
    return torch.as_tensor(out, dtype=A.dtype, device=A.device).reshape(*batch, *A.shape[-2:])


def _sum_to(g: Tensor, shape: torch.Size) -> Tensor:
    while g.dim() > len(shape):
        g = g.sum(0)
    for i, s in enumerate(shape):
        if s == 1 and g.shape[i] != 1:
            g = g.sum(i, keepdim=True)
    return g


class _CLyap(torch.autograd.Function):
    """AX + XAᴴ = Q."""

    @staticmethod
    def forward(ctx, A: Tensor, Q: Tensor) -> Tensor:  # type: ignore[override]
        X = _batched_np(sla.solve_continuous_lyapunov, A, Q)
        ctx.save_for_backward(A, X)
        ctx.shapes = (A.shape, Q.shape)
        return X

    @staticmethod
    def backward(ctx, gX: Tensor):  # type: ignore[override]
        A, X = ctx.saved_tensors
        Y = _CLyap.apply(A.mT, gX)
        gA = -(Y @ X.mT + Y.mT @ X)
        return _sum_to(gA, ctx.shapes[0]), _sum_to(Y, ctx.shapes[1])


class _DLyap(torch.autograd.Function):
    """AXAᴴ − X + Q = 0."""

    @staticmethod
    def forward(ctx, A: Tensor, Q: Tensor) -> Tensor:  # type: ignore[override]
        X = _batched_np(sla.solve_discrete_lyapunov, A, Q)
        ctx.save_for_backward(A, X)
        ctx.shapes = (A.shape, Q.shape)
        return X

    @staticmethod
    def backward(ctx, gX: Tensor):  # type: ignore[override]
        A, X = ctx.saved_tensors
        S = _DLyap.apply(A.mT, gX)
        gA = S @ A @ X.mT + S.mT @ A @ X
        return _sum_to(gA, ctx.shapes[0]), _sum_to(S, ctx.shapes[1])


def _fallback_obs_gramian(A: Tensor, C: Tensor, T: Tensor | float | None) -> Tensor:
    CtC = C.mT @ C
    if T is None:
        return _CLyap.apply(A.mT, -CtC)
    n = A.shape[-1]
    A, CtC = torch.broadcast_tensors(A, CtC)
    top = torch.cat([-A.mT, CtC], -1)
    bot = torch.cat([torch.zeros_like(A), A], -1)
    E = torch.linalg.matrix_exp(torch.cat([top, bot], -2) * T)
    return E[..., n:, n:].mT @ E[..., :n, n:]


# --------------------------------------------------------------------------------------------
def clyap(A: Tensor, Q: Tensor) -> Tensor:
    """Solve AX + XAᴴ = Q (batched, differentiable)."""
    ctl = _control()
    if ctl is not None:
        return ctl.solve_continuous_lyapunov(A, Q)
    return _CLyap.apply(A, Q)


def dlyap(A: Tensor, Q: Tensor) -> Tensor:
    """Solve AXAᴴ − X + Q = 0 (batched, differentiable)."""
    ctl = _control()
    if ctl is not None:
        return ctl.solve_discrete_lyapunov(A, Q)
    return _DLyap.apply(A, Q)


def obs_gramian(A: Tensor, C: Tensor, T: Tensor | float | None = None) -> Tensor:
    """W_o(T) = ∫₀ᵀ e^{Aᵀt} CᵀC e^{At} dt (T=None: infinite horizon)."""
    ctl = _control()
    if ctl is not None:
        return ctl.observability_gramian(A, C, T)
    return _fallback_obs_gramian(A, C, T)


def obs_gramian_doubling(A: Tensor, C: Tensor, T: Tensor | float, theta: float = 0.5) -> Tensor:
    """Finite-horizon W_o(T) by scaling and squaring, accurate for large T‖A‖.

    A one-shot Van Loan exponential of [[−Aᵀ, CᵀC], [0, A]]T contains e^{−AᵀT}, which for a
    stable A with fast modes overflows the float64 range of useful digits (relative error ≈ 0.6
    for a 12-node chain at T = 10).  Instead W_o(t₀) is computed for t₀ = T / 2ᵏ with ‖A‖₁t₀ ≤ θ
    and doubled k times with W(2t) = W(t) + e^{Aᵀt} W(t) e^{At} — a sum of PSD terms, no
    cancellation.  Shapes: A (..., n, n), C (..., p, n); differentiable in A, C and T.
    """
    Tf = float(T.detach()) if isinstance(T, Tensor) else float(T)
    norm = float(torch.linalg.matrix_norm(A.detach(), ord=1).max()) * abs(Tf)
    k = max(0, math.ceil(math.log2(norm / theta))) if norm > theta else 0
    t = T / 2**k
    W = obs_gramian(A, C, t)
    Phi = torch.linalg.matrix_exp(A * t)
    for _ in range(k):
        W = W + Phi.mT @ W @ Phi
        Phi = Phi @ Phi
    return 0.5 * (W + W.mT)
