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
# The model: one latent angle θ_t ∈ T¹ per time bin that moves as a random walk (a wrapped
# Gaussian step of learned s.d. per bin), a Gaussian-process tuning curve f_n ~ GP(c_n, k) per
# neuron with a kernel of the chordal distance 2(1 − cos(θ − θ')), and Poisson counts
# y_{n,t} ~ Poisson(Δ · exp f_n(θ_t)). On the ring the posterior of the whole latent path given
# the tuning curves is computed exactly, on a grid of 120 angles (a hidden Markov chain), so the
# fit is expectation–maximisation: the exact posterior of the path, then the tuning curves that
# maximise the ELBO
#
# L = E_q(θ)[Σ E_q(f)[log p(y | f, θ)] + log p(θ)] + H[q(θ)] − Σ_n KL(q(u_n) ‖ p(u_n)),
#
# and again (see the [mathematics](../maths.md) page).
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
# `MGPLVM("T1", ...)` builds the model with the package defaults (the random-walk prior and the
# exact grid posterior); `mgplvm.fit` fits it. Each iteration is one pass over the data: the
# tuning curves given the posterior of the path (the M-step), then the exact posterior of the
# path given the tuning curves (the E-step); the fit stops when the ELBO gains less than 3e-6
# nats per datum and iteration. These are the same defaults as `mgplvm fit FILE --manifold T1`.

# %%
model = mgplvm.MGPLVM("T1", rec.n_neurons, n_bins, rec.n_trials, likelihood="poisson",
                      bin_size=rec.bin_size, seed=0)
result = mgplvm.fit(model, Y, n_iter=5 if SMOKE else None, progress=False)
print(f"{result.n_iter} iterations ({result.reason}) in {result.elapsed:.1f} s, "
      f"final ELBO {result.final_elbo:.1f}; random-walk step "
      f"{math.degrees(float(model.prior.step_sd.detach())):.1f} deg per bin")
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
# The 95% band is the shortest arc around the posterior mean that holds 95% of the exact
# posterior of that bin; it is frame-independent (the alignment is an isometry), so we move the
# posterior mean into the tracked frame and keep its half-width. How often does it hold the
# simulator's true head direction?

# %%
sim = datasets.load_h5(DATA)
true_latents = torch.as_tensor(sim.latents[:, :n_bins], dtype=post.mean.dtype)
truth_al = align(post.mean, true_latents, model.manifold)
coverage = float((truth_al.errors[..., 0] <= post.radius).double().mean())
print(f"95% band holds the true head direction in {100 * coverage:.0f}% of bins")

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

# %% [markdown]
# ## 5. Decode new data with the fitted tuning curves
# A fitted model reads out the latent of any other recording of the same cells — the classic use
# is the internal head direction during sleep, with tuning curves learned in wake.
# `model.decode(Y_new)` freezes the tuning curves, re-learns the random walk's step s.d. on the
# new data (sleep drifts differently) and returns the exact posterior of the new path. Here we
# fit the first half and decode the second.

# %%
half = n_bins // 2
first = mgplvm.MGPLVM("T1", rec.n_neurons, half, bin_size=rec.bin_size, seed=0)
mgplvm.fit(first, Y[..., :half], n_iter=5 if SMOKE else None, progress=False)
decoded, decoded_model = first.decode(Y[..., half:])
first_al = align(first.latent_posterior().mean, truth[:, :half], first.manifold)
# map the decoded path into the tracked frame with the *first half's* alignment
err = align(first_al.apply(decoded.mean), truth[:, half:], first.manifold)
print(f"second half decoded with first-half tuning curves: median error "
      f"{math.degrees(err.median_error):.1f} deg (after a residual rotation of "
      f"{math.degrees(err.transform['translation'][0]):.1f} deg)")

# %% [markdown]
# ## 6. Save and load the model
# `model.save` writes the configuration and parameters; `MGPLVM.load` rebuilds the same model.
# The command line `mgplvm fit data/head_direction.h5 --manifold T1` does all of the above and
# writes an HTML report; `mgplvm decode mgplvm_out/model.pt OTHER_FILE` decodes.

# %%
path = OUT / "hd_model.pt"
model.save(path)
loaded = mgplvm.MGPLVM.load(path)
same = torch.allclose(loaded.latent_posterior().mean, model.latent_posterior().mean)
print(f"saved to {path.name}; reloaded latents identical: {same}")
plt.close("all")
print(f"total time {time.perf_counter() - t_start:.0f} s")
