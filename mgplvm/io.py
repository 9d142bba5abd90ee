"""Loading recordings into the ``(trials, neurons, time)`` count convention.

Supported sources (``load_recording`` dispatches on the suffix or the object's type):

* HDF5 (``.h5``/``.hdf5``) in mgplvm's schema (see :mod:`mgplvm.datasets`): dataset ``/Y``
  ``(trials, neurons, time)``, attribute ``bin_size`` (seconds), optional ``/head_direction``
  ``(trials, time)`` (radians) or ``/latents`` ``(trials, time, ambient)``, optional group
  ``/cells``.
  Any other HDF5 file works by naming the array: ``load_recording(f, array="spikes/counts")``.
* NumPy ``.npz`` / ``.npy`` and MATLAB ``.mat`` count matrices: ``scipy.io.loadmat`` for
  MATLAB v4-v7 files; v7.3 files are HDF5 and are read with h5py, each array transposed back to
  MATLAB's shape (MATLAB stores arrays column-major), so both present a ``T×N`` MATLAB array as
  ``(T, N)``. Sparse matrices are read as dense ones.
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

A file that cannot be read (empty, truncated, not of the format its suffix says, holding no
arrays), a missing optional reader, and a keyword argument that is missing or does not fit the
file raise :class:`RecordingFormatError` (a ``ValueError``) with a one-line message that names
the file, what is wrong and what to do; its ``argument`` names the keyword argument to change.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Recording", "load_recording", "bin_spike_times", "resample_angle",
           "circular_mean", "RecordingFormatError", "MissingBinSizeError", "MissingArrayError"]

_DEFAULT_NAMES = ("Y", "counts", "spikes", "spike_counts", "data")
#: a 2-D array with more than this many times as many rows as columns is refused without a layout
_TRANSPOSED_RATIO = 10
_SUFFIXES = (".h5", ".hdf5", ".npz", ".npy", ".mat", ".nwb")
#: MATLAB classes of v7.3 variables that hold numbers
_MATLAB_NUMERIC = ("double", "single", "logical", "int8", "uint8", "int16", "uint16", "int32",
                   "uint32", "int64", "uint64")
_SAVE_AGAIN = "copy or export the recording again"
#: what h5py raises on a damaged file
_H5_ERRORS = (OSError, RuntimeError, KeyError, UnicodeDecodeError)


class RecordingFormatError(ValueError):
    """A recording cannot be read as given: the file is empty, truncated, not of the format its
    suffix says or holds no arrays, an optional reader is missing, or a keyword argument of
    :func:`load_recording` is missing or does not fit the file.

    Attributes:
        argument: the keyword argument to change (``"array"``, ``"bin_size"``, ``"layout"``,
            ``"angle"``, ``"bin_times"``), or None when the file itself is at fault; a command
            line can name its own option from it.
        path: the file, if one is concerned.
    """

    default_argument: str | None = None

    def __init__(self, message: str, argument: str | None = None,
                 path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.argument = argument if argument is not None else self.default_argument
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        return type(self), (str(self), self.argument, self.path)


class MissingBinSizeError(RecordingFormatError):
    """The file stores no bin size and none was given (``argument`` is ``"bin_size"``)."""

    default_argument = "bin_size"


class MissingArrayError(RecordingFormatError, KeyError):
    """A named array is not in the file (``argument`` names the keyword that named it).

    Also a ``KeyError`` (what was raised before); its message is printed without quotes."""

    default_argument = "array"


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
        if self.Y.size == 0:
            raise ValueError(f"Y is empty (shape {self.Y.shape}): no counts to fit")
        if not np.isfinite(self.Y).all():
            raise ValueError(f"Y contains {int((~np.isfinite(self.Y)).sum())} NaN/inf entries")
        if not (np.isfinite(self.bin_size) and self.bin_size > 0):
            raise RecordingFormatError(
                f"bin_size must be a positive number of seconds, got {self.bin_size}", "bin_size")
        if self.head_direction is not None:
            hd = np.asarray(self.head_direction, dtype=np.float64)
            hd = hd.reshape(1, -1) if hd.ndim == 1 else hd
            if hd.shape != (self.n_trials, self.n_time):
                raise RecordingFormatError(
                    f"head_direction has shape {hd.shape}, expected (trials, time) = "
                    f"{(self.n_trials, self.n_time)}", "angle"
                )
            if np.isinf(hd).any():
                raise ValueError("head_direction contains inf entries (NaN marks untracked bins)")
            self.head_direction = hd
        if self.bin_times is not None:
            t = np.asarray(self.bin_times, dtype=np.float64).reshape(-1)
            if t.shape != (self.n_time,):
                raise RecordingFormatError(f"bin_times has {t.size} entries, the recording "
                                           f"{self.n_time} bins", "bin_times")
            if not np.isfinite(t).all() or (t.size > 1 and not np.all(np.diff(t) > 0)):
                raise RecordingFormatError(
                    "bin_times must be finite and strictly increasing (seconds)", "bin_times")
            if t.size > 1 and np.min(np.diff(t)) < self.bin_size * (1 - 1e-6):
                raise RecordingFormatError(f"bin_times are closer than bin_size "
                                           f"({self.bin_size} s): bins would overlap",
                                           "bin_times")
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
        raise RecordingFormatError(
            f"unknown layout {layout!r}; use 'neurons,time', 'time,neurons' or "
            "'trials,neurons,time'", "layout"
        )
    if arr.ndim == 2:
        rows, cols = arr.shape
        if layout is None and rows > _TRANSPOSED_RATIO * cols:
            raise RecordingFormatError(
                f"{name} has shape {arr.shape}: read as (neurons, time) that is {rows} neurons "
                f"over {cols} bins, which looks transposed. If time runs along the first axis, "
                "pass layout='time,neurons' (--layout time,neurons); to fit it as it is, pass "
                "layout='neurons,time'", "layout"
            )
        arr = arr.T if layout == "time,neurons" else arr
        return arr[None]
    if arr.ndim == 3:
        return arr
    raise RecordingFormatError(
        f"{name} has {arr.ndim} dimensions (shape {arr.shape}); expected (neurons, time) or "
        "(trials, neurons, time)", "array"
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
def _detail(err: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


class _Source:
    """Named arrays and attributes of one file (HDF5 datasets are read on access; those of a
    MATLAB v7.3 file, ``matlab=True``, are transposed back to MATLAB's shape)."""

    def __init__(self, path: Path, arrays: dict[str, Any], attrs: dict[str, Any],
                 h5: Any = None, matlab: bool = False) -> None:
        self.path, self.arrays, self.attrs, self.h5 = path, arrays, attrs, h5
        self.matlab = matlab

    @property
    def schema(self) -> bool:
        """Whether the file may follow mgplvm's HDF5 schema (``latents``, ``cells``)."""
        return self.h5 is not None and not self.matlab

    def names(self) -> list[str]:
        if self.h5 is not None:
            import h5py

            found: list[str] = []

            def visit(name: str, obj: Any) -> None:
                if any(part.startswith("#") for part in name.split("/")):
                    return  # MATLAB's #refs# and #subsystem# groups
                if any(name.startswith(f"{s}/") for s in found):
                    return  # the parts of a MATLAB sparse matrix
                if isinstance(obj, h5py.Dataset) or "MATLAB_sparse" in obj.attrs:
                    found.append(name)

            self.h5.visititems(visit)
            return found
        return sorted(k for k in self.arrays if not k.startswith("__"))

    def __contains__(self, name: str) -> bool:
        if self.h5 is not None:
            return name in self.h5
        return name in self.arrays

    def no_arrays(self) -> RecordingFormatError:
        """The error for a file without any array."""
        return RecordingFormatError(
            f"{self.path} holds no arrays: save the counts into it, (neurons, time) or "
            "(trials, neurons, time), e.g. under the name 'Y'", path=self.path)

    def missing(self, name: str, what: str, argument: str | None) -> RecordingFormatError:
        """The error for an array ``name`` that is not in the file."""
        found = self.names()
        if not found:
            return self.no_arrays()
        return MissingArrayError(f"{self.path} has no {what} {name!r}; arrays in the file: "
                                 f"{found}", argument, self.path)

    def get(self, name: str, what: str, argument: str | None = None) -> np.ndarray:
        """Array ``name`` as float64; ``what`` and ``argument`` (the keyword argument that
        named it) word the errors."""
        if name not in self:
            raise self.missing(name, what, argument)
        try:
            value = self._read_h5(name, what, argument) if self.h5 is not None \
                else self.arrays[name]
            if hasattr(value, "toarray"):  # a sparse matrix of loadmat
                value = value.toarray()
            arr = np.asarray(value, dtype=np.float64)
        except RecordingFormatError:
            raise
        except (TypeError, ValueError) as err:
            raise RecordingFormatError(f"{self.path}: {what} {name!r} is not a numeric array"
                                       + _choose_another(argument), argument, self.path) from err
        if arr.size == 0:
            raise RecordingFormatError(f"{self.path}: {what} {name!r} is empty (shape "
                                       f"{arr.shape})" + _choose_another(argument), argument,
                                       self.path)
        return arr

    def _read_h5(self, name: str, what: str, argument: str | None) -> Any:
        import h5py

        obj = self.h5[name]
        if self.matlab and isinstance(obj, h5py.Group) and "MATLAB_sparse" in obj.attrs:
            return _matlab_sparse(obj)
        if not isinstance(obj, h5py.Dataset):
            raise RecordingFormatError(f"{self.path}: {what} {name!r} is a group, not an array; "
                                       f"arrays in the file: {self.names()}", argument,
                                       self.path)
        if not self.matlab:
            return obj[()]
        cls = obj.attrs.get("MATLAB_class", b"double")
        cls = cls.decode(errors="replace") if isinstance(cls, bytes) else str(cls)
        if obj.attrs.get("MATLAB_empty", 0):
            return np.zeros((0, 0))  # the dataset holds the dimensions, not values
        if cls not in _MATLAB_NUMERIC:
            raise RecordingFormatError(f"{self.path}: {what} {name!r} is a MATLAB {cls}, not a "
                                       "numeric array" + _choose_another(argument), argument,
                                       self.path)
        return np.asarray(obj[()]).T  # MATLAB is column-major: h5py sees the axes reversed


def _choose_another(argument: str | None) -> str:
    if argument in ("array", "angle", "bin_times"):
        return f"; choose another with {argument}='<name>'"
    return ""


def _matlab_sparse(group: Any) -> np.ndarray:
    """A MATLAB v7.3 sparse matrix (compressed sparse columns) as a dense array."""
    jc = np.asarray(group["jc"][()], dtype=np.int64).ravel()
    out = np.zeros((int(group.attrs["MATLAB_sparse"]), jc.size - 1))
    if "data" in group:
        rows = np.asarray(group["ir"][()], dtype=np.int64).ravel()
        cols = np.repeat(np.arange(jc.size - 1), np.diff(jc))
        out[rows, cols] = np.asarray(group["data"][()], dtype=np.float64).ravel()
    return out


def _counts(src: _Source, array: str | None, layout: str | None) -> tuple[np.ndarray, str]:
    """The count array(s): ``array`` names one, or several separated by commas (joined along
    the neurons after each is put in ``(trials, neurons, time)`` order)."""
    if array:
        names = [a.strip() for a in array.split(",") if a.strip()]
        if not names:
            raise RecordingFormatError(f"array={array!r} names no array; give one or more names "
                                       "separated by commas", "array", src.path)
    else:
        names = [n for n in _DEFAULT_NAMES if n in src][:1]
        if not names:
            found = src.names()
            if not found:
                raise src.no_arrays()
            raise MissingArrayError(
                f"{src.path} has no array named any of {list(_DEFAULT_NAMES)}; arrays in the "
                f"file: {found}. Pass array='<name>' to choose one.", "array", src.path
            )
    parts = [_as_trials_neurons_time(src.get(n, "array", "array"), f"{src.path}: array {n!r}",
                                     layout) for n in names]
    shapes = {(p.shape[0], p.shape[2]) for p in parts}
    if len(shapes) > 1:
        raise RecordingFormatError(
            f"{src.path}: the arrays {names} have different numbers of trials or bins "
            f"({[p.shape for p in parts]}); they cannot be joined along neurons", "array",
            src.path)
    return np.concatenate(parts, axis=1), ",".join(names)


def _angle(src: _Source, name: str, n_time: int, bin_size: float, rate: float | None,
           start: float) -> np.ndarray:
    """The tracked angle ``name`` on the bins, ``(trials, time)`` (see :func:`load_recording`)."""
    a = src.get(name, "angle", "angle")
    finite = a[np.isfinite(a)]
    if finite.size and (finite.max() - finite.min()) > 2 * np.pi + 0.1 and a.ndim == 1:
        raise RecordingFormatError(f"{src.path}: angle {name!r} spans {finite.min():.3g} to "
                                   f"{finite.max():.3g}: it looks like degrees; convert it to "
                                   "radians", "angle", src.path)
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
    raise RecordingFormatError(
        f"{src.path}: angle {name!r} has shape {a.shape} but the recording has {n_time} bins. "
        "Give one angle per bin, (time, angle) pairs as two columns, or samples at their own "
        "rate with angle_rate=<Hz> (--angle-rate)", "angle", src.path
    )


def _check_file(path: Path) -> None:
    """Refuse, before any reader runs, a path that cannot hold a recording."""
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise RecordingFormatError(f"unsupported file type {suffix!r} for {path}: use .h5/.hdf5, "
                                   ".npz, .npy, .mat or .nwb", path=path)
    if path.is_dir():
        raise RecordingFormatError(f"{path} is a folder, not a recording file: give the path of "
                                   "a file", path=path)
    if not os.access(path, os.R_OK):
        raise RecordingFormatError(f"{path} cannot be read: permission denied; make it readable "
                                   f"(chmod u+r) or copy it somewhere you can read it", path=path)
    if path.stat().st_size == 0:
        raise RecordingFormatError(f"{path} is empty (0 bytes): nothing was saved in it, or a "
                                   f"copy or download stopped early; {_SAVE_AGAIN}", path=path)


def _not_readable(path: Path, kind: str, err: BaseException, how: str) -> RecordingFormatError:
    return RecordingFormatError(
        f"{path} is not {kind} or is truncated ({path.stat().st_size} bytes; {_detail(err)}): "
        f"{_SAVE_AGAIN}{how}, or give the file the suffix of its format (.h5, .npz, .npy, .mat, "
        ".nwb)", path=path)


def _open_h5(path: Path, kind: str, matlab: bool = False):
    """``(source, closer)`` for an HDF5 file (``matlab``: a MATLAB v7.3 file)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise _not_readable(path, kind, err, "") from err
    try:
        attrs = {k: f.attrs[k] for k in f.attrs}
    except _H5_ERRORS as err:
        f.close()
        raise _not_readable(path, kind, err, "") from err
    return _Source(path, {}, attrs, h5=f, matlab=matlab), f.close


def _open(path: Path):
    """``(source, closer)`` for a file path (checked by :func:`_check_file`)."""
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return _open_h5(path, "an HDF5 file")
    if suffix in (".npz", ".npy"):
        kind = f"a NumPy {suffix} file"
        how = " with np.save" if suffix == ".npy" else " with np.savez"
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY" and magic[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise _not_readable(path, kind, ValueError(
                "it starts with neither the .npy nor the zip signature"), how)
        try:
            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                arrays = {"Y": loaded}
            else:
                with loaded as z:
                    arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise _not_readable(path, kind, err, how) from err
        if suffix == ".npy" and arrays["Y"].size == 0:
            raise RecordingFormatError(f"{path} holds an empty array (shape {arrays['Y'].shape}): "
                                       f"there are no counts to fit; {_SAVE_AGAIN}", path=path)
        return _Source(path, arrays, {}), lambda: None
    import h5py

    if h5py.is_hdf5(path):  # MATLAB v7.3 (HDF5 after a 512-byte MATLAB header)
        with open(path, "rb") as f:
            matlab = f.read(128).startswith(b"MATLAB 7.3")
        return _open_h5(path, "a MATLAB v7.3 (HDF5) file", matlab=matlab)
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        arrays = loadmat(path)
    except (MatReadError, OSError, ValueError, TypeError, EOFError, IndexError, zlib.error,
            NotImplementedError) as err:
        raise _not_readable(path, "a MATLAB .mat file", err, " with MATLAB's save") from err
    return _Source(path, arrays, {}), lambda: None


def _from_source(src: _Source, array, layout, bin_size, angle, angle_rate, angle_start,
                 bin_times) -> Recording:
    Y, used = _counts(src, array, layout)
    bs = bin_size
    if bs is None and "bin_size" in src.attrs:
        bs = src.attrs["bin_size"]
    if bs is None and "bin_size" in src and not src.schema:
        bs = float(src.get("bin_size", "bin size", "bin_size").ravel()[0])
    if bs is None:
        raise MissingBinSizeError(f"{src.path} has no 'bin_size': pass bin_size=<seconds> "
                                  "(--bin-size)", path=src.path)
    bs = float(bs)
    n_time = Y.shape[-1]
    hd = lat = None
    if angle is not None:
        hd = _angle(src, angle, n_time, bs, angle_rate, angle_start)
    elif "head_direction" in src:
        hd = src.get("head_direction", "angle", "angle")
    if "latents" in src and src.schema and used in _DEFAULT_NAMES:
        lat = src.get("latents", "latents")
        if hd is None and lat.shape[-1] == 1:
            hd = lat[..., 0]
    times = None
    if bin_times is not None:
        times = (src.get(bin_times, "bin times", "bin_times") if isinstance(bin_times, str)
                 else np.asarray(bin_times, dtype=np.float64)).reshape(-1)
    cells: dict[str, np.ndarray] = {}
    if src.schema and "cells" in src.h5:
        cells = {k: np.asarray(v) for k, v in src.h5["cells"].items()}
    desc = str(src.attrs.get("description", ""))
    return Recording(Y, bs, hd, lat, cells, desc, str(src.path), bin_times=times)


def _load_nwb(path: Path, bin_size: float | None) -> Recording:
    import h5py

    try:
        h5py.File(path, "r").close()
    except OSError as err:
        raise _not_readable(path, "an NWB (HDF5) file", err, "") from err
    try:
        from pynwb import NWBHDF5IO
    except ImportError as err:
        raise RecordingFormatError(f"reading the NWB file {path} needs pynwb, which is not "
                                   "installed: pip install pynwb", path=path) from err
    if bin_size is None:
        raise MissingBinSizeError(f"{path}: NWB units hold spike times: pass bin_size=<seconds> "
                                  "to bin them", path=path)
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        if nwb.units is None:
            raise RecordingFormatError(f"{path} has no units table (no spike times to bin)",
                                       path=path)
        trains = [np.asarray(nwb.units["spike_times"][i]) for i in range(len(nwb.units))]
    return Recording(bin_spike_times(trains, bin_size), bin_size, source=str(path))


def _from_pynapple(tsgroup: Any, bin_size: float | None) -> Recording:
    if bin_size is None:
        raise MissingBinSizeError("a pynapple TsGroup holds spike times: pass bin_size=<seconds>")
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

    Raises:
        FileNotFoundError: no file at ``source``.
        RecordingFormatError: the file is empty, truncated, not of its suffix's format or holds
            no arrays; an optional reader is missing; a keyword argument is missing or does
            not fit the file (its ``argument`` names which). :class:`MissingBinSizeError` and
            :class:`MissingArrayError` (also a ``KeyError``) are subclasses.

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
    _check_file(path)
    if path.suffix.lower() == ".nwb":
        return _load_nwb(path, bin_size)
    src, close = _open(path)
    try:
        rec = _from_source(src, array, layout, bin_size, angle, angle_rate, angle_start,
                           bin_times)
    except RecordingFormatError:
        raise
    except _H5_ERRORS as err:  # h5py on a damaged or cut-off file
        if src.h5 is None:
            raise
        raise RecordingFormatError(f"{path} cannot be read ({_detail(err)}): the file is "
                                   f"damaged or truncated; {_SAVE_AGAIN}", path=path) from err
    finally:
        close()
    frac = rec.untracked_fraction
    if frac:
        warnings.warn(f"{path.name}: the tracked head direction is NaN (untracked) in "
                      f"{100 * frac:.1f}% of bins; they are left out of alignment and error "
                      "metrics", stacklevel=2)
    return rec
