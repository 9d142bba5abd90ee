"""Kernels of chordal distances: positive definiteness, closed forms, GPyTorch composition."""

from __future__ import annotations

import math

import geoopt
import gpytorch
import pytest
import torch

from mgplvm import manifolds
from mgplvm.kernels import (
    ManifoldMaternKernel,
    ManifoldRBFKernel,
    factor_sqdists,
    matern_gram,
    rbf_gram,
    scaled_sqdist,
)
from mgplvm.manifolds import Euclid, Torus

DT = torch.float64
MANIFOLDS = ["T1", "T2", "R2", "S2", "S3", "SO3"]
# Every kernel here is PD for any lengthscale, but for 200 random points the smallest eigenvalue of
# the RBF Gram matrix falls below float64 round-off (~1e-14) as ℓ grows. These lengthscales keep it
# resolvable while every point still has about one or more effective neighbours (row sums > 2).
PD_LENGTHSCALE = {"T1": 0.02, "T2": 0.3, "R2": 0.2, "S2": 0.3, "S3": 0.5, "SO3": 0.7}
KERNELS = [
    ("rbf", lambda m, **kw: ManifoldRBFKernel(m, **kw)),
    ("matern12", lambda m, **kw: ManifoldMaternKernel(m, nu=0.5, **kw)),
    ("matern32", lambda m, **kw: ManifoldMaternKernel(m, nu=1.5, **kw)),
    ("matern52", lambda m, **kw: ManifoldMaternKernel(m, nu=2.5, **kw)),
]


def get(name: str):
    """A manifold by name; skip names whose class has not landed yet."""
    if hasattr(manifolds, "get_manifold"):
        try:
            return manifolds.get_manifold(name)
        except (ValueError, KeyError, NotImplementedError):
            pass
    if name[0] in "TR" and name[1:].isdigit():
        return (Torus if name[0] == "T" else Euclid)(int(name[1:]))
    pytest.skip(f"manifold {name} not available yet")


def points(m, *size, seed=0):
    return m.random(*size, dtype=DT, generator=torch.Generator().manual_seed(seed))


def profile(kind: str, s: torch.Tensor) -> torch.Tensor:
    """Closed forms of the kernels as functions of S = D/ℓ²."""
    r = s.sqrt()
    if kind == "rbf":
        return torch.exp(-s / 2)
    if kind == "matern12":
        return torch.exp(-r)
    if kind == "matern32":
        return (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r)
    return (1 + math.sqrt(5) * r + 5 * s / 3) * torch.exp(-math.sqrt(5) * r)


@pytest.mark.parametrize("kind,make", KERNELS, ids=[k for k, _ in KERNELS])
@pytest.mark.parametrize("name", MANIFOLDS)
def test_positive_definite_200_points(name, kind, make):
    m = get(name)
    x = points(m, 200)
    k = make(m, lengthscale=PD_LENGTHSCALE[name]).to(DT)
    with torch.no_grad():
        K = k(x).to_dense()
    assert K.shape == (200, 200)
    torch.testing.assert_close(K, K.T)
    neighbours = K.sum(-1).median() - 1  # effective number of correlated neighbours
    assert neighbours > 1, "test is trivial: Gram matrix is close to the identity"
    assert torch.linalg.eigvalsh(K).min() > 1e-10


@pytest.mark.parametrize("kind,make", KERNELS, ids=[k for k, _ in KERNELS])
@pytest.mark.parametrize("name", MANIFOLDS)
def test_unit_diagonal_and_closed_form(name, kind, make):
    m = get(name)
    x1, x2 = points(m, 30, seed=1), points(m, 20, seed=2)
    ell = 0.7
    k = make(m, lengthscale=ell).to(DT)
    with torch.no_grad():
        torch.testing.assert_close(k(x1, diag=True), torch.ones(30, dtype=DT))
        torch.testing.assert_close(k(x1).to_dense().diagonal(), torch.ones(30, dtype=DT))
        D = m.chordal_sqdist(x1.unsqueeze(-2), x2.unsqueeze(-3))  # elementwise form
        torch.testing.assert_close(k(x1, x2).to_dense(), profile(kind, D / ell**2))
        nu = {"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}.get(kind)
        gram = (
            rbf_gram(m, x1, x2, ell, 2.0)
            if nu is None
            else matern_gram(m, x1, x2, nu=nu, lengthscale=ell, outputscale=2.0)
        )
        torch.testing.assert_close(gram, 2 * profile(kind, D / ell**2))


def test_torus_rbf_matches_explicit_formula():
    m = Torus(2)
    x1, x2 = points(m, 7, seed=3), points(m, 5, seed=4)
    ell = 0.4
    d = x1[:, None, :] - x2[None, :, :]
    expected = torch.exp(-(2 - 2 * torch.cos(d)).sum(-1) / (2 * ell**2))
    k = ManifoldRBFKernel(m, lengthscale=ell).to(DT)
    with torch.no_grad():
        torch.testing.assert_close(k(x1, x2).to_dense(), expected)


@pytest.mark.parametrize("nu", [None, 0.5, 1.5, 2.5])
def test_matches_gpytorch_euclidean_kernels_on_the_embedding(nu):
    """R² points are their own embedding; T² points embed as (cos θ, sin θ) per angle."""
    ref = gpytorch.kernels.RBFKernel() if nu is None else gpytorch.kernels.MaternKernel(nu=nu)
    ref = ref.to(DT)
    ref.lengthscale = 0.8
    for m, embed in [
        (Euclid(2), lambda x: x),
        (Torus(2), lambda x: torch.cat([torch.cos(x), torch.sin(x)], -1)),
    ]:
        k = ManifoldRBFKernel(m) if nu is None else ManifoldMaternKernel(m, nu=nu)
        k = k.to(DT)
        k.lengthscale = 0.8
        x1, x2 = points(m, 40, seed=5), points(m, 30, seed=6)
        with torch.no_grad():
            torch.testing.assert_close(k(x1, x2).to_dense(), ref(embed(x1), embed(x2)).to_dense())


def test_diag_is_elementwise_and_matches_full():
    m = Torus(2)
    x1, x2 = points(m, 25, seed=7), points(m, 25, seed=8)
    full = rbf_gram(m, x1, x2, 0.5)
    torch.testing.assert_close(rbf_gram(m, x1, x2, 0.5, diag=True), full.diagonal())
    k = ManifoldMaternKernel(m, nu=1.5, lengthscale=0.5).to(DT)
    with torch.no_grad():
        torch.testing.assert_close(k(x1, diag=True), k(x1).to_dense().diagonal())


def test_composes_with_scale_sum_and_product():
    m = Torus(1)
    x = points(m, 15, seed=9)
    rbf = ManifoldRBFKernel(m, lengthscale=0.5)
    mat = ManifoldMaternKernel(m, nu=1.5, lengthscale=1.2)
    scaled = gpytorch.kernels.ScaleKernel(rbf)
    scaled.outputscale = 3.0
    combos = {
        "scale": (scaled, lambda a, b: 3 * a),
        "sum": (scaled + mat, lambda a, b: 3 * a + b),
        "product": (rbf * mat, lambda a, b: a * b),
    }
    with torch.no_grad():
        a, b = rbf(x).to_dense(), mat(x).to_dense()
        for name, (kernel, expected) in combos.items():
            kernel = kernel.to(DT)
            torch.testing.assert_close(kernel(x).to_dense(), expected(a, b), msg=name)
            torch.testing.assert_close(
                kernel(x, diag=True), expected(a, b).diagonal(), msg=f"{name} diag"
            )


def test_batch_lengthscales_shapes_and_values():
    m, n_neurons = Torus(1), 4
    k = ManifoldRBFKernel(m, batch_shape=(n_neurons,)).to(DT)
    assert k.raw_lengthscale.shape == (n_neurons, 1, 1)
    ells = torch.tensor([0.3, 0.6, 1.0, 2.0], dtype=DT)
    k.lengthscale = ells.view(n_neurons, 1, 1)
    torch.testing.assert_close(k.lengthscale.view(-1), ells)
    kernel = gpytorch.kernels.ScaleKernel(k, batch_shape=(n_neurons,)).to(DT)
    x = points(m, 3, 2, 1, 11, seed=10)  # (n_mc, trials, 1 [neurons], time, ambient)
    with torch.no_grad():
        K = kernel(x).to_dense()
        assert K.shape == (3, 2, n_neurons, 11, 11)
        assert kernel(x, diag=True).shape == (3, 2, n_neurons, 11)
        assert kernel(x[0, 0, 0]).to_dense().shape == (n_neurons, 11, 11)
        for i, ell in enumerate(ells):
            single = ManifoldRBFKernel(m, lengthscale=float(ell)).to(DT)
            expected = kernel.outputscale[i] * single(x[:, :, 0]).to_dense()
            torch.testing.assert_close(K[:, :, i], expected)
        # the function form with lengthscale (n_neurons, 1), outputscale (n_neurons,) agrees
        torch.testing.assert_close(rbf_gram(m, x, x, ells.view(-1, 1), kernel.outputscale), K)
    with pytest.raises(ValueError, match="one value per factor"):
        rbf_gram(m, x, x, ells)  # (n_neurons,) is ambiguous: must be (n_neurons, 1)


def test_distances_computed_once_for_all_neurons(monkeypatch):
    m = Torus(1)
    calls = []
    original = Torus.pairwise_chordal_sqdist

    def counting(self, a, b):
        out = original(self, a, b)
        calls.append(out.shape)
        return out

    monkeypatch.setattr(Torus, "pairwise_chordal_sqdist", counting)
    x = points(m, 5, 1, 50, seed=11)  # (n_mc, 1, time, ambient)
    rbf_gram(m, x, x, torch.rand(30, 1, dtype=DT) + 0.5, torch.ones(30, dtype=DT))
    k = ManifoldRBFKernel(m, batch_shape=(30,)).to(DT)
    with torch.no_grad():
        assert k(x).to_dense().shape == (5, 30, 50, 50)
    assert calls == [torch.Size([5, 1, 50, 50])] * 2  # once each, without the neuron axis


@pytest.mark.parametrize("kind,make", KERNELS, ids=[k for k, _ in KERNELS])
@pytest.mark.parametrize("name", MANIFOLDS)
def test_gradients_finite_at_coincident_points(name, kind, make):
    m = get(name)
    base = points(m, 6, seed=12)
    x = torch.cat([base, base[:3]]).requires_grad_(True)  # duplicated points
    k = make(m, lengthscale=0.5).to(DT)
    for diag in (False, True):
        out = k(x, diag=True) if diag else k(x, x.clone()).to_dense()
        grad_x, grad_ell = torch.autograd.grad(out.sum(), [x, k.raw_lengthscale])
        assert torch.isfinite(grad_x).all() and torch.isfinite(grad_ell).all(), (kind, diag)
    # the pairwise matmul form has no round-off at coincident points when x1 is x2
    x32 = x.detach().float()
    with torch.no_grad():
        assert (make(m, lengthscale=0.1)(x32).to_dense().diagonal() == 1).all()


def test_safe_sqrt_gives_exact_zero_gradient_at_zero():
    m = Euclid(1)
    x = torch.zeros(2, 1, dtype=DT, requires_grad=True)
    (g,) = torch.autograd.grad(matern_gram(m, x, x, nu=0.5).sum(), x)
    assert torch.equal(g, torch.zeros_like(g))


def test_variational_strategy_with_inducing_points_on_the_torus():
    m = Torus(1)
    n_neurons, n_inducing = 3, 12

    class GP(gpytorch.models.ApproximateGP):
        def __init__(self, z):
            dist = gpytorch.variational.CholeskyVariationalDistribution(
                n_inducing, batch_shape=(n_neurons,)
            )
            strategy = gpytorch.variational.VariationalStrategy(
                self, z, dist, learn_inducing_locations=True
            )
            super().__init__(strategy)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                ManifoldRBFKernel(m, batch_shape=(n_neurons,)), batch_shape=(n_neurons,)
            )

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(x), self.covar_module(x)
            )

    z = points(m, n_inducing, seed=13)
    model = GP(z).to(DT)
    # VariationalStrategy wraps inducing points in a plain Parameter: make them live on T¹
    model.variational_strategy.inducing_points = geoopt.ManifoldParameter(z.clone(), manifold=m)
    x = points(m, 40, seed=14)
    q = model(x)
    assert q.mean.shape == (n_neurons, 40) and q.variance.shape == (n_neurons, 40)
    y = torch.sin(x[:, 0]).expand(n_neurons, 40)
    lik = gpytorch.likelihoods.GaussianLikelihood(batch_shape=(n_neurons,)).to(DT)
    elbo = gpytorch.mlls.VariationalELBO(lik, model, num_data=40)
    loss = -elbo(q, y).sum()
    loss.backward()
    zparam = model.variational_strategy.inducing_points
    assert isinstance(zparam, geoopt.ManifoldParameter)
    assert zparam.grad is not None and torch.isfinite(zparam.grad).all()
    assert zparam.grad.abs().sum() > 0
    assert model.covar_module.base_kernel.raw_lengthscale.grad.shape == (n_neurons, 1, 1)
    opt = geoopt.optim.RiemannianAdam([*model.parameters(), *lik.parameters()], lr=0.5)
    opt.step()
    assert zparam.abs().max() <= math.pi  # stayed on the torus (wrapped)


def test_ard_over_product_factors():
    if not hasattr(manifolds, "Product"):
        pytest.skip("Product manifold not available yet")
    t1, s2 = get("T1"), get("S2")
    m = manifolds.Product(t1, s2)
    k = ManifoldRBFKernel(m, batch_shape=(2,)).to(DT)
    assert k.raw_lengthscale.shape == (2, 1, 2)
    ells = torch.tensor([[0.5, 1.5], [2.0, 0.3]], dtype=DT)
    k.lengthscale = ells.unsqueeze(-2)
    x1, x2 = points(m, 9, seed=15), points(m, 6, seed=16)
    d_t = t1.pairwise_chordal_sqdist(x1[:, :1], x2[:, :1])
    d_s = s2.pairwise_chordal_sqdist(x1[:, 1:], x2[:, 1:])
    expected = torch.exp(-0.5 * (d_t / ells[:, :1, None] ** 2 + d_s / ells[:, 1:, None] ** 2))
    with torch.no_grad():
        torch.testing.assert_close(k(x1, x2).to_dense(), expected)
        torch.testing.assert_close(k(x1, diag=True), torch.ones(2, 9, dtype=DT))
        torch.testing.assert_close(rbf_gram(m, x1, x2, ells), expected)
    shared = ManifoldRBFKernel(m, ard=False, lengthscale=0.7).to(DT)
    assert shared.raw_lengthscale.shape == (1, 1)
    with torch.no_grad():
        torch.testing.assert_close(
            shared(x1, x2).to_dense(), torch.exp(-(d_t + d_s) / (2 * 0.7**2))
        )


def test_last_dim_is_batch_on_separable_manifolds():
    m = Torus(2)
    x = points(m, 10, seed=17)
    k = ManifoldRBFKernel(m, lengthscale=0.5).to(DT)
    with pytest.warns(DeprecationWarning), torch.no_grad():
        K = k(x, last_dim_is_batch=True).to_dense()
    assert K.shape == (2, 10, 10)
    with torch.no_grad():
        for i in range(2):
            torch.testing.assert_close(K[i], rbf_gram(Torus(1), x[:, i : i + 1], None, 0.5))


def test_factor_sqdists_and_scaled_sqdist():
    m = Torus(1)
    x = points(m, 8, seed=18)
    (d,) = factor_sqdists(m, x)
    assert d.shape == (8, 8) and torch.equal(d.diagonal(), torch.zeros(8, dtype=DT))
    s = scaled_sqdist([d], torch.tensor([[0.5], [2.0]], dtype=DT))
    torch.testing.assert_close(s, torch.stack([d / 0.25, d / 4]))
    torch.testing.assert_close(scaled_sqdist([d], 2.0), d / 4)


def test_clear_errors():
    m = Torus(1)
    with pytest.raises(ValueError, match="nu must be one of"):
        ManifoldMaternKernel(m, nu=1.0)
    with pytest.raises(TypeError, match="LatentManifold"):
        ManifoldRBFKernel("T1")
    with pytest.raises(ValueError, match="trailing dimension of 1"):
        rbf_gram(m, torch.zeros(5, 2, dtype=DT), None)
    with pytest.raises(ValueError, match="nu must be one of"):
        matern_gram(m, torch.zeros(5, 1, dtype=DT), nu=3)
