"""Fault injection: each case feeds a bad input or interrupts a run and checks that nothing is
lost and nothing wrong is reported. The ``fault`` markers (what was tried, what happens) make
the table of docs/reliability.md; tests/test_faults_io.py and tests/test_faults_comms.py hold
the cases of the file readers and of the network analyses."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import mgplvm.fitting as fit_module
from mgplvm import MGPLVM, crossvalidate, fit
from mgplvm._interrupts import FitInterrupted
from mgplvm.cli import main
from mgplvm.datasets import head_direction_ring
from mgplvm.workflow import json_text

REPO = Path(__file__).resolve().parents[1]


def _ring(seed=0, n_neurons=8, n_time=60):
    return head_direction_ring(n_neurons=n_neurons, n_time=n_time, seed=seed)


def _svi_model(data, **kw):
    kw = {"n_inducing": 8, "seed": 0, "latent_posterior": "relie", "prior": "uniform", **kw}
    return MGPLVM("T1", data.n_neurons, data.n_time, bin_size=data.bin_size, **kw)


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"mgplvm {command}: error:"), err
    return err[0]


def _write_h5(path: Path, Y: np.ndarray, bin_size: float = 0.1) -> Path:
    with h5py.File(path, "w") as f:
        f["Y"] = Y
        f.attrs["bin_size"] = bin_size
    return path


CV = dict(n_splits=2, seed=0, n_workers=1, progress=False, n_eval_samples=2,
          model_kwargs={"latent_posterior": "relie", "prior": "uniform", "n_inducing": 6},
          fit_kwargs={"n_iter": 4, "n_mc": 1}, test_fit_kwargs={"n_iter": 2, "n_mc": 1})


# ------------------------------------------------------------------------ cross-validation
@pytest.mark.fault("crossval resumed into a folder of another recording of the same shape",
                   "saved folds are keyed on a hash of the data and settings: recomputed")
def test_crossval_resume_recomputes_another_recordings_folds(tmp_path):
    a, b = _ring(seed=0).Y, _ring(seed=5).Y
    crossvalidate(a, ["T1"], results_dir=tmp_path, **CV)
    with pytest.warns(UserWarning, match="another recording or other settings"):
        resumed = crossvalidate(b, ["T1"], results_dir=tmp_path, **CV)
    fresh = crossvalidate(b, ["T1"], **CV)
    np.testing.assert_array_equal(resumed.scores()["T1"], fresh.scores()["T1"])
    # and a rerun on the same data reuses every fold (nothing is fitted)
    calls = []
    real = fit_module.fit
    fit_module.fit = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        again = crossvalidate(b, ["T1"], results_dir=tmp_path, **CV)
    finally:
        fit_module.fit = real
    assert calls == [] and np.array_equal(again.scores()["T1"], fresh.scores()["T1"])


@pytest.mark.fault("crossval resumed after folds had failed",
                   "failed folds are retried, finished ones reused")
def test_crossval_resume_retries_failed_folds(tmp_path, monkeypatch):
    Y = _ring().Y

    def broken(*args, **kwargs):
        raise np.linalg.LinAlgError("injected")

    monkeypatch.setattr(fit_module, "fit", broken)
    first = crossvalidate(Y, ["T1"], results_dir=tmp_path, **CV)
    assert len(first.failed) == 2
    monkeypatch.undo()
    second = crossvalidate(Y, ["T1"], results_dir=tmp_path, **CV)
    assert second.failed == [] and np.isfinite(second.scores()["T1"]).all()


@pytest.mark.fault("crossvalidate with negative or non-integer counts",
                   "ValueError before any fold starts")
def test_crossval_checks_counts_before_the_folds(monkeypatch):
    calls = []
    monkeypatch.setattr(fit_module, "fit", lambda *a, **k: calls.append(1))
    Y = _ring().Y.astype(float)
    for bad, match in ((-1.0, "negative"), (0.5, "non-integer")):
        Z = Y.copy()
        Z[0, 0, 0] = bad
        with pytest.raises(ValueError, match=match):
            crossvalidate(Z, ["T1"], n_splits=2, progress=False)
    assert calls == []


@pytest.mark.fault("crossval with a step size that makes every fit diverge (lr=100)",
                   "folds reported failed, never scored; the CLI exits 2 when all fail")
def test_crossval_diverged_fits_fail_their_folds(tmp_path, capsys):
    Y = _ring().Y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = crossvalidate(Y, ["T1"], **{**CV, "fit_kwargs": {"n_iter": 30, "lr": 100.0}})
    assert len(res.failed) == 2 and np.isnan(res.scores()["T1"]).all()
    assert all("diverged" in r["error"] or "nan" in r["error"] for r in res.failed)
    with pytest.raises(RuntimeError, match="every fold failed"):
        res.winner()


@pytest.mark.fault("mgplvm crossval where every fold fails", "exit 2, one line with the first "
                   "fold's error")
def test_cli_crossval_every_fold_failing(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise np.linalg.LinAlgError("injected failure")

    monkeypatch.setattr(fit_module, "fit", broken)
    path = _write_h5(tmp_path / "r.h5", _ring().Y)
    rc = main(["crossval", str(path), "--manifolds", "T1", "--splits", "2", "--workers", "1",
               "--no-progress", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "injected failure" in _one_line_error(capsys, "crossval")


@pytest.mark.fault("SIGTERM to mgplvm crossval --workers 2",
                   "exit 130 and the worker processes end with it")
def test_sigterm_ends_crossval_workers(tmp_path):
    path = _write_h5(tmp_path / "r.h5", _ring(n_time=400).Y)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mgplvm.cli", "crossval", str(path), "--manifolds", "R1,R2",
         "--splits", "4", "--workers", "2", "--iterations", "100000", "--no-progress",
         "--out", str(tmp_path / "o")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        workers = _wait_for_children(proc.pid, 2, timeout=90)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130, proc.stderr.read()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), workers


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with open(task / "children") as fh:
            out += [int(v) for v in fh.read().split()]
    return out


def _wait_for_children(pid: int, n: int, timeout: float) -> list[int]:
    """Worker processes of the pool (the spawn start method adds a resource tracker: the
    children that are still running after ``n`` appear)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _children(pid)
        if len(kids) >= n + 1 or (len(kids) >= n and time.monotonic() > deadline - timeout / 2):
            return kids
        time.sleep(0.2)
    raise AssertionError(f"no worker processes after {timeout} s")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------------- saving
@pytest.mark.fault("a save interrupted half-way over an existing model.pt",
                   "the previous file stays loadable; no temporary file left")
def test_interrupted_save_keeps_the_previous_model(tmp_path, monkeypatch):
    data = _ring()
    model = _svi_model(data)
    path = tmp_path / "model.pt"
    model.save(path)
    before = path.read_bytes()
    real_save = torch.save

    def torn(obj, f, *args, **kwargs):
        f.write(b"partial")  # a kill arrives mid-write
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert MGPLVM.load(path).n_neurons == data.n_neurons
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.fault("SIGKILL while a process saves model.pt over and over",
                   "model.pt loads after every kill")
def test_killed_saves_leave_a_loadable_model(tmp_path):
    path = tmp_path / "model.pt"
    script = (
        "import sys\nfrom mgplvm import MGPLVM\n"
        "m = MGPLVM('T1', 40, 2000, latent_posterior='relie', n_inducing=30, seed=0)\n"
        f"m.save({str(path)!r})\nprint('ready', flush=True)\n"
        f"while True:\n    m.save({str(path)!r})\n"
    )
    for delay in (0.05, 0.2, 0.45):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True, cwd=REPO)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert MGPLVM.load(path).n_time == 2000


# ------------------------------------------------------------------------- fits, resuming
@pytest.mark.fault("mgplvm fit stopped by SIGTERM, then run again with --resume",
                   "checkpoint written on the signal, exit 130; the resumed fit equals an "
                   "uninterrupted one")
def test_cli_fit_sigterm_then_resume(tmp_path):
    path = _write_h5(tmp_path / "r.h5", _ring(n_time=300).Y)
    argv = [sys.executable, "-m", "mgplvm.cli", "fit", str(path), "--manifold", "T1",
            "--posterior", "relie", "--iterations", "400", "--checkpoint-every", "5",
            "--no-progress", "--out", str(tmp_path / "a")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    deadline = time.monotonic() + 120
    while not (tmp_path / "a" / "checkpoint.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    stderr = proc.stderr.read()
    if rc == 0:
        pytest.skip("the fit finished before the signal (a very fast machine)")
    assert rc == 130, stderr
    assert "--resume" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert 0 < ckpt["iteration"] < 400
    done = subprocess.run([*argv, "--resume"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    with h5py.File(tmp_path / "a" / "latents.h5") as f:
        assert len(f["losses"]) == summary["iterations"] > ckpt["iteration"]


@pytest.mark.parametrize("optimizer", ["adam", "ngd", "fishleg"])
@pytest.mark.fault("a fit interrupted (SIGINT) and resumed from its checkpoint, per optimiser",
                   "bitwise the same losses and parameters as an uninterrupted fit")
def test_interrupted_fit_resumes_bitwise(tmp_path, optimizer):
    data = _ring(n_time=40)
    mkw = {"variational_distribution": "natural"} if optimizer == "ngd" else {}
    kw = dict(n_mc=1, n_iter=12, progress=False, early_stopping=False, optimizer=optimizer,
              lr_final=0.2, optimizer_kwargs={"aux_every": 2} if optimizer == "fishleg" else {})
    whole = _svi_model(data, **mkw)
    ref = fit(whole, data.Y, seed=3, **kw)
    ck = tmp_path / "c.pt"

    def interrupt(it, loss, model):
        if it == 5:
            os.kill(os.getpid(), signal.SIGINT)

    part = _svi_model(data, **mkw)
    with pytest.raises(FitInterrupted) as info:
        fit(part, data.Y, seed=3, checkpoint=ck, checkpoint_every=1000, callback=interrupt,
            **kw)
    assert info.value.iteration == 6 and ck.exists()
    resumed = _svi_model(data, **mkw)
    res = fit(resumed, data.Y, resume=ck, **kw)
    np.testing.assert_array_equal(res.losses, ref.losses)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)


@pytest.mark.fault("the ring's EM fit interrupted (SIGINT) and resumed",
                   "bitwise the same as an uninterrupted fit")
def test_interrupted_em_fit_resumes_bitwise(tmp_path):
    data = _ring(n_time=100)

    def model():
        return MGPLVM("T1", data.n_neurons, data.n_time, bin_size=data.bin_size, seed=0)

    whole = model()
    ref = fit(whole, data.Y, n_iter=6, rtol=0.0, progress=False, seed=0)
    ck = tmp_path / "em.pt"

    sent = []

    def interrupt(it, loss, m):
        if it >= 2 and not sent:
            sent.append(it)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(FitInterrupted):
        fit(model(), data.Y, n_iter=6, rtol=0.0, progress=False, seed=0, checkpoint=ck,
            callback=interrupt)
    resumed = model()
    res = fit(resumed, data.Y, n_iter=6, rtol=0.0, progress=False, resume=ck)
    np.testing.assert_array_equal(res.losses, ref.losses)
    np.testing.assert_array_equal(resumed.latents.probs.numpy(), whole.latents.probs.numpy())


@pytest.mark.fault("fit with lr=100 (the loss blows up, then NaN)",
                   "reason='diverged', starting parameters restored, a warning")
def test_diverged_fit_is_reported_and_restored():
    data = _ring()
    model = _svi_model(data)
    model.init_from_data(data.Y)  # fit starts from here
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(RuntimeWarning, match="diverged"):
        res = fit(model, data.Y, n_iter=40, lr=100.0, progress=False, seed=0)
    assert res.reason == "diverged" and res.diverged and not res.converged
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, start[k], rtol=0, atol=0, msg=k)


@pytest.mark.fault("fit with lr=10000 (Cholesky of NaN)",
                   "no exception escapes: the fit stops with reason 'nan' or 'diverged'")
def test_nan_cholesky_does_not_escape_fit():
    data = _ring()
    model = _svi_model(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(model, data.Y, n_iter=20, lr=1e4, progress=False, seed=0)
    assert res.reason in ("nan", "diverged", "cholesky")
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------------ nonsense inputs
@pytest.mark.fault("fit(n_iter=0) or n_iter=-5", "ValueError naming n_iter")
def test_fit_refuses_no_iterations():
    data = _ring()
    for n in (0, -5):
        with pytest.raises(ValueError, match="n_iter"):
            fit(_svi_model(data), data.Y, n_iter=n, progress=False)
        with pytest.raises(ValueError, match="n_iter"):
            fit(MGPLVM("T1", data.n_neurons, data.n_time), data.Y, n_iter=n, progress=False)


@pytest.mark.fault("MGPLVM(latent_sd=0), lengthscale=-1, outputscale=nan",
                   "ValueError naming the argument")
def test_model_refuses_non_positive_scales():
    for name, value in (("latent_sd", 0.0), ("lengthscale", -1.0), ("outputscale", math.nan)):
        with pytest.raises(ValueError, match=name):
            MGPLVM("T1", 5, 20, **{name: value})


@pytest.mark.fault("mgplvm fit --iterations 0, crossval --workers 0, demo --minutes -1, "
                   "comms --alpha 0 / nan", "exit 2, one line naming the flag")
@pytest.mark.parametrize("argv", [
    ["fit", "x.h5", "--iterations", "0"],
    ["crossval", "x.h5", "--workers", "0"],
    ["demo", "--minutes", "-1"],
    ["comms", "--alpha", "0"],
    ["comms", "--alpha", "nan"],
    ["simulate", "--neurons", "0"],
])
def test_cli_refuses_nonsense_numbers(argv, capsys):
    assert main(argv) == 2
    line = _one_line_error(capsys, argv[0])
    assert argv[-2] in line


@pytest.mark.fault("a fit summary with NaN entries (e.g. no tracked angle)",
                   "summary.json is strict JSON: NaN and inf written as null")
def test_summary_json_is_strict():
    text = json_text({"a": math.nan, "b": [1.0, math.inf], "c": np.float32(2.5),
                      "d": np.arange(2)})
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": 2.5, "d": [0, 1]}
    assert "NaN" not in text and "Infinity" not in text
