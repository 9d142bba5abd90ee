"""Fault injection for mgplvm.io: files that cannot be read give one-line errors.

Every case checks the exception of :func:`mgplvm.io.load_recording` (a
:class:`~mgplvm.io.RecordingFormatError`, a ``ValueError``, whose message names the file and
the problem) and that ``mgplvm fit`` prints it as one line and exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import sparse
from scipy.io import savemat

from mgplvm.cli import main
from mgplvm.io import (
    MissingArrayError,
    MissingBinSizeError,
    RecordingFormatError,
    load_recording,
)

_MATLAB_CLASS = {"float64": "double", "float32": "single", "bool": "logical"}


def _cli_error(path: Path, tmp_path: Path, capsys, *extra: str) -> str:
    """Run ``mgplvm fit path``; assert exit status 2 and one stderr line; return that line."""
    capsys.readouterr()
    rc = main(["fit", str(path), "--no-progress", "--out", str(tmp_path / "o"), *extra])
    lines = capsys.readouterr().err.splitlines()
    assert rc == 2, lines
    assert len(lines) == 1 and lines[0].startswith("mgplvm fit: error:"), lines
    return lines[0]


def _refused(path: Path, tmp_path: Path, capsys, problem: str,
             cls: type[Exception] = RecordingFormatError, **kw) -> RecordingFormatError:
    """Assert that loading ``path`` raises ``cls`` naming the file and ``problem``, and that
    the command line says the same in one line."""
    with pytest.raises(cls) as info:
        load_recording(path, **kw)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in msg and str(path) in msg and problem in msg, msg
    line = _cli_error(path, tmp_path, capsys)
    assert str(path) in line and problem in line, line
    return info.value


def _save_mat73(path: Path, variables: dict) -> None:
    """A file laid out like MATLAB's ``save(path, '-v7.3')``: HDF5 after a 512-byte header,
    each array stored column-major (h5py sees a MATLAB T×N array as N×T) with its class."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            if isinstance(value, str):  # char: UTF-16 code units, a 1×n row
                codes = np.frombuffer(value.encode("utf-16-le"), np.uint16)
                f.create_dataset(name, data=codes[:, None]).attrs["MATLAB_class"] = (
                    np.bytes_("char"))
            elif sparse.issparse(value):  # compressed sparse columns
                csc = sparse.csc_matrix(value)
                g = f.create_group(name)
                g.attrs["MATLAB_class"] = np.bytes_("double")
                g.attrs["MATLAB_sparse"] = np.uint64(csc.shape[0])
                g["data"], g["ir"] = csc.data, csc.indices.astype(np.uint64)
                g["jc"] = csc.indptr.astype(np.uint64)
            else:
                arr = np.atleast_2d(np.asarray(value))
                if arr.size == 0:  # MATLAB stores the dimensions of an empty array
                    ds = f.create_dataset(name, data=np.array(arr.shape[::-1], np.uint64))
                    ds.attrs["MATLAB_empty"] = np.uint8(1)
                else:
                    ds = f.create_dataset(name, data=arr.T.astype(
                        np.uint8 if arr.dtype == bool else arr.dtype))
                ds.attrs["MATLAB_class"] = np.bytes_(
                    _MATLAB_CLASS.get(arr.dtype.name, arr.dtype.name))
        f.create_group("#refs#")
    header = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
              b"HDF5 schema 1.00 .")
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


def _counts_h5(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f["Y"] = np.random.default_rng(0).poisson(2.0, (5, 200)).astype(float)
        f.attrs["bin_size"] = 0.1
    return path


def _cut(path: Path) -> Path:
    """Keep the first half of the file's bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.fault("an empty (0-byte) .h5, .hdf5, .npz, .npy, .mat or .nwb file",
                   "error: the file is empty (0 bytes); copy or export it again")
@pytest.mark.parametrize("suffix", [".h5", ".hdf5", ".npz", ".npy", ".mat", ".nwb"])
def test_empty_file_is_refused(tmp_path, capsys, suffix):
    path = tmp_path / f"rec{suffix}"
    path.write_bytes(b"")
    err = _refused(path, tmp_path, capsys, "is empty (0 bytes)")
    assert err.argument is None and err.path == str(path)


@pytest.mark.fault("a .h5 file cut off halfway, or a text file named .h5",
                   "error: not an HDF5 file or truncated (its size and h5py's reason)")
@pytest.mark.parametrize("case", ["cut off", "text"])
def test_cut_off_or_foreign_h5_is_refused(tmp_path, capsys, case):
    path = tmp_path / "rec.h5"
    if case == "cut off":
        _cut(_counts_h5(path))
    else:
        path.write_text("neuron,time,count\n1,0,3\n")
    _refused(path, tmp_path, capsys, "is not an HDF5 file or is truncated")


@pytest.mark.fault("a .h5 file whose compressed counts are overwritten with garbage",
                   "error: the file cannot be read (damaged or truncated)")
def test_damaged_h5_data_is_refused(tmp_path, capsys):
    path = tmp_path / "rec.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("Y", data=np.ones((5, 200)), compression="gzip", chunks=(5, 200))
        f.attrs["bin_size"] = 0.1
    with h5py.File(path, "r") as f:
        chunk = f["Y"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset)
        fh.write(b"\xff" * chunk.size)
    _refused(path, tmp_path, capsys, "cannot be read")


@pytest.mark.fault("an .npz, .mat or .h5 file that holds no arrays",
                   "error: the file holds no arrays; save the counts, e.g. as Y")
@pytest.mark.parametrize("suffix", [".npz", ".mat", ".h5"])
def test_file_without_arrays_is_refused(tmp_path, capsys, suffix):
    path = tmp_path / f"rec{suffix}"
    if suffix == ".npz":
        np.savez(path)
    elif suffix == ".mat":
        savemat(path, {})
    else:
        with h5py.File(path, "w") as f:
            f.create_group("session")
    assert path.stat().st_size > 0
    _refused(path, tmp_path, capsys, "holds no arrays")
    # naming an array does not hide the cause
    with pytest.raises(RecordingFormatError, match="holds no arrays"):
        load_recording(path, array="counts", bin_size=0.1)


@pytest.mark.fault("a .npy file holding a 0-size array",
                   "error: the file holds an empty array (its shape)")
@pytest.mark.parametrize("shape", [(0,), (0, 5), (5, 0)])
def test_npy_with_empty_array_is_refused(tmp_path, capsys, shape):
    path = tmp_path / "rec.npy"
    np.save(path, np.zeros(shape))
    _refused(path, tmp_path, capsys, f"holds an empty array (shape {shape})", bin_size=0.1)


@pytest.mark.fault("a .npz, .npy or .mat file cut off halfway, or a text file with that suffix",
                   "error: not a NumPy / MATLAB file or truncated")
@pytest.mark.parametrize("suffix", [".npz", ".npy", ".mat"])
@pytest.mark.parametrize("case", ["cut off", "text"])
def test_cut_off_or_foreign_numpy_and_mat_are_refused(tmp_path, capsys, suffix, case):
    path = tmp_path / f"rec{suffix}"
    counts = np.random.default_rng(0).poisson(2.0, (5, 200)).astype(float)
    if case == "text":
        path.write_text("1 2 3\n4 5 6\n")
    elif suffix == ".npz":
        np.savez(path, Y=counts, bin_size=0.1)
    elif suffix == ".npy":
        np.save(path, counts)
    else:
        savemat(path, {"Y": counts, "bin_size": 0.1})
    if case == "cut off":
        _cut(path)
    kind = {".npz": "a NumPy .npz file", ".npy": "a NumPy .npy file",
            ".mat": "a MATLAB .mat file"}[suffix]
    _refused(path, tmp_path, capsys, f"is not {kind} or is truncated", bin_size=0.1)


@pytest.mark.fault("a MATLAB v7.3 .mat file (HDF5 inside)",
                   "read with h5py; arrays transposed back to MATLAB's shapes, as loadmat gives")
def test_matlab_v73_is_read_like_loadmat(tmp_path, capsys):
    rng = np.random.default_rng(0)
    variables = {
        "ADn": rng.poisson(1.0, (300, 3)).astype(np.uint8),  # time x cells, as in MATLAB
        "Pos": rng.poisson(0.5, (300, 2)).astype(float),
        "Ang": np.mod(np.cumsum(rng.normal(0, 0.05, 300)), 2 * np.pi)[:, None],
        "t": 0.025 * np.arange(300.0),
        "bin_size": 0.025,
        "trials": rng.poisson(1.0, (2, 4, 50)).astype(float),  # a 3-D array
        "S": sparse.random(4, 60, density=0.2, random_state=0, format="csc") * 5,
    }
    v73, v7 = tmp_path / "s73.mat", tmp_path / "s7.mat"
    _save_mat73(v73, variables)
    savemat(v7, variables)
    assert h5py.is_hdf5(v73) and not h5py.is_hdf5(v7)
    with h5py.File(v73, "r") as f:
        assert f["ADn"].shape == (3, 300)  # column-major: h5py sees the axes reversed
    kw = {"array": "ADn,Pos", "layout": "time,neurons", "angle": "Ang", "bin_times": "t"}
    a, b = load_recording(v73, **kw), load_recording(v7, **kw)
    assert a.Y.shape == (1, 5, 300) and a.bin_size == b.bin_size == 0.025
    np.testing.assert_array_equal(a.Y[0, :3], variables["ADn"].T)
    for got, ref in ((a, b), (load_recording(v73, array="trials"),
                              load_recording(v7, array="trials")),
                     (load_recording(v73, array="S"), load_recording(v7, array="S"))):
        np.testing.assert_array_equal(got.Y, ref.Y)
    np.testing.assert_array_equal(a.head_direction, b.head_direction)
    np.testing.assert_array_equal(a.bin_times, b.bin_times)
    # the command line reads it too: it gets as far as the time window
    line = _cli_error(v73, tmp_path, capsys, "--array", "ADn,Pos", "--layout", "time,neurons",
                      "--start", "1000")
    assert "holds 0 bins" in line


@pytest.mark.fault("a MATLAB v7.3 .mat file cut off halfway",
                   "error: not a MATLAB v7.3 (HDF5) file or truncated")
def test_cut_off_matlab_v73_is_refused(tmp_path, capsys):
    path = tmp_path / "s73.mat"
    _save_mat73(path, {"Y": np.ones((200, 5)), "bin_size": 0.1})
    _refused(_cut(path), tmp_path, capsys, "is not a MATLAB v7.3 (HDF5) file or is truncated")


@pytest.mark.fault("a MATLAB v7.3 file whose counts are text or an empty matrix",
                   "error: the array is a MATLAB char / is empty; choose another with --array")
@pytest.mark.parametrize("value, problem", [("spikes", "is a MATLAB char, not a numeric array"),
                                            (np.zeros((0, 0)), "is empty")])
def test_matlab_v73_unusable_variable_is_refused(tmp_path, capsys, value, problem):
    path = tmp_path / "s73.mat"
    _save_mat73(path, {"Y": value, "bin_size": 0.1})
    err = _refused(path, tmp_path, capsys, problem)
    assert err.argument == "array" and "choose another with" in str(err)


@pytest.mark.fault("an .nwb file without pynwb installed",
                   "error: reading NWB needs pynwb; pip install pynwb")
def test_nwb_without_pynwb_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynwb", None)  # `import pynwb` raises ImportError
    path = tmp_path / "rec.nwb"
    with h5py.File(path, "w") as f:
        f.create_group("units")
    err = _refused(path, tmp_path, capsys, "needs pynwb", bin_size=0.1)
    assert "pip install pynwb" in str(err)


@pytest.mark.fault("--array naming an array that the file lacks",
                   "error: lists the arrays in the file (still a KeyError for old code)")
def test_missing_array_is_refused(tmp_path, capsys):
    path = tmp_path / "rec.npz"
    np.savez(path, counts_matrix=np.ones((5, 40)), bin_size=0.1)
    with pytest.raises(MissingArrayError) as info:
        load_recording(path, array="Y2")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, ValueError)
    assert err.argument == "array" and not str(err).startswith("'")
    assert str(path) in str(err) and "counts_matrix" in str(err)
    line = _cli_error(path, tmp_path, capsys, "--array", "Y2")
    assert "no array 'Y2'" in line and "counts_matrix" in line


@pytest.mark.fault("a file that stores no bin size, without --bin-size",
                   "error: pass --bin-size")
def test_missing_bin_size_is_refused(tmp_path, capsys):
    path = tmp_path / "rec.npz"
    np.savez(path, Y=np.ones((5, 40)))
    err = _refused(path, tmp_path, capsys, "has no 'bin_size'", cls=MissingBinSizeError)
    assert err.argument == "bin_size"
    assert "--bin-size" in _cli_error(path, tmp_path, capsys)
