"""Likelihoods: closed-form / quadrature expectations against Monte Carlo, conditionals against
Pyro, data validation."""

import math

import pytest
import torch

from mgplvm.likelihoods import (
    GaussianLikelihood,
    MGPLVMLikelihood,
    NegativeBinomialLikelihood,
    PoissonLikelihood,
    get_likelihood,
)

N, T = 3, 5


pytestmark = pytest.mark.usefixtures("float64_one_thread")


def _moments(seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = 0.5 + torch.randn(N, T, generator=g)
    var = 0.05 + 0.5 * torch.rand(N, T, generator=g)
    y = torch.poisson(torch.full((N, T), 1.5), generator=g)
    return y, mean, var


def _mc(fn, mean, var, n=100_000, seed=1):
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, *mean.shape, generator=g)
    vals = fn(mean + var.sqrt() * eps)
    return vals.mean(0), vals.std(0) / math.sqrt(n)


def _likelihoods():
    gauss = GaussianLikelihood(N)
    gauss.noise = torch.tensor([0.3, 1.0, 2.5])
    nb = NegativeBinomialLikelihood(N, bin_size=0.5, dispersion=3.0)
    nb.dispersion = torch.tensor([0.7, 3.0, 20.0])
    nb_sp = NegativeBinomialLikelihood(N, link="softplus", bin_size=0.5)
    return {
        "gaussian": gauss,
        "poisson_exp": PoissonLikelihood(N, bin_size=0.5),
        "poisson_softplus": PoissonLikelihood(N, link="softplus", bin_size=0.5),
        "negbin_exp": nb,
        "negbin_softplus": nb_sp,
    }


@pytest.mark.parametrize("name", list(_likelihoods()))
def test_expected_log_prob_matches_monte_carlo(name):
    lik = _likelihoods()[name]
    y, mean, var = _moments()
    with torch.no_grad():
        got = lik.expected_log_prob_moments(y, mean, var)
        ref, se = _mc(lambda f: lik.log_prob(y, f), mean, var)
    assert got.shape == (N, T)
    assert torch.all((got - ref).abs() < 5 * se + 1e-3), (got - ref).abs().max()


@pytest.mark.parametrize("name", list(_likelihoods()))
def test_log_predictive_matches_monte_carlo_and_exceeds_the_bound(name):
    """log E_f[p(y|f)] against the log of a Monte Carlo mean of p(y|f); Jensen: ≥ E_f[log p]."""
    lik = _likelihoods()[name]
    y, mean, var = _moments(5)
    with torch.no_grad():
        got = lik.log_predictive_moments(y, mean, var)
        ref, se = _mc(lambda f: lik.log_prob(y, f).exp(), mean, var)
        bound = lik.expected_log_prob_moments(y, mean, var)
    assert got.shape == (N, T)
    assert torch.all((got.exp() - ref).abs() < 5 * se + 1e-4), (got.exp() - ref).abs().max()
    assert torch.all(got >= bound - 1e-10)
    assert torch.all(got - bound > 1e-4)  # var > 0: a strict gap
    # no posterior variance: both reduce to log p(y | mean)
    zero = torch.zeros_like(var)
    torch.testing.assert_close(lik.log_predictive_moments(y, mean, zero), lik.log_prob(y, mean))


def test_gaussian_log_predictive_closed_form_equals_quadrature():
    lik = _likelihoods()["gaussian"]
    y, mean, var = _moments(4)
    with torch.no_grad():
        closed = lik.log_predictive_moments(y, mean, var)
        quad = MGPLVMLikelihood.log_predictive_moments(lik, y, mean, var)
    # exp(log p) is a Gaussian in f, not a polynomial: 20 Gauss–Hermite nodes are good to ~1e-8
    torch.testing.assert_close(closed, quad, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", ["gaussian", "poisson_exp"])
def test_closed_forms_equal_quadrature(name):
    lik = _likelihoods()[name]
    y, mean, var = _moments(3)
    with torch.no_grad():
        closed = lik.expected_log_prob_moments(y, mean, var)
        quad = MGPLVMLikelihood.expected_log_prob_moments(lik, y, mean, var)
    torch.testing.assert_close(closed, quad, rtol=1e-9, atol=1e-9)


def test_poisson_exp_closed_form_formula():
    lik = PoissonLikelihood(N, bin_size=0.025)
    y, mean, var = _moments(4)
    expected = y * (math.log(0.025) + mean) - 0.025 * torch.exp(mean + var / 2) - torch.lgamma(
        y + 1
    )
    torch.testing.assert_close(lik.expected_log_prob_moments(y, mean, var), expected)


def test_gaussian_closed_form_formula():
    lik = GaussianLikelihood(N, noise=0.7)
    y, mean, var = _moments(5)
    s2 = torch.tensor(0.7)
    expected = -0.5 * torch.log(2 * math.pi * s2) - ((y - mean) ** 2 + var) / (2 * s2)
    torch.testing.assert_close(lik.expected_log_prob_moments(y, mean, var).detach(), expected)


@pytest.mark.parametrize("name", list(_likelihoods()))
def test_log_prob_equals_pyro_distribution(name):
    lik = _likelihoods()[name]
    y, f, _ = _moments(6)
    with torch.no_grad():
        torch.testing.assert_close(lik.log_prob(y, f), lik(f).log_prob(y))


def test_negbin_mean_and_variance():
    lik = NegativeBinomialLikelihood(N, bin_size=0.5)
    lik.dispersion = torch.tensor([0.7, 3.0, 20.0])
    f = torch.zeros(N, 1) + math.log(4.0)  # rate 4 Hz, mean count 2
    d = lik(f)
    torch.testing.assert_close(d.mean.detach(), torch.full((N, 1), 2.0))
    r = lik.dispersion.detach()[:, None]
    torch.testing.assert_close(d.variance.detach(), 2.0 + 4.0 / r)


@pytest.mark.parametrize("link", ["exp", "softplus"])
def test_mean_moments_and_predictive_mean(link):
    lik = PoissonLikelihood(N, link=link, bin_size=0.1)
    _, mean, var = _moments(7)
    m, sd = lik.mean_moments(mean, var)
    ref_m, se = _mc(lik.rate, mean, var)
    ref_m2, _ = _mc(lambda f: lik.rate(f) ** 2, mean, var)
    assert torch.all((m - ref_m).abs() < 5 * se + 1e-6)
    torch.testing.assert_close(sd, (ref_m2 - ref_m**2).sqrt(), rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(lik.predictive_mean(mean, var), 0.1 * m)


def test_float32_quadrature_follows_dtype():
    lik = PoissonLikelihood(N, link="softplus").to(torch.float32)
    y, mean, var = (t.float() for t in _moments())
    out = lik.expected_log_prob_moments(y, mean, var)
    assert out.dtype == torch.float32
    ref = lik.to(torch.float64).expected_log_prob_moments(y.double(), mean.double(), var.double())
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-5)


def test_gradients_flow_to_parameters():
    lik = _likelihoods()["negbin_softplus"]
    y, mean, var = _moments()
    mean.requires_grad_(True)
    lik.expected_log_prob_moments(y, mean, var).sum().backward()
    assert mean.grad is not None and torch.isfinite(mean.grad).all()
    assert lik.raw_dispersion.grad is not None and lik.raw_dispersion.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("cls", [PoissonLikelihood, NegativeBinomialLikelihood])
def test_count_validation(cls):
    lik = cls(N)
    Y = torch.ones(1, N, T)
    lik.validate(Y)
    bad = Y.clone()
    bad[0, 1, 2] = -1
    with pytest.raises(ValueError, match="negative"):
        lik.validate(bad)
    bad = Y.clone()
    bad[0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="non-integer"):
        lik.validate(bad)
    bad = Y.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        lik.validate(bad)
    bad = Y.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        lik.validate(bad)


def test_silent_neuron_warns():
    Y = torch.ones(1, N, T)
    Y[0, 2] = 0
    with pytest.warns(UserWarning, match="never fire"):
        PoissonLikelihood(N).validate(Y)


def test_gaussian_validation():
    lik = GaussianLikelihood(N)
    Y = torch.randn(1, N, T)
    lik.validate(Y)  # negative, non-integer values are fine
    Y[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        lik.validate(Y)
    Y = torch.randn(1, N, T)
    Y[0, 1] = 3.0
    with pytest.warns(UserWarning, match="constant"):
        lik.validate(Y)


def test_constructor_errors_and_registry():
    with pytest.raises(ValueError, match="link"):
        PoissonLikelihood(N, link="log")
    with pytest.raises(ValueError, match="bin_size"):
        PoissonLikelihood(N, bin_size=0)
    with pytest.raises(ValueError, match="n_neurons"):
        PoissonLikelihood(0)
    with pytest.raises(ValueError, match="unknown likelihood"):
        get_likelihood("bernoulli", N)
    lik = get_likelihood("Gaussian", N, bin_size=0.1, link="exp")  # extra kwargs dropped
    assert isinstance(lik, GaussianLikelihood)
    nb = get_likelihood("nb", N, bin_size=0.1)
    assert isinstance(nb, NegativeBinomialLikelihood) and nb.bin_size == 0.1
    assert nb.config() == {"num_quadrature": 20, "link": "exp", "bin_size": 0.1}


def test_init_mean():
    Y = torch.zeros(1, 2, 100)
    Y[0, 0, ::10] = 1  # 0.1 spikes / bin
    lik = PoissonLikelihood(2, bin_size=0.01)
    m = lik.init_mean(Y)
    assert math.isclose(float(m[0]), math.log(10.0), rel_tol=1e-9)
    assert torch.isfinite(m[1])  # a silent neuron gets a small finite rate
    sp = PoissonLikelihood(2, link="softplus", bin_size=0.01).init_mean(Y)
    torch.testing.assert_close(torch.nn.functional.softplus(sp[0]), torch.tensor(10.0))
