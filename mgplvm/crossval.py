"""Cross-validated comparison of latent manifolds (the mGPLVM paper's protocol).

For each repetition ("fold") the time bins and the neurons are split into halves. Each candidate
manifold is fitted on all neurons at the training bins. The generative model (kernels, inducing
points, q(u), likelihood) is then frozen; the latents at the test bins are inferred from one neuron
half and the other half is predicted there, and the reverse. Scores, per datum of the predicted
half: an importance-weighted held-out log-likelihood (primary), the mean squared error of the
posterior-predictive mean and the fraction of variance explained.

Every (manifold, fold) pair is an independent task with its own seed, run by any
``concurrent.futures``-style executor (default: a local process pool; a ``dask.distributed``
``Client.get_executor()`` scales the same code to a cluster). Each task pins torch to
``threads_per_task`` threads so the numbers do not depend on which executor ran it. A task that
fails (NaN, Cholesky, ...) is recorded as failed with its error and never silently dropped; with
``results_dir`` each finished task is saved at once and an interrupted run resumes from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mgplvm._atomic import atomic_write_text

__all__ = ["CVResult", "crossvalidate", "make_splits", "METRICS", "TEST_INITS", "TEST_POSTERIORS",
           "sign_flip_pvalue"]

#: metric name -> True when larger is better
METRICS = {"ll_per_datum": True, "pred_ll_per_datum": True, "mse": False, "var_explained": True}
#: starts of the test-bin latents (``crossvalidate``'s ``test_init``)
TEST_INITS = ("decode", "smooth")
#: posteriors of the test-bin latents that the held-out scores average over
#: (``crossvalidate``'s ``test_posterior``)
TEST_POSTERIORS = ("variational", "smoothed")


# ----------------------------------------------------------------------------------------- splits
def make_splits(
    n_neurons: int, n_time: int, n_splits: int, seed: int = 0, block: int = 1
) -> list[dict[str, np.ndarray]]:
    """Random halvings of neurons and time bins, one per fold.

    Time bins are assigned in contiguous blocks of ``block`` bins (``block > 1`` limits leakage
    through temporally smooth priors). Returns dicts with sorted index arrays ``train_t``,
    ``test_t``, ``neurons_a``, ``neurons_b``.
    """
    if n_neurons < 2:
        raise ValueError(f"cross-validation needs at least 2 neurons, got {n_neurons}")
    if n_time < 4:
        raise ValueError(f"cross-validation needs at least 4 time bins, got {n_time}")
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    splits = []
    for k in range(n_splits):
        rng = np.random.default_rng([seed, k])
        n_blocks = math.ceil(n_time / block)
        blocks = rng.permutation(n_blocks)
        test_blocks = np.sort(blocks[: n_blocks // 2])
        is_test = np.zeros(n_time, dtype=bool)
        for b in test_blocks:
            is_test[b * block : (b + 1) * block] = True
        perm = rng.permutation(n_neurons)
        splits.append(
            {
                "train_t": np.flatnonzero(~is_test),
                "test_t": np.flatnonzero(is_test),
                "neurons_a": np.sort(perm[: n_neurons // 2]),
                "neurons_b": np.sort(perm[n_neurons // 2 :]),
            }
        )
    return splits


# ----------------------------------------------------------------------------------------- result
@dataclass
class CVResult:
    """Per-fold scores for every manifold, with summaries, paired tests, export and plotting.

    ``records`` holds one dict per (manifold, fold): ``manifold``, ``fold``, ``status``
    (``"ok"``/``"failed"``), ``error``, the metrics of :data:`METRICS`, ``train_elbo``, ``seconds``,
    and for a fold that ran: ``n_iter``, ``step_sd`` (the latent prior's step s.d. per coordinate
    after the training fit, before any smoothing refit; None without one) and ``refit_step_sds``
    (the step s.d. each smoothing-refit round chose; None without refits).
    """

    records: list[dict[str, Any]]
    manifolds: list[str]
    n_splits: int
    config: dict[str, Any] = field(default_factory=dict)

    # --- access
    def scores(self, metric: str = "ll_per_datum") -> dict[str, np.ndarray]:
        """``manifold -> (n_splits,)`` array of a metric, NaN where the fold failed."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {list(METRICS)}")
        out = {m: np.full(self.n_splits, np.nan) for m in self.manifolds}
        for r in self.records:
            if r["status"] == "ok":  # (results saved before a metric existed: NaN)
                out[r["manifold"]][r["fold"]] = r.get(metric, np.nan)
        return out

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Records of folds that failed, with their errors."""
        return [r for r in self.records if r["status"] != "ok"]

    def summary(self, metric: str = "ll_per_datum") -> dict[str, dict[str, float]]:
        """``manifold -> {mean, sem, n}`` over successful folds."""
        out = {}
        for m, s in self.scores(metric).items():
            ok = s[np.isfinite(s)]
            sem = ok.std(ddof=1) / np.sqrt(len(ok)) if len(ok) > 1 else float("nan")
            out[m] = {"mean": float(ok.mean()) if len(ok) else float("nan"), "sem": float(sem),
                      "n": len(ok)}
        return out

    def winner(self, metric: str = "ll_per_datum") -> str:
        """The manifold with the best mean score."""
        summ = self.summary(metric)
        sign = 1.0 if METRICS[metric] else -1.0
        valid = {m: sign * v["mean"] for m, v in summ.items() if np.isfinite(v["mean"])}
        if not valid:
            raise RuntimeError("every fold failed: no winner; see CVResult.failed")
        return max(valid, key=valid.get)

    def recommend(self, metric: str = "ll_per_datum", n_se: float = 1.0):
        """The manifold to believe, with its grounds: the simplest candidate within ``n_se``
        paired standard errors of the best, or *undecided* when such candidates do not contain
        one another (:func:`mgplvm.recommend.recommend`; a
        :class:`~mgplvm.recommend.Recommendation`)."""
        from mgplvm.recommend import recommend

        return recommend(self, metric, n_se)

    def win_counts(self, metric: str = "ll_per_datum") -> dict[str, int]:
        """How many folds each manifold wins (folds where any manifold failed are skipped)."""
        s = self.scores(metric)
        mat = np.stack([s[m] for m in self.manifolds])  # (n_manifolds, n_splits)
        ok = np.isfinite(mat).all(0)
        best = (mat if METRICS[metric] else -mat)[:, ok].argmax(0)
        return {m: int((best == i).sum()) for i, m in enumerate(self.manifolds)}

    def paired_differences(self, metric: str = "ll_per_datum") -> dict[str, dict[str, float]]:
        """Each manifold minus the winner, fold by fold: mean ± s.e.m. and paired tests.

        Over folds where both succeeded: ``mean``, ``sem``, ``n`` and three two-sided tests of a
        zero mean difference — ``signflip_pvalue`` (the exact sign-flip permutation test,
        :func:`sign_flip_pvalue`: no normality assumed; with ``n`` folds no p-value can be
        below ``2^(1-n)``, so 2 folds can never separate two candidates), ``t_pvalue`` (paired
        t-test) and ``wilcoxon_pvalue``.
        """
        from scipy import stats

        s = self.scores(metric)
        best = self.winner(metric)
        out = {}
        for m in self.manifolds:
            ok = np.isfinite(s[m]) & np.isfinite(s[best])
            d = s[m][ok] - s[best][ok]
            row = {"mean": float(d.mean()) if len(d) else float("nan"), "n": int(len(d))}
            row["sem"] = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            if m != best and len(d) > 1 and np.any(d != 0):
                row["t_pvalue"] = float(stats.ttest_rel(s[m][ok], s[best][ok]).pvalue)
                row["wilcoxon_pvalue"] = float(stats.wilcoxon(d).pvalue)
                row["signflip_pvalue"] = sign_flip_pvalue(d)
            else:
                row["t_pvalue"] = row["wilcoxon_pvalue"] = float("nan")
                row["signflip_pvalue"] = float("nan")
            out[m] = row
        return out

    def within_noise(self, metric: str = "ll_per_datum", alpha: float = 0.05) -> list[str]:
        """Manifolds other than the winner whose paired difference to it is not significant
        (two-sided exact sign-flip test over folds, ``p ≥ alpha``): candidates the data do not
        rank below the winner. With too few folds for any p-value below ``alpha`` (fewer than
        6 at 0.05) every other candidate is listed; empty with fewer than two folds (no
        test)."""
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        best = self.winner(metric)
        return [m for m, d in self.paired_differences(metric).items()
                if m != best and np.isfinite(d["signflip_pvalue"])
                and d["signflip_pvalue"] >= alpha]

    # --- export
    def to_dataframe(self):
        """A pandas DataFrame of the records, or a dict of columns if pandas is not installed."""
        cols = ["manifold", "fold", "status", *METRICS, "train_elbo", "seconds", "error"]
        data = {c: [r.get(c) for r in self.records] for c in cols}
        try:
            import pandas as pd
        except ImportError:
            return data
        return pd.DataFrame(data)

    def table(self, metric: str = "ll_per_datum") -> str:
        """Plain-text table: mean ± s.e.m., difference to the winner, wins, failures."""
        summ, diff = self.summary(metric), self.paired_differences(metric)
        wins = self.win_counts(metric)
        n_failed = {m: sum(r["manifold"] == m for r in self.failed) for m in self.manifolds}
        best = self.winner(metric)
        lines = [
            f"{'manifold':<10} {metric + ' (mean ± sem)':>26} {'Δ vs best':>20} "
            f"{'p (sign-flip)':>13} {'wins':>5} {'failed':>6}"
        ]
        for m in self.manifolds:
            s, d = summ[m], diff[m]
            mark = " *" if m == best else ""
            lines.append(
                f"{m + mark:<10} {s['mean']:>16.4f} ± {s['sem']:<7.4f} "
                f"{d['mean']:>11.4f} ± {d['sem']:<6.4f} {d['signflip_pvalue']:>13.3g} "
                f"{wins[m]:>5d} {n_failed[m]:>6d}"
            )
        better = "higher" if METRICS[metric] else "lower"
        lines.append(f"(* best mean; {better} is better; {self.n_splits} folds)")
        lines.append("recommendation: " + self.recommend(metric).headline())
        n_paired = max((d["n"] for m, d in diff.items() if m != best), default=0)
        if n_paired < 2:
            lines.append("fewer than two folds in common: no paired test, the ranking is one "
                         "fold's")
        elif 2.0 ** (1 - n_paired) >= 0.05:
            lines.append(f"{n_paired} folds: too few for any test at 5% (the smallest possible "
                         f"sign-flip p is {2.0 ** (1 - n_paired):.3g}; 6 or more folds are needed)")
        elif tie := self.within_noise(metric):
            lines.append(f"not distinguishable from {best} (sign-flip test p >= 0.05): "
                         + ", ".join(tie))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def save(self, path: str | os.PathLike) -> None:
        """Save to HDF5: one JSON-encoded record per fold plus the config."""
        import h5py

        with h5py.File(path, "w") as f:
            f.attrs["manifolds"] = json.dumps(self.manifolds)
            f.attrs["n_splits"] = self.n_splits
            f.attrs["config"] = json.dumps(self.config, default=str)
            f.attrs["records"] = json.dumps(self.records, default=_json_default)
            for metric in METRICS:
                g = f.create_group(metric)
                for m, s in self.scores(metric).items():
                    g[m] = s

    @classmethod
    def load(cls, path: str | os.PathLike) -> CVResult:
        """Inverse of :meth:`save`."""
        import h5py

        with h5py.File(path, "r") as f:
            return cls(
                records=json.loads(f.attrs["records"]),
                manifolds=json.loads(f.attrs["manifolds"]),
                n_splits=int(f.attrs["n_splits"]),
                config=json.loads(f.attrs["config"]),
            )

    def plot(self, metric: str = "ll_per_datum", ax=None):
        """Per-fold scores, one line per fold linking the manifolds (as in the paper's figures)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(1.2 + 1.1 * len(self.manifolds), 3.5))
        s = self.scores(metric)
        x = np.arange(len(self.manifolds))
        mat = np.stack([s[m] for m in self.manifolds])
        for k in range(self.n_splits):
            ax.plot(x, mat[:, k], "-", color="0.7", lw=0.8, zorder=1)
        summ = self.summary(metric)
        means = [summ[m]["mean"] for m in self.manifolds]
        sems = [summ[m]["sem"] for m in self.manifolds]
        ax.errorbar(x, means, yerr=sems, fmt="o", color="k", capsize=4, zorder=2)
        best = self.manifolds.index(self.winner(metric))
        ax.plot([x[best]], [means[best]], "o", color="C3", ms=9, zorder=3, label="winner")
        ax.set_xticks(x, self.manifolds)
        labels = {"ll_per_datum": "held-out log-lik. per datum",
                  "pred_ll_per_datum": "held-out log pred. density per datum",
                  "mse": "held-out MSE", "var_explained": "variance explained"}
        ax.set_ylabel(labels[metric])
        ax.set_title(f"cross-validation, {self.n_splits} folds")
        ax.legend(frameon=False)
        ax.figure.tight_layout()
        return ax.figure


def sign_flip_pvalue(d: np.ndarray, n_draws: int = 100_000, seed: int = 0) -> float:
    """Two-sided p-value of the sign-flip (paired permutation) test that the paired differences
    ``d`` have mean zero (:func:`scipy.stats.permutation_test`, exact over all ``2^n`` sign
    patterns up to n = 16 folds, else ``n_draws`` random ones). Assumes only that each
    difference is symmetric about zero under the null hypothesis; with n folds no p-value is
    below ``2^(1-n)``."""
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan")
    kw = {"permutation_type": "samples", "vectorized": True, "alternative": "two-sided",
          "n_resamples": np.inf if len(d) <= 16 else n_draws}
    try:
        res = stats.permutation_test((d,), np.mean, rng=seed, **kw)
    except TypeError:  # scipy < 1.15 names the seed random_state
        res = stats.permutation_test((d,), np.mean, random_state=seed, **kw)
    return float(min(res.pvalue, 1.0))


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ----------------------------------------------------------------------------------------- tasks
def _task_path(results_dir: Path, manifold: str, fold: int) -> Path:
    return results_dir / f"fold_{manifold}_{fold:03d}.json"


def run_fold(spec: dict[str, Any]) -> dict[str, Any]:
    """Fit and score one (manifold, fold) task; never raises (errors become a failed record).

    A top-level function so that process pools and dask can pickle it.
    """
    import torch

    start = time.perf_counter()
    record: dict[str, Any] = {"manifold": spec["manifold"], "fold": spec["fold"]}
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(spec.get("threads_per_task", 1))
    try:
        scores = _fit_and_score(spec)
        record.update(status="ok", error=None, **scores)
    except Exception as err:  # noqa: BLE001 - a failed fold is reported, never fatal
        record.update(
            status="failed",
            error=f"{type(err).__name__}: {err}",
            traceback=traceback.format_exc(limit=5),
            **{m: float("nan") for m in METRICS},
            train_elbo=float("nan"),
        )
    finally:
        torch.set_num_threads(prev_threads)
    record["seconds"] = time.perf_counter() - start
    if spec.get("key") is not None:
        record["key"] = spec["key"]
    if spec.get("results_dir"):
        path = _task_path(Path(spec["results_dir"]), spec["manifold"], spec["fold"])
        atomic_write_text(path, json.dumps(record, default=_json_default))
    return record


def _data_hash(Y: np.ndarray) -> str:
    """SHA-256 of the recording's shape and float64 contents."""
    h = hashlib.sha256(str(Y.shape).encode())
    h.update(np.ascontiguousarray(Y, dtype=np.float64).tobytes())
    return h.hexdigest()


def _task_key(config: dict[str, Any], manifold: str, fold: int) -> str:
    """What a saved fold must match to be reused: data hash, settings, manifold and fold."""
    blob = json.dumps({**config, "manifold": manifold, "fold": int(fold)}, default=str,
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _saved_record(rdir: Path, manifold: str, fold: int, key: str) -> dict[str, Any] | None:
    """The saved record of a task if it finished (``ok``) under the same key; failed folds,
    folds of other data or settings and unreadable files are recomputed."""
    path = _task_path(rdir, manifold, fold)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or record.get("status") != "ok":
        return None
    return record


def _fit_and_score(spec: dict[str, Any]) -> dict[str, float]:
    """The protocol for one (manifold, fold): train fit, two latent-only test fits, scores."""
    import importlib

    import pyro
    import torch

    fit_module = importlib.import_module("mgplvm.fitting")  # looked up at call time (testable)
    from mgplvm.model import MGPLVM

    Y, split, seed = spec["Y"], spec["split"], spec["seed"]
    n_trials, n_neurons, _ = Y.shape
    train_t, test_t = split["train_t"], split["test_t"]
    halves = (split["neurons_a"], split["neurons_b"])

    # the bins' times in the recording: a time-coupled prior spans the gaps between a split's bins
    gaps = spec.get("time_gaps", False)
    model = MGPLVM(
        spec["manifold"], n_neurons, len(train_t), n_trials, likelihood=spec["likelihood"],
        bin_size=spec["bin_size"], seed=seed, bin_times=train_t if gaps else None,
        **spec["model_kwargs"],
    )
    train = fit_module.fit(model, Y[:, :, train_t], seed=seed, progress=False,
                           **spec["fit_kwargs"])
    _check_fit(train, "the training fit")
    step_sd = _prior_step_sd(model)
    refit_step_sds = None
    from mgplvm.grid import GridPosterior

    # the ring's grid posterior is exact already: smoothing refits are for per-bin Gaussians
    if spec.get("refit_kwargs") is not None and not isinstance(model.latents, GridPosterior):
        refit = fit_module.refit_by_smoothing(model, Y[:, :, train_t], seed=seed, progress=False,
                                              **spec["refit_kwargs"])
        train = refit.fits[-1]
        refit_step_sds = [float(v) for v in refit.step_sds]
        _check_fit(train, "the smoothing refit")

    Y_test = Y[:, :, test_t]
    ll_total, pred_total, sq_err, sq_tot, n_data = 0.0, 0.0, 0.0, 0.0, 0
    # the two directions decode the same test bins under the same prior: one candidate set and
    # one set of transition matrices for both (they do not depend on the tuning curves)
    decode_cache: dict = {}
    for direction, (inp, out) in enumerate((halves, halves[::-1])):
        test_model = model.with_new_latents(len(test_t), n_trials,
                                            bin_times=test_t if gaps else None)
        observed = test_model.neuron_subset(inp)  # shares the latent posterior with test_model
        y_out = torch.as_tensor(Y_test[:, out], dtype=test_model.dtype)
        if spec["test_posterior"] == "smoothed":
            path = observed.smooth_latents(Y_test[:, inp], n_particles=spec["n_particles"],
                                           seed=seed + 1 + direction)
            ll, pred_ll, pred = _held_out_ll_particles(
                test_model, y_out, out, path.particles, path.log_weights)
        elif isinstance(test_model.latents, GridPosterior):
            # the exact posterior of the test path given half A, scored over the grid angles
            with observed._validated():
                _check_fit(fit_module.fit(observed, Y_test[:, inp], train="latents",
                                          progress=False), "the test bins' latent fit")
            probs = test_model.latents.probs
            grid = test_model.latents.points.expand(*probs.shape[:2], -1, 1)
            ll, pred_ll, pred = _held_out_ll_particles(
                test_model, y_out, out, grid, probs.clamp_min(1e-300).log())
        else:
            pyro.set_rng_seed(seed + 1 + direction)  # the decoding start's candidate draws
            observed.init_latents(Y_test[:, inp], spec["test_init"], decode_cache=decode_cache)
            with observed._validated():  # init_latents checked (and warned about) the input half
                _check_fit(fit_module.fit(observed, Y_test[:, inp], train="latents",
                                          seed=seed + 1 + direction, progress=False,
                                          **spec["test_fit_kwargs"]),
                           "the test bins' latent fit")
            torch.manual_seed(seed + 11 + direction)
            # the scores and the predictive mean (MSE) from the same draws of q(g)
            ll, pred_ll, pred = _held_out_ll(test_model, y_out, out, spec["n_eval_samples"])
        ll_total += ll
        pred_total += pred_ll
        resid = (pred - y_out).pow(2)
        centred = (y_out - y_out.mean(-1, keepdim=True)).pow(2)
        sq_err += float(resid.sum())
        sq_tot += float(centred.sum())
        n_data += y_out.numel()
    return {
        "ll_per_datum": ll_total / n_data,
        "pred_ll_per_datum": pred_total / n_data,
        "mse": sq_err / n_data,
        "var_explained": 1.0 - sq_err / sq_tot if sq_tot > 0 else float("nan"),
        "train_elbo": float(train.final_elbo),
        "n_iter": int(train.n_iter),
        "step_sd": step_sd,
        "refit_step_sds": refit_step_sds,
    }


def _check_fit(result, what: str) -> None:
    """Raise (the fold fails) when a fit diverged or stopped at a non-finite step: its scores
    would be those of garbage or of a half-done fit."""
    reason = getattr(result, "reason", None)
    if reason in ("diverged", "nan", "cholesky"):
        raise FloatingPointError(f"{what} stopped: {reason} after {result.n_iter} iterations "
                                 "(a smaller lr may help)")
    if not np.isfinite(result.final_elbo):
        raise FloatingPointError(f"{what} ended with a non-finite ELBO")


def _prior_step_sd(model) -> list[float] | None:
    """The latent prior's step s.d. per tangent coordinate (Brownian / AR(1)), else None."""
    sd = getattr(model.prior, "step_sd", None)
    return None if sd is None else [float(v) for v in sd.detach().cpu().reshape(-1)]


def _held_out_ll_particles(model, y_out, neurons, particles, log_weights, batch: int = 128):
    """The held-out scores of :func:`_held_out_ll` with the latent posterior of every test bin
    given by weighted particles (a particle smoother's marginals) instead of draws from ``q(g)``:

    * bound: ``Σ_{s,t} log Σ_p w_{s,t,p} exp(Σ_n E_q(f)[log p(y_{s,n,t} | f_n(g_{s,t,p}))])``;
    * predictive: the same with ``log E_q(f)[p(...)]``: ``log p(y_{B,t} | y_A)`` under the
      frozen tuning curves and the Brownian prior, up to Monte Carlo error;

    and the predictive mean ``Σ_p w_p E[y | g_p]`` ``(trials, len(neurons), time)``.
    ``particles (trials, time, P, ambient)``, normalised ``log_weights (trials, time, P)``.
    """
    import torch

    # a model of the scored neurons only: the other half's tuning curves are not evaluated
    scored = model.neuron_subset(np.asarray(neurons))
    lik = scored.likelihood
    g_all = particles.movedim(2, 0)  # (P, trials, time, ambient)
    lw_all = log_weights.movedim(2, 0)  # (P, trials, time)
    bound, pred, mean_y = [], [], 0.0
    with torch.no_grad():
        for p0 in range(0, g_all.shape[0], batch):
            g, lw = g_all[p0 : p0 + batch], lw_all[p0 : p0 + batch]
            mean, var = scored.f_moments(g)  # (p, trials, len(neurons), time)
            bound.append(lw + lik.expected_log_prob_moments(y_out, mean, var).sum(-2))
            pred.append(lw + lik.log_predictive_moments(y_out, mean, var).sum(-2))
            mean_y = mean_y + (lw.exp().unsqueeze(-2) * lik.predictive_mean(mean, var)).sum(0)
    ll, pred_ll = (float(torch.logsumexp(torch.cat(w), 0).sum()) for w in (bound, pred))
    return ll, pred_ll, mean_y


def _held_out_ll(model, y_out, neurons, n_samples: int, batch: int = 16):
    """Importance-weighted held-out log-likelihoods of ``y_out`` (totals over the data), from
    the same latent samples ``g_k ~ q(g)``:

    * bound: ``Σ_{s,t} log (1/K) Σ_k exp(Σ_n E_q(f)[log p(y_{s,n,t} | f_n(g_{s,t,k}))])``;
    * predictive: ``Σ_{s,t} log (1/K) Σ_k exp(Σ_n log E_q(f)[p(y_{s,n,t} | f_n(g_{s,t,k}))])``,
      the log predictive density (``≥`` the bound by Jensen; neurons are independent given g).

    The latent posterior factorises over bins, so the importance average is taken bin by bin
    (a much lower-variance estimate than averaging whole-trajectory weights). The draws are
    scored as equally weighted particles by :func:`_held_out_ll_particles`, which also returns
    the predictive mean over them, ``(trials, len(neurons), time)``: ``(ll, pred_ll, mean)``.
    """
    import torch

    with torch.no_grad():
        g = torch.cat([model._latent_samples(min(batch, n_samples - s0))
                       for s0 in range(0, n_samples, batch)])  # (K, trials, time, ambient)
    log_w = torch.full(g.shape[:-1], -math.log(n_samples), dtype=g.dtype, device=g.device)
    return _held_out_ll_particles(model, y_out, neurons, g.movedim(0, 2),
                                  log_w.movedim(0, -1), batch=batch)


# ----------------------------------------------------------------------------------------- driver
def crossvalidate(
    Y: np.ndarray,
    manifolds: Sequence[str],
    n_splits: int = 10,
    likelihood: str = "poisson",
    seed: int = 0,
    executor: Executor | None = None,
    *,
    bin_size: float | None = None,
    n_workers: int | None = None,
    threads_per_task: int = 1,
    results_dir: str | os.PathLike | None = None,
    block: int = 1,
    fit_kwargs: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    test_fit_kwargs: dict[str, Any] | None = None,
    n_eval_samples: int = 64,
    test_init: str = "decode",
    test_posterior: str = "variational",
    n_particles: int = 1000,
    refit_kwargs: dict[str, Any] | None = None,
    time_gaps: bool = True,
    progress: bool = True,
) -> CVResult:
    """Compare candidate manifolds by cross-validation on ``Y`` ``(trials, neurons, time)``.

    Args:
        Y: the recording (counts for ``poisson``/``negbin``).
        manifolds: names understood by :func:`mgplvm.manifolds.get_manifold`, e.g. ``["T1", "R1"]``.
        n_splits: repetitions with independent random halvings of neurons and time bins.
        likelihood: ``"poisson"``, ``"negbin"`` or ``"gaussian"``.
        seed: master seed; fold ``k`` of every manifold uses the same split and seed.
        bin_size: seconds per bin, so that count models' rates are in Hz (default: rates per
            bin; the scores do not depend on it).
        executor: any ``concurrent.futures.Executor`` (e.g. ``dask.distributed.Client(...)
            .get_executor()``). Default: a local process pool with ``n_workers`` processes. Each
            task seeds the global torch/pyro RNGs, so use process-based executors (a thread pool
            would interleave those RNG streams and lose reproducibility).
        threads_per_task: torch threads inside each task (fixed so results do not depend on the
            executor).
        results_dir: save each finished task there and skip tasks already saved (resume).
        block: contiguous time bins per split unit.
        fit_kwargs / test_fit_kwargs: passed to :func:`mgplvm.fit` for the training fit and for the
            latent-only fits at test bins; model_kwargs: passed to :class:`mgplvm.MGPLVM`.
        n_eval_samples: latent samples in the importance-weighted held-out log-likelihood; the
            predictive mean behind ``mse`` and ``var_explained`` averages over the same draws.
        test_init: start of the test-bin latents, inferred from one neuron half under the frozen
            tuning curves: ``"decode"`` (the best path through ~1000 candidate points per bin
            with a Brownian / AR(1) prior, else the best candidate per bin; a fold's two
            directions share the candidates and transition matrices) or ``"smooth"``
            (needs ``model_kwargs={"prior": "brownian"}``: the particle-smoothed path,
            :meth:`~mgplvm.model.MGPLVM.smooth_latents`; slower, not limited to a grid).
        test_posterior: the posterior of the test-bin latents that the scores average over:
            ``"variational"`` (the Gaussian ``q(g)`` of a latent-only fit from ``test_init``,
            ``n_eval_samples`` draws) or ``"smoothed"`` (needs a Brownian prior: the particle
            smoother's marginals ``p(g_t | y_A)`` under the frozen tuning curves, ``n_particles``
            weighted particles per bin; multimodal where half A leaves a bin ambiguous, and no
            latent-only fit, so ``test_init`` and ``test_fit_kwargs`` are unused).
        refit_kwargs: if given, the training fit is refined by
            :func:`mgplvm.refit_by_smoothing` (``refit_kwargs`` are its arguments: ``step_sds``
            required, e.g. ``{"step_sds": [0.05, 0.1], "rounds": 2, "n_iter": 300}``; needs a
            Brownian prior) before the generative model is frozen; its step s.d. then stays
            fixed for the test bins too. ``None`` (default): the training fit alone.
        time_gaps: the training bins, and the test bins, of a split are not consecutive bins
            of the recording. With ``True`` (default) each model gets their times
            (``MGPLVM(bin_times=...)``), so that a time-coupled prior (Brownian, AR(1), GP) and
            the decoding and smoothing under it span the real gap between two bins of a half
            (a Brownian step over ``k`` bins has variance ``k σ²``). ``False`` chains them as if
            they were consecutive (every ``crossvalidate`` before this option). No effect with
            the uniform prior.
    """
    from mgplvm.manifolds import get_manifold

    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 2:
        Y = Y[None]
    if Y.ndim != 3:
        raise ValueError(f"Y must be (trials, neurons, time), got shape {Y.shape}")
    if not np.isfinite(Y).all():
        raise ValueError("Y contains NaN/inf entries")
    if min(Y.shape) < 1:
        raise ValueError(f"Y is empty: shape {Y.shape} (trials, neurons, time)")
    import torch

    from mgplvm.likelihoods import get_likelihood

    # counts (non-negative integers) for count likelihoods: checked once, before any fold runs
    get_likelihood(likelihood, Y.shape[1]).validate(torch.from_numpy(Y), "Y", warn=False)
    manifolds = list(manifolds)
    if not manifolds:
        raise ValueError("give at least one manifold to compare")
    if len(set(manifolds)) != len(manifolds):
        raise ValueError(f"duplicate manifold names in {manifolds}")
    for name in manifolds:
        get_manifold(name)  # fail fast with the parser's message
    if int(n_eval_samples) < 1:
        raise ValueError(f"n_eval_samples must be >= 1, got {n_eval_samples}")
    if test_init not in TEST_INITS:
        raise ValueError(f"test_init must be one of {TEST_INITS}, got {test_init!r}")
    if test_posterior not in TEST_POSTERIORS:
        raise ValueError(f"test_posterior must be one of {TEST_POSTERIORS}, got "
                         f"{test_posterior!r}")
    if int(n_particles) < 2:
        raise ValueError(f"n_particles must be >= 2, got {n_particles}")
    if refit_kwargs is not None and "step_sds" not in refit_kwargs:
        raise ValueError("refit_kwargs needs 'step_sds': the step s.d. candidates of "
                         "mgplvm.refit_by_smoothing")
    smoothing = [f"test_init={test_init!r}"] if test_init == "smooth" else []
    smoothing += [f"test_posterior={test_posterior!r}"] if test_posterior == "smoothed" else []
    smoothing += ["refit_kwargs (smoothing refits)"] if refit_kwargs is not None else []
    if smoothing and (model_kwargs or {}).get("prior", "brownian") not in (None, "brownian"):
        raise ValueError(
            f"{smoothing[0]} needs a Brownian latent prior (the default): not "
            f"model_kwargs={{'prior': {(model_kwargs or {}).get('prior')!r}, ...}}"
        )
    _, n_neurons, n_time = Y.shape
    bin_size = 1.0 if bin_size is None else float(bin_size)
    splits = make_splits(n_neurons, n_time, n_splits, seed=seed, block=block)
    config = {
        "n_splits": n_splits, "likelihood": likelihood, "seed": seed, "bin_size": bin_size,
        "block": block, "fit_kwargs": fit_kwargs or {}, "model_kwargs": model_kwargs or {},
        "test_fit_kwargs": test_fit_kwargs or {}, "n_eval_samples": n_eval_samples,
        "threads_per_task": threads_per_task, "shape": list(Y.shape),
    }
    # only when set: results_dirs of earlier runs stay resumable
    if test_init != "decode":
        config["test_init"] = test_init
    if test_posterior != "variational":
        config.update(test_posterior=test_posterior, n_particles=int(n_particles))
    if refit_kwargs is not None:
        config["refit_kwargs"] = refit_kwargs
    # always recorded: results_dirs written before the option chained the bins (time_gaps=False)
    # and cannot be resumed by a run with gaps
    config["time_gaps"] = bool(time_gaps)
    # resume key: the data's content and every setting (a saved fold of another recording or
    # other settings is recomputed, never reused)
    config["data_sha256"] = _data_hash(Y)
    rdir = Path(results_dir) if results_dir is not None else None
    if rdir is not None:
        rdir.mkdir(parents=True, exist_ok=True)
        cfg_path = rdir / "config.json"
        cfg_json = json.dumps({**config, "manifolds": manifolds}, default=str, sort_keys=True)
        if cfg_path.exists() and cfg_path.read_text() != cfg_json:
            warnings.warn(f"{rdir} holds folds of another recording or other settings: they are "
                          "recomputed (and overwritten)", stacklevel=2)
        atomic_write_text(cfg_path, cfg_json)

    records: list[dict[str, Any]] = []
    specs = []
    for k, split in enumerate(splits):
        for name in manifolds:
            key = _task_key(config, name, k)
            saved = _saved_record(rdir, name, k, key) if rdir is not None else None
            if saved is not None:
                records.append(saved)
                continue
            specs.append({
                "Y": Y, "manifold": name, "fold": k, "split": split,
                "seed": int(seed * 100_003 + k), "likelihood": likelihood, "bin_size": bin_size,
                "fit_kwargs": fit_kwargs or {}, "model_kwargs": model_kwargs or {},
                "test_fit_kwargs": test_fit_kwargs or {}, "n_eval_samples": n_eval_samples,
                "threads_per_task": threads_per_task, "test_init": test_init,
                "refit_kwargs": refit_kwargs, "time_gaps": bool(time_gaps),
                "test_posterior": test_posterior, "n_particles": int(n_particles),
                "results_dir": str(rdir) if rdir is not None else None, "key": key,
            })

    if specs:
        records.extend(_execute(specs, executor, n_workers, progress))
    records.sort(key=lambda r: (r["fold"], manifolds.index(r["manifold"])))
    return CVResult(records=records, manifolds=manifolds, n_splits=n_splits, config=config)


_BROKEN_POOL_HINT = (
    " (a worker process died. If crossvalidate was called from a script, put the call under "
    "`if __name__ == \"__main__\":` - worker processes are started with 'spawn' and re-import "
    "the main module - or pass n_workers=1)"
)


def _execute(specs, executor, n_workers, progress) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    own = executor is None
    if own:
        workers = n_workers or max(1, min(len(specs), os.cpu_count() or 1))
        if workers == 1:
            it = map(run_fold, specs)
            return list(tqdm(it, total=len(specs), desc="cross-validation", disable=not progress))
        import multiprocessing as mp

        executor = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                       initializer=_worker_init, initargs=(os.getpid(),))
    try:
        futures = {executor.submit(run_fold, s): s for s in specs}
        out = []
        for fut in tqdm(
            as_completed(futures), total=len(futures), desc="cross-validation",
            disable=not progress,
        ):
            try:
                out.append(fut.result())
            except Exception as err:  # noqa: BLE001 - e.g. a worker process died
                spec = futures[fut]
                message = f"{type(err).__name__}: {err}"
                if own and isinstance(err, BrokenProcessPool):
                    message += _BROKEN_POOL_HINT
                out.append({
                    "manifold": spec["manifold"], "fold": spec["fold"], "status": "failed",
                    "error": message, "train_elbo": float("nan"),
                    "seconds": float("nan"), **{m: float("nan") for m in METRICS},
                })
    except BaseException:
        # Ctrl-C, SIGTERM (through the CLI) or an error here: no one will read the other
        # folds, so the pool's processes end now instead of finishing them
        if own:
            _stop_pool(executor)
        raise
    if own:
        executor.shutdown()
    return out


def _worker_init(parent_pid: int) -> None:
    """In each worker process: leave Ctrl-C to the parent (which ends the pool), and on Linux
    ask the kernel to send SIGTERM when the parent dies, however it dies."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl: stop now
        os._exit(1)


def _stop_pool(executor: ProcessPoolExecutor) -> None:
    """Cancel pending tasks and terminate the pool's worker processes."""
    procs = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(timeout=5)
