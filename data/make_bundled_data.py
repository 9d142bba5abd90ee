"""Rebuild the recordings bundled in data/ (deterministic; run from the repository root).

    python data/make_bundled_data.py                      # all files
    python data/make_bundled_data.py sphere_example.h5    # only the named file(s)

The bundled recordings are SIMULATED with mgplvm's own generator (no real recording can be
downloaded here). ``head_direction.h5`` mimics an anterodorsal-thalamus head-direction population:
32 cells, peak rates 5-60 Hz, baselines 0.1-2 Hz, tuning half-widths 30-60 deg, 25 ms bins,
4 minutes of a smooth head-turning trajectory (OU angular velocity, s.d. 100 deg/s, 0.3 s time
constant). ``/head_direction`` holds the "tracked" head direction (the true latent), as a tracking
system would provide it. ``torus_example.h5`` (T^2, 60 cells, 2 minutes) and ``sphere_example.h5``
(S^2, 30 cells, 1000 bins = 25 s) are small examples for the other manifolds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py

from mgplvm import datasets

HERE = Path(__file__).resolve().parent
NOTE = "SIMULATED with mgplvm.datasets (not a real recording). "


def head_direction(path: Path) -> None:
    hd = datasets.head_direction_ring(
        n_neurons=32, n_time=9600, bin_size=0.025, peak_rate=(5.0, 60.0), baseline=(0.1, 2.0),
        width=(30.0, 60.0), seed=2026,
        description=NOTE + "Anterodorsal-thalamus-like head-direction population: 32 cells, "
        "25 ms bins, 4 minutes.",
    )
    datasets.save_h5(hd, path)
    with h5py.File(path, "a") as f:
        f.create_dataset("head_direction", data=hd.latents[..., 0], compression="gzip")
        f["head_direction"].attrs["units"] = "rad"
        f["head_direction"].attrs["note"] = "tracked head direction, (trials, time)"


def torus_example(path: Path) -> None:
    tor = datasets.torus(
        d=2, n_neurons=60, n_time=4800, seed=2027,
        description=NOTE + "Two independent angles (T^2), 60 cells, 25 ms bins, 2 minutes.",
    )
    datasets.save_h5(tor, path)


def sphere_example(path: Path) -> None:
    sph = datasets.sphere2(
        n_neurons=30, n_time=1000, seed=2028,
        description=NOTE + "Latent on the sphere S^2, 30 cells, 25 ms bins, 1000 bins (25 s).",
    )
    datasets.save_h5(sph, path)


BUILDERS = {
    "head_direction.h5": head_direction,
    "torus_example.h5": torus_example,
    "sphere_example.h5": sphere_example,
}


def main(names: list[str] | None = None) -> None:
    names = names or list(BUILDERS)
    unknown = sorted(set(names) - set(BUILDERS))
    if unknown:
        raise SystemExit(f"unknown file(s) {unknown}; choose from {sorted(BUILDERS)}")
    for name in names:
        BUILDERS[name](HERE / name)
        print(f"{name}: {(HERE / name).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
