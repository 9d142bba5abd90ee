"""How well could latents be decoded if the tuning curves were known? A reference for recovery.

For the T² and SO(3) recovery problems of ``benchmarks/recovery.py`` (same generators, sizes and
seeds), decode the latents from the counts with the *true* tuning curves:

* per-bin maximum likelihood over a dense candidate set (a 90 × 90 grid on T², 40,000 Haar draws
  on SO(3));
* T²: the posterior mean of a grid HMM (forward–backward, wrapped-Gaussian steps per angle with
  s.d. = speed × bin × {1, 2});
* SO(3): maximum likelihood pooled over a window of ±w bins (w = 1, 2, 4), and with
  ``--smooth-steps a,b,...`` the particle smoother of :mod:`mgplvm.smoothing` at each step s.d.
  (its log evidence is printed with it).

Errors are medians against the true latents (per angle on T², rotation angle on SO(3)); no
alignment is needed because the tuning curves are the true ones. A fitted mGPLVM, which learns the
tuning curves too, cannot be expected to beat these numbers by much; a fit far above them loses
information somewhere.

Run ``python benchmarks/decoding_oracle.py [--seed 0] [--speeds 100,400]`` (seconds).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mgplvm import datasets
from mgplvm.alignment import angle_error
from mgplvm.datasets import _tuning_rates
from mgplvm.manifolds import SO3, Torus
from mgplvm.smoothing import particle_smoother


def _log_lik(data, manifold, points: torch.Tensor, bins: slice = slice(None)) -> np.ndarray:
    """``(time, candidates)`` Poisson log-likelihood of the counts in ``bins`` at every
    candidate point."""
    p = data.params
    rates = _tuning_rates(manifold, "von_mises", points, p["preferred"], p["widths"],
                          p["peak_rates"], p["baselines"])  # (neurons, candidates)
    lam = rates * data.bin_size
    return data.Y[0][:, bins].T @ np.log(lam) - lam.sum(0)


def _median_angle_error(est: np.ndarray, truth: np.ndarray) -> list[float]:
    """Median wrapped error per angle."""
    return angle_error(torch.from_numpy(est), torch.from_numpy(truth)).median(0).values.tolist()


def torus_oracle(seed: int, speed: float, grid: int = 90) -> dict[str, list[float]]:
    data = datasets.torus(d=2, n_neurons=100, n_time=500, seed=seed, angular_velocity_sd=speed)
    g = np.linspace(-np.pi, np.pi, grid, endpoint=False)
    a, b = np.meshgrid(g, g, indexing="ij")
    pts = torch.from_numpy(np.stack([a.ravel(), b.ravel()], -1))
    ll = _log_lik(data, Torus(2), pts)
    truth = data.latents[0]
    out = {
        # how much of each angle the recording visits (an arc can be warped, a full turn not)
        "unwrapped range (deg)": np.rad2deg(np.ptp(np.unwrap(truth, axis=0), axis=0)).tolist(),
        "per-bin ML": _median_angle_error(pts.numpy()[ll.argmax(1)], truth),
    }
    lik = np.exp(ll - ll.max(1, keepdims=True)).reshape(-1, grid, grid)
    diff = np.angle(np.exp(1j * (g[:, None] - g[None, :])))
    for factor in (1, 2):
        sd = np.deg2rad(speed * data.bin_size * factor)
        K = np.exp(-0.5 * (diff / sd) ** 2)
        K /= K.sum(1, keepdims=True)
        T = lik.shape[0]
        fwd = np.empty_like(lik)
        alpha = np.full((grid, grid), 1.0 / grid**2)
        for t in range(T):  # forward filter; the step kernel acts on both angles
            if t:
                alpha = K @ alpha @ K.T
            alpha = alpha * lik[t]
            alpha /= alpha.sum()
            fwd[t] = alpha
        beta = np.ones((grid, grid))
        post = np.empty_like(lik)
        for t in range(T - 1, -1, -1):
            post[t] = fwd[t] * beta
            post[t] /= post[t].sum()
            beta = K.T @ (beta * lik[t]) @ K
            beta /= beta.sum()
        mean = np.stack([np.angle((post.sum(2) * np.exp(1j * g)).sum(1)),
                         np.angle((post.sum(1) * np.exp(1j * g)).sum(1))], -1)
        out[f"HMM, step s.d. x{factor}"] = _median_angle_error(mean, truth)
    return out


def so3_oracle(seed: int, speed: float, n_candidates: int = 40_000,
               smooth_steps: tuple[float, ...] = ()) -> dict[str, list[float]]:
    data = datasets.so3(n_neurons=150, n_time=500, seed=seed, angular_velocity_sd=speed)
    m = SO3()
    pts = m.random(n_candidates, dtype=torch.float64,
                   generator=torch.Generator().manual_seed(seed))
    ll = _log_lik(data, m, pts)
    truth = torch.from_numpy(data.latents[0])

    def err(est):  # rotation angle = twice the quaternion geodesic distance
        return float((2 * m.dist(est, truth)).median())

    out = {"per-bin ML": [err(pts[ll.argmax(1)])]}
    csum = np.concatenate([np.zeros((1, ll.shape[1])), np.cumsum(ll, 0)])
    T = ll.shape[0]
    for w in (1, 2, 4):
        lo, hi = np.clip(np.arange(T) - w, 0, T), np.clip(np.arange(T) + w + 1, 0, T)
        out[f"ML pooled over ±{w} bins"] = [err(pts[(csum[hi] - csum[lo]).argmax(1)])]

    def bin_log_lik(g, t):  # (1, P, 4) -> (1, P)
        return torch.as_tensor(_log_lik(data, m, g[0], slice(t, t + 1)))

    for sd in smooth_steps:  # particle smoother (mgplvm.smoothing) with the true tuning curves
        g = torch.Generator().manual_seed(seed)
        initial = m.random(1, 20 * 2000, dtype=torch.float64, generator=g)
        sm = particle_smoother(m, bin_log_lik, initial, data.n_time, sd, n_particles=2000,
                               generator=g)
        out[f"smoother, step {sd:g} (log evidence {float(sm.log_evidence[0]):.0f})"] = [
            err(sm.mean[0])
        ]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speeds", default="100,400", help="latent speed s.d. (deg/s), a,b,...")
    ap.add_argument("--smooth-steps", default="",
                    help="SO(3): also particle-smooth (2000 particles) at these step s.d.s "
                    "(a,b,...; about a minute each) and print each one's log evidence")
    args = ap.parse_args(argv)
    steps = tuple(float(v) for v in args.smooth_steps.split(",") if v)
    for speed in (float(s) for s in args.speeds.split(",")):
        for label, fn in (("T2, 100 neurons, 500 bins", torus_oracle),
                          ("SO3, 150 neurons, 500 bins", so3_oracle)):
            print(f"{label}, {speed:g} deg/s, seed {args.seed} (median error, rad):")
            extra = {"smooth_steps": steps} if fn is so3_oracle else {}
            for k, v in fn(args.seed, speed, **extra).items():
                print(f"  {k:<24} " + " / ".join(f"{e:.3f}" for e in v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
