"""The ``mgplvm`` command line and the demo workflow (smoke settings)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mgplvm.cli import BUNDLED, build_parser, main


def test_help_explains_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("demo", "fit", "crossval", "simulate", "comms"):
        assert command in text
    parser = build_parser()
    for command in ("demo", "fit", "crossval", "simulate", "comms"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: mgplvm" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "no/such/file.h5"], "no such file"),
        (["fit", str(BUNDLED), "--manifold", "Q7"], "unknown manifold 'Q7'"),
        (["fit", str(BUNDLED), "--array", "nope"], "no array 'nope'"),
        (["crossval", str(BUNDLED), "--manifolds", "T1,K3"], "unknown manifold 'K3'"),
        (["crossval", str(BUNDLED), "--splits", "0"], "argument --splits: must be at least 1"),
        (["fit", str(BUNDLED), "--refit-steps", "0.1,x"], "--refit-steps needs positive"),
        (["fit", str(BUNDLED), "--refit-steps", "0.1,-1"], "--refit-steps needs positive"),
        (["fit", str(BUNDLED), "--refit-steps", "0.1", "--refit-rounds", "0"],
         "argument --refit-rounds: must be at least 1"),
        (["fit", str(BUNDLED), "--init", "quadratic"], "--init quadratic is for --manifold SO3"),
        (["simulate", "missing.json"], "no such settings file"),
        (["comms", "--n", "1"], "--n must be at least 2"),
    ],
)
def test_user_errors_are_one_line_with_exit_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert err.startswith(f"mgplvm {argv[0]}: error:")


def test_crossval_passes_the_test_latent_start_on(monkeypatch, tmp_path):
    """``mgplvm crossval --test-init smooth --test-posterior smoothed`` reach
    :func:`mgplvm.crossvalidate`."""
    import mgplvm.crossval

    seen = {}

    class Stop(Exception):
        pass

    def fake(Y, manifolds, **kwargs):
        seen.update(kwargs, manifolds=manifolds)
        raise Stop

    monkeypatch.setattr(mgplvm.crossval, "crossvalidate", fake)
    with pytest.raises(Stop):
        main(["crossval", str(BUNDLED), "--manifolds", "T1,R1", "--splits", "1",
              "--test-init", "smooth", "--test-posterior", "smoothed", "--out", str(tmp_path),
              "--no-progress"])
    assert seen["test_init"] == "smooth" and seen["manifolds"] == ["T1", "R1"]
    assert seen["test_posterior"] == "smoothed"
    assert seen["model_kwargs"]["prior"] == "brownian"
    assert seen["refit_kwargs"] is None
    assert seen["time_gaps"] is True
    with pytest.raises(Stop):
        main(["crossval", str(BUNDLED), "--manifolds", "T1", "--splits", "1", "--no-time-gaps",
              "--out", str(tmp_path), "--no-progress"])
    assert seen["time_gaps"] is False
    with pytest.raises(Stop):
        main(["crossval", str(BUNDLED), "--manifolds", "T1", "--splits", "1",
              "--refit-steps", "0.05,0.1", "--refit-rounds", "2", "--refit-iterations", "50",
              "--out", str(tmp_path), "--no-progress"])
    assert seen["refit_kwargs"] == {"step_sds": [0.05, 0.1], "rounds": 2, "n_iter": 50}
    assert main(["crossval", str(BUNDLED), "--refit-steps", "0,x", "--out",
                 str(tmp_path)]) == 2


def test_errors_also_clean_through_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "mgplvm.cli", "fit", "nope.h5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_simulate_prints_summary_and_saves(tmp_path, capsys):
    """The default is the realistic head-direction session (here 2 minutes); a settings file
    picks any generator."""
    out = tmp_path / "sim.h5"
    assert main(["simulate", "--minutes", "2", "--neurons", "20", "--save", str(out)]) == 0
    text = capsys.readouterr().out
    assert "realistic_head_direction" in text and "20 neurons x 4800 bins" in text
    with h5py.File(out) as f:
        assert f["Y"].shape == (1, 20, 4800) and "tracker_angles" in f["params"]
    from mgplvm.io import load_recording

    assert load_recording(out).head_direction.shape == (1, 4800)
    assert main(["simulate", str(BUNDLED.parent / "synthetic_ring.json")]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert main(["simulate", "--minutes", "-1"]) == 2


def test_comms_prints_normal_vs_nonnormal_table(capsys):
    assert main(["comms", "--n", "3", "--noise", "1"]) == 0
    out = capsys.readouterr().out
    assert "R_max normal" in out
    row = out.strip().splitlines()[-1].split()
    assert float(row[0]) == 1.0 and float(row[-1]) > 0


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_demo_writes_a_complete_report(quick_demo):
    out = quick_demo
    index = (out / "index.html").read_text()
    for png in ("elbo.png", "tuning.png", "head_direction.png", "crossval.png"):
        assert (out / png).stat().st_size > 5000, png
        assert f'src="{png}"' in index
    assert "Cross-validation" in index and "<table>" in index
    for f in ("cv.txt", "cv.csv", "cv.h5", "model.pt", "latents.h5"):
        assert (out / f).exists(), f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fit"]["manifold"] == "T1"
    assert 0 <= summary["fit"]["median_error_deg"] < 90
    assert summary["cv_winner"] in ("T1", "R1")


def test_demo_outputs_reload(quick_demo):
    from mgplvm.crossval import CVResult
    from mgplvm.model import MGPLVM

    model = MGPLVM.load(quick_demo / "model.pt")
    with h5py.File(quick_demo / "latents.h5") as f:
        mean = f["mean"][()]
        assert f.attrs["manifold"] == "T1"
    np.testing.assert_allclose(model.latent_posterior().mean.numpy(), mean)
    cv = CVResult.load(quick_demo / "cv.h5")
    assert cv.manifolds == ["T1", "R1"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="needs a Chromium binary for the screenshot")
def test_report_renders_in_headless_chromium(quick_demo, tmp_path):
    shot = tmp_path / "report.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1200,2400", f"--screenshot={shot}",
           (Path(quick_demo) / "index.html").resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 20_000
    from matplotlib.image import imread

    img = imread(shot)
    # the page is not blank: figures put many non-white pixels on it
    assert (img[..., :3] < 0.9).any(-1).mean() > 0.05


def test_readme_api_example_runs(monkeypatch, tmp_path):
    """The README's Python example, with iteration counts cut down for the test."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    small = (code.replace("n_iter=1000", "n_iter=3").replace("n_splits=4", "n_splits=1")
             .replace("[..., :2400]", "[..., :120]").replace('["T1", "R1", "R2"]', '["T1", "R1"]'))
    assert small != code
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    exec(compile(small.replace("n_splits=1,", "n_splits=1, n_workers=1, progress=False,"),
                 "README.md", "exec"), {})


def test_fit_with_smoothing_refits(tmp_path):
    """``mgplvm fit --refit-steps`` follows the fit with mgplvm.refit_by_smoothing rounds: the
    saved losses span every phase, the summary names the chosen step s.d.s and the saved model
    keeps the last one fixed."""
    import torch

    from mgplvm.datasets import head_direction_ring, save_h5
    from mgplvm.model import MGPLVM

    path = tmp_path / "ring.h5"
    save_h5(head_direction_ring(n_neurons=12, n_time=120, seed=1), path)
    out = tmp_path / "fit"
    argv = ["fit", str(path), "--iterations", "30", "--refit-steps", "0.05,0.3",
            "--refit-rounds", "2", "--refit-iterations", "20", "--init", "random",
            "--posterior", "relie", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 30 + 2 * 20
    assert len(summary["refit_step_sds"]) == 2
    assert set(summary["refit_step_sds"]) <= {0.05, 0.3}
    with h5py.File(out / "latents.h5") as f:
        assert f["losses"].shape == (70,)
    model = MGPLVM.load(out / "model.pt")
    assert model.config()["init"] == "random"  # --init reached the model
    assert not model.prior.raw_step_sd.requires_grad
    assert torch.allclose(model.prior.step_sd.double(),
                          torch.tensor(float(summary["refit_step_sds"][-1]), dtype=torch.float64))


def test_fit_recording_skips_refits_after_a_failed_fit(monkeypatch):
    import mgplvm.fitting
    from mgplvm.fitting import FitResult
    from mgplvm.io import load_recording
    from mgplvm.workflow import fit_recording

    def failed_fit(model, Y, **kw):
        return FitResult(losses=np.array([np.nan]), elapsed=0.0, n_iter=1, converged=False,
                         reason="nan")

    def no_refit(*a, **kw):
        raise AssertionError("refit after a failed fit")

    monkeypatch.setattr(mgplvm.fitting, "fit", failed_fit)
    monkeypatch.setattr(mgplvm.fitting, "refit_by_smoothing", no_refit)
    rec = load_recording(BUNDLED)
    with pytest.warns(UserWarning, match="refits were skipped"):
        _, result = fit_recording(rec, "T1", refit_steps=[0.1],
                                  model_kwargs={"latent_posterior": "relie"})
    assert result.reason == "nan"
    # the ring's default grid posterior is exact: refits are refused with a reason
    with pytest.raises(ValueError, match="exact posterior"):
        fit_recording(rec, "T1", refit_steps=[0.1])


# ------------------------------------------------------------------ real-data options, decode
@pytest.fixture(scope="module")
def th1_file(tmp_path_factory):
    """A real-shaped recording: counts (time, cells) in two arrays, 25-ms bins, the tracked
    angle per bin in [0, 2π) with untracked (NaN) stretches, as in the CRCNS th-1 exports."""
    from scipy.io import savemat

    from mgplvm.datasets import realistic_head_direction

    data = realistic_head_direction(minutes=1.5, n_neurons=16, seed=4)
    rec = data.to_recording()
    path = tmp_path_factory.mktemp("th1") / "session.mat"
    counts = data.Y[0].T.astype(np.uint8)
    savemat(path, {"ADn": counts[:, :10], "Pos": counts[:, 10:],
                   "Ang": np.mod(rec.head_direction[0], 2 * np.pi)[:, None]})
    return path, data


def test_fit_reads_a_real_shaped_file(th1_file, tmp_path, capsys):
    path, data = th1_file
    out = tmp_path / "fit"
    argv = ["fit", str(path), "--array", "ADn,Pos", "--layout", "time,neurons",
            "--file-bin-size", "0.025", "--bin-size", "0.05", "--angle", "Ang",
            "--start", "10", "--stop", "80", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "16 neurons x 1400 bins of 50 ms" in text and "untracked" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["median_error_deg"] < 15
    with h5py.File(out / "latents.h5") as f:
        assert f["mean"].shape == (1, 1400, 1)


@pytest.mark.parametrize("extra, message", [
    ([], "looks transposed.*--layout time,neurons"),
    (["--layout", "time,neurons", "--file-bin-size", "0.025", "--bin-size", "0.04"],
     "whole multiple"),
    (["--layout", "time,neurons", "--file-bin-size", "0.025", "--angle", "Nope"], "Nope"),
    (["--layout", "time,neurons", "--file-bin-size", "0.025", "--iterations", "0"],
     "--iterations"),
    (["--layout", "time,neurons", "--file-bin-size", "-1"], "--file-bin-size"),
])
def test_fit_refuses_bad_data_options(th1_file, tmp_path, capsys, extra, message):
    path, _ = th1_file
    argv = ["fit", str(path), "--array", "ADn,Pos", "--out", str(tmp_path / "o"),
            "--no-progress", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line, no traceback
    import re

    assert re.search(message, err), err


def test_decode_a_new_recording_under_a_fitted_model(th1_file, tmp_path, capsys):
    """`mgplvm decode MODEL FILE`: the frozen tuning curves read out another stretch of the
    same cells; the decoded path follows the tracked angle."""
    path, data = th1_file
    out = tmp_path / "fit"
    common = ["--array", "ADn,Pos", "--layout", "time,neurons", "--file-bin-size", "0.025",
              "--angle", "Ang", "--no-progress"]
    assert main(["fit", str(path), *common, "--stop", "45", "--out", str(out)]) == 0
    dec = tmp_path / "dec"
    assert main(["decode", str(out / "model.pt"), str(path), *common, "--start", "45",
                 "--out", str(dec)]) == 0
    summary = json.loads((dec / "summary.json").read_text())
    assert summary["median_error_deg"] < 15 and summary["bins"] == 1800
    with h5py.File(dec / "decoded.h5") as f:
        assert f["mean"].shape == (1, 1800, 1) and f["radius"].shape == (1, 1800)
        assert f.attrs["level"] == 0.95
    assert (dec / "index.html").exists()
    capsys.readouterr()
    assert main(["decode", str(out / "model.pt"), str(path), "--array", "ADn",
                 "--layout", "time,neurons", "--file-bin-size", "0.025",
                 "--out", str(dec)]) == 2
    assert "10 neurons, the model 16" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "none.pt"), str(path)]) == 2
