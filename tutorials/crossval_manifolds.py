# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Choosing a manifold by cross-validation
#
# A GPLVM with a flat latent space R² can describe activity that really lives on a torus T²:
# the torus just gets cut open and stretched. The training ELBO of two models with different
# latent spaces is therefore a poor guide to the topology: what matters is which model
# **predicts held-out data** better. This tutorial simulates cells tuned to two angles (T² data)
# and compares T² against R² with the protocol of the mGPLVM paper (Jensen et al., 2020).
#
# **Protocol** (`mgplvm.crossvalidate`), for each fold:
#
# 1. split the time bins into a training and a test half, and the neurons into halves A and B;
# 2. fit each candidate manifold on *all* neurons at the training bins;
# 3. freeze the generative model (kernels, inducing points, q(u), likelihood) and infer the
#    latents at the test bins from neuron half A alone (`fit(..., train="latents")`);
# 4. predict half B at the test bins and score it; then swap the roles of A and B.
#
# No datum that is scored was used to fit either the tuning curves or the latents at which it
# is predicted, so a model cannot win by overfitting. The primary score is an importance-weighted
# held-out log-likelihood per datum,
#
# (1/#data) Σ_t log (1/K) Σ_k exp(Σ_{n∈B} E_q(f)[log p(y_{n,t} | f_n(g_t^{(k)}))]),
# g^{(k)} ~ q(g) inferred from half A,
#
# (higher is better), with the mean squared error of the posterior-predictive mean and the
# fraction of variance explained alongside. Each fold uses fresh random halvings; every manifold
# sees the same folds, so differences can be tested fold by fold (an exact sign-flip test).
#
# Set `MGPLVM_SMOKE=1` for a reduced run (tiny data and iterations: the numbers are then
# meaningless); figures go to `$MGPLVM_OUT` (default `.`).

# %%
import os
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import mgplvm
from mgplvm import datasets
from mgplvm.crossval import CVResult

SMOKE = os.environ.get("MGPLVM_SMOKE") == "1"
OUT = Path(os.environ.get("MGPLVM_OUT", "."))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
t_start = time.perf_counter()
# with few bins per half, some neurons are silent in a half: harmless, but mgplvm warns
warnings.filterwarnings("ignore", message=".*never fire")

# %% [markdown]
# ## 1. Simulate T² data
# `datasets.torus(d=2)` draws two head-direction-like angles that wander smoothly (Ornstein–
# Uhlenbeck angular velocities) and cells tuned to both, each with a product of von Mises bumps
# around a preferred point on the torus; counts are Poisson in 25 ms bins.

# %%
data = datasets.torus(d=2, n_neurons=20 if SMOKE else 50, n_time=100 if SMOKE else 500, seed=1)
print(datasets.summarize(data))
print("Y:", data.Y.shape, "(trials, neurons, time); latents:", data.latents.shape)

# %% [markdown]
# ## 2. Cross-validate T² against R²
# Every (manifold, fold) pair is an independent task with its own seed. `fit_kwargs` go to the
# training fit, `test_fit_kwargs` to the latent-only fits at the test bins, `model_kwargs` to
# `mgplvm.MGPLVM`. Here the tasks run one after the other (`n_workers=1`); see section 4 for
# process pools and clusters.

# %%
if SMOKE:
    settings = {"n_splits": 1, "fit_kwargs": {"n_iter": 8, "n_mc": 2},
                "test_fit_kwargs": {"n_iter": 4, "n_mc": 2}, "n_eval_samples": 8,
                "model_kwargs": {"n_inducing": 16}}
else:
    settings = {"n_splits": 3, "fit_kwargs": {"n_iter": 200, "n_mc": 4},
                "test_fit_kwargs": {"n_iter": 100, "n_mc": 4}, "n_eval_samples": 64,
                "model_kwargs": {}}
cv = mgplvm.crossvalidate(
    data.Y, ["T2", "R2"], seed=0, bin_size=data.bin_size, n_workers=1, progress=False,
    **settings,
)

# %% [markdown]
# ## 3. Results
# `cv.table()` prints mean ± s.e.m. over folds, each manifold's paired difference to the best
# with a sign-flip test p-value (or why no test is possible with this few folds), how many folds
# each manifold won, how many failed (a failed fold, e.g. a Cholesky error, is recorded with its
# message, never silently dropped) and the **recommendation**: the simplest candidate within
# one paired standard error of the best (R² contains a torus patch, so it must do clearly
# better than T² to be recommended), or "undecided". `cv.plot()` draws one grey line per fold
# linking the manifolds' scores.

# %%
print(cv.table())
print("best mean:", cv.winner())
print("recommendation:", cv.recommend().headline())
print("summary:", cv.summary())
print("paired differences to the winner:", cv.paired_differences())
print("seconds per task:", {f"{r['manifold']} fold {r['fold']}": round(r["seconds"], 1)
                            for r in cv.records})
fig = cv.plot()
fig.savefig(OUT / "cv_T2_vs_R2.png", dpi=100)

# %% [markdown]
# Other metrics: `cv.table("mse")`, `cv.table("var_explained")`. `cv.to_dataframe()` gives one
# row per task (a pandas DataFrame when pandas is installed). `cv.save("cv.h5")` writes the
# records to HDF5 and `CVResult.load` reads them back.

# %%
print(cv.table("var_explained"))
cv.save(OUT / "cv.h5")
again = CVResult.load(OUT / "cv.h5")
print("reloaded winner:", again.winner())

# %% [markdown]
# How to read this: in the mGPLVM paper's synthetic experiment (10 repetitions) T² had a clearly
# better held-out likelihood than R² on T² data. Three folds with a short training budget, as
# here, give a noisy estimate of a small difference: look at the recommendation and its
# grounds, the paired differences and the fold-by-fold lines, not only at the best mean, and use
# more folds (10 in the paper) and longer fits before drawing conclusions from real data.
# `benchmarks/cv_topology.py` repeats this comparison (and T¹ vs R¹, SO(3) vs R³, and
# T² vs SO(3) vs S³) over 10 simulated recordings.
#
# ## 4. Running the folds in parallel, on a laptop or a cluster
# `crossvalidate` accepts any `concurrent.futures.Executor`. By default (`n_workers > 1` or
# unset) it starts a local process pool (spawn start method). In a *script*, put the call under
# `if __name__ == "__main__":`, because spawned workers re-import the main module. Each task pins
# torch to `threads_per_task` threads (default 1), so the numbers do not depend on where a task
# ran. With `results_dir=...` every finished task is written at once and an interrupted run
# resumes where it stopped.
#
# With [Dask](https://distributed.dask.org), `Client.get_executor()` is such an executor:
#
# ```python
# from dask.distributed import Client, LocalCluster
#
# client = Client(LocalCluster(n_workers=4, threads_per_worker=1, processes=True))
# cv = mgplvm.crossvalidate(Y, ["T1", "R1", "R2"], n_splits=10, bin_size=0.025,
#                           executor=client.get_executor(), results_dir="cv_folds")
# ```
#
# On a SLURM cluster, [dask-jobqueue](https://jobqueue.dask.org) submits the workers as batch
# jobs (not installed with mgplvm: `pip install dask-jobqueue`):
#
# ```python
# from dask.distributed import Client
# from dask_jobqueue import SLURMCluster
#
# cluster = SLURMCluster(cores=1, processes=1, memory="4GB", walltime="02:00:00",
#                        queue="cpu", job_extra_directives=["--cpus-per-task=1"])
# cluster.scale(jobs=20)  # 20 single-core workers: 10 folds x 2 manifolds at once
# client = Client(cluster)
# cv = mgplvm.crossvalidate(Y, ["T2", "R2"], n_splits=10, bin_size=0.025,
#                           executor=client.get_executor(), results_dir="cv_folds")
# ```
#
# Use process-based workers (Dask's default `processes=True`): every task seeds the global torch
# and Pyro random number generators, which threads would share. See the
# [cross-validation](../crossval.md) page for more.

# %%
plt.close("all")
print(f"total time {time.perf_counter() - t_start:.0f} s")
