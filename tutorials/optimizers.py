# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Optimisers: Adam, natural gradients and FishLeg
#
# `mgplvm.fit` maximises the ELBO with a choice of optimiser (`optimizer=`):
#
# * `"adam"` (default): Riemannian Adam (geoopt) on every parameter — latent means and inducing
#   points on their manifold, everything else in Euclidean space.
# * `"ngd"`: natural-gradient descent on the variational posterior of the inducing values q(u)
#   (GPyTorch's NGD with a ramped step size), Riemannian Adam on the rest. For a Gaussian
#   likelihood one natural step with step size 1 is the exact update of q(u) given the rest; for
#   Poisson counts it is a good preconditioner. Needs a natural parameterisation of q(u):
#   `MGPLVM(..., variational_distribution="natural")`.
# * `"fishleg"`: FishLeg (Garcia et al., 2023) on every parameter: it learns an approximation
#   Q(λ) ≈ (F + γI)⁻¹ of the damped inverse Fisher by minimising an auxiliary loss built from
#   Fisher–vector products with model-sampled data, and steps along −Q(λ)∇L.
# * `"ngd+fishleg"`: NGD for q(u) and FishLeg for the rest.
#
# Which one is fastest depends on the problem, the data size and the machine: curvature-aware
# steps cost more per iteration than Adam. This tutorial shows how to run them side by side on a
# small ring and plot the loss against iterations and against wall-clock time. **It is a
# demonstration, not a benchmark**: one seed, untuned step sizes and a shared machine. The
# measured comparison — several seeds, a tuned Adam, a full-batch ELBO evaluated outside the
# timings, time to a common target and the held-out log-likelihood — is in
# `benchmarks/optimizers.py` (`python benchmarks/optimizers.py --quick` for a short run).
#
# Set `MGPLVM_SMOKE=1` for a reduced run (tiny data, a few iterations); figures go to
# `$MGPLVM_OUT` (default `.`).

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import mgplvm
from mgplvm import datasets
from mgplvm.alignment import align

SMOKE = os.environ.get("MGPLVM_SMOKE") == "1"
OUT = Path(os.environ.get("MGPLVM_OUT", "."))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
t_start = time.perf_counter()

# %% [markdown]
# ## 1. A small ring
# Simulated head-direction cells (`datasets.head_direction_ring`), Poisson counts in 25 ms bins.

# %%
data = datasets.head_direction_ring(n_neurons=20 if SMOKE else 40, n_time=100 if SMOKE else 400,
                                    seed=1)
print(datasets.summarize(data))
N_ITER = 8 if SMOKE else 300

# %% [markdown]
# ## 2. The same fit with each optimiser
# Every run starts from the same model initialisation (`seed=0`) and uses the same fit seed, the
# same number of latent samples per iteration and no early stopping. `lr` is Adam's step for
# `"adam"` and for the Adam part of `"ngd"`, and FishLeg's step η for the FishLeg variants (here
# the library defaults for all).
#
# The training loss is a noisy Monte-Carlo estimate, and during the first few hundred iterations
# the latent KL term is annealed (weight β_i = 1 − e^{−i/100}), so the loss rises as β grows even
# when the fit improves. To compare like with like, a callback evaluates the **full ELBO at
# β = 1** every few iterations with the same latent samples for every method (common random
# numbers, on a forked random stream so the fit itself is unaffected); the time spent there is
# excluded from the wall-clock axis.

# %%
METHODS = ["adam", "ngd", "fishleg", "ngd+fishleg"]
EVAL_EVERY = 2 if SMOKE else 10


def full_elbo(model):
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(123)
        return float(model.elbo(data.Y, n_mc=8 if SMOKE else 32))


# the optimisers drive the stochastic fit, so the ring gets the per-bin Gaussian posterior and
# the uniform prior here (its default, the exact grid posterior, is fitted by EM and needs none)
SVI = {"latent_posterior": "relie", "prior": "uniform"}


def run(method):
    natural = method.startswith("ngd")
    model = mgplvm.MGPLVM("T1", data.n_neurons, data.n_time, data.n_trials,
                          bin_size=data.bin_size, seed=0, **SVI,
                          variational_distribution="natural" if natural else "cholesky")
    trace = {"iteration": [], "seconds": [], "elbo": []}
    clock = {"spent": 0.0, "last": time.perf_counter()}

    def callback(iteration, loss, model):
        clock["spent"] += time.perf_counter() - clock["last"]  # optimisation time only
        if (iteration + 1) % EVAL_EVERY == 0:
            trace["iteration"].append(iteration + 1)
            trace["seconds"].append(clock["spent"])
            trace["elbo"].append(full_elbo(model))
        clock["last"] = time.perf_counter()

    mgplvm.fit(model, data.Y, optimizer=method, n_iter=N_ITER, n_mc=4, seed=0,
               early_stopping=False, progress=False, callback=callback)
    err = np.degrees(align(model.latent_posterior().mean, data.latents, model.manifold)
                     .median_error)
    return {**{k: np.array(v) for k, v in trace.items()}, "err": err}


# one-time costs (lazy imports, first calls) must not be charged to whichever method runs first
for method in METHODS:
    warm = mgplvm.MGPLVM("T1", data.n_neurons, data.n_time, bin_size=data.bin_size, seed=0,
                         **SVI,
                         variational_distribution="natural" if "ngd" in method else "cholesky")
    mgplvm.fit(warm, data.Y, optimizer=method, n_iter=2, n_mc=4, progress=False)

runs = {}
for method in METHODS:
    r = runs[method] = run(method)
    print(f"{method:>12}: {r['seconds'][-1]:6.1f} s ({1000 * r['seconds'][-1] / N_ITER:4.0f} "
          f"ms/iter), final ELBO {r['elbo'][-1]:10.1f}, best {r['elbo'].max():10.1f}, "
          f"median latent error {r['err']:5.1f}°")

# %% [markdown]
# ## 3. ELBO against iterations and against time

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
for method, r in runs.items():
    axes[0].plot(r["iteration"], r["elbo"], label=method)
    axes[1].plot(r["seconds"], r["elbo"], label=method)
axes[0].set_xlabel("iteration")
axes[1].set_xlabel("optimisation wall-clock time (s)")
axes[0].set_ylabel("ELBO at β = 1 (higher is better)")
best = max(r["elbo"].max() for r in runs.values())
lowest = min(np.percentile(r["elbo"], 10) for r in runs.values())
axes[0].set_ylim(lowest, best + 0.05 * (best - lowest))
axes[0].legend(frameon=False)
fig.suptitle("one seed on a shared machine: see benchmarks/optimizers.py for the measured "
             "comparison", fontsize=9)
fig.tight_layout()
fig.savefig(OUT / "optimizers_elbo.png", dpi=100)

# %% [markdown]
# ## 4. Options
# Optimiser settings go through `optimizer_kwargs`, e.g. the NGD step and its ramp,
# `fit(..., optimizer="ngd", optimizer_kwargs={"ngd_lr": 0.1, "ngd_ramp": 20})`, or FishLeg's
# damping and the structure of its preconditioner blocks,
# `optimizer_kwargs={"damping": 1.0, "structure": "diag"}` (defaults:
# `mgplvm.optim.factory.FISHLEG_DEFAULTS`). `register_optimizer(name, factory)` from
# `mgplvm.fit` adds your own optimiser under a new name. The optimisers can also drive a plain
# torch loop on any Pyro model: `mgplvm.optim.make_optimizer(name, model)` (see the API
# reference).

# %%
plt.close("all")
print(f"total time {time.perf_counter() - t_start:.0f} s")
