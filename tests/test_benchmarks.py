"""Helpers of the benchmark scripts that decide what a benchmark measures."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np
import pytest
import torch

from mgplvm import datasets as ds
from mgplvm.manifolds import get_manifold

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


@pytest.fixture(scope="module")
def recovery():
    return _load("recovery")


def _fraction_above_half(name: str, width_deg: float, n: int = 200_000) -> float:
    """Monte Carlo: the fraction of the manifold where a field of the generator (baseline 0,
    peak 1, half-width ``width_deg``) fires above half its peak."""
    m = get_manifold(name)
    g = torch.Generator().manual_seed(1)
    centre = m.random(1, dtype=torch.float64, generator=g)
    x = m.random(n, dtype=torch.float64, generator=g)
    r = ds._tuning_rates(m, "von_mises", x, centre.numpy(), [width_deg], [1.0], [0.0])
    return float((r[0] > 0.5).mean())


@pytest.mark.parametrize("width", [30.0, 60.0])
def test_so3_width_matching_s3_covers_the_same_fraction(recovery, width):
    """The matched SO(3) field covers the fraction of SO(3) (Haar) that the S³ field covers of
    S³, checked with the generator's own tuning function (so also its width convention)."""
    w_so3 = recovery.so3_width_matching_s3(width)
    f_s3 = _fraction_above_half("S3", width)
    f_so3 = _fraction_above_half("SO3", w_so3)
    se = np.sqrt(f_s3 * (1 - f_s3) / 200_000)
    assert abs(f_so3 - f_s3) < 5 * np.sqrt(2) * se
    # and not the same width: an SO(3) field of the S³ field's angle covers much less
    assert _fraction_above_half("SO3", width) < 0.6 * f_s3


def test_width_argument(recovery):
    assert recovery._width("match-s3") == "match-s3"
    assert recovery._width("45,90") == (45.0, 90.0)
    for bad in ("45", "a,b", "90,45", "0,30", "30,200"):
        with pytest.raises(argparse.ArgumentTypeError):
            recovery._width(bad)


def test_width_match_s3_refused_off_so3(recovery):
    ring = next(p for p in recovery.PROBLEMS if p.key == "ring")
    with pytest.raises(ValueError, match="SO\\(3\\)"):
        recovery.run(ring, 0, True, False, width="match-s3")


def test_antipodal_revisits_on_known_paths():
    cv = _load("cv_topology")
    theta = np.linspace(0.0, np.pi, 181)  # quaternion angle 0..180°: a full 360° rotation
    q = np.stack([np.cos(theta), np.sin(theta), 0 * theta, 0 * theta], 1)
    # the antipode of q_t, at quaternion angle θ_t + 180°, is within 15° of the path only for
    # θ_t < 15° or θ_t > 165°: 2·15 + 1 of 181 bins (both ends counted, |Δ| < 15° strictly)
    assert cv.antipodal_revisits(q, 15.0) == pytest.approx(30 / 181, abs=1.5 / 181)
    # stored with alternating signs (q ≡ −q) it is the same rotation path: the lift undoes it
    flipped = q * np.where(np.arange(181) % 2, -1.0, 1.0)[:, None]
    assert cv.antipodal_revisits(flipped, 15.0) == cv.antipodal_revisits(q, 15.0)
    # a quarter of the way round never comes near an antipode
    assert cv.antipodal_revisits(q[:91], 15.0) == 0.0
    with pytest.raises(ValueError, match="time, 4"):
        cv.antipodal_revisits(q[:, :3], 15.0)


def test_cv_topology_default_run_is_the_acceptance_set_and_only_is_checked(capsys):
    cv = _load("cv_topology")
    assert set(cv.DEFAULT_RUN) <= set(cv.COMPARISONS)
    assert "T2aniso-3way" in cv.COMPARISONS and "T2aniso-3way" not in cv.DEFAULT_RUN
    with pytest.raises(SystemExit):
        cv.main(["--only", "T2,torus9"])
    assert "torus9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cv.main(["--max-inducing", "-1"])
    assert "--max-inducing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cv.main(["--test-iters", "0"])
    assert "--test-iters" in capsys.readouterr().err


class _InlineExecutor(Executor):
    """Runs each task at submission, in this process, one at a time (a task seeds the global
    RNGs, so tasks submitted from several threads must not overlap)."""

    def __init__(self):
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        fut: Future = Future()
        with self._lock:
            fut.set_result(fn(*args, **kwargs))
        return fut


def test_cv_topology_inducing_cap_groups_candidates_without_changing_scores():
    cv = _load("cv_topology")
    assert cv.candidate_groups(["T2", "SO3", "S3"], None) == {None: ["T2", "SO3", "S3"]}
    assert cv.candidate_groups(["T1", "T2", "SO3", "S3"], 64) == {24: ["T1"], 64: ["T2", "SO3",
                                                                                   "S3"]}
    assert cv.candidate_groups(["R1", "R3"], 16) == {16: ["R1", "R3"]}
    # a cap at the defaults splits the candidates over two crossvalidate calls (T1: 24 inducing
    # points, R2: 64) and must give the scores of one call: a task's split and seeds do not
    # depend on the other candidates
    args = (ds.head_direction_ring, {}, ["T1", "R2"], 0, 8, 24, 3, 2, _InlineExecutor(), 0,
            "brownian", 400.0)
    one = cv.run_one(*args)
    split = cv.run_one(*args, max_inducing=64)
    for metric in cv.SCORES:
        assert one[metric] == split[metric]
        assert all(np.isfinite(v) for v in one[metric].values())
    assert one["_failed"] == split["_failed"] == {"T1": False, "R2": False}


def test_cv_topology_noise_sets_the_recording_and_every_candidates_likelihood(monkeypatch):
    cv = _load("cv_topology")
    seen = {}
    real = cv.crossvalidate

    def spy(Y, manifolds, **kw):
        seen["Y"], seen["likelihood"] = Y, kw["likelihood"]
        return real(Y, manifolds, **kw)

    monkeypatch.setattr(cv, "crossvalidate", spy)
    args = (ds.head_direction_ring, {}, ["T1"], 0, 8, 24, 3, 2, _InlineExecutor(), 0,
            "brownian", 400.0)
    out = cv.run_one(*args, noise="gaussian")
    assert seen["likelihood"] == "gaussian"
    # Gaussian observations are not counts; the default stays Poisson counts
    assert not np.allclose(seen["Y"], np.round(seen["Y"]))
    assert np.isfinite(out["ll_per_datum"]["T1"])
    cv.run_one(*args)
    assert seen["likelihood"] == "poisson" and np.allclose(seen["Y"], np.round(seen["Y"]))
    with pytest.raises(SystemExit):
        cv.main(["--noise", "cauchy"])


def test_cv_topology_tuning_flags_reach_every_recording_and_bad_values_are_refused(capsys):
    cv = _load("cv_topology")
    cells = cv.generator_kwargs("gaussian_bump", "20,35", "0,0", "5")
    assert cells == {"tuning": "gaussian_bump", "width": (20.0, 35.0), "baseline": (0.0, 0.0),
                     "peak_rate": (5.0, 5.0)}
    assert cv.generator_kwargs() == {}
    # the cells override every comparison's generator arguments, so recordings that shared a
    # key still share one, and the overridden recording differs from the default one
    bins = {name: 300 for name in cv.COMPARISONS}
    names = ["SO3", "SO3-3way", "T2-3way"]  # the SO(3) comparisons share their recording
    plain = cv.recordings(names, bins)
    wide = cv.recordings(names, bins, {"width": (50.0, 70.0)})
    assert len(plain) == len(wide) == 2 and set(plain).isdisjoint(wide)
    assert sorted(wide.values()) == sorted(plain.values())
    key = cv.recording_key("T2-3way", bins, {"width": (50.0, 70.0)})
    data = cv.make_recording(key[0], dict(key[1]), 0, 6, 20, 0, 400.0)
    assert data.params["widths"].min() >= 50.0 and data.params["widths"].max() <= 70.0
    for argv, needle in ((["--width", "20,x"], "--width"), (["--peak-rate", "1,2,3"], "--peak"),
                         (["--only", "SO3", "--tuning", "gaussian_bump"], "SO3"),
                         (["--only", "ring", "--baseline", "5,70"], "baseline")):
        with pytest.raises(SystemExit):
            cv.main(argv)
        assert needle in capsys.readouterr().err
