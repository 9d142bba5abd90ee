"""Which manifold wins cross-validation on data generated on a known manifold?

Reproduces the model-comparison experiment of the mGPLVM paper (Jensen et al. 2020, Fig. 3) on
our own synthetic data. Every repetition simulates a fresh recording (seed = repetition) on the
generating manifold and runs one fold of the held-out neurons × held-out time-bins protocol
(:func:`mgplvm.crossvalidate`) for each candidate manifold; comparisons on the same recording
(SO(3) data: SO(3) vs R³ and the 3-way comparison) share its fits. Reported: how often the
generating manifold has the best held-out log-likelihood per datum, and mean ± s.e.m. per
candidate, for the primary score (``ll_per_datum``) and for the log predictive density
(``pred_ll_per_datum``), and, as a diagnostic, the same for the training fit's ELBO. Every
candidate has at most 64 inducing points (``--max-inducing``; 0 for the model's defaults) and a
Brownian latent prior (``--prior``) that spans the gaps between a half's bins
(``--no-time-gaps`` chains them); the latent speed s.d. is 400 deg/s (``--speed``) so that a
recording wraps around its manifold rather than covering an arc. Each training fit runs 200
iterations (``--iters``) and each latent-only fit at the test bins 40 (``--test-iters``), from the
decoded start; against 400 / 200 the scores are a few thousandths per datum lower and the win
counts the same except T² vs R² (one more), SO(3) vs R³ and S³ 3-way (one fewer each;
docs/crossval.md).

Comparisons (paper's reference: the generating manifold wins on average):

* ring head-direction data (T¹): T¹ vs R¹ vs R²
* T² data: T² vs R²
* SO(3) data: SO(3) vs R³
* T², SO(3) and S³ data, each: T² vs SO(3) vs S³
* flat (Euclidean) data: R¹ vs T¹ vs R², and R² vs T² vs S² (``--only R1,R2-flat``; not part
  of the default run)
* T² data with a tuning width per angle: T² (a lengthscale per angle, ``"T1xT1"``) vs SO(3) vs S³
  (a diagnostic, not part of the default run: ``--only T2aniso-3way``)

Usage::

    python benchmarks/cv_topology.py            # 10 repetitions each (the acceptance run)
    python benchmarks/cv_topology.py --quick    # 2 repetitions, fewer iterations
    python benchmarks/cv_topology.py --only ring,T2 --reps 5 --workers 2
    python benchmarks/cv_topology.py --only T2-3way --noise gaussian   # Gaussian observations
    python benchmarks/cv_topology.py --only T2-3way --width 20,35 --baseline 0,0  # other cells
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

from mgplvm import datasets
from mgplvm.crossval import TEST_INITS, TEST_POSTERIORS, CVResult, crossvalidate
from mgplvm.manifolds import get_manifold
from mgplvm.model import default_n_inducing

#: particles per test bin under --test-posterior smoothed (crossvalidate's n_particles)
N_PARTICLES = 1000
#: scores reported per comparison (both higher-is-better): the primary bound and the log
#: predictive density (see docs/crossval.md)
SCORES = {"ll_per_datum": "held-out log-likelihood per datum",
          "pred_ll_per_datum": "held-out log predictive density per datum"}
#: also reported, not a cross-validated score: the ELBO of the training fit (all neurons ×
#: training bins), whose win count says whether the evidence bound alone would pick the truth
DIAGNOSTICS = {"train_elbo": "training-fit ELBO (nats)"}

# name -> (generator, kwargs, generating manifold, candidates); ``n_time`` in kwargs overrides
# --bins for that comparison
COMPARISONS = {
    # 500 bins, as the recovery benchmark's ring: T1 won 10/10 on both scores (--only ring)
    "ring": (datasets.head_direction_ring, {"n_time": 500}, "T1", ["T1", "R1", "R2"]),
    # 1000 bins: in 300 (150 training bins) each region of the torus is visited about once, and R²
    # explains the recording by unrolling the angles into the plane (T² lost 0/4 there); with
    # 500 training bins the torus is revisited along other windings and its periodicity pays
    # (T2 won 9/10 on both scores, one of the nine by 2e-4 per datum; 8/10 and 9/10 with
    # --iters 400 --test-iters 200, 9/10 and 10/10 with the halves also chained, --no-time-gaps)
    "T2": (datasets.torus, {"d": 2, "n_time": 1000}, "T2", ["T2", "R2"]),
    "SO3": (datasets.so3, {}, "SO3", ["SO3", "R3"]),
    # S³ contains the T² model (Clifford torus; docs/crossval.md): held-out likelihood has no
    # reason to favour T² over S³ here (S³ won 2/2 at 1000 bins; with --test-posterior smoothed
    # T² won 3 of 6 repetitions, a tie; with --noise gaussian T² won 0/10, S³ 8/10; nor with other
    # cells: --neurons 100, --baseline 0,0, --tuning gaussian_bump, --width 20,35 (with or without
    # --neurons 120), --prior uniform, high-SNR Gaussian noise, T² best in at most 1 of 4)
    "T2-3way": (datasets.torus, {"d": 2}, "T2", ["T2", "SO3", "S3"]),
    # T² data whose neurons have a width per angle, in ratios that differ between neurons (up to
    # 2:1): S³'s tori give every neuron the same ratio (docs/crossval.md), the T² model with a
    # lengthscale per angle ("T1xT1") fits each neuron's; 1000 bins as T² vs R². With
    # --test-posterior smoothed S³ still won 2 of 2 repetitions (by 0.0002 and 0.0010 per datum)
    "T2aniso-3way": (datasets.torus, {"d": 2, "width_per_angle": True, "n_time": 1000}, "T1xT1",
                     ["T1xT1", "SO3", "S3"]),
    # S³ double-covers SO(3) (docs/crossval.md): at 300 bins SO(3) won 9/10 on ll_per_datum
    # (8/10 with the halves chained, with or without the inducing cap); chained, with 100
    # inducing points at 500 bins 3 of 5 repetitions, tied with S³ to 0.0015 per datum; at 1000
    # bins 1 of 2
    "SO3-3way": (datasets.so3, {}, "SO3", ["T2", "SO3", "S3"]),
    # 300 bins: S3 won 10/10 on ll_per_datum, 8/10 on pred_ll_per_datum (chained halves: 9/10
    # and 8/10; 10/10 and 9/10 with the model's 100 inducing points for the 3-dim candidates,
    # --max-inducing 0)
    "S3-3way": (datasets.sphere3, {}, "S3", ["T2", "SO3", "S3"]),
    # flat latents must not be called a ring or a torus (a recommendation, not only a win count)
    "R1": (datasets.euclid, {"d": 1}, "R1", ["R1", "T1", "R2"]),
    "R2-flat": (datasets.euclid, {"d": 2}, "R2", ["R2", "T2", "S2"]),
}


#: inducing points of every candidate at most (--max-inducing): the 3-dim candidates get the
#: 2-dim default of 64 instead of 100. The full run's win counts (halves chained) were those of the
#: model defaults in five comparisons and 9/10 instead of 10/10 on S³ data, in 61.6 instead of
#: 85.6 min (docs/crossval.md)
MAX_INDUCING = 64

#: iterations of each training fit (--iters) and of each latent-only fit at the test bins
#: (--test-iters). The full run with 200 / 40 took 26.1 min (250 / 50: 34.6, 400 / 200: 65.7)
#: and gave the win counts of 400 / 200 except T² vs R² 9/10 (8/10; one of the nine by 2e-4 per
#: datum), SO(3) vs R³ 9/10 (10/10) and S³ 3-way 9/10 (10/10), every score 0.0007–0.0030 per
#: datum lower than at 250 / 50 (docs/crossval.md)
TRAIN_ITERS = 200
TEST_ITERS = 40

#: --noise: the recordings' observation noise (mgplvm.datasets) and every candidate's likelihood
NOISES = {"poisson": "Poisson counts", "negbin": "negative-binomial counts",
          "gaussian": "Gaussian noise"}

#: what a run without --only compares: the acceptance comparisons (Jensen et al. 2020, Fig. 3)
DEFAULT_RUN = ["ring", "T2", "SO3", "T2-3way", "SO3-3way", "S3-3way"]


def make_recording(gen, kw: dict, rep: int, n_neurons: int, n_time: int, seed0: int,
                   speed: float, noise: str = "poisson"):
    """The recording of repetition ``rep`` (seed ``seed0 + rep``); ``kw`` without ``n_time``;
    ``noise``: the generator's observation noise (``"poisson"`` counts, ``"gaussian"``)."""
    if gen is datasets.euclid:  # a flat latent: no angular speed
        return gen(n_neurons=n_neurons, n_time=n_time, seed=seed0 + rep, noise=noise, **kw)
    return gen(n_neurons=n_neurons, n_time=n_time, seed=seed0 + rep, angular_velocity_sd=speed,
               noise=noise, **kw)


def candidate_groups(candidates: list[str], max_inducing: int | None) -> dict[int | None, list]:
    """Candidates grouped by their inducing-point count: ``None`` (the model's default) for all
    when ``max_inducing`` is None, else ``min(default, max_inducing)`` per candidate."""
    groups: dict[int | None, list[str]] = {}
    for m in candidates:
        k = None
        if max_inducing is not None:
            k = min(default_n_inducing(get_manifold(m).dim), int(max_inducing))
        groups.setdefault(k, []).append(m)
    return groups


def run_one(gen, kw: dict, candidates: list[str], rep: int, n_neurons: int, n_time: int,
            n_iter: int, test_iter: int, pool, seed0: int, prior: str, speed: float,
            test_init: str = "decode", test_posterior: str = "variational",
            refit_kwargs: dict | None = None, max_inducing: int | None = None,
            time_gaps: bool = True, noise: str = "poisson", folds: int = 1) -> dict:
    """One repetition on one recording: a fresh recording, one fold per candidate. A candidate's
    split and seeds do not depend on the others, so candidates with different inducing-point
    counts (``max_inducing``) go through separate ``crossvalidate`` calls with the same scores
    as one call. ``noise``: the recording's observation noise, and every candidate's likelihood
    (the generator's and mgplvm's names coincide). ``folds``: cross-validation folds per
    repetition (a repetition's score is their mean; with two or more, each repetition gets its
    own recommendation)."""
    data = make_recording(gen, kw, rep, n_neurons, n_time, seed0, speed, noise)

    def run_group(group: list[str], n_inducing: int | None):
        # per-bin Gaussian posteriors on every candidate, the ring included (the figures in
        # docs/crossval.md were measured so)
        model_kwargs = {"prior": prior, "latent_posterior": "relie"}
        if n_inducing is not None:
            model_kwargs["n_inducing"] = n_inducing
        return crossvalidate(
            data.Y, group, n_splits=folds, likelihood=noise, seed=seed0 + rep,
            bin_size=data.bin_size, executor=pool, progress=False,
            fit_kwargs={"n_iter": n_iter, "n_mc": 4},
            test_fit_kwargs={"n_iter": test_iter, "n_mc": 4},
            model_kwargs=model_kwargs, test_init=test_init, test_posterior=test_posterior,
            n_particles=N_PARTICLES, refit_kwargs=refit_kwargs, time_gaps=time_gaps,
        )

    groups = candidate_groups(candidates, max_inducing)
    # the groups' tasks reach the pool together (one call waiting on another would queue the
    # second group's tasks behind every other recording's)
    with ThreadPoolExecutor(len(groups)) as calls:
        results = [(group, calls.submit(run_group, group, k)) for k, group in groups.items()]
        results = [(group, fut.result()) for group, fut in results]
    out: dict = {"_failed": {}, "_seconds": {}, "_step_sd": {}, "_refit_step_sds": {},
                 "_folds": {}, **{metric: {} for metric in (*SCORES, *DIAGNOSTICS)}}
    for group, cv in results:
        failed = {r["manifold"] for r in cv.failed}
        out["_failed"].update({m: m in failed for m in group})
        for m in group:  # means over the repetition's folds
            recs = [r for r in cv.records if r["manifold"] == m]
            out["_seconds"][m] = float(sum(r["seconds"] for r in recs))
            out["train_elbo"][m] = float(np.mean([r["train_elbo"] for r in recs]))
            # the learned step s.d. (mean over coordinates) and the refits' choices
            out["_step_sd"][m] = float(np.mean([np.mean(r.get("step_sd") or [np.nan])
                                                for r in recs]))
            out["_refit_step_sds"][m] = [v for r in recs for v in r.get("refit_step_sds") or []]
        for metric in SCORES:
            s = cv.scores(metric)
            out[metric].update({m: float(np.mean(s[m])) for m in group})
        out["_folds"].update({m: cv.scores("ll_per_datum")[m].tolist() for m in group})
    return out


def recordings(names: list[str], bins: dict[str, int],
               cells: dict | None = None) -> dict[tuple, list[str]]:
    """The distinct recordings the comparisons ``names`` need, each with the union of their
    candidates. Comparisons on the same generator, settings and length share one recording per
    repetition (same seed), and a candidate fitted to it is fitted once: a task's split and seed
    do not depend on the other candidates (``crossvalidate``), so the scores are those of
    separate runs. ``cells``: generator arguments that override every comparison's
    (:func:`generator_kwargs`)."""
    out: dict[tuple, list[str]] = {}
    for name in names:
        cands = out.setdefault(recording_key(name, bins, cells), [])
        cands.extend(m for m in COMPARISONS[name][3] if m not in cands)
    return out


def recording_key(name: str, bins: dict[str, int], cells: dict | None = None) -> tuple:
    """(generator, its keyword arguments as sorted pairs, bins): equal keys, equal recordings.
    ``cells`` override the comparison's keyword arguments."""
    gen, kw, _, _ = COMPARISONS[name]
    kw = {**kw, **(cells or {})}
    return gen, tuple(sorted((k, v) for k, v in kw.items() if k != "n_time")), bins[name]


def parse_range(text: str, flag: str) -> tuple[float, float]:
    """``"LO,HI"`` -> ``(LO, HI)`` for the tuning flags (``--width 20,35``); a single number is a
    range of one value."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} takes LO,HI (two numbers), got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(np.isfinite(vals)):
        raise ValueError(f"{flag} takes LO,HI (two numbers), got {text!r}")
    return vals[0], vals[1]


def generator_kwargs(tuning: str | None = None, width: str | None = None,
                     baseline: str | None = None, peak_rate: str | None = None) -> dict:
    """The cells' tuning that --tuning, --width, --baseline and --peak-rate set for every
    comparison's recordings (:mod:`mgplvm.datasets`: shape, half-width in degrees, baseline and
    peak rate in Hz, each drawn per neuron from ``LO,HI``); only the flags given."""
    out: dict = {} if tuning is None else {"tuning": tuning}
    for key, text in (("width", width), ("baseline", baseline), ("peak_rate", peak_rate)):
        if text is not None:
            out[key] = parse_range(text, "--" + key.replace("_", "-"))
    return out


def summarise(name: str, per_rep: list[dict], metric: str) -> dict:
    _, _, truth, candidates = COMPARISONS[name]
    arr = {m: np.asarray([r[metric][m] for r in per_rep]) for m in candidates}
    mat = np.stack([arr[m] for m in candidates])
    ok = np.isfinite(mat).all(0)
    wins = int((mat[:, ok].argmax(0) == candidates.index(truth)).sum())
    recs = recommendations(candidates, per_rep)
    return {"name": name, "truth": truth, "candidates": candidates, "scores": arr,
            "wins": wins, "valid": int(ok.sum()), "recommendations": recs,
            "recommended": sum(r == truth for r in recs),
            "failures": sum(r["_failed"][m] for r in per_rep for m in candidates),
            # compute per repetition: the tasks' own time, one thread each
            "task_seconds": float(np.mean([sum(r["_seconds"][m] for m in candidates)
                                           for r in per_rep]))}


def recommendations(candidates: list[str], per_rep: list[dict]) -> list[str]:
    """:meth:`mgplvm.CVResult.recommend` (ll_per_datum) of each repetition, from its folds
    (``"undecided: A/B"`` when the rule cannot decide); with one fold per repetition, one
    recommendation from the repetitions taken as folds (repeated per repetition)."""
    def rec_of(fold_scores: dict[str, list[float]]) -> str:
        n = len(next(iter(fold_scores.values())))
        records = [{"manifold": m, "fold": k, "status": "ok" if np.isfinite(v) else "failed",
                    "ll_per_datum": v}
                   for m in candidates for k, v in enumerate(fold_scores[m])]
        rec = CVResult(records=records, manifolds=list(candidates), n_splits=n).recommend()
        return rec.choice if rec.choice else "undecided: " + "/".join(rec.simplest)

    if len(per_rep[0]["_folds"][candidates[0]]) >= 2:
        return [rec_of({m: r["_folds"][m] for m in candidates}) for r in per_rep]
    pooled = {m: [r["_folds"][m][0] for r in per_rep] for m in candidates}
    return [rec_of(pooled)] * len(per_rep)


def antipodal_revisits(quaternions: np.ndarray, angle_deg: float) -> float:
    """Fraction of bins whose point's antipode the path also visits, on the path lifted to S³.

    ``quaternions (time, 4)``: an SO(3) path as unit quaternions (``q ≡ −q``). The path is lifted
    continuously (each ``q_t`` signed so that ``q_tᵀq_{t−1} ≥ 0``), as an S³ model of the same
    recording with a Brownian prior would place it; a bin counts if some bin of the lift lies
    within quaternion angle ``angle_deg`` (half the rotation angle) of ``−q_t``. Where this is
    large an S³ model must learn each SO(3) field twice, from the data of each sheet."""
    q = np.array(quaternions, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 4:
        raise ValueError(f"quaternions must be (time, 4), got {q.shape}")
    sign = np.sign(np.einsum("ti,ti->t", q[1:], q[:-1]))
    sign[sign == 0] = 1.0
    q[1:] *= np.cumprod(sign)[:, None]
    return float((q @ q.T < -np.cos(np.radians(angle_deg))).any(1).mean())


def print_antipodes(names: list[str], bins: dict[str, int], reps, seed: int,
                    n_neurons: int, speed: float, cells: dict | None = None) -> None:
    """``--antipodes``: for the recordings on SO(3), how often the lifted path revisits
    antipodes (:func:`antipodal_revisits`, at quaternion angles of 15° and 30°: the generator's
    field half-widths of 30–60° of rotation)."""
    for name in names:
        if COMPARISONS[name][2] != "SO3":
            continue
        gen, kw, n_time = recording_key(name, bins, cells)
        rows = []
        for r in reps:
            data = make_recording(gen, dict(kw), r, n_neurons, n_time, seed, speed)
            rows.append([antipodal_revisits(data.latents[0], a) for a in (15.0, 30.0)])
        rows = np.asarray(rows)
        print(f"{name}: fraction of bins whose antipode the lifted path visits, within 15° / "
              f"30° of quaternion angle, per repetition: " + ", ".join(
                  f"{a:.2f}/{b:.2f}" for a, b in rows)
              + f"; mean {rows[:, 0].mean():.2f} / {rows[:, 1].mean():.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 repetitions, fewer iterations")
    p.add_argument("--reps", type=int, default=None, help="repetitions per comparison (10)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of {list(COMPARISONS)} (default: {DEFAULT_RUN})")
    p.add_argument("--neurons", type=int, default=None, help="neurons per recording (50)")
    p.add_argument("--bins", type=int, default=None,
                   help="time bins per recording (300; ring: 500, T² vs R²: 1000 unless given)")
    p.add_argument("--iters", type=int, default=None,
                   help=f"training iterations ({TRAIN_ITERS}; --quick: 150)")
    p.add_argument("--test-iters", type=int, default=TEST_ITERS,
                   help=f"iterations of each latent-only fit at the test bins, from the decoded "
                        f"start ({TEST_ITERS})")
    p.add_argument("--folds", type=int, default=1,
                   help="cross-validation folds per repetition (1; with 2 or more each "
                        "repetition gets its own recommendation, else one recommendation "
                        "takes the repetitions as folds)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first-rep", type=int, default=0,
                   help="first repetition (recording seed = seed + repetition): run repetitions "
                        "first-rep, ..., first-rep + reps - 1, e.g. to extend an earlier run")
    p.add_argument("--speed", type=float, default=400.0,
                   help="latent angular speed s.d. in deg/s (400: the trajectory covers the "
                        "manifold within the recording; at 100 deg/s a 300-bin ring recording "
                        "usually covers only an arc, which R1 explains as well as T1)")
    p.add_argument("--prior", default="brownian",
                   help="latent prior of every candidate (brownian: as mgplvm demo)")
    p.add_argument("--test-init", choices=TEST_INITS, default="decode",
                   help="start of the test-bin latents (crossvalidate's test_init): the best "
                        "path through candidate points, or the particle-smoothed path")
    p.add_argument("--test-posterior", choices=TEST_POSTERIORS, default="variational",
                   help="posterior of the test-bin latents that the scores average over "
                        "(crossvalidate's test_posterior): the Gaussian q(g) of a latent-only "
                        "fit, or the particle smoother's marginals (no latent-only fit)")
    p.add_argument("--refit-steps", default=None,
                   help="refine every training fit by particle-smoothing refits "
                        "(crossvalidate's refit_kwargs, mgplvm.refit_by_smoothing) choosing the "
                        "step s.d. among these, e.g. 0.03,0.05,0.1 (default: no refit)")
    p.add_argument("--refit-rounds", type=int, default=2, help="smoothing refit rounds (2)")
    p.add_argument("--refit-iters", type=int, default=200,
                   help="iterations of each round's refit (200)")
    p.add_argument("--no-time-gaps", action="store_true",
                   help="chain each half's bins as if consecutive (crossvalidate(time_gaps="
                        "False), the protocol before the gaps were modelled)")
    p.add_argument("--max-inducing", type=int, default=MAX_INDUCING,
                   help=f"cap every candidate's inducing points at this many ({MAX_INDUCING}; "
                        "0: no cap, the model's defaults of 24 / 64 / 100 for 1- / 2- / 3-dim "
                        "manifolds)")
    p.add_argument("--noise", choices=list(NOISES), default="poisson",
                   help="observation noise of the recordings, and every candidate's likelihood "
                        "(poisson; gaussian: rate x bin + 0.5 s.d. noise, a Gaussian likelihood)")
    p.add_argument("--tuning", choices=["von_mises", "gaussian_bump"], default=None,
                   help="tuning-curve shape of every recording (mgplvm.datasets; default: "
                        "von_mises; gaussian_bump: of the geodesic distance, tori only)")
    p.add_argument("--width", default=None,
                   help="LO,HI: tuning half-widths in degrees, drawn per neuron (30,60)")
    p.add_argument("--baseline", default=None,
                   help="LO,HI: baseline rates in Hz, drawn per neuron (0.1,2)")
    p.add_argument("--peak-rate", default=None,
                   help="LO,HI: peak rates in Hz, drawn per neuron (10,60)")
    p.add_argument("--antipodes", action="store_true",
                   help="fit nothing: print, for the SO(3) recordings, how often the path "
                        "lifted to S³ revisits the antipode of a bin's point, so that an S³ "
                        "model must learn an SO(3) field twice (docs/crossval.md)")
    a = p.parse_args(argv)
    if a.folds < 1:
        p.error(f"--folds must be >= 1, got {a.folds}")
    if a.max_inducing < 0:
        p.error(f"--max-inducing must be >= 0 (0: no cap), got {a.max_inducing}")
    max_inducing = a.max_inducing or None
    reps = a.reps or (2 if a.quick else 10)
    reps_run = range(a.first_rep, a.first_rep + reps)
    n_neurons = a.neurons or (30 if a.quick else 50)
    n_time = a.bins or (200 if a.quick else 300)
    bins = {name: a.bins or (200 if a.quick else COMPARISONS[name][1].get("n_time", 300))
            for name in COMPARISONS}
    n_iter = a.iters or (150 if a.quick else TRAIN_ITERS)
    test_iter = a.test_iters
    if test_iter < 1:
        p.error(f"--test-iters must be >= 1, got {test_iter}")
    refit = None if a.refit_steps is None else {
        "step_sds": [float(v) for v in a.refit_steps.split(",")], "rounds": a.refit_rounds,
        "n_iter": a.refit_iters}
    names = DEFAULT_RUN if a.only is None else a.only.split(",")
    unknown = [n for n in names if n not in COMPARISONS]
    if unknown:
        p.error(f"--only: unknown comparison(s) {unknown}; choose among {list(COMPARISONS)}")
    try:
        cells = generator_kwargs(a.tuning, a.width, a.baseline, a.peak_rate)
    except ValueError as err:
        p.error(str(err))
    for name in names if cells else []:  # the generators check the cells: refuse them up front
        gen, kw, _ = recording_key(name, bins, cells)
        try:
            gen(**dict(kw), n_neurons=2, n_time=2, seed=0)
        except ValueError as err:
            p.error(f"{name}: {err}")
    if a.antipodes:
        print_antipodes(names, bins, reps_run, a.seed, n_neurons, a.speed, cells)
        return 0
    special = ", ".join(f"{k}: {v}" for k, v in bins.items() if v != n_time and k in names)
    first = f" ({reps_run.start}-{reps_run.stop - 1})" if a.first_rep else ""
    print(f"{reps} repetitions{first} x {a.folds} fold(s); {n_neurons} neurons x {n_time} bins"
          f"{f' ({special})' if special else ''} (25 ms, {NOISES[a.noise]}); "
          f"{n_iter} training"
          + (f" / {test_iter} test" if a.test_posterior == "variational" else "")
          + f" iterations; {a.prior} prior on every candidate; "
          + ("inducing points: the model's defaults; " if max_inducing is None
             else f"at most {max_inducing} inducing points; ")
          + f"latent speed s.d. {a.speed:g} deg/s; "
          + "".join(f"{k.replace('_', ' ')} {v}; " for k, v in cells.items())
          + ("each half's bins chained as consecutive; " if a.no_time_gaps
             else "the prior spans the gaps between a half's bins; ")
          + ("" if refit is None else f"training fits refined by {refit['rounds']} smoothing "
             f"refits of {refit['n_iter']} iterations (step s.d. from {refit['step_sds']}); ")
          + "test-bin latents: "
          + (f"start {a.test_init}, variational posterior; " if a.test_posterior == "variational"
             else f"particle-smoothed marginals ({N_PARTICLES} particles); ") +
          "metrics (higher is better): " + "; ".join(SCORES.values())
          + "; diagnostic: " + "; ".join(DIAGNOSTICS.values()) + "\n")
    t0 = time.perf_counter()
    workers = a.workers or os.cpu_count() or 1
    # every (recording, repetition) is submitted at once: the process pool stays busy
    shared = recordings(names, bins, cells)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool, \
            ThreadPoolExecutor(max(1, len(shared) * reps)) as driver:
        futures = {
            (key, r): driver.submit(run_one, key[0], dict(key[1]), cands, r, n_neurons, key[2],
                                    n_iter, test_iter, pool, a.seed, a.prior, a.speed,
                                    a.test_init, a.test_posterior, refit, max_inducing,
                                    not a.no_time_gaps, a.noise, a.folds)
            for key, cands in shared.items() for r in reps_run
        }
        rows = []
        for name in names:
            key = recording_key(name, bins, cells)
            per_rep = [futures[key, r].result() for r in reps_run]
            for metric in (*SCORES, *DIAGNOSTICS):
                res = summarise(name, per_rep, metric)
                if metric == "ll_per_datum":
                    rows.append(res)
                fmt = ".1f" if metric in DIAGNOSTICS else ".4f"
                parts = []
                for m in res["candidates"]:
                    v = res["scores"][m]
                    v = v[np.isfinite(v)]
                    sem = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
                    parts.append(f"{m} {v.mean():{fmt}} ± {sem:{fmt}}")
                print(f"{name:<9} data on {res['truth']:<4} [{metric}]: true manifold wins "
                      f"{res['wins']}/{res['valid']}  |  " + "  ".join(parts) +
                      f"  |  failed fits {res['failures']}  |  {res['task_seconds']:.0f} s of "
                      f"fits per repetition ({time.perf_counter() - t0:.0f} s elapsed)",
                      flush=True)
                if metric == "ll_per_datum":
                    how = ("per repetition" if a.folds >= 2
                           else "one, from the repetitions taken as folds")
                    print(f"{name:<9} recommendation ({how}): {res['truth']} in "
                          f"{res['recommended']}/{len(per_rep)}  |  "
                          + ", ".join(f"{k} x{res['recommendations'].count(k)}"
                                      for k in dict.fromkeys(res["recommendations"])),
                          flush=True)
                for r, rec in zip(reps_run, per_rep, strict=True):
                    print(f"    rep {r:2d}: " + "  ".join(
                        f"{m} {rec[metric][m]:{fmt}}" for m in res["candidates"]), flush=True)
            sds = {m: [r["_step_sd"][m] for r in per_rep] for m in COMPARISONS[name][3]}
            if any(np.isfinite(v).any() for v in sds.values()):  # a prior with a step s.d.
                per = "recording" if not a.no_time_gaps else "training"
                print(f"{name:<9} prior step s.d. learned by the training fits (per {per} "
                      "bin, rad on compact manifolds; mean over coordinates and repetitions): "
                      + "  ".join(f"{m} {np.nanmean(v):.3f}" for m, v in sds.items()),
                      flush=True)
            if refit is not None:
                top = max(refit["step_sds"])
                print(f"{name:<9} smoothing-refit rounds that chose the largest candidate step "
                      f"s.d. ({top:g}): " + "  ".join(
                          f"{m} {sum(v == top for r in per_rep for v in r['_refit_step_sds'][m])}"
                          f"/{sum(len(r['_refit_step_sds'][m]) for r in per_rep)}"
                          for m in COMPARISONS[name][3]), flush=True)
    total = time.perf_counter() - t0
    fit_time = sum(sum(f.result()["_seconds"].values()) for f in futures.values())
    target = sum(r["wins"] >= 0.9 * r["valid"] and r["valid"] == reps for r in rows)
    advised = sum(r["recommended"] >= 0.9 * reps for r in rows)
    print(f"\ncomparisons where the true manifold won >= 90% of repetitions (ll_per_datum): "
          f"{target}/{len(rows)}; recommended in >= 90%: {advised}/{len(rows)}; "
          f"total {total / 60:.1f} min on {workers} process(es) "
          f"({fit_time / 60:.1f} min of fits, each fit counted once)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
