# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Head direction on a ring, end to end
#
# Head-direction cells in the anterodorsal thalamus fire when the animal's head points in a
# preferred direction. The population activity therefore lives on a **circle**: if we did not
# know the tracked head direction, could we recover it from spikes alone, together with each
# cell's tuning curve? This tutorial fits an mGPLVM with a latent on the ring T¹ to the bundled
# recording and checks the answer against the tracked head direction.
#
# **The bundled recording is simulated.** `data/head_direction.h5` was made by
# `mgplvm.datasets` (32 anterodorsal-thalamus-like cells, 25 ms bins, 4 minutes of a smooth
# head-turning trajectory; see `data/make_bundled_data.py`). It is not a real recording; because
# it is simulated we know the true tuning curves and can compare with them.
#
# The model: one latent angle θ_t ∈ T¹ per time bin, a Gaussian-process tuning curve
# f_n ~ GP(0, k) per neuron with a kernel of the chordal distance 2(1 − cos(θ − θ')), and Poisson
# counts y_{n,t} ~ Poisson(Δ · exp f_n(θ_t)). Variational inference maximises the ELBO
#
# L = Σ E_q[log p(y | f, θ)] − Σ_n KL(q(u_n) ‖ p(u_n)) − KL(q(θ) ‖ p(θ)),
#
# where q(θ_t) is a Gaussian in the tangent space wrapped around the circle (see the
# [mathematics](../maths.md) page).
#
# Set `MGPLVM_SMOKE=1` for a reduced run (the first 10 s of the recording, a few dozen
# iterations; the numbers are then not meaningful); figures go to `$MGPLVM_OUT` (default `.`).

# %%
import math
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import mgplvm
from mgplvm import datasets, plotting
from mgplvm.alignment import align
from mgplvm.io import load_recording

SMOKE = os.environ.get("MGPLVM_SMOKE") == "1"
OUT = Path(os.environ.get("MGPLVM_OUT", "."))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
t_start = time.perf_counter()

# the bundled data ship with the repository: tutorials/../data
DATA = Path(mgplvm.__file__).resolve().parents[1] / "data" / "head_direction.h5"

# %% [markdown]
# ## 1. Load the recording
# `load_recording` returns counts `Y` with shape `(trials, neurons, time)`, the bin size in
# seconds, the tracked head direction (radians) when the file has it, and per-cell metadata. It
# also reads `.npz`, `.mat`, NWB and pynapple objects; see `mgplvm.io`.

# %%
rec = load_recording(DATA)
print(rec.summary())
n_bins = 400 if SMOKE else rec.n_time
Y = rec.Y[..., :n_bins]
tracked = rec.head_direction[:, :n_bins]  # (trials, time), radians
print(f"using {n_bins} bins ({n_bins * rec.bin_size:.0f} s)")

# %% [markdown]
# ## 2. Fit a ring model
# `MGPLVM("T1", ...)` builds the model; `mgplvm.fit` runs stochastic variational inference.
# For a long recording we fit on random windows of `batch_size` bins per iteration (an unbiased
# ELBO estimate); `n_mc` latent samples are drawn per iteration. The first iterations anneal the
# latent KL term, which stops the latents collapsing onto one point of the circle.

# %%
model = mgplvm.MGPLVM("T1", rec.n_neurons, n_bins, rec.n_trials, likelihood="poisson",
                      bin_size=rec.bin_size, seed=0)
result = mgplvm.fit(
    model, Y,
    n_iter=40 if SMOKE else 1000,
    n_mc=4,
    batch_size=None if SMOKE else 500,
    seed=0,
    progress=False,
)
print(f"{result.n_iter} iterations in {result.elapsed:.1f} s, final ELBO {result.final_elbo:.1f}")
fig = plotting.plot_loss(result.losses)
fig.savefig(OUT / "hd_elbo.png", dpi=100)

# %% [markdown]
# ## 3. Align to the tracked head direction
# The likelihood depends on the latents only through distances on the circle, so the fit is
# identified only up to the ring's symmetries: a rotation θ → θ + c and a reflection θ → −θ.
# `mgplvm.alignment.align` finds the symmetry that maps the inferred latents best onto the
# tracked head direction; the error is the absolute wrapped angle difference.

# %%
post = model.latent_posterior(level=0.95)
truth = torch.as_tensor(tracked[..., None], dtype=post.mean.dtype)  # (trials, time, 1)
al = align(post.mean, truth, model.manifold)
print(f"alignment: {al.transform}")
print(f"median absolute head-direction error: {math.degrees(al.median_error):.1f} deg")

# %% [markdown]
# The credible band of the latent is frame-independent (the alignment is an isometry), so we
# move the posterior mean into the tracked frame and keep its half-width.

# %%
n_show = min(n_bins, int(20 / rec.bin_size))  # the first 20 s
times = np.arange(n_show) * rec.bin_size
inferred = al.aligned[0, :n_show, 0]
half = (post.upper - post.mean)[0, :n_show, 0]
fig = plotting.plot_latent_vs_truth(times, inferred, inferred - half, inferred + half,
                                    truth=tracked[0, :n_show])
fig.savefig(OUT / "hd_inferred_vs_tracked.png", dpi=100)

# %% [markdown]
# ## 4. Tuning curves with uncertainty
# `model.tuning_curves(points)` returns the posterior mean and s.d. of every neuron's firing rate
# (Hz) at `points`. We evaluate them on a grid of tracked head directions, mapped into the
# model's frame with `al.inverse`, and compare with the simulator's true tuning curves
# (`mgplvm.datasets.load_h5(path).tuning(grid)`), drawn dashed.

# %%
grid = torch.linspace(-math.pi, math.pi, 121, dtype=torch.float64)[:-1, None]  # (K, 1)
mean, sd = model.tuning_curves(al.inverse(grid))  # (neurons, K)
sim = datasets.load_h5(DATA)
true_rates = sim.tuning(grid.numpy())  # (neurons, K), Hz
order = np.argsort(true_rates.argmax(-1))  # by true preferred direction
shown = order[np.linspace(0, len(order) - 1, 12).round().astype(int)]  # spread around the ring
fig = plotting.plot_polar_tuning(grid[:, 0], mean, sd, neurons=shown.tolist(),
                                 true_rates=true_rates)
fig.savefig(OUT / "hd_tuning.png", dpi=100)

inside = ((true_rates >= (mean - 2 * sd).numpy()) & (true_rates <= (mean + 2 * sd).numpy()))
pref_err = np.degrees(np.abs(np.angle(np.exp(1j * (grid[mean.argmax(-1).numpy(), 0].numpy()
                                                   - grid[true_rates.argmax(-1), 0].numpy())))))
print(f"true rate inside the ±2 s.d. band: {100 * inside.mean():.0f}% of (neuron, angle) pairs")
print(f"median error of the preferred direction: {np.median(pref_err):.1f} deg")

# %% [markdown]
# The bands express the uncertainty about each tuning curve *given* the inferred latents. They
# do not include the error of the latents themselves: a latent that is off by δ smears the
# estimated curve by about δ, so expect fewer than 95% of the true rates inside the bands even in
# a good fit. The preferred directions are recovered more precisely than single time bins,
# because each one pools many bins.
#
# The fit above used the default uniform prior over the circle, which treats bins as
# independent; head direction moves smoothly, and `MGPLVM(..., prior="brownian")` (a wrapped
# Gaussian random walk on the increments) shares information between neighbouring bins.

# %% [markdown]
# ## 5. Save and load the model
# `model.save` writes the configuration and parameters; `MGPLVM.load` rebuilds the same model.
# The command line `mgplvm fit data/head_direction.h5 --manifold T1` does all of the above and
# writes an HTML report.

# %%
path = OUT / "hd_model.pt"
model.save(path)
loaded = mgplvm.MGPLVM.load(path)
same = torch.allclose(loaded.latent_posterior().mean, model.latent_posterior().mean)
print(f"saved to {path.name}; reloaded latents identical: {same}")
plt.close("all")
print(f"total time {time.perf_counter() - t_start:.0f} s")
