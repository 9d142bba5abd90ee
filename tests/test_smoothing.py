"""Particle smoother: a Kalman / RTS oracle on R¹, SO(3) decoding with known tuning curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mgplvm import datasets
from mgplvm.datasets import _tuning_rates
from mgplvm.manifolds import SO3, Euclid
from mgplvm.smoothing import karcher_mean, particle_smoother


def _kalman(y: np.ndarray, step_sd: float, obs_sd: float, variances: bool = False):
    """Log evidence and RTS smoother means (and, with ``variances``, variances) for
    x_0 ~ N(0, 1), x_t = x_{t−1} + step ε, y_t = x_t + obs η."""
    T = len(y)
    m_f, v_f = np.empty(T), np.empty(T)
    m, v, log_ev = 0.0, 1.0, 0.0
    for t in range(T):
        if t:
            v = v + step_sd**2
        s = v + obs_sd**2
        log_ev += -0.5 * (math.log(2 * math.pi * s) + (y[t] - m) ** 2 / s)
        k = v / s
        m, v = m + k * (y[t] - m), (1 - k) * v
        m_f[t], v_f[t] = m, v
    m_s, v_s = m_f.copy(), v_f.copy()
    for t in range(T - 2, -1, -1):
        gain = v_f[t] / (v_f[t] + step_sd**2)
        m_s[t] = m_f[t] + gain * (m_s[t + 1] - m_f[t])
        v_s[t] = v_f[t] + gain**2 * (v_s[t + 1] - v_f[t] - step_sd**2)
    return (log_ev, m_s, v_s) if variances else (log_ev, m_s)


def test_matches_kalman_evidence_and_rts_means():
    rng = np.random.default_rng(0)
    T, step, obs = 30, 0.3, 0.5
    x = rng.normal() + np.cumsum(np.r_[0.0, step * rng.normal(size=T - 1)])
    y = x + obs * rng.normal(size=T)
    yt = torch.as_tensor(y)
    m = Euclid(1)

    def log_lik(g, t):  # (trials, P, 1) -> (trials, P)
        return -0.5 * (math.log(2 * math.pi * obs**2) + (g[..., 0] - yt[t]) ** 2 / obs**2)

    gen = torch.Generator().manual_seed(1)
    initial = torch.randn(1, 20_000, 1, dtype=torch.float64, generator=gen)
    out = particle_smoother(m, log_lik, initial, T, step, n_particles=1500, generator=gen)
    log_ev, m_s = _kalman(y, step, obs)
    assert out.log_evidence.shape == (1,) and out.mean.shape == (1, T, 1)
    assert abs(float(out.log_evidence[0]) - log_ev) < 0.3
    # the smoothing s.d. is about 0.25 here; the particle error is a few hundredths
    assert np.abs(out.mean[0, :, 0].numpy() - m_s).max() < 0.06
    # smoothing beats filtering against the RTS means
    assert np.abs(out.filter_mean[0, :, 0].numpy() - m_s).mean() > np.abs(
        out.mean[0, :, 0].numpy() - m_s
    ).mean()
    assert torch.all(out.ess > 1) and torch.all(out.ess[:, 1:] <= 1500 + 1e-6)  # bin 0: 20,000


def test_weighted_particles_are_the_smoothing_marginals():
    """The returned particles and log weights are a weighted sample of p(x_t | y_{1:T}): their
    weighted moments match the RTS means and variances (Kalman oracle on R¹)."""
    rng = np.random.default_rng(2)
    T, step, obs = 25, 0.3, 0.5
    x = rng.normal() + np.cumsum(np.r_[0.0, step * rng.normal(size=T - 1)])
    y = x + obs * rng.normal(size=T)
    yt = torch.as_tensor(y)

    def log_lik(g, t):
        return -0.5 * (math.log(2 * math.pi * obs**2) + (g[..., 0] - yt[t]) ** 2 / obs**2)

    gen = torch.Generator().manual_seed(3)
    initial = torch.randn(1, 20_000, 1, dtype=torch.float64, generator=gen)
    out = particle_smoother(Euclid(1), log_lik, initial, T, step, n_particles=2000,
                            generator=gen)
    assert out.particles.shape == (1, T, 2000, 1) and out.log_weights.shape == (1, T, 2000)
    w = out.log_weights[0].exp()
    torch.testing.assert_close(w.sum(-1), torch.ones(T, dtype=torch.float64))
    mean = (w * out.particles[0, ..., 0]).sum(-1)
    var = (w * (out.particles[0, ..., 0] - mean[:, None]) ** 2).sum(-1)
    _, m_s, v_s = _kalman(y, step, obs, variances=True)
    torch.testing.assert_close(mean, out.mean[0, :, 0])  # the Karcher mean on R¹
    assert np.abs(mean.numpy() - m_s).max() < 0.06
    # smoothing s.d. ~0.27: variances within 10 % on average, 40 % in the worst bin (the early
    # bins' backward weights are the most degenerate)
    rel = np.abs(var.numpy() / v_s - 1)
    assert rel.mean() < 0.1 and rel.max() < 0.4, rel


def _so3_problem(n_time=120):
    data = datasets.so3(n_neurons=150, n_time=n_time, seed=3)
    p, m = data.params, SO3()
    Y = torch.as_tensor(np.asarray(data.Y[0], dtype=np.float64))

    def all_bins(g):  # (P, 4) -> (time, P)
        rates = _tuning_rates(m, "von_mises", g, p["preferred"], p["widths"], p["peak_rates"],
                              p["baselines"])
        lam = torch.as_tensor(rates) * data.bin_size  # (neurons, P)
        return Y.T @ torch.log(lam) - lam.sum(0)

    def log_lik(g, t):
        return all_bins(g.reshape(-1, 4))[t].reshape(g.shape[:2])

    log_lik.all_bins = all_bins
    return data, m, log_lik


def test_so3_smoother_beats_per_bin_decoding_and_is_seeded():
    data, m, log_lik = _so3_problem()
    truth = torch.as_tensor(data.latents[0])

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        initial = m.random(1, 8000, dtype=torch.float64, generator=gen)
        return particle_smoother(m, log_lik, initial, data.n_time, 0.07, n_particles=500,
                                 generator=gen)

    out = run(0)
    smooth_err = float((2 * m.dist(out.mean[0], truth)).median())  # rotation angle
    cand = m.random(20_000, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    per_bin = cand[log_lik.all_bins(cand).argmax(1)]
    per_bin_err = float((2 * m.dist(per_bin, truth)).median())
    assert smooth_err < 0.35 < per_bin_err
    assert torch.equal(run(0).mean, out.mean)
    assert not torch.equal(run(1).mean, out.mean)


def test_evidence_prefers_a_plausible_step():
    """Far too small a step cannot follow the path: its evidence is much lower."""
    data, m, log_lik = _so3_problem(n_time=80)
    ev = {}
    for sd in (0.005, 0.07):
        gen = torch.Generator().manual_seed(0)
        initial = m.random(1, 8000, dtype=torch.float64, generator=gen)
        ev[sd] = float(particle_smoother(m, log_lik, initial, data.n_time, sd, n_particles=500,
                                         generator=gen).log_evidence[0])
    assert ev[0.07] > ev[0.005] + 50


def test_karcher_mean_of_symmetric_points():
    m = SO3()
    gen = torch.Generator().manual_seed(0)
    mu = m.random(3, dtype=torch.float64, generator=gen)
    v = 0.3 * torch.randn(3, 5, 3, dtype=torch.float64, generator=gen)
    pts = torch.cat([m.expmap_coords(mu[:, None], v), m.expmap_coords(mu[:, None], -v)], 1)
    est = karcher_mean(m, pts, torch.full((3, 10), -math.log(10), dtype=torch.float64))
    assert float(m.dist(est, mu).max()) < 1e-3


def test_rejects_bad_input():
    m = SO3()
    init = m.random(1, 10, dtype=torch.float64)

    def ll(g, t):
        return torch.zeros(g.shape[:2], dtype=g.dtype)

    with pytest.raises(ValueError, match="initial particles"):
        particle_smoother(m, ll, init[0], 5, 0.1)
    with pytest.raises(ValueError, match="step_sd"):
        particle_smoother(m, ll, init, 5, -0.1)
    with pytest.raises(ValueError, match="step_sd"):
        particle_smoother(m, ll, init, 5, [0.1, 0.2])
    with pytest.raises(ValueError, match="zero likelihood at bin 0"):
        particle_smoother(m, lambda g, t: torch.full(g.shape[:2], -math.inf), init, 5, 0.1,
                          n_particles=10)
    with pytest.raises(ValueError, match="returned shape"):
        particle_smoother(m, lambda g, t: torch.zeros(3), init, 5, 0.1, n_particles=10)


def _kalman_gaps(y: np.ndarray, step_sd: float, obs_sd: float, gaps: np.ndarray):
    """RTS smoother means for the random walk whose step from bin t−1 to t has variance
    ``gaps[t−1] · step_sd²`` (bins at unequal times), and the log evidence."""
    T = len(y)
    q = np.r_[0.0, gaps * step_sd**2]
    m_f, v_f = np.empty(T), np.empty(T)
    m, v, log_ev = 0.0, 1.0, 0.0
    for t in range(T):
        v = v + q[t]
        s = v + obs_sd**2
        log_ev += -0.5 * (math.log(2 * math.pi * s) + (y[t] - m) ** 2 / s)
        k = v / s
        m, v = m + k * (y[t] - m), (1 - k) * v
        m_f[t], v_f[t] = m, v
    m_s = m_f.copy()
    for t in range(T - 2, -1, -1):
        gain = v_f[t] / (v_f[t] + q[t + 1])
        m_s[t] = m_f[t] + gain * (m_s[t + 1] - m_f[t])
    return log_ev, m_s


def test_gaps_between_bins_match_the_kalman_oracle():
    """Bins at unequal times (a cross-validation half): a step over ``k`` bins has variance
    ``k σ²``; the smoother matches the RTS oracle of that walk, not of the consecutive one."""
    rng = np.random.default_rng(2)
    T, step, obs = 30, 0.15, 0.3
    gaps = rng.integers(1, 8, size=T - 1).astype(float)
    x = rng.normal() + np.cumsum(np.r_[0.0, step * np.sqrt(gaps) * rng.normal(size=T - 1)])
    y = x + obs * rng.normal(size=T)
    yt = torch.as_tensor(y)

    def log_lik(g, t):
        return -0.5 * (math.log(2 * math.pi * obs**2) + (g[..., 0] - yt[t]) ** 2 / obs**2)

    def run(g):
        gen = torch.Generator().manual_seed(1)
        initial = torch.randn(1, 20_000, 1, dtype=torch.float64, generator=gen)
        return particle_smoother(Euclid(1), log_lik, initial, T, step, n_particles=1500,
                                 generator=gen, gaps=g)

    out = run(torch.as_tensor(gaps))
    log_ev, m_s = _kalman_gaps(y, step, obs, gaps)
    log_ev1, _ = _kalman_gaps(y, step, obs, np.ones(T - 1))
    assert log_ev - log_ev1 > 3  # the consecutive walk explains these data worse
    assert abs(float(out.log_evidence[0]) - log_ev) < 0.3
    assert np.abs(out.mean[0, :, 0].numpy() - m_s).max() < 0.06
    # gaps of one are the default, draw for draw
    same, default = run(torch.ones(T - 1)), run(None)
    torch.testing.assert_close(same.mean, default.mean, rtol=0, atol=0)
    torch.testing.assert_close(same.log_evidence, default.log_evidence, rtol=0, atol=0)
    for bad in (torch.ones(T), torch.zeros(T - 1), torch.full((T - 1,), math.nan)):
        with pytest.raises(ValueError, match="gaps"):
            run(bad)
