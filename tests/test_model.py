"""MGPLVM: the fused SVGP path against GPyTorch, ELBO checks against direct computations, outputs,
validation, save/load, neuron subsets and new latents."""

import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch

import mgplvm.manifolds as manifolds
from mgplvm.likelihoods import PoissonLikelihood
from mgplvm.manifolds import Euclid, Torus
from mgplvm.model import MGPLVM, _SVGPMarginals, manifold_from_name

LOG_2PI = math.log(2 * math.pi)


pytestmark = pytest.mark.usefixtures("float64_one_thread")


def _randomise_q_u(model, seed=0, scale=0.5):
    """Random (non-initial) q(u), kernel and mean so that every term matters."""
    g = torch.Generator().manual_seed(seed)
    gp = model.gp
    qd = gp.variational_strategy._variational_distribution
    with torch.no_grad():
        qd.variational_mean.copy_(torch.randn(qd.variational_mean.shape, generator=g))
        A = scale * torch.randn(qd.chol_variational_covar.shape, generator=g)
        L = torch.tril(A, -1) + torch.diag_embed(0.3 + torch.rand(A.shape[:-1], generator=g))
        qd.chol_variational_covar.copy_(L)
        gp.covar_module.raw_outputscale.copy_(torch.randn(model.n_neurons, generator=g))
        base = gp.covar_module.base_kernel
        base.raw_lengthscale.copy_(0.3 * torch.randn(base.raw_lengthscale.shape, generator=g))
        if hasattr(gp.mean_module, "raw_constant"):
            gp.mean_module.raw_constant.copy_(torch.randn(model.n_neurons, generator=g))


def _manifolds():
    out = [Torus(1), Torus(2), Euclid(2)]
    if hasattr(manifolds, "Product"):
        out.append(manifolds.Product(Torus(1), Euclid(1)))
    if hasattr(manifolds, "Sphere"):
        out.append(manifolds.Sphere(2))
    return out


# ------------------------------------------------------------------------------ fused SVGP
@pytest.mark.parametrize("kernel", ["rbf", "matern32", "matern12"])
@pytest.mark.parametrize("manifold", _manifolds(), ids=repr)
def test_fused_marginals_equal_gpytorch(manifold, kernel):
    model = MGPLVM(manifold, 4, 7, n_inducing=9, kernel=kernel, likelihood="gaussian", seed=1)
    _randomise_q_u(model)
    x = manifold.random(23, dtype=torch.float64).requires_grad_(True)

    def run(mode, **attrs):
        model.gp_mode = mode
        for k, v in attrs.items():
            setattr(model, k, v)
        model.zero_grad()
        x.grad = None
        mean, var = model.gp_marginals(x)
        w = torch.linspace(-1, 1, mean.numel()).reshape(mean.shape)
        (mean * w + var * w.flip(0)).sum().backward()
        # ambient gradients agree up to components normal to the manifold (GPyTorch
        # differentiates k(x, x) through D(x, x), which is constant on the manifold): compare
        # Riemannian gradients
        grads = {
            n: (manifold.proju(p.detach(), p.grad) if n.endswith("inducing_points") else p.grad)
            for n, p in model.named_parameters()
            if p.grad is not None
        }
        return mean.detach(), var.detach(), manifold.proju(x.detach(), x.grad), grads

    ref = run("gpytorch")
    out = [
        run("fused"),
        # chunks of 5 inputs; recompute everything in backward / keep K[B|α] only
        run("fused", chunk_elements=4 * 9 * 5, min_chunk=1, memory_budget=0),
        run("fused", chunk_elements=4 * 9 * 5, min_chunk=1, memory_budget=4 * 10 * 23 * 8),
        run("whitened"),
    ]
    if manifold == Torus(1) and kernel == "rbf":
        out.append(run("circle"))  # the Fourier-series path (auto's choice there)
    assert ref[0].shape == (4, 23)
    for o in out:
        torch.testing.assert_close(o[0], ref[0], rtol=1e-9, atol=1e-9)
        # (GPyTorch's k(x, x) sees D(x, x) ~ 1e-16 round-off on spheres: √ of it for Matérn-1/2)
        torch.testing.assert_close(o[1], ref[1], rtol=1e-8, atol=1e-7)
        torch.testing.assert_close(o[2], ref[2], rtol=1e-7, atol=1e-8)
        assert o[3].keys() == ref[3].keys()
        for name in ref[3]:
            torch.testing.assert_close(o[3][name], ref[3][name], rtol=1e-7, atol=1e-8, msg=name)


@pytest.mark.parametrize("profile,nu", [("rbf", None), ("matern", 0.5), ("matern", 1.5),
                                        ("matern", 2.5)])
@pytest.mark.parametrize("n_factors", [1, 2])
@pytest.mark.parametrize("save", ["all", "kb", "none"])
def test_svgp_marginals_gradcheck(profile, nu, n_factors, save):
    g = torch.Generator().manual_seed(3)
    N, P, M = 2, 5, 3
    D = (0.1 + 2 * torch.rand(n_factors, P, M, generator=g)).requires_grad_(True)
    c = (0.5 + torch.rand(N, n_factors, generator=g)).requires_grad_(True)
    s2 = (0.5 + torch.rand(N, generator=g)).requires_grad_(True)
    alpha = torch.randn(N, M, generator=g).requires_grad_(True)
    B = torch.randn(N, M, M, generator=g)
    B = (B + B.mT).requires_grad_(True)

    def fn(D, c, s2, alpha, B):
        return _SVGPMarginals.apply(D, c, s2, alpha, 0.5 * (B + B.mT), profile, nu, 2, save)

    assert torch.autograd.gradcheck(fn, (D, c, s2, alpha, B))


@pytest.mark.parametrize("frozen", [(1, 2, 3, 4), (3, 4), (1,), (0,)])
def test_svgp_marginals_frozen_inputs(frozen):
    """With some inputs frozen (a latent-only fit freezes everything but D) the backward pass
    skips their gradients and the others are unchanged."""
    g = torch.Generator().manual_seed(5)
    N, P, M = 3, 7, 4
    inputs = [0.1 + 2 * torch.rand(2, P, M, generator=g), 0.5 + torch.rand(N, 2, generator=g),
              0.5 + torch.rand(N, generator=g), torch.randn(N, M, generator=g),
              torch.randn(N, M, M, generator=g)]
    inputs[4] = inputs[4] + inputs[4].mT
    w = torch.randn(2, N, P, generator=g)

    def grads(need):
        xs = [x.clone().requires_grad_(i in need) for i, x in enumerate(inputs)]
        mean, quad = _SVGPMarginals.apply(*xs, "rbf", None, 3, "kb")
        return torch.autograd.grad((w[0] * mean + w[1] * quad).sum(), [xs[i] for i in need])

    need = [i for i in range(5) if i not in frozen]
    full = grads(range(5))
    for i, got in zip(need, grads(need), strict=True):
        torch.testing.assert_close(got, full[i], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lengthscale", [3.0, 0.3, 0.13, 0.04])
def test_circle_marginals_short_lengthscales(lengthscale):
    """The T¹ Fourier path against GPyTorch from long to short lengthscales (more terms): no
    further from it than the dense fused path (at long lengthscales K_uu is ill-conditioned and
    every path loses ~1e-8 of the variance to cancellation); a kernel needing more than
    ``_CIRCLE_MAX_K`` terms goes to the dense fused path under "auto" and is refused under
    "circle"."""
    from mgplvm.model import _CIRCLE_MAX_K, _circle_coefficients, _circle_truncation

    model = MGPLVM("T1", 3, 5, n_inducing=40, likelihood="gaussian", seed=2)
    _randomise_q_u(model)
    base = model.gp.covar_module.base_kernel
    with torch.no_grad():
        base.lengthscale = torch.full_like(base.lengthscale, lengthscale)
    c = base.lengthscale.squeeze(-2).pow(-2)[:, 0]
    K = _circle_truncation(_circle_coefficients(c))
    x = torch.linspace(-math.pi, math.pi, 301, dtype=torch.float64)[:, None]
    outs = {}
    for mode in ("gpytorch", "fused", "auto"):
        model.gp_mode = mode
        with torch.no_grad():
            outs[mode] = model.gp_marginals(x)
    ref = outs["gpytorch"]
    for o, r, f in zip(outs["auto"], ref, outs["fused"], strict=True):
        err, err_fused = float((o - r).abs().max()), float((f - r).abs().max())
        assert err <= 2 * err_fused + 1e-10 and err < 1e-7, (err, err_fused)
    model.gp_mode = "circle"
    if K <= _CIRCLE_MAX_K:
        with torch.no_grad():
            forced = model.gp_marginals(x)
        for o, r in zip(forced, outs["auto"], strict=True):
            torch.testing.assert_close(o, r, rtol=0, atol=0)
    else:
        assert lengthscale < 0.1
        with pytest.raises(ValueError, match="Fourier terms"):
            model.gp_marginals(x)


def test_circle_coefficients_are_bessel():
    """κ_k = e^{−c} I_k(c), the von Mises Fourier coefficients (scipy's ive as the oracle)."""
    from scipy.special import ive

    from mgplvm.model import _circle_coefficients

    c = torch.tensor([0.5, 4.0, 60.0], dtype=torch.float64)
    kappa = _circle_coefficients(c)[:, :80].numpy()
    ref = ive(np.arange(80)[None, :], c.numpy()[:, None])
    np.testing.assert_allclose(kappa, ref, rtol=0, atol=5e-16)


def test_gp_mode_auto_and_float32():
    model = MGPLVM("T1", 3, 5, n_inducing=6, seed=0)
    assert model._gp_mode() == "circle"
    assert MGPLVM("T2", 3, 5, n_inducing=6, seed=0)._gp_mode() == "fused"
    assert MGPLVM("T1", 3, 5, n_inducing=6, kernel="matern32", seed=0)._gp_mode() == "fused"
    m32 = MGPLVM("T1", 3, 5, n_inducing=6, seed=0, dtype=torch.float32)
    assert m32._gp_mode() == "whitened" and m32.dtype == torch.float32
    _randomise_q_u(model)
    m32.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in model.state_dict().items()})
    x = torch.linspace(-3, 3, 11)[:, None]
    mean, var = m32.gp_marginals(x.float())
    assert mean.dtype == torch.float32
    m32.gp_mode = "gpytorch"
    g_mean, g_var = m32.gp_marginals(x.float())
    torch.testing.assert_close(mean, g_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var, g_var, rtol=1e-5, atol=1e-5)
    # float32 (and its larger Cholesky jitter) against float64
    ref_mean, ref_var = model.gp_marginals(x)
    torch.testing.assert_close(mean.double(), ref_mean.detach(), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(var.double(), ref_var.detach(), rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------ ELBO checks
def _tiny_gaussian_model(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = MGPLVM("T1", 3, 5, n_inducing=6, likelihood="gaussian", latent_sd=0.3, seed=seed,
                   latent_posterior="relie", prior="uniform")
    _randomise_q_u(model, seed)
    with torch.no_grad():
        model.likelihood.noise = 0.2 + torch.rand(3, generator=g)
        model.latents.mu.copy_(Torus(1).random(1, 5, generator=g))
        raw = model.latents.raw_scale
        raw.copy_(raw + 0.3 * torch.randn(raw.shape, generator=g))
    Y = torch.randn(1, 3, 5, generator=g)
    return model, Y


def _direct_elbo_samples(model, Y, n, seed):
    """Per-sample ELBO of a Torus(1) Gaussian model written out with dense algebra."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mu = model.latents.mu.detach()[0, :, 0]  # (T,)
        sd = model.latents.scale_tril.detach()[0, :, 0, 0]  # (T,)
        x = sd * torch.randn(n, len(mu), generator=g)
        theta = mu + x
        Z = model.gp.inducing_points.detach()[:, 0]
        s2 = model.gp.covar_module.outputscale.detach()  # (N,)
        ell2 = model.gp.covar_module.base_kernel.lengthscale.detach().reshape(-1) ** 2
        c = model.gp.mean_module.constant.detach().reshape(-1)
        qd = model.gp.variational_strategy.variational_distribution
        m, S = qd.mean.detach(), qd.covariance_matrix.detach()
        jit = model.gp.variational_strategy.jitter_val
        sig2 = model.likelihood.noise.detach()
        M = len(Z)

        def k(a, b):  # (N, len a, len b)
            d = 2 - 2 * torch.cos(a[:, None] - b[None, :])
            return s2[:, None, None] * torch.exp(-d / (2 * ell2[:, None, None]))

        Kuu = k(Z, Z) + jit * torch.eye(M)
        Lu = torch.linalg.cholesky(Kuu)
        Kfu = k(theta.reshape(-1), Z)  # (N, n*T, M)
        A = torch.linalg.solve_triangular(Lu, Kfu.mT, upper=False).mT  # Kfu Lu^-T
        mean = c[:, None] + (A @ m[..., None])[..., 0]
        var = s2[:, None] + jit + ((A @ S) * A).sum(-1) - (A * A).sum(-1)
        mean = mean.reshape(-1, n, len(mu))
        var = var.reshape(-1, n, len(mu))
        y = Y[0][:, None, :]
        ell = -0.5 * (LOG_2PI + sig2.log()[:, None, None]) - 0.5 * (
            (y - mean) ** 2 + var
        ) / sig2[:, None, None]
        ell = ell.sum((0, 2))  # (n,)
        kl = 0.5 * (torch.diagonal(S, dim1=-2, dim2=-1).sum(-1) + (m * m).sum(-1) - M
                    - torch.logdet(S)).sum()
        ks = torch.arange(-6, 7) * 2 * math.pi
        log_q = torch.logsumexp(
            -0.5 * ((x[..., None] + ks) / sd[:, None]) ** 2 - sd[:, None].log() - 0.5 * LOG_2PI,
            -1,
        ).sum(-1)
        log_p = -len(mu) * LOG_2PI
        return ell + log_p - log_q - kl


def test_elbo_equals_direct_computation_within_mc_error():
    model, Y = _tiny_gaussian_model()
    direct = _direct_elbo_samples(model, Y, 20000, seed=5)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        est = float(model.elbo(Y, n_mc=20000))
    se = float(direct.std() / math.sqrt(len(direct)))
    assert abs(est - float(direct.mean())) < 5 * math.sqrt(2) * se, (est, float(direct.mean()), se)


def test_importance_weighted_bound_above_elbo():
    model, Y = _tiny_gaussian_model(seed=2)
    with torch.no_grad():
        elbo = float(model.elbo(Y, n_mc=5000))
    iw = model.log_marginal_likelihood_bound(Y, n_samples=256, batch=64)
    assert iw >= elbo
    # K = 1: the log-weights minus KL(q(u)) are unbiased single-sample estimates of the ELBO
    with torch.no_grad():
        w = model._log_weights(model.validate_data(Y), 4000, 1000, latent_terms=True)
        w = w - model.kl_u()
    assert abs(float(w.mean()) - elbo) < 5 * float(w.std()) / math.sqrt(4000) * math.sqrt(2)
    assert model.log_marginal_likelihood_bound(Y, n_samples=1) < iw


def test_gaussian_model_with_fixed_latents_reaches_exact_marginal_likelihood():
    """R1 latents held fixed (tiny Σ), inducing points at the data, optimal q(u): the ELBO's data
    part equals the exact GP log marginal likelihood."""
    T, N = 8, 2
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-2, 2, T)
    model = MGPLVM("R1", N, T, n_inducing=T, likelihood="gaussian", latent_sd=1e-7, seed=0)
    _randomise_q_u(model)
    with torch.no_grad():
        model.latents.set_mean(x.reshape(1, T, 1))
        model.gp.variational_strategy.inducing_points.copy_(x[:, None])
        model.likelihood.noise = torch.tensor([0.1, 0.5])
    Y = torch.randn(1, N, T, generator=g)
    gp = model.gp
    with torch.no_grad():
        s2 = gp.covar_module.outputscale
        c = gp.mean_module.constant.reshape(-1)
        Kxx = gp.covar_module(x[:, None]).to_dense()  # (N, T, T)
        sig2 = model.likelihood.noise
        exact = sum(
            torch.distributions.MultivariateNormal(
                c[n].expand(T), Kxx[n] + sig2[n] * torch.eye(T)
            ).log_prob(Y[0, n])
            for n in range(N)
        )
        # optimal whitened q(v): y = c + A v + ε, A = K_xu L⁻ᵀ
        jit = gp.variational_strategy.jitter_val
        Lu = torch.linalg.cholesky(Kxx + jit * torch.eye(T))
        A = torch.linalg.solve_triangular(Lu, Kxx, upper=False).mT
        prec = torch.eye(T) + A.mT @ A / sig2[:, None, None]
        S = torch.linalg.inv(prec)
        m = (S @ A.mT @ (Y[0] - c[:, None])[..., None])[..., 0] / sig2[:, None]
        qd = gp.variational_strategy._variational_distribution
        qd.variational_mean.copy_(m)
        qd.chol_variational_covar.copy_(torch.linalg.cholesky(S))
    # the ELBO at fixed latents: the model's "y" and "kl_u" terms with g conditioned on μ
    conditioned = poutine.condition(model.model, data={"g": model.latents.mu.detach()})
    trace = poutine.trace(conditioned).get_trace(Y)
    data_part = trace.log_prob_sum(lambda name, site: name in ("y", "kl_u"))
    value = float(data_part.detach())
    assert value <= float(exact) + 1e-9
    assert abs(value - float(exact)) < 1e-5 * abs(float(exact)), (value, exact)
    # an optimum in q(u): the gradient w.r.t. the variational parameters vanishes
    data_part.backward()
    assert qd.variational_mean.grad.abs().max() < 1e-4
    assert qd.chol_variational_covar.grad.abs().max() < 1e-4
    assert s2.shape == (N,)


# ------------------------------------------------------------------------------ outputs
def _fitted_like_model(likelihood="poisson", **kw):
    g = torch.Generator().manual_seed(0)
    kw = {"latent_posterior": "relie", "prior": "uniform", **kw}
    model = MGPLVM("T1", 4, 12, n_inducing=8, likelihood=likelihood, bin_size=0.1, seed=0, **kw)
    if likelihood == "gaussian":
        Y = torch.randn(1, 4, 12, generator=g)
    else:
        Y = torch.poisson(torch.full((1, 4, 12), 2.0), generator=g)
    model.init_from_data(Y)
    _randomise_q_u(model)
    return model, Y


def test_outputs_shapes_and_consistency():
    model, Y = _fitted_like_model()
    post = model.latent_posterior(level=0.9, n_samples=200)
    assert post.mean.shape == (1, 12, 1) and post.cov.shape == (1, 12, 1, 1)
    assert torch.all(post.lower < post.mean) and torch.all(post.upper > post.mean)
    assert post.radius.shape == (1, 12) and torch.all(post.radius > 0)
    with pytest.raises(ValueError, match="level"):
        model.latent_posterior(level=1.5)
    pts = torch.linspace(-math.pi, math.pi, 9)[:, None]
    m, sd = model.tuning_curves(pts)
    assert m.shape == (4, 9) and sd.shape == (4, 9) and torch.all(m > 0) and torch.all(sd > 0)
    pred = model.predict(n_samples=0)
    assert pred.shape == (1, 4, 12) and torch.all(pred > 0)
    assert model.predict(neurons=[1, 3], n_samples=4).shape == (1, 2, 12)
    draws = model.sample_posterior_predictive(3)
    assert draws.shape == (3, 1, 4, 12)
    assert torch.all(draws >= 0) and torch.all(draws == draws.round())
    ho = model.held_out_log_likelihood(Y[:, [0, 2]], neurons=[0, 2], n_samples=8)
    assert math.isfinite(ho) and ho < 0
    with pytest.raises(ValueError, match="neuron indices"):
        model.predict(neurons=[7])


def test_manifold_from_name():
    assert isinstance(manifold_from_name("T2"), Torus) and manifold_from_name("T2").dim == 2
    assert isinstance(manifold_from_name("R3"), Euclid)
    with pytest.raises(ValueError):
        manifold_from_name("Q7")


# ------------------------------------------------------------------------------ validation
def test_validate_data_errors():
    model = MGPLVM("T1", 3, 6, seed=0)
    Y = torch.ones(1, 3, 6)
    assert model.validate_data(Y.numpy()).dtype == torch.float64
    with pytest.raises(ValueError, match="dimension"):
        model.validate_data(Y[0])
    with pytest.raises(ValueError, match="neurons 4 != 3"):
        model.validate_data(torch.ones(1, 4, 6))
    with pytest.raises(ValueError, match="time 5 != 6"):
        model.validate_data(torch.ones(1, 3, 5))
    bad = Y.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.validate_data(bad)
    bad = Y.clone()
    bad[0, 0, 0] = -2
    with pytest.raises(ValueError, match="negative"):
        model.validate_data(bad)
    bad = Y.clone()
    bad[0, 0, 0] = 1.5
    with pytest.raises(ValueError, match="non-integer"):
        model.validate_data(bad)
    with pytest.raises(TypeError):
        model.validate_data([[1.0]])
    silent = Y.clone()
    silent[0, 1] = 0
    with pytest.warns(UserWarning, match="never fire"):
        model.validate_data(silent)
    short = MGPLVM("T1", 3, 1, seed=0)
    with pytest.raises(ValueError, match="too few time bins"):
        short.validate_data(torch.ones(1, 3, 1))
    gauss = MGPLVM("T1", 3, 6, likelihood="gaussian", seed=0)
    gauss.validate_data(torch.randn(1, 3, 6) - 5)  # negative, non-integer: fine
    with pytest.raises(ValueError, match="n_neurons"):
        MGPLVM("T1", 0, 6)
    with pytest.raises(ValueError):
        MGPLVM("T1", 3, 6, likelihood="poisson", link="identity")


def test_custom_likelihood_object():
    lik = PoissonLikelihood(3, bin_size=0.05)
    model = MGPLVM("T1", 3, 6, likelihood=lik, seed=0)
    assert model.likelihood is lik and model.bin_size == 0.05
    with pytest.raises(ValueError, match="neurons"):
        MGPLVM("T1", 4, 6, likelihood=lik)


# ------------------------------------------------------------------------------ save / load
@pytest.mark.parametrize(
    "likelihood,extra",
    [("poisson", {}), ("negbin", {}), ("gaussian", {}), ("poisson", {"latent_coupling": "ar1"})],
)
def test_save_load_round_trip(tmp_path, likelihood, extra):
    model, Y = _fitted_like_model(likelihood, prior="brownian", link="exp", **extra)
    if extra:
        with torch.no_grad():
            model.latents.raw_rho.fill_(1.3)
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = MGPLVM.load(path)
    assert loaded.config() == model.config()
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                               strict=True):
        assert k == k2
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    pyro.set_rng_seed(3)
    e1 = model.elbo(Y, n_mc=5)
    pyro.set_rng_seed(3)
    e2 = loaded.elbo(Y, n_mc=5)
    assert float(e1.detach()) == float(e2.detach())
    torch.testing.assert_close(loaded.predict(n_samples=0), model.predict(n_samples=0),
                               rtol=0, atol=0)
    pts = torch.linspace(-3, 3, 5)[:, None]
    torch.testing.assert_close(loaded.tuning_curves(pts)[0], model.tuning_curves(pts)[0],
                               rtol=0, atol=0)
    # no pickled objects: loadable with weights_only
    blob = torch.load(path, weights_only=True)
    assert blob["format"].startswith("mgplvm.MGPLVM")
    (tmp_path / "junk.pt").write_bytes(b"")
    torch.save({"x": 1}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="not a saved MGPLVM"):
        MGPLVM.load(tmp_path / "junk.pt")


# ------------------------------------------------------------------------------ subsets, reuse
def test_neuron_subset_shares_latents_and_copies_generative_params():
    model, Y = _fitted_like_model()
    idx = [0, 2]
    sub = model.neuron_subset(idx)
    assert sub.n_neurons == 2 and sub.latents is model.latents
    pts = torch.linspace(-3, 3, 7)[:, None]
    torch.testing.assert_close(sub.tuning_curves(pts)[0], model.tuning_curves(pts)[0][idx])
    torch.testing.assert_close(sub.predict(n_samples=0), model.predict(neurons=idx, n_samples=0))
    torch.testing.assert_close(sub.gp.inducing_points, model.gp.inducing_points)
    before = model.gp.covar_module.raw_outputscale.detach().clone()
    z_before = model.gp.inducing_points.detach().clone()
    with torch.no_grad():
        sub.gp.covar_module.raw_outputscale.add_(1.0)
        sub.gp.variational_strategy.inducing_points.add_(0.1)
        sub.likelihood.bin_size = 7.0
    torch.testing.assert_close(model.gp.covar_module.raw_outputscale.detach(), before)
    torch.testing.assert_close(model.gp.inducing_points.detach(), z_before)
    assert model.likelihood.bin_size == 0.1
    with torch.no_grad():  # shared latents: an update through the subset reaches the model
        sub.latents.mu.add_(0.01)
    torch.testing.assert_close(model.latents.mu, sub.latents.mu)
    copy = model.neuron_subset(idx, share_latents=False)
    assert copy.latents is not model.latents
    torch.testing.assert_close(copy.latents.mu, model.latents.mu)
    assert copy.latents.mu.data_ptr() != model.latents.mu.data_ptr()
    with pytest.raises(ValueError, match="empty"):
        model.neuron_subset([])


def test_with_new_latents_copies_generative_model():
    model, Y = _fitted_like_model()
    new = model.with_new_latents(n_time=9, n_trials=2)
    assert (new.n_time, new.n_trials) == (9, 2)
    assert new.latents.mu.shape == (2, 9, 1) and not bool(new.latents_initialized)
    pts = torch.linspace(-3, 3, 7)[:, None]
    torch.testing.assert_close(new.tuning_curves(pts)[0], model.tuning_curves(pts)[0])
    gen_new = dict(new.gp.named_parameters())
    for name, p in model.gp.named_parameters():
        assert p.data_ptr() != gen_new[name].data_ptr()
    Y2 = torch.poisson(torch.full((2, 4, 9), 2.0))
    decoded = model.with_new_latents(9, 2, Y=Y2)
    assert bool(decoded.latents_initialized)
    names = {n for n, _ in decoded.named_parameters()}
    gen = {n for n, _ in zip(names, decoded.generative_parameters(), strict=False)}
    assert len(decoded.generative_parameters()) == len(names) - 2  # all but μ and Σ
    assert gen


def test_singular_inducing_covariance_is_handled_by_jitter():
    model = MGPLVM("T1", 2, 5, n_inducing=4, seed=0)
    vs = model.gp.variational_strategy
    # K_uu of rank 1 (identical inducing points) less 1e-9 I: three eigenvalues of -1e-9, so
    # the plain Cholesky fails whatever the rounding of K_uu (with no jitter at all its tiny
    # off-diagonal rounding errors may leave it numerically positive definite)
    vs.jitter_val = -1e-9
    with torch.no_grad():
        vs.inducing_points.fill_(0.3)
    with pytest.warns(Warning, match="jitter"):
        mean, var = model.gp_marginals(torch.linspace(-3, 3, 7)[:, None])
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()


def test_decode_with_markov_prior_follows_the_path():
    """With a Brownian prior the "decode" initialisation is the best candidate *path*: on weakly
    informative data it tracks the trajectory far better than bin-by-bin decoding."""
    from mgplvm.latents import UniformPrior

    torch.manual_seed(0)
    model = MGPLVM("T1", 6, 300, likelihood="poisson", prior="brownian",
                   prior_kwargs={"step_sd": 0.05}, seed=0)
    _randomise_q_u(model, seed=1)
    q_u = model.gp.variational_strategy._variational_distribution
    with torch.no_grad():  # well-determined tuning curves, few spikes per bin
        model.gp.mean_module.constant = torch.zeros(6)
        model.gp.covar_module.outputscale = torch.ones(6)
        q_u.chol_variational_covar.copy_(0.05 * torch.eye(q_u.chol_variational_covar.shape[-1]))
    drift = torch.linspace(0, 4 * math.pi, 300) + 0.03 * torch.randn(300).cumsum(0)
    truth = torch.remainder(drift + math.pi, 2 * math.pi) - math.pi  # two laps of the ring
    with torch.no_grad():
        mean, var = model.gp_marginals(truth[:, None])  # (N, T)
        Y = torch.poisson(torch.exp(mean + 0.5 * var) * model.bin_size)[None]

    def error(mu):
        d = torch.remainder(mu[0, :, 0] - truth + math.pi, 2 * math.pi) - math.pi
        return float(d.abs().median())

    path = model._decode_init(Y)
    model.prior = UniformPrior(model.manifold)
    per_bin = model._decode_init(Y)
    assert error(path) < 0.5 * error(per_bin)
    assert error(path) < 0.1


def test_smooth_latents_tracks_the_path_and_reads_the_prior_step():
    """Particle smoothing under the model's tuning curves (mgplvm.smoothing): with the Brownian
    prior's own step s.d. it follows a two-lap ring path, the log evidence prefers a plausible
    step to a far too small one, and without a Brownian prior it asks for ``step_sd``."""
    from mgplvm.latents import UniformPrior

    torch.manual_seed(0)
    model = MGPLVM("T1", 6, 200, likelihood="poisson", prior="brownian",
                   prior_kwargs={"step_sd": 0.1}, seed=0)
    _randomise_q_u(model, seed=1)
    q_u = model.gp.variational_strategy._variational_distribution
    with torch.no_grad():
        model.gp.mean_module.constant = torch.zeros(6)
        model.gp.covar_module.outputscale = torch.ones(6)
        q_u.chol_variational_covar.copy_(0.05 * torch.eye(q_u.chol_variational_covar.shape[-1]))
    drift = torch.linspace(0, 4 * math.pi, 200) + 0.03 * torch.randn(200).cumsum(0)
    truth = torch.remainder(drift + math.pi, 2 * math.pi) - math.pi
    with torch.no_grad():
        mean, var = model.gp_marginals(truth[:, None])
        Y = torch.poisson(torch.exp(mean + 0.5 * var) * model.bin_size)[None]

    def error(mu):
        d = torch.remainder(mu[0, :, 0] - truth + math.pi, 2 * math.pi) - math.pi
        return float(d.abs().median())

    out = model.smooth_latents(Y, n_particles=300, seed=0)
    assert out.mean.shape == (1, 200, 1) and out.log_evidence.shape == (1,)
    assert error(out.mean) < 0.1
    assert torch.equal(model.smooth_latents(Y, n_particles=300, seed=0).mean, out.mean)
    tiny = model.smooth_latents(Y, 0.003, n_particles=300, seed=0)
    assert float(out.log_evidence) > float(tiny.log_evidence) + 10
    model.prior = UniformPrior(model.manifold)
    with pytest.raises(ValueError, match="needs step_sd"):
        model.smooth_latents(Y)
    assert model.smooth_latents(Y, 0.1, n_particles=300, seed=0).mean.shape == (1, 200, 1)


def test_smooth_init_on_euclidean_latents_starts_where_the_inducing_points_are():
    """``init_latents(Y, "smooth")`` is the particle-smoothed path (1000 particles). On Rᵈ the
    first bin's particles are drawn around the inducing points, so a path far from the origin
    is found (a standard-normal start would put every particle far from it)."""
    torch.manual_seed(0)
    model = MGPLVM("R1", 20, 150, likelihood="poisson", prior="brownian", n_inducing=15,
                   prior_kwargs={"step_sd": 0.1}, seed=0)
    _randomise_q_u(model, seed=2)
    with torch.no_grad():
        model.gp.inducing_points.copy_(torch.linspace(6.0, 12.0, 15)[:, None])
        model.gp.mean_module.constant = torch.full((20,), 1.0)
    truth = 9.0 + 1.5 * torch.sin(torch.linspace(0, 3 * math.pi, 150))
    with torch.no_grad():
        mean, var = model.gp_marginals(truth[:, None])
        Y = torch.poisson(torch.exp(mean + 0.5 * var) * model.bin_size * 4)[None]
    model.init_latents(Y, "smooth")
    mu = model.latents.mu.detach()
    assert float((mu[0, :, 0] - truth).abs().median()) < 0.2
    assert torch.equal(mu, model.smooth_latents(Y, n_particles=1000).mean)
    with pytest.raises(ValueError, match="unknown latent init"):
        model.init_latents(Y, "smoothed")


def test_bin_times_reach_the_prior_decoding_smoothing_and_the_saved_config(tmp_path, monkeypatch):
    """A model of some of a recording's bins (``bin_times``, e.g. a cross-validation half): the
    Brownian prior, the Viterbi decoding and the particle smoother step over the real gaps, and
    the times survive save/load and neuron subsets; ``with_new_latents`` sets its own."""
    import mgplvm.model as model_module
    from mgplvm.latents import LieIncrementProcess

    times = torch.tensor([0.0, 1.0, 3.0, 4.0, 9.0])
    model = MGPLVM("T1", 3, 5, prior="brownian", prior_kwargs={"step_sd": 0.3}, seed=0,
                   bin_times=times)
    Y = torch.poisson(torch.full((1, 3, 5), 2.0))
    assert model.bin_gaps().tolist() == [1.0, 2.0, 1.0, 5.0]
    # the prior site of the Pyro model: the walk at those times, whole and on a minibatch
    for t_idx, t in ((None, times), (torch.tensor([1, 2, 4]), times[[1, 2, 4]])):
        site = poutine.trace(model.model).get_trace(Y, t_idx).nodes["g"]
        g = site["value"]
        expected = LieIncrementProcess(model.manifold, model.prior.step_sd, t, 1).log_prob(g)
        torch.testing.assert_close(site["fn"].log_prob(g), expected)
        consecutive = LieIncrementProcess(model.manifold, model.prior.step_sd,
                                          torch.arange(len(t)), 1).log_prob(g)
        assert not torch.allclose(expected, consecutive)
    assert MGPLVM("T1", 3, 5, bin_times=range(5)).bin_gaps() is None

    seen = {}
    real_viterbi, real_smoother = model_module.viterbi_path, model_module.particle_smoother

    def viterbi_spy(log_lik, log_trans, log_init=None, step_index=None):
        seen["viterbi"] = (log_trans.shape, step_index)
        return real_viterbi(log_lik, log_trans, log_init, step_index)

    def smoother_spy(*args, **kwargs):
        seen["gaps"] = kwargs.get("gaps")
        return real_smoother(*args, **kwargs)

    monkeypatch.setattr(model_module, "viterbi_path", viterbi_spy)
    monkeypatch.setattr(model_module, "particle_smoother", smoother_spy)
    model._decode_init(Y, n_candidates=50)
    shape, step_index = seen["viterbi"]
    assert shape[0] == 3  # gaps 1, 2 and 5: one transition matrix each
    torch.testing.assert_close(torch.tensor([1.0, 2.0, 5.0])[step_index], model.bin_gaps())
    model.smooth_latents(Y, n_particles=20, seed=0)
    torch.testing.assert_close(seen["gaps"], model.bin_gaps())

    model.save(tmp_path / "m.pt")
    loaded = MGPLVM.load(tmp_path / "m.pt")
    torch.testing.assert_close(loaded.bin_times, times.double())
    torch.testing.assert_close(model.neuron_subset([0, 2]).bin_times, times.double())
    assert model.with_new_latents(4).bin_times is None
    torch.testing.assert_close(
        model.with_new_latents(4, bin_times=[2, 5, 6, 8]).bin_gaps(),
        torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64),
    )
    assert "bin_times" not in MGPLVM("T1", 3, 5).config()  # configs without times unchanged
    for bad, match in (([0, 1, 2], "one entry per bin"), ([0, 1, 1, 2, 3], "increasing"),
                       ([0, 1, 2, 3, math.nan], "NaN")):
        with pytest.raises(ValueError, match=match):
            MGPLVM("T1", 3, 5, bin_times=bad)


@pytest.mark.parametrize("prior", ["brownian", "uniform"])
def test_decode_cache_shares_candidates_and_transitions_between_neuron_halves(monkeypatch, prior):
    """``init_latents(..., decode_cache=c)``: a second model with the same manifold, inducing
    points, prior and bin times decodes with the first call's candidates and transition
    matrices, with the path a fresh decoding from the same candidates gives; any difference in
    that key (here the step s.d.) recomputes them."""
    from mgplvm.latents import LieIncrementProcess

    times = torch.tensor([0.0, 2.0, 3.0, 7.0, 8.0, 9.0])
    model = MGPLVM("S2", 6, 6, prior=prior, seed=0, bin_times=times, n_inducing=10)
    _randomise_q_u(model, seed=1)
    Y = torch.poisson(torch.full((1, 6, 6), 3.0), generator=torch.Generator().manual_seed(2))
    half = [0, 2, 4]
    calls = []
    real = LieIncrementProcess.transition_log_prob

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("gap"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LieIncrementProcess, "transition_log_prob", spy)
    cache: dict = {}
    torch.manual_seed(7)
    model.init_latents(Y, "decode", decode_cache=cache)
    markov = prior == "brownian"
    assert len(calls) == int(markov) and set(cache) >= {"key", "candidates"}
    sub = model.neuron_subset(half, share_latents=False)
    torch.manual_seed(99)  # the cached candidates are used, not fresh draws
    sub.init_latents(Y[:, half], "decode", decode_cache=cache)
    assert len(calls) == int(markov)  # no transition matrices computed again
    fresh = model.neuron_subset(half, share_latents=False)
    torch.manual_seed(7)  # the same candidate draws as the first call
    fresh.init_latents(Y[:, half], "decode")
    torch.testing.assert_close(sub.latents.mu, fresh.latents.mu)
    gap = (sub.latents.mu.detach()[0, :, None] - cache["candidates"][None]).norm(dim=-1)
    assert float(gap.min(1).values.max()) < 1e-12  # every bin at one of the cached candidates
    if markov:
        other = model.neuron_subset(half, share_latents=False)
        with torch.no_grad():
            other.prior.raw_step_sd.add_(0.5)
        other.init_latents(Y[:, half], "decode", decode_cache=cache)
        assert len(calls) == 3  # (after fresh's own) a different step s.d.: computed afresh
        step = other.prior.raw_step_sd.detach()
        assert any(isinstance(k, torch.Tensor) and k.shape == step.shape and torch.equal(k, step)
                   for k in cache["key"])
