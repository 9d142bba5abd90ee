"""Tests for mgplvm.head_direction: the realistic ADn simulator."""

import math

import numpy as np
import pytest

from mgplvm import datasets
from mgplvm.head_direction import SHAPES, realistic_head_direction


@pytest.fixture(scope="module")
def session():
    return realistic_head_direction(minutes=20, seed=0)


def test_statistics_match_real_adn_recordings(session):
    """Rates, widths, turning behaviour and the tracker have the real-data statistics the
    simulator promises (20 minutes, 32 cells)."""
    d = session
    assert d.Y.shape == (1, 32, 48_000) and d.manifold_name == "T1"
    rates = d.Y[0].mean(-1) / d.bin_size
    assert 0.2 < rates.min() and rates.max() < 40
    assert (rates < 2).sum() >= 6  # many cells fire below 2 Hz
    widths = d.params["widths"]
    assert widths.min() >= 20 and widths.max() <= 70
    assert set(np.unique(d.params["shapes"])) <= set(range(len(SHAPES)))
    assert len(np.unique(d.params["shapes"])) >= 3  # not all von Mises
    speed = np.degrees(np.abs(np.angle(np.exp(1j * np.diff(d.latents[0, :, 0]))))) / d.bin_size
    assert 30 < np.median(speed) < 60
    assert 100 < np.percentile(speed, 90) < 220
    assert np.percentile(speed, 99.9) > 300  # fast turns
    assert 0.08 < np.mean(speed < 10) < 0.3  # pauses
    # the tracker: 30 Hz (coarser than the 40 Hz bins), noisy, with untracked stretches
    t, a = d.params["tracker_times"], d.params["tracker_angles"]
    assert np.median(np.diff(t)) == pytest.approx(1 / 30)
    assert 0.002 < np.isnan(a).mean() < 0.05
    rec = d.to_recording()
    hd = rec.head_direction[0]
    ok = np.isfinite(hd)
    err = np.abs(np.angle(np.exp(1j * (hd[ok] - d.latents[0, ok, 0]))))
    assert math.degrees(np.median(err)) < 3  # resampled tracker close to the truth
    assert 0 < rec.untracked_fraction < 0.05


def test_rates_are_the_tuning_at_the_bins(session):
    """``tuning`` at the bins' latents matches the bin-averaged rates up to the head's movement
    within a bin, and the counts have the Poisson mean."""
    d = session
    rates = d.tuning(d.latents)
    assert rates.shape == d.rates.shape
    corr = np.corrcoef(rates.ravel(), d.rates.ravel())[0, 1]
    assert corr > 0.995
    mean_count = d.Y.mean(-1)
    expected = (d.rates * d.bin_size).mean(-1)
    np.testing.assert_allclose(mean_count, expected, rtol=0.1, atol=0.002)


def test_deterministic_and_saved_exactly(tmp_path):
    a = realistic_head_direction(minutes=1, n_neurons=15, seed=3)
    b = realistic_head_direction(minutes=1, n_neurons=15, seed=3)
    np.testing.assert_array_equal(a.Y, b.Y)
    np.testing.assert_array_equal(a.params["tracker_angles"], b.params["tracker_angles"])
    datasets.save_h5(a, tmp_path / "hd.h5")
    c = datasets.load_h5(tmp_path / "hd.h5")
    np.testing.assert_array_equal(c.Y, a.Y)
    np.testing.assert_array_equal(c.tuning(c.latents), a.tuning(a.latents))
    np.testing.assert_array_equal(c.to_recording().head_direction,
                                  a.to_recording().head_direction)
    assert datasets.GENERATORS["realistic_head_direction"] is realistic_head_direction


def test_negbin_and_bad_arguments():
    d = realistic_head_direction(minutes=0.5, n_neurons=15, noise="negbin", seed=1)
    assert d.likelihood == "negbin" and d.params["dispersion"] == 5.0
    for bad in ({"n_neurons": 0}, {"minutes": -1}, {"width": (0, 30)}, {"width": (30, 200)},
                {"shapes": ("square",)}, {"tail_df": 2}, {"pause_scale": 2.0},
                {"tracker_dropout": 0.7}, {"noise": "gaussian"}, {"peak_rate": (5, 1)}):
        with pytest.raises(ValueError):
            realistic_head_direction(**{"minutes": 0.5, "n_neurons": 15, **bad})
