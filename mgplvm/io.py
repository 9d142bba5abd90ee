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

Arrays of 2 dimensions are read as ``(neurons, time)`` (one trial); pass ``layout="time,neurons"``
when time runs along the first axis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Recording", "load_recording", "bin_spike_times"]

_DEFAULT_NAMES = ("Y", "counts", "spikes", "spike_counts", "data")


@dataclass
class Recording:
    """A binned recording.

    Attributes:
        Y: counts or activity, ``(trials, neurons, time)`` float64.
        bin_size: seconds per time bin.
        head_direction: tracked head direction in radians ``(trials, time)``, if available.
        latents: ground-truth latents ``(trials, time, ambient)`` for simulated data, if available.
        cells: per-cell metadata, each entry an array of length ``neurons``.
        description: free text (for simulated data: says that it is simulated).
        source: where it was read from.
    """

    Y: np.ndarray
    bin_size: float
    head_direction: np.ndarray | None = None
    latents: np.ndarray | None = None
    cells: dict[str, np.ndarray] = field(default_factory=dict)
    description: str = ""
    source: str = ""

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
            self.head_direction = hd

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
        if self.head_direction is not None:
            lines.append("tracked head direction: yes")
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


def _load_h5(path: Path, array: str | None, layout: str | None, bin_size: float | None):
    import h5py

    with h5py.File(path, "r") as f:
        names = [array] if array else [n for n in _DEFAULT_NAMES if n in f]
        if not names or names[0] not in f:
            available: list[str] = []
            f.visititems(
                lambda n, o: available.append(n) if isinstance(o, h5py.Dataset) else None
            )
            wanted = f"array {array!r}" if array else f"any of {list(_DEFAULT_NAMES)}"
            raise KeyError(
                f"{path} has no {wanted}; datasets in the file: {available}. "
                "Pass array='<name>' to choose one."
            )
        Y = _as_trials_neurons_time(np.asarray(f[names[0]], dtype=np.float64), names[0], layout)
        bs = bin_size if bin_size is not None else f.attrs.get("bin_size", None)
        if bs is None:
            raise ValueError(f"{path} has no 'bin_size' attribute: pass bin_size=<seconds>")
        hd = np.asarray(f["head_direction"]) if "head_direction" in f else None
        lat = np.asarray(f["latents"]) if "latents" in f else None
        cells = {k: np.asarray(v) for k, v in f["cells"].items()} if "cells" in f else {}
        desc = str(f.attrs.get("description", ""))
    if hd is None and lat is not None and lat.shape[-1] == 1:
        hd = lat[..., 0]
    return Recording(Y, float(bs), hd, lat, cells, desc, str(path))


def _load_arrays(
    arrays: dict[str, Any], path: Path, array: str | None, layout, bin_size
) -> Recording:
    names = [array] if array else [n for n in _DEFAULT_NAMES if n in arrays]
    if not names or names[0] not in arrays:
        keys = sorted(k for k in arrays if not k.startswith("__"))
        raise KeyError(
            f"{path} has no array {array or list(_DEFAULT_NAMES)}; arrays in the file: {keys}. "
            "Pass array='<name>'."
        )
    Y = _as_trials_neurons_time(np.asarray(arrays[names[0]], dtype=np.float64), names[0], layout)
    bs = bin_size
    if bs is None and "bin_size" in arrays:
        bs = float(np.asarray(arrays["bin_size"]).ravel()[0])
    if bs is None:
        raise ValueError(f"{path} has no 'bin_size' entry: pass bin_size=<seconds>")
    hd = arrays.get("head_direction")
    hd = None if hd is None else np.asarray(hd, dtype=np.float64)
    return Recording(Y, float(bs), hd, None, {}, "", str(path))


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
) -> Recording:
    """Load a recording from a file path or a pynapple ``TsGroup``.

    Args:
        source: path to ``.h5/.hdf5/.npz/.npy/.mat/.nwb``, or a pynapple ``TsGroup``.
        array: name of the count array inside the file (default: the first of
            ``Y, counts, spikes, spike_counts, data`` present).
        bin_size: seconds per bin (overrides the file's; required for spike-time sources).
        layout: for 2-D arrays, ``"neurons,time"`` (default) or ``"time,neurons"``.
    """
    if not isinstance(source, (str, os.PathLike)):
        if type(source).__name__ == "TsGroup":
            return _from_pynapple(source, bin_size)
        raise TypeError(f"cannot load a recording from a {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such recording file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return _load_h5(path, array, layout, bin_size)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return _load_arrays({k: z[k] for k in z.files}, path, array, layout, bin_size)
    if suffix == ".npy":
        return _load_arrays({"Y": np.load(path, allow_pickle=False)}, path, "Y", layout, bin_size)
    if suffix == ".mat":
        from scipy.io import loadmat

        return _load_arrays(loadmat(path), path, array, layout, bin_size)
    if suffix == ".nwb":
        return _load_nwb(path, bin_size)
    raise ValueError(
        f"unsupported file type {suffix!r} for {path}: use .h5/.hdf5, .npz, .npy, .mat or .nwb"
    )
