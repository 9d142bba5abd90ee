"""Loading recordings into the ``(trials, neurons, time)`` count convention.

Supported sources (``load_recording`` dispatches on the suffix or the object's type):

* HDF5 (``.h5``/``.hdf5``) in mgplvm's schema (see :mod:`mgplvm.datasets`): dataset ``/Y``
  ``(trials, neurons, time)``, attribute ``bin_size`` (seconds), optional ``/head_direction``
  ``(trials, time)`` (radians) or ``/latents`` ``(trials, time, ambient)``, optional group
  ``/cells``.
  Any other HDF5 file works by naming the array: ``load_recording(f, array="spikes/counts")``.
* NumPy ``.npz`` / ``.npy`` and MATLAB ``.mat`` (``scipy.io.loadmat``) count matrices.
* NWB files (needs the optional ``pynwb``): spike times of the ``units`` table, binned.
* pynapple ``TsGroup`` objects (needs the optional ``pynapple``): spike times, binned.

Real recordings rarely arrive in one array with one clock. ``load_recording`` therefore also

* joins several count arrays of one file along the neurons (``array="ADn,Pos"``);
* reads the tracked angle from any variable (``angle="Ang"``): one value per bin, ``(n, 2)``
  (time, angle) pairs, or samples at their own rate (``angle_rate``), resampled to the bins by
  circular means (:func:`resample_angle`); untracked samples stay NaN and are left out of every
  alignment and error metric;
* reads each bin's time (``bin_times="t"``, seconds): epochs joined together leave gaps, which
  the latent prior then spans (:meth:`Recording.bin_times_in_bins`).

Arrays of 2 dimensions are read as ``(neurons, time)`` (one trial); pass ``layout="time,neurons"``
when time runs along the first axis. A 2-D array with far more rows than columns is refused
without a layout (it would be fitted as that many neurons over a handful of bins).
:meth:`Recording.rebin` sums counts into longer bins and :meth:`Recording.window` selects a
stretch of time.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Recording", "load_recording", "bin_spike_times", "resample_angle",
           "circular_mean", "MissingBinSizeError"]

_DEFAULT_NAMES = ("Y", "counts", "spikes", "spike_counts", "data")
#: a 2-D array with more than this many times as many rows as columns is refused without a layout
_TRANSPOSED_RATIO = 10


class MissingBinSizeError(ValueError):
    """The file stores no bin size and none was given."""


def circular_mean(angles: np.ndarray, axis: int = -1) -> np.ndarray:
    """Circular mean of ``angles`` (radians) along ``axis``, ignoring NaN (NaN where all are)."""
    a = np.asarray(angles, dtype=np.float64)
    ok = np.isfinite(a)
    s = np.where(ok, np.sin(np.where(ok, a, 0.0)), 0.0).sum(axis)
    c = np.where(ok, np.cos(np.where(ok, a, 0.0)), 0.0).sum(axis)
    out = np.arctan2(s, c)
    return np.where(ok.any(axis), out, np.nan)


@dataclass
class Recording:
    """A binned recording.

    Attributes:
        Y: counts or activity, ``(trials, neurons, time)`` float64.
        bin_size: seconds per time bin.
        head_direction: tracked head direction in radians ``(trials, time)``, if available; NaN
            marks untracked bins (they are left out of alignments and error metrics).
        latents: ground-truth latents ``(trials, time, ambient)`` for simulated data, if available.
        cells: per-cell metadata, each entry an array of length ``neurons``.
        description: free text (for simulated data: says that it is simulated).
        source: where it was read from.
        bin_times: the start time of each bin in seconds ``(time,)``, strictly increasing; None
            means consecutive bins from 0. Gaps larger than ``bin_size`` (epochs joined
            together) are passed to the latent prior by the workflows.
    """

    Y: np.ndarray
    bin_size: float
    head_direction: np.ndarray | None = None
    latents: np.ndarray | None = None
    cells: dict[str, np.ndarray] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    bin_times: np.ndarray | None = None

    @property
    def n_trials(self) -> int:
        return self.Y.shape[0]

    @property
    def n_neurons(self) -> int:
        return self.Y.shape[1]

    @property
    def n_time(self) -> int:
        return self.Y.shape[2]

    def __post_init__(self) -> None:
        self.Y = _as_trials_neurons_time(np.asarray(self.Y, dtype=np.float64), "Y", None)
        if not np.isfinite(self.Y).all():
            raise ValueError(f"Y contains {int((~np.isfinite(self.Y)).sum())} NaN/inf entries")
        if not (np.isfinite(self.bin_size) and self.bin_size > 0):
            raise ValueError(f"bin_size must be a positive number of seconds, got {self.bin_size}")
        if self.head_direction is not None:
            hd = np.asarray(self.head_direction, dtype=np.float64)
            hd = hd.reshape(1, -1) if hd.ndim == 1 else hd
            if hd.shape != (self.n_trials, self.n_time):
                raise ValueError(
                    f"head_direction has shape {hd.shape}, expected (trials, time) = "
                    f"{(self.n_trials, self.n_time)}"
                )
            if np.isinf(hd).any():
                raise ValueError("head_direction contains inf entries (NaN marks untracked bins)")
            self.head_direction = hd
        if self.bin_times is not None:
            t = np.asarray(self.bin_times, dtype=np.float64).reshape(-1)
            if t.shape != (self.n_time,):
                raise ValueError(f"bin_times has {t.size} entries, the recording {self.n_time} "
                                 "bins")
            if not np.isfinite(t).all() or (t.size > 1 and not np.all(np.diff(t) > 0)):
                raise ValueError("bin_times must be finite and strictly increasing (seconds)")
            if t.size > 1 and np.min(np.diff(t)) < self.bin_size * (1 - 1e-6):
                raise ValueError(f"bin_times are closer than bin_size ({self.bin_size} s): bins "
                                 "would overlap")
            self.bin_times = t

    # ------------------------------------------------------------------ time
    @property
    def times(self) -> np.ndarray:
        """Start time of every bin in seconds, ``(time,)``."""
        if self.bin_times is not None:
            return self.bin_times
        return np.arange(self.n_time) * self.bin_size

    def bin_times_in_bins(self) -> np.ndarray | None:
        """Bin times in units of bins from the first bin (what :class:`mgplvm.MGPLVM`'s
        ``bin_times`` takes), or None when the bins are consecutive."""
        if self.bin_times is None:
            return None
        t = (self.bin_times - self.bin_times[0]) / self.bin_size
        if np.allclose(np.diff(t), 1.0, atol=1e-6):
            return None
        return t

    @property
    def untracked_fraction(self) -> float | None:
        """Fraction of bins whose tracked head direction is NaN (None without tracking)."""
        if self.head_direction is None:
            return None
        return float(np.isnan(self.head_direction).mean())

    def rebin(self, bin_size: float) -> Recording:
        """Counts summed into bins of ``bin_size`` seconds (an integer multiple of the current
        bin size, up to 1e-6); trailing bins that do not fill a new bin are dropped. The tracked
        angle becomes the circular mean of each group (NaN-aware), latents the value of the
        group's middle bin, bin times the first bin's time."""
        ratio = float(bin_size) / self.bin_size
        k = int(round(ratio))
        if k < 1 or abs(ratio - k) > 1e-6 * max(1.0, ratio):
            raise ValueError(f"cannot re-bin {self.bin_size:g}-s bins into {bin_size:g}-s bins: "
                             "the new bin size must be a whole multiple of the current one")
        if k == 1:
            return self
        n = self.n_time // k
        if n < 1:
            raise ValueError(f"a {bin_size:g}-s bin is longer than the recording "
                             f"({self.n_time * self.bin_size:g} s)")
        Y = self.Y[..., : n * k].reshape(self.n_trials, self.n_neurons, n, k).sum(-1)
        hd = None
        if self.head_direction is not None:
            hd = circular_mean(self.head_direction[:, : n * k].reshape(self.n_trials, n, k), -1)
        lat = None if self.latents is None else self.latents[:, k // 2 : n * k : k]
        times = None if self.bin_times is None else self.bin_times[: n * k : k]
        return replace(self, Y=Y, bin_size=float(bin_size), head_direction=hd, latents=lat,
                       bin_times=times)

    def window(self, start: float | None = None, stop: float | None = None) -> Recording:
        """The bins whose start time lies in ``[start, stop)`` seconds (of :attr:`times`)."""
        t = self.times
        keep = np.ones(self.n_time, bool)
        if start is not None:
            keep &= t >= start
        if stop is not None:
            keep &= t < stop
        if keep.sum() < 2:
            raise ValueError(f"the window [{start}, {stop}) s holds {int(keep.sum())} bins of the "
                             f"recording ({t[0]:g}-{t[-1] + self.bin_size:g} s); need at least 2")
        idx = np.flatnonzero(keep)
        hd = None if self.head_direction is None else self.head_direction[:, idx]
        lat = None if self.latents is None else self.latents[:, idx]
        times = t[idx] if (self.bin_times is not None or idx[0] > 0) else None
        return replace(self, Y=self.Y[..., idx], head_direction=hd, latents=lat,
                       bin_times=times)

    def summary(self) -> str:
        """One-paragraph human-readable description."""
        rates = self.Y.mean(axis=(0, 2)) / self.bin_size
        silent = int((self.Y.sum(axis=(0, 2)) == 0).sum())
        dur = self.n_time * self.bin_size
        lines = [
            f"{self.n_trials} trial(s) x {self.n_neurons} neurons x {self.n_time} bins of "
            f"{1000 * self.bin_size:g} ms ({dur:.1f} s per trial)",
            f"mean rate per neuron: {rates.min():.2f}-{rates.max():.2f} Hz "
            f"(median {np.median(rates):.2f}); silent neurons: {silent}",
        ]
        gaps = self.bin_times_in_bins()
        if gaps is not None:
            jumps = np.diff(gaps) > 1 + 1e-6
            lines.append(f"time gaps: {int(jumps.sum())} (epochs joined; "
                         f"{self.times[-1] - self.times[0] + self.bin_size:.1f} s spanned)")
        if self.head_direction is not None:
            frac = self.untracked_fraction
            lines.append("tracked head direction: yes" + (
                f" ({100 * frac:.1f}% of bins untracked, left out of alignment and errors)"
                if frac else ""))
        if self.description:
            lines.append(self.description)
        return "\n".join(lines)


def _as_trials_neurons_time(arr: np.ndarray, name: str, layout: str | None) -> np.ndarray:
    if layout not in (None, "neurons,time", "time,neurons", "trials,neurons,time"):
        raise ValueError(
            f"unknown layout {layout!r}; use 'neurons,time', 'time,neurons' or "
            "'trials,neurons,time'"
        )
    if arr.ndim == 2:
        rows, cols = arr.shape
        if layout is None and rows > _TRANSPOSED_RATIO * cols:
            raise ValueError(
                f"{name} has shape {arr.shape}: read as (neurons, time) that is {rows} neurons "
                f"over {cols} bins, which looks transposed. If time runs along the first axis, "
                "pass layout='time,neurons' (--layout time,neurons); to fit it as it is, pass "
                "layout='neurons,time'"
            )
        arr = arr.T if layout == "time,neurons" else arr
        return arr[None]
    if arr.ndim == 3:
        return arr
    raise ValueError(
        f"{name} has {arr.ndim} dimensions (shape {arr.shape}); expected (neurons, time) or "
        "(trials, neurons, time)"
    )


def bin_spike_times(
    spike_times: list[np.ndarray] | tuple[np.ndarray, ...],
    bin_size: float,
    t_start: float | None = None,
    t_stop: float | None = None,
) -> np.ndarray:
    """Bin per-neuron spike times (seconds) into counts ``(neurons, time)``.

    Bins are ``[t_start + k·bin_size, t_start + (k+1)·bin_size)``; spikes outside
    ``[t_start, t_stop)`` are dropped. Defaults span the first to the last spike.
    """
    if bin_size <= 0:
        raise ValueError(f"bin_size must be positive, got {bin_size}")
    trains = [np.asarray(s, dtype=np.float64).ravel() for s in spike_times]
    if not trains:
        raise ValueError("spike_times is empty: need at least one neuron")
    allspk = np.concatenate(trains) if any(len(t) for t in trains) else np.zeros(0)
    if t_start is None:
        t_start = float(allspk.min()) if allspk.size else 0.0
    if t_stop is None:
        t_stop = float(allspk.max()) + bin_size if allspk.size else bin_size
    n_bins = int(np.floor((t_stop - t_start) / bin_size + 1e-9))
    if n_bins < 1:
        raise ValueError(f"no complete bin of {bin_size} s between {t_start} and {t_stop}")
    neuron = np.repeat(np.arange(len(trains)), [len(t) for t in trains])
    k = np.floor((allspk - t_start) / bin_size).astype(np.int64)
    keep = (k >= 0) & (k < n_bins)
    counts = np.zeros((len(trains), n_bins))
    np.add.at(counts, (neuron[keep], k[keep]), 1.0)
    return counts


def resample_angle(
    times: Any,
    angles: Any,
    bin_size: float,
    n_bins: int,
    t_start: float = 0.0,
    max_gap: float | None = None,
) -> np.ndarray:
    """A tracked angle sampled at its own times, resampled to count bins -> ``(n_bins,)`` rad.

    Bin ``k`` spans ``[t_start + k·bin_size, t_start + (k+1)·bin_size)``. Its value is the
    circular mean of the samples inside it; a bin without samples (a tracker coarser than the
    bins) takes the angle interpolated along the shorter arc between the nearest valid samples
    before and after its centre, if they are at most ``max_gap`` seconds apart (default three
    median sampling intervals), and NaN otherwise. NaN samples (tracking lost) are ignored, so
    long losses become NaN bins. ``times (n,)`` in seconds (increasing), ``angles (n,)`` in
    radians (any range).
    """
    t = np.asarray(times, dtype=np.float64).ravel()
    a = np.asarray(angles, dtype=np.float64).ravel()
    if t.shape != a.shape:
        raise ValueError(f"times {t.shape} and angles {a.shape} must have the same length")
    if not (np.isfinite(bin_size) and bin_size > 0) or int(n_bins) < 1:
        raise ValueError(f"need bin_size > 0 and n_bins >= 1, got {bin_size}, {n_bins}")
    if t.size > 1 and not np.all(np.diff(t[np.isfinite(t)]) > 0):
        raise ValueError("tracker times must be strictly increasing")
    n_bins = int(n_bins)
    ok = np.isfinite(t) & np.isfinite(a)
    t, a = t[ok], a[ok]
    out = np.full(n_bins, np.nan)
    if t.size == 0:
        return out
    k = np.floor((t - t_start) / bin_size).astype(np.int64)
    inside = (k >= 0) & (k < n_bins)
    sin = np.bincount(k[inside], np.sin(a[inside]), n_bins)
    cos = np.bincount(k[inside], np.cos(a[inside]), n_bins)
    has = np.bincount(k[inside], minlength=n_bins) > 0
    out[has] = np.arctan2(sin[has], cos[has])
    if max_gap is None:
        max_gap = 3 * float(np.median(np.diff(t))) if t.size > 1 else bin_size
    centres = t_start + (np.arange(n_bins) + 0.5) * bin_size
    empty = np.flatnonzero(~has)
    nxt = np.searchsorted(t, centres[empty])
    ok = (nxt > 0) & (nxt < t.size)
    empty, nxt = empty[ok], nxt[ok]
    prev = nxt - 1
    close = (t[nxt] - t[prev]) <= max_gap
    empty, nxt, prev = empty[close], nxt[close], prev[close]
    step = np.angle(np.exp(1j * (a[nxt] - a[prev])))  # shorter arc
    frac = (centres[empty] - t[prev]) / (t[nxt] - t[prev])
    out[empty] = np.angle(np.exp(1j * (a[prev] + frac * step)))
    return out


# ------------------------------------------------------------------------------------ readers
class _Source:
    """Named arrays and attributes of one file (HDF5 datasets are read on access)."""

    def __init__(self, path: Path, arrays: dict[str, Any], attrs: dict[str, Any],
                 h5: Any = None) -> None:
        self.path, self.arrays, self.attrs, self.h5 = path, arrays, attrs, h5

    def names(self) -> list[str]:
        if self.h5 is not None:
            import h5py

            found: list[str] = []
            self.h5.visititems(
                lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
            return found
        return sorted(k for k in self.arrays if not k.startswith("__"))

    def __contains__(self, name: str) -> bool:
        if self.h5 is not None:
            return name in self.h5
        return name in self.arrays

    def get(self, name: str, what: str) -> np.ndarray:
        if name not in self:
            raise KeyError(f"{self.path} has no {what} {name!r}; arrays in the file: "
                           f"{self.names()}")
        value = self.h5[name][()] if self.h5 is not None else self.arrays[name]
        try:
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.path}: {what} {name!r} is not a numeric array") from err


def _counts(src: _Source, array: str | None, layout: str | None) -> tuple[np.ndarray, str]:
    """The count array(s): ``array`` names one, or several separated by commas (joined along
    the neurons after each is put in ``(trials, neurons, time)`` order)."""
    if array:
        names = [a.strip() for a in array.split(",") if a.strip()]
    else:
        names = [n for n in _DEFAULT_NAMES if n in src][:1]
        if not names:
            raise KeyError(
                f"{src.path} has no array named any of {list(_DEFAULT_NAMES)}; arrays in the "
                f"file: {src.names()}. Pass array='<name>' to choose one."
            )
    parts = [_as_trials_neurons_time(src.get(n, "array"), n, layout) for n in names]
    shapes = {(p.shape[0], p.shape[2]) for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"the arrays {names} have different numbers of trials or bins "
                         f"({[p.shape for p in parts]}); they cannot be joined along neurons")
    return np.concatenate(parts, axis=1), ",".join(names)


def _angle(src: _Source, name: str, n_time: int, bin_size: float, rate: float | None,
           start: float) -> np.ndarray:
    """The tracked angle ``name`` on the bins, ``(trials, time)`` (see :func:`load_recording`)."""
    a = src.get(name, "angle")
    finite = a[np.isfinite(a)]
    if finite.size and (finite.max() - finite.min()) > 2 * np.pi + 0.1 and a.ndim == 1:
        raise ValueError(f"{src.path}: angle {name!r} spans {finite.min():.3g} to "
                         f"{finite.max():.3g}: it looks like degrees; convert it to radians")
    if a.ndim == 2 and a.shape[1] == 2 and a.shape[0] != n_time:  # (time, angle) pairs
        return resample_angle(a[:, 0], a[:, 1], bin_size, n_time, t_start=start)[None]
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim == 1 and a.size == n_time and rate is None:
        return a[None]
    if a.ndim == 2 and a.shape[-1] == n_time:
        return a
    if a.ndim == 1 and rate is not None:
        times = start + np.arange(a.size) / float(rate)
        return resample_angle(times, a, bin_size, n_time)[None]
    raise ValueError(
        f"{src.path}: angle {name!r} has shape {a.shape} but the recording has {n_time} bins. "
        "Give one angle per bin, (time, angle) pairs as two columns, or samples at their own "
        "rate with angle_rate=<Hz> (--angle-rate)"
    )


def _open(path: Path):
    """``(source, closer)`` for a file path."""
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        import h5py

        f = h5py.File(path, "r")
        attrs = {k: f.attrs[k] for k in f.attrs}
        return _Source(path, {}, attrs, h5=f), f.close
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return _Source(path, arrays, {}), lambda: None
    if suffix == ".npy":
        return _Source(path, {"Y": np.load(path, allow_pickle=False)}, {}), lambda: None
    if suffix == ".mat":
        from scipy.io import loadmat

        return _Source(path, loadmat(path), {}), lambda: None
    raise ValueError(
        f"unsupported file type {suffix!r} for {path}: use .h5/.hdf5, .npz, .npy, .mat or .nwb"
    )


def _from_source(src: _Source, array, layout, bin_size, angle, angle_rate, angle_start,
                 bin_times) -> Recording:
    Y, used = _counts(src, array, layout)
    bs = bin_size
    if bs is None and "bin_size" in src.attrs:
        bs = src.attrs["bin_size"]
    if bs is None and "bin_size" in src and src.h5 is None:
        bs = float(np.asarray(src.arrays["bin_size"]).ravel()[0])
    if bs is None:
        raise MissingBinSizeError(f"{src.path} has no 'bin_size': pass bin_size=<seconds> "
                                  "(--bin-size)")
    bs = float(bs)
    n_time = Y.shape[-1]
    hd = lat = None
    if angle is not None:
        hd = _angle(src, angle, n_time, bs, angle_rate, angle_start)
    elif "head_direction" in src:
        hd = src.get("head_direction", "angle")
    if "latents" in src and src.h5 is not None and used in _DEFAULT_NAMES:
        lat = src.get("latents", "latents")
        if hd is None and lat.shape[-1] == 1:
            hd = lat[..., 0]
    times = None
    if bin_times is not None:
        times = (src.get(bin_times, "bin times") if isinstance(bin_times, str)
                 else np.asarray(bin_times, dtype=np.float64)).reshape(-1)
    cells: dict[str, np.ndarray] = {}
    if src.h5 is not None and "cells" in src.h5:
        cells = {k: np.asarray(v) for k, v in src.h5["cells"].items()}
    desc = str(src.attrs.get("description", ""))
    return Recording(Y, bs, hd, lat, cells, desc, str(src.path), bin_times=times)


def _load_nwb(path: Path, bin_size: float | None) -> Recording:
    try:
        from pynwb import NWBHDF5IO
    except ImportError as err:  # pragma: no cover - optional dependency
        raise ImportError("reading NWB files needs pynwb: pip install pynwb") from err
    if bin_size is None:
        raise ValueError("NWB units hold spike times: pass bin_size=<seconds> to bin them")
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        if nwb.units is None:
            raise ValueError(f"{path} has no units table (no spike times to bin)")
        trains = [np.asarray(nwb.units["spike_times"][i]) for i in range(len(nwb.units))]
    return Recording(bin_spike_times(trains, bin_size), bin_size, source=str(path))


def _from_pynapple(tsgroup: Any, bin_size: float | None) -> Recording:
    if bin_size is None:
        raise ValueError("a pynapple TsGroup holds spike times: pass bin_size=<seconds>")
    trains = [np.asarray(tsgroup[k].t) for k in tsgroup.keys()]
    return Recording(bin_spike_times(trains, bin_size), bin_size, source="pynapple.TsGroup")


def load_recording(
    source: str | os.PathLike | Any,
    *,
    array: str | None = None,
    bin_size: float | None = None,
    layout: str | None = None,
    angle: str | None = None,
    angle_rate: float | None = None,
    angle_start: float = 0.0,
    bin_times: str | np.ndarray | None = None,
) -> Recording:
    """Load a recording from a file path or a pynapple ``TsGroup``.

    Args:
        source: path to ``.h5/.hdf5/.npz/.npy/.mat/.nwb``, or a pynapple ``TsGroup``.
        array: name of the count array inside the file (default: the first of
            ``Y, counts, spikes, spike_counts, data`` present); several names separated by
            commas are joined along the neurons (``"ADn,Pos"``).
        bin_size: seconds per bin of the file (overrides the file's; required for spike-time
            sources and files without one).
        layout: for 2-D arrays, ``"neurons,time"`` (default) or ``"time,neurons"``.
        angle: name of the tracked head direction (radians) in the file: one value per bin;
            ``(n, 2)`` (time, angle) pairs; or ``n`` samples at ``angle_rate`` Hz starting at
            ``angle_start`` seconds. Samples are resampled to the bins (:func:`resample_angle`).
            Default: ``head_direction`` if the file has it.
        bin_times: each bin's start time in seconds: an array, or the name of one in the file.

    Loading warns when part of the tracked angle is NaN (untracked bins are kept and masked
    in every metric).
    """
    if not isinstance(source, (str, os.PathLike)):
        if type(source).__name__ == "TsGroup":
            return _from_pynapple(source, bin_size)
        raise TypeError(f"cannot load a recording from a {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such recording file: {path}")
    if path.suffix.lower() == ".nwb":
        return _load_nwb(path, bin_size)
    src, close = _open(path)
    try:
        rec = _from_source(src, array, layout, bin_size, angle, angle_rate, angle_start,
                           bin_times)
    finally:
        close()
    frac = rec.untracked_fraction
    if frac:
        warnings.warn(f"{path.name}: the tracked head direction is NaN (untracked) in "
                      f"{100 * frac:.1f}% of bins; they are left out of alignment and error "
                      "metrics", stacklevel=2)
    return rec
