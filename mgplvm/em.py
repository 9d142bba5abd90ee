"""Expectation–maximisation for ring models with the exact grid posterior (:mod:`mgplvm.grid`).

On the circle the latent path has an exact posterior given the tuning curves (a hidden Markov
chain on a grid of angles), so the mGPLVM can be fitted by variational EM with an exact E-step
instead of stochastic gradients on a mean-field posterior. One iteration is one pass over the
data:

1. **M-step** (tuning curves): maximise
   ``Q = Σ_{t,k} γ_t(k) Σ_n E_q(f)[log p(y_{n,t} | f_n(θ_k))] − Σ_n KL(q(u_n) ‖ p(u_n))`` over
   q(u), the kernel hyperparameters, the GP means and the likelihood's parameters, by L-BFGS.
   The GP is evaluated only at the ``K`` grid angles: the data enter through sufficient
   statistics (for counts, ``Σ_t γ_t(k) [y_{n,t} = c]`` for each count value ``c``; for the
   Gaussian likelihood, weighted means and spreads), so the step costs the same for 5 minutes
   or 40 minutes of recording. The inducing points stay where they are (evenly spread).
2. **E-step** (latents): the forward–backward recursion under the current tuning curves and the
   Brownian prior gives the exact marginals ``γ_t`` and ``log p(Y)`` of the model restricted to
   the grid, so ``ELBO = log p(Y) − Σ_n KL(q(u_n) ‖ p(u_n))`` is exact (no Monte Carlo).
3. **Step s.d.**: before each E-step the random walk's step s.d. is set to the value that
   maximises the evidence ``log p(Y | σ)`` under the new tuning curves (forward passes over up
   to 10,000 bins, a one-dimensional search), not by EM's update, which moves a state-space
   noise variance only a small fraction of the way per iteration.
4. **Warp step**: the ring's parameterisation is not fixed by the likelihood — a smooth
   reparameterisation ``φ`` of the circle, with tuning curves ``f ∘ φ⁻¹``, explains the spikes
   equally well — and plain EM moves along that ridge very slowly (a warped start stays warped
   for hundreds of iterations). In the first ``warp_iters`` iterations (default 10) the
   marginals are therefore moved to ``φ(θ_k)`` before the next M-step, with ``φ`` chosen so that
   two cues become uniform around the ring (:func:`_cue_warp`): the speed of the posterior-mean
   path (a random walk steps alike everywhere) and the widths of the tuning curves (cells are
   tuned alike everywhere). Either cue alone is biased on real recordings — animals turn faster
   at some headings, cells' widths scatter — by a few degrees, in ways independent of each
   other, so the warp averages them (``benchmarks/ring_parameterisation.py`` measures each
   cue's distortion from the tracked angle). The warp is a change of coordinates, not a step of
   the ELBO: if the ELBO after a warp falls, the previous state is restored and warping stops;
   after the warp iterations EM climbs the ELBO from where they left it.

Convergence: after the warp iterations, the fit stops when the ELBO gained less than ``rtol``
nats per datum (per neuron and bin) and iteration, averaged over the last ``patience``
iterations, or after ``n_iter`` iterations.

Hand-written: neither Pyro nor GPyTorch has an EM fit with an exact discrete latent chain and
GP emissions; the M-step objective is built from the model's GPyTorch SVGP and likelihood.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mgplvm._interrupts import deferred_interrupts, end_of_iteration, interruptible
from mgplvm.fitting import FitResult, _snapshot, load_checkpoint
from mgplvm.grid import GridPosterior, forward_backward, transition_matrices
from mgplvm.latents import BrownianPrior
from mgplvm.model import MGPLVM, _plain_state, atomic_torch_save

__all__ = ["fit_em", "EM_DEFAULTS"]

#: defaults of :func:`fit_em`
EM_DEFAULTS: dict[str, Any] = {"n_iter": 200, "rtol": 3e-6, "patience": 5, "m_steps": 20,
                               "warp": True, "warp_iters": 10}

CHECKPOINT_FORMAT = "mgplvm.em-checkpoint/1"


# ------------------------------------------------------------------------------------- the data
class _GridData:
    """``Y (trials, neurons, time)`` prepared for the grid E- and M-steps.

    Count data: per neuron the distinct values ``values (N, U)`` (padded) and each bin's index
    into them ``index (N, trials·time)``; other data (Gaussian): the values themselves."""

    def __init__(self, Y: torch.Tensor, likelihood) -> None:
        self.B, self.N, self.T = Y.shape
        flat = Y.permute(1, 0, 2).reshape(self.N, -1)  # (N, B·T)
        self.flat = flat
        self.log_factorial: torch.Tensor | None = None
        integer = bool(torch.all(flat == torch.round(flat)))
        self.counts = bool(likelihood.is_count and integer)
        if self.counts:
            uniq = [torch.unique(row, return_inverse=True) for row in flat]
            U = max(len(u) for u, _ in uniq)
            self.values = torch.stack(
                [torch.cat([u, u[:1].expand(U - len(u))]) for u, _ in uniq])  # (N, U)
            self.index = torch.stack([inv for _, inv in uniq])  # (N, B·T)

    def _ell(self, lik, values: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``E_q(f)[log p(values | f)]`` for ``values (N, U, K or 1)``, ``m, v (N, K)`` ->
        ``(N, U, K)`` (the time axis of the likelihood carries ``U·K``)."""
        N, K = m.shape
        U = values.shape[1]
        y = values.expand(N, U, K).reshape(N, U * K)
        mm = m[:, None, :].expand(N, U, K).reshape(N, U * K)
        vv = v[:, None, :].expand(N, U, K).reshape(N, U * K)
        return lik.expected_log_prob_moments(y, mm, vv).reshape(N, U, K)

    @torch.no_grad()
    def emission(self, lik, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``Σ_n E_q(f)[log p(y_{n,t} | f_n(θ_k))]`` -> ``(trials, time, K)``."""
        K = m.shape[1]
        if _poisson_exp(lik):
            # y (log Δ + μ) − Δ e^{μ + v/2} − log y!: one matmul instead of a table look-up
            if self.log_factorial is None:
                self.log_factorial = torch.lgamma(self.flat + 1).sum(0)
            y = self.flat.T.to(m.dtype)  # (B·T, N)
            out = y @ (m + math.log(lik.bin_size))
            out -= (lik.bin_size * torch.exp(m + 0.5 * v)).sum(0)
            out -= self.log_factorial[:, None]
            return out.reshape(self.B, self.T, K)
        out = torch.zeros(self.B * self.T, K, dtype=m.dtype, device=m.device)
        if self.counts:
            table = self._ell(lik, self.values[..., None], m, v).reshape(-1, K)  # (N·U, K)
            offset = (torch.arange(self.N) * self.values.shape[1])[:, None]
            chunk = max(1, 2**22 // (self.N * K))
            for s in range(0, self.B * self.T, chunk):
                idx = self.index[:, s : s + chunk] + offset  # (N, c)
                out[s : s + chunk] = table[idx].sum(0)
        else:
            chunk = max(1, 2**22 // (self.N * K))
            for s in range(0, self.B * self.T, chunk):
                y = self.flat[:, s : s + chunk, None]  # (N, c, 1)
                out[s : s + chunk] = self._ell(lik, y, m, v).sum(0)
        return out.reshape(self.B, self.T, K)

    @torch.no_grad()
    def statistics(self, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted values of the M-step: ``Σ_t γ_t(k) ℓ(y_{n,t}, k) = Σ_u w[n,u,k] ℓ(v[n,u,k], k)``
        for every ℓ the likelihoods use -> ``(values, weights)``, ``(N, U, K)``-broadcastable.
        Counts: the count histogram per neuron and grid angle (exact). Gaussian: two pseudo
        observations per (n, k), the weighted mean ± the weighted s.d., each of weight
        ``W_k / 2`` (exact for a log-likelihood quadratic in ``y``)."""
        g = gamma.reshape(-1, gamma.shape[-1]).to(self.flat.dtype)  # (B·T, K)
        if self.counts:
            H = torch.zeros(self.N, self.values.shape[1], g.shape[1], dtype=g.dtype,
                            device=g.device)
            for n in range(self.N):
                H[n].index_add_(0, self.index[n], g)
            return self.values[..., None], H
        W = g.sum(0).clamp_min(1e-300)  # (K,)
        s1 = self.flat @ g
        s2 = self.flat.pow(2) @ g
        mean = s1 / W
        spread = (s2 / W - mean.pow(2)).clamp_min(0).sqrt()
        values = torch.stack([mean - spread, mean + spread], 1)  # (N, 2, K)
        return values, (0.5 * W).expand(self.N, 2, -1)

    def expected_log_lik(self, lik, m, v, stats) -> torch.Tensor:
        values, weights = stats
        return (weights * self._ell(lik, values, m, v)).sum()


def _poisson_exp(lik) -> bool:
    from mgplvm.likelihoods import PoissonLikelihood

    return isinstance(lik, PoissonLikelihood) and lik.link == "exp"


# --------------------------------------------------------------------------------- the steps
def _generative_params(model: MGPLVM) -> list[torch.nn.Parameter]:
    """What the M-step moves: GP (q(u), kernel, mean) and likelihood, not the inducing points."""
    return [p for name, p in model.named_parameters()
            if p.requires_grad and not name.startswith(("latents.", "prior."))
            and not name.endswith("inducing_points")]


def _m_step_optimizer(params: list[torch.nn.Parameter], m_steps: int,
                      scale: float) -> torch.optim.LBFGS:
    """L-BFGS (strong Wolfe line search) for a loss in nats per datum (``scale`` = 1 / data):
    at most ``m_steps`` iterations per ``step``, stopped once an iteration gains less than 1e-3
    nats in total (far below an E-step's gains); no gradient-size test, as per-datum gradients
    are small."""
    return torch.optim.LBFGS(params, lr=1.0, max_iter=int(m_steps), history_size=20,
                             line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                             tolerance_change=1e-3 * scale)


def _m_step(model: MGPLVM, data: _GridData, stats, points: torch.Tensor, m_steps: int) -> None:
    params = _generative_params(model)
    if not params:
        return
    scale = 1.0 / (data.N * data.B * data.T)
    opt = _m_step_optimizer(params, m_steps, scale)

    def closure():
        opt.zero_grad()
        m, v = model.gp_marginals(points)
        loss = -(data.expected_log_lik(model.likelihood, m, v, stats) - model.kl_u()) * scale
        loss.backward()
        return loss

    opt.step(closure)


def _e_step(model: MGPLVM, data: _GridData, points: torch.Tensor,
            search_sd: bool = False) -> tuple[np.ndarray, float]:
    """Forward–backward under the current model -> ``(gamma, elbo)``; with ``search_sd`` the
    Brownian step s.d. is first set to the value that maximises the evidence
    (:func:`_search_step_sd`)."""
    with torch.no_grad():
        m, v = model.gp_marginals(points)
        E = data.emission(model.likelihood, m, v)
        kl = float(model.kl_u())
    gaps = model.bin_gaps()
    if search_sd and _step_sd(model) is not None:
        _search_step_sd(model, E.cpu().numpy(), gaps, points.shape[0])
    trans, step = transition_matrices(points.shape[0], _step_sd(model), gaps, data.T)
    gamma, log_ev, _ = forward_backward(E.cpu().numpy(), trans.numpy(),
                                        None if step is None else step.numpy(), pairs=False)
    return gamma, float(log_ev.sum()) - kl


def _step_sd(model: MGPLVM) -> float | None:
    """The Brownian step s.d. (rad/bin), None for independent bins (uniform prior)."""
    if type(model.prior) is BrownianPrior:
        return float(model.prior.step_sd.detach().reshape(-1)[0])
    return None


#: bins whose evidence chooses the step s.d. (the first ones; all of a shorter recording)
SD_SEARCH_BINS = 10_000


def _search_step_sd(model: MGPLVM, E: np.ndarray, gaps: torch.Tensor | None, K: int) -> None:
    """Set the Brownian step s.d. to the maximiser of ``log p(Y | σ)`` under the current tuning
    curves (forward passes over the first :data:`SD_SEARCH_BINS` bins; Brent's method over
    ``σ₀/3 … 3σ₀``, to 1%). EM's own update of σ — the expected squared step under the
    posterior computed with the old σ — moves it by a small fraction of the way per iteration
    when the path is uncertain (slow EM for a state-space noise variance); this one jumps."""
    from scipy.optimize import minimize_scalar

    from mgplvm.grid import log_evidence

    n = min(E.shape[1], SD_SEARCH_BINS)
    part = E[:, :n]
    sub_gaps = None if gaps is None else gaps[: n - 1]
    sd0 = _step_sd(model)

    def negative(log_sd: float) -> float:
        trans, step = transition_matrices(K, math.exp(log_sd), sub_gaps, n)
        return -float(log_evidence(part, trans.numpy(),
                                   None if step is None else step.numpy()).sum())

    res = minimize_scalar(negative, bounds=(math.log(sd0 / 3), math.log(sd0 * 3)),
                          method="bounded", options={"xatol": 0.01, "maxiter": 20})
    with torch.no_grad():
        model.prior.raw_step_sd.fill_(math.log(math.expm1(math.exp(float(res.x)))))


def _harmonic_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, grid: np.ndarray,
                  harmonics: int) -> np.ndarray:
    """Weighted least-squares fit of ``y`` at angles ``x`` by a constant and ``harmonics``
    Fourier terms; returns the fitted function less its constant, at ``grid``."""
    def design(a):
        return np.column_stack([np.ones_like(a)] + [f(h * a) for h in range(1, harmonics + 1)
                                                    for f in (np.cos, np.sin)])

    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design(x) * sw[:, None], y * sw, rcond=None)
    return design(grid) @ coef - coef[0]


def _cue_warp(model: MGPLVM, gamma: np.ndarray, points: torch.Tensor,
              harmonics: int = 3) -> np.ndarray:
    """``log φ'`` at the grid angles of the warp that makes the ring's parameterisation agree
    with two cues at once, each a smooth function (``harmonics`` Fourier terms) of the angle:

    * the walk's speed: the r.m.s. step of the posterior-mean path, by the angle it leaves
      (steps over a gap of ``k`` bins divided by ``√k``), weighted by the time spent there;
    * the tuning curves' widths: each neuron's half-width at half-maximum, by its preferred
      angle, weighted by the square root of its modulation (peak − trough, Hz).

    Each cue alone is biased on real recordings (animals turn faster at some headings; cells'
    widths differ), in ways that are independent of each other, so the warp is the average of
    the two: ``log φ' = −½ (log speed + log width)`` (less their means)."""
    grid = points[:, 0].cpu().numpy()
    K = grid.size
    with torch.no_grad():
        m, v = model.gp_marginals(points)
        rate, _ = model.likelihood.mean_moments(m, v)
    rate = rate.cpu().numpy()
    pref = grid[rate.argmax(1)]
    trough, peak = rate.min(1), rate.max(1)
    above = rate > (trough + (peak - trough) / 2)[:, None]
    width = np.maximum(above.sum(1), 1) * np.pi / K  # half-width: half the arc above half max
    log_width = _harmonic_fit(pref, np.log(width), np.sqrt(np.maximum(peak - trough, 0)) + 1e-9,
                              grid, harmonics)
    theta = np.arctan2(gamma @ np.sin(grid), gamma @ np.cos(grid))  # (trials, time)
    step = np.angle(np.exp(1j * np.diff(theta, axis=-1)))
    gaps = model.bin_gaps()
    if gaps is not None:
        step = step / np.sqrt(gaps.cpu().numpy())
    idx = np.round((theta[:, :-1] + np.pi) * K / (2 * np.pi)).astype(np.int64) % K
    occ = np.bincount(idx.ravel(), minlength=K).astype(float)
    ms = np.bincount(idx.ravel(), (step**2).ravel(), K) / np.maximum(occ, 1)
    ok = (occ > 0) & (ms > 0)
    log_speed = _harmonic_fit(grid[ok], 0.5 * np.log(ms[ok]), occ[ok], grid, harmonics)
    return -0.5 * (log_speed + log_width)


def _warp_from_log_slope(log_dphi: np.ndarray) -> np.ndarray:
    """The circle map with ``log φ'`` given at the ``K`` grid angles (``φ(−π) = −π``, total
    length 2π) -> ``φ`` at the grid angles."""
    K = log_dphi.size
    d = np.exp(log_dphi - log_dphi.max())
    d = d / d.mean()
    phi = np.concatenate([[0.0], np.cumsum(0.5 * (d[1:] + d[:-1]))]) * (2 * np.pi / K)
    return -np.pi + phi


def _push(gamma: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Move each grid cell's mass to ``φ(θ_k)`` (shared linearly between the two nearest grid
    angles): ``gamma (..., K)`` -> the same shape."""
    K = gamma.shape[-1]
    pos = (phi + math.pi) * K / (2 * math.pi)
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    flat = gamma.reshape(-1, K)
    out = np.zeros_like(flat)
    for k in range(K):  # K columns, each a vectorised add over bins
        out[:, lo[k] % K] += flat[:, k] * (1 - frac[k])
        out[:, (lo[k] + 1) % K] += flat[:, k] * frac[k]
    return out.reshape(gamma.shape)


# ----------------------------------------------------------------------------------- the fit
@interruptible
def fit_em(
    model: MGPLVM,
    Y: Any,
    *,
    n_iter: int | None = None,
    rtol: float | None = None,
    patience: int | None = None,
    m_steps: int | None = None,
    warp: bool | None = None,
    warp_iters: int | None = None,
    train: str = "all",
    learn_prior: bool | None = None,
    progress: bool = True,
    callback: Callable[[int, float, MGPLVM], Any] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
    resume: str | Path | None = None,
) -> FitResult:
    """Fit a ring model with a :class:`~mgplvm.grid.GridPosterior` by EM (module docstring).

    Args:
        model: an :class:`~mgplvm.MGPLVM` on T1 whose ``latents`` is a grid posterior (the
            default there); initialised from ``Y`` first if it was not.
        Y: ``(trials, neurons, time)``.
        n_iter: most iterations (each one pass over the data; default 200).
        rtol, patience: stop when the ELBO gained less than ``rtol`` nats per datum and
            iteration over the last ``patience`` iterations (defaults ``3e-6``, 5), checked once
            the warp iterations are over.
        m_steps: L-BFGS iterations per M-step (default 20).
        warp, warp_iters: the reparameterisation step and the iterations it runs in (the
            first ``warp_iters``, default 10).
        train: ``"all"``, or ``"latents"``: tuning curves frozen, one exact E-step (with the
            step s.d. set by the new data's evidence with ``learn_prior``) — decoding new data.
        learn_prior: learn the Brownian step s.d. (default: with ``train="all"`` when the prior
            learns it; with ``"latents"`` off).
        progress: a progress bar with the ELBO and the step s.d.
        callback: ``callback(iteration, loss, model)`` after each iteration; True stops.
        checkpoint, checkpoint_every, resume: save the state every ``checkpoint_every``
            iterations and at the end (written to a temporary file, then renamed); continue from
            such a file (identical to an uninterrupted fit).

    Returns:
        :class:`~mgplvm.fitting.FitResult` with ``losses`` = −ELBO per iteration (exact, a total
        over the data) and ``reason`` ``"converged"``, ``"max_iter"``, ``"callback"`` or
        ``"nan"``; the model is left in the state of the largest ELBO.
    """
    if not isinstance(model.latents, GridPosterior):
        raise TypeError("fit_em needs a model with the grid posterior (MGPLVM('T1', ..., "
                        "latent_posterior='grid'))")
    if train not in ("all", "latents"):
        raise ValueError(f"train must be 'all' or 'latents', got {train!r}")
    cfg = {**EM_DEFAULTS, **{k: v for k, v in {
        "n_iter": n_iter, "rtol": rtol, "patience": patience, "m_steps": m_steps, "warp": warp,
        "warp_iters": warp_iters}.items() if v is not None}}
    if int(cfg["n_iter"]) < 1 or int(cfg["patience"]) < 1 or int(cfg["m_steps"]) < 1:
        raise ValueError("n_iter, patience and m_steps must be at least 1")
    if not (math.isfinite(float(cfg["rtol"])) and float(cfg["rtol"]) >= 0):
        raise ValueError(f"rtol must be a non-negative number, got {cfg['rtol']}")
    Y = model.validate_data(Y)
    brownian = type(model.prior) is BrownianPrior
    if learn_prior is None:
        learn_prior = train == "all" and brownian and bool(model.prior.raw_step_sd.requires_grad)
    learn_prior = bool(learn_prior) and brownian
    config = {"method": "em", "train": train, "learn_prior": learn_prior, **cfg}

    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume, model, CHECKPOINT_FORMAT, "EM")
    else:
        with model._validated():
            if train == "all" and not bool(model.initialized):
                model.init_from_data(Y)
            elif train == "latents" and not bool(model.latents_initialized):
                model.latents_initialized.fill_(True)
    data = _GridData(Y, model.likelihood)
    n_data = data.N * data.B * data.T
    points = model.latents.points.to(model.dtype)
    t0 = time.perf_counter()

    if train == "latents":  # the tuning curves frozen: the exact posterior (σ by its evidence)
        gamma, elbo = _e_step(model, data, points, search_sd=learn_prior)
        model.latents.set_probs(gamma)
        model.latents_initialized.fill_(True)
        return FitResult(np.asarray([-elbo]), time.perf_counter() - t0, 1, True, "converged",
                         config)

    # the loop's state beyond the model: the marginals the next M-step uses (moved by the last
    # warp) and the best state so far
    losses: list[float] = [] if ckpt is None else ckpt["losses"].tolist()
    start = 0 if ckpt is None else int(ckpt["iteration"])
    elapsed0 = 0.0 if ckpt is None else float(ckpt["elapsed"])
    if ckpt is None:
        state: dict[str, Any] = {"gamma": model.latents.probs.detach().cpu().numpy(),
                                 "best_elbo": -math.inf, "best": None,
                                 "use_warp": bool(cfg["warp"]) and brownian}
    else:
        state = {"gamma": ckpt["state"]["gamma"].numpy(),
                 "best_elbo": float(ckpt["state"]["best_elbo"]),
                 "best": ckpt["state"]["best"] or None,
                 "use_warp": bool(ckpt["state"]["use_warp"])}
    reason, converged = "max_iter", False

    def save(it: int) -> None:
        atomic_torch_save({
            "format": CHECKPOINT_FORMAT, "model_config": model.config(),
            "model_state": _plain_state(model), "iteration": it,
            "losses": torch.tensor(losses, dtype=torch.float64),
            "elapsed": elapsed0 + time.perf_counter() - t0, "config": config,
            "state": {**state, "gamma": torch.from_numpy(state["gamma"]),
                      "best": state["best"] or {}}}, checkpoint)

    bar = tqdm(range(start, int(cfg["n_iter"])), disable=not progress, desc="mGPLVM (EM)",
               leave=False, initial=start, total=int(cfg["n_iter"]))
    it = start - 1
    with deferred_interrupts(checkpoint is not None) as interrupts:
        for it in bar:
            before = _snapshot(model)
            stats = data.statistics(torch.from_numpy(state["gamma"]).to(model.dtype))
            _m_step(model, data, stats, points, int(cfg["m_steps"]))
            gamma, elbo = _e_step(model, data, points, search_sd=learn_prior)
            if not math.isfinite(elbo):
                model.load_state_dict(before)
                warnings.warn(f"non-finite ELBO at EM iteration {it}: stopping with the previous "
                              "state restored", RuntimeWarning, stacklevel=2)
                reason = "nan"
                break
            if elbo < state["best_elbo"] - 1e-9 * abs(state["best_elbo"]) and state["use_warp"]:
                # the last warp did not pay off: back to the best state, and no more warps
                model.load_state_dict(state["best"])
                state.update(gamma=model.latents.probs.detach().cpu().numpy(), use_warp=False)
                continue
            model.latents.set_probs(gamma)
            losses.append(-elbo)
            if elbo >= state["best_elbo"]:
                state.update(best_elbo=elbo, best=_snapshot(model))
            if state["use_warp"] and it >= int(cfg["warp_iters"]):
                state["use_warp"] = False
            if state["use_warp"]:
                gamma = _push(gamma, _warp_from_log_slope(_cue_warp(model, gamma, points)))
            state["gamma"] = gamma
            if progress:
                sd = _step_sd(model)
                bar.set_postfix(elbo=f"{elbo:.6g}",
                                step=f"{math.degrees(sd):.2f}°" if sd is not None else "-")
            stop = bool(callback(it, -elbo, model)) if callback is not None else False
            n = int(cfg["patience"])
            if (not state["use_warp"] and len(losses) > n
                    and losses[-1 - n] - losses[-1] <= float(cfg["rtol"]) * n * n_data):
                reason, converged, stop = "converged", True, True
            end_of_iteration(it + 1, checkpoint, int(checkpoint_every), save, interrupts, bar)
            if stop:
                reason = reason if converged else "callback"
                break
    bar.close()
    if checkpoint is not None:
        save(it + 1)
    if state["best"] is not None and losses and -losses[-1] < state["best_elbo"]:
        model.load_state_dict(state["best"])
    model.latents_initialized.fill_(True)
    return FitResult(np.asarray(losses, dtype=np.float64),
                     elapsed0 + time.perf_counter() - t0, len(losses), converged, reason, config)
