"""Tests for mgplvm.io: loaders for every supported format and spike-time binning."""

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from mgplvm.io import Recording, bin_spike_times, load_recording


@pytest.fixture
def counts():
    return np.random.default_rng(0).poisson(2.0, size=(2, 5, 40)).astype(float)


def test_h5_roundtrip_with_head_direction(tmp_path, counts):
    hd = np.random.default_rng(1).uniform(-np.pi, np.pi, size=(2, 40))
    p = tmp_path / "rec.h5"
    with h5py.File(p, "w") as f:
        f["Y"] = counts
        f["head_direction"] = hd
        f.attrs["bin_size"] = 0.025
        f.create_group("cells")["preferred_direction"] = np.arange(5.0)
    rec = load_recording(p)
    np.testing.assert_array_equal(rec.Y, counts)
    np.testing.assert_array_equal(rec.head_direction, hd)
    assert rec.bin_size == 0.025 and rec.cells["preferred_direction"].shape == (5,)
    assert "2 trial(s) x 5 neurons x 40 bins" in rec.summary()


def test_h5_named_array_and_errors(tmp_path, counts):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["session/counts_matrix"] = counts[0]
    with pytest.raises(KeyError, match="session/counts_matrix"):
        load_recording(p)
    with pytest.raises(ValueError, match="bin_size"):
        load_recording(p, array="session/counts_matrix")
    rec = load_recording(p, array="session/counts_matrix", bin_size=0.01)
    assert rec.Y.shape == (1, 5, 40)


def test_npz_mat_npy_and_layout(tmp_path, counts):
    np.savez(tmp_path / "a.npz", counts=counts[0].T, bin_size=0.05)
    rec = load_recording(tmp_path / "a.npz", layout="time,neurons")
    np.testing.assert_array_equal(rec.Y[0], counts[0])
    savemat(tmp_path / "b.mat", {"spikes": counts[0]})
    rec = load_recording(tmp_path / "b.mat", bin_size=0.02)
    np.testing.assert_array_equal(rec.Y[0], counts[0])
    np.save(tmp_path / "c.npy", counts)
    assert load_recording(tmp_path / "c.npy", bin_size=0.02).Y.shape == (2, 5, 40)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such recording"):
        load_recording(tmp_path / "missing.h5")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_recording(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="NaN"):
        Recording(np.array([[[np.nan, 1.0]]]), 0.1)
    with pytest.raises(ValueError, match="bin_size"):
        Recording(np.ones((1, 2, 3)), -1.0)
    with pytest.raises(ValueError, match="dimensions"):
        Recording(np.ones(4), 0.1)


def test_bin_spike_times_matches_histogram():
    rng = np.random.default_rng(3)
    trains = [np.sort(rng.uniform(0, 2.0, size=n)) for n in (0, 5, 50)]
    counts = bin_spike_times(trains, 0.1, t_start=0.0, t_stop=2.0)
    assert counts.shape == (3, 20)
    for i, t in enumerate(trains):
        ref, _ = np.histogram(t, bins=np.linspace(0, 2.0, 21))
        np.testing.assert_array_equal(counts[i], ref)
    with pytest.raises(ValueError, match="bin_size"):
        bin_spike_times(trains, 0.0)
