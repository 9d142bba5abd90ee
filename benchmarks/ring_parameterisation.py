"""How far from the tracked angle does each cue put the ring's parameterisation?

An unsupervised ring fit cannot tell the tracked angle from a smooth reparameterisation of it:
the tuning curves bend along. The EM fit (:mod:`mgplvm.em`) picks the coordinates in which two
cues are uniform around the ring: the head's speed and the tuning curves' widths. This script
measures, in the **tracked** (or, simulated, true) coordinates where the answer is known, how far
the coordinates that make each cue uniform lie from them:

* **speed**: ``log φ' = −log s``, with ``s(θ)`` the r.m.s. step of the angle leaving ``θ``;
* **width**: ``log φ' = −log w``, with ``w(θ)`` the half-width at half-maximum of the empirical
  tuning curves of the cells preferring ``θ``;
* **average**: ``log φ' = −½ (log s + log w)`` (what the fit uses);

each a 3-harmonic weighted least-squares fit (by occupancy; by the square root of each cell's
modulation). Printed: the r.m.s. and largest displacement ``|φ(θ) − θ|`` (degrees, after the best
rotation) of each. The smaller, the closer an unsupervised fit can come to the tracked angle.

Run ``python benchmarks/ring_parameterisation.py [PATH]`` (a real recording read as by
``benchmarks/real_head_direction.py``; without a path, three sessions of
:func:`mgplvm.datasets.realistic_head_direction`, seeds 0–2, whose true angle is used).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_head_direction import empirical_tuning, load, wrap  # noqa: E402

K = 360
GRID = -np.pi + 2 * np.pi * np.arange(K) / K
HARMONICS = 3


def _design(a: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(a)] + [f(h * a) for h in range(1, HARMONICS + 1)
                                                for f in (np.cos, np.sin)])


def _fit(x, y, w) -> np.ndarray:
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(_design(x) * sw[:, None], y * sw, rcond=None)
    return _design(GRID) @ coef - coef[0]


def log_speed(angle: np.ndarray) -> np.ndarray:
    ok = np.isfinite(angle[:-1]) & np.isfinite(angle[1:])
    step = wrap(np.diff(angle))[ok]
    idx = np.round((wrap(angle[:-1][ok]) + np.pi) / (2 * np.pi) * K).astype(int) % K
    occ = np.bincount(idx, minlength=K).astype(float)
    ms = np.bincount(idx, step**2, K) / np.maximum(occ, 1)
    keep = (occ > 0) & (ms > 0)
    return _fit(GRID[keep], 0.5 * np.log(ms[keep]), occ[keep])


def log_width(rates: np.ndarray) -> np.ndarray:
    pref = GRID[rates.argmax(1)]
    trough, peak = rates.min(1), rates.max(1)
    width = np.maximum((rates > (trough + (peak - trough) / 2)[:, None]).sum(1), 1) * np.pi / K
    return _fit(pref, np.log(width), np.sqrt(np.maximum(peak - trough, 0)) + 1e-9)


def displacement(log_dphi: np.ndarray) -> tuple[float, float]:
    """r.m.s. and largest |φ(θ) − θ| in degrees (after the best rotation) of the circle map
    with ``log φ'`` at the grid."""
    d = np.exp(log_dphi)
    d = d / d.mean()
    phi = np.cumsum(d) * 2 * np.pi / K
    off = phi - (GRID - GRID[0])
    off -= np.arctan2(np.sin(off).mean(), np.cos(off).mean())
    return float(np.degrees(np.sqrt(np.mean(off**2)))), float(np.degrees(np.abs(off).max()))


def report(name: str, angle: np.ndarray, rates: np.ndarray) -> None:
    s, w = log_speed(angle), log_width(rates)
    cells = [f"{label} {displacement(v)[0]:.1f} / {displacement(v)[1]:.1f}"
             for label, v in (("speed", -s), ("width", -w), ("average", -0.5 * (s + w)))]
    print(f"{name}: " + " | ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", default=None)
    parser.add_argument("--array")
    parser.add_argument("--angle")
    parser.add_argument("--layout", choices=["neurons,time", "time,neurons"])
    parser.add_argument("--bin-size", type=float)
    args = parser.parse_args(argv)
    print("distortion of the uniform-cue coordinates from the tracked / true angle, "
          "r.m.s. / largest (degrees)")
    if args.path is not None:
        args.sim_minutes, args.seed = 30.0, 0
        rec, _, desc = load(args.path, args)
        angle = rec.head_direction[0]
        rates = empirical_tuning(rec.Y[0], angle, rec.bin_size, K)
        report(desc, angle, rates)
        return 0
    from mgplvm.datasets import realistic_head_direction

    for seed in range(3):
        data = realistic_head_direction(seed=seed)
        truth = data.latents[0, :, 0]
        report(f"realistic_head_direction seed {seed} (true angle)", truth,
               data.tuning(GRID[:, None]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
