"""End-to-end workflows behind the ``mgplvm`` command line (and usable from Python).

* :func:`fit_recording` — fit one manifold to a :class:`~mgplvm.io.Recording` with defaults that
  work on the bundled data (time minibatches for long recordings).
* :func:`report_fit` — add the fit's figures to a :class:`~mgplvm.report.Report`: ELBO trace,
  polar tuning curves with ±2 s.d. bands (rings), inferred vs tracked head direction with its
  credible band, and the alignment error when ground truth or tracking exists.
* :func:`report_crossval` — table (``cv.txt``, ``cv.csv``), ``cv.h5`` and the comparison plot.
* :func:`run_demo` — the bundled head-direction recording: fit on T¹, cross-validate T¹, R¹, R²
  and S², write the report.

The ``cmd_*`` functions take the parsed ``argparse`` namespace of :mod:`mgplvm.cli`.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mgplvm._atomic import atomic_path, atomic_write_text
from mgplvm.cli import BUNDLED, CLIError

__all__ = [
    "DemoResult",
    "FIT_DEFAULTS",
    "fit_recording",
    "report_fit",
    "report_crossval",
    "run_crossval",
    "run_demo",
]

#: defaults of :func:`fit_recording` for models fitted by stochastic variational inference (every
#: manifold but the ring, whose exact-posterior EM fit has its own defaults,
#: :data:`mgplvm.em.EM_DEFAULTS`); override by keyword
FIT_DEFAULTS: dict[str, Any] = {"n_iter": 1000, "n_mc": 4, "lr": 0.05, "max_full_batch": 1000,
                                "batch_size": 500}
#: latent prior used by the workflows on every manifold: the package default
#: (:func:`mgplvm.latents.default_prior`, a random walk on Lie-algebra increments)
WORKFLOW_PRIOR = "brownian"


# ------------------------------------------------------------------------------------ loading
def load(path: str | Path, array: str | None = None, bin_size: float | None = None,
         layout: str | None = None):
    """Load a recording with messages that say what to do when it fails."""
    from mgplvm.io import load_recording

    p = Path(path)
    if not p.exists():
        raise CLIError(
            f"no such file: {p}. Give the path of a recording (.h5/.hdf5, .npz, .npy, .mat or "
            "an .nwb file), or run `mgplvm demo` to use the bundled one."
        )
    try:
        return load_recording(p, array=array, bin_size=bin_size, layout=layout)
    except (KeyError, ValueError) as err:
        raise CLIError(_cli_message(err)) from err


def load_from_args(args):
    """The recording named on the command line, read with the data options of
    :func:`mgplvm.cli._add_recording_args` (arrays, angle, bin times), then re-binned
    (``--bin-size``) and cut to ``--start``/``--stop``."""
    from mgplvm.io import MissingBinSizeError, load_recording

    p = Path(args.file)
    if not p.exists():
        raise CLIError(
            f"no such file: {p}. Give the path of a recording (.h5/.hdf5, .npz, .npy, .mat or "
            "an .nwb file), or run `mgplvm demo` to use the bundled one."
        )
    for flag, value in (("--bin-size", args.bin_size), ("--file-bin-size", args.file_bin_size),
                        ("--angle-rate", args.angle_rate)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise CLIError(f"{flag} must be a positive number, got {value}")
    times: Any = args.bin_times
    if times is not None and Path(times).suffix in (".npy", ".txt") and Path(times).exists():
        times = np.load(times) if times.endswith(".npy") else np.loadtxt(times)
    kw = {"array": args.array, "layout": args.layout, "angle": args.angle,
          "angle_rate": args.angle_rate, "angle_start": args.angle_start, "bin_times": times}
    try:
        try:
            rec = load_recording(p, bin_size=args.file_bin_size, **kw)
        except MissingBinSizeError:
            if args.bin_size is None:
                raise
            rec = load_recording(p, bin_size=args.bin_size, **kw)
        if args.bin_size is not None and abs(args.bin_size - rec.bin_size) > 1e-9 * rec.bin_size:
            rec = rec.rebin(args.bin_size)
        if args.start is not None or args.stop is not None:
            rec = rec.window(args.start, args.stop)
    except (KeyError, ValueError) as err:
        raise CLIError(_cli_message(err)) from err
    return rec


#: keyword arguments of the library -> the command line's flags
_FLAGS = {"layout": "--layout", "bin_size": "--bin-size", "angle_rate": "--angle-rate",
          "angle_start": "--angle-start", "array": "--array", "angle": "--angle",
          "bin_times": "--bin-times"}


def _flag_names(msg: str) -> str:
    """Library messages name keyword arguments; on the command line they are flags."""
    msg = msg.replace("Pass array='<name>' to choose one.", "Choose one with --array NAME.")
    for kw in sorted(_FLAGS, key=len, reverse=True):  # angle_rate= before angle=
        msg = re.sub(rf"(?<![\w-]){kw}=", _FLAGS[kw] + " ", msg)
    return msg


def _cli_message(err: BaseException) -> str:
    """One line for a loading error: its message with flags for keyword arguments, and the
    flag to change when the error names one (:class:`mgplvm.io.RecordingFormatError`)."""
    msg = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
    msg = _flag_names(msg)
    flag = _FLAGS.get(getattr(err, "argument", None) or "")
    if flag and flag not in msg:
        msg += f" (see {flag})"
    return " ".join(msg.split())


def _check_manifold(name: str):
    from mgplvm.model import manifold_from_name

    try:
        return manifold_from_name(name)
    except (ValueError, KeyError) as err:
        raise CLIError(str(err.args[0] if err.args else err)) from err


# ------------------------------------------------------------------------------------ fitting
def fit_recording(rec, manifold: str = "T1", *, likelihood: str = "poisson", seed: int = 0,
                  progress: bool = True, optimizer: str = "adam", init: str = "pca",
                  refit_steps: Sequence[float] | None = None, refit_rounds: int = 3,
                  refit_iter: int = 600, model_kwargs: dict[str, Any] | None = None,
                  **overrides: Any):
    """Fit an :class:`~mgplvm.MGPLVM` on ``manifold`` to ``rec`` -> ``(model, FitResult)``.

    The model is the package default for ``manifold`` (on the ring: the exact grid posterior,
    fitted by EM with :data:`mgplvm.em.EM_DEFAULTS` — the same fit as
    ``mgplvm.fit(mgplvm.MGPLVM("T1", ...), Y)``); the recording's bin times (gaps between joined
    epochs) go to the latent prior. Other manifolds are fitted by stochastic variational
    inference with :data:`FIT_DEFAULTS`: recordings longer than ``max_full_batch`` bins on
    random windows of ``batch_size`` bins per iteration (an unbiased ELBO estimate; see
    :func:`mgplvm.fit`). ``overrides`` update those defaults; other keys are passed to
    :func:`mgplvm.fit`.
    ``init``: the latent start (:class:`~mgplvm.MGPLVM`'s ``init``; ``"quadratic"`` on SO(3));
    ``model_kwargs``: further :class:`~mgplvm.MGPLVM` arguments (e.g. ``latent_posterior``).
    With ``refit_steps`` (Brownian step s.d.s, rad/bin) the fit is followed by ``refit_rounds``
    rounds of :func:`mgplvm.refit_by_smoothing` of ``refit_iter`` iterations each; the returned
    result then spans every phase (losses concatenated, iterations and seconds summed) and its
    ``config["refit"]`` holds the chosen step s.d.s and the evidence of each candidate.
    """
    from mgplvm.fitting import FitResult, fit, refit_by_smoothing
    from mgplvm.grid import GridPosterior
    from mgplvm.model import MGPLVM

    n_trials, n_neurons, n_time = rec.Y.shape
    model_kwargs = {"prior": overrides.pop("prior", WORKFLOW_PRIOR), "init": init,
                    **(model_kwargs or {})}
    if optimizer in ("ngd", "ngd+fishleg"):
        model_kwargs["variational_distribution"] = "natural"
    model = MGPLVM(manifold, n_neurons, n_time, n_trials, likelihood=likelihood,
                   bin_size=rec.bin_size, seed=seed, bin_times=rec.bin_times_in_bins(),
                   **model_kwargs)
    if isinstance(model.latents, GridPosterior):  # the exact-posterior EM fit
        if refit_steps is not None:
            raise ValueError("smoothing refits are for stochastic fits; the ring's EM fit "
                             "already uses the exact posterior of the path")
        return model, fit(model, rec.Y, seed=seed, progress=progress, **overrides)
    cfg = {**FIT_DEFAULTS, **overrides}
    max_full = cfg.pop("max_full_batch")
    batch = cfg.pop("batch_size")
    if n_time > max_full:
        cfg["batch_size"] = batch
    result = fit(model, rec.Y, seed=seed, progress=progress, optimizer=optimizer, **cfg)
    if refit_steps is None:
        return model, result
    if not np.isfinite(result.final_elbo):
        warnings.warn(f"the fit ended with a non-finite ELBO ({result.reason}); the smoothing "
                      "refits were skipped", stacklevel=2)
        return model, result
    refit_kw = {k: v for k, v in cfg.items() if k in ("n_mc", "lr", "batch_size")}
    refit = refit_by_smoothing(model, rec.Y, refit_steps, rounds=refit_rounds, seed=seed,
                               progress=progress, optimizer=optimizer, n_iter=refit_iter,
                               **refit_kw)
    phases = [result, *refit.fits]
    return model, FitResult(
        losses=np.concatenate([np.asarray(r.losses) for r in phases]),
        elapsed=sum(r.elapsed for r in phases),
        n_iter=sum(r.n_iter for r in phases),
        converged=refit.fits[-1].converged,
        reason=refit.fits[-1].reason,
        config={**result.config, "refit": {
            "rounds": int(refit_rounds), "n_iter": int(refit_iter),
            "step_sds": refit.step_sds,
            "evidence": [{str(k): v for k, v in ev.items()} for ev in refit.evidence],
        }},
    )


def _truth_of(rec, manifold_name: str):
    """Ground-truth / tracked latents ``(trials, time, ambient)`` if the recording has them."""
    if manifold_name == "T1" and rec.head_direction is not None:
        return np.asarray(rec.head_direction)[..., None]
    if rec.latents is not None:
        lat = np.asarray(rec.latents)
        return lat
    return None


def _synthetic_truth(path: str | Path):
    """The generator's :class:`~mgplvm.datasets.SyntheticData` if ``path`` is one of ours."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            if not str(f.attrs.get("schema", "")).startswith("mgplvm.synthetic"):
                return None
        from mgplvm.datasets import load_h5

        return load_h5(path)
    except Exception:  # noqa: BLE001 - tuning ground truth is optional decoration
        return None


def report_fit(report, model, result, rec, *, source: str | Path | None = None,
               max_seconds_shown: float = 40.0) -> dict[str, Any]:
    """Add the figures and numbers of one fit to ``report``; return a summary dict.

    Figures: the ELBO trace; for rings the polar tuning curves (posterior mean ± 2 s.d.; dashed:
    the generator's true curves when the file is simulated) and the inferred head direction
    (aligned to the tracked one) with its 95% credible band over the first
    ``max_seconds_shown`` seconds.
    """
    import torch

    from mgplvm.alignment import align
    from mgplvm.plotting import plot_latent_vs_truth, plot_loss, plot_polar_tuning

    name = model.manifold.name
    losses = np.asarray(result.losses)
    summary: dict[str, Any] = {
        "manifold": name, "iterations": int(result.n_iter), "stopped": result.reason,
        "final_elbo": float(result.final_elbo), "seconds": round(float(result.elapsed), 1),
    }
    report.add_figure("elbo", plot_loss(losses), "ELBO trace",
                      "Negative ELBO per iteration (a minibatch estimate for long recordings).")

    post = model.latent_posterior(level=0.95)
    truth = _truth_of(rec, name)
    al = None
    if truth is not None:
        al = align(post.mean, torch.as_tensor(truth, dtype=post.mean.dtype), model.manifold)
        if name == "T1":
            summary["median_error_deg"] = float(np.degrees(al.median_error))
        else:
            summary["median_error"] = float(al.median_error)

    if name == "T1":
        grid = torch.linspace(-math.pi, math.pi, 121, dtype=model.dtype)[:-1, None]
        # tuning curves at angles of the tracked frame: map them into the model's frame first
        pts = al.inverse(grid) if al is not None else grid
        mean, sd = model.tuning_curves(pts)
        sim = _synthetic_truth(source) if source is not None else None
        true_rates = None
        if sim is not None and sim.manifold_name == "T1":
            true_rates = sim.tuning(grid.numpy())
        order = np.argsort(np.asarray(mean.argmax(-1)))  # by preferred direction
        report.add_figure(
            "tuning", plot_polar_tuning(grid[:, 0], mean, sd, neurons=order[:24].tolist(),
                                        true_rates=true_rates),
            "Tuning curves",
            "Posterior mean firing rate (Hz) against head direction, with ±2 s.d. bands"
            + ("; dashed: the simulator's true tuning curves." if true_rates is not None else "."),
        )
        if al is not None:
            n_show = min(rec.n_time, int(max_seconds_shown / rec.bin_size))
            times = np.arange(n_show) * rec.bin_size
            inferred = al.aligned[0, :n_show, 0]
            # the credible half-width is frame independent (the alignment is an isometry)
            half = (post.upper - post.mean)[0, :n_show, 0]
            fig = plot_latent_vs_truth(times, inferred, inferred - half, inferred + half,
                                       truth=truth[0, :n_show, 0])
            report.add_figure(
                "head_direction", fig, "Inferred vs tracked head direction",
                f"Posterior mean (aligned by the ring's symmetries) with its 95% band; median "
                f"absolute error {summary['median_error_deg']:.1f}° over the whole recording.",
            )
    return summary


def json_text(obj: Any) -> str:
    """Strict JSON (``NaN``/``inf`` -> ``null``, numpy scalars and arrays as numbers/lists),
    indented: what ``summary.json`` files hold."""
    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        if isinstance(o, np.generic):
            o = o.item()
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, Path):
            return str(o)
        return o

    return json.dumps(clean(obj), indent=1, allow_nan=False, default=float)


def _write_report(report, out: Path, summary: dict[str, Any]) -> Path:
    """Write the report and ``out/summary.json`` (strict JSON, printed too) -> the report's
    index.html."""
    index = report.write()
    text = json_text(summary)
    atomic_write_text(out / "summary.json", text)
    print(text)
    return index


def _save_fit(out: Path, model, result) -> None:
    import h5py

    model.save(out / "model.pt")
    post = model.latent_posterior(level=0.95)
    with atomic_path(out / "latents.h5") as tmp, h5py.File(tmp, "w") as f:
        f.attrs["manifold"] = model.manifold.name
        f.attrs["level"] = post.level
        f["mean"] = post.mean.cpu().numpy()
        f["cov"] = post.cov.cpu().numpy()
        f["radius"] = post.radius.cpu().numpy()
        if post.lower is not None:
            f["lower"] = post.lower.cpu().numpy()
            f["upper"] = post.upper.cpu().numpy()
        f["losses"] = np.asarray(result.losses)


# ------------------------------------------------------------------------------------ crossval
def run_crossval(rec, manifolds: list[str], n_splits: int, *, seed: int = 0,
                 likelihood: str = "poisson", n_workers: int | None = None,
                 n_iter: int = 600, test_iter: int = 300, n_mc: int = 4,
                 results_dir: str | Path | None = None, progress: bool = True,
                 prior: str = WORKFLOW_PRIOR, **kwargs: Any):
    """:func:`mgplvm.crossvalidate` on a recording with the workflow's fit settings and the same
    latent ``prior`` on every candidate manifold."""
    from mgplvm.crossval import crossvalidate

    return crossvalidate(
        rec.Y, manifolds, n_splits=n_splits, likelihood=likelihood, seed=seed,
        bin_size=rec.bin_size, n_workers=n_workers, results_dir=results_dir,
        fit_kwargs={"n_iter": n_iter, "n_mc": n_mc},
        test_fit_kwargs={"n_iter": test_iter, "n_mc": n_mc}, progress=progress,
        model_kwargs={"prior": prior, **kwargs.pop("model_kwargs", {})}, **kwargs,
    )


def report_crossval(report, cv, out: Path, scope: str | None = None) -> None:
    """Write ``cv.txt``, ``cv.csv``, ``cv.h5`` and add the recommendation, table and plot to
    ``report``; ``scope`` says which data were cross-validated (shown with the recommendation)."""
    table = cv.table()
    (out / "cv.txt").write_text(table + "\n")
    _write_csv(out / "cv.csv", cv)
    cv.save(out / "cv.h5")
    summ = cv.summary()
    diffs = cv.paired_differences()
    rows = []
    for m in cv.manifolds:
        row = {"manifold": m, "held-out LL per datum": summ[m]["mean"], "s.e.m.": summ[m]["sem"],
               "folds": summ[m]["n"], "wins": cv.win_counts().get(m, 0)}
        d = diffs.get(m, {})
        row["difference to best"] = d.get("mean", 0.0)
        row["p (sign-flip, vs best)"] = d.get("signflip_pvalue", float("nan"))
        rows.append(row)
    report.add_text("Recommended manifold", _recommendation_text(cv, scope))
    report.add_table("Cross-validation (held-out neurons x held-out time bins)", rows)
    report.add_figure(
        "crossval", cv.plot(), "Manifold comparison",
        "Held-out log-likelihood per datum (higher is better); each line is one fold. "
        f"Best mean: {cv.winner()}.",
    )
    if cv.failed:
        report.add_text("Failed folds", "\n".join(
            f"{r['manifold']} fold {r['fold']}: {r['error']}" for r in cv.failed),
            preformatted=True)


def _recommendation_text(cv, scope: str | None = None) -> str:
    """The recommendation's headline and the rule behind it, for reports."""
    rec = cv.recommend()
    data = f" Data: {scope}; {cv.n_splits} folds." if scope else f" {cv.n_splits} folds."
    return (f"Recommended manifold: {rec.headline()}.{data} Rule: the simplest candidate whose "
            "held-out score is within one paired standard error of the best mean, where a "
            "candidate that contains another (R² contains a ring, S³ a torus) counts as less "
            "simple; undecided when such candidates do not contain one another.")


def _write_csv(path: Path, cv) -> None:
    cols = cv.to_dataframe()
    if hasattr(cols, "to_csv"):
        cols.to_csv(path, index=False)
        return
    keys = list(cols)
    n = len(cols[keys[0]]) if keys else 0
    lines = [",".join(keys)]
    for i in range(n):
        lines.append(",".join(str(cols[k][i]) for k in keys))
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------ the demo
@dataclass
class DemoResult:
    """What :func:`run_demo` produced: the report's ``index``, the fit summary and the CV."""

    index: Path
    fit: dict[str, Any]
    cv: Any
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)


#: demo settings: full (default) and quick (a smoke run for tests)
DEMO_SETTINGS = {
    "full": {"fit_iter": 1000, "cv_minutes": 0.5, "cv_splits": 2, "cv_iter": 300,
             "cv_test_iter": 150, "manifolds": ["T1", "R1", "R2", "S2"]},
    "quick": {"fit_iter": 30, "cv_minutes": 0.25, "cv_splits": 1, "cv_iter": 20,
              "cv_test_iter": 10, "manifolds": ["T1", "R1"]},
}


def run_demo(out: str | Path = "mgplvm_report", *, file: str | Path = BUNDLED,
             minutes: float | None = None, splits: int | None = None, quick: bool = False,
             seed: int = 0, progress: bool = True, n_workers: int | None = None,
             log=print) -> DemoResult:
    """Fit the bundled head-direction recording on T¹, cross-validate, write the report."""
    from mgplvm.io import Recording
    from mgplvm.report import Report

    start = time.perf_counter()
    settings = dict(DEMO_SETTINGS["quick" if quick else "full"])
    if splits is not None:
        settings["cv_splits"] = int(splits)
    out = Path(out)
    rec = load(file)
    if minutes is not None:
        n = max(50, int(round(minutes * 60 / rec.bin_size)))
        rec = _first_bins(rec, n)
    if quick:
        rec = _first_bins(rec, min(rec.n_time, 400))
        n_workers = 1 if n_workers is None else n_workers  # no process start-up cost
    log(f"recording: {rec.summary()}")
    report = Report(out, title="mgplvm demo: head-direction recording")
    report.add_text("Recording", rec.summary(), preformatted=True)

    log(f"fitting T1 (ring) to {rec.n_neurons} neurons x {rec.n_time} bins ...")
    model, result = fit_recording(rec, "T1", seed=seed, progress=progress,
                                  n_iter=settings["fit_iter"])
    summary = report_fit(report, model, result, rec, source=file)
    _save_fit(out, model, result)
    if "median_error_deg" in summary:
        log(f"T1 fit: {summary['iterations']} iterations in {summary['seconds']} s; median head-"
            f"direction error {summary['median_error_deg']:.1f} deg")

    n_cv = min(rec.n_time, int(round(settings["cv_minutes"] * 60 / rec.bin_size)))
    cv_rec = _first_bins(rec, n_cv) if not quick else rec
    assert isinstance(cv_rec, Recording)
    manifolds = settings["manifolds"]
    log(f"cross-validating {', '.join(manifolds)} on the first {cv_rec.n_time} bins, "
        f"{settings['cv_splits']} fold(s) ...")
    cv = run_crossval(cv_rec, manifolds, settings["cv_splits"], seed=seed,
                      n_iter=settings["cv_iter"], test_iter=settings["cv_test_iter"],
                      n_workers=n_workers, progress=progress)
    scope = (f"the first {cv_rec.n_time} bins ({cv_rec.n_time * cv_rec.bin_size:g} s) of "
             f"{rec.n_time} ({rec.n_time * rec.bin_size:g} s)")
    report_crossval(report, cv, out, scope=scope)
    log(f"cross-validation on {scope}:")
    log(cv.table())
    seconds = time.perf_counter() - start
    report.add_text(
        "Settings",
        json.dumps({"seed": seed, **settings, "cv_bins": cv_rec.n_time,
                    "seconds": round(seconds, 1)}, indent=1),
        preformatted=True,
    )
    index = report.write()
    atomic_write_text(out / "summary.json", json_text(
        {"fit": summary, "cv_winner": cv.winner(), "cv_recommendation": cv.recommend().choice,
         "cv": cv.summary(), "seconds": seconds}))
    log(f"report: {index} ({seconds:.0f} s)")
    return DemoResult(index=index, fit=summary, cv=cv, seconds=seconds, settings=settings)


def _first_bins(rec, n: int):
    from mgplvm.io import Recording

    hd = None if rec.head_direction is None else rec.head_direction[..., :n]
    lat = None if rec.latents is None else rec.latents[:, :n]
    return Recording(rec.Y[..., :n], rec.bin_size, head_direction=hd, latents=lat,
                     cells=dict(rec.cells), description=rec.description, source=rec.source)


# ------------------------------------------------------------------------------------ commands
def cmd_demo(args) -> int:
    run_demo(args.out, file=args.file, minutes=args.minutes, splits=args.splits,
             quick=args.quick, seed=args.seed, progress=not args.no_progress)
    return 0


def cmd_fit(args) -> int:
    from mgplvm.report import Report

    manifold = _check_manifold(args.manifold)
    if args.init == "quadratic" and manifold.name != "SO3":
        raise CLIError(f"--init quadratic is for --manifold SO3, not {args.manifold}")
    kw: dict = {"init": args.init, "model_kwargs": {"latent_posterior": args.posterior}}
    if args.iterations is not None:
        if args.iterations < 1:
            raise CLIError(f"--iterations must be at least 1, got {args.iterations}")
        kw["n_iter"] = args.iterations
    if (refit := _refit_args(args)) is not None:
        kw.update(refit_steps=refit["step_sds"], refit_rounds=refit["rounds"],
                  refit_iter=refit["n_iter"])
    rec = load_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.checkpoint) if args.checkpoint else out / "checkpoint.pt"
    kw.update(checkpoint=ckpt, checkpoint_every=args.checkpoint_every)
    if args.resume:
        if not ckpt.exists():
            raise CLIError(f"--resume: no checkpoint at {ckpt} (give the fit's --out or "
                           "--checkpoint)")
        kw["resume"] = ckpt
    print(rec.summary())
    try:
        model, result = fit_recording(rec, args.manifold, likelihood=args.likelihood,
                                      seed=args.seed, progress=not args.no_progress,
                                      optimizer=args.optimizer, **kw)
    except ValueError as err:
        raise CLIError(_flag_names(str(err))) from err
    if result.reason in ("diverged", "nan", "cholesky") and result.n_iter < 2:
        raise CLIError(f"the fit failed ({result.reason} at iteration {result.n_iter}); nothing "
                       "was saved")
    if result.reason == "diverged":
        raise CLIError(f"the fit diverged (the loss blew up within {result.n_iter} iterations); "
                       "nothing was saved")
    report = Report(out, title=f"mgplvm fit: {Path(args.file).name} on {args.manifold}")
    report.add_text("Recording", rec.summary(), preformatted=True)
    summary = report_fit(report, model, result, rec, source=args.file)
    if "refit" in result.config:
        summary["refit_step_sds"] = result.config["refit"]["step_sds"]
    _save_fit(out, model, result)
    report.add_table("Fit", [summary])
    index = _write_report(report, out, summary)
    print(f"model: {out / 'model.pt'}  latents: {out / 'latents.h5'}  report: {index}")
    return 0


def _refit_args(args) -> dict[str, Any] | None:
    """``--refit-steps/--refit-rounds/--refit-iterations`` -> ``refit_by_smoothing`` arguments
    ``{step_sds, rounds, n_iter}``, or None without ``--refit-steps``."""
    if args.refit_steps is None:
        return None
    try:
        steps = [float(v) for v in args.refit_steps.split(",") if v.strip()]
    except ValueError:
        steps = []
    if not steps or not all(math.isfinite(v) and v > 0 for v in steps):
        raise CLIError(f"--refit-steps needs positive numbers, e.g. 0.05,0.1,0.2; got "
                       f"{args.refit_steps!r}")
    if args.refit_rounds < 1 or args.refit_iterations < 1:
        raise CLIError("--refit-rounds and --refit-iterations must be at least 1")
    return {"step_sds": steps, "rounds": args.refit_rounds, "n_iter": args.refit_iterations}


def cmd_crossval(args) -> int:
    from mgplvm.report import Report

    manifolds = [m.strip() for m in args.manifolds.split(",") if m.strip()]
    if not manifolds:
        raise CLIError("--manifolds is empty; give e.g. --manifolds T1,R1,R2")
    for m in manifolds:
        _check_manifold(m)
    if args.splits < 1:
        raise CLIError(f"--splits must be at least 1, got {args.splits}")
    rec = load_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(rec.summary())
    kw = {} if args.iterations is None else {"n_iter": args.iterations,
                                             "test_iter": max(1, args.iterations // 2)}
    cv = run_crossval(rec, manifolds, args.splits, seed=args.seed, likelihood=args.likelihood,
                      n_workers=args.workers, results_dir=out / "folds",
                      progress=not args.no_progress, test_init=args.test_init,
                      test_posterior=args.test_posterior, refit_kwargs=_refit_args(args),
                      time_gaps=not args.no_time_gaps, **kw)
    if cv.records and len(cv.failed) == len(cv.records):
        raise CLIError(f"every fold failed ({len(cv.records)}); the first: "
                       f"{' '.join(str(cv.failed[0]['error']).split())}")
    report = Report(out, title=f"mgplvm crossval: {Path(args.file).name}")
    report_crossval(report, cv, out, scope=f"{Path(args.file).name}, {rec.n_neurons} neurons x "
                    f"{rec.n_time} bins ({rec.n_time * rec.bin_size:g} s)")
    index = report.write()
    print(cv.table())
    print(f"table: {out / 'cv.txt'}  plot: {out / 'crossval.png'}  report: {index}")
    return 0


def cmd_decode(args) -> int:
    import h5py

    from mgplvm.alignment import align
    from mgplvm.model import MGPLVM
    from mgplvm.plotting import plot_latent_vs_truth
    from mgplvm.report import Report

    if not Path(args.model).exists():
        raise CLIError(f"no such model file: {args.model} (write one with `mgplvm fit`)")
    if not 0 < args.level < 1:
        raise CLIError(f"--level must be in (0, 1), got {args.level}")
    try:
        model = MGPLVM.load(args.model)
    except (ValueError, RuntimeError, OSError) as err:
        raise CLIError(f"cannot read {args.model} as a saved model: {err}") from err
    rec = load_from_args(args)
    if rec.n_neurons != model.n_neurons:
        raise CLIError(f"{args.file} has {rec.n_neurons} neurons, the model {model.n_neurons}: "
                       "decode needs the same neurons in the same order (see --array)")
    print(rec.summary())
    post, decoded = model.decode(rec.Y, bin_times=rec.bin_times_in_bins(), level=args.level,
                                 learn_prior=not args.keep_dynamics,
                                 progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"model": str(args.model), "file": str(args.file),
                               "bins": rec.n_time, "level": args.level,
                               "manifold": model.manifold.name}
    if getattr(decoded.prior, "step_sd", None) is not None:
        summary["step_sd_rad"] = [float(v) for v in decoded.prior.step_sd.detach().reshape(-1)]
    with h5py.File(out / "decoded.h5", "w") as f:
        f.attrs["manifold"] = model.manifold.name
        f.attrs["level"] = args.level
        f.attrs["bin_size"] = rec.bin_size
        f["mean"] = post.mean.cpu().numpy()
        f["radius"] = post.radius.cpu().numpy()
        f["sd"] = post.sd.cpu().numpy()
        f["times"] = rec.times
        if post.lower is not None:
            f["lower"] = post.lower.cpu().numpy()
            f["upper"] = post.upper.cpu().numpy()
    report = Report(out, title=f"mgplvm decode: {Path(args.file).name} under {args.model}")
    report.add_text("Recording", rec.summary(), preformatted=True)
    truth = _truth_of(rec, model.manifold.name)
    if model.manifold.name == "T1":
        n_show = min(rec.n_time, int(40.0 / rec.bin_size))
        times = rec.times[:n_show]
        shown, half = post.mean[0, :n_show, 0], post.radius[0, :n_show]
        tracked = None
        if truth is not None:  # in the tracked frame, with the error after alignment
            import torch

            al = align(post.mean, torch.as_tensor(truth, dtype=post.mean.dtype), model.manifold)
            summary["median_error_deg"] = float(np.degrees(al.median_error))
            shown, tracked = al.aligned[0, :n_show, 0], truth[0, :n_show, 0]
        fig = plot_latent_vs_truth(times, shown, shown - half, shown + half, truth=tracked)
        report.add_figure("decoded", fig, "Decoded latent",
                          f"Posterior mean with its {100 * args.level:g}% band"
                          + (" (aligned to the tracked angle by the ring's symmetries)"
                             if tracked is not None else "") + ".")
    index = _write_report(report, out, summary)
    print(f"latents: {out / 'decoded.h5'}  report: {index}")
    return 0


def cmd_simulate(args) -> int:
    from mgplvm.datasets import from_settings, realistic_head_direction, save_h5, summarize

    if args.settings is not None:
        if not Path(args.settings).exists():
            raise CLIError(f"no such settings file: {args.settings}")
        data = from_settings(args.settings)
    else:
        try:
            data = realistic_head_direction(n_neurons=args.neurons, minutes=args.minutes,
                                            seed=args.seed)
        except ValueError as err:
            raise CLIError(str(err).replace("n_neurons", "--neurons")
                           .replace("minutes", "--minutes")) from err
    print(summarize(data))
    if args.save:
        save_h5(data, args.save)
        print(f"saved {args.save}")
    else:
        print("(nothing written: pass --save OUT.h5 to keep it)")
    return 0


def cmd_comms(args) -> int:
    import torch

    from mgplvm.comms import BoundaryOptimumWarning, chain_pair, default_T_range, max_rate

    if args.n < 2:
        raise CLIError(f"--n must be at least 2, got {args.n}")
    if any(s <= 0 for s in args.noise):
        raise CLIError("noise variances must be positive")
    try:
        A_n, A_nn = chain_pair(args.n, args.alpha)
    except ValueError as err:
        raise CLIError(str(err).replace("alpha", "--alpha")) from err
    eye = torch.eye(args.n, dtype=torch.float64)
    lo, hi = default_T_range(A_n)
    print(f"chains of n={args.n}: forward weight {args.alpha:g}, backward {1 / args.alpha:g} "
          f"(non-normal) vs symmetric (normal), same spectrum; B = C = I")
    print(f"packet interval T searched in [{lo:.3g}, {hi:.3g}] (half the fastest to ten slowest "
          "time constants); '<' marks an optimum on the lower edge of that range, '>' the upper")
    print(f"{'sigma^2':>10} {'R_max normal':>14} {'R_max non-normal':>18} {'ratio':>8}")
    edge = {"lower": "<", "upper": ">"}
    for s2 in args.noise:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundaryOptimumWarning)  # marked in the table
            res_n = max_rate(A_n, eye, eye, noise_var=s2)
            res_nn = max_rate(A_nn, eye, eye, noise_var=s2)
        r_n, r_nn = float(res_n.rate), float(res_nn.rate)
        cell_n = edge.get(res_n.boundary, "") + f"{r_n:.4g}"
        cell_nn = edge.get(res_nn.boundary, "") + f"{r_nn:.4g}"
        print(f"{s2:>10g} {cell_n:>14} {cell_nn:>18} {r_nn / r_n:>8.3g}")
    return 0
