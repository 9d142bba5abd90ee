"""Particle smoothing of a latent path under fixed tuning curves.

With the generative model frozen (tuning curves from a fit), the latents form a hidden Markov
chain on the manifold: ``g_t = g_{t-1} · Exp(σ ∘ ε_t)``, ``ε_t ~ N(0, I)`` (the Brownian prior of
:class:`mgplvm.latents.BrownianPrior`), observed through ``log p(y_t | g_t)``.
:func:`particle_smoother` runs a bootstrap particle filter forward (systematic resampling every
bin) and the marginal forward-filtering backward-smoothing recursion (Doucet & Johansen's
tutorial, "FFBSm") backward, and returns

* the Karcher mean of every smoothing marginal ``p(g_t | y_{1:T})``: a latent path that uses the
  whole recording, not a window of it;
* an estimate of the log evidence ``log p(y_{1:T} | σ)``, unbiased in ``p`` (not in ``log p``):
  comparing it over a grid of ``σ`` (with one seed, so that the draws are shared) chooses the
  step s.d. by marginal likelihood — which the ELBO of the mean-field posterior does not do well
  (it prefers rough paths, docs/maths.md).

Written here by hand: Pyro's ``SMCFilter`` filters only (no backward pass) and steps a traced
Python model per bin; here a bin is a few batched tensor operations over trials × particles.
The backward pass costs ``O(particles²)`` per bin and uses the principal-branch transition
density (the wrapping of the step is ignored, accurate while ``σ`` is far below the
injectivity radius, π/2 on SO(3), π on a torus).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mgplvm.manifolds import LatentManifold

__all__ = ["SmoothedPath", "particle_smoother", "karcher_mean"]


@dataclass
class SmoothedPath:
    """Output of :func:`particle_smoother`.

    ``mean (trials, time, ambient)``: Karcher mean of each smoothing marginal;
    ``filter_mean (trials, time, ambient)``: the same for the filtering marginals
    ``p(g_t | y_{1:t})``; ``log_evidence (trials,)``: the estimate of ``log p(y_{1:T} | σ)``;
    ``ess (trials, time)``: effective sample size of the filter weights (a small value means the
    filter is losing track: use more particles or a larger ``σ``);
    ``particles (trials, time, P, ambient)`` and ``log_weights (trials, time, P)``: every bin's
    particles with their normalised log smoothing weights, a weighted sample of the marginal
    ``p(g_t | y_{1:T})`` (multimodal where the data leave a bin ambiguous).
    """

    mean: torch.Tensor
    filter_mean: torch.Tensor
    log_evidence: torch.Tensor
    ess: torch.Tensor
    particles: torch.Tensor | None = None
    log_weights: torch.Tensor | None = None


def karcher_mean(
    manifold: LatentManifold, points: torch.Tensor, log_w: torch.Tensor, n_iter: int = 5
) -> torch.Tensor:
    """Weighted Karcher (Fréchet) mean: ``points (..., P, ambient)``, normalised log weights
    ``log_w (..., P)`` -> ``(..., ambient)``. Gradient steps ``μ ← μ · Exp(Σ_i w_i Log(μ⁻¹ g_i))``
    from the heaviest point."""
    w = log_w.exp()
    idx = log_w.argmax(-1, keepdim=True)
    mu = torch.gather(points, -2, idx[..., None].expand(*idx.shape, points.shape[-1]))[..., 0, :]
    for _ in range(n_iter):
        v = manifold.logmap_coords(mu.unsqueeze(-2).expand_as(points), points)  # (..., P, dim)
        mu = manifold.expmap_coords(mu, (w.unsqueeze(-1) * v).sum(-2))
    return mu


def _systematic(log_w: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """Systematic resampling: ``n`` indices per row of normalised ``log_w (B, P)``."""
    B = log_w.shape[0]
    u = torch.rand(B, 1, dtype=log_w.dtype, device=log_w.device, generator=generator)
    u = (u + torch.arange(n, dtype=log_w.dtype, device=log_w.device)) / n
    cdf = log_w.exp().cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    return torch.searchsorted(cdf, u).clamp_max(log_w.shape[-1] - 1)


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x (B, P, a)``, ``idx (B, n)`` -> ``(B, n, a)``."""
    return torch.gather(x, 1, idx[..., None].expand(*idx.shape, x.shape[-1]))


@torch.no_grad()
def particle_smoother(
    manifold: LatentManifold,
    log_lik: Callable[[torch.Tensor, int], torch.Tensor],
    initial: torch.Tensor,
    n_time: int,
    step_sd: float | torch.Tensor,
    *,
    n_particles: int = 2000,
    generator: torch.Generator | None = None,
    chunk: int = 512,
    gaps: torch.Tensor | None = None,
) -> SmoothedPath:
    """Bootstrap particle filter + marginal backward smoother for a Brownian latent path.

    ``log_lik(g, t)``: points ``g (trials, P, ambient)`` -> ``log p(y_t | g)`` ``(trials, P)``;
    ``initial (trials, P0, ambient)``: draws from the prior of the first bin (uniform on a compact
    manifold; ``P0`` may exceed ``n_particles``: the first bin is then weighted on ``P0`` draws and
    resampled to ``n_particles``, which helps a broad start find the likelihood's peak);
    ``step_sd``: the step s.d. per tangent coordinate and bin (a number or ``(dim,)``);
    ``gaps (n_time - 1,)``: the time from each bin to the next, in bins (default all 1; a step
    over a gap of ``k`` bins has s.d. ``step_sd · √k``, the Brownian walk's); ``generator``
    seeds the propagation noise and the resampling. The backward pass holds one bin's
    ``(trials, P, P)`` log transition matrix at a time; ``chunk`` bounds the rows of it whose
    pairwise log maps (``(trials, chunk, P, dim)``, anisotropic steps only) are formed at once.
    Every bin's particles are kept for that pass: ``time × trials × n_particles × ambient``
    numbers.
    """
    if initial.ndim != 3 or initial.shape[-1] != manifold.ambient_dim:
        raise ValueError(
            f"initial particles have shape {tuple(initial.shape)}; expected (trials, P0, "
            f"{manifold.ambient_dim})"
        )
    if n_time < 1 or n_particles < 2:
        raise ValueError(f"need n_time >= 1 and n_particles >= 2 (got {n_time}, {n_particles})")
    dtype, device = initial.dtype, initial.device
    sd = torch.as_tensor(step_sd, dtype=dtype, device=device).reshape(-1)
    if sd.numel() == 1:
        sd = sd.expand(manifold.dim)
    if sd.shape != (manifold.dim,) or not bool(torch.all(torch.isfinite(sd) & (sd > 0))):
        raise ValueError(f"step_sd must be positive and finite, one or {manifold.dim} values")
    if gaps is None:
        gaps = torch.ones(max(n_time - 1, 0), dtype=dtype, device=device)
    else:
        gaps = torch.as_tensor(gaps, dtype=dtype, device=device).reshape(-1)
        if gaps.shape != (max(n_time - 1, 0),) or not bool(
            torch.all(torch.isfinite(gaps) & (gaps > 0))
        ):
            raise ValueError(f"gaps must be {max(n_time - 1, 0)} positive, finite values")
    step_scale = gaps.sqrt()  # a step over k bins has s.d. σ√k
    B, N, d = initial.shape[0], int(n_particles), manifold.dim
    X = torch.empty(n_time, B, N, initial.shape[-1], dtype=dtype, device=device)
    logW = torch.empty(n_time, B, N, dtype=dtype, device=device)
    log_ev = torch.zeros(B, dtype=dtype, device=device)
    ess = torch.empty(B, n_time, dtype=dtype, device=device)
    x = initial
    for t in range(n_time):
        if t:
            eps = torch.randn(B, N, d, dtype=dtype, device=device, generator=generator)
            x = manifold.expmap_coords(x, (step_scale[t - 1] * sd) * eps)
        lw = log_lik(x, t)
        if lw.shape != x.shape[:2]:
            raise ValueError(f"log_lik returned shape {tuple(lw.shape)}; expected "
                             f"{tuple(x.shape[:2])}")
        lw = torch.where(torch.isnan(lw), -math.inf, lw)
        lse = torch.logsumexp(lw, -1)
        if not bool(torch.all(torch.isfinite(lse))):
            raise ValueError(f"every particle has zero likelihood at bin {t}")
        log_ev += lse - math.log(x.shape[1])
        lw = lw - lse[:, None]
        ess[:, t] = 1.0 / lw.mul(2).exp().sum(-1)
        idx = _systematic(lw, N, generator)
        if x.shape[1] != N:  # the oversized first bin: keep its resampled, equal-weight set
            x = _gather(x, idx)
            X[t], logW[t] = x, -math.log(N)
            continue
        X[t], logW[t] = x, lw
        x = _gather(x, idx)
    # marginal backward smoothing: w_{t|T}(i) ∝ w_t(i) Σ_j w_{t+1|T}(j) f(x_{t+1}^j | x_t^i)
    #                                                   / Σ_k w_t(k) f(x_{t+1}^j | x_t^k)
    logS = torch.empty_like(logW)
    logS[-1] = logW[-1]
    inv_var = sd.pow(-2)
    isotropic = bool(torch.all(sd == sd[0]))
    for t in range(n_time - 2, -1, -1):
        rows = []
        for i0 in range(0, N, chunk):
            prev = X[t][:, i0 : i0 + chunk]
            if isotropic:  # a matmul on SO(3) and spheres
                sq = manifold.pairwise_sqdist_coords(prev, X[t + 1]) * (inv_var[0] / gaps[t])
            else:
                n = prev.shape[1]
                v = manifold.logmap_coords(  # (B, chunk, N, dim)
                    prev[:, :, None].expand(-1, -1, N, -1),
                    X[t + 1][:, None].expand(-1, n, -1, -1),
                )
                sq = (v.pow(2) * inv_var).sum(-1) / gaps[t]
            rows.append(-0.5 * sq)  # (B, chunk, N)
        log_f = torch.cat(rows, 1)  # (B, N_t, N_{t+1})
        a = logW[t][:, :, None] + log_f
        denom = torch.logsumexp(a, 1, keepdim=True)  # (B, 1, N_{t+1})
        denom = torch.where(torch.isfinite(denom), denom, math.inf)  # unreachable: no weight
        s = torch.logsumexp(a - denom + logS[t + 1][:, None, :], -1)
        logS[t] = s - torch.logsumexp(s, -1, keepdim=True)
    Xb, Sb, Wb = X.transpose(0, 1), logS.transpose(0, 1), logW.transpose(0, 1)
    return SmoothedPath(
        mean=karcher_mean(manifold, Xb, Sb),
        filter_mean=karcher_mean(manifold, Xb, Wb),
        log_evidence=log_ev,
        ess=ess,
        particles=Xb,
        log_weights=Sb,
    )
