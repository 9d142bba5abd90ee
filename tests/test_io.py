"""Tests for mgplvm.io: loaders for every supported format and spike-time binning."""

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from mgplvm.io import Recording, bin_spike_times, load_recording, resample_angle


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


# ------------------------------------------------------------------------ real-data features
def test_resample_angle_means_interpolates_and_masks():
    # two samples per bin around the wrap point: the circular mean, not the arithmetic one
    t = np.array([0.01, 0.02, 0.11, 0.12])
    a = np.array([np.pi - 0.1, -np.pi + 0.1, 0.2, 0.4])
    out = resample_angle(t, a, 0.1, 2)
    assert abs(abs(out[0]) - np.pi) < 1e-9 and out[1] == pytest.approx(0.3)
    # a tracker coarser than the bins: empty bins interpolate along the shorter arc
    t = np.arange(0, 1.0, 1 / 30)
    angle = np.angle(np.exp(1j * (3.0 + 2.0 * t)))  # crosses ±π
    out = resample_angle(t, angle, 0.025, 40)
    centres = (np.arange(40) + 0.5) * 0.025
    ref = np.angle(np.exp(1j * (3.0 + 2.0 * centres)))
    ok = np.isfinite(out)
    assert ok[:38].all()
    np.testing.assert_allclose(np.angle(np.exp(1j * (out[ok] - ref[ok]))), 0, atol=0.03)
    # a lost stretch longer than max_gap becomes NaN; NaN samples are ignored
    lost = angle.copy()
    lost[6:18] = np.nan
    out = resample_angle(t, lost, 0.025, 40)
    assert np.isnan(out[10:20]).all() and np.isfinite(out[:7]).all()
    with pytest.raises(ValueError, match="increasing"):
        resample_angle(t[::-1], angle, 0.025, 40)
    with pytest.raises(ValueError, match="same length"):
        resample_angle(t, angle[:-1], 0.025, 40)


def _th1_like(tmp_path, n_time=400, layout="time,neurons"):
    """A real-shaped .mat file: two count arrays (time, cells), a per-bin angle, and the same
    angle as (time, angle) pairs and at its own rate."""
    rng = np.random.default_rng(0)
    adn = rng.poisson(1.0, size=(n_time, 3)).astype(np.uint8)
    pos = rng.poisson(0.5, size=(n_time, 2)).astype(np.uint8)
    ang = np.mod(np.cumsum(rng.normal(0, 0.05, n_time)), 2 * np.pi)
    t30 = np.arange(0, n_time * 0.025, 1 / 30)
    centres = (np.arange(n_time) + 0.5) * 0.025
    ang30 = np.interp(t30, centres, np.unwrap(ang))
    savemat(tmp_path / "s.mat", {"ADn": adn, "Pos": pos, "Ang": ang[:, None],
                                 "pairs": np.stack([t30, ang30], 1), "ang30": ang30})
    return tmp_path / "s.mat", adn, pos, ang


def test_joined_arrays_and_the_tracked_angle_in_every_form(tmp_path):
    path, adn, pos, ang = _th1_like(tmp_path)
    rec = load_recording(path, array="ADn,Pos", layout="time,neurons", bin_size=0.025,
                         angle="Ang")
    assert rec.Y.shape == (1, 5, 400)
    np.testing.assert_array_equal(rec.Y[0, :3], adn.T)
    np.testing.assert_array_equal(rec.Y[0, 3:], pos.T)
    np.testing.assert_allclose(rec.head_direction[0], ang)
    for kw in ({"angle": "pairs"}, {"angle": "ang30", "angle_rate": 30.0}):
        other = load_recording(path, array="ADn", layout="time,neurons", bin_size=0.025, **kw)
        ok = np.isfinite(other.head_direction[0])
        assert ok[:-2].all()
        diff = np.angle(np.exp(1j * (other.head_direction[0, ok] - ang[ok])))
        assert np.abs(diff).max() < 0.15  # within a bin the walk moves (0.05 rad s.d. per bin)
    with pytest.raises(ValueError, match="angle_rate"):
        load_recording(path, array="ADn", layout="time,neurons", bin_size=0.025, angle="ang30")
    with pytest.raises(KeyError, match="no angle 'Angle'"):
        load_recording(path, array="ADn", layout="time,neurons", bin_size=0.025,
                       angle="Angle")


def test_transposed_layout_is_refused(tmp_path):
    path, *_ = _th1_like(tmp_path)
    with pytest.raises(ValueError, match="looks transposed.*time,neurons"):
        load_recording(path, array="ADn", bin_size=0.025)
    # an explicit layout is obeyed
    assert load_recording(path, array="ADn", bin_size=0.025, layout="neurons,time").Y.shape == (
        1, 400, 3)


def test_degrees_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", Y=np.ones((3, 50)), bin_size=0.1,
             hd=np.linspace(0, 359, 50))
    with pytest.raises(ValueError, match="degrees"):
        load_recording(tmp_path / "d.npz", angle="hd")


def test_nan_head_direction_warns_and_is_reported(tmp_path):
    hd = np.linspace(-3, 3, 50)
    hd[10:15] = np.nan
    np.savez(tmp_path / "n.npz", Y=np.ones((3, 50)), bin_size=0.1, head_direction=hd)
    with pytest.warns(UserWarning, match="10.0% of bins"):
        rec = load_recording(tmp_path / "n.npz")
    assert rec.untracked_fraction == pytest.approx(0.1)
    assert "10.0% of bins untracked" in rec.summary()
    with pytest.raises(ValueError, match="inf"):
        Recording(np.ones((1, 3, 4)), 0.1, head_direction=[0, np.inf, 0, 0])


def test_bin_times_gaps_rebin_and_window(tmp_path):
    Y = np.arange(2 * 12, dtype=float).reshape(2, 12)
    times = np.r_[np.arange(6) * 0.1, 10 + np.arange(6) * 0.1]  # two epochs joined
    hd = np.linspace(-1, 1, 12)
    rec = Recording(Y[None], 0.1, head_direction=hd, bin_times=times)
    gaps = rec.bin_times_in_bins()
    np.testing.assert_allclose(np.diff(gaps), [1] * 5 + [95] + [1] * 5)
    assert "time gaps: 1" in rec.summary()
    assert Recording(Y[None], 0.1, bin_times=np.arange(12) * 0.1).bin_times_in_bins() is None
    two = rec.rebin(0.2)
    np.testing.assert_array_equal(two.Y[0, 0], Y[0].reshape(6, 2).sum(-1))
    np.testing.assert_allclose(two.bin_times, times[::2])
    np.testing.assert_allclose(two.head_direction[0], hd.reshape(6, 2).mean(-1))
    with pytest.raises(ValueError, match="whole multiple"):
        rec.rebin(0.15)
    late = rec.window(start=5.0)
    assert late.n_time == 6 and late.bin_times[0] == 10
    assert rec.window(stop=0.35).n_time == 4
    with pytest.raises(ValueError, match="holds 0 bins"):
        rec.window(start=100)
    with pytest.raises(ValueError, match="increasing"):
        Recording(Y[None], 0.1, bin_times=times[::-1])
    with pytest.raises(ValueError, match="overlap"):
        Recording(Y[None], 0.1, bin_times=np.arange(12) * 0.05)


# ------------------------------------------------------------------------------ error classes
def test_errors_name_the_keyword_argument(tmp_path):
    import pickle

    from mgplvm.io import MissingArrayError, MissingBinSizeError, RecordingFormatError

    path, *_ = _th1_like(tmp_path)
    cases = [
        ({"array": "ADn", "bin_size": 0.025}, "layout", "looks transposed"),
        ({"array": "ADn", "layout": "rows", "bin_size": 0.025}, "layout", "unknown layout"),
        ({"array": "ADn", "layout": "time,neurons"}, "bin_size", "pass bin_size=<seconds>"),
        ({"array": "ADn,pairs", "layout": "time,neurons", "bin_size": 0.025}, "array",
         "cannot be joined"),
        ({"array": "ADn", "layout": "time,neurons", "bin_size": 0.025, "angle": "ang30"},
         "angle", "angle_rate=<Hz>"),
        ({"array": "ADn", "layout": "time,neurons", "bin_size": 0.025, "angle": "nope"},
         "angle", "no angle 'nope'"),
        ({"array": "ADn", "layout": "time,neurons", "bin_size": 0.025, "bin_times": "nope"},
         "bin_times", "no bin times 'nope'"),
        ({"array": "ADn", "layout": "time,neurons", "bin_size": 0.025, "bin_times": "ang30"},
         "bin_times", "bin_times has"),
        ({"array": "ADn", "layout": "time,neurons", "bin_size": -1.0}, "bin_size", "positive"),
    ]
    for kw, argument, text in cases:
        with pytest.raises(RecordingFormatError, match=text) as info:
            load_recording(path, **kw)
        assert info.value.argument == argument, (kw, info.value.argument)
        assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(MissingBinSizeError) as info:
        load_recording(path, array="ADn", layout="time,neurons")
    assert info.value.path == str(path)
    # a missing array is a KeyError too (as before), printed without KeyError's quotes
    with pytest.raises(KeyError) as info:
        load_recording(path, array="spikes", bin_size=0.025)
    err = info.value
    assert isinstance(err, MissingArrayError) and isinstance(err, ValueError)
    assert err.argument == "array" and str(err) == err.args[0]
    assert str(err).startswith(f"{path} has no array 'spikes'; arrays in the file: ")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is MissingArrayError and again.argument == "array"
    assert str(again) == str(err) and again.path == str(path)


def test_mat_sparse_counts_and_empty_arrays(tmp_path):
    from scipy import sparse

    from mgplvm.io import RecordingFormatError

    counts = sparse.random(4, 60, density=0.2, random_state=0, format="csc") * 5
    savemat(tmp_path / "s.mat", {"S": counts, "E": np.zeros((0, 3)), "bin_size": 0.1})
    rec = load_recording(tmp_path / "s.mat", array="S")
    np.testing.assert_array_equal(rec.Y[0], counts.toarray())
    with pytest.raises(RecordingFormatError, match=r"array 'E' is empty \(shape \(0, 3\)\)"):
        load_recording(tmp_path / "s.mat", array="E")
    with pytest.raises(ValueError, match="Y is empty"):
        Recording(np.zeros((1, 0, 5)), 0.1)
