"""Tests for mgplvm.grid: the ring's grid posterior, its transitions and forward–backward."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from mgplvm.grid import (
    GridMarginals,
    GridPosterior,
    circular_summary,
    forward_backward,
    grid_points,
    transition_matrices,
    wrapped_normal_cells,
)
from mgplvm.manifolds import Torus


def _cells_by_scipy(K, sd):
    """P(step in cell k) of a wrapped normal: normal CDF differences summed over many wraps."""
    h = 2 * math.pi / K
    out = np.zeros(K)
    for k in range(K):
        c = (k * h + math.pi) % (2 * math.pi) - math.pi
        for j in range(-20, 21):
            out[k] += norm.cdf(c + h / 2 + 2 * math.pi * j, scale=sd) - norm.cdf(
                c - h / 2 + 2 * math.pi * j, scale=sd)
    return out


@pytest.mark.parametrize("sd", [0.01, 0.1, 1.0, 5.0])
def test_wrapped_normal_cells_match_scipy(sd):
    p = wrapped_normal_cells(24, torch.tensor(sd, dtype=torch.float64))
    np.testing.assert_allclose(p.numpy(), _cells_by_scipy(24, sd), atol=1e-12)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)


def test_wrapped_normal_cells_gradient():
    sd = torch.tensor([0.07, 0.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: wrapped_normal_cells(16, s), (sd,))


def test_transition_matrices_by_gap():
    trans, step = transition_matrices(16, torch.tensor(0.2), None, 5)
    assert trans.shape == (1, 16, 16) and step is None
    np.testing.assert_allclose(trans.sum(-1).numpy(), 1.0)
    # circulant: every row is the first row shifted
    np.testing.assert_allclose(trans[0, 3].numpy(), np.roll(trans[0, 0].numpy(), 3))
    gaps = torch.tensor([1.0, 4.0, 1.0, 4.0])
    trans, step = transition_matrices(16, 0.2, gaps, 5)
    assert trans.shape == (2, 16, 16) and step.tolist() == [0, 1, 0, 1]
    # a gap of 4 bins is a step of s.d. 0.2·√4
    np.testing.assert_allclose(trans[1, 0].numpy(),
                               wrapped_normal_cells(16, torch.tensor(0.4, dtype=torch.float64))
                               .numpy(), atol=1e-15)
    uniform, _ = transition_matrices(16, None, gaps, 5)
    np.testing.assert_allclose(uniform.numpy(), 1 / 16)


def _brute_force(log_e, trans, step):
    """Every path of a tiny chain: marginals, log evidence and pair counts by enumeration."""
    B, T, K = log_e.shape
    gamma = np.zeros((B, T, K))
    log_ev = np.zeros(B)
    pairs = np.zeros(trans.shape)
    for b in range(B):
        weights = {}
        for path in itertools.product(range(K), repeat=T):
            lw = math.log(1 / K) + log_e[b, 0, path[0]]
            for t in range(1, T):
                g = 0 if step is None else step[t - 1]
                lw += math.log(trans[g, path[t - 1], path[t]]) + log_e[b, t, path[t]]
            weights[path] = lw
        top = max(weights.values())
        Z = sum(math.exp(w - top) for w in weights.values())
        log_ev[b] = top + math.log(Z)
        for path, lw in weights.items():
            w = math.exp(lw - log_ev[b])
            for t in range(T):
                gamma[b, t, path[t]] += w
            for t in range(1, T):
                g = 0 if step is None else step[t - 1]
                pairs[g, path[t - 1], path[t]] += w
    return gamma, log_ev, pairs


@pytest.mark.parametrize("with_gaps", [False, True])
def test_forward_backward_equals_enumeration(with_gaps):
    rng = np.random.default_rng(0)
    B, T, K = 2, 5, 4
    log_e = rng.normal(size=(B, T, K)) * 3
    if with_gaps:
        trans = rng.dirichlet(np.ones(K), size=(2, K))
        step = np.array([0, 1, 1, 0])
    else:
        trans, step = rng.dirichlet(np.ones(K), size=(1, K)), None
    gamma, log_ev, pairs = forward_backward(log_e, trans, step)
    g_ref, ev_ref, p_ref = _brute_force(log_e, trans, step)
    np.testing.assert_allclose(gamma, g_ref, atol=1e-12)
    np.testing.assert_allclose(log_ev, ev_ref, atol=1e-10)
    np.testing.assert_allclose(pairs, p_ref, atol=1e-12)


def test_forward_backward_survives_extreme_emissions_and_rejects_impossible_bins():
    log_e = np.zeros((1, 6, 8))
    log_e[0, 3] = -1e4  # every state very unlikely at bin 3: no underflow
    log_e[0, 3, 2] = -9e3
    trans, _ = transition_matrices(8, torch.tensor(0.5), None, 6)
    gamma, log_ev, _ = forward_backward(log_e, trans.numpy())
    assert np.isfinite(gamma).all() and np.isfinite(log_ev).all()
    assert gamma[0, 3, 2] == pytest.approx(1.0)
    log_e[0, 2] = -np.inf
    with pytest.raises(ValueError, match="impossible"):
        forward_backward(log_e, trans.numpy())


def test_circular_summary_of_a_wrapped_normal():
    K = 360
    theta = grid_points(K)
    for centre, sd in ((0.5, 0.2), (3.0, 0.1), (-3.1, 0.3)):  # also across ±π
        d = torch.remainder(theta - centre + math.pi, 2 * math.pi) - math.pi
        p = torch.exp(-0.5 * (d / sd) ** 2)
        p = (p / p.sum())[None]
        mean, s, radius = circular_summary(p, 0.95)
        assert float(mean) == pytest.approx(centre, abs=1e-6)
        assert float(s) == pytest.approx(sd, rel=0.02)
        assert float(radius) == pytest.approx(1.96 * sd, rel=0.02)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.5, 0.99))
def test_credible_radius_holds_the_level(seed, level):
    """Property: the arc mean ± radius holds at least ``level`` of the mass (cells spread
    evenly over their width) and a slightly shorter arc holds less."""
    g = torch.Generator().manual_seed(seed)
    K = 48
    p = torch.rand(3, K, generator=g, dtype=torch.float64) ** 4
    p = p / p.sum(-1, keepdim=True)
    mean, _, r = circular_summary(p, level)
    h = 2 * math.pi / K
    d = (torch.remainder(grid_points(K) - mean[:, None] + math.pi, 2 * math.pi) - math.pi).abs()

    lower, upper = (d - h / 2).clamp_min(0), (d + h / 2).clamp_max(math.pi)

    def mass(radius):
        return (p * ((radius[:, None] - lower) / (upper - lower)).clamp(0, 1)).sum(-1)

    assert bool((mass(r) >= level - 1e-9).all())
    assert bool((mass((r - 1e-6).clamp_min(0)) < level + 1e-9).all())


def test_grid_marginals_sample_and_density():
    probs = torch.tensor([[[0.7, 0.1, 0.1, 0.1, 0, 0, 0, 0]]], dtype=torch.float64)
    q = GridMarginals(probs)
    torch.manual_seed(0)
    x = q.sample((20_000,))
    assert x.shape == (20_000, 1, 1, 1)
    h = 2 * math.pi / 8
    cell = torch.floor((x[..., 0] + math.pi) / h + 0.5).long() % 8
    freq = torch.bincount(cell.flatten(), minlength=8).double() / x.numel()
    np.testing.assert_allclose(freq.numpy(), probs[0, 0].numpy(), atol=0.01)
    # a density on the circle: it integrates to one
    fine = torch.linspace(-math.pi, math.pi, 80_001, dtype=torch.float64)[:-1, None, None, None]
    dens = q.log_prob(fine).exp()
    assert float(dens.mean() * 2 * math.pi) == pytest.approx(1.0, abs=1e-3)


def test_grid_posterior_interface():
    post = GridPosterior(Torus(1), 2, 5, n_points=36, init_sd=0.2)
    mu = torch.tensor([0.3, -2.0, 3.0, 1.0, 0.0]).double().reshape(1, 5, 1).expand(2, 5, 1)
    post.set_mean(mu)
    assert post.mu.shape == (2, 5, 1)
    np.testing.assert_allclose(post.mu.numpy(), mu.numpy(), atol=1e-6)
    assert post.covariance.shape == (2, 5, 1, 1)
    assert float(post.covariance.sqrt().mean()) == pytest.approx(0.2, rel=0.1)
    post.set_sd(0.4)
    np.testing.assert_allclose(post.mu.numpy(), mu.numpy(), atol=1e-6)
    assert list(post.parameters()) == []  # nothing for a gradient optimiser to move
    assert post.distribution(torch.tensor([1, 3])).batch_shape == (2, 2)
    with pytest.raises(ValueError, match="shape"):
        post.set_probs(np.ones((2, 4, 36)))
    with pytest.raises(ValueError, match="ring"):
        GridPosterior(Torus(2), 1, 5)
    with pytest.raises(ValueError, match="8 points"):
        GridPosterior(Torus(1), 1, 5, n_points=4)
