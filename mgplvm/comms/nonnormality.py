"""Measures of non-normality and stability of a linear network ẋ = Ax.

* :func:`henrici` — departure from normality d_F(A) = √(‖A‖²_F − Σ|λᵢ|²) (Henrici 1962).
* :func:`numerical_abscissa` — ω(A) = λ_max((A + Aᵀ)/2), the initial growth rate of ‖x‖.
* :func:`spectral_abscissa` — α(A) = max Re λᵢ, the asymptotic growth rate.
* :func:`smoothed_spectral_abscissa` — α̃_ε(A), a smooth upper bound of α(A) (Vanbiervliet et al.
  2009), differentiable with ∇α̃ = QP / tr(QP) (used by Hennequin et al. 2014).
* :func:`transient_amplification` / :func:`max_amplification` — t ↦ ‖e^{At}‖₂ and its maximum.

α(A) ≤ α̃_ε(A) and α(A) ≤ ω(A); for a normal matrix d_F = 0 and max_t ‖e^{At}‖₂ = 1 when α ≤ 0.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize as sopt
import torch
from torch import Tensor

from ..control import solve_continuous_lyapunov
from . import _checks as chk
from .rate import _few_threads, _t

__all__ = [
    "henrici",
    "max_amplification",
    "numerical_abscissa",
    "smoothed_spectral_abscissa",
    "smoothed_spectral_abscissa_grad",
    "spectral_abscissa",
    "transient_amplification",
]


def henrici(A: Tensor, relative: bool = False) -> Tensor:
    """Henrici departure from normality √(‖A‖²_F − Σᵢ|λᵢ|²) of A (..., n, n).

    ``relative=True`` divides by ‖A‖_F (a number in [0, 1]).  Zero iff A is normal.
    """
    A = _t(A)
    chk.square("A", A)
    fro2 = (A.abs() ** 2).sum((-2, -1))
    lam2 = (torch.linalg.eigvals(A).abs() ** 2).sum(-1)
    d = (fro2 - lam2).clamp_min(0.0).sqrt()
    return d / fro2.sqrt() if relative else d


def numerical_abscissa(A: Tensor) -> Tensor:
    """ω(A) = λ_max((A + Aᵀ)/2) = d/dt log‖e^{At}‖₂ at t = 0⁺; A (..., n, n)."""
    A = _t(A)
    chk.square("A", A)
    return torch.linalg.eigvalsh(0.5 * (A + A.mT))[..., -1]


def spectral_abscissa(A: Tensor) -> Tensor:
    """α(A) = max_i Re λᵢ(A); A (..., n, n).  (Non-smooth; see the smoothed version.)"""
    A = _t(A)
    chk.square("A", A)
    return torch.linalg.eigvals(A).real.amax(-1)


# --------------------------------------------------------------------------------------------
def _gramian_pair(A: Tensor, s: float) -> tuple[Tensor, Tensor]:
    """P, Q with (A−sI)P + P(A−sI)ᵀ = −I and (A−sI)ᵀQ + Q(A−sI) = −I (one batched solve)."""
    n = A.shape[-1]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    M = A - s * eye
    X = solve_continuous_lyapunov(torch.stack([M, M.mT]), -eye.expand(2, n, n))
    P, Q = 0.5 * (X[0] + X[0].mT), 0.5 * (X[1] + X[1].mT)
    return P, Q


def _ssa_newton(pair, n: int, alpha: float, omega: float, eps: float, s0: float | None = None,
                tol: float = 1e-10, max_iter: int = 60):
    """Root s > α of h(s) = 1 / tr P(s) = ε by safeguarded Newton; ``pair(s) -> (P, Q)``.

    h(s) ≤ 2(s − α) and h(s) ≥ 2(s − ω)/n (ω the numerical abscissa) bracket the root; h is close
    to linear, h'(s) = 2 tr(QP) / f², so a few Newton steps suffice.
    """
    lo, hi = alpha + 0.5 * eps, max(omega + 0.5 * n * eps, alpha + eps)
    s = s0 if s0 is not None and lo < s0 < hi else lo
    P = Q = None
    for _ in range(max_iter):
        P, Q = pair(s)
        f = float(P.diagonal().sum())
        if not (f > 0 and int(torch.linalg.cholesky_ex(P).info) == 0):
            lo = s  # s is (numerically) left of α: move right
            s = 0.5 * (lo + hi)
            continue
        h = 1.0 / f
        if abs(h - eps) <= tol * eps:
            break
        if h < eps:
            lo = s
        else:
            hi = s
        dh = 2.0 * float((Q * P).sum()) / f**2
        s_new = s - (h - eps) / dh
        s = s_new if lo < s_new < hi else 0.5 * (lo + hi)
    else:
        P, Q = pair(s)
    return s, P, Q


def _ssa_root(A: Tensor, eps: float, s0: float | None = None):
    """(α̃_ε(A), P, Q) using the Lyapunov solver of mgplvm.control."""
    alpha = float(torch.linalg.eigvals(A).real.max())
    omega = float(torch.linalg.eigvalsh(0.5 * (A + A.mT))[-1])
    return _ssa_newton(lambda s: _gramian_pair(A, s), A.shape[-1], alpha, omega, eps, s0)


class _SmoothedAbscissa(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A: Tensor, eps: Tensor) -> Tensor:  # type: ignore[override]
        with _few_threads(A.shape[-1]):
            s, P, Q = _ssa_root(A.detach(), float(eps))
        QP = Q @ P
        ctx.save_for_backward(QP, eps)
        return torch.as_tensor(s, dtype=A.dtype, device=A.device)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        QP, eps = ctx.saved_tensors
        tr = QP.diagonal().sum()
        return g * QP / tr, g / (2.0 * eps**2 * tr)


def smoothed_spectral_abscissa(A: Tensor, eps: float | Tensor = 0.01) -> Tensor:
    """ε-smoothed spectral abscissa α̃_ε(A) of A (..., n, n) (Vanbiervliet et al. 2009).

    α̃_ε(A) is the unique s > α(A) with f(s) = 1/ε, where
    f(s) = ∫₀^∞ ‖e^{(A−sI)t}‖²_F dt = tr P(s),  (A−sI)P + P(A−sI)ᵀ = −I.
    α̃_ε ≥ α and α̃_ε → α as ε → 0 (for a normal A, f(s) = Σᵢ 1/(2(s − Re λᵢ))).
    Differentiable (implicit function theorem): ∇_A α̃_ε = QP / tr(QP) with
    (A−sI)ᵀQ + Q(A−sI) = −I (Vanbiervliet et al. 2009, SIAM J. Optim. 20:156; Hennequin, Vogels &
    Gerstner 2014, Neuron 82:1394), and ∂α̃/∂ε = 1 / (2ε² tr(QP)).  Two Lyapunov solves per
    Newton step of the root search (mgplvm.control).
    """
    A = _t(A)
    chk.square("A", A)
    eps_t = _t(eps, A.dtype)
    chk.positive_tensor("eps", eps_t, "smoothing")
    if A.dim() == 2:
        return _SmoothedAbscissa.apply(A, eps_t)
    flat = A.reshape(-1, *A.shape[-2:])
    out = torch.stack([_SmoothedAbscissa.apply(a, eps_t) for a in flat])
    return out.reshape(A.shape[:-2])


def smoothed_spectral_abscissa_grad(A: Tensor, eps: float = 0.01) -> tuple[Tensor, Tensor]:
    """(α̃_ε(A), ∇_A α̃_ε = QP / tr(QP)) for a single A (n, n), without autograd."""
    A = _t(A).detach()
    chk.square("A", A, batched=False)
    eps = chk.number("eps", eps, "smoothing", positive=True)
    s, P, Q = _ssa_root(A, float(eps))
    QP = Q @ P
    return torch.as_tensor(s, dtype=A.dtype), QP / QP.diagonal().sum()


# --------------------------------------------------------------------------------------------
def _default_tmax(A: Tensor) -> float:
    alpha = float(spectral_abscissa(A.detach()))
    scale = float(torch.linalg.matrix_norm(A.detach(), ord=2))
    return 8.0 / abs(alpha) if alpha < -1e-3 * scale else 8.0 / max(scale, 1e-12)


def transient_amplification(
    A: Tensor, t: Tensor | np.ndarray | None = None, num: int = 100, t_max: float | None = None
) -> tuple[Tensor, Tensor]:
    """Curve t ↦ ‖e^{At}‖₂ for A (n, n); returns ``(t (k,), norms (k,))``.

    Default grid: ``num`` points on [0, t_max], t_max = 8/|α(A)| for a stable A.
    """
    A = _t(A)
    chk.square("A", A, batched=False)
    if t_max is not None:
        t_max = chk.number("t_max", t_max, "end of the time grid", positive=True)
    if t is None:
        t = torch.linspace(0.0, t_max or _default_tmax(A), num, dtype=A.dtype)
    t = _t(t, A.dtype)
    with _few_threads(A.shape[-1]):
        E = torch.linalg.matrix_exp(A * t[:, None, None])
        return t, torch.linalg.matrix_norm(E, ord=2)


def max_amplification(A: Tensor, t_max: float | None = None, num: int = 100) -> tuple[float, float]:
    """max_{t ≥ 0} ‖e^{At}‖₂ and its argmax t*: grid search then bounded refinement (A (n, n))."""
    A = _t(A).detach()
    t, g = transient_amplification(A, num=num, t_max=t_max)
    i = int(torch.argmax(g))
    if i == 0:
        return float(g[0]), 0.0
    lo, hi = float(t[i - 1]), float(t[min(i + 1, len(t) - 1)])

    def neg(x: float) -> float:
        return -float(torch.linalg.matrix_norm(torch.linalg.matrix_exp(A * x), ord=2))

    res = sopt.minimize_scalar(neg, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    best = max((float(g[i]), float(t[i])), (float(-res.fun), float(res.x)))
    return best
