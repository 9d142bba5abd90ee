"""``fit``: stochastic variational inference for :class:`~mgplvm.model.MGPLVM`.

The loss is Pyro's ``Trace_ELBO(num_particles=n_mc, vectorize_particles=True)
.differentiable_loss(model.model, model.guide, Y, t_idx, β)`` — the negative ELBO (a total over
the data set, not a mean) — minimised in a plain torch loop so that any optimiser can drive it:

* ``optimizer="adam"`` (default): one geoopt :class:`~geoopt.optim.RiemannianAdam` with two
  parameter groups — the :class:`geoopt.ManifoldParameter` s (latent means, inducing points; step
  ``lr_manifold``) and the Euclidean rest (plain Adam, step ``lr``).
* other names are looked up in :data:`OPTIMIZERS` (register your own with
  :func:`register_optimizer`) and then in :func:`mgplvm.optim.make_optimizer`
  (``"ngd"``, ``"fishleg"``, ``"ngd+fishleg"``). An optimiser whose ``needs_sample_nll`` is true
  receives a fresh model-sampled NLL (:func:`mgplvm.optim.pyro_sample_nll`) for the current
  minibatch through ``set_sample_nll_fn`` before each step.

Minibatches of time bins (``batch_size``): ``batch_mode="window"`` draws a contiguous circular
window (start uniform, wrapping around the end; indices sorted) and ``"random"`` a uniform subset
without replacement. Either way every bin is included with probability ``batch_size / n_time`` and
the ``time`` plate rescales by ``n_time / batch_size``, so the ELBO estimate is unbiased for priors
that factorise over bins (uniform). Time-coupled priors (Brownian, AR(1), GP) use the window's own
Markov / GP structure, which is exact for full batches and approximate (slightly biased at window
edges) for minibatches — prefer windows for them.

KL annealing: the latent prior and entropy terms are scaled by ``β_i = 1 − exp(−(i + 1) /
burnin)`` (``poutine.scale``), which avoids an early collapse of the latents on periodic
manifolds. Early stopping: an exponential moving average of the loss must improve by a relative
``rtol`` within ``patience`` iterations (checked only once ``β > 0.99``).
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geoopt
import numpy as np
import pyro
import torch
from linear_operator.utils.errors import NanError, NotPSDError
from tqdm.auto import tqdm

from mgplvm._interrupts import deferred_interrupts, end_of_iteration, interruptible
from mgplvm.model import MGPLVM, _plain_state, atomic_torch_save

__all__ = [
    "fit", "FitResult", "OPTIMIZERS", "lr_factor", "register_optimizer", "make_fit_optimizer",
    "refit_by_smoothing", "SmoothingRefitResult", "smooth_by_evidence",
]

CHECKPOINT_FORMAT = "mgplvm.fit-checkpoint/1"

#: optimiser factories: ``name -> fn(model, params, lr=..., lr_manifold=..., **kwargs)``
OPTIMIZERS: dict[str, Callable[..., Any]] = {}


def register_optimizer(name: str, factory: Callable[..., Any]) -> None:
    """Make ``fit(..., optimizer=name)`` use ``factory(model, params, lr=, lr_manifold=, **kw)``.

    ``params`` are the trainable parameters (already filtered for ``train=``); the factory returns
    an object with ``zero_grad()``, ``step()``, ``state_dict()`` and ``load_state_dict()``.
    """
    OPTIMIZERS[name.lower()] = factory


def _adam(model, params, lr: float = 0.05, lr_manifold: float | None = None, **kwargs):
    man = [p for p in params if isinstance(p, geoopt.ManifoldParameter)]
    euc = [p for p in params if not isinstance(p, geoopt.ManifoldParameter)]
    groups = []
    if man:
        groups.append({"params": man, "lr": lr if lr_manifold is None else lr_manifold})
    if euc:
        groups.append({"params": euc, "lr": lr})
    if not groups:
        raise ValueError("no trainable parameters")
    return geoopt.optim.RiemannianAdam(groups, lr=lr, **kwargs)


register_optimizer("adam", _adam)


def make_fit_optimizer(
    name: str, model: MGPLVM, params: list[torch.Tensor], lr: float, lr_manifold: float | None,
    **kwargs: Any,
):
    """Build the optimiser ``name`` for ``params`` (see the module docstring for the lookup)."""
    key = name.lower()
    if key in OPTIMIZERS:
        return OPTIMIZERS[key](model, params, lr=lr, lr_manifold=lr_manifold, **kwargs)
    try:
        from mgplvm.optim import make_optimizer
    except ImportError as err:  # pragma: no cover - optim is part of the package
        raise ValueError(f"unknown optimizer {name!r}") from err
    # the factory splits q(u) / manifold / Euclidean parameters itself and skips frozen ones
    return make_optimizer(key, model, lr=lr, **kwargs)


@dataclass
class FitResult:
    """Outcome of :func:`fit`: ``losses`` (negative ELBO per iteration, total over the data set),
    ``elapsed`` seconds, iterations run ``n_iter``, ``converged`` and ``reason``
    (``"max_iter"``, ``"converged"``, ``"callback"``, ``"nan"`` / ``"cholesky"`` (a non-finite
    step: the last good parameters are kept), ``"diverged"`` (the loss blew up: the starting
    parameters are restored, and :attr:`diverged` is true; do not use such a fit))."""

    losses: np.ndarray
    elapsed: float
    n_iter: int
    converged: bool
    reason: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        """True when the fit blew up (``reason == "diverged"``)."""
        return self.reason == "diverged"

    @property
    def final_elbo(self) -> float:
        """Mean ELBO over the last (up to) 20 iterations."""
        tail = self.losses[-20:]
        return float(-np.mean(tail)) if len(tail) else float("nan")

    @property
    def seconds_per_iter(self) -> float:
        return self.elapsed / max(1, self.n_iter)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "python": list(_tuplify(random.getstate())),
    }


def _tuplify(x):
    return [_tuplify(v) for v in x] if isinstance(x, list | tuple) else x


def _detuple(x):
    return tuple(_detuple(v) for v in x) if isinstance(x, list) else x


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy(), *n[2:]))
    random.setstate(_detuple(state["python"]))


def _batch_indices(n_time: int, batch_size: int | None, mode: str, device) -> torch.Tensor | None:
    if batch_size is None or batch_size >= n_time:
        return None
    if mode == "window":
        start = int(torch.randint(n_time, ()))
        idx = (start + torch.arange(batch_size)) % n_time
        return idx.sort().values.to(device)
    return torch.randperm(n_time)[:batch_size].sort().values.to(device)


_FIT_KEYS = (
    "n_mc", "lr", "lr_manifold", "lr_final", "batch_size", "batch_mode", "burnin", "optimizer",
    "train", "early_stopping", "patience", "rtol", "ema", "optimizer_kwargs",
)


@interruptible
def fit(
    model: MGPLVM,
    Y: Any,
    *,
    n_iter: int | None = None,
    n_mc: int = 8,
    lr: float = 0.05,
    lr_manifold: float | None = None,
    lr_final: float = 1.0,
    batch_size: int | None = None,
    batch_mode: str = "window",
    burnin: float = 100.0,
    optimizer: str = "adam",
    optimizer_kwargs: dict[str, Any] | None = None,
    train: str = "all",
    early_stopping: bool = True,
    patience: int = 200,
    rtol: float | None = None,
    ema: float = 0.05,
    progress: bool = True,
    seed: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    resume: str | Path | None = None,
    callback: Callable[[int, float, MGPLVM], Any] | None = None,
) -> FitResult:
    """Fit ``model`` to ``Y (trials, neurons, time)`` by maximising the ELBO.

    Models with the exact grid posterior of the ring (the default on T¹) are fitted by EM
    (:func:`mgplvm.em.fit_em`: exact E-steps, one pass over the data per iteration, stopped when
    the ELBO gains less than ``rtol`` (default 3e-6) nats per datum and iteration over 5
    iterations, at most ``n_iter`` (default 200)); of the arguments below they use ``n_iter``,
    ``rtol``, ``train``, ``progress``, ``callback``, ``checkpoint``, ``checkpoint_every`` and
    ``resume``. Every other model is fitted by stochastic variational inference as described here.

    Args:
        model: an :class:`~mgplvm.model.MGPLVM`; initialised from ``Y`` first if it was not
            (:meth:`~mgplvm.model.MGPLVM.init_from_data`; latents only — ``"decode"`` — when
            ``train="latents"``).
        n_iter: maximum number of iterations (total, counting those of a resumed run; default
            1500).
        n_mc: latent samples per iteration (vectorised particles: one batched GP evaluation of
            ``n_mc · trials · batch`` points).
        lr, lr_manifold: Adam step of Euclidean and of manifold parameters (default: ``lr``).
        lr_final: learning-rate decay: every group's step is constant for the first half of
            ``n_iter`` and then decays geometrically to ``lr_final`` times its initial value at
            the last iteration (1: no decay). Adam's steps do not shrink where gradients are
            noise, so at a constant step the latents keep jittering by about the step size;
            the decay lets them settle.
        batch_size, batch_mode: minibatches of time bins (``None``: full batch); ``"window"`` or
            ``"random"``.
        burnin: KL-annealing time constant in iterations (0: no annealing).
        optimizer, optimizer_kwargs: see the module docstring.
        train: ``"all"`` or ``"latents"`` (everything but q(g) frozen; for held-out data).
        early_stopping, patience, rtol, ema: stop when the EMA (weight ``ema``) of the loss has not
            improved by ``rtol`` (relative, default 1e-4) for ``patience`` iterations counted from
            the end of the KL annealing (β > 0.99).
        progress: show a tqdm bar with the ELBO.
        seed: seed torch / numpy / random (``pyro.set_rng_seed``) before fitting.
        checkpoint, checkpoint_every: save model, optimiser, iteration, RNG and config to
            ``checkpoint`` every ``checkpoint_every`` iterations and at the end.
        resume: a checkpoint path: restore everything from it and continue identically.
        callback: ``callback(iteration, loss, model)`` after every step; return True to stop.

    Returns:
        :class:`FitResult`. A NaN/inf loss or gradient (or a failed Cholesky) stops the fit with the
        last good parameters restored and a warning.
    """
    if not isinstance(model, MGPLVM):
        raise TypeError(f"model must be an MGPLVM, got {type(model).__name__}")
    from mgplvm.grid import GridPosterior

    if isinstance(model.latents, GridPosterior):
        from mgplvm.em import fit_em

        if seed is not None:
            pyro.set_rng_seed(seed)
        return fit_em(model, Y, n_iter=n_iter, rtol=rtol, train=train, progress=progress,
                      callback=callback, checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every, resume=resume)
    n_iter = 1500 if n_iter is None else n_iter
    if int(n_iter) != n_iter or int(n_iter) < 1:
        raise ValueError(f"n_iter must be an integer >= 1, got {n_iter}")
    n_iter = int(n_iter)
    rtol = 1e-4 if rtol is None else rtol
    if train not in ("all", "latents"):
        raise ValueError(f"train must be 'all' or 'latents', got {train!r}")
    if batch_mode not in ("window", "random"):
        raise ValueError(f"batch_mode must be 'window' or 'random', got {batch_mode!r}")
    if int(n_mc) < 1:
        raise ValueError(f"n_mc must be >= 1, got {n_mc}")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 < float(lr_final) <= 1:
        raise ValueError(f"lr_final must be in (0, 1], got {lr_final}")
    Y = model.validate_data(Y)
    config = {
        "n_mc": int(n_mc), "lr": float(lr), "lr_manifold": lr_manifold,
        "lr_final": float(lr_final),
        "batch_size": None if batch_size is None else int(batch_size), "batch_mode": batch_mode,
        "burnin": float(burnin), "optimizer": optimizer, "train": train,
        "early_stopping": bool(early_stopping), "patience": int(patience), "rtol": float(rtol),
        "ema": float(ema), "optimizer_kwargs": dict(optimizer_kwargs or {}),
    }

    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume, model, CHECKPOINT_FORMAT, "fit")
        diffs = {k: (ckpt["config"].get(k), config[k]) for k in _FIT_KEYS
                 if ckpt["config"].get(k) != config[k]}
        if diffs:
            warnings.warn(f"resuming with different fit settings: {diffs}", stacklevel=2)
    else:
        if seed is not None:
            pyro.set_rng_seed(seed)
        with model._validated():  # Y was checked (and warned about) above
            if train == "all" and not bool(model.initialized):
                model.init_from_data(Y)
            elif train == "latents" and not bool(model.latents_initialized):
                model.init_latents(Y, "decode")

    frozen = []
    if train == "latents":
        latent_ids = {id(p) for p in model.latents.parameters()}
        for p in model.parameters():
            if id(p) not in latent_ids and p.requires_grad:
                p.requires_grad_(False)
                frozen.append(p)
    try:
        return _run(model, Y, config, n_iter, progress, checkpoint, checkpoint_every, ckpt,
                    callback)
    finally:
        for p in frozen:
            p.requires_grad_(True)


@dataclass
class SmoothingRefitResult:
    """Outcome of :func:`refit_by_smoothing`, one entry per round: ``step_sds`` (the step s.d.
    chosen), ``evidence`` (candidate step s.d. -> smoother log evidence, summed over trials) and
    ``fits`` (the refit's :class:`FitResult`)."""

    step_sds: list[float]
    evidence: list[dict[float, float]]
    fits: list[FitResult]

    @property
    def final_elbo(self) -> float:
        """The last refit's :attr:`FitResult.final_elbo`."""
        return self.fits[-1].final_elbo


def smooth_by_evidence(
    model: MGPLVM,
    Y: Any,
    step_sds: Sequence[float],
    *,
    n_particles: int = 1000,
    seed: int = 0,
    progress: bool = False,
    desc: str = "smoothing",
) -> tuple[Any, float, dict[float, float]]:
    """:meth:`~mgplvm.model.MGPLVM.smooth_latents` at every step s.d. in ``step_sds`` with one
    ``seed`` (the candidates share their draws) -> ``(path, step_sd, evidence)``: the
    :class:`~mgplvm.smoothing.SmoothedPath` of the largest log evidence, its step s.d., and
    every candidate's log evidence (summed over trials).

    Warns when the best of three or more candidates is the smallest or the largest: the evidence
    may peak outside the grid, and the chosen step s.d. is then only the grid's edge.
    """
    bar = tqdm(step_sds, desc=desc, unit="step s.d.", disable=not progress, leave=False)
    runs = {float(s): model.smooth_latents(Y, float(s), n_particles=n_particles, seed=seed)
            for s in bar}
    evidence = {s: float(run.log_evidence.sum()) for s, run in runs.items()}
    best = max(evidence, key=evidence.get)
    if len(evidence) > 2 and best in (min(evidence), max(evidence)):
        side = "largest" if best == max(evidence) else "smallest"
        warnings.warn(
            f"the smoother's evidence is highest at the {side} candidate step s.d. ({best:g}) "
            f"of {sorted(evidence)}: it may peak outside them; extend step_sds "
            f"{'upwards' if side == 'largest' else 'downwards'} (log evidence: "
            + ", ".join(f"{k:g}: {v:.1f}" for k, v in sorted(evidence.items())) + ")",
            stacklevel=2,
        )
    return runs[best], best, evidence


def refit_by_smoothing(
    model: MGPLVM,
    Y: Any,
    step_sds: Sequence[float],
    *,
    rounds: int = 3,
    n_particles: int = 1000,
    posterior_sd: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, MGPLVM], Any] | None = None,
    **fit_kwargs: Any,
) -> SmoothingRefitResult:
    """Refine a fitted model with a Brownian latent prior by rounds of particle smoothing.

    Each round ``r``: smooth the latent path under the current tuning curves at every step s.d.
    in ``step_sds`` (:meth:`~mgplvm.model.MGPLVM.smooth_latents`, ``n_particles`` particles, one
    seed ``seed + 1000 + r`` shared by the candidates so that the draws are shared), keep the
    step s.d. of the largest log evidence ``log p(Y | σ)``, fix the prior's step s.d. there
    (:meth:`~mgplvm.latents.BrownianPrior.fix_step_sd`), restart the latent means on that
    smoothed path with posterior s.d. ``posterior_sd``, and refit everything with :func:`fit`
    (seed ``seed + 2 + r``; ``fit_kwargs`` default to ``n_iter=600, lr_final=0.02,
    burnin=0``). ``callback(r, model)`` runs after each round's refit.

    Why: maximising the mean-field ELBO over the step s.d. prefers rough paths under a loose
    prior, whereas the smoother's evidence chooses the step s.d. by marginal likelihood; on the
    SO(3) recovery problem three rounds take the error from 0.431 to 0.263 rad on seed 0 (but
    not to the issue's 0.3 on seed 1; docs/maths.md, ``benchmarks/recovery.py --problems so3``).
    The rounds refine a fit that has found the right region of the manifold; they do not rescue
    one that has not. The step s.d. stays fixed afterwards (and in a saved model).
    """
    from mgplvm.latents import BrownianPrior

    if type(model.prior) is not BrownianPrior:
        raise ValueError(
            "refit_by_smoothing needs a Brownian latent prior (the smoother's transition), "
            f"not {type(model.prior).__name__}"
        )
    if not bool(model.initialized):
        raise ValueError("refit_by_smoothing refines a fitted model: call fit(model, Y) first")
    steps = [float(s) for s in step_sds]
    if not steps or not all(math.isfinite(s) and s > 0 for s in steps):
        raise ValueError(f"step_sds must be one or more positive finite values, got {step_sds}")
    if int(rounds) < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not (math.isfinite(float(posterior_sd)) and float(posterior_sd) > 0):
        raise ValueError(f"posterior_sd must be positive and finite, got {posterior_sd}")
    Y = model.validate_data(Y)
    kw = {"n_iter": 600, "lr_final": 0.02, "burnin": 0.0, **fit_kwargs}
    result = SmoothingRefitResult([], [], [])
    with model._validated():  # Y was checked (and warned about) above
        for r in range(int(rounds)):
            path, best, evidence = smooth_by_evidence(
                model, Y, steps, n_particles=n_particles, seed=seed + 1000 + r,
                progress=progress, desc=f"smoothing, round {r + 1}/{int(rounds)}")
            model.prior.fix_step_sd(best)
            model.init_latents(Y, path.mean)
            model.latents.set_sd(posterior_sd)
            result.fits.append(fit(model, Y, seed=seed + 2 + r, progress=progress, **kw))
            result.step_sds.append(best)
            result.evidence.append(evidence)
            if callback is not None:
                callback(r, model)
    return result


def _run(model, Y, config, n_iter, progress, checkpoint, checkpoint_every, ckpt, callback):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_fit_optimizer(
        config["optimizer"], model, params, config["lr"], config["lr_manifold"],
        **config["optimizer_kwargs"],
    )
    base_lrs = [g.get("lr") for g in opt.param_groups]  # before a checkpoint overwrites them
    losses: list[float] = []
    start, elapsed0 = 0, 0.0
    es = {"ema": None, "best": math.inf, "best_it": 0}
    if ckpt is not None:
        _load_optimizer_state(opt, ckpt["optimizer_state"])
        start = int(ckpt["iteration"])
        losses = list(ckpt["losses"].tolist())
        elapsed0 = float(ckpt["elapsed"])
        es = dict(ckpt["early_stopping"])
        _set_rng_state(ckpt["rng"])

    elbo = pyro.infer.Trace_ELBO(
        num_particles=config["n_mc"], vectorize_particles=True, max_plate_nesting=2
    )
    needs_nll = bool(getattr(opt, "needs_sample_nll", False))
    burnin = config["burnin"]
    reason, converged = "max_iter", False
    t0 = time.perf_counter()
    last_good = _snapshot(model)
    start_state = last_good

    def save_checkpoint(it: int) -> None:
        if checkpoint is None:
            return
        blob = {
            "format": CHECKPOINT_FORMAT,
            "model_config": model.config(),
            "model_state": _plain_state(model),
            "optimizer_state": opt.state_dict(),
            "iteration": it,
            "losses": torch.tensor(losses, dtype=torch.float64),
            "elapsed": elapsed0 + time.perf_counter() - t0,
            "early_stopping": es,
            "rng": _rng_state(),
            "config": config,
        }
        atomic_torch_save(blob, checkpoint)

    bar = tqdm(range(start, n_iter), disable=not progress, desc="mGPLVM", leave=False,
               initial=start, total=n_iter)
    it = start
    with deferred_interrupts(checkpoint is not None) as interrupts:
        for it in bar:
            t_idx = _batch_indices(model.n_time, config["batch_size"], config["batch_mode"],
                                   model.device)
            beta = 1.0 if burnin <= 0 else 1.0 - math.exp(-(it + 1) / burnin)
            decay = lr_factor(it, n_iter, config["lr_final"])
            for group, base in zip(opt.param_groups, base_lrs, strict=True):
                if base is not None:
                    group["lr"] = base * decay
            opt.zero_grad()
            bad = None
            try:
                # Pyro's argument validation would raise on a NaN factor; NaNs are handled below
                with pyro.validation_enabled(False):
                    loss = elbo.differentiable_loss(model.model, model.guide, Y, t_idx, beta)
                if not torch.isfinite(loss):
                    bad = "nan"
                else:
                    loss.backward()
                    if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
                        bad = "nan"
            except (NotPSDError, NanError) as err:
                bad = "cholesky" if isinstance(err, NotPSDError) else "nan"
                first_line = (str(err).splitlines() or [""])[0]
                warnings.warn(f"{type(err).__name__} at iteration {it}: {first_line}", stacklevel=3)
            if bad is not None:
                reason = bad
                if _diverged(losses):
                    break  # handled below: the start is restored
                _restore(model, last_good)
                warnings.warn(
                    f"{'non-finite loss or gradient' if bad == 'nan' else 'Cholesky failure'} at "
                    f"iteration {it}: stopping with the last good parameters restored",
                    RuntimeWarning, stacklevel=3,
                )
                break
            last_good = _snapshot(model)
            if needs_nll:
                from mgplvm.optim import pyro_sample_nll

                opt.set_sample_nll_fn(pyro_sample_nll(model.model, model.guide, Y, t_idx, beta))
            opt.step()
            value = float(loss.detach())
            losses.append(value)
            if progress and (it % 10 == 0 or it == n_iter - 1):
                bar.set_postfix(elbo=f"{-value:.4g}", beta=f"{beta:.2f}")
            stop = bool(callback(it, value, model)) if callback is not None else False
            if config["early_stopping"]:
                a = config["ema"]
                es["ema"] = value if es["ema"] is None else (1 - a) * es["ema"] + a * value
                if (es["ema"] < es["best"] - config["rtol"] * abs(es["best"])
                        or es["best"] == math.inf or beta <= 0.99):
                    # the patience clock starts when the annealing ends: before, the loss is still
                    # moving with β and a plateau of the EMA means nothing
                    es["best"], es["best_it"] = es["ema"], it
                elif beta > 0.99 and it - es["best_it"] >= config["patience"]:
                    reason, converged = "converged", True
                    stop = True
            end_of_iteration(it + 1, checkpoint, checkpoint_every, save_checkpoint, interrupts,
                             bar)
            if stop:
                if reason == "max_iter":
                    reason = "callback"
                break
    bar.close()
    if _diverged(losses):
        # a fit that blew up (a step size too large, a bad start): its parameters, and the
        # "last good" ones before a non-finite step, are garbage; put the start back, say so
        _restore(model, start_state)
        warnings.warn(
            f"the fit diverged: the negative ELBO went from {losses[0]:.4g} to {losses[-1]:.4g}"
            f"{' and then became non-finite' if reason in ('nan', 'cholesky') else ''} in "
            f"{len(losses)} iterations; the starting parameters are restored and the result "
            "is marked reason='diverged' (try a smaller lr)", RuntimeWarning, stacklevel=3)
        reason, converged = "diverged", False
    n_done = len(losses)
    if checkpoint is not None:
        save_checkpoint(n_done)
    return FitResult(
        losses=np.asarray(losses, dtype=np.float64),
        elapsed=elapsed0 + time.perf_counter() - t0,
        n_iter=n_done,
        converged=converged,
        reason=reason,
        config=config,
    )


def lr_factor(it: int, n_iter: int, final: float) -> float:
    """Learning-rate multiplier at iteration ``it`` of ``n_iter``: 1 for the first half, then
    geometric down to ``final`` at the last iteration."""
    half = n_iter // 2
    if final >= 1 or it <= half or n_iter - 1 <= half:
        return 1.0
    return final ** ((it - half) / (n_iter - 1 - half))


#: a fit has diverged when its negative ELBO ends more than this many times the start's
#: magnitude above the start (a garbage state); ordinary fits, KL annealing included, go down
DIVERGENCE_FACTOR = 10.0


def _diverged(losses: Sequence[float]) -> bool:
    """True when the loss history (finite values) blew up: the last loss exceeds the first by
    more than :data:`DIVERGENCE_FACTOR` times the first's magnitude."""
    if len(losses) < 2:
        return False
    first, last = float(losses[0]), float(losses[-1])
    return not math.isfinite(last) or last - first > DIVERGENCE_FACTOR * max(abs(first), 1.0)


def _load_optimizer_state(opt, state: dict[str, Any]) -> None:
    """``opt.load_state_dict(state)``, then give integer step counters back their type: torch
    turns them into float32 tensors, and geoopt's bias corrections computed from those differ
    in the last bits, so a resumed fit would drift from an uninterrupted one."""
    opt.load_state_dict(state)
    _int_steps(opt, state)


def _int_steps(opt, state: dict[str, Any]) -> None:
    parts = getattr(opt, "parts", None)
    if isinstance(parts, dict):  # mgplvm.optim's composite optimiser: one state per part
        for key, part in parts.items():
            _int_steps(part, state[key])
        return
    if not isinstance(opt, torch.optim.Optimizer):
        return
    saved = state.get("state", {})
    for key, value in zip(saved, opt.state.values(), strict=False):
        step = saved[key].get("step") if isinstance(saved[key], dict) else None
        if isinstance(step, int) and isinstance(value, dict) and "step" in value:
            value["step"] = step


def load_checkpoint(path: str | Path, model: MGPLVM, fmt: str, what: str) -> dict[str, Any]:
    """Read a checkpoint of format ``fmt`` (a ``what`` checkpoint: "fit", "EM"), check that it
    was written for ``model``'s configuration and load its parameters into ``model``."""
    ckpt = torch.load(path, map_location=model.device, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise ValueError(f"{path} is not an mgplvm {what} checkpoint")
    if ckpt["model_config"] != model.config():
        raise ValueError("the checkpoint was written for a different model configuration: "
                         f"{_diff(ckpt['model_config'], model.config())}")
    model.load_state_dict(ckpt["model_state"])
    return ckpt


def _snapshot(model: MGPLVM) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def _restore(model: MGPLVM, state: dict[str, torch.Tensor]) -> None:
    model.load_state_dict(state)


def _diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))
