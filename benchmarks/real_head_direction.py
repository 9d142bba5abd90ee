"""Head direction on a real recording: the default ring fit against a supervised decoder.

For 5-minute, 15-minute and whole-session segments (the first 5 and 15 minutes, then all) of a
recording with a tracked head angle, prints:

* **mgplvm**: the shipped default T¹ fit (what ``mgplvm fit FILE --manifold T1`` runs:
  :func:`mgplvm.workflow.fit_recording`) on the whole segment; the median absolute error of its
  posterior mean on the segment's **second half**, after the best rotation/reflection fitted on
  those bins;
* **supervised**: a Bayesian decoder written here in NumPy — tuning curves from the tracked angle
  on the first half (60 bins of 6°, smoothed by a wrapped Gaussian of 6°), Poisson emissions, a
  random-walk prior whose step s.d. is that of the tracked angle, forward–backward on the second
  half; its error on the same bins, after its own best rotation/reflection;
* **ratio** of the two errors (the acceptance asks ≤ 1.25);
* unsupervised baselines on 200-ms-smoothed square-root counts: **PCA** (angle of the two leading
  components) and **Isomap** (2-D embedding of 2000 strided bins, 15 neighbours; needs
  scikit-learn, else ``n/a``);
* **coverage**: how often the 95% credible band of each posterior holds the tracked angle on the
  second half (the band's radius does not change under the alignment), and on simulated data how
  often it holds the **true** latent;
* **tuning corr**: median over cells of the correlation between mgplvm's tuning curves (mapped
  into the tracked frame) and the empirical ones (spikes per second of tracked occupancy, 6°
  bins, smoothed), over the whole segment;
* **CPU s** and **peak MB** of the mgplvm fit (CPU time of all threads; peak resident memory of
  the fresh process that ran it) and its EM iterations.

Without a path it runs on :func:`mgplvm.datasets.realistic_head_direction` (30 minutes, seed
``--seed``), whose tracked angle comes from its simulated tracker and whose true latents are known.

Real data: any file :func:`mgplvm.io.load_recording` reads, with ``--array``, ``--angle``,
``--layout``, ``--bin-size``. Files of the CRCNS th-1 format prepared by
``gviejo/Prediction_xgb_head_direction`` (``boosted_tree.<session>.mat``: ``ADn`` and ``Pos``
counts ``(time, cells)`` in 25-ms bins, tracked angle ``Ang``) are recognised without flags.
The development recording (Peyrache et al. 2015, mouse Mouse28-140313; not redistributed) is
``python/data/sessions_nosmoothing_25ms/wake/boosted_tree.Mouse28-140313.mat`` in that
repository at commit 5c0a9e3c930df0cfe943e9c0674b8f8efe334093::

    python benchmarks/real_head_direction.py path/to/boosted_tree.Mouse28-140313.mat
    python benchmarks/real_head_direction.py                 # the realistic simulator

Each fit runs on one thread in its own process (``--threads`` to change).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

SEGMENT_MINUTES = (5.0, 15.0, None)  # None: the whole recording


# ----------------------------------------------------------------------------------- helpers
def wrap(x):
    return (np.asarray(x) + np.pi) % (2 * np.pi) - np.pi


def aligned_errors(estimate: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Absolute errors (rad) after the best reflection ``s`` and rotation ``c`` of ``estimate``
    onto ``truth`` (NaN truth ignored) -> ``(errors, s, c)``."""
    ok = np.isfinite(truth)
    best = None
    for s in (1, -1):
        d = wrap(truth[ok] - s * estimate[ok])
        c = math.atan2(np.sin(d).mean(), np.cos(d).mean())
        med = np.median(np.abs(wrap(d - c)))
        if best is None or med < best[0]:
            best = (med, s, c)
    _, s, c = best
    err = np.full(truth.shape, np.nan)
    err[ok] = np.abs(wrap(truth[ok] - s * estimate[ok] - c))
    return err, s, c


def _wrapped_gauss(K: int, sd: float) -> np.ndarray:
    off = wrap(2 * np.pi * np.arange(K) / K)
    k = sum(np.exp(-0.5 * ((off + 2 * np.pi * j) / sd) ** 2) for j in range(-3, 4))
    return k / k.sum()


def _circ_smooth(x: np.ndarray, sd: float) -> np.ndarray:
    """Circular convolution of ``x (..., K)`` with a wrapped Gaussian of ``sd`` rad."""
    kern = np.fft.rfft(_wrapped_gauss(x.shape[-1], sd))
    return np.fft.irfft(np.fft.rfft(x, axis=-1) * kern, n=x.shape[-1], axis=-1)


def empirical_tuning(Y: np.ndarray, angle: np.ndarray, bin_size: float, K: int = 60,
                     smooth_deg: float = 6.0) -> np.ndarray:
    """Rates (Hz) ``(neurons, K)`` at the angles ``-π + 2πk/K`` from the tracked angle."""
    ok = np.isfinite(angle)
    idx = np.round((wrap(angle[ok]) + np.pi) / (2 * np.pi) * K).astype(int) % K
    occ = np.bincount(idx, minlength=K) * bin_size
    cnt = np.stack([np.bincount(idx, weights=y[ok], minlength=K) for y in Y])
    sd = math.radians(smooth_deg)
    return (_circ_smooth(cnt, sd) + 1e-3) / (_circ_smooth(occ, sd) + 1e-3 * bin_size)


def supervised_decoder(Y1, angle1, Y2, bin_size, K: int = 60, level: float = 0.95):
    """The supervised random-walk decoder -> (posterior mean, credible radius) on ``Y2``."""
    rates = empirical_tuning(Y1, angle1, bin_size, K)  # (N, K)
    a = angle1[np.isfinite(angle1)]
    steps = wrap(np.diff(a))
    sd = max(float(np.sqrt(np.mean(steps**2))), 1e-3)
    kern = _wrapped_gauss(K, sd)
    i = np.arange(K)
    A = kern[(i[None, :] - i[:, None]) % K]
    lam = rates * bin_size
    log_e = Y2.T @ np.log(lam) - lam.sum(0)
    log_e -= log_e.max(1, keepdims=True)
    E = np.exp(log_e)
    T = E.shape[0]
    alpha = np.empty((T, K))
    c = np.empty(T)
    v = E[0] / K
    c[0] = v.sum()
    alpha[0] = v / c[0]
    for t in range(1, T):
        v = (alpha[t - 1] @ A) * E[t]
        c[t] = v.sum()
        alpha[t] = v / c[t]
    beta = np.ones(K)
    gamma = np.empty((T, K))
    gamma[-1] = alpha[-1]
    for t in range(T - 2, -1, -1):
        beta = A @ (E[t + 1] * beta) / c[t + 1]
        g = alpha[t] * beta
        gamma[t] = g / g.sum()
    grid = -np.pi + 2 * np.pi * i / K
    mean = np.arctan2(gamma @ np.sin(grid), gamma @ np.cos(grid))
    return mean, credible_radius(gamma, grid, mean, level)


def credible_radius(gamma: np.ndarray, grid: np.ndarray, mean: np.ndarray, level: float):
    """Smallest ``r`` with ``level`` of each row's mass within ``r`` of its mean."""
    d = np.abs(wrap(grid[None, :] - mean[:, None]))
    order = np.argsort(d, 1)
    cum = np.cumsum(np.take_along_axis(gamma, order, 1), 1)
    first = np.minimum((cum < level).sum(1), gamma.shape[1] - 1)
    return np.take_along_axis(np.take_along_axis(d, order, 1), first[:, None], 1)[:, 0]


def smoothed_sqrt(Y: np.ndarray, bin_size: float, sd_s: float = 0.2) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.sqrt(Y), sd_s / bin_size, axis=1)


def pca_angle(Y: np.ndarray, bin_size: float) -> np.ndarray:
    X = smoothed_sqrt(Y, bin_size).T
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    U, S, _ = np.linalg.svd(X, full_matrices=False)
    return np.arctan2(U[:, 1], U[:, 0])


def isomap_angle(Y: np.ndarray, bin_size: float, n_fit: int = 2000) -> np.ndarray | None:
    try:
        from sklearn.manifold import Isomap
    except ImportError:
        return None
    X = smoothed_sqrt(Y, bin_size).T
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    stride = max(1, X.shape[0] // n_fit)
    iso = Isomap(n_neighbors=15, n_components=2).fit(X[::stride])
    Z = iso.transform(X)
    Z = Z - Z.mean(0)
    return np.arctan2(Z[:, 1], Z[:, 0])


# ------------------------------------------------------------------------------- the mgplvm fit
def _fit_in_process(rec, seed: int, threads: int):
    """Run in a fresh process: the default ring fit -> summaries, CPU seconds and peak MB."""
    import resource

    import torch

    from mgplvm.workflow import fit_recording

    torch.set_num_threads(threads)
    cpu0 = time.process_time()
    model, result = fit_recording(rec, "T1", seed=seed, progress=False)
    cpu = time.process_time() - cpu0
    post = model.latent_posterior(level=0.95)
    K = 120
    grid = -np.pi + 2 * np.pi * np.arange(K) / K
    mean_rate, _ = model.tuning_curves(torch.from_numpy(grid)[:, None])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mean": post.mean[0, :, 0].numpy(), "radius": post.radius[0].numpy(),
        "tuning": mean_rate.numpy(), "grid": grid, "cpu": cpu, "peak_mb": peak,
        "iterations": int(result.n_iter), "reason": result.reason,
        "step_deg": math.degrees(float(model.prior.step_sd.detach().reshape(-1)[0])),
    }


def tuning_correlation(fit: dict, Y: np.ndarray, angle: np.ndarray, bin_size: float,
                       s: int, c: float) -> float:
    """Median over cells of corr(model tuning mapped to the tracked frame, empirical tuning)."""
    K = 60
    emp = empirical_tuning(Y, angle, bin_size, K)
    target = -np.pi + 2 * np.pi * np.arange(K) / K
    model_angles = wrap(s * (target - c))  # tracked = s·model + c  =>  model = s·(tracked − c)
    grid, tuning = fit["grid"], fit["tuning"]
    idx = np.round((model_angles + np.pi) / (2 * np.pi) * len(grid)).astype(int) % len(grid)
    ours = tuning[:, idx]
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(ours, emp, strict=True)]
    return float(np.nanmedian(corr))


def run_segment(rec, minutes, truth, seed: int, threads: int, isomap: bool) -> dict:
    n = rec.n_time if minutes is None else int(round(minutes * 60 / rec.bin_size))
    seg = rec if minutes is None else rec.window(stop=rec.times[0] + minutes * 60)
    Y = seg.Y[0]
    angle = seg.head_direction[0]
    half = seg.n_time // 2
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        fit = pool.submit(_fit_in_process, seg, seed, threads).result()
    out = {"segment": "whole" if minutes is None else f"{minutes:g} min", "bins": seg.n_time,
           "cpu": fit["cpu"], "peak_mb": fit["peak_mb"], "iterations": fit["iterations"],
           "step_deg": fit["step_deg"]}
    a2 = angle[half:]
    err, s, c = aligned_errors(fit["mean"][half:], a2)
    out["mgplvm"] = np.degrees(np.nanmedian(err))
    out["cov_mgplvm"] = float(np.mean(err[np.isfinite(err)] <= fit["radius"][half:][
        np.isfinite(err)]))
    _, s_all, c_all = aligned_errors(fit["mean"], angle)
    out["tuning_corr"] = tuning_correlation(fit, Y, angle, seg.bin_size, s_all, c_all)
    mean_sup, rad_sup = supervised_decoder(Y[:, :half], angle[:half], Y[:, half:], seg.bin_size)
    err_sup, _, _ = aligned_errors(mean_sup, a2)
    out["supervised"] = np.degrees(np.nanmedian(err_sup))
    ok = np.isfinite(err_sup)
    out["cov_supervised"] = float(np.mean(err_sup[ok] <= rad_sup[ok]))
    out["ratio"] = out["mgplvm"] / out["supervised"]
    out["pca"] = np.degrees(np.nanmedian(aligned_errors(pca_angle(Y, seg.bin_size)[half:],
                                                        a2)[0]))
    iso = isomap_angle(Y, seg.bin_size) if isomap else None
    out["isomap"] = np.nan if iso is None else np.degrees(
        np.nanmedian(aligned_errors(iso[half:], a2)[0]))
    if truth is not None:  # simulated: the true latent of the same bins
        t2 = truth[:n][half:]
        err_t, _, _ = aligned_errors(fit["mean"][half:], t2)
        out["mgplvm_vs_truth"] = np.degrees(np.median(err_t))
        out["cov_truth"] = float(np.mean(err_t <= fit["radius"][half:]))
    return out


# ----------------------------------------------------------------------------------- loading
def load(path: str | None, args):
    """-> (recording, true latents or None, description)."""
    from mgplvm.io import load_recording

    if path is None:
        from mgplvm.datasets import realistic_head_direction

        data = realistic_head_direction(minutes=args.sim_minutes, seed=args.seed)
        return data.to_recording(), data.latents[0, :, 0], data.description
    kw = {"array": args.array, "angle": args.angle, "layout": args.layout,
          "bin_size": args.bin_size}
    if path.endswith(".mat") and args.array is None:
        from scipy.io import loadmat

        names = loadmat(path, variable_names=["ADn", "Pos", "Ang"])
        if "Ang" in names and ("ADn" in names or "Pos" in names):  # th-1 boosted_tree format
            arrays = [k for k in ("ADn", "Pos") if k in names and np.size(names[k]) > 0]
            kw = {"array": ",".join(arrays), "angle": "Ang", "layout": "time,neurons",
                  "bin_size": args.bin_size or 0.025}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untracked fraction is printed below
        rec = load_recording(path, **{k: v for k, v in kw.items() if v is not None})
    if rec.head_direction is None:
        raise SystemExit(f"{path} has no tracked angle: pass --angle NAME")
    return rec, None, f"{Path(path).name} ({kw.get('array') or 'default array'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", default=None,
                        help="real recording (default: the realistic simulator)")
    parser.add_argument("--array", help="count array(s) in the file, e.g. ADn,Pos")
    parser.add_argument("--angle", help="tracked angle (radians) in the file")
    parser.add_argument("--layout", choices=["neurons,time", "time,neurons"])
    parser.add_argument("--bin-size", type=float, help="seconds per bin of the file")
    parser.add_argument("--segments", default="5,15,all",
                        help="segment lengths in minutes, 'all' for the whole (default 5,15,all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sim-minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each fit")
    parser.add_argument("--no-isomap", action="store_true")
    args = parser.parse_args(argv)

    rec, truth, desc = load(args.path, args)
    print(desc)
    print(rec.summary())
    total_min = rec.n_time * rec.bin_size / 60
    rows = []
    for token in args.segments.split(","):
        minutes = None if token.strip() == "all" else float(token)
        if minutes is not None and minutes >= total_min:
            print(f"(skipping the {minutes:g}-min segment: the recording has {total_min:.1f} min)")
            continue
        rows.append(run_segment(rec, minutes, truth, args.seed, args.threads,
                                not args.no_isomap))
        r = rows[-1]
        print(f"  {r['segment']}: mgplvm {r['mgplvm']:.2f}° vs supervised "
              f"{r['supervised']:.2f}° (ratio {r['ratio']:.2f}), {r['cpu']:.0f} CPU s",
              flush=True)
    cols = [("segment", "{}"), ("bins", "{}"), ("mgplvm", "{:.2f}"), ("supervised", "{:.2f}"),
            ("ratio", "{:.2f}"), ("pca", "{:.2f}"), ("isomap", "{:.2f}"),
            ("cov_mgplvm", "{:.3f}"), ("cov_supervised", "{:.3f}"), ("tuning_corr", "{:.3f}"),
            ("cpu", "{:.0f}"), ("peak_mb", "{:.0f}"), ("iterations", "{}"),
            ("step_deg", "{:.2f}")]
    if truth is not None:
        cols[4:4] = [("mgplvm_vs_truth", "{:.2f}")]
        cols.insert(-4, ("cov_truth", "{:.3f}"))
    print()
    print("second-half median absolute error (degrees, after the best rotation/reflection); "
          "coverage of the 95% bands; CPU seconds and peak MB of the mgplvm fit")
    print(" | ".join(name for name, _ in cols))
    for r in rows:
        print(" | ".join(fmt.format(r[name]) for name, fmt in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
