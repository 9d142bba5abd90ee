"""Synthetic population recordings on manifolds, and their HDF5 schema.

Generators (all deterministic given ``seed``) return a :class:`SyntheticData` with counts or values
``Y`` of shape ``(trials, neurons, time)`` and the ground truth that produced them:

* :func:`head_direction_ring` — head-direction cells on the circle T¹;
* :func:`realistic_head_direction` — an ADn-like population with real-data statistics, turning
  behaviour with pauses and fast turns, and a coarser, noisy tracker (:mod:`mgplvm.head_direction`;
  the default of ``mgplvm simulate``);
* :func:`torus` (Tᵈ), :func:`sphere2` (S²), :func:`sphere3` (S³), :func:`so3` (SO(3)),
  :func:`euclid` (Rᵈ).

Latent trajectory. On compact manifolds the tangent-coordinate velocity ``v_t`` is an
Ornstein–Uhlenbeck process (stationary s.d. ``angular_velocity_sd`` deg/s per coordinate, time
constant ``velocity_timescale`` s, sampled exactly: ``v_{t+1} = a v_t + σ√(1−a²) ξ``,
``a = e^{−Δ/τ}``), integrated by ``g_{t+1} = expmap_coords(g_t, v_t Δ)`` from a uniform start. So
the head direction moves smoothly, with angular velocity s.d. ~100°/s by default. On Rᵈ the latent
is Gaussian-smoothed white noise (stationary, s.d. ``latent_sd``, smoothing width ``timescale`` s).

Tuning. Each neuron ``n`` has a preferred point ``c_n`` (uniform on the manifold), a peak rate
``p_n``, a baseline ``b_n`` and a width ``w_n`` (half-width at half-maximum: degrees of angle — of
rotation on SO(3) — or latent units on Rᵈ), drawn uniformly from the given ranges, and fires at

    r_n(g) = b_n + (p_n − b_n) · exp(−ln 2 · D(g, c_n) / D_w),   D_w = 2(1 − cos w_n)  (Rᵈ: w_n²)

with ``D`` the manifold's chordal squared distance (``"von_mises"``: von Mises on T¹, products of
von Mises bumps on Tᵈ, von Mises–Fisher on spheres, exp(κ (qᵀc)²) on SO(3)). ``"gaussian_bump"``
(tori and Rᵈ) uses the geodesic distance instead: ``exp(−ln 2 · Σᵢ dᵢ² / w²)``. Rates are in Hz.

Noise: ``"poisson"`` (``Y ~ Poisson(r Δ)``), ``"negbin"`` (mean ``r Δ``, variance
``r Δ + (r Δ)²/dispersion``) or ``"gaussian"`` (``Y = r Δ + dispersion · ε``).

HDF5 schema (:func:`save_h5` / :func:`load_h5`; :func:`mgplvm.io.load_recording` reads it too):

====================  ========================================================================
``/Y``                float64 ``(trials, neurons, time)`` counts or values
``/latents``          float64 ``(trials, time, ambient_dim)`` ground-truth latents (optional)
``/rates``            float64 ``(trials, neurons, time)`` noiseless firing rates, Hz (optional)
``/params/<key>``     one dataset per generator parameter; attribute ``type`` is one of
                      ``ndarray, int, float, bool, str, none, tuple, list`` (restores the value)
``/cells/<key>``      per-neuron metadata, first axis = neurons (copies of ``preferred``,
                      ``widths``, ``peak_rates``, ``baselines`` from ``/params``)
attributes            ``bin_size`` (s), ``manifold`` (e.g. ``"T1"``), ``likelihood``,
                      ``generator`` (function name), ``description``, ``schema``
                      (``"mgplvm.synthetic/1"``)
====================  ========================================================================

Run ``python -m mgplvm.datasets [settings.json] [--save out.h5]`` to generate the bundled ring
(``data/synthetic_ring.json``) and print its summary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgplvm.head_direction import realistic_head_direction
from mgplvm.manifolds import Euclid, LatentManifold, Torus, wrap_angle

__all__ = [
    "SyntheticData",
    "head_direction_ring",
    "realistic_head_direction",
    "torus",
    "sphere2",
    "sphere3",
    "so3",
    "euclid",
    "latent_speed",
    "save_h5",
    "load_h5",
    "from_settings",
    "summarize",
    "GENERATORS",
    "DEFAULT_SETTINGS",
]

SCHEMA = "mgplvm.synthetic/1"
NOISES = ("poisson", "negbin", "gaussian")
CELL_KEYS = ("preferred", "widths", "peak_rates", "baselines")
_DEFAULT_DISPERSION = {"poisson": None, "negbin": 5.0, "gaussian": 0.5}
_LN2 = math.log(2.0)
DEFAULT_SETTINGS = Path(__file__).resolve().parents[1] / "data" / "synthetic_ring.json"

Range = float | tuple[float, float]


# ---------------------------------------------------------------------------------- the container
@dataclass(eq=False)
class SyntheticData:
    """A simulated recording and the ground truth behind it.

    Attributes:
        Y: ``(trials, neurons, time)`` float64 counts (Poisson/negbin) or values (Gaussian).
        latents: ``(trials, time, ambient_dim)`` float64 ground-truth latent points.
        rates: ``(trials, neurons, time)`` noiseless firing rates in Hz; ``E[Y] = rates·bin_size``.
        manifold_name: ``"T1"``, ``"T2"``, ``"S2"``, ``"S3"``, ``"SO3"``, ``"R2"``, ...
        bin_size: seconds per time bin.
        likelihood: the noise model, ``"poisson"``, ``"negbin"`` or ``"gaussian"``.
        params: generator arguments plus per-neuron arrays ``preferred (neurons, ambient)``,
            ``widths``, ``peak_rates``, ``baselines`` (``(neurons,)``; ``widths`` is
            ``(neurons, d)`` from :func:`torus` with ``width_per_angle``).
        generator: name of the generating function in this module.
        description: free text.
    """

    Y: np.ndarray
    latents: np.ndarray | None
    rates: np.ndarray | None
    manifold_name: str
    bin_size: float
    likelihood: str
    params: dict[str, Any] = field(default_factory=dict)
    generator: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        self.Y = np.asarray(self.Y, dtype=np.float64)
        if self.Y.ndim != 3:
            raise ValueError(f"Y must be (trials, neurons, time), got shape {self.Y.shape}")
        if self.rates is not None:
            self.rates = np.asarray(self.rates, dtype=np.float64)
            if self.rates.shape != self.Y.shape:
                raise ValueError(f"rates has shape {self.rates.shape}, Y has {self.Y.shape}")
        if self.latents is not None:
            self.latents = np.asarray(self.latents, dtype=np.float64)
            if self.latents.ndim != 3 or self.latents.shape[:2] != (self.n_trials, self.n_time):
                raise ValueError(
                    f"latents has shape {self.latents.shape}, expected (trials, time, ambient) "
                    f"with (trials, time) = {(self.n_trials, self.n_time)}"
                )
        _check_positive(self.bin_size, "bin_size")
        self.bin_size = float(self.bin_size)

    @property
    def n_trials(self) -> int:
        return self.Y.shape[0]

    @property
    def n_neurons(self) -> int:
        return self.Y.shape[1]

    @property
    def n_time(self) -> int:
        return self.Y.shape[2]

    @property
    def manifold(self) -> LatentManifold:
        """The latent manifold, built from ``manifold_name``."""
        return _get_manifold(self.manifold_name)

    @property
    def cells(self) -> dict[str, np.ndarray]:
        """Per-neuron ground truth (first axis = neurons)."""
        return {k: self.params[k] for k in CELL_KEYS if k in self.params}

    def tuning(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """True firing rates (Hz) at points ``x (..., n, ambient)`` -> ``(..., neurons, n)``.

        ``data.tuning(data.latents)`` equals ``data.rates`` (for
        :func:`realistic_head_direction`, whose rates are averaged over each bin's movement, up
        to that averaging).
        """
        p = self.params
        if self.generator == "realistic_head_direction":
            from mgplvm.head_direction import _rates

            x = np.asarray(x, dtype=np.float64)
            flat = _rates(x.reshape(-1, x.shape[-1])[:, 0], p)  # (neurons, n_total)
            n = x.shape[-2]
            return np.moveaxis(flat.reshape(-1, *x.shape[:-2], n), 0, -2)
        return _tuning_rates(
            self.manifold,
            p["tuning"],
            torch.as_tensor(np.asarray(x, dtype=np.float64)),
            p["preferred"],
            p["widths"],
            p["peak_rates"],
            p["baselines"],
        )

    def to_recording(self):
        """The data as a :class:`mgplvm.io.Recording` (what a real recording would load as)."""
        from mgplvm.io import Recording

        hd = self.latents[..., 0] if self.manifold_name == "T1" else None
        if "tracker_angles" in self.params:  # what a tracker delivers, resampled to the bins
            from mgplvm.io import resample_angle

            hd = resample_angle(self.params["tracker_times"], self.params["tracker_angles"],
                                self.bin_size, self.n_time)[None]
        return Recording(
            self.Y,
            self.bin_size,
            head_direction=hd,
            latents=self.latents,
            cells=dict(self.cells),
            description=self.description,
            source=f"mgplvm.datasets.{self.generator}" if self.generator else "",
        )


# ----------------------------------------------------------------------------------- validation
def _check_positive(value: Any, name: str) -> None:
    if not (isinstance(value, (int, float, np.number)) and np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_range(
    value: Range, name: str, lower: float = 0.0, upper: float = math.inf, strict: bool = False
) -> tuple[float, float]:
    """A number or ``(lo, hi)`` with ``lower <= lo <= hi <= upper`` (``lower < lo`` if strict)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape not in ((), (2,)):
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    lo, hi = (float(arr), float(arr)) if arr.ndim == 0 else (float(arr[0]), float(arr[1]))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name} range is reversed: low {lo} > high {hi}")
    if lo < lower or (strict and lo == lower) or hi > upper:
        bound = f"{'>' if strict else '>='} {lower}"
        bound += f" and <= {upper}" if upper < math.inf else ""
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return lo, hi


def _check_noise(noise: str, dispersion: float | None) -> float | None:
    if noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; use one of {NOISES}")
    if dispersion is None:
        return _DEFAULT_DISPERSION[noise]
    if noise == "poisson":
        raise ValueError("dispersion is only used with noise='negbin' or 'gaussian'")
    _check_positive(dispersion, "dispersion")
    return float(dispersion)


# ------------------------------------------------------------------------------------ manifolds
def _get_manifold(name: str) -> LatentManifold:
    try:
        from mgplvm.manifolds import get_manifold
    except ImportError:  # before Sphere/SO3/Product land: tori and Euclidean spaces only
        if name[:1] in "TR" and name[1:].isdigit():
            return (Torus if name[0] == "T" else Euclid)(int(name[1:]))
        raise ValueError(f"unknown manifold {name!r}") from None
    return get_manifold(name)


def _angle_per_coord(manifold: LatentManifold) -> float:
    """Geodesic angle travelled per unit of tangent coordinate (2 on SO(3) with φ = 2‖v‖)."""
    eps = 1e-4
    v = torch.zeros(manifold.dim, dtype=torch.float64)
    v[0] = eps
    one = manifold.identity(dtype=torch.float64)
    d = manifold.chordal_sqdist(one, manifold.exp0(v))
    return float(2 * torch.asin(d.sqrt() / 2)) / eps


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


# ------------------------------------------------------------------------------------- pieces
def _uniform(rng: np.random.Generator, lohi: tuple[float, float], n: int | tuple[int, ...]
             ) -> np.ndarray:
    return rng.uniform(lohi[0], lohi[1], size=n)


def _ou(rng, shape: tuple[int, ...], sd: float, tau: float, dt: float) -> np.ndarray:
    """Stationary OU samples along axis 1 of ``shape`` ``(trials, time, dim)``, s.d. ``sd``."""
    from scipy.signal import lfilter

    a = math.exp(-dt / tau)
    c = math.sqrt(1 - a * a)
    e = rng.standard_normal(shape)
    e[:, 0] /= c  # first sample from the stationary distribution
    return sd * lfilter([c], [1.0, -a], e, axis=1)


def _compact_walk(
    manifold, rng, trials, n_time, dt, angular_velocity_sd, velocity_timescale
) -> np.ndarray:
    """OU tangent velocity integrated with ``expmap_coords`` -> ``(trials, time, ambient)``."""
    sd = math.radians(angular_velocity_sd) / _angle_per_coord(manifold)
    v = _ou(rng, (trials, n_time, manifold.dim), sd, velocity_timescale, dt)
    v = torch.from_numpy(v * dt)
    g = manifold.random(trials, dtype=torch.float64, generator=_torch_generator(rng))
    out = torch.empty(trials, n_time, manifold.ambient_dim, dtype=torch.float64)
    out[:, 0] = g
    for t in range(1, n_time):
        g = manifold.expmap_coords(g, v[:, t - 1])
        out[:, t] = g
    return manifold.projx(out).numpy()


def _smooth_gaussian(rng, trials, n_time, d, dt, sd, timescale) -> np.ndarray:
    """Stationary Gaussian-smoothed white noise ``(trials, time, d)`` with marginal s.d. ``sd``."""
    from scipy.signal import fftconvolve

    s = timescale / dt
    half = int(math.ceil(4 * s))
    w = np.exp(-0.5 * (np.arange(-half, half + 1) / s) ** 2)
    w /= np.linalg.norm(w)
    e = rng.standard_normal((trials, n_time + 2 * half, d))
    return sd * fftconvolve(e, w[None, :, None], mode="valid", axes=1)


def _tuning_rates(manifold, tuning, x, preferred, widths, peak_rates, baselines) -> np.ndarray:
    """Rates (Hz) ``(..., neurons, n)`` at ``x (..., n, ambient)``; see the module docstring.

    ``widths``: ``(neurons,)``, or ``(neurons, d)`` on a torus Tᵈ (a width per angle: the bump is
    the product over angles of one-angle bumps, each with its own width)."""
    pref = torch.as_tensor(np.asarray(preferred, dtype=np.float64))
    w = torch.as_tensor(np.asarray(widths, dtype=np.float64))
    w = w.unsqueeze(-2) if w.ndim == 2 else w.unsqueeze(-1)  # (N, 1[, d])
    x = x.unsqueeze(-3)  # (..., 1, n, amb)
    pref = pref.unsqueeze(-2)  # (N, 1, amb)
    euclidean = isinstance(manifold, Euclid)
    if w.ndim == 3:  # per angle (torus): (N, 1, d) against angle differences (..., N, n, d)
        diff = wrap_angle(x - pref)
        if tuning == "gaussian_bump":
            z = (diff / torch.deg2rad(w)).pow(2).sum(-1)
        else:
            z = ((1 - torch.cos(diff)) / (1 - torch.cos(torch.deg2rad(w)))).sum(-1)
    elif tuning == "gaussian_bump":
        diff = x - pref if euclidean else wrap_angle(x - pref)
        z = diff.pow(2).sum(-1) / (w if euclidean else torch.deg2rad(w)).pow(2)
    else:
        dw = w.pow(2) if euclidean else 2 - 2 * torch.cos(torch.deg2rad(w))
        z = manifold.chordal_sqdist(x, pref) / dw
    bump = torch.exp(-_LN2 * z).numpy()
    b = np.asarray(baselines, dtype=np.float64)[:, None]
    p = np.asarray(peak_rates, dtype=np.float64)[:, None]
    return b + (p - b) * bump


def _add_noise(rng, mean: np.ndarray, noise: str, dispersion: float | None) -> np.ndarray:
    if noise == "poisson":
        return rng.poisson(mean).astype(np.float64)
    if noise == "negbin":
        return rng.negative_binomial(dispersion, dispersion / (dispersion + mean)).astype(
            np.float64
        )
    return mean + dispersion * rng.standard_normal(mean.shape)


def _plain(value: Any) -> Any:
    """Generator arguments as stored in ``params``: ranges as float tuples, numpy scalars as
    Python scalars (so that the HDF5 round trip restores the same types)."""
    if isinstance(value, np.generic):
        return value.item()
    if not isinstance(value, str) and np.ndim(value) == 1:
        return tuple(float(v) for v in value)
    return value


# ----------------------------------------------------------------------------------- the engine
_TUNINGS = {"T": ("von_mises", "gaussian_bump"), "R": ("gaussian_bump",)}


def _simulate(
    generator: str,
    manifold_name: str,
    *,
    n_neurons: int,
    n_time: int,
    bin_size: float,
    trials: int,
    tuning: str,
    peak_rate: Range,
    baseline: Range,
    width: Range,
    noise: str,
    dispersion: float | None,
    seed: int | None,
    walk: dict[str, float],
    description: str,
    width_per_angle: bool = False,
) -> SyntheticData:
    """Validate, draw the trajectory, the cells, the rates and the noise — in that order."""
    settings = {
        k: _plain(v)
        for k, v in locals().items()
        if k not in ("generator", "manifold_name", "walk", "description")
        and not (k == "width_per_angle" and not v)  # recorded only when used
    }
    n_neurons = _check_count(n_neurons, "n_neurons")
    n_time = _check_count(n_time, "n_time", 2)
    trials = _check_count(trials, "trials")
    _check_positive(bin_size, "bin_size")
    manifold = _get_manifold(manifold_name)
    if width_per_angle and not manifold_name.startswith("T"):
        raise ValueError(f"width_per_angle needs a torus, not {manifold_name}")
    euclidean = isinstance(manifold, Euclid)
    allowed = _TUNINGS.get(manifold_name[0], ("von_mises",))
    if tuning not in allowed:
        raise ValueError(f"unknown tuning {tuning!r} on {manifold_name}; use one of {allowed}")
    peak = _check_range(peak_rate, "peak_rate", strict=True)
    base = _check_range(baseline, "baseline")
    if base[1] > peak[0]:
        raise ValueError(
            f"baseline range {base} must lie below the peak_rate range {peak} "
            "(every neuron's baseline below its peak)"
        )
    widths = _check_range(width, "width", strict=True, upper=math.inf if euclidean else 180.0)
    dispersion = _check_noise(noise, dispersion)
    for key, value in walk.items():
        if key == "angular_velocity_sd":  # 0 is allowed: a still animal
            _check_range(value, key)
        else:
            _check_positive(value, key)
    if seed is not None:
        _check_count(seed, "seed", 0)

    rng = np.random.default_rng(seed)
    if euclidean:
        latents = _smooth_gaussian(
            rng, trials, n_time, manifold.dim, bin_size, walk["latent_sd"], walk["timescale"]
        )
        preferred = walk["latent_sd"] * rng.standard_normal((n_neurons, manifold.dim))
    else:
        latents = _compact_walk(manifold, rng, trials, n_time, bin_size, **walk)
        preferred = manifold.random(
            n_neurons, dtype=torch.float64, generator=_torch_generator(rng)
        ).numpy()
    cells = {
        "preferred": preferred,
        # per angle (tori): (neurons, d), each angle's width drawn independently
        "widths": _uniform(rng, widths, (n_neurons, manifold.dim) if width_per_angle
                           else n_neurons),
        "peak_rates": _uniform(rng, peak, n_neurons),
        "baselines": _uniform(rng, base, n_neurons),
    }
    rates = _tuning_rates(manifold, tuning, torch.from_numpy(latents), **cells)
    Y = _add_noise(rng, rates * bin_size, noise, dispersion)

    params = {**settings, **walk, "dispersion": dispersion, **cells}
    return SyntheticData(
        Y=Y,
        latents=latents,
        rates=rates,
        manifold_name=manifold_name,
        bin_size=bin_size,
        likelihood=noise,
        params=params,
        generator=generator,
        description=description
        or f"Simulated data (mgplvm.datasets.{generator}): {n_neurons} neurons on "
        f"{manifold_name}, {tuning} tuning, {noise} noise, seed {seed}",
    )


# ----------------------------------------------------------------------------------- generators
def head_direction_ring(
    n_neurons: int = 50,
    n_time: int = 500,
    bin_size: float = 0.025,
    trials: int = 1,
    tuning: str = "von_mises",
    peak_rate: Range = (10.0, 60.0),
    baseline: Range = (0.1, 2.0),
    width: Range = (30.0, 60.0),
    noise: str = "poisson",
    dispersion: float | None = None,
    angular_velocity_sd: float = 100.0,
    velocity_timescale: float = 0.3,
    seed: int | None = 0,
    description: str = "",
) -> SyntheticData:
    """Head-direction cells on the ring T¹.

    Head direction: OU angular velocity (s.d. ``angular_velocity_sd`` deg/s, time constant
    ``velocity_timescale`` s) integrated and wrapped to [-π, π). Tuning ``"von_mises"``
    (``exp(κ(cos(θ−φ_n) − 1))``, κ = ln 2/(1 − cos w)) or ``"gaussian_bump"`` in the wrapped
    angle; ``width`` = half-width at half-maximum in degrees; rates ``b_n + (p_n − b_n)·bump``
    in Hz with ``p_n ~ U(peak_rate)``, ``b_n ~ U(baseline)``. ``dispersion``: negbin shape
    (default 5) or Gaussian noise s.d. in counts (default 0.5).

    Returns ``Y (trials, n_neurons, n_time)``, ``latents (trials, n_time, 1)``.
    """
    return _compact("head_direction_ring", "T1", **locals())


def torus(
    d: int = 2,
    n_neurons: int = 100,
    n_time: int = 500,
    bin_size: float = 0.025,
    trials: int = 1,
    tuning: str = "von_mises",
    peak_rate: Range = (10.0, 60.0),
    baseline: Range = (0.1, 2.0),
    width: Range = (30.0, 60.0),
    noise: str = "poisson",
    dispersion: float | None = None,
    angular_velocity_sd: float = 100.0,
    velocity_timescale: float = 0.3,
    seed: int | None = 0,
    description: str = "",
    width_per_angle: bool = False,
) -> SyntheticData:
    """Cells on the torus Tᵈ tuned to products of von Mises bumps (one per angle).

    Arguments as :func:`head_direction_ring`; every angle's velocity is an independent OU
    process. ``width_per_angle``: each neuron draws an independent width from ``width`` for each
    angle (``widths (neurons, d)``; tuning elongated along one angle by a ratio that differs
    between neurons), instead of one width for all angles. Returns ``latents (trials, n_time, d)``.
    """
    kwargs = dict(locals())
    d = _check_count(kwargs.pop("d"), "d")
    return _compact("torus", f"T{d}", **kwargs)


def _compact(generator: str, name: str, **kwargs) -> SyntheticData:
    walk = {k: kwargs.pop(k) for k in ("angular_velocity_sd", "velocity_timescale")}
    return _simulate(generator, name, walk=walk, **kwargs)


def sphere2(
    n_neurons: int = 100,
    n_time: int = 500,
    bin_size: float = 0.025,
    trials: int = 1,
    tuning: str = "von_mises",
    peak_rate: Range = (10.0, 60.0),
    baseline: Range = (0.1, 2.0),
    width: Range = (30.0, 60.0),
    noise: str = "poisson",
    dispersion: float | None = None,
    angular_velocity_sd: float = 100.0,
    velocity_timescale: float = 0.3,
    seed: int | None = 0,
    description: str = "",
) -> SyntheticData:
    """Cells on the sphere S² (unit vectors in R³) with von Mises–Fisher tuning
    ``exp(κ(xᵀc_n − 1))``. Arguments as :func:`head_direction_ring`; ``latents (..., 3)``."""
    return _compact("sphere2", "S2", **locals())


def sphere3(
    n_neurons: int = 100,
    n_time: int = 500,
    bin_size: float = 0.025,
    trials: int = 1,
    tuning: str = "von_mises",
    peak_rate: Range = (10.0, 60.0),
    baseline: Range = (0.1, 2.0),
    width: Range = (30.0, 60.0),
    noise: str = "poisson",
    dispersion: float | None = None,
    angular_velocity_sd: float = 100.0,
    velocity_timescale: float = 0.3,
    seed: int | None = 0,
    description: str = "",
) -> SyntheticData:
    """Cells on S³ (unit quaternions) with von Mises–Fisher tuning ``exp(κ(qᵀc_n − 1))``.
    Arguments as :func:`head_direction_ring`; ``latents (..., 4)``."""
    return _compact("sphere3", "S3", **locals())


def so3(
    n_neurons: int = 100,
    n_time: int = 500,
    bin_size: float = 0.025,
    trials: int = 1,
    tuning: str = "von_mises",
    peak_rate: Range = (10.0, 60.0),
    baseline: Range = (0.1, 2.0),
    width: Range = (30.0, 60.0),
    noise: str = "poisson",
    dispersion: float | None = None,
    angular_velocity_sd: float = 100.0,
    velocity_timescale: float = 0.3,
    seed: int | None = 0,
    description: str = "",
) -> SyntheticData:
    """Cells on SO(3) (unit quaternions, q ≡ −q) tuned as ``exp(κ((qᵀc_n)² − 1))``.

    ``width`` is a rotation angle (degrees) and ``angular_velocity_sd`` the s.d. of the angular
    velocity about each body axis. Arguments as :func:`head_direction_ring`; ``latents (..., 4)``.
    """
    return _compact("so3", "SO3", **locals())


def euclid(
    d: int = 2,
    n_neurons: int = 100,
    n_time: int = 500,
    bin_size: float = 0.025,
    trials: int = 1,
    tuning: str = "gaussian_bump",
    peak_rate: Range = (10.0, 60.0),
    baseline: Range = (0.1, 2.0),
    width: Range = (0.5, 1.0),
    noise: str = "poisson",
    dispersion: float | None = None,
    latent_sd: float = 1.0,
    timescale: float = 0.5,
    seed: int | None = 0,
    description: str = "",
) -> SyntheticData:
    """Cells in Rᵈ with Gaussian-bump place fields; ``width`` (HWHM) in latent units.

    The latent is white noise smoothed by a Gaussian of s.d. ``timescale`` seconds, scaled to a
    stationary s.d. ``latent_sd`` per dimension; preferred points ``~ N(0, latent_sd² I)``.
    Returns ``latents (trials, n_time, d)``.
    """
    kwargs = dict(locals())
    d = _check_count(kwargs.pop("d"), "d")
    walk = {k: kwargs.pop(k) for k in ("latent_sd", "timescale")}
    return _simulate("euclid", f"R{d}", walk=walk, **kwargs)


GENERATORS: dict[str, Callable[..., SyntheticData]] = {
    "realistic_head_direction": realistic_head_direction,
    "head_direction_ring": head_direction_ring,
    "torus": torus,
    "sphere2": sphere2,
    "sphere3": sphere3,
    "so3": so3,
    "euclid": euclid,
}


# ------------------------------------------------------------------------------------ analysis
def latent_speed(data: SyntheticData) -> np.ndarray:
    """Speed of the latent between consecutive bins, ``(trials, time − 1)``.

    Compact manifolds: geodesic angle ``2 arcsin(√D/2)`` per second in **degrees/s** (exact on
    T¹, spheres and SO(3), small-step exact on Tᵈ); Rᵈ: ``√D`` per second in latent units.
    """
    if data.latents is None:
        raise ValueError("data has no latents")
    manifold = data.manifold
    x = torch.from_numpy(data.latents)
    d = manifold.chordal_sqdist(x[:, 1:], x[:, :-1]).clamp_min(0).sqrt()
    if isinstance(manifold, Euclid):
        return d.numpy() / data.bin_size
    return np.degrees(2 * torch.asin((d / 2).clamp_max(1)).numpy()) / data.bin_size


def summarize(data: SyntheticData) -> str:
    """Human-readable summary: shape, rates per neuron, silent neurons, latent speed."""
    lines = [
        f"{data.generator or 'synthetic'} on {data.manifold_name}: {data.likelihood} "
        f"observations (simulated)",
        data.to_recording().summary(),
    ]
    if data.rates is not None:
        true = data.rates.mean(axis=(0, 2))
        lines.append(
            f"true rates: {data.rates.min():.2f}-{data.rates.max():.2f} Hz; time-averaged per "
            f"neuron {true.min():.2f}-{true.max():.2f} Hz"
        )
    if data.latents is not None:
        speed = latent_speed(data)
        unit = "units/s" if data.manifold_name.startswith("R") else "deg/s"
        lines.append(
            f"latent speed: mean {speed.mean():.1f} {unit}, median {np.median(speed):.1f}, "
            f"95th percentile {np.percentile(speed, 95):.1f}"
        )
        if data.manifold_name == "T1":
            theta = data.latents[..., 0]
            omega = np.degrees(np.diff(np.unwrap(theta, axis=-1), axis=-1)) / data.bin_size
            occupied = np.histogram(theta, bins=36, range=(-np.pi, np.pi))[0] > 0
            lines.append(
                f"angular velocity s.d. {omega.std():.1f} deg/s; "
                f"{occupied.mean():.0%} of 10-degree sectors visited"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- HDF5
def _write_value(group, key: str, value: Any) -> None:
    import h5py

    if isinstance(value, np.ndarray):
        kind, stored = "ndarray", value
    elif value is None:
        kind, stored = "none", h5py.Empty("f8")
    elif isinstance(value, (bool, np.bool_)):
        kind, stored = "bool", np.bool_(value)
    elif isinstance(value, (int, np.integer)):
        kind, stored = "int", np.int64(value)
    elif isinstance(value, (float, np.floating)):
        kind, stored = "float", np.float64(value)
    elif isinstance(value, str):
        kind, stored = "str", value
    elif isinstance(value, (tuple, list)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        kind, stored = type(value).__name__, np.asarray(value)
    else:
        raise TypeError(f"cannot store parameter {key!r} of type {type(value).__name__} in HDF5")
    ds = group.create_dataset(key, data=stored)
    ds.attrs["type"] = kind


def _read_value(ds) -> Any:
    kind = ds.attrs["type"]
    if kind == "none":
        return None
    if kind == "str":
        return ds.asstr()[()]
    value = ds[()]
    if kind == "ndarray":
        return np.asarray(value)
    if kind in ("tuple", "list"):
        items = value.tolist()
        return tuple(items) if kind == "tuple" else items
    return {"bool": bool, "int": int, "float": float}[kind](value)


def save_h5(data: SyntheticData, path: str | Path, compression: str | None = "gzip") -> None:
    """Write ``data`` to ``path`` in the schema of the module docstring (overwrites).

    ``compression`` applies to the large arrays (``Y``, ``latents``, ``rates``); it is lossless.
    """
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["schema"] = SCHEMA
        f.attrs["bin_size"] = data.bin_size
        f.attrs["manifold"] = data.manifold_name
        f.attrs["likelihood"] = data.likelihood
        f.attrs["generator"] = data.generator
        f.attrs["description"] = data.description
        f.create_dataset("Y", data=data.Y, compression=compression)
        if data.latents is not None:
            f.create_dataset("latents", data=data.latents, compression=compression)
        if data.rates is not None:
            f.create_dataset("rates", data=data.rates, compression=compression)
        params = f.create_group("params")
        for key, value in data.params.items():
            _write_value(params, key, value)
        cells = f.create_group("cells")
        for key, value in data.cells.items():
            cells.create_dataset(key, data=value)


def load_h5(path: str | Path) -> SyntheticData:
    """Read a file written by :func:`save_h5` (exact round trip)."""
    import h5py

    with h5py.File(path, "r") as f:
        if f.attrs.get("schema") != SCHEMA:
            raise ValueError(
                f"{path} is not an mgplvm synthetic-data file (schema attribute "
                f"{f.attrs.get('schema')!r}, expected {SCHEMA!r}); use mgplvm.io.load_recording"
            )
        return SyntheticData(
            Y=f["Y"][()],
            latents=f["latents"][()] if "latents" in f else None,
            rates=f["rates"][()] if "rates" in f else None,
            manifold_name=str(f.attrs["manifold"]),
            bin_size=float(f.attrs["bin_size"]),
            likelihood=str(f.attrs["likelihood"]),
            params={k: _read_value(v) for k, v in f["params"].items()},
            generator=str(f.attrs["generator"]),
            description=str(f.attrs["description"]),
        )


# ------------------------------------------------------------------------------------ settings
def from_settings(path: str | Path = DEFAULT_SETTINGS) -> SyntheticData:
    """Generate data from a JSON settings file.

    Format: ``{"generator": "<name in GENERATORS>", "description": "...", "params": {...}}``
    where ``params`` are the generator's keyword arguments (lists become ``(low, high)`` ranges).
    """
    settings = json.loads(Path(path).read_text())
    name = settings.get("generator")
    if name not in GENERATORS:
        raise ValueError(f"{path}: unknown generator {name!r}; use one of {sorted(GENERATORS)}")
    kwargs = {
        k: tuple(v) if isinstance(v, list) else v for k, v in settings.get("params", {}).items()
    }
    if "description" in settings:
        kwargs.setdefault("description", settings["description"])
    try:
        return GENERATORS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"{path}: bad parameters for {name}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m mgplvm.datasets [settings.json] [--save out.h5]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mgplvm.datasets", description="Generate a synthetic recording."
    )
    parser.add_argument("settings", nargs="?", default=str(DEFAULT_SETTINGS))
    parser.add_argument("--save", metavar="OUT.h5", help="write the data in mgplvm's HDF5 schema")
    args = parser.parse_args(argv)
    data = from_settings(args.settings)
    print(summarize(data))
    if args.save:
        save_h5(data, args.save)
        print(f"saved to {args.save}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
