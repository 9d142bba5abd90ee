"""Figures for the communication analyses (matplotlib ``Figure`` objects, no pyplot state, so they
work under any backend, Agg included)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .nonnormality import transient_amplification
from .rate import _t

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_input_spectrum", "plot_rate_vs_noise", "plot_transient_amplification"]


def _figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def plot_rate_vs_noise(
    noise_vars: Sequence[float] | np.ndarray, rates: Mapping[str, Sequence[float] | np.ndarray],
    ratio: tuple[str, str] | None = None,
) -> Figure:
    """R_max (bits / time) against the noise variance σ² (log–log), one line per network.

    ``rates[label][i]`` is the rate at ``noise_vars[i]``.  ``ratio=(num, den)`` adds a second
    panel with rates[num] / rates[den] (e.g. non-normal / normal).
    """
    fig = _figure((9.0, 3.6) if ratio else (4.8, 3.6))
    axes = fig.subplots(1, 2 if ratio else 1, squeeze=False)[0]
    x = np.asarray(noise_vars, dtype=float)
    for label, r in rates.items():
        axes[0].loglog(x, np.asarray(r, dtype=float), "o-", label=label)
    axes[0].set(xlabel="noise variance σ²", ylabel="R_max (bits / unit time)")
    axes[0].legend(frameon=False)
    if ratio:
        num, den = ratio
        q = np.asarray(rates[num], dtype=float) / np.asarray(rates[den], dtype=float)
        axes[1].semilogx(x, q, "o-k")
        axes[1].axhline(1.0, color="0.6", lw=0.8, ls="--")
        axes[1].set(xlabel="noise variance σ²", ylabel=f"rate ratio {num} / {den}")
    return fig


def plot_input_spectrum(Sigmas: Mapping[str, Tensor | np.ndarray]) -> Figure:
    """Sorted eigenvalues of each optimal input covariance Σ* (tr Σ* = 1): a few large ones mean a
    low effective rank (non-normal networks at high noise)."""
    from .rate import effective_rank

    fig = _figure((4.8, 3.6))
    ax = fig.subplots()
    for label, S in Sigmas.items():
        St = _t(S)
        lam = torch.linalg.eigvalsh(0.5 * (St + St.mT)).flip(0).clamp_min(0.0).numpy()
        er = float(effective_rank(St))
        ax.plot(np.arange(1, len(lam) + 1), lam, "o-", label=f"{label} (eff. rank {er:.2f})")
    ax.set(xlabel="index", ylabel="eigenvalue of Σ*", title="optimal input spectrum")
    ax.legend(frameon=False)
    return fig


def plot_transient_amplification(
    networks: Mapping[str, Tensor | np.ndarray], t_max: float | None = None, num: int = 200
) -> Figure:
    """t ↦ ‖e^{At}‖₂ for each network (log scale); normal stable networks decay monotonically from
    1, non-normal ones can grow transiently before decaying."""
    fig = _figure((4.8, 3.6))
    ax = fig.subplots()
    for label, A in networks.items():
        t, g = transient_amplification(_t(A), num=num, t_max=t_max)
        ax.semilogy(t.numpy(), g.numpy(), label=label)
    ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax.set(xlabel="time t", ylabel="‖exp(At)‖₂", title="transient amplification")
    ax.legend(frameon=False)
    return fig
