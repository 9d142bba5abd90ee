"""The ``mgplvm`` command line.

    mgplvm demo                      fit the bundled head-direction recording and write a report
    mgplvm fit FILE --manifold T1    fit one manifold to a recording
    mgplvm decode MODEL FILE         infer the latents of new data under a fitted model
    mgplvm crossval FILE --manifolds T1,R1,S2 --splits 10
    mgplvm simulate [SETTINGS.json] --save out.h5
    mgplvm comms --n 6 --noise 1     rate of normal vs non-normal chains

Run ``mgplvm COMMAND --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "head_direction.h5"
MANIFOLD_HELP = (
    "latent manifold: T1 (ring), T2 (torus), R1/R2/R3 (Euclidean), S2/S3 (spheres), SO3 "
    "(rotations), products like T1xR1"
)


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _add_refit_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--refit-steps", default=None, metavar="SD,SD,...",
                   help=f"after {what}, rounds of particle smoothing at the Brownian step s.d. "
                   "(rad/bin) of the largest evidence among these, each followed by a refit "
                   "(mgplvm.refit_by_smoothing), e.g. 0.05,0.1,0.2")
    p.add_argument("--refit-rounds", type=_positive_int, default=3, help="refit rounds (default 3)")
    p.add_argument("--refit-iterations", type=_positive_int, default=600,
                   help="iterations per refit round (default 600)")


def _add_recording_args(p: argparse.ArgumentParser) -> None:
    """How to read a recording file: arrays, bins, tracked angle, time window."""
    p.add_argument("file", help="recording: .h5/.hdf5 (mgplvm schema or any, with --array), "
                   ".npz, .npy, .mat or .nwb")
    p.add_argument("--array", help="name of the count array inside the file (default: Y, counts, "
                   "spikes, spike_counts or data); several names separated by commas are "
                   "joined along the neurons, e.g. ADn,Pos")
    p.add_argument("--layout", choices=["neurons,time", "time,neurons"], metavar="LAYOUT",
                   help="axis order of a 2-D array: neurons,time (default) or time,neurons")
    p.add_argument("--bin-size", type=float, metavar="SECONDS",
                   help="bin size to fit at: counts of consecutive bins of the file are summed "
                   "(a whole multiple of the file's bin size); for a file that stores no bin "
                   "size and without --file-bin-size, the file's own bin size")
    p.add_argument("--file-bin-size", type=float, metavar="SECONDS",
                   help="seconds per bin of a file that stores none (default: --bin-size)")
    p.add_argument("--angle", metavar="NAME",
                   help="tracked head direction (radians) in the file: one value per bin, "
                   "(time, angle) pairs as two columns, or samples at --angle-rate; resampled to "
                   "the bins by circular means; NaN = untracked (default: head_direction)")
    p.add_argument("--angle-rate", type=float, metavar="HZ",
                   help="sampling rate of --angle when it has its own clock")
    p.add_argument("--angle-start", type=float, default=0.0, metavar="SECONDS",
                   help="time of the first --angle sample (default 0)")
    p.add_argument("--bin-times", metavar="NAME",
                   help="each bin's start time in seconds: an array in the file, or a .npy/.txt "
                   "file; gaps between joined epochs are passed to the latent prior")
    p.add_argument("--start", type=float, metavar="SECONDS",
                   help="use only bins starting at or after this time")
    p.add_argument("--stop", type=float, metavar="SECONDS",
                   help="use only bins starting before this time")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    _add_recording_args(p)
    p.add_argument("--likelihood", default="poisson", choices=["poisson", "negbin", "gaussian"],
                   help="observation model (default poisson, for spike counts)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default="mgplvm_out", help="output folder (default mgplvm_out)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``mgplvm fit: error: argument --iterations: ...``), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(
        prog="mgplvm",
        description="Find the latent manifold of a neural population recording "
        "(manifold GPLVMs), compare manifolds by cross-validation, analyse linear networks.",
        epilog="Start with `mgplvm demo`. Data are (trials, neurons, time) spike counts.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="fit the bundled head-direction recording, compare manifolds, write a report",
        description="Fit the bundled (simulated) head-direction recording on the ring T1, compare "
        "T1, R1, R2 and S2 by cross-validation and write an HTML report with figures.",
    )
    demo.add_argument("--out", default="mgplvm_report", help="report folder (default "
                      "mgplvm_report)")
    demo.add_argument("--file", default=str(BUNDLED), help="recording (default: the bundled one)")
    demo.add_argument("--minutes", type=_positive_float, default=None,
                      help="use only the first MINUTES of the recording")
    demo.add_argument("--splits", type=_positive_int, default=None, help="cross-validation folds")
    demo.add_argument("--quick", action="store_true", help="a fast smoke run (small settings)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    fit = sub.add_parser("fit", help="fit one manifold to a recording",
                         description="Fit an mGPLVM to a recording and save the model, latents, "
                         "tuning curves and figures in --out.")
    _add_data_args(fit)
    fit.add_argument("--manifold", default="T1", help=MANIFOLD_HELP + " (default T1)")
    fit.add_argument("--iterations", type=_positive_int, default=None,
                     help="most iterations: EM passes over the data on the ring (default 200, "
                     "stopping earlier once converged), optimisation steps elsewhere (default "
                     "1000)")
    fit.add_argument("--optimizer", default="adam",
                     choices=["adam", "ngd", "fishleg", "ngd+fishleg"],
                     help="optimiser of stochastic fits (default adam; the ring's EM fit has "
                     "none)")
    fit.add_argument("--posterior", default="auto", choices=["auto", "grid", "relie"],
                     help="latent posterior: grid (T1 only: the exact posterior of the path on "
                     "a grid of angles, fitted by EM), relie (per-bin Gaussians, stochastic "
                     "fit), auto (default: grid on T1, relie elsewhere)")
    fit.add_argument("--init", default="pca", choices=["pca", "quadratic", "random"],
                     help="latent start: leading principal components (pca, default), the SO(3) "
                     "fit of 9 PCs as a linear image of q q^T (quadratic: much closer on SO(3) "
                     "data, minutes to compute), or uniform draws (random)")
    fit.add_argument("--checkpoint", metavar="PATH",
                     help="checkpoint file, written every --checkpoint-every iterations, at the "
                     "end, and on Ctrl-C or SIGTERM before stopping (default OUT/checkpoint.pt)")
    fit.add_argument("--checkpoint-every", type=_positive_int, default=10, metavar="N",
                     help="iterations between checkpoints (default 10)")
    fit.add_argument("--resume", action="store_true",
                     help="continue an interrupted fit from its checkpoint (same recording and "
                     "options)")
    _add_refit_args(fit, "the fit")

    dec = sub.add_parser(
        "decode", help="infer the latents of new data under a fitted model",
        description="Infer the latents of another recording of the same neurons (e.g. sleep) "
        "under a model saved by `mgplvm fit` (its tuning curves frozen; on the ring the exact "
        "posterior, with the random walk's step s.d. re-learned on the new data). Writes "
        "decoded.h5 (posterior mean and credible band per bin), summary.json and a figure.")
    dec.add_argument("model", help="model.pt written by `mgplvm fit`")
    _add_recording_args(dec)
    dec.add_argument("--level", type=float, default=0.95,
                     help="credible level of the band (default 0.95)")
    dec.add_argument("--keep-dynamics", action="store_true",
                     help="keep the fitted step s.d. instead of re-learning it on the new data")
    dec.add_argument("--out", default="mgplvm_decoded", help="output folder (default "
                     "mgplvm_decoded)")
    dec.add_argument("--no-progress", action="store_true", help="hide progress bars")

    cv = sub.add_parser("crossval", help="compare manifolds by cross-validation",
                        description="Held-out neurons x held-out time bins cross-validation; "
                        "writes a table (cv.txt, cv.csv), cv.h5 and a comparison plot "
                        "crossval.png.")
    _add_data_args(cv)
    cv.add_argument("--manifolds", default="T1,R1,R2", help="comma-separated; " + MANIFOLD_HELP)
    cv.add_argument("--splits", type=_positive_int, default=10, help="folds (default 10)")
    cv.add_argument("--workers", type=_positive_int, default=None, help="parallel processes")
    cv.add_argument("--iterations", type=_positive_int, default=None,
                    help="optimisation steps per fit")
    cv.add_argument("--test-init", default="decode", choices=["decode", "smooth"],
                    help="start of the held-out latents: best path through candidate points "
                    "(decode, default) or the particle-smoothed path (smooth; slower)")
    cv.add_argument("--test-posterior", default="variational",
                    choices=["variational", "smoothed"],
                    help="posterior of the held-out latents that the scores average over: the "
                    "Gaussian q(g) of a latent-only fit (variational, default) or the particle "
                    "smoother's marginals (smoothed; multimodal where a bin is ambiguous)")
    cv.add_argument("--no-time-gaps", action="store_true",
                    help="chain each half's time bins as if consecutive instead of giving the "
                    "latent prior the gaps between them (crossvalidate(time_gaps=False))")
    _add_refit_args(cv, "each training fit")

    sim = sub.add_parser("simulate", help="generate a synthetic recording",
                         description="Generate a synthetic recording and print its summary: "
                         "by default a realistic anterodorsal head-direction session "
                         "(mgplvm.datasets.realistic_head_direction: 32 cells, 30 min, turning "
                         "with pauses and fast turns, a 30-Hz tracker), or any generator from a "
                         "settings JSON.")
    sim.add_argument("settings", nargs="?", default=None,
                     help="settings JSON ({\"generator\": ..., \"params\": {...}}); default: "
                     "the realistic head-direction session")
    sim.add_argument("--minutes", type=_positive_float, default=30.0,
                     help="session length of the default simulation (default 30)")
    sim.add_argument("--neurons", type=_positive_int, default=32,
                     help="cells of the default simulation (default 32)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--save", metavar="OUT.h5", help="write it to this .h5 file (without it "
                     "nothing is written)")

    comms = sub.add_parser("comms", help="transmission rate of normal vs non-normal chains",
                           description="Maximal transmission rate of a non-normal chain (forward "
                           "weight alpha, backward 1/alpha) versus the normal chain with the same "
                           "spectrum (Baggio et al. 2020).")
    comms.add_argument("--n", type=_positive_int, default=6, help="network size (default 6)")
    comms.add_argument("--alpha", type=_positive_float, default=5.0,
                       help="forward weight (default 5)")
    comms.add_argument("--noise", type=_positive_float, nargs="+", default=[0.01, 1.0, 100.0],
                       help="noise variances sigma^2 (default 0.01 1 100)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mgplvm`` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2, one line printed)
        return int(stop.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a job scheduler, `kill`) stops like Ctrl-C: fits write their checkpoint,
        # cross-validation ends its worker processes
        signal.signal(signal.SIGTERM, _terminate)
    try:
        from mgplvm import workflow

        return int(getattr(workflow, f"cmd_{args.command}")(args) or 0)
    except CLIError as err:
        print(f"mgplvm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, KeyError, ValueError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"mgplvm {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        where = getattr(err, "checkpoint", None)
        if where is not None:
            print(f"mgplvm {args.command}: interrupted at iteration {err.iteration}; checkpoint "
                  f"written to {where}: run the same command with --resume to continue",
                  file=sys.stderr)
        else:
            print(f"mgplvm {args.command}: interrupted", file=sys.stderr)
        return 130


def _terminate(signum, frame):  # noqa: ARG001 - the signal module's signature
    raise KeyboardInterrupt


if __name__ == "__main__":
    # re-import so that CLIError is the class the workflow raises (not __main__.CLIError)
    from mgplvm.cli import main as _main

    raise SystemExit(_main())
