"""Benchmark / sanity figures for mgplvm.comms (DESIGN §5).

1. Non-normal / normal R_max ratio for tridiagonal chains sharing one spectrum (forward weights
   α = 5, backward 1/α, versus α = 1; diagonal γ = −3; B = C = I), optimised over Σ and T, printed
   next to the expected values from an independent reimplementation.  Two T searches are shown:
   our default grid (down to T = 0.02/|λ|_max, then refined) and a grid restricted to
   T ∈ [0.1, 10] (21 log-spaced points, refined inside it).
2. Time for one rate + gradient (w.r.t. A and Σ) on an n = 279 random network.
3. Stability-optimised circuit, N = 200 (Hennequin et al. 2014): time, α(W), smoothed abscissae.
4. Figures (PNG) in $MGPLVM_OUT (default ./comms_figures_out): rate vs noise, Σ* spectra,
   transient amplification.

Run:  python benchmarks/comms_figures.py   (set MGPLVM_SMOKE=1 for a quick reduced run).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from mgplvm import comms

SMOKE = os.environ.get("MGPLVM_SMOKE") == "1"
F64 = torch.float64
ALPHA, GAMMA = 5.0, -3.0
EXPECTED = {(6, 0.01): 0.9, (6, 1.0): 2.0, (6, 100.0): 13.0, (4, 10.0): 2.4, (8, 10.0): 13.0,
            (12, 10.0): 24.0}
RESTRICTED_GRID = np.geomspace(0.1, 10.0, 21)


def chain_ratios() -> dict:
    cases = [(6, 1.0), (4, 10.0)] if SMOKE else list(EXPECTED)
    print("\n== Non-normal (α=5) / normal (α=1) chain, γ=−3, B=C=I: R_max ratio ==")
    print(f"{'n':>3} {'σ²':>7} | {'R normal':>9} {'T*':>7} {'R non-n.':>9} {'T*':>6} "
          f"{'ratio':>7} | {'ratio T≥0.1':>11} | {'expected':>8} | eff.rank Σ* (n / nn)")
    out = {}
    for n, s2 in cases:
        eye = torch.eye(n, dtype=F64)
        A_n, A_nn = comms.chain_pair(n, ALPHA, GAMMA)
        kw = {"restarts": 3, "max_iter": 60} if SMOKE else {}
        full = [comms.max_rate(A, eye, eye, s2, **kw) for A in (A_n, A_nn)]
        restr = [comms.max_rate(A, eye, eye, s2, T_grid=RESTRICTED_GRID, **kw)
                 for A in (A_n, A_nn)]
        q_full = full[1].rate / full[0].rate
        q_restr = restr[1].rate / restr[0].rate
        er = [float(comms.effective_rank(r.Sigma)) for r in full]
        print(f"{n:>3} {s2:>7g} | {full[0].rate:>9.4g} {full[0].T:>7.3g} {full[1].rate:>9.4g} "
              f"{full[1].T:>6.3g} {q_full:>7.3f} | {q_restr:>11.3f} | "
              f"{'≈' + format(EXPECTED[(n, s2)], 'g'):>8} | {er[0]:.2f} / {er[1]:.2f}")
        out[(n, s2)] = (full, restr)
    return out


def timing_279() -> float:
    n = 120 if SMOKE else 279
    A = comms.random_gaussian(n, radius=0.8, seed=0).requires_grad_(True)
    eye = torch.eye(n, dtype=F64)
    Sigma = (eye / n).requires_grad_(True)
    comms.transmission_rate(A, eye, eye, Sigma, 1.0, 1.0).backward()  # warm-up
    times = []
    for _ in range(3):
        A.grad = Sigma.grad = None
        t0 = time.perf_counter()
        r = comms.transmission_rate(A, eye, eye, Sigma, 1.0, 1.0)
        r.backward()
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"\n== Rate + gradient (A and Σ), random network n = {n}, T = 1, σ² = 1 ==")
    print(f"rate = {float(r.detach()):.6f} bits/time; time: best {best:.3f} s, "
          f"median {float(np.median(times)):.3f} s (torch threads = {torch.get_num_threads()}; "
          f"target < 2 s)")
    return best


def soc() -> comms.SOCResult:
    n = 100 if SMOKE else 200
    print(f"\n== Stability-optimised circuit, N = {n} (Hennequin et al. 2014 recipe) ==")
    res = comms.stability_optimised_circuit(n=n, target=0.15, max_seconds=120.0)
    a_eps = {eps: float(comms.smoothed_spectral_abscissa(res.W, eps)) for eps in (1e-3, 1e-4)}
    print(f"start α(W) = {res.history['abscissa'][0]:.3f}; after {res.iterations} iterations, "
          f"{res.seconds:.1f} s: α(W) = {res.spectral_abscissa:.4f} "
          f"(converged to < 0.15: {res.converged})")
    print(f"smoothed abscissa used by the descent (paper's adaptive ε, s = max(1.5α, α + 0.2)): "
          f"{res.smoothed_abscissa:.4f}")
    print("exact ε-smoothed abscissa α̃_ε(W): "
          + ", ".join(f"ε = {e:g}: {v:.4f}" for e, v in a_eps.items()))
    W, ne = res.W, res.n_exc
    print(f"Dale: E weights ≥ 0: {bool((W[:, :ne] >= 0).all())}, I weights ≤ 0: "
          f"{bool((W[:, ne:] <= 0).all())}; mean(W_EI)/mean(W_EE) = "
          f"{float(W[:ne, ne:].mean() / W[:ne, :ne].mean()):.3f}")
    eps = 1e-4
    res2 = comms.stability_optimised_circuit(n=n, target=0.15, criterion="smoothed", eps=eps,
                                             max_seconds=120.0)
    check = float(comms.smoothed_spectral_abscissa(res2.W, eps))
    print(f"target on the exact smoothed abscissa (ε = {eps:g}): {res2.iterations} iterations, "
          f"{res2.seconds:.1f} s: α̃_ε(W) = {res2.smoothed_abscissa:.4f} (recomputed with "
          f"mgplvm.control: {check:.4f}; < 0.15: {check < 0.15}), α(W) = "
          f"{res2.spectral_abscissa:.4f}")
    return res


def figures(ratios: dict, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    n = 6
    eye = torch.eye(n, dtype=F64)
    A_n, A_nn = comms.chain_pair(n, ALPHA, GAMMA)
    noise = [0.01, 1.0, 100.0] if SMOKE else [0.01, 0.1, 1.0, 10.0, 100.0]
    kw = {"restarts": 3, "max_iter": 60} if SMOKE else {}
    rates = comms.rate_vs_noise({"normal (α=1)": A_n, "non-normal (α=5)": A_nn}, noise, **kw)
    comms.plot_rate_vs_noise(noise, rates, ratio=("non-normal (α=5)", "normal (α=1)")).savefig(
        outdir / "rate_vs_noise.png", dpi=120)
    s2 = 100.0
    Sig = {lab: comms.max_rate(A, eye, eye, s2, **kw).Sigma
           for lab, A in (("normal", A_n), ("non-normal", A_nn))}
    comms.plot_input_spectrum(Sig).savefig(outdir / "input_spectrum.png", dpi=120)
    comms.plot_transient_amplification({"normal": A_n, "non-normal": A_nn}).savefig(
        outdir / "transient_amplification.png", dpi=120)
    print(f"\nfigures written to {outdir}")


def main() -> None:
    print(f"mgplvm.comms benchmark (smoke={SMOKE}); Lyapunov solvers and Gramians: mgplvm.control")
    t0 = time.perf_counter()
    ratios = chain_ratios()
    timing_279()
    soc()
    figures(ratios, Path(os.environ.get("MGPLVM_OUT", "comms_figures_out")))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
