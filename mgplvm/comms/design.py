"""Gradient-based design of a network for communication, under a stability constraint.

An example of what differentiable Lyapunov solvers enable: the rate R_T(Σ; A) is differentiated
through the Gramians (mgplvm.control) with respect to the network weights, and the smoothed
spectral abscissa through its implicit-function gradient QP / tr(QP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import _checks as chk
from .nonnormality import henrici, smoothed_spectral_abscissa, spectral_abscissa
from .rate import _few_threads, _gramians, _rate_from, _sigma_of, _t

__all__ = ["DesignResult", "design_network"]


@dataclass
class DesignResult:
    """Designed dynamics A (n, n), input covariance Σ (m, m), interval T and the final rate."""

    A: Tensor
    Sigma: Tensor
    T: float
    rate: float
    history: dict[str, list[float]] = field(default_factory=dict)


def design_network(
    A0: Tensor, B: Tensor, C: Tensor, noise_var: float, T: float, mask: Tensor | None = None,
    max_abscissa: float = -1.0, eps: float = 0.01, constraint: str = "smoothed",
    method: str = "project", penalty: float = 100.0, max_norm: float | None = None,
    steps: int = 300, lr: float = 0.02,
    optimise_T: bool = False, Sigma0: Tensor | None = None, verbose: bool = False,
) -> DesignResult:
    """Maximise R_T(Σ; A) jointly over the weights A = A0 + mask∘Δ, Σ = LLᵀ/tr(LLᵀ) (and log T
    if ``optimise_T``) with Adam, subject to a stability constraint enforced by the penalty
    ``penalty``·max(0, c(A) − max_abscissa)², where c is

    * ``constraint="smoothed"`` (default): the ε-smoothed spectral abscissa α̃_ε(A).  Since
      α̃_ε(A) ≤ a ⇔ ∫₀^∞ ‖e^{(A−aI)t}‖²_F dt ≤ 1/ε, it bounds the decay rate *and* the transient
      amplification, so the problem stays bounded even though rates grow with non-normality;
    * ``constraint="spectral"``: the spectral abscissa α(A) (eigenvalues only; combine with
      ``max_norm``, a penalty on ‖A‖_F > max_norm, to keep the problem bounded).

    ``method="project"`` (default): after each Adam step, if c(A) > max_abscissa the weights are
    moved back along −∇c (Gauss–Newton projection onto the constraint surface, so the search slides
    along it), falling back to shortening the step by bisection; A0 must be feasible and every
    iterate is.  ``method="penalty"``: add ``penalty``·max(0, c(A) − max_abscissa)² to
    the loss instead (iterates may be infeasible; the penalty gradients can dominate Adam's scale).
    Shapes: A0 (n, n) Hurwitz, B (n, m), C (p, n), mask (n, n) of 0/1 (default: all weights free).
    """
    if constraint not in ("smoothed", "spectral"):
        raise ValueError("constraint must be 'smoothed' or 'spectral'")
    if method not in ("project", "penalty"):
        raise ValueError("method must be 'project' or 'penalty'")
    A0, B, C = _t(A0).detach(), _t(B).detach(), _t(C).detach()
    dt = A0.dtype
    B, C = B.to(dt), C.to(dt)
    chk.system(A0, B, C, None if Sigma0 is None else _t(Sigma0, dt), batched=False)
    chk.hurwitz(A0)
    noise_var = chk.number("noise_var", noise_var, "readout noise variance σ²", positive=True)
    T = chk.number("T", T, "packet interval", positive=True)
    chk.number("max_abscissa", max_abscissa, "stability bound")
    chk.number("eps", eps, "smoothing of the spectral abscissa", positive=True)
    chk.number("lr", lr, "learning rate", positive=True)
    chk.integer("steps", steps, 0)
    m = B.shape[-1]
    M = torch.ones_like(A0) if mask is None else _t(mask, dt)
    try:
        ok = torch.broadcast_shapes(M.shape, A0.shape) == A0.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"mask has shape {tuple(M.shape)} but A0 is {tuple(A0.shape)}: need "
                         f"{tuple(A0.shape)} (or a shape that broadcasts to it)")
    chk.finite("mask", M)
    s2 = torch.tensor(noise_var, dtype=dt)
    delta = torch.zeros_like(A0, requires_grad=True)
    if Sigma0 is None:
        L0 = torch.eye(m, dtype=dt)
    else:
        ev, V = torch.linalg.eigh(_t(Sigma0, dt))
        L0 = V * ev.clamp_min(1e-6).sqrt()
    L = L0.clone().requires_grad_(True)
    logT = torch.tensor(math.log(T), dtype=dt, requires_grad=optimise_T)
    params = [delta, L] + ([logT] if optimise_T else [])
    opt = torch.optim.Adam(params, lr=lr)
    hist: dict[str, list[float]] = {"rate": [], "constraint": [], "henrici": []}

    def cval(A: Tensor) -> Tensor:
        if constraint == "smoothed":
            return smoothed_spectral_abscissa(A, eps)
        return spectral_abscissa(A)

    def feasible(d: Tensor) -> bool:
        A = A0 + M * d
        ok = float(cval(A)) <= max_abscissa
        if max_norm is not None:
            ok = ok and float(torch.linalg.matrix_norm(A)) <= max_norm
        return ok

    if method == "project" and not feasible(torch.zeros_like(A0)):
        raise ValueError("A0 violates the constraint; raise max_abscissa or use method='penalty'")

    def project(prev: Tensor) -> None:
        """Gauss–Newton moves along −∇c back onto {c ≤ max_abscissa} (slides along the boundary),
        then, if still infeasible, shorten the step by bisection."""
        for _ in range(6):
            d = delta.detach().clone().requires_grad_(True)
            c = cval(A0 + M * d)
            if float(c.detach()) <= max_abscissa - 1e-9:
                break
            (g,) = torch.autograd.grad(c, d)
            g = M * g
            with torch.no_grad():
                excess = float(c.detach()) - max_abscissa + 1e-6
                delta.sub_(excess * g / (g * g).sum().clamp_min(1e-30))
        if not feasible(delta.detach()):
            with torch.no_grad():
                step_ = delta - prev
                lo, hi = 0.0, 1.0
                for _ in range(12):
                    mid = 0.5 * (lo + hi)
                    lo, hi = (mid, hi) if feasible(prev + mid * step_) else (lo, mid)
                delta.copy_(prev + lo * step_)

    def step(k: int) -> None:
        opt.zero_grad()
        A = A0 + M * delta
        Tt = logT.exp()
        Ad, Wo = _gramians(A, C, Tt)
        rate = _rate_from(Ad, Wo, B, _sigma_of(L), Tt, s2)
        c = cval(A)
        loss = -rate
        if method == "penalty":
            loss = loss + penalty * torch.relu(c - max_abscissa) ** 2
            if max_norm is not None:
                loss = loss + penalty * torch.relu(torch.linalg.matrix_norm(A) - max_norm) ** 2
        loss.backward()
        prev = delta.detach().clone()
        opt.step()
        if method == "project" and not feasible(delta.detach()):
            project(prev)
        hist["rate"].append(float(rate.detach()))
        hist["constraint"].append(float(c.detach()))
        hist["henrici"].append(float(henrici(A.detach())))
        if verbose and k % 50 == 0:
            r_k, c_k = hist["rate"][-1], hist["constraint"][-1]
            print(f"design step {k:4d}  rate = {r_k:.4f}  c(A) = {c_k:.4f}")

    with _few_threads(A0.shape[-1]):
        for k in range(steps):
            step(k)
    with torch.no_grad():
        A = A0 + M * delta
        Tt = logT.exp()
        Sig = _sigma_of(L)
        Ad, Wo = _gramians(A, C, Tt)
        rate = _rate_from(Ad, Wo, B, Sig, Tt, s2)
    return DesignResult(A.detach(), Sig.detach(), float(Tt), float(rate), hist)
