"""Tests for mgplvm.em: the EM fit of ring models with the exact grid posterior."""

import itertools
import math

import numpy as np
import pytest
import torch

import mgplvm
from mgplvm import datasets
from mgplvm.alignment import align
from mgplvm.em import _e_step, _GridData, fit_em
from mgplvm.grid import GridPosterior, circular_summary, forward_backward, transition_matrices
from mgplvm.model import MGPLVM

pytestmark = pytest.mark.usefixtures("float64_one_thread")


@pytest.fixture(scope="module")
def wake():
    """A short realistic recording (the default generator's statistics, fewer cells)."""
    return datasets.realistic_head_direction(n_neurons=20, minutes=2, seed=2)


def _randomised(likelihood, N=3, T=6, K=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = MGPLVM("T1", N, T, likelihood=likelihood, bin_size=0.1, seed=seed, n_inducing=6,
                   grid_points=K)
    if likelihood == "gaussian":
        Y = torch.randn(1, N, T, generator=g, dtype=torch.float64)
    else:
        Y = torch.poisson(torch.full((1, N, T), 1.5, dtype=torch.float64), generator=g)
    model.init_from_data(Y)
    q = model.gp.variational_strategy._variational_distribution
    with torch.no_grad():
        q.variational_mean.copy_(torch.randn(q.variational_mean.shape, generator=g))
        q.chol_variational_covar.mul_(0.5)
    return model, Y


@pytest.mark.parametrize("likelihood", ["poisson", "negbin", "gaussian"])
def test_statistics_reproduce_the_weighted_log_likelihood(likelihood):
    """The M-step's sufficient statistics give Σ_t γ_t(k) Σ_n E[log p(y_nt | f_n(θ_k))] exactly,
    for the count histogram and for the Gaussian's two pseudo-observations."""
    model, Y = _randomised(likelihood, N=4, T=30, K=12)
    data = _GridData(Y, model.likelihood)
    assert data.counts == (likelihood != "gaussian")
    g = torch.Generator().manual_seed(1)
    gamma = torch.rand(1, 30, 12, generator=g, dtype=torch.float64)
    gamma = gamma / gamma.sum(-1, keepdim=True)
    m, v = model.gp_marginals(model.latents.points)
    direct = sum(
        float((gamma[0, :, k] * model.likelihood.expected_log_prob_moments(
            Y[0], m[:, k:k + 1].expand(-1, 30), v[:, k:k + 1].expand(-1, 30))).sum())
        for k in range(12))
    via_stats = float(data.expected_log_lik(model.likelihood, m, v, data.statistics(gamma)))
    assert via_stats == pytest.approx(direct, rel=1e-10)
    # and the emission table is the same log-likelihood, bin by bin
    E = data.emission(model.likelihood, m, v)
    assert float((gamma * E).sum()) == pytest.approx(direct, rel=1e-10)


def test_poisson_emission_fast_path_equals_the_table(monkeypatch):
    model, Y = _randomised("poisson", N=5, T=40, K=16)
    m, v = model.gp_marginals(model.latents.points)
    fast = _GridData(Y, model.likelihood).emission(model.likelihood, m, v)
    monkeypatch.setattr("mgplvm.em._poisson_exp", lambda lik: False)
    table = _GridData(Y, model.likelihood).emission(model.likelihood, m, v)
    torch.testing.assert_close(fast, table, rtol=1e-12, atol=1e-10)


def test_e_step_elbo_is_the_enumerated_evidence_less_kl():
    """log p(Y) of the grid chain (every one of the Kᵀ paths summed) − KL(q(u) ‖ p(u))."""
    model, Y = _randomised("poisson", N=3, T=4, K=8)
    model.prior.fix_step_sd(0.6)
    data = _GridData(Y, model.likelihood)
    gamma, elbo = _e_step(model, data, model.latents.points)
    with torch.no_grad():
        m, v = model.gp_marginals(model.latents.points)
        E = data.emission(model.likelihood, m, v)[0].numpy()  # (T, K)
    from mgplvm.grid import transition_matrices

    A = transition_matrices(8, 0.6, None, 4)[0][0].numpy()
    total = -math.inf
    for path in itertools.product(range(8), repeat=4):
        lw = math.log(1 / 8) + E[0, path[0]] + sum(
            math.log(A[path[t - 1], path[t]]) + E[t, path[t]] for t in range(1, 4))
        total = np.logaddexp(total, lw)
    assert elbo == pytest.approx(total - float(model.kl_u()), rel=1e-12)
    np.testing.assert_allclose(gamma.sum(-1), 1.0)


def test_m_step_gradient_is_the_gradient_of_the_elbo():
    """Fisher's identity: at the E-step's marginals the M-step objective has the gradient of
    the exact ELBO (checked by central differences on a GP mean and the outputscale)."""
    model, Y = _randomised("poisson", N=3, T=12, K=10)
    data = _GridData(Y, model.likelihood)
    pts = model.latents.points
    gamma, _ = _e_step(model, data, pts)
    stats = data.statistics(torch.from_numpy(gamma))
    m, v = model.gp_marginals(pts)
    q = data.expected_log_lik(model.likelihood, m, v, stats) - model.kl_u()
    params = [model.gp.mean_module.raw_constant, model.gp.covar_module.raw_outputscale]
    grads = torch.autograd.grad(q, params)
    for p, grad in zip(params, grads, strict=True):
        for i in range(2):
            eps = 1e-5
            with torch.no_grad():
                p.view(-1)[i] += eps
            up = _e_step(model, data, pts)[1]
            with torch.no_grad():
                p.view(-1)[i] -= 2 * eps
            down = _e_step(model, data, pts)[1]
            with torch.no_grad():
                p.view(-1)[i] += eps
            assert float(grad.view(-1)[i]) == pytest.approx((up - down) / (2 * eps), rel=1e-5)


def test_em_without_warp_never_lowers_the_elbo(wake):
    model = MGPLVM("T1", wake.n_neurons, wake.n_time, bin_size=wake.bin_size, seed=0)
    res = fit_em(model, wake.Y, n_iter=12, warp=False, rtol=0, progress=False)
    assert res.n_iter == 12 and res.reason == "max_iter"
    assert np.all(np.diff(res.losses) <= 1e-9 * np.abs(res.losses[1:]))


def test_default_fit_recovers_the_realistic_ring(wake):
    """mgplvm.fit on the ring uses EM with the grid posterior: the path (median error against
    the true latents), its 95% band (coverage) and the tuning curves are recovered."""
    model = MGPLVM("T1", wake.n_neurons, wake.n_time, bin_size=wake.bin_size, seed=0)
    assert isinstance(model.latents, GridPosterior)
    res = mgplvm.fit(model, wake.Y, progress=False)
    assert res.config["method"] == "em" and res.reason == "converged"
    post = model.latent_posterior(level=0.95)
    al = align(post.mean, wake.latents, model.manifold)
    # the oracle: the same posterior with the true tuning curves and the true r.m.s. step
    K = 120
    theta = -np.pi + 2 * np.pi * np.arange(K) / K
    lam = wake.tuning(theta[:, None]) * wake.bin_size  # (neurons, K)
    log_e = wake.Y[0].T @ np.log(lam) - lam.sum(0)
    truth = wake.latents[0, :, 0]
    rms = float(np.sqrt(np.mean(np.angle(np.exp(1j * np.diff(truth))) ** 2)))
    gamma, _, _ = forward_backward(log_e[None], transition_matrices(K, rms, None, len(truth))[0],
                                   pairs=False)
    oracle = np.median(np.abs(np.angle(np.exp(1j * (circular_summary(
        torch.from_numpy(gamma))[0][0].numpy() - truth)))))
    assert al.median_error < 1.5 * oracle, (math.degrees(al.median_error), math.degrees(oracle))
    coverage = float((al.errors[..., 0] <= post.radius).double().mean())
    assert 0.85 <= coverage <= 0.99, coverage
    grid = torch.linspace(-math.pi, math.pi, 73, dtype=torch.float64)[:-1, None]
    rate, _ = model.tuning_curves(al.inverse(grid))
    truth = wake.tuning(grid.numpy())
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(rate.numpy(), truth, strict=True)]
    assert np.median(corr) > 0.9, np.median(corr)


def test_warp_step_undoes_a_warped_start_faster(wake):
    """From a start warped by θ + 0.6 sin θ, ten iterations with the reparameterisation (warp)
    step end much closer to the truth than ten without it."""
    truth = torch.from_numpy(wake.latents)
    warped = torch.remainder(truth + 0.6 * torch.sin(truth) + math.pi, 2 * math.pi) - math.pi
    errors = {}
    for warp in (False, True):
        model = MGPLVM("T1", wake.n_neurons, wake.n_time, bin_size=wake.bin_size, seed=0,
                       init=warped)
        fit_em(model, wake.Y, n_iter=10, warp=warp, rtol=0, progress=False)
        errors[warp] = align(model.latents.mu, wake.latents, model.manifold).median_error
    assert errors[True] < 0.7 * errors[False], errors


def test_decode_reads_out_a_simulated_sleep_path(wake):
    """Fit on wake; decode a new path of the same cells with no tracked angle (faster drift, as
    in REM sleep) under the frozen tuning curves; the wake alignment maps it onto the truth."""
    model = MGPLVM("T1", wake.n_neurons, wake.n_time, bin_size=wake.bin_size, seed=0)
    mgplvm.fit(model, wake.Y, progress=False)
    wake_al = align(model.latents.mu, wake.latents, model.manifold)
    rng = np.random.default_rng(5)
    steps = rng.standard_normal(1500) * math.radians(9)  # a random walk of 9° per bin
    sleep = np.angle(np.exp(1j * (rng.uniform(-np.pi, np.pi) + np.cumsum(steps))))
    rates = wake.tuning(sleep[:, None])  # (neurons, time), Hz
    Y = rng.poisson(rates * wake.bin_size)[None].astype(float)
    post, decoded = model.decode(Y)
    assert decoded.n_time == 1500 and decoded is not model
    assert math.degrees(float(decoded.prior.step_sd)) == pytest.approx(9, rel=0.35)
    err = align(wake_al.apply(post.mean), torch.from_numpy(sleep)[None, :, None],
                model.manifold)
    # the alignment is the wake one (no refit): only a small rotation is left to absorb
    assert math.degrees(err.median_error) < 10
    assert abs(err.transform["translation"][0]) < math.radians(10)
    assert err.transform["reflection"] == [1]
    with pytest.raises(ValueError, match="neurons"):
        model.decode(Y[:, :5])


def test_train_latents_is_one_exact_e_step(wake):
    model = MGPLVM("T1", wake.n_neurons, wake.n_time, bin_size=wake.bin_size, seed=0)
    mgplvm.fit(model, wake.Y, n_iter=3, progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items() if k != "latents.probs"}
    res = mgplvm.fit(model, wake.Y, train="latents", progress=False)
    assert res.n_iter == 1
    for k, v in model.state_dict().items():
        if k != "latents.probs":
            assert torch.equal(v, before[k]), k
    gamma, elbo = _e_step(model, _GridData(model.validate_data(wake.Y),
                                                 model.likelihood), model.latents.points)
    np.testing.assert_allclose(model.latents.probs.numpy(), gamma, atol=1e-12)
    assert -res.losses[0] == pytest.approx(elbo)


def test_checkpoint_resume_is_identical(wake, tmp_path):
    """A fit killed mid-way (here an exception from the callback) and resumed from its last
    checkpoint ends exactly as an uninterrupted one."""
    def fresh():
        return MGPLVM("T1", wake.n_neurons, wake.n_time, bin_size=wake.bin_size, seed=0)

    kw = {"n_iter": 6, "rtol": 0, "progress": False}
    whole = fresh()
    ref = fit_em(whole, wake.Y, **kw)
    ckpt = tmp_path / "em.ckpt"

    def killer(it, loss, model):
        if it == 3:  # after the checkpoint written at iteration 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_em(fresh(), wake.Y, checkpoint=ckpt, checkpoint_every=2, callback=killer, **kw)
    resumed = fresh()
    res = fit_em(resumed, wake.Y, resume=ckpt, **kw)
    np.testing.assert_array_equal(res.losses, ref.losses)
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="not an mgplvm EM checkpoint"):
        torch.save({"x": 1}, tmp_path / "junk.pt")
        fit_em(fresh(), wake.Y, resume=tmp_path / "junk.pt", progress=False)


def test_callback_stops_and_bad_arguments():
    model, Y = _randomised("poisson", N=3, T=20, K=12)
    seen = []
    res = fit_em(model, Y, n_iter=10, rtol=0, progress=False,
                 callback=lambda it, loss, m: seen.append(loss) or len(seen) == 2)
    assert res.reason == "callback" and res.n_iter == 2
    for bad in ({"n_iter": 0}, {"rtol": -1.0}, {"train": "some"}):
        with pytest.raises(ValueError):
            fit_em(model, Y, progress=False, **bad)
    relie = MGPLVM("T1", 3, 20, latent_posterior="relie")
    with pytest.raises(TypeError, match="grid posterior"):
        fit_em(relie, Y, progress=False)
    with pytest.raises(ValueError, match="ring"):
        MGPLVM("T2", 3, 20, latent_posterior="grid")
    with pytest.raises(ValueError, match="Brownian or uniform"):
        MGPLVM("T1", 3, 20, latent_posterior="grid", prior="ar1")
    assert isinstance(MGPLVM("T1", 3, 20, prior="ar1").latents, torch.nn.Module)  # auto: relie


def test_grid_model_save_load_round_trip(wake, tmp_path):
    model = MGPLVM("T1", wake.n_neurons, wake.n_time, bin_size=wake.bin_size, seed=0)
    mgplvm.fit(model, wake.Y, n_iter=3, progress=False)
    model.save(tmp_path / "m.pt")
    loaded = MGPLVM.load(tmp_path / "m.pt")
    assert loaded.config() == model.config() and isinstance(loaded.latents, GridPosterior)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    a, b = model.latent_posterior(0.9), loaded.latent_posterior(0.9)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.radius, b.radius)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic save left no temporary file
