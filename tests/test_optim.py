"""Tests for mgplvm.optim: FishLeg (Fisher-vector products, learned inverse Fisher, manifold steps),
natural-gradient q(u) updates and the optimiser factory."""

from __future__ import annotations

import math

import geoopt
import gpytorch
import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch

from mgplvm.manifolds import Torus
from mgplvm.optim import (
    FishLeg,
    KronBlock,
    NGDSchedule,
    fisher_vector_product,
    make_optimizer,
    pyro_sample_nll,
    resampled_data_nll,
    split_parameters,
)

DT = torch.float64


@pytest.fixture(autouse=True)
def _single_thread_seeded():
    """Seeded, one thread: on tiny problems intra-op threads only add contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ Fisher-vector products
def test_fvp_hessian_matches_explicit_fisher_poisson_glm():
    """Poisson GLM, log link: F = Xᵀ diag(exp(Xθ)) X; the sampled-NLL Hessian is exact."""
    g = _gen(0)
    X = torch.randn(30, 4, generator=g, dtype=DT)
    theta = torch.nn.Parameter(0.3 * torch.randn(4, generator=g, dtype=DT))

    def snll():
        rate = torch.exp(X @ theta)
        y = torch.poisson(rate.detach(), generator=g)
        return -torch.distributions.Poisson(rate).log_prob(y).sum()

    F = X.T @ torch.diag(torch.exp(X @ theta.detach())) @ X
    vs = [[torch.randn(4, generator=g, dtype=DT)] for _ in range(3)]
    fvs = fisher_vector_product(snll, [theta], vs, mode="hessian")
    for v, fv in zip(vs, fvs, strict=True):
        torch.testing.assert_close(fv[0], F @ v[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["hessian", "outer"])
def test_fvp_monte_carlo_matches_fisher_nonlinear(mode):
    """y ~ N(tanh(Xθ), σ²): F = JᵀJ/σ²; both FVP estimators are unbiased (MC average)."""
    g = _gen(1)
    X = torch.randn(20, 3, generator=g, dtype=DT)
    sigma = 0.7
    theta = torch.nn.Parameter(0.5 * torch.randn(3, generator=g, dtype=DT))

    def snll():
        mu = torch.tanh(X @ theta)
        y = (mu + sigma * torch.randn(mu.shape, generator=g, dtype=DT)).detach()
        return 0.5 * ((y - mu) ** 2).sum() / sigma**2

    J = (1 - torch.tanh(X @ theta.detach()) ** 2)[:, None] * X
    F = J.T @ J / sigma**2
    v = torch.tensor([1.0, -0.5, 2.0], dtype=DT)
    n = 2000
    est = sum(fisher_vector_product(snll, [theta], [[v]], mode)[0][0] for _ in range(n)) / n
    assert torch.linalg.norm(est - F @ v) / torch.linalg.norm(F @ v) < 0.1


def test_pyro_sample_nll_gives_fisher_of_pyro_model():
    """A linear-Gaussian Pyro model: FVP through pyro_sample_nll equals XᵀX/σ² v."""
    g = _gen(2)
    X = torch.randn(25, 3, generator=g, dtype=DT)
    sigma = 0.5
    theta = torch.nn.Parameter(torch.zeros(3, dtype=DT))
    Y = torch.randn(25, generator=g, dtype=DT)

    def model(y):
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", pdist.Normal(X @ theta, sigma), obs=y)

    def guide(y):
        pass

    fn = pyro_sample_nll(model, guide, Y)
    v = torch.randn(3, generator=g, dtype=DT)
    fv = fisher_vector_product(fn, [theta], [[v]])[0][0]
    torch.testing.assert_close(fv, X.T @ X @ v / sigma**2)


def test_resampled_data_nll_closed_form_poisson_expectation():
    """Closed-form Poisson ELBO term ℓ(Y) = Σ Δe^{μ+σ²/2} − Y μ with μ = Xθ: the Hessian of
    ℓ(Y_s), Y_s ~ Poisson(Δe^{μ+σ²/2}), is Xᵀ diag(Δe^{μ+σ²/2}) X for every draw."""
    g = _gen(8)
    X = torch.randn(40, 3, generator=g, dtype=DT)
    theta = torch.nn.Parameter(0.2 * torch.randn(3, generator=g, dtype=DT))
    s2, delta = 0.3, 0.5

    def loss(Y):
        mu = X @ theta
        return (delta * torch.exp(mu + s2 / 2) - Y * mu).sum()

    def sample_data():
        return torch.poisson(delta * torch.exp(X @ theta + s2 / 2), generator=g)

    fn = resampled_data_nll(loss, sample_data)
    v = torch.randn(3, generator=g, dtype=DT)
    F = X.T @ torch.diag(delta * torch.exp(X @ theta.detach() + s2 / 2)) @ X
    torch.testing.assert_close(fisher_vector_product(fn, [theta], [[v]])[0][0], F @ v)


# ------------------------------------------------------------------ learned inverse Fisher
def _linear_gaussian(seed: int, n: int, p: int, sigma: float):
    g = _gen(seed)
    X = torch.randn(n, p, generator=g, dtype=DT) * torch.linspace(0.3, 2.0, p, dtype=DT)

    def make_snll(theta):
        def snll():
            mu = X @ theta
            y = (mu + sigma * torch.randn(mu.shape, generator=g, dtype=DT)).detach()
            return 0.5 * ((y - mu) ** 2).sum() / sigma**2

        return snll

    return X, make_snll


def test_fishleg_q_converges_to_damped_inverse_fisher_full_block():
    X, make_snll = _linear_gaussian(3, 50, 6, 0.5)
    gamma = 1.0
    theta = torch.nn.Parameter(torch.zeros(6, dtype=DT))
    opt = FishLeg([theta], damping=gamma, init_scale=1e-2, aux_lr=1e-2, structure="full")
    target = torch.linalg.inv(X.T @ X / 0.25 + gamma * torch.eye(6, dtype=DT))
    err0 = torch.linalg.norm(opt.dense_q() - target) / torch.linalg.norm(target)
    opt.update_aux(make_snll(theta), steps=600)
    err = torch.linalg.norm(opt.dense_q() - target) / torch.linalg.norm(target)
    assert err0 > 0.5 and err < 0.05
    # the auxiliary loss went down
    assert opt.aux_history[-1] < 0


def test_fishleg_kron_block_recovers_exact_kronecker_structure():
    """W (a, b), y_{nj} ~ N((XW)_{nj}, σ_j²): F = XᵀX ⊗ diag(σ⁻²) (row-major vec), so
    (F + γI)⁻¹ = (U_A ⊗ U_B) diag(1/(λ_a μ_b + γ)) (U_A ⊗ U_B)ᵀ is in the K diag Kᵀ family."""
    g = _gen(4)
    a, b, n = 4, 3, 40
    X = torch.randn(n, a, generator=g, dtype=DT)
    sig = torch.tensor([0.5, 1.0, 2.0], dtype=DT)
    W = torch.nn.Parameter(torch.zeros(a, b, dtype=DT))

    def snll():
        mu = X @ W
        y = (mu + sig * torch.randn(mu.shape, generator=g, dtype=DT)).detach()
        return 0.5 * (((y - mu) / sig) ** 2).sum()

    gamma = 0.5
    opt = FishLeg([W], damping=gamma, init_scale=0.1, aux_lr=1e-2, warm_start=3)
    assert isinstance(opt.aux[0], KronBlock) and len(opt.aux[0].factors) == 2
    F = torch.kron(X.T @ X, torch.diag(sig**-2))
    target = torch.linalg.inv(F + gamma * torch.eye(a * b, dtype=DT))
    opt.update_aux(snll, steps=1500)
    err = torch.linalg.norm(opt.dense_q() - target) / torch.linalg.norm(target)
    assert err < 0.05


def test_batched_kron_block_learns_per_neuron_inverse_fishers():
    """W (N, a) with neuron-specific designs X_n: F = blockdiag_n(X_nᵀX_n/σ²); batch_dims=1 gives
    one dense a × a block per neuron, which contains (F + γI)⁻¹ exactly."""
    g = _gen(7)
    N, a, n, sigma, gamma = 3, 4, 30, 0.5, 0.5
    X = (
        torch.randn(N, n, a, generator=g, dtype=DT)
        * torch.tensor([0.5, 1.0, 2.0], dtype=DT)[:, None, None]
    )
    W = torch.nn.Parameter(torch.zeros(N, a, dtype=DT))

    def snll():
        mu = (X @ W[..., None])[..., 0]
        y = (mu + sigma * torch.randn(mu.shape, generator=g, dtype=DT)).detach()
        return 0.5 * ((y - mu) ** 2).sum() / sigma**2

    opt = FishLeg([{"params": [W], "batch_dims": 1}], damping=gamma, aux_lr=1e-2, warm_start=3)
    blk = opt.aux[0]
    assert [f.shape for f in blk.factors] == [(N, a, a)]
    F = torch.block_diag(*[x.T @ x / sigma**2 for x in X])
    target = torch.linalg.inv(F + gamma * torch.eye(N * a, dtype=DT))
    opt.update_aux(snll, steps=1500)
    err = torch.linalg.norm(opt.dense_q() - target) / torch.linalg.norm(target)
    assert err < 0.05


def test_auto_blocks_for_gp_shaped_parameters():
    params = [
        torch.zeros(5, 8, dtype=DT),  # variational mean (N, M)
        torch.zeros(5, 8, 8, dtype=DT),  # Cholesky (N, M, M)
        torch.zeros(300, 2, dtype=DT),  # latent means (T, d)
        torch.zeros(1, dtype=DT),  # lengthscale
        torch.zeros((), dtype=DT),  # output scale
        torch.zeros(200, dtype=DT),  # long vector
    ]
    opt = FishLeg([torch.nn.Parameter(p) for p in params])
    kinds = [type(b).__name__ for b in opt.aux]
    assert kinds == ["KronBlock", "KronBlock", "KronBlock", "DiagLowRankBlock", "FullBlock"]
    assert [len(b.factors) for b in opt.aux[:3]] == [2, 3, 1]  # T = 300 > kron_max: diagonal
    assert opt.aux[4].L.shape == (2, 2)  # the two scalars share one dense block


# ------------------------------------------------------------------ optimisation behaviour
def _ill_conditioned_regression(seed: int = 1, n: int = 100, p: int = 10):
    g = _gen(seed)
    U, _ = torch.linalg.qr(torch.randn(n, p, generator=g, dtype=DT))
    V, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=DT))
    X = U @ torch.diag(torch.logspace(0, 1.5, p, dtype=DT)) @ V.T  # cond(XᵀX) = 1000
    y = X @ torch.randn(p, generator=g, dtype=DT) + torch.randn(n, generator=g, dtype=DT)
    best = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]

    def loss(th):
        return 0.5 * ((X @ th - y) ** 2).sum()

    def snll_for(th):
        def snll():
            mu = X @ th
            ys = (mu + torch.randn(mu.shape, generator=g, dtype=DT)).detach()
            return 0.5 * ((ys - mu) ** 2).sum()

        return snll

    return loss, snll_for, float(loss(best))


def _run(loss, th, opt, iters):
    for _ in range(iters):
        opt.zero_grad()
        loss(th).backward()
        opt.step()
    return float(loss(th).detach())


def test_fishleg_beats_tuned_sgd_on_ill_conditioned_regression():
    loss, snll_for, best = _ill_conditioned_regression()
    iters, p = 60, 10
    sgd = []
    for lr in (3e-4, 1e-3, 2e-3, 3.5e-3):  # 3.8e-3 is the stability limit with momentum 0.9
        th = torch.nn.Parameter(torch.zeros(p, dtype=DT))
        sgd.append(_run(loss, th, torch.optim.SGD([th], lr=lr, momentum=0.9), iters) - best)
    th = torch.nn.Parameter(torch.zeros(p, dtype=DT))
    opt = FishLeg(
        [th],
        lr=1.0,
        beta=0.5,
        aux_lr=0.03,
        aux_every=1,
        aux_steps=3,
        warm_start=5,
        sample_nll_fn=snll_for(th),
    )
    fish = _run(loss, th, opt, iters) - best
    assert fish < 1e-3 * min(sgd), (fish, sgd)


def test_fishleg_without_sample_fn_warns_and_is_momentum_sgd():
    loss, _, _ = _ill_conditioned_regression()
    th1 = torch.nn.Parameter(torch.zeros(10, dtype=DT))
    th2 = torch.nn.Parameter(torch.zeros(10, dtype=DT))
    opt1 = FishLeg([th1], lr=0.1, beta=0.5, init_scale=1e-3)
    # heavy ball with m = βm + (1-β)g, θ -= η·η₀·m  ⇔  SGD(lr=η η₀ (1-β), momentum=β)
    opt2 = torch.optim.SGD([th2], lr=0.1 * 1e-3 * 0.5, momentum=0.5, dampening=0.0)
    with pytest.warns(UserWarning, match="sample_nll_fn"):
        _run(loss, th1, opt1, 5)
    _run(loss, th2, opt2, 5)
    torch.testing.assert_close(th1.detach(), th2.detach())


def test_manifold_parameters_stay_on_manifold_and_converge():
    """Sphere points x ∈ S² observed as y ~ N(x, σ²) and torus angles θ observed as
    y ~ N((cos θ, sin θ), σ²): FishLeg steps in the tangent space and retracts."""
    g = _gen(5)
    sphere = geoopt.Sphere()
    x = geoopt.ManifoldParameter(sphere.random(6, 3, dtype=DT), manifold=sphere)
    torus = Torus(2)
    th = geoopt.ManifoldParameter(torus.random(7, 2, dtype=DT, generator=g), manifold=torus)
    x_star = sphere.random(6, 3, dtype=DT)
    th_star = torus.random(7, 2, dtype=DT, generator=g)
    emb = lambda t: torch.stack([torch.cos(t), torch.sin(t)], -1)  # noqa: E731
    sigma = 0.3

    def loss():
        return (
            0.5 * ((x - x_star) ** 2).sum() / sigma**2
            + 0.5 * ((emb(th) - emb(th_star)) ** 2).sum() / sigma**2
        )

    def snll():
        ys = (x + sigma * torch.randn(x.shape, generator=g, dtype=DT)).detach()
        yt = emb(th)
        yt_s = (yt + sigma * torch.randn(yt.shape, generator=g, dtype=DT)).detach()
        return 0.5 * (((ys - x) ** 2).sum() + ((yt_s - yt) ** 2).sum()) / sigma**2

    opt = FishLeg([x, th], lr=0.5, beta=0.5, aux_every=1, warm_start=3, sample_nll_fn=snll)
    # auxiliary updates must not leak into the parameters' gradients (regression test)
    loss().backward()
    grads = [x.grad.clone(), th.grad.clone()]
    opt.update_aux(steps=2)
    assert torch.equal(x.grad, grads[0]) and torch.equal(th.grad, grads[1])
    l0 = float(loss().detach())
    for _ in range(100):
        opt.zero_grad()
        loss().backward()
        opt.step()
        assert torch.allclose(x.detach().norm(dim=-1), torch.ones(6, dtype=DT), atol=1e-10)
        assert bool(((th >= -math.pi) & (th < math.pi)).all())
    assert float(loss().detach()) < 1e-10 * l0
    # chordal distance (geoopt's Sphere.dist floors at ~4e-4 through its arccos clamp)
    assert (x.detach() - x_star).norm(dim=-1).max() < 1e-6
    assert (torus.logmap(th.detach(), th_star)).abs().max() < 1e-6


def test_fishleg_state_dict_round_trip():
    loss, snll_for, _ = _ill_conditioned_regression()
    th = torch.nn.Parameter(torch.zeros(10, dtype=DT))
    opt = FishLeg([th], aux_every=1, sample_nll_fn=snll_for(th))
    _run(loss, th, opt, 3)
    sd = opt.state_dict()
    th2 = torch.nn.Parameter(th.detach().clone())
    opt2 = FishLeg([th2], aux_every=1, sample_nll_fn=snll_for(th2))
    opt2.load_state_dict(sd)
    torch.testing.assert_close(opt2.dense_q(), opt.dense_q())
    assert opt2._n_steps == 3 and torch.equal(
        opt2.state[th2]["momentum"], opt.state[th]["momentum"]
    )


# ------------------------------------------------------------------ natural gradient on q(u)
class _SVGP(gpytorch.models.ApproximateGP):
    def __init__(self, Z, dist_cls, batch=()):
        M = Z.shape[-2]
        vd = dist_cls(M, batch_shape=torch.Size(batch))
        vs = gpytorch.variational.VariationalStrategy(self, Z, vd, learn_inducing_locations=True)
        super().__init__(vs)
        self.mean = gpytorch.means.ZeroMean()
        self.cov = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean(x), self.cov(x))


def _regression_data(n=40, M=8):
    g = _gen(6)
    x = torch.rand(n, 1, generator=g, dtype=DT) * 6
    y = torch.sin(x[:, 0]) + 0.2 * torch.randn(n, generator=g, dtype=DT)
    Z = torch.linspace(0, 6, M, dtype=DT)[:, None]
    return x, y, Z


def _titsias_bound(model, lik, x, y, Z, jitter):
    """Collapsed bound log N(y | 0, Q_nn + σ²I) − tr(K_nn − Q_nn)/(2σ²) = max over q(u) of ELBO."""
    n, M = y.shape[0], Z.shape[0]
    with torch.no_grad():
        Kmm = model.cov(Z).to_dense() + jitter * torch.eye(M, dtype=DT)
        A = torch.linalg.solve_triangular(
            torch.linalg.cholesky(Kmm), model.cov(Z, x).to_dense(), upper=False
        )
        Qnn = A.T @ A
        s2 = float(lik.noise)
        mvn = torch.distributions.MultivariateNormal(
            torch.zeros(n, dtype=DT), Qnn + s2 * torch.eye(n, dtype=DT)
        )
        return float(mvn.log_prob(y) - 0.5 / s2 * (model.cov(x, diag=True) - Qnn.diagonal()).sum())


def test_ngd_one_step_of_size_one_is_optimal_for_gaussian_likelihood():
    x, y, Z = _regression_data()
    n = y.shape[0]
    model = _SVGP(Z, gpytorch.variational.NaturalVariationalDistribution).to(DT)
    lik = gpytorch.likelihoods.GaussianLikelihood().to(DT)
    lik.noise = 0.04
    for p in [*model.cov.parameters(), model.variational_strategy.inducing_points]:
        p.requires_grad_(False)  # hyperparameters and inducing points fixed
    mll = gpytorch.mlls.VariationalELBO(lik, model, num_data=n)
    opt = make_optimizer("ngd", model, ngd_lr=1.0, ngd_ramp=0)  # total loss: num_data = 1
    assert set(opt.parts) == {"ngd"}
    jit = 1e-10
    with (
        gpytorch.settings.cholesky_jitter(jit, jit),
        gpytorch.settings.variational_cholesky_jitter(jit, jit),
    ):
        opt.zero_grad()
        loss0 = -mll(model(x), y) * n  # the total negative ELBO
        loss0.backward()
        opt.step()
        elbo1 = float(mll(model(x), y) * n)
    bound = _titsias_bound(model, lik, x, y, Z, jit)
    assert -float(loss0) < bound - 100  # started far away
    assert abs(elbo1 - bound) < 1e-5 * abs(bound) + 1e-6


def test_ngd_schedule_ramps_geometrically_and_caps():
    s = NGDSchedule(lr=0.1, lr_init=0.01, ramp_steps=10)
    assert s(0) == pytest.approx(0.01) and s(5) == pytest.approx(math.sqrt(0.01 * 0.1))
    assert s(10) == s(1000) == 0.1
    assert NGDSchedule(lr=1.0, ramp_steps=0)(0) == 1.0


def test_ngd_rejects_non_natural_distribution():
    _, _, Z = _regression_data()
    model = _SVGP(Z, gpytorch.variational.CholeskyVariationalDistribution).to(DT)
    with pytest.raises(TypeError, match="NaturalVariationalDistribution"):
        make_optimizer("ngd", model)


@pytest.mark.parametrize("name", ["adam", "ngd", "fishleg", "ngd+fishleg"])
def test_make_optimizer_all_names_decrease_negative_elbo(name):
    """Batched (2 'neurons') SVGP with torus inducing points as a geoopt ManifoldParameter."""
    x, y, Z = _regression_data()
    x = torch.remainder(x, 2 * math.pi) - math.pi
    n = y.shape[0]
    Y = torch.stack([y, -y])
    V = gpytorch.variational
    dist_cls = (
        V.NaturalVariationalDistribution if "ngd" in name else V.CholeskyVariationalDistribution
    )
    model = _SVGP(Z.expand(2, -1, -1).clone(), dist_cls, batch=(2,)).to(DT)
    torus = Torus(1)
    vs = model.variational_strategy
    vs.inducing_points = geoopt.ManifoldParameter(
        torus.projx(vs.inducing_points.detach()), manifold=torus
    )
    lik = gpytorch.likelihoods.GaussianLikelihood().to(DT)
    mll = gpytorch.mlls.VariationalELBO(lik, model, num_data=n)
    module = torch.nn.ModuleList([model, lik])
    dists, manifold, euclid = split_parameters(module)
    assert len(dists) == 1 and manifold == [vs.inducing_points] and len(euclid) == 3

    def loss():
        return -mll(model(x), Y).sum() * n

    def snll():  # model-sampled targets from the predictive, plus the KL term
        f = model(x)
        dist = lik(f)
        ys = dist.sample().detach()
        return (
            -lik.expected_log_prob(ys, f).sum() + model.variational_strategy.kl_divergence().sum()
        )

    opt = (
        make_optimizer(name, module, sample_nll_fn=snll, warm_start=2)
        if "fishleg" in name
        else make_optimizer(name, module)
    )
    l0 = float(loss())
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss()) < l0
    assert bool((vs.inducing_points.abs() <= math.pi).all())
    assert opt.needs_sample_nll == ("fishleg" in name)


def test_make_optimizer_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lbfgs", [torch.nn.Parameter(torch.zeros(2))])


# ------------------------------------------------------------------ through mgplvm.fit
def _tiny_ring():
    from mgplvm import datasets

    return datasets.head_direction_ring(n_neurons=12, n_time=60, seed=3)


def _tiny_mgplvm(data, natural: bool):
    from mgplvm.model import MGPLVM

    return MGPLVM(
        "T1", data.n_neurons, data.n_time, bin_size=data.bin_size, seed=0, n_inducing=8,
        variational_distribution="natural" if natural else "cholesky",
        latent_posterior="relie", prior="uniform",  # the stochastic fit's optimisers
    )


def _full_elbo(model, Y) -> float:
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return float(model.elbo(Y, n_mc=16))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["adam", "ngd", "fishleg", "ngd+fishleg"])
def test_fit_with_each_optimizer_improves_elbo_and_keeps_points_on_manifold(name):
    """End to end through mgplvm.fit (FishLeg gets its sampled NLL from fit's protocol)."""
    from mgplvm.fitting import fit

    data = _tiny_ring()
    model = _tiny_mgplvm(data, natural=name.startswith("ngd"))
    Y = model.validate_data(data.Y)
    model.init_from_data(Y)
    e0 = _full_elbo(model, Y)
    res = fit(model, Y, optimizer=name, n_iter=20, n_mc=2, burnin=5, seed=0, progress=False,
              early_stopping=False)
    assert res.reason == "max_iter" and res.n_iter == 20
    assert np.isfinite(res.losses).all()
    assert res.losses[-5:].mean() < res.losses[:5].mean()
    e1 = _full_elbo(model, Y)
    assert e1 > e0 + 0.05 * abs(e0), (e0, e1)
    man = [p for p in model.parameters() if isinstance(p, geoopt.ManifoldParameter)]
    assert len(man) == 2  # latent means and inducing points
    for p in man:
        assert torch.isfinite(p).all()
        assert p.manifold.check_point_on_manifold(p.detach(), atol=1e-6, rtol=1e-6)
        p.manifold.validate(p.detach())
    assert "gp_marginals" not in vars(model)  # the sampled-NLL patch was undone


def test_fit_ngd_with_cholesky_model_says_what_to_pass():
    from mgplvm.fitting import fit

    data = _tiny_ring()
    model = _tiny_mgplvm(data, natural=False)
    with pytest.raises(TypeError, match="variational_distribution='natural'"):
        fit(model, data.Y, optimizer="ngd", n_iter=2, progress=False)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mgplvm_sample_nll_gives_exact_hessian_vector_products():
    """fit's pyro_sample_nll(model.model, model.guide, ...) dispatches to mgplvm_sample_nll,
    whose GP marginals are twice differentiable: HVPs match finite differences of gradients
    (the model's fused marginals have a first-order-only backward), and its values match."""
    from mgplvm.optim.sampling import _autograd_marginals, differentiable_gp_marginals

    data = _tiny_ring()
    model = _tiny_mgplvm(data, natural=False)
    Y = model.validate_data(data.Y)
    model.init_from_data(Y)
    gen = _gen(1)
    with torch.no_grad():
        q = model.gp.variational_strategy._variational_distribution
        q.variational_mean.add_(0.3 * torch.randn(q.variational_mean.shape, generator=gen,
                                                  dtype=DT))
        q.chol_variational_covar.mul_(0.7)
    x = model.latents.mu.detach()[0]
    for a, b in zip(model.gp_marginals(x), differentiable_gp_marginals(model, x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)

    params = [p for p in model.parameters() if p.requires_grad]
    v = [torch.randn(p.shape, generator=gen, dtype=DT) for p in params]

    def loss():  # a deterministic negative ELBO-like function of all GP parameters and latents
        model.gp.variational_strategy._clear_cache()
        mean, var = model.f_moments(model.latents.mu)
        return -model.likelihood.expected_log_prob_moments(Y, mean, var).sum() + model.kl_u()

    with _autograd_marginals(model):
        g = torch.autograd.grad(loss(), params, create_graph=True, allow_unused=True)
        idx = [i for i, gi in enumerate(g) if gi is not None]
        hv = torch.autograd.grad([g[i] for i in idx], params, [v[i] for i in idx],
                                 allow_unused=True)

    def grads(step):
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.add_(step * vi)
        out = torch.autograd.grad(loss(), params, allow_unused=True)
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.sub_(step * vi)
        return out

    eps = 1e-5
    for h, gp_, gm_ in zip(hv, grads(eps), grads(-eps), strict=True):
        if gp_ is None:
            continue
        fd = (gp_ - gm_) / (2 * eps)
        assert float((h - fd).norm()) <= 1e-5 * float(fd.norm()) + 1e-8

    fn = pyro_sample_nll(model.model, model.guide, Y, None, 1.0)
    assert fn.__qualname__.startswith("mgplvm_sample_nll")
    fv = fisher_vector_product(fn, params, [v])[0]
    assert all(torch.isfinite(t).all() for t in fv)
