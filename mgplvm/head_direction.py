"""A realistic head-direction recording: an anterodorsal-thalamus-like population, the animal's
turning behaviour and a position tracker, simulated with statistics matched to real recordings.

:func:`realistic_head_direction` is the default of ``mgplvm simulate`` and the synthetic ground
truth of ``benchmarks/real_head_direction.py``. What makes it harder than
:func:`mgplvm.datasets.head_direction_ring`, and closer to real anterodorsal (ADn) recordings
(Peyrache et al. 2015, CRCNS th-1):

* **Cells** (default 32; 15–40 is typical): preferred directions uniform on the ring; half-width
  at half-maximum 20–70°; peak rates log-uniform in 1.5–80 Hz, so that time-averaged rates span
  about 0.4–25 Hz and a third to a half of the cells fire below 2 Hz (the development recording:
  0.3–26 Hz, 12 of 32 below 2 Hz); baselines up to 4% of the peak plus up to 0.3 Hz. Tuning
  shapes are mixed, not all von Mises: ``"von_mises"``, ``"gaussian"`` (a wrapped
  Gaussian of the angle), ``"skewed"`` (a different width on each side of the peak, ratio
  0.5–1) and ``"flat_top"`` (``exp(−ln2 · (d/w)⁴)``, a plateau with steep flanks).
* **Behaviour**: the angular velocity is an Ornstein–Uhlenbeck process (time constant
  ``velocity_timescale``) with Student-t innovations (heavy tails: fast turns of several hundred
  °/s), multiplied by a moving / paused state that switches with exponential durations (pauses
  of ``pause_s`` on average, moves of ``move_s``; while paused the velocity is scaled by
  ``pause_scale``). With the defaults the absolute angular velocity per 25-ms bin has median
  ≈ 45°/s, 90th percentile ≈ 150°/s, 99th ≈ 280°/s and is below 10°/s in ≈ 15% of bins, as in
  the real recording. The head direction is integrated on a fine time step (5 ms) and spikes are
  drawn from the rate integrated over each bin, so the latent moves within a bin.
* **Tracker**: the head angle is sampled at ``tracker_rate`` Hz (default 30 Hz, coarser than the
  25-ms bins) with Gaussian noise of ``tracker_noise`` degrees, and lost (NaN) for short stretches
  covering about ``tracker_dropout`` of the session.

Ground truth: ``latents`` is the circular mean of the true head direction over each bin. The
tracked angle is in ``params["tracker_times"]`` (s) and ``params["tracker_angles"]`` (rad);
:meth:`~mgplvm.datasets.SyntheticData.to_recording` resamples it to the bins
(:func:`mgplvm.io.resample_angle`), as a real recording would arrive.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["realistic_head_direction", "SHAPES"]

#: tuning-curve shapes of :func:`realistic_head_direction`
SHAPES = ("von_mises", "gaussian", "skewed", "flat_top")
_LN2 = math.log(2.0)
_FINE_DT = 0.005  # s: step of the simulated head direction


def _wrap(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2 * np.pi) - np.pi


def _switching_scale(rng, n: int, dt: float, move_s: float, pause_s: float, pause_scale: float
                     ) -> np.ndarray:
    """``(n,)`` velocity scale: 1 while moving, ``pause_scale`` while paused, alternating with
    exponential durations (mean ``move_s`` / ``pause_s``), smoothed over 50 ms."""
    total = n * dt
    durations, moving, t = [], [], 0.0
    state = bool(rng.random() < move_s / (move_s + pause_s))
    while t < total:
        d = rng.exponential(move_s if state else pause_s)
        durations.append(d)
        moving.append(state)
        t += d
        state = not state
    edges = np.searchsorted(np.cumsum(durations), np.arange(n) * dt, side="right")
    scale = np.where(np.asarray(moving)[np.minimum(edges, len(moving) - 1)], 1.0, pause_scale)
    width = max(1, int(round(0.05 / dt)))
    kernel = np.ones(width) / width
    return np.convolve(np.pad(scale, (width // 2, width - 1 - width // 2), mode="edge"), kernel,
                       mode="valid")


def _head_direction(rng, n: int, dt: float, velocity_sd: float, velocity_timescale: float,
                    tail_df: float, move_s: float, pause_s: float, pause_scale: float
                    ) -> np.ndarray:
    """Head direction (rad, unwrapped) on a grid of ``n`` steps of ``dt`` seconds."""
    from scipy.signal import lfilter

    a = math.exp(-dt / velocity_timescale)
    e = rng.standard_t(tail_df, n) / math.sqrt(tail_df / (tail_df - 2))
    e[0] /= math.sqrt(1 - a * a)  # start from the stationary distribution
    v = math.radians(velocity_sd) * lfilter([math.sqrt(1 - a * a)], [1.0, -a], e)
    v *= _switching_scale(rng, n, dt, move_s, pause_s, pause_scale)
    start = rng.uniform(-np.pi, np.pi)
    return start + np.concatenate([[0.0], np.cumsum(v[:-1]) * dt])


def _bump(shape: str, d: np.ndarray, width: np.ndarray, skew: np.ndarray) -> np.ndarray:
    """Tuning bump in [0, 1] at signed angle differences ``d (neurons, n)`` from the preferred
    direction; ``width`` (rad, half-width at half-maximum) and ``skew`` ``(neurons, 1)``."""
    if shape == "von_mises":
        kappa = _LN2 / (1 - np.cos(width))
        return np.exp(kappa * (np.cos(d) - 1))
    if shape == "gaussian":
        return np.exp(-_LN2 * (d / width) ** 2)
    if shape == "skewed":  # narrower on the positive side by the factor skew
        w = np.where(d >= 0, width * skew, width)
        return np.exp(-_LN2 * (d / w) ** 2)
    if shape == "flat_top":
        return np.exp(-_LN2 * (d / width) ** 4)
    raise ValueError(f"unknown tuning shape {shape!r}; use one of {SHAPES}")


def _rates(theta: np.ndarray, cells: dict[str, np.ndarray]) -> np.ndarray:
    """Rates (Hz) ``(neurons, n)`` at head directions ``theta (n,)``."""
    d = _wrap(theta[None, :] - cells["preferred"][:, :1])
    out = np.empty(d.shape)
    widths = np.radians(cells["widths"])[:, None]
    skew = cells["skews"][:, None]
    for s, name in enumerate(SHAPES):
        rows = cells["shapes"] == s
        if rows.any():
            out[rows] = _bump(name, d[rows], widths[rows], skew[rows])
    base = cells["baselines"][:, None]
    return base + (cells["peak_rates"][:, None] - base) * out


def realistic_head_direction(
    n_neurons: int = 32,
    minutes: float = 30.0,
    bin_size: float = 0.025,
    peak_rate: tuple[float, float] = (1.5, 80.0),
    width: tuple[float, float] = (20.0, 70.0),
    shapes: tuple[str, ...] = SHAPES,
    velocity_sd: float = 95.0,
    velocity_timescale: float = 0.12,
    tail_df: float = 3.0,
    move_s: float = 2.0,
    pause_s: float = 0.4,
    pause_scale: float = 0.15,
    tracker_rate: float = 30.0,
    tracker_noise: float = 2.0,
    tracker_dropout: float = 0.01,
    noise: str = "poisson",
    dispersion: float | None = None,
    seed: int | None = 0,
    description: str = "",
):
    """A simulated ADn head-direction recording with real-data statistics (module docstring).

    Args:
        n_neurons: cells.
        minutes: session length (real wake epochs: 20–40 min).
        bin_size: seconds per count bin.
        peak_rate: (low, high) peak rates in Hz, drawn log-uniformly.
        width: (low, high) half-width at half-maximum in degrees, drawn uniformly.
        shapes: tuning shapes to draw from (uniformly), a subset of :data:`SHAPES`.
        velocity_sd, velocity_timescale, tail_df: angular-velocity OU process: s.d. (deg/s)
            while moving, time constant (s), degrees of freedom of its Student-t innovations.
        move_s, pause_s, pause_scale: mean durations (s) of moves and pauses, and the velocity
            scale while paused.
        tracker_rate, tracker_noise, tracker_dropout: tracker samples per second, their noise
            s.d. (degrees) and the fraction of the session without tracking (NaN).
        noise, dispersion: ``"poisson"`` or ``"negbin"`` spike counts (negbin shape
            ``dispersion``, default 5).
        seed: random seed.

    Returns:
        a :class:`~mgplvm.datasets.SyntheticData` on ``"T1"`` with ``Y (1, n_neurons, time)``,
        ``latents (1, time, 1)`` (true head direction per bin), ``rates`` (bin-averaged, Hz) and
        ``params`` holding the cells (``preferred``, ``widths``, ``peak_rates``, ``baselines``,
        ``shapes`` as indices into :data:`SHAPES`, ``skews``) and the tracker
        (``tracker_times``, ``tracker_angles``).
    """
    from mgplvm.datasets import (
        SyntheticData,
        _check_count,
        _check_noise,
        _check_positive,
        _check_range,
    )

    settings = {k: v for k, v in locals().items() if k not in ("SyntheticData",)
                and not k.startswith("_check")}
    n_neurons = _check_count(n_neurons, "n_neurons")
    for name in ("minutes", "bin_size", "velocity_sd", "velocity_timescale", "move_s", "pause_s",
                 "tracker_rate"):
        _check_positive(settings[name], name)
    if not (isinstance(tail_df, (int, float)) and tail_df > 2):
        raise ValueError(f"tail_df must be a number > 2 (finite variance), got {tail_df!r}")
    peak = _check_range(peak_rate, "peak_rate", strict=True)
    widths = _check_range(width, "width", strict=True, upper=180.0)
    if not 0 <= float(pause_scale) <= 1:
        raise ValueError(f"pause_scale must be in [0, 1], got {pause_scale!r}")
    if not 0 <= float(tracker_noise) < 90:
        raise ValueError(f"tracker_noise must be in [0, 90) degrees, got {tracker_noise!r}")
    if not 0 <= float(tracker_dropout) < 0.5:
        raise ValueError(f"tracker_dropout must be in [0, 0.5), got {tracker_dropout!r}")
    bad = [s for s in shapes if s not in SHAPES]
    if not shapes or bad:
        raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {shapes!r}")
    if noise not in ("poisson", "negbin"):
        raise ValueError(f"noise must be 'poisson' or 'negbin' (spike counts), got {noise!r}")
    dispersion = _check_noise(noise, dispersion)
    n_time = int(round(minutes * 60 / bin_size))
    _check_count(n_time, "minutes / bin_size (the number of bins)", 2)
    per_bin = max(1, int(round(bin_size / _FINE_DT)))
    dt = bin_size / per_bin

    rng = np.random.default_rng(seed)
    n_fine = n_time * per_bin
    theta = _head_direction(rng, n_fine, dt, velocity_sd, velocity_timescale, float(tail_df),
                            move_s, pause_s, float(pause_scale))
    shape_idx = np.array([SHAPES.index(s) for s in shapes])
    peaks = np.exp(rng.uniform(math.log(peak[0]), math.log(peak[1]), n_neurons))
    cells = {
        "preferred": rng.uniform(-np.pi, np.pi, (n_neurons, 1)),
        "widths": rng.uniform(widths[0], widths[1], n_neurons),
        "peak_rates": peaks,
        "baselines": peaks * rng.uniform(0.0, 0.04, n_neurons) + rng.uniform(0, 0.3, n_neurons),
        "shapes": shape_idx[rng.integers(len(shape_idx), size=n_neurons)],
        "skews": rng.uniform(0.5, 1.0, n_neurons),
    }
    # rates averaged over each bin's fine steps; the latent is the bin's circular mean angle
    rates = np.empty((n_neurons, n_time))
    chunk = max(1, 2**20 // (n_neurons * per_bin)) * per_bin
    for s0 in range(0, n_fine, chunk):
        r = _rates(theta[s0 : s0 + chunk], cells)
        rates[:, s0 // per_bin : (s0 + r.shape[1]) // per_bin] = r.reshape(
            n_neurons, -1, per_bin).mean(-1)
    z = np.exp(1j * theta).reshape(n_time, per_bin).mean(-1)
    latents = np.angle(z)
    mean = rates * bin_size
    if noise == "poisson":
        Y = rng.poisson(mean).astype(np.float64)
    else:
        Y = rng.negative_binomial(dispersion, dispersion / (dispersion + mean)).astype(np.float64)

    # the tracker: coarser samples with noise, and short untracked stretches
    duration = n_time * bin_size
    t_track = np.arange(0.0, duration, 1.0 / tracker_rate)
    fine_t = np.arange(n_fine) * dt
    tracked = np.interp(t_track, fine_t, theta)
    tracked = _wrap(tracked + np.radians(tracker_noise) * rng.standard_normal(len(t_track)))
    if tracker_dropout > 0:
        lost = np.zeros(len(t_track), bool)
        mean_len = max(1, int(round(0.5 * tracker_rate)))  # lost for 0.5 s on average
        n_gaps = rng.poisson(tracker_dropout * len(t_track) / mean_len)
        for start, length in zip(rng.integers(len(t_track), size=n_gaps),
                                 rng.geometric(1 / mean_len, size=n_gaps), strict=True):
            lost[start : start + length] = True
        tracked[lost] = np.nan

    params = {
        **{k: (tuple(float(x) for x in v) if isinstance(v, tuple) and k != "shapes" else v)
           for k, v in settings.items() if k not in ("shapes", "description")},
        "shape_names": ",".join(shapes),
        "dispersion": dispersion,
        **cells,
        "tracker_times": t_track,
        "tracker_angles": tracked,
    }
    rate_per_cell = rates.mean(-1)
    return SyntheticData(
        Y=Y[None],
        latents=latents[None, :, None],
        rates=rates[None],
        manifold_name="T1",
        bin_size=bin_size,
        likelihood=noise,
        params=params,
        generator="realistic_head_direction",
        description=description or (
            f"Simulated ADn head-direction recording (mgplvm.datasets.realistic_head_direction, "
            f"seed {seed}): {n_neurons} cells ({(rate_per_cell < 2).sum()} below 2 Hz), "
            f"{minutes:g} min of {1000 * bin_size:g}-ms bins, tracker at {tracker_rate:g} Hz"),
    )
