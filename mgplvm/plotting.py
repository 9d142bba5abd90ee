"""Figures people would rather look at than read: tuning curves, latents, fits, comparisons.

Every function takes plain arrays (NumPy or torch), draws with matplotlib, and returns the
``Figure``; matplotlib is imported only when a function is called.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "plot_polar_tuning",
    "plot_latent_vs_truth",
    "plot_loss",
    "plot_cv_comparison",
]


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def plot_polar_tuning(
    angles,
    mean,
    sd=None,
    neurons: Sequence[int] | None = None,
    true_rates=None,
    ncols: int = 6,
    units: str = "Hz",
):
    """Polar tuning curves, one panel per neuron, with a ±2 s.d. band.

    Args:
        angles: ``(K,)`` angles in radians at which the curves were evaluated.
        mean, sd: ``(neurons, K)`` posterior mean and standard deviation.
        neurons: which neurons to draw (default: all, up to 24).
        true_rates: optional ``(neurons, K)`` ground truth, drawn dashed.
    """
    import matplotlib.pyplot as plt

    angles, mean = _np(angles), _np(mean)
    sd = None if sd is None else _np(sd)
    truth = None if true_rates is None else _np(true_rates)
    if mean.ndim != 2 or mean.shape[1] != angles.shape[0]:
        raise ValueError(f"mean must be (neurons, {angles.shape[0]}), got {mean.shape}")
    idx = list(range(min(mean.shape[0], 24))) if neurons is None else list(neurons)
    order = np.argsort(angles)
    th = np.append(angles[order], angles[order][0] + 2 * np.pi)

    def closed(v):
        return np.append(v[order], v[order][0])

    ncols = min(ncols, len(idx))
    nrows = int(np.ceil(len(idx) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, subplot_kw={"projection": "polar"}, figsize=(2.0 * ncols, 2.1 * nrows),
        squeeze=False,
    )
    for ax in axes.ravel()[len(idx):]:
        ax.set_visible(False)
    for ax, n in zip(axes.ravel(), idx, strict=False):
        ax.plot(th, closed(mean[n]), color="C0", lw=1.5)
        if sd is not None:
            lo = np.clip(mean[n] - 2 * sd[n], 0, None)
            ax.fill_between(th, closed(lo), closed(mean[n] + 2 * sd[n]), color="C0", alpha=0.25,
                            lw=0)
        if truth is not None:
            ax.plot(th, closed(truth[n]), "k--", lw=1)
        ax.set_title(f"neuron {n}", fontsize=8, pad=2)
        ax.set_xticklabels([])
        top = float(np.nanmax(mean[n] + (2 * sd[n] if sd is not None else 0)))
        if truth is not None:
            top = max(top, float(np.nanmax(truth[n])))
        ax.set_ylim(0, top * 1.05)
        ax.set_yticks([round(top / 2, 1 if top < 10 else 0)])
        ax.tick_params(labelsize=6)
    fig.suptitle(f"tuning curves ({units}; band ±2 s.d." +
                 ("; dashed: ground truth)" if truth is not None else ")"), fontsize=10)
    fig.tight_layout()
    return fig


def plot_latent_vs_truth(
    times,
    inferred,
    lower=None,
    upper=None,
    truth=None,
    periodic: bool = True,
    label: str = "head direction (rad)",
):
    """Inferred latent angle over time with its credible band, against the tracked/true angle.

    Args:
        times: ``(T,)`` seconds.
        inferred: ``(T,)`` posterior mean (already aligned to ``truth``).
        lower, upper: ``(T,)`` credible band (for angles: mean ± half-width, may leave [-π, π)).
        truth: ``(T,)`` tracked / true values.
        periodic: draw angles without the vertical jumps at ±π.
    """
    import matplotlib.pyplot as plt

    t, mu = _np(times), _np(inferred)
    lo = None if lower is None else _np(lower)
    hi = None if upper is None else _np(upper)
    jumps = np.zeros(len(mu), dtype=bool)
    if periodic:
        # wrap the mean into [-π, π) and move its band with it; cut all three at the wraps
        wrapped = (mu + np.pi) % (2 * np.pi) - np.pi
        if lo is not None and hi is not None:
            lo, hi = lo + (wrapped - mu), hi + (wrapped - mu)
        mu = wrapped
        jumps = np.r_[False, np.abs(np.diff(mu)) > np.pi]

    def breaks(v):
        v = v.copy()
        if periodic:
            v[np.r_[False, np.abs(np.diff(v)) > np.pi]] = np.nan
        return v

    def cut(v):
        v = v.copy()
        v[jumps] = np.nan
        return v

    fig, ax = plt.subplots(figsize=(9, 2.8))
    if lo is not None and hi is not None:
        ax.fill_between(t, cut(lo), cut(hi), color="C0", alpha=0.25, lw=0,
                        label="95% credible band")
    if truth is not None:
        ax.plot(t, breaks(_np(truth)), color="k", lw=1.2, label="tracked")
    ax.plot(t, cut(mu), color="C0", lw=1.0, label="inferred")
    if periodic:
        ax.set_ylim(-np.pi - 0.3, np.pi + 0.3)
        ax.set_yticks([-np.pi, 0, np.pi], ["-π", "0", "π"])
    ax.set_xlabel("time (s)")
    ax.set_ylabel(label)
    ax.legend(loc="upper right", fontsize=8, frameon=False, ncol=3)
    fig.tight_layout()
    return fig


def plot_loss(losses, label: str = "negative ELBO"):
    """The optimisation trace (e.g. ``FitResult.losses``) on a symlog scale."""
    import matplotlib.pyplot as plt

    y = _np(losses)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(np.arange(1, len(y) + 1), y, color="C0", lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel(label)
    if len(y) and np.nanmin(y) > 0:
        ax.set_yscale("log")
    ax.set_title("fit")
    fig.tight_layout()
    return fig


def plot_cv_comparison(result, metric: str = "ll_per_datum"):
    """Per-fold cross-validation scores linked across manifolds (see :class:`CVResult.plot`)."""
    return result.plot(metric)
