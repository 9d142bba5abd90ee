"""Differentiable Sylvester, Lyapunov and Riccati solvers and Gramians (DESIGN.md §4).

scipy's names and sign conventions, batched, on CPU and CUDA, with adjoint-based reverse mode,
tangent-based forward mode (``torch.func.jvp`` and ``torch.autograd.forward_ad`` dual tensors)
and vmap support (``torch.func.vmap``, and the legacy batching of
``gradcheck(check_batched_grad=True)`` / ``jacobian(vectorize=True)``)::

    solve_sylvester(A, B, Q)              AX + XB = Q
    solve_continuous_lyapunov(A, Q)       AX + XAᴴ = Q
    solve_discrete_lyapunov(A, Q)         AXAᴴ − X + Q = 0
    solve_continuous_are(A, B, Q, R)      AᴴX + XA − XBR⁻¹BᴴX + Q = 0
    solve_discrete_are(A, B, Q, R)        AᴴXA − X − AᴴXB(R + BᴴXB)⁻¹BᴴXA + Q = 0
    controllability_gramian(A, B, T=None) ∫₀ᵀ e^{At}BBᴴe^{Aᴴt} dt
    observability_gramian(A, C, T=None)   ∫₀ᵀ e^{Aᴴt}CᴴCe^{At} dt

Empty (0 × 0) equations have the empty (0 × 0) solution.  A Riccati solution whose relative
residual exceeds ``max(1e-6, 100·eps)`` (1e-6 in double precision) is returned with an
:class:`InaccurateSolutionWarning` (a :class:`NearSingularWarning`).
"""

from ._common import (
    ControlWarning,
    InaccurateSolutionWarning,
    NearSingularWarning,
    SolveInfo,
    StabilityError,
)
from .gramians import controllability_gramian, observability_gramian
from .solvers import (
    solve_continuous_are,
    solve_continuous_lyapunov,
    solve_discrete_are,
    solve_discrete_lyapunov,
    solve_sylvester,
)

__all__ = [
    "ControlWarning",
    "InaccurateSolutionWarning",
    "NearSingularWarning",
    "SolveInfo",
    "StabilityError",
    "controllability_gramian",
    "observability_gramian",
    "solve_continuous_are",
    "solve_continuous_lyapunov",
    "solve_discrete_are",
    "solve_discrete_lyapunov",
    "solve_sylvester",
]
