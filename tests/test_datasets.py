"""Synthetic data generators, HDF5 schema, settings file and summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mgplvm import datasets as ds
from mgplvm import manifolds

GENERATORS = {
    "ring": (lambda **kw: ds.head_direction_ring(**kw), "T1", 1),
    "torus2": (lambda **kw: ds.torus(d=2, **kw), "T2", 2),
    "euclid3": (lambda **kw: ds.euclid(d=3, **kw), "R3", 3),
    "sphere2": (lambda **kw: ds.sphere2(**kw), "S2", 3),
    "sphere3": (lambda **kw: ds.sphere3(**kw), "S3", 4),
    "so3": (lambda **kw: ds.so3(**kw), "SO3", 4),
}


def make(key: str, **kw) -> ds.SyntheticData:
    gen, name, _ = GENERATORS[key]
    if name[0] not in "TR" and not hasattr(manifolds, "get_manifold"):
        pytest.skip(f"manifold {name} not available yet")
    return gen(**kw)


def assert_same(a: ds.SyntheticData, b: ds.SyntheticData) -> None:
    """Exact equality of every field (arrays bitwise)."""
    for name in ("Y", "latents", "rates"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    for name in ("manifold_name", "bin_size", "likelihood", "generator", "description"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.params.keys() == b.params.keys()
    for key, value in a.params.items():
        other = b.params[key]
        assert type(value) is type(other), key
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and np.array_equal(value, other), key
        else:
            assert value == other, key


@pytest.mark.parametrize("key", GENERATORS)
def test_shapes_dtypes_and_latents_on_manifold(key):
    _, name, ambient = GENERATORS[key]
    data = make(key, n_neurons=7, n_time=60, trials=2, seed=1)
    assert data.Y.shape == data.rates.shape == (2, 7, 60)
    assert data.latents.shape == (2, 60, ambient)
    assert data.Y.dtype == data.latents.dtype == data.rates.dtype == np.float64
    assert data.manifold_name == name and data.likelihood == "poisson"
    assert data.params["preferred"].shape == (7, ambient)
    assert {k: v.shape for k, v in data.cells.items() if k != "preferred"} == {
        "widths": (7,),
        "peak_rates": (7,),
        "baselines": (7,),
    }
    data.manifold.validate(torch.from_numpy(data.latents), atol=1e-8)
    assert np.all(data.Y == np.round(data.Y)) and data.Y.min() >= 0
    np.testing.assert_allclose(data.tuning(data.latents), data.rates, rtol=1e-12)


@pytest.mark.parametrize("key", GENERATORS)
def test_deterministic_given_seed(key):
    a = make(key, n_neurons=5, n_time=40, seed=3, noise="negbin")
    assert_same(a, make(key, n_neurons=5, n_time=40, seed=3, noise="negbin"))
    b = make(key, n_neurons=5, n_time=40, seed=4, noise="negbin")
    assert not np.array_equal(a.latents, b.latents) and not np.array_equal(a.Y, b.Y)


@pytest.mark.parametrize("tuning", ["von_mises", "gaussian_bump"])
def test_ring_rates_in_stated_ranges_and_width_is_hwhm(tuning):
    data = ds.head_direction_ring(
        n_neurons=40, n_time=300, tuning=tuning, peak_rate=(10, 60), baseline=(0.1, 2), seed=2
    )
    p = data.params
    assert p["peak_rates"].min() >= 10 and p["peak_rates"].max() <= 60
    assert p["baselines"].min() >= 0.1 and p["baselines"].max() <= 2
    assert p["widths"].min() >= 30 and p["widths"].max() <= 60
    assert data.rates.min() >= 0.1 and data.rates.max() <= 60
    pref = p["preferred"][:, 0]
    at_pref = np.diagonal(data.tuning(pref[:, None]))
    np.testing.assert_allclose(at_pref, p["peak_rates"], rtol=1e-12)
    half = np.diagonal(data.tuning((pref + np.radians(p["widths"]))[:, None]))
    np.testing.assert_allclose(half, (p["peak_rates"] + p["baselines"]) / 2, rtol=1e-10)
    opposite = np.diagonal(data.tuning((pref + np.pi)[:, None]))
    assert np.all(opposite < p["baselines"] + 0.1 * (p["peak_rates"] - p["baselines"]))


@pytest.mark.parametrize("tuning", ["von_mises", "gaussian_bump"])
def test_torus_width_per_angle_is_each_angles_hwhm(tuning, tmp_path):
    """``width_per_angle``: widths ``(neurons, d)``, drawn independently per angle; moving one
    angle by its own width from the preferred point halves the bump, the other angle held."""
    data = ds.torus(d=2, n_neurons=30, n_time=40, tuning=tuning, width=(20, 80),
                    width_per_angle=True, seed=3)
    p = data.params
    w = p["widths"]
    assert w.shape == (30, 2) and w.min() >= 20 and w.max() <= 80
    assert np.abs(np.log(w[:, 0] / w[:, 1])).max() > 0.5  # ratios differ between neurons
    assert np.corrcoef(w[:, 0], w[:, 1])[0, 1] < 0.5
    pref = p["preferred"]

    def own_rate(x):  # neuron n's rate at point x[n]
        return np.diagonal(data.tuning(x[:, None])[..., 0])

    np.testing.assert_allclose(own_rate(pref), p["peak_rates"], rtol=1e-12)
    half = (p["peak_rates"] + p["baselines"]) / 2
    for angle in range(2):
        x = pref.copy()
        x[:, angle] += np.radians(w[:, angle])
        np.testing.assert_allclose(own_rate(x), half, rtol=1e-10)
    # both angles at their widths: the product of two half-bumps, a quarter
    quarter = p["baselines"] + (p["peak_rates"] - p["baselines"]) / 4
    x = pref + np.radians(w)
    np.testing.assert_allclose(own_rate(x), quarter, rtol=1e-10)
    np.testing.assert_allclose(data.tuning(data.latents), data.rates)
    # equal widths per angle give the isotropic generator's rates
    iso = ds.torus(d=2, n_neurons=5, n_time=30, tuning=tuning, seed=4)
    pi = iso.params
    twice = ds._tuning_rates(iso.manifold, tuning, torch.from_numpy(iso.latents),
                             pi["preferred"], np.stack([pi["widths"]] * 2, 1),
                             pi["peak_rates"], pi["baselines"])
    np.testing.assert_allclose(twice, iso.rates, rtol=1e-12)
    assert "width_per_angle" not in pi  # recorded only when used: old files unchanged
    # HDF5 round trip restores the flag and the per-angle tuning
    ds.save_h5(data, tmp_path / "t.h5")
    back = ds.load_h5(tmp_path / "t.h5")
    assert back.params["width_per_angle"] is True
    np.testing.assert_allclose(back.tuning(back.latents), data.rates)


def test_width_per_angle_needs_a_torus():
    with pytest.raises(ValueError, match="width_per_angle needs a torus"):
        ds._simulate("so3", "SO3", n_neurons=2, n_time=5, bin_size=0.025, trials=1,
                     tuning="von_mises", peak_rate=(10, 20), baseline=(0, 1), width=(30, 60),
                     noise="poisson", dispersion=None, seed=0,
                     walk={"angular_velocity_sd": 100.0, "velocity_timescale": 0.3},
                     description="", width_per_angle=True)


def test_fixed_values_instead_of_ranges():
    data = ds.torus(d=2, n_neurons=4, n_time=20, peak_rate=np.float64(30), baseline=1.0, width=45)
    assert type(data.params["peak_rate"]) is float  # numpy scalars stored as Python scalars
    assert np.all(data.params["peak_rates"] == 30) and np.all(data.params["widths"] == 45)
    assert data.params["peak_rate"] == 30.0 and data.params["width"] == 45.0


def test_ring_angular_velocity_is_realistic():
    """OU angular velocity: s.d. ≈ 100°/s, correlation time ≈ 0.3 s, wrapped integration."""
    data = ds.head_direction_ring(n_neurons=1, n_time=20_000, trials=2, seed=5)
    theta = data.latents[..., 0]
    assert theta.min() >= -np.pi and theta.max() < np.pi
    omega = np.degrees(np.angle(np.exp(1j * np.diff(theta, axis=-1)))) / data.bin_size
    assert 90 < omega.std() < 110
    assert abs(omega.mean()) < 10
    lag = round(0.3 / data.bin_size)  # one time constant: autocorrelation ≈ e⁻¹
    ac = np.mean([np.corrcoef(w[:-lag], w[lag:])[0, 1] for w in omega])
    assert abs(ac - math.exp(-1)) < 0.1
    speed = ds.latent_speed(data)
    np.testing.assert_allclose(speed, np.abs(omega), atol=1e-6)
    assert 0.7 < speed.mean() / omega.std() < 0.9  # E|ω| = σ√(2/π) ≈ 0.8σ
    # the head direction sweeps the whole ring
    hist = np.histogram(theta, bins=36, range=(-np.pi, np.pi))[0]
    assert (hist > 0).all()


@pytest.mark.parametrize("key", ["torus2", "sphere2", "sphere3", "so3"])
def test_compact_walk_speed(key):
    """Per tangent coordinate the angular velocity has s.d. 100°/s, so the speed of a d-dim walk
    is about 100·√d °/s on average (chi distribution)."""
    data = make(key, n_neurons=1, n_time=4000, trials=2, seed=6)
    dim = data.manifold.dim
    speed = ds.latent_speed(data)
    rms = np.sqrt(np.mean(speed**2))
    assert 0.85 * 100 * math.sqrt(dim) < rms < 1.15 * 100 * math.sqrt(dim)


def test_euclid_latent_statistics():
    data = ds.euclid(d=2, n_neurons=3, n_time=20_000, latent_sd=2.0, timescale=0.25, seed=7)
    x = data.latents[0]
    assert np.all(np.abs(x.std(0) - 2.0) < 0.3) and np.all(np.abs(x.mean(0)) < 0.4)
    lag = round(0.25 / data.bin_size)  # Gaussian smoothing: correlation exp(-lag²/(4 s²))
    ac = np.corrcoef(x[:-lag, 0], x[lag:, 0])[0, 1]
    assert abs(ac - math.exp(-0.25)) < 0.1


def test_noise_models():
    kw = dict(n_neurons=20, n_time=4000, seed=8)
    pois = ds.head_direction_ring(**kw)
    mean = pois.rates * pois.bin_size
    assert abs(pois.Y.mean() / mean.mean() - 1) < 0.03
    resid = (pois.Y - mean) / np.sqrt(mean)
    assert abs(resid.var() - 1) < 0.05  # Poisson: variance = mean
    nb = ds.head_direction_ring(noise="negbin", dispersion=2.0, **kw)
    assert nb.params["dispersion"] == 2.0 and nb.likelihood == "negbin"
    excess = ((nb.Y - mean) ** 2 - mean).sum() / (mean**2).sum()  # ≈ 1/dispersion
    assert abs(excess - 0.5) < 0.1
    gauss = ds.head_direction_ring(noise="gaussian", dispersion=0.2, **kw)
    assert abs((gauss.Y - mean).std() - 0.2) < 0.005
    assert ds.head_direction_ring(noise="negbin", **kw).params["dispersion"] == 5.0


@pytest.mark.parametrize(
    "key,kw",
    [("ring", {}), ("torus2", {"noise": "negbin"}), ("euclid3", {"noise": "gaussian"}),
     ("so3", {"trials": 2})],
)  # fmt: skip
def test_hdf5_round_trip_exact(tmp_path, key, kw):
    data = make(key, n_neurons=6, n_time=50, seed=9, **kw)
    path = tmp_path / "data.h5"
    ds.save_h5(data, path)
    loaded = ds.load_h5(path)
    assert_same(data, loaded)
    np.testing.assert_array_equal(loaded.tuning(loaded.latents), data.rates)
    # mgplvm.io reads the same file as a recording
    from mgplvm.io import load_recording

    rec = load_recording(path)
    np.testing.assert_array_equal(rec.Y, data.Y)
    assert rec.bin_size == data.bin_size
    np.testing.assert_array_equal(rec.cells["preferred"], data.params["preferred"])


def test_hdf5_schema_and_foreign_files(tmp_path):
    import h5py

    data = ds.head_direction_ring(n_neurons=3, n_time=10)
    path = tmp_path / "ring.h5"
    ds.save_h5(data, path)
    with h5py.File(path, "r") as f:
        assert f["Y"].shape == (1, 3, 10) and f["latents"].shape == (1, 10, 1)
        assert f["rates"].shape == (1, 3, 10)
        assert f.attrs["manifold"] == "T1" and f.attrs["likelihood"] == "poisson"
        assert f.attrs["bin_size"] == 0.025 and f.attrs["generator"] == "head_direction_ring"
        assert f["cells/preferred"].shape == (3, 1)
        assert f["params/peak_rate"].attrs["type"] == "tuple"
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["Y"] = np.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="not an mgplvm synthetic-data file"):
        ds.load_h5(other)
    data.params["bad"] = {"nested": 1}
    with pytest.raises(TypeError, match="cannot store parameter 'bad'"):
        ds.save_h5(data, tmp_path / "bad.h5")


def test_bundled_settings_reproduce_the_defaults(capsys):
    settings = json.loads(ds.DEFAULT_SETTINGS.read_text())
    assert settings["generator"] == "head_direction_ring"
    p = settings["params"]
    assert (p["n_neurons"], p["n_time"], p["bin_size"], p["noise"]) == (50, 500, 0.025, "poisson")
    assert p["peak_rate"] == [10.0, 60.0] and p["baseline"] == [0.1, 2.0]
    data = ds.from_settings()
    assert data.Y.shape == (1, 50, 500) and data.description == settings["description"]
    default = ds.head_direction_ring(description=settings["description"])
    assert_same(data, default)
    assert ds.main([]) == 0
    out = capsys.readouterr().out
    assert "50 neurons x 500 bins of 25 ms" in out and "silent neurons" in out
    assert "angular velocity s.d." in out


def test_main_saves(tmp_path, capsys):
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"generator": "torus", "params": {"n_neurons": 4, "d": 2}}))
    assert ds.main([str(settings), "--save", str(tmp_path / "t.h5")]) == 0
    assert ds.load_h5(tmp_path / "t.h5").latents.shape == (1, 500, 2)
    assert "torus on T2" in capsys.readouterr().out


def test_summarize_mentions_the_essentials():
    text = ds.summarize(ds.euclid(d=2, n_neurons=5, n_time=100))
    for piece in ("euclid on R2", "5 neurons", "silent neurons", "true rates", "units/s"):
        assert piece in text


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_neurons": 0}, "n_neurons must be an integer >= 1"),
        ({"n_neurons": 2.5}, "n_neurons must be an integer"),
        ({"n_time": 1}, "n_time must be an integer >= 2"),
        ({"trials": 0}, "trials must be an integer >= 1"),
        ({"bin_size": 0}, "bin_size must be a positive number"),
        ({"bin_size": -0.01}, "bin_size must be a positive number"),
        ({"peak_rate": (60, 10)}, "peak_rate range is reversed"),
        ({"baseline": (2, 0.1)}, "baseline range is reversed"),
        ({"peak_rate": (0, 10)}, "peak_rate must be > 0"),
        ({"baseline": (-1, 1)}, "baseline must be >= 0"),
        ({"baseline": (1, 20)}, "must lie below the peak_rate range"),
        ({"peak_rate": (1, 2, 3)}, "a number or a \\(low, high\\) pair"),
        ({"peak_rate": "fast"}, "a number or a \\(low, high\\) pair"),
        ({"width": (30, 200)}, "width must be > 0.0 and <= 180"),
        ({"noise": "binomial"}, "unknown noise 'binomial'"),
        ({"tuning": "cosine"}, "unknown tuning 'cosine'"),
        ({"dispersion": 2.0}, "only used with noise='negbin' or 'gaussian'"),
        ({"noise": "negbin", "dispersion": 0}, "dispersion must be a positive number"),
        ({"angular_velocity_sd": -5}, "angular_velocity_sd must be >= 0"),
        ({"angular_velocity_sd": "fast"}, "angular_velocity_sd must be a number"),
        ({"velocity_timescale": 0}, "velocity_timescale must be a positive number"),
        ({"seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_clear_errors_for_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ds.head_direction_ring(**kwargs)


def test_clear_errors_elsewhere(tmp_path):
    with pytest.raises(ValueError, match="d must be an integer >= 1"):
        ds.torus(d=0)
    with pytest.raises(ValueError, match="unknown tuning 'von_mises' on R2"):
        ds.euclid(tuning="von_mises")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"generator": "klein_bottle"}))
    with pytest.raises(ValueError, match="unknown generator 'klein_bottle'"):
        ds.from_settings(bad)
    bad.write_text(json.dumps({"generator": "torus", "params": {"n_cells": 3}}))
    with pytest.raises(ValueError, match="bad parameters for torus"):
        ds.from_settings(bad)
    with pytest.raises(ValueError, match="Y must be"):
        ds.SyntheticData(np.zeros((2, 3)), None, None, "T1", 0.1, "poisson")
