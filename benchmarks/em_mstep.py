"""Which optimiser for the M-step of the ring's EM fit, and how many steps?

The M-step of :mod:`mgplvm.em` maximises ``Q = Σ γ_t(k) E[log p(y | f(θ_k))] − KL(q(u) ‖ p(u))``
over q(u), kernel hyperparameters, GP means and likelihood parameters, from sufficient
statistics at the grid angles. On a 15-minute :func:`mgplvm.datasets.realistic_head_direction`
session, from the state after 5 EM iterations, this prints:

1. ``Q`` per datum reached by one M-step of L-BFGS (strong Wolfe line search; what the fit
   uses) of 5–200 iterations and by Adam (lr 0.01) after 50–2000 steps, with the M-step's
   wall-clock time — the optimiser that gets closest to the maximum soonest;
2. whole default fits with ``m_steps`` (L-BFGS iterations per M-step) of 5, 20 and 80:
   EM iterations, CPU seconds and the final ELBO per datum.

Run ``python benchmarks/em_mstep.py`` (about two minutes, one thread).
"""

from __future__ import annotations

import copy
import sys
import time

import torch

from mgplvm import MGPLVM
from mgplvm.datasets import realistic_head_direction
from mgplvm.em import _e_step, _generative_params, _GridData, _m_step_optimizer, fit_em


def q_value(model, data, stats, points) -> float:
    with torch.no_grad():
        m, v = model.gp_marginals(points)
        q = data.expected_log_lik(model.likelihood, m, v, stats) - model.kl_u()
    return float(q) / (data.N * data.B * data.T)


def q_after(model, data, stats, points, kind: str, counts: list[int]) -> list[tuple[float, float]]:
    """Q per datum and M-step seconds after each entry of ``counts``: L-BFGS runs as the fit runs
    it (one ``step`` of at most ``count`` iterations, from the same start each time); Adam
    (lr 0.01) continues from the previous count."""
    scale = 1.0 / (data.N * data.B * data.T)
    out = []
    adam_model, spent, done = copy.deepcopy(model), 0.0, 0
    adam = torch.optim.Adam(_generative_params(adam_model), lr=0.01)
    for count in counts:
        trial = copy.deepcopy(model) if kind == "lbfgs" else adam_model
        opt = _m_step_optimizer(_generative_params(trial), count, scale) \
            if kind == "lbfgs" else adam

        def closure(trial=trial, opt=opt):
            opt.zero_grad()
            m, v = trial.gp_marginals(points)
            loss = -(data.expected_log_lik(trial.likelihood, m, v, stats) - trial.kl_u()) * scale
            loss.backward()
            return loss

        t0 = time.perf_counter()
        if kind == "lbfgs":
            opt.step(closure)
            seconds = time.perf_counter() - t0
        else:
            for _ in range(count - done):
                opt.step(closure)
            spent += time.perf_counter() - t0
            done, seconds = count, spent
        out.append((q_value(trial, data, stats, points), seconds))
    return out


def main() -> int:
    torch.set_num_threads(1)
    data_sim = realistic_head_direction(minutes=15, seed=0)
    Y = data_sim.Y
    model = MGPLVM("T1", data_sim.n_neurons, data_sim.n_time, bin_size=data_sim.bin_size, seed=0)
    fit_em(model, Y, n_iter=5, progress=False)
    data = _GridData(model.validate_data(Y), model.likelihood)
    points = model.latents.points
    gamma, _ = _e_step(model, data, points)
    stats = data.statistics(torch.from_numpy(gamma))
    print("1. Q per datum after one M-step (higher is better) and the M-step's wall-clock seconds")
    print(f"   start: {q_value(model, data, stats, points):.6f}")
    for kind, counts in (("lbfgs", [5, 20, 80, 200]), ("adam", [50, 200, 800, 2000])):
        cells = q_after(model, data, stats, points, kind, counts)
        print(f"   {kind + ' (iterations)':<20}" + "".join(f"{c:>22d}" for c in counts))
        print(f"   {'':<20}" + "".join(f"{q:>12.6f} ({s:5.2f} s)" for q, s in cells))
    sys.stdout.flush()
    print("\n2. whole default fits by L-BFGS iterations per M-step")
    print(f"   {'m_steps':>8} {'EM iterations':>14} {'CPU s':>7} {'final ELBO per datum':>21}")
    n_data = data.N * data.B * data.T
    for m_steps in (5, 20, 80):
        trial = MGPLVM("T1", data_sim.n_neurons, data_sim.n_time, bin_size=data_sim.bin_size,
                       seed=0)
        c0 = time.process_time()
        res = fit_em(trial, Y, m_steps=m_steps, progress=False)
        cpu = time.process_time() - c0
        print(f"   {m_steps:>8} {res.n_iter:>14} {cpu:>7.0f} {-res.losses.min() / n_data:>21.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
