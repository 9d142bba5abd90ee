"""The exact posterior of a ring latent on a grid: a hidden Markov chain over ``K`` angles.

On the circle T¹ the latent path given the tuning curves is a one-dimensional hidden Markov
chain, so its posterior need not be approximated by a Gaussian per bin: restricted to the ``K``
grid angles ``θ_k = −π + 2πk/K`` (default ``K = 120``, 3°), the forward–backward recursion gives
the exact posterior marginals ``γ_t(k) = q(g_t = θ_k)`` under a Brownian (random-walk) prior,
together with the log evidence and the expected transition counts. The marginals carry the
uncertainty of a path whose neighbouring bins move together, which a mean-field posterior
cannot express; they are multimodal where the data are.

* :func:`wrapped_normal_cells` — the random walk's transition on the grid: the probability that
  a wrapped-normal step of s.d. ``σ`` lands in each grid cell (differentiable in ``σ``).
* :func:`forward_backward` — the recursion, batched over trials, with one transition matrix per
  distinct gap between bins (a gap of ``k`` bins has step s.d. ``σ√k``).
* :class:`GridPosterior` — the posterior module of :class:`~mgplvm.model.MGPLVM` on T¹ (the
  default there): the marginals ``(trials, time, K)`` with the interface of
  :class:`~mgplvm.latents.ReLiePosterior` (``mu``, ``covariance``, ``distribution``, ``set_mean``).
* :class:`GridMarginals` — the per-bin marginals as a Pyro distribution (uniform within a grid
  cell), for sampling and importance weighting.

Written by hand: Pyro's ``DiscreteHMM`` evaluates the evidence by a parallel scan costing
``O(T K³)`` and does not return smoothed marginals; this recursion is ``O(T K²)``. It runs in NumPy
(a Python loop over bins with one ``(trials, K) @ (K, K)`` product per bin, about 30 µs per bin
for K = 120) and takes no gradients: the EM fit (:mod:`mgplvm.em`) differentiates the expected
log-likelihood under the marginals instead, which by Fisher's identity has the same gradient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from mgplvm.manifolds import LatentManifold, Torus

__all__ = [
    "DEFAULT_GRID_POINTS",
    "grid_points",
    "wrapped_normal_cells",
    "transition_matrices",
    "forward_backward",
    "log_evidence",
    "circular_summary",
    "GridMarginals",
    "GridPosterior",
]

#: grid angles of :class:`GridPosterior` when none are given (3° apart)
DEFAULT_GRID_POINTS = 120


def grid_points(K: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The ``K`` grid angles ``θ_k = −π + 2πk/K``, ``(K,)``."""
    return -math.pi + 2 * math.pi * torch.arange(K, dtype=dtype, device=device) / K


def wrapped_normal_cells(K: int, sd: torch.Tensor) -> torch.Tensor:
    """Probability that a wrapped-normal step of s.d. ``sd`` (radians) falls into each grid cell
    of width ``2π/K`` centred on the offsets ``2πk/K``, ``k = 0 … K−1``: ``(*sd.shape, K)``,
    summing to 1 along the last axis. ``Σ_j Φ((c_k + h/2 + 2πj)/σ) − Φ((c_k − h/2 + 2πj)/σ)``
    with ``c_k`` the offset wrapped to ``[−π, π)`` and ``h = 2π/K``; differentiable in ``sd``."""
    sd = torch.as_tensor(sd)
    h = 2 * math.pi / K
    k = torch.arange(K, dtype=sd.dtype, device=sd.device)
    c = torch.remainder(k * h + math.pi, 2 * math.pi) - math.pi
    wraps = int(math.ceil(3 * float(sd.detach().max()) / (2 * math.pi))) + 1
    j = torch.arange(-wraps, wraps + 1, dtype=sd.dtype, device=sd.device)
    s = sd[..., None, None] * math.sqrt(2)
    upper = (c[:, None] + h / 2 + 2 * math.pi * j) / s
    lower = (c[:, None] - h / 2 + 2 * math.pi * j) / s
    p = 0.5 * (torch.erf(upper) - torch.erf(lower)).sum(-1)
    p = p.clamp_min(0)
    return p / p.sum(-1, keepdim=True)


def _circulant(kernel: torch.Tensor) -> torch.Tensor:
    """``(..., K)`` offset probabilities -> ``(..., K, K)``, ``A[i, j] = kernel[(j − i) % K]``."""
    K = kernel.shape[-1]
    i = torch.arange(K, device=kernel.device)
    return kernel[..., (i[None, :] - i[:, None]) % K]


def transition_matrices(
    K: int, step_sd: torch.Tensor | None, gaps: torch.Tensor | None, n_time: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Transition matrices of the random walk on the grid and which one each step uses.

    ``step_sd`` (scalar) None means independent bins (a uniform prior): one uniform matrix.
    ``gaps (n_time − 1,)`` in bins (None: all 1). Returns ``(trans (G, K, K), step (n_time − 1,)
    long or None)``: the matrices of the ``G`` distinct gaps and the index of each step's one
    (None when every step uses ``trans[0]``)."""
    dtype = torch.float64
    if step_sd is None:
        return torch.full((1, K, K), 1.0 / K, dtype=dtype), None
    sd = torch.as_tensor(step_sd, dtype=dtype).reshape(())
    if gaps is None or n_time < 2:
        return _circulant(wrapped_normal_cells(K, sd))[None], None
    distinct, step = torch.unique(torch.as_tensor(gaps, dtype=dtype), return_inverse=True)
    return _circulant(wrapped_normal_cells(K, sd * distinct.sqrt())), step


def forward_backward(
    log_emission: np.ndarray | torch.Tensor,
    trans: np.ndarray | torch.Tensor,
    step: np.ndarray | torch.Tensor | None = None,
    pairs: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Smoothed marginals of a discrete hidden Markov chain with a uniform initial state.

    Args:
        log_emission: ``(trials, time, K)`` log-likelihood of each bin's data at each state.
        trans: ``(G, K, K)`` transition matrices ``A[i, j] = p(state_{t+1} = j | state_t = i)``.
        step: ``(time − 1,)`` index into ``trans`` per step (None: always ``trans[0]``).
        pairs: also return the expected transition counts.

    Returns:
        ``gamma (trials, time, K)`` (float64, rows sum to 1), ``log_evidence (trials,)`` =
        ``log p(data)`` with the uniform start ``1/K``, and (with ``pairs``) ``counts (G, K, K)``:
        ``Σ_{s,t} q(state_t = i, state_{t+1} = j)`` over the steps that use each matrix.
    """
    E = np.asarray(log_emission, dtype=np.float64)
    A = np.asarray(trans, dtype=np.float64)
    B, T, K = E.shape
    shift = E.max(-1, keepdims=True)
    if not np.all(np.isfinite(shift)):
        raise ValueError("log_emission has a bin where every state is impossible (or NaN)")
    E = np.exp(E - shift)
    step_idx = None if step is None else np.asarray(step, dtype=np.int64)
    mats = [A[0]] * (T - 1) if step_idx is None else [A[g] for g in step_idx]
    alpha = np.empty((B, T, K))
    c = np.empty((B, T))
    a = E[:, 0] / K
    c[:, 0] = a.sum(-1)
    alpha[:, 0] = a / c[:, 0, None]
    for t in range(1, T):
        a = (alpha[:, t - 1] @ mats[t - 1]) * E[:, t]
        c[:, t] = a.sum(-1)
        alpha[:, t] = a / c[:, t, None]
    beta = np.empty((B, T, K))
    beta[:, -1] = 1.0
    eb = np.empty((B, T, K))  # E_t β_t / c_t, reused for the pair counts
    eb[:, -1] = E[:, -1] / c[:, -1, None]
    for t in range(T - 2, -1, -1):
        beta[:, t] = eb[:, t + 1] @ mats[t].T
        eb[:, t] = E[:, t] * beta[:, t] / c[:, t, None]
    gamma = alpha * beta
    gamma /= gamma.sum(-1, keepdims=True)
    log_evidence = np.log(c).sum(-1) + shift[..., 0].sum(-1)
    counts = None
    if pairs:
        G = A.shape[0]
        counts = np.zeros((G, K, K))
        if T > 1:
            groups = [np.arange(T - 1)] if step_idx is None else [
                np.flatnonzero(step_idx == g) for g in range(G)]
            for g, steps in enumerate(groups):
                if steps.size:
                    prev = alpha[:, steps].reshape(-1, K)
                    nxt = eb[:, steps + 1].reshape(-1, K)
                    counts[g] = A[g] * (prev.T @ nxt)
    return gamma, log_evidence, counts


def log_evidence(
    log_emission: np.ndarray, trans: np.ndarray, step: np.ndarray | None = None
) -> np.ndarray:
    """``log p(data)`` of the chain of :func:`forward_backward` by the forward pass alone (half
    the cost) -> ``(trials,)``."""
    E = np.asarray(log_emission, dtype=np.float64)
    A = np.asarray(trans, dtype=np.float64)
    B, T, K = E.shape
    shift = E.max(-1, keepdims=True)
    E = np.exp(E - shift)
    a = E[:, 0] / K
    c = a.sum(-1)
    total = np.log(c)
    a = a / c[:, None]
    for t in range(1, T):
        a = (a @ A[0 if step is None else step[t - 1]]) * E[:, t]
        c = a.sum(-1)
        total += np.log(c)
        a = a / c[:, None]
    return total + shift[..., 0].sum(-1)


def circular_summary(
    probs: torch.Tensor, level: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Circular mean, circular s.d. and (for a ``level``) credible radius of grid marginals.

    ``probs (..., K)`` -> ``mean (...)`` (the angle of ``Σ_k γ_k e^{iθ_k}``), ``sd (...)`` =
    ``√(−2 log R)`` with ``R`` the mean resultant length, and ``radius (...)``: the smallest
    distance ``r`` from the mean such that the arc ``[mean − r, mean + r]`` holds at least
    ``level`` of the probability (each cell's mass spread evenly over its width, so the radius
    is not rounded to the grid)."""
    K = probs.shape[-1]
    theta = grid_points(K, probs.dtype, probs.device)
    z_c, z_s = (probs * theta.cos()).sum(-1), (probs * theta.sin()).sum(-1)
    mean = torch.atan2(z_s, z_c)
    R = torch.sqrt(z_c**2 + z_s**2).clamp(1e-12, 1.0)
    sd = torch.sqrt(-2 * torch.log(R))
    if level is None:
        return mean, sd, None
    # each cell spans [d − h/2, d + h/2] ∩ [0, π] in distance from the mean (d the distance of
    # its centre); the mass within distance r, Σ_k p_k · (the fraction of cell k's span below
    # r), is piecewise linear and increasing in r: find r by bisection
    h = 2 * math.pi / K
    d = (torch.remainder(theta - mean[..., None] + math.pi, 2 * math.pi) - math.pi).abs()
    lower, upper = (d - h / 2).clamp_min(0), (d + h / 2).clamp_max(math.pi)
    width = upper - lower
    lo = torch.zeros_like(mean)
    hi = torch.full_like(mean, math.pi)
    for _ in range(40):  # π / 2⁴⁰: far below any use
        mid = 0.5 * (lo + hi)
        mass = (probs * ((mid[..., None] - lower) / width).clamp(0, 1)).sum(-1)
        below = mass < level
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return mean, sd, hi


class GridMarginals(TorchDistribution):
    """Independent per-bin marginals on the grid: ``g_t`` falls in cell ``k`` with probability
    ``probs[..., t, k]`` and is uniform within it. Batch ``(trials, time)``, event ``(1,)``.

    ``log_prob(g) = log probs[cell(g)] − log(2π/K)`` (a density on the circle);
    ``sample`` draws a cell and a uniform offset. Not reparameterised (it is never optimised by
    gradients: the EM fit updates it exactly)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, probs: torch.Tensor, validate_args: bool | None = None) -> None:
        self.probs = probs
        super().__init__(probs.shape[:-1], torch.Size([1]), validate_args=False)

    @property
    def K(self) -> int:
        return self.probs.shape[-1]

    def expand(self, batch_shape, _instance=None) -> GridMarginals:
        return GridMarginals(self.probs.expand(torch.Size(batch_shape) + (self.K,)))

    @property
    def mean(self) -> torch.Tensor:
        return circular_summary(self.probs)[0][..., None]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        flat = self.probs.reshape(-1, self.K)
        n = int(np.prod(shape)) if len(shape) else 1
        with torch.no_grad():
            idx = torch.multinomial(flat, n, replacement=True).T  # (n, batch)
            h = 2 * math.pi / self.K
            u = torch.rand(idx.shape, dtype=self.probs.dtype, device=self.probs.device) - 0.5
            theta = -math.pi + h * (idx.to(self.probs.dtype) + u)
            theta = torch.remainder(theta + math.pi, 2 * math.pi) - math.pi
        return theta.reshape(shape + self.batch_shape + (1,))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        h = 2 * math.pi / self.K
        idx = torch.floor((value[..., 0] + math.pi) / h + 0.5).long() % self.K
        probs = self.probs.expand(idx.shape + (self.K,))
        return torch.gather(probs, -1, idx[..., None])[..., 0].log() - math.log(h)


class GridPosterior(nn.Module):
    """Posterior over ring latents as grid marginals ``γ_{s,t}(k)``, ``probs (trials, time, K)``.

    Filled exactly by the forward–backward recursion (:meth:`mgplvm.model.MGPLVM.decode`, the EM
    fit of :func:`mgplvm.fit`); :meth:`set_mean` starts it from a path (von Mises bumps of s.d.
    ``init_sd`` around it). Offers the interface of :class:`~mgplvm.latents.ReLiePosterior` that
    the rest of the package reads: ``mu (trials, time, 1)`` (circular means), ``covariance``
    (circular variances, ``(trials, time, 1, 1)``), ``distribution(t_idx)``
    (:class:`GridMarginals`), ``set_mean``, ``set_sd``. It has no parameters (nothing for a
    gradient optimiser to move).
    """

    def __init__(
        self,
        manifold: LatentManifold,
        n_trials: int,
        n_time: int,
        n_points: int = DEFAULT_GRID_POINTS,
        init_sd: float = 0.35,
    ) -> None:
        super().__init__()
        if not (isinstance(manifold, Torus) and manifold.dim == 1):
            raise ValueError(f"the grid posterior is for the ring T1, not {manifold!r}")
        if int(n_points) < 8:
            raise ValueError(f"the grid needs at least 8 points, got {n_points}")
        if not (math.isfinite(init_sd) and init_sd > 0):
            raise ValueError(f"init_sd must be positive, got {init_sd}")
        self.manifold = manifold
        self.n_trials, self.n_time, self.n_points = int(n_trials), int(n_time), int(n_points)
        self.init_sd = float(init_sd)
        self.kmax = 0  # (read by the model's config; no wrapping sum is needed here)
        probs = torch.full((self.n_trials, self.n_time, self.n_points), 1.0 / self.n_points)
        self.register_buffer("probs", probs)

    def config(self) -> dict[str, Any]:
        return {"n_points": self.n_points, "init_sd": self.init_sd}

    @property
    def points(self) -> torch.Tensor:
        """Grid angles ``(K, 1)``."""
        return grid_points(self.n_points, self.probs.dtype, self.probs.device)[:, None]

    @property
    def mu(self) -> torch.Tensor:
        """Circular means ``(trials, time, 1)``."""
        return circular_summary(self.probs)[0][..., None]

    @property
    def covariance(self) -> torch.Tensor:
        """Circular variances ``(trials, time, 1, 1)``."""
        return circular_summary(self.probs)[1].pow(2)[..., None, None]

    def summary(self, level: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean, sd, radius)``, each ``(trials, time)``: see :func:`circular_summary`."""
        return circular_summary(self.probs, level)

    def distribution(self, t_idx: torch.Tensor | None = None) -> GridMarginals:
        probs = self.probs if t_idx is None else self.probs[:, t_idx]
        return GridMarginals(probs)

    @torch.no_grad()
    def set_probs(self, probs: Any) -> None:
        """Overwrite the marginals with ``(trials, time, K)`` probabilities (rows normalised)."""
        p = torch.as_tensor(np.asarray(probs), dtype=self.probs.dtype, device=self.probs.device)
        if p.shape != self.probs.shape:
            raise ValueError(f"probs has shape {tuple(p.shape)}, expected "
                             f"{tuple(self.probs.shape)}")
        self.probs.copy_(p / p.sum(-1, keepdim=True))

    @torch.no_grad()
    def set_mean(self, mu: torch.Tensor, sd: float | None = None) -> None:
        """Von Mises bumps of circular s.d. ≈ ``sd`` (default ``init_sd``) around angles
        ``mu (trials, time, 1)``."""
        mu = torch.as_tensor(mu, dtype=self.probs.dtype, device=self.probs.device)
        mu = mu.expand(self.n_trials, self.n_time, 1)[..., 0]
        kappa = 1.0 / float(self.init_sd if sd is None else sd) ** 2
        theta = grid_points(self.n_points, self.probs.dtype, self.probs.device)
        logp = kappa * torch.cos(theta - mu[..., None])
        self.probs.copy_(torch.softmax(logp, -1))

    def set_sd(self, sd: float) -> None:
        """Keep the means, make every marginal a bump of s.d. ``sd``."""
        self.set_mean(self.mu, sd)
