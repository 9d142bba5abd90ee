"""Latent posteriors (ReLie) and priors: densities against closed forms, shapes, modules."""

import math

import pytest
import torch

from mgplvm.latents import (
    AR1Prior,
    BrownianPrior,
    GPPrior,
    ManifoldUniform,
    ReLieMarkovNormal,
    ReLieNormal,
    ReLiePosterior,
    UniformPrior,
    ar1_filter,
    get_prior,
    pca_init,
    viterbi_path,
)
from mgplvm.manifolds import Euclid, Torus

LOG_2PI = math.log(2 * math.pi)


pytestmark = pytest.mark.usefixtures("float64_one_thread")


def _random_tril(*batch, d, scale=0.1):
    A = scale * torch.randn(*batch, d, d)
    L = torch.tril(A, -1) + torch.diag_embed(scale * (0.5 + torch.rand(*batch, d)))
    return L


def _gauss_entropy(L):
    d = L.shape[-1]
    return 0.5 * d * (1 + LOG_2PI) + torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1)


# ------------------------------------------------------------------------------ ReLie posterior
@pytest.mark.parametrize("manifold", [Torus(1), Torus(2), Euclid(2)], ids=repr)
def test_relie_entropy_small_sigma_matches_gaussian(manifold):
    mu = manifold.random(2, 3)
    L = _random_tril(2, 3, d=manifold.dim, scale=0.2)
    q = ReLieNormal(manifold, mu, L, kmax=2)  # small Σ: far preimages are negligible
    n = 4000
    lp = q.log_prob(q.rsample((n,)))
    entropy_mc = -lp.mean(0)
    se = lp.std(0) / math.sqrt(n)
    closed = _gauss_entropy(L)
    assert torch.all((entropy_mc - closed).abs() < 5 * se + 1e-6)


def test_relie_log_prob_equals_gaussian_on_euclid():
    m = Euclid(2)
    mu = torch.randn(4, 2)
    L = _random_tril(4, d=2, scale=1.0)
    q = ReLieNormal(m, mu, L)
    g = q.sample((7,))
    ref = torch.distributions.MultivariateNormal(mu, scale_tril=L).log_prob(g)
    torch.testing.assert_close(q.log_prob(g), ref)


def test_relie_wrapped_density_on_ring_normalised_and_wrapped():
    m = Torus(1)
    mu = torch.tensor([[2.5]])
    L = torch.tensor([[[1.5]]])  # wide: wrapping matters
    q = ReLieNormal(m, mu, L)
    theta = torch.linspace(-math.pi, math.pi, 4001)[:-1].reshape(-1, 1, 1)
    dens = q.log_prob(theta).exp().squeeze()
    assert abs(float(dens.sum() * 2 * math.pi / 4000) - 1) < 1e-9
    # explicit wrapped normal
    x = (theta.squeeze() - 2.5)
    ref = sum(
        torch.exp(-0.5 * ((x + 2 * math.pi * k) / 1.5) ** 2) / (1.5 * math.sqrt(2 * math.pi))
        for k in range(-8, 9)
    )
    torch.testing.assert_close(dens, ref)


def test_relie_shapes_and_reparameterisation():
    m = Torus(2)
    post = ReLiePosterior(m, n_trials=2, n_time=5, cov="full", init_sd=0.3)
    q = post.distribution()
    assert q.batch_shape == (2, 5) and q.event_shape == (2,)
    g = q.rsample((3,))
    assert g.shape == (3, 2, 5, 2)
    assert q.log_prob(g).shape == (3, 2, 5)
    g.sum().backward()
    assert post.mu.grad is not None and post.raw_scale.grad is not None
    sub = post.distribution(torch.tensor([1, 3]))
    assert sub.batch_shape == (2, 2)
    torch.testing.assert_close(sub.mu, post.mu[:, [1, 3]])
    ex = q.expand((4, 2, 5))
    assert ex.batch_shape == (4, 2, 5)
    with pytest.raises(ValueError, match="trailing"):
        ReLieNormal(m, torch.zeros(3, 1), torch.eye(2).expand(3, 2, 2))


@pytest.mark.parametrize("cov", ["full", "diagonal"])
def test_relie_posterior_module(cov):
    m = Euclid(3)
    post = ReLiePosterior(m, 1, 4, cov=cov, init_sd=0.25)
    L = post.scale_tril
    assert L.shape == (1, 4, 3, 3)
    torch.testing.assert_close(post.covariance, 0.0625 * torch.eye(3).expand(1, 4, 3, 3))
    with torch.no_grad():
        post.raw_scale.add_(torch.randn_like(post.raw_scale))
    L = post.scale_tril
    assert torch.all(torch.triu(L, 1) == 0) and torch.all(torch.diagonal(L, dim1=-2, dim2=-1) > 0)
    if cov == "diagonal":
        assert torch.all(torch.tril(L, -1) == 0)
    post.set_sd(0.5)
    torch.testing.assert_close(post.covariance, 0.25 * torch.eye(3).expand(1, 4, 3, 3))
    post.set_mean(torch.ones(1, 4, 3))
    torch.testing.assert_close(post.mu.detach(), torch.ones(1, 4, 3))
    with pytest.raises(ValueError, match="cov"):
        ReLiePosterior(m, 1, 4, cov="banded")
    with pytest.raises(ValueError, match="initial latent means"):
        ReLiePosterior(m, 1, 4, mu=torch.zeros(1, 5, 3))


def test_ar1_filter_matches_recursion_and_is_stationary():
    rho = torch.tensor([0.0, 0.5, 0.95])
    eps = torch.randn(3, 700, 3)
    xi = ar1_filter(eps, rho, block=64)  # several blocks, carried across
    ref = torch.empty_like(eps)
    ref[:, 0] = eps[:, 0]
    for t in range(1, 700):
        ref[:, t] = rho * ref[:, t - 1] + torch.sqrt(1 - rho**2) * eps[:, t]
    torch.testing.assert_close(xi, ref)
    torch.testing.assert_close(ar1_filter(eps, rho), xi)  # block size does not matter
    big = ar1_filter(torch.randn(4000, 3, 3), rho)  # many short chains
    torch.testing.assert_close(big.var((0, 1)), torch.ones(3), atol=0.06, rtol=0)
    lag1 = (big[:, 1:] * big[:, :-1]).mean((0, 1))
    torch.testing.assert_close(lag1, rho, atol=0.05, rtol=0)


def test_relie_markov_log_prob_is_the_joint_gaussian_on_euclid():
    """On Rᵈ (no wrapping) the per-bin log-probabilities sum to the joint Gaussian density of
    the stacked path, covariance blockdiag(L) Φ Φᵀ blockdiag(L)ᵀ with Φ the AR(1) filter."""
    m, T, d = Euclid(2), 6, 2
    mu = torch.randn(1, T, d)
    L = _random_tril(1, T, d=d, scale=0.5)
    rho = torch.tensor([0.3, 0.8])
    q = ReLieMarkovNormal(m, mu, L, rho)
    g = q.rsample((5,))
    lp = q.log_prob(g)
    assert lp.shape == (5, 1, T)
    eye = torch.eye(T * d).reshape(T * d, T, d)
    Phi = ar1_filter(eye, rho).reshape(T * d, T * d).T  # column k: response to unit ε_k
    Lb = torch.block_diag(*L[0])
    cov = Lb @ Phi @ Phi.T @ Lb.T
    ref = torch.distributions.MultivariateNormal(mu.reshape(-1), cov).log_prob(g.reshape(5, -1))
    torch.testing.assert_close(lp.sum(-1)[:, 0], ref)
    # marginals are the mean-field ones: same per-bin covariance
    x = q.rsample((20000,)) - mu
    emp = torch.einsum("nti,ntj->tij", x[:, 0], x[:, 0]) / 20000
    torch.testing.assert_close(emp, L[0] @ L[0].mT, atol=0.03, rtol=0.1)


def test_relie_posterior_coupling_option():
    post = ReLiePosterior(Torus(1), 1, 8, coupling="ar1")
    assert isinstance(post.distribution(), ReLieMarkovNormal)
    torch.testing.assert_close(post.rho, torch.tensor([0.5]))
    assert post.config()["coupling"] == "ar1"
    q = post.distribution(torch.arange(2, 6))
    assert q.batch_shape == (1, 4)
    (-q.log_prob(q.rsample((3,))).sum()).backward()
    assert post.raw_rho.grad is not None and torch.isfinite(post.raw_rho.grad).all()
    assert ReLiePosterior(Torus(1), 1, 8).rho is None
    with pytest.raises(ValueError, match="coupling"):
        ReLiePosterior(Torus(1), 1, 8, coupling="gp")


def test_set_mean_projects_angles():
    post = ReLiePosterior(Torus(1), 1, 3)
    post.set_mean(torch.tensor([[[4.0], [-4.0], [0.5]]]))
    assert torch.all(post.mu.abs() <= math.pi)
    target = torch.tensor([[[4.0], [-4.0], [0.5]]])
    torch.testing.assert_close(torch.cos(post.mu.detach()), torch.cos(target))


# ------------------------------------------------------------------------------ priors
@pytest.mark.parametrize("d", [1, 2])
def test_uniform_prior_normalised(d):
    m = Torus(d)
    prior = UniformPrior(m)
    p = prior.distribution(2, None, 6)
    assert isinstance(p, ManifoldUniform) and p.batch_shape == (2, 6)
    g = p.sample((3,))
    assert g.shape == (3, 2, 6, d)
    lp = p.log_prob(g)
    assert lp.shape == (3, 2, 6)
    torch.testing.assert_close(lp, torch.full_like(lp, -d * LOG_2PI))
    # a normalised density: its integral over [-π, π)^d is 1
    assert math.isclose(math.exp(float(lp[0, 0, 0])) * (2 * math.pi) ** d, 1.0)
    with pytest.raises(ValueError, match="compact"):
        UniformPrior(Euclid(1))


def _brownian_cov(times, step_sd, init_sd=1.0):
    t = times - times[0]
    return init_sd**2 + step_sd**2 * torch.minimum(t[:, None], t[None, :])


def test_brownian_prior_on_euclid_equals_explicit_gaussian():
    m = Euclid(2)
    prior = BrownianPrior(m, step_sd=0.3)
    times = torch.tensor([0, 1, 2, 5, 6, 9])
    p = prior.distribution(2, times, 10)
    assert p.batch_shape == (2, 6)
    x = torch.randn(2, 6, 2)
    lp = p.log_prob(x)
    assert lp.shape == (2, 6)
    K = _brownian_cov(times.double(), 0.3)
    ref = torch.distributions.MultivariateNormal(torch.zeros(6), K).log_prob(x.transpose(-1, -2))
    torch.testing.assert_close(lp.sum(-1), ref.sum(-1))
    # broadcast over particles
    lp3 = p.expand((4, 2, 6)).log_prob(x.expand(4, 2, 6, 2))
    assert lp3.shape == (4, 2, 6)


def test_ar1_prior_on_euclid_equals_stationary_gaussian():
    m = Euclid(1)
    prior = AR1Prior(m, step_sd=0.4, ar_coef=0.8)
    times = torch.tensor([0, 1, 3, 4, 8])
    p = prior.distribution(1, times, 10)
    x = torch.randn(1, 5, 1)
    lp = p.log_prob(x).sum(-1)
    a, s = 0.8, 0.4
    t = times.double()
    K = s**2 / (1 - a**2) * a ** (t[:, None] - t[None, :]).abs()
    ref = torch.distributions.MultivariateNormal(torch.zeros(5), K).log_prob(x[..., 0])
    torch.testing.assert_close(lp, ref)
    assert 0 < float(prior.ar_coef.detach()) < 1


def test_brownian_prior_on_ring_is_uniform_start_plus_wrapped_increments():
    m = Torus(1)
    prior = BrownianPrior(m, step_sd=0.2)
    times = torch.tensor([0, 1, 3])
    g = torch.tensor([[[3.0], [-3.1], [-2.9]]])
    lp = prior.distribution(1, times, 5).log_prob(g)
    d1 = (-3.1 - 3.0) + 2 * math.pi  # shortest way round
    d2 = 0.2
    ref1 = -0.5 * (d1 / 0.2) ** 2 - math.log(0.2) - 0.5 * LOG_2PI
    ref2 = -0.5 * d2**2 / (0.2**2 * 2) - 0.5 * math.log(0.2**2 * 2) - 0.5 * LOG_2PI
    torch.testing.assert_close(lp[0], torch.tensor([-LOG_2PI, ref1, ref2]))
    # sampling: shape and on the manifold
    s = prior.distribution(2, None, 5).sample((3,))
    assert s.shape == (3, 2, 5, 1) and torch.all(s.abs() <= math.pi)


@pytest.mark.parametrize("kind", ["brownian-T2", "ar1-R2"])
def test_transition_log_prob_matches_the_sequence_density(kind):
    """Entry (i, j) equals the second term of log_prob of the two-bin path (prev_i, cur_j)."""
    if kind == "brownian-T2":
        prior = BrownianPrior(Torus(2), step_sd=0.3)
    else:
        prior = AR1Prior(Euclid(2), 0.4, ar_coef=0.8)
    m = prior.manifold
    prev, cur = m.random(4), m.random(5)
    for gap in (1, 3):
        mat = prior.distribution(1, None, 2).transition_log_prob(prev, cur, gap=gap)
        assert mat.shape == (4, 5)
        proc = prior.distribution(1, torch.tensor([0, gap]), 2)
        for i in range(4):
            for j in range(5):
                path = torch.stack([prev[i], cur[j]])[None]
                torch.testing.assert_close(mat[i, j], proc.log_prob(path)[0, 1])
    # several gaps at once: one matrix per gap, equal to the separate calls
    stack = prior.distribution(1, None, 2).transition_log_prob(prev, cur, torch.tensor([1, 3, 7]))
    assert stack.shape == (3, 4, 5)
    for k, gap in enumerate((1, 3, 7)):
        torch.testing.assert_close(
            stack[k], prior.distribution(1, None, 2).transition_log_prob(prev, cur, gap=gap)
        )


def test_viterbi_path_equals_brute_force():
    """Max-product DP returns the argmax over all K^T paths (tiny chain, two trials)."""
    import itertools

    gen = torch.Generator().manual_seed(3)
    K, T = 3, 5
    log_lik = torch.randn(2, K, T, generator=gen)
    log_trans = torch.log_softmax(torch.randn(K, K, generator=gen), -1)
    log_init = torch.log_softmax(torch.randn(K, generator=gen), -1)
    path = viterbi_path(log_lik, log_trans, log_init)
    for s in range(2):
        def score(p, s=s):
            return float(log_init[p[0]] + sum(log_lik[s, p[t], t] for t in range(T))
                         + sum(log_trans[p[t - 1], p[t]] for t in range(1, T)))
        best = max(itertools.product(range(K), repeat=T), key=score)
        assert tuple(path[s].tolist()) == best


def test_viterbi_path_with_a_matrix_per_step_equals_brute_force():
    """Bins at unequal gaps: step t uses ``log_trans[step_index[t]]``."""
    import itertools

    gen = torch.Generator().manual_seed(4)
    K, T, G = 3, 5, 2
    log_lik = torch.randn(2, K, T, generator=gen)
    log_trans = torch.log_softmax(torch.randn(G, K, K, generator=gen), -1)
    step_index = torch.tensor([1, 0, 0, 1])
    path = viterbi_path(log_lik, log_trans, step_index=step_index)
    for s in range(2):
        def score(p, s=s):
            return float(sum(log_lik[s, p[t], t] for t in range(T)) + sum(
                log_trans[step_index[t - 1], p[t - 1], p[t]] for t in range(1, T)))
        best = max(itertools.product(range(K), repeat=T), key=score)
        assert tuple(path[s].tolist()) == best
    # one matrix repeated is the single-matrix chain
    same = viterbi_path(log_lik, log_trans[:1].expand(3, K, K),
                        step_index=torch.tensor([2, 0, 1, 1]))
    torch.testing.assert_close(same, viterbi_path(log_lik, log_trans[0]))
    with pytest.raises(ValueError, match="step_index"):
        viterbi_path(log_lik, log_trans)
    with pytest.raises(ValueError, match="step_index"):
        viterbi_path(log_lik, log_trans, step_index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="step_index"):
        viterbi_path(log_lik, log_trans[0], step_index=step_index)


def test_gp_prior_equals_explicit_gaussian():
    m = Euclid(2)
    prior = GPPrior(m, timescale=3.0, jitter=1e-3)
    times = torch.tensor([0, 2, 3, 7])
    p = prior.distribution(1, times, 10)
    x = torch.randn(1, 4, 2)
    lp = p.log_prob(x)
    assert lp.shape == (1, 4)
    t = times.double()
    K = torch.exp(-0.5 * (t[:, None] - t[None, :]) ** 2 / 9.0) + 1e-3 * torch.eye(4)
    ref = torch.distributions.MultivariateNormal(torch.zeros(4), K).log_prob(x[0].T).sum()
    torch.testing.assert_close(lp.sum(), ref)
    assert p.sample((5,)).shape == (5, 1, 4, 2)
    with pytest.raises(ValueError, match="compact"):
        GPPrior(Torus(1))


def test_prior_registry_and_gradients():
    # one default everywhere: the random walk (the same in the API, crossvalidate and the CLI)
    assert isinstance(get_prior(None, Torus(1)), BrownianPrior)
    assert isinstance(get_prior(None, Euclid(1)), BrownianPrior)
    assert isinstance(get_prior("uniform", Torus(1)), UniformPrior)
    assert isinstance(get_prior("gp", Euclid(1)), GPPrior)
    with pytest.raises(ValueError, match="unknown latent prior"):
        get_prior("levy", Torus(1))
    prior = get_prior("brownian", Torus(1), step_sd=0.3)
    g = Torus(1).random(1, 6)
    prior.distribution(1, None, 6).log_prob(g).sum().backward()
    assert prior.raw_step_sd.grad is not None and prior.raw_step_sd.grad.abs() > 0
    frozen = get_prior("brownian", Torus(1), learn=False)
    assert not frozen.raw_step_sd.requires_grad


# ------------------------------------------------------------------------------ initialisation
def test_pca_init_recovers_ring_angle():
    from mgplvm.alignment import align
    from mgplvm.datasets import head_direction_ring

    data = head_direction_ring(n_neurons=40, n_time=300, seed=1)
    mu = pca_init(torch.from_numpy(data.Y), Torus(1))
    assert mu.shape == (1, 300, 1)
    assert align(mu, data.latents, Torus(1)).median_error < 0.6


def test_circle_unmixing_separates_rotated_torus_harmonics():
    """Scores (cos θ1, sin θ1, cos θ2, sin θ2) mixed by a random rotation, plus noise: the unmixed
    pairs give back θ1, θ2 up to a torus symmetry (shift, reflection, swap)."""
    from mgplvm.alignment import align
    from mgplvm.latents import circle_unmixing

    g = torch.Generator().manual_seed(3)
    theta = (2 * torch.rand(400, 2, generator=g, dtype=torch.float64) - 1) * math.pi
    clean = torch.stack([theta[:, 0].cos(), theta[:, 0].sin(),
                         theta[:, 1].cos(), theta[:, 1].sin()], -1)
    R, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    pcs = clean @ R + 0.1 * torch.randn(400, 4, generator=g, dtype=torch.float64)
    Q = circle_unmixing(pcs, 2)
    torch.testing.assert_close(Q.T @ Q, torch.eye(4, dtype=torch.float64))
    z = pcs @ Q
    est = torch.atan2(z[:, 1::2], z[:, 0::2])
    assert max(align(est[None], theta[None], Torus(2)).per_dim_median) < 0.1
    naive = torch.atan2(pcs[:, 1::2], pcs[:, 0::2])  # atan2 of the mixed pairs
    assert max(align(naive[None], theta[None], Torus(2)).per_dim_median) > 0.3
    # a strided subset of the rows gives (nearly) the same unmixing
    z_sub = pcs @ circle_unmixing(pcs, 2, max_samples=100)
    est_sub = torch.atan2(z_sub[:, 1::2], z_sub[:, 0::2])
    assert max(align(est_sub[None], theta[None], Torus(2)).per_dim_median) < 0.15
    with pytest.raises(ValueError, match="need 4 PC scores"):
        circle_unmixing(pcs[:, :3], 2)


def test_pca_init_untangles_the_angles_of_a_torus():
    from mgplvm.alignment import align
    from mgplvm.datasets import torus

    data = torus(d=2, n_neurons=100, n_time=500, seed=0, angular_velocity_sd=400.0)
    mu = pca_init(torch.from_numpy(data.Y), Torus(2))
    assert mu.shape == (1, 500, 2)
    assert max(align(mu, data.latents, Torus(2)).per_dim_median) < 0.3


def test_rotation_quadratic_init_inverts_a_linear_image_of_q_qT():
    """Data that are exactly an affine image of q qᵀ (no noise, no smoothing): the alternating fit
    gives the rotations back up to an SO(3) symmetry, to about the candidate spacing."""
    from mgplvm.alignment import align
    from mgplvm.latents import _outer_features, rotation_quadratic_init
    from mgplvm.manifolds import SO3

    g = torch.Generator().manual_seed(1)
    q = SO3().random(300, dtype=torch.float64, generator=g)
    Y = (_outer_features(q) @ torch.randn(10, 30, generator=g, dtype=torch.float64)).T[None]
    kw = dict(smooth=0, sqrt=False, restarts=4, n_candidates=5000, seed=1)
    est = rotation_quadratic_init(Y, **kw)
    assert est.shape == (1, 300, 4)
    torch.testing.assert_close(est.norm(dim=-1), torch.ones(1, 300, dtype=torch.float64))
    assert align(est, q[None], SO3()).median_error < 0.25
    torch.testing.assert_close(rotation_quadratic_init(Y, **kw), est)  # deterministic by seed


def test_rotation_quadratic_init_beats_pca_on_simulated_so3_cells():
    from mgplvm.alignment import align
    from mgplvm.datasets import so3
    from mgplvm.latents import rotation_quadratic_init
    from mgplvm.manifolds import SO3

    data = so3(n_neurons=150, n_time=300, seed=1)
    Y = torch.from_numpy(data.Y)
    quad = align(rotation_quadratic_init(Y, restarts=8, n_candidates=5000), data.latents, SO3())
    pca = align(pca_init(Y, SO3()), data.latents, SO3())
    assert quad.median_error < 1.0 < 1.3 < pca.median_error


def test_quadratic_latent_init_is_for_so3_only():
    import mgplvm

    model = mgplvm.MGPLVM("S3", 5, 20, seed=0)
    with pytest.raises(ValueError, match="'quadratic' is for SO\\(3\\) latents"):
        model.init_latents(torch.poisson(torch.full((1, 5, 20), 2.0)), "quadratic")


def test_pca_init_shapes_euclid():
    Y = torch.poisson(torch.full((2, 6, 30), 2.0))
    mu = pca_init(Y, Euclid(3))
    assert mu.shape == (2, 30, 3)
    torch.testing.assert_close(mu.reshape(-1, 3).std(0), torch.ones(3))


def test_fix_step_sd_sets_value_and_stops_learning():
    for prior in (BrownianPrior(Torus(2), step_sd=0.3), AR1Prior(Torus(2), step_sd=0.3)):
        assert prior.raw_step_sd.requires_grad and prior.config()["learn"]
        prior.fix_step_sd(0.07)
        assert torch.allclose(prior.step_sd, torch.full((2,), 0.07))
        assert not prior.raw_step_sd.requires_grad and prior.config()["learn"] is False
        for bad in (0.0, -0.1, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="positive and finite"):
                prior.fix_step_sd(bad)
        assert torch.allclose(prior.step_sd, torch.full((2,), 0.07))  # untouched by refusals
