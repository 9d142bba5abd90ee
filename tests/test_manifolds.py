"""Manifolds: exp/log inverses, group axioms, chordal distances, wrapped densities, optimisation."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mgplvm.manifolds import (
    SO3,
    Euclid,
    LatentManifold,
    Product,
    Sphere,
    Torus,
    gaussian_log_prob,
    get_manifold,
    qmul,
    wrap_angle,
)
from mgplvm.manifolds.base import gaussian_log_prob_shared

DT = torch.float64
NAMES = ["T1", "T2", "R2", "S2", "S3", "SO3", "T1xS2", "R1xSO3"]
GROUPS = ["T2", "R2", "S3", "SO3", "S1", "T1xS3"]
COMPACT = ["T1", "T2", "S2", "S3", "SO3", "T1xS2"]
HYP = settings(max_examples=25, deadline=None, derandomize=True)


@pytest.fixture(autouse=True)
def _single_thread_seeded():
    """Seeded, one thread: on these small problems intra-op threads only add contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def points(m: LatentManifold, *size, seed: int = 0) -> torch.Tensor:
    return m.random(*size, dtype=DT, generator=gen(seed))


def same_point(m: LatentManifold, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Largest coordinate difference between ``a`` and ``b`` as points (angles wrapped on tori,
    ``q ≡ −q`` on SO(3))."""
    factors = m.factors if isinstance(m, Product) else (m,)
    errs, start = [], 0
    for f in factors:
        x, y = a[..., start : start + f.ambient_dim], b[..., start : start + f.ambient_dim]
        start += f.ambient_dim
        if isinstance(f, Torus):
            diff = wrap_angle(x - y)
        elif isinstance(f, SO3):
            diff = x - torch.where((x * y).sum(-1, keepdim=True) >= 0, y, -y)
        else:
            diff = x - y
        errs.append(diff.abs().max())
    return torch.stack(errs).max()


def inj_radius(m: LatentManifold) -> list[tuple[int, float, str]]:
    """Per factor: (dim, radius, kind) with kind 'box' (per coordinate) or 'ball'."""
    factors = m.factors if isinstance(m, Product) else (m,)
    out = []
    for f in factors:
        if isinstance(f, Torus):
            out.append((f.dim, math.pi, "box"))
        elif isinstance(f, Euclid):
            out.append((f.dim, 10.0, "box"))
        elif isinstance(f, SO3):
            out.append((f.dim, math.pi / 2, "ball"))
        else:
            out.append((f.dim, math.pi, "ball"))
    return out


def coords_inside(m: LatentManifold, raw: torch.Tensor, frac: float) -> torch.Tensor:
    """Map ``raw`` in [-1, 1]^dim to tangent coordinates strictly inside the injectivity radius."""
    parts, start = [], 0
    for d, radius, kind in inj_radius(m):
        u = raw[..., start : start + d]
        if kind == "ball":
            u = u / u.norm(dim=-1, keepdim=True).clamp_min(1.0)  # inside the unit ball
        parts.append(frac * radius * u)
        start += d
    return torch.cat(parts, -1)


def well_conditioned_tril(d: int, sd: float, seed: int) -> torch.Tensor:
    g = gen(seed)
    a = torch.randn(d, d, dtype=DT, generator=g) * 0.3
    cov = sd**2 * (a @ a.T / d + torch.eye(d, dtype=DT))
    return torch.linalg.cholesky(cov)


# ------------------------------------------------------------------------------------ registry
@pytest.mark.parametrize(
    "name,cls,ambient,dim",
    [
        ("T1", Torus, 1, 1),
        ("t2", Torus, 2, 2),
        ("R3", Euclid, 3, 3),
        ("S2", Sphere, 3, 2),
        ("s3", Sphere, 4, 3),
        ("S^4", Sphere, 5, 4),
        ("SO3", SO3, 4, 3),
        ("so(3)", SO3, 4, 3),
        ("T1xR1", Product, 2, 2),
        ("T1*S2", Product, 4, 3),
        ("t1 x so3", Product, 5, 4),
    ],
)
def test_get_manifold_names(name, cls, ambient, dim):
    m = get_manifold(name)
    assert type(m) is cls and (m.ambient_dim, m.dim) == (ambient, dim)
    assert get_manifold(m) is m
    assert get_manifold(m.name).name == m.name  # names round-trip


def test_get_manifold_products_and_errors():
    m = get_manifold("T1xS2")
    assert [f.name for f in m.factors] == ["T1", "S2"] and m.name == "T1xS2"
    assert get_manifold(["T1", Sphere(2)]).name == "T1xS2"
    assert Product(Product(Torus(1), Euclid(1)), SO3()).name == "T1xR1xSO3"  # flattened
    for bad in ["Q2", "S", "SO4", "T1x", "", "H3"]:
        with pytest.raises(ValueError, match="valid forms"):
            get_manifold(bad)
    with pytest.raises(ValueError, match=">= 1"):
        get_manifold("S0")
    with pytest.raises(TypeError):
        get_manifold(3)


def test_log_uniform_and_group_flags():
    assert Sphere(2).log_uniform() == pytest.approx(-math.log(4 * math.pi))
    assert Sphere(3).log_uniform() == pytest.approx(-math.log(2 * math.pi**2))
    assert Sphere(1).log_uniform() == pytest.approx(-math.log(2 * math.pi))
    assert SO3().log_uniform() == pytest.approx(-math.log(math.pi**2))
    assert get_manifold("T1xS2").log_uniform() == pytest.approx(-math.log(8 * math.pi**2))
    assert [get_manifold(n).is_group for n in ["S2", "S3", "SO3", "T1xS2", "T1xS3"]] == [
        False,
        True,
        True,
        False,
        True,
    ]
    assert not get_manifold("T1xR1").is_compact


# ------------------------------------------------------------------------------------ exp / log
@pytest.mark.parametrize("name", NAMES)
@HYP
@given(
    raw=st.lists(st.floats(-1, 1), min_size=8, max_size=8),
    frac=st.floats(0.0, 0.97),
    seed=st.integers(0, 2**16),
)
def test_log_exp_is_identity_inside_injectivity_radius(name, raw, frac, seed):
    m = get_manifold(name)
    v = coords_inside(m, torch.tensor(raw[: m.dim], dtype=DT), frac)
    mu = points(m, seed=seed)
    g = m.expmap_coords(mu, v)
    m.validate(g, atol=1e-9)
    torch.testing.assert_close(m.logmap_coords(mu, g), v, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("name", NAMES)
@HYP
@given(seed=st.integers(0, 2**16))
def test_exp_log_is_identity(name, seed):
    m = get_manifold(name)
    mu, g = points(m, 4, seed=seed), points(m, 4, seed=seed + 1)
    v = m.logmap_coords(mu, g)
    assert v.shape == (4, m.dim)
    assert same_point(m, m.expmap_coords(mu, v), g) < 1e-9
    # geoopt's ambient exp/log agree as well
    assert same_point(m, m.expmap(mu, m.logmap(mu, g)), g) < 1e-9


def test_principal_log_ranges_and_exp0():
    s2, s3, so3 = Sphere(2), Sphere(3), SO3()
    for m, top in [(s2, math.pi), (s3, math.pi), (so3, math.pi / 2)]:
        g, mu = points(m, 500, seed=1), points(m, 500, seed=2)
        r = m.logmap_coords(mu, g).norm(dim=-1)
        assert r.max() <= top + 1e-12
        torch.testing.assert_close(m.dist(mu, g), r)  # geodesic distance = ‖Log‖
    v = torch.tensor([0.3, -0.2, 0.5], dtype=DT)
    torch.testing.assert_close(s3.exp0(v), so3.exp0(v))
    torch.testing.assert_close(s3.log0(s3.exp0(v)), v)
    torch.testing.assert_close(s2.exp0(v[:2]), s2.expmap_coords(s2.identity(dtype=DT), v[:2]))


def test_sphere_frame_orthonormal_everywhere_including_near_minus_e0():
    for n in (1, 2, 4):
        m = Sphere(n)
        for dtype, tol in [(DT, 1e-12), (torch.float32, 2e-6)]:
            tail = 1e-4 * torch.randn(5, n, dtype=dtype, generator=gen(0))
            near = m.projx(torch.cat([-torch.ones(5, 1, dtype=dtype), tail], -1))
            mu = torch.cat(
                [m.random(200, dtype=dtype, generator=gen(n)), near, -m.identity(1, dtype=dtype)]
            )
            eye = torch.eye(n, dtype=dtype)
            F = torch.stack([m.frame(mu, eye[i].expand(len(mu), n)) for i in range(n)], -1)
            torch.testing.assert_close(
                F.transpose(-1, -2) @ F, eye.expand(len(mu), n, n), atol=tol, rtol=0
            )
            assert (mu.unsqueeze(-2) @ F).abs().max() < tol  # tangent to mu
            u = torch.randn(len(mu), n + 1, dtype=dtype, generator=gen(3))
            torch.testing.assert_close(
                m.frame_transpose(mu, u),
                (F.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1),
                atol=tol,
                rtol=0,
            )


def test_s3_and_so3_use_rotation_angle_two_norm_v():
    """Exp(v) = (cos‖v‖, sin‖v‖ v̂) is the rotation by φ = 2‖v‖ about v̂ (DESIGN.md §2)."""
    so3 = SO3()
    v = torch.tensor([0.2, -0.4, 0.1], dtype=DT)
    q = so3.exp0(v)
    w, x, y, z = q
    R = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
        ]
    )
    phi = 2 * v.norm()
    torch.testing.assert_close(torch.trace(R), 1 + 2 * torch.cos(phi))
    torch.testing.assert_close(R @ v, v)  # the axis is v
    one = so3.identity(dtype=DT)
    torch.testing.assert_close(so3.chordal_sqdist(one, q), 2 - 2 * torch.cos(phi))


# --------------------------------------------------------------------------------- group axioms
@pytest.mark.parametrize("name", GROUPS)
def test_group_axioms(name):
    m = get_manifold(name)
    a, b, c = points(m, 50, seed=1), points(m, 50, seed=2), points(m, 50, seed=3)
    e = m.identity(50, dtype=DT)
    assert same_point(m, m.compose(m.compose(a, b), c), m.compose(a, m.compose(b, c))) < 1e-12
    assert same_point(m, m.compose(a, e), a) < 1e-12
    assert same_point(m, m.compose(e, a), a) < 1e-12
    assert same_point(m, m.compose(a, m.inverse(a)), e) < 1e-7
    assert same_point(m, m.compose(m.inverse(a), a), e) < 1e-7
    # expmap_coords is left translation of Exp: mu · Exp(v)
    v = 0.5 * torch.randn(50, m.dim, dtype=DT, generator=gen(4))
    assert same_point(m, m.expmap_coords(a, v), m.compose(a, m.exp0(v))) < 1e-12


def test_quaternion_product_matches_rotation_composition():
    m = SO3()
    a, b = points(m, 20, seed=5), points(m, 20, seed=6)

    def rot(q):
        w, x, y, z = q.unbind(-1)
        rows = [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    torch.testing.assert_close(rot(qmul(a, b)), rot(a) @ rot(b))
    torch.testing.assert_close(rot(-a), rot(a))


def test_non_groups_raise_clear_errors():
    s2 = Sphere(2)
    x = points(s2, 3)
    with pytest.raises(NotImplementedError, match="S2 is not a group"):
        s2.compose(x, x)
    with pytest.raises(NotImplementedError, match="S2 is not a group"):
        s2.inverse(x)
    p = get_manifold("T1xS2")
    with pytest.raises(NotImplementedError, match="S2"):
        p.compose(points(p, 2), points(p, 2))
    torch.testing.assert_close(s2.identity(dtype=DT), torch.tensor([1.0, 0, 0], dtype=DT))


# ----------------------------------------------------------------------------- chordal distances
@pytest.mark.parametrize("name", NAMES)
def test_chordal_sqdist_symmetric_zero_diagonal_pairwise(name):
    m = get_manifold(name)
    x, y = points(m, 30, seed=7), points(m, 20, seed=8)
    D = m.pairwise_chordal_sqdist(x, y)
    assert D.shape == (30, 20) and (D >= 0).all()
    torch.testing.assert_close(D, m.chordal_sqdist(x.unsqueeze(-2), y.unsqueeze(-3)))
    torch.testing.assert_close(D.T, m.pairwise_chordal_sqdist(y, x))
    assert m.chordal_sqdist(x, x).abs().max() < 1e-12
    assert m.pairwise_chordal_sqdist(x, x).diagonal().abs().max() < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_pairwise_sqdist_coords_is_the_log_map_norm(name):
    """The matmul forms (SO(3), spheres) equal the broadcast ‖logmap_coords‖² default, and the
    squared geodesic distance where both are defined."""
    m = get_manifold(name)
    x, y = points(m, 12, seed=3), points(m, 9, seed=4)
    D = m.pairwise_sqdist_coords(x, y)
    assert D.shape == (12, 9)
    v = m.logmap_coords(x[:, None].expand(-1, 9, -1), y[None].expand(12, -1, -1))
    torch.testing.assert_close(D, v.pow(2).sum(-1))
    if not isinstance(m, Product):
        torch.testing.assert_close(D, m.dist(x[:, None], y[None]).pow(2))


def test_chordal_closed_forms_and_so3_sign_invariance():
    s2, so3 = Sphere(2), SO3()
    x, y = points(s2, 40, seed=9), points(s2, 40, seed=10)
    torch.testing.assert_close(s2.chordal_sqdist(x, y), (x - y).pow(2).sum(-1))
    q, r = points(so3, 40, seed=11), points(so3, 40, seed=12)
    d = so3.chordal_sqdist(q, r)
    torch.testing.assert_close(d, 4 - 4 * (q * r).sum(-1) ** 2)
    for a, b in [(-q, r), (q, -r), (-q, -r)]:
        torch.testing.assert_close(so3.chordal_sqdist(a, b), d)
        torch.testing.assert_close(so3.dist(a, b), so3.dist(q, r))
    torch.testing.assert_close(
        so3.pairwise_chordal_sqdist(-q, r), so3.pairwise_chordal_sqdist(q, r)
    )
    assert so3.chordal_sqdist(q, -q).abs().max() < 1e-12  # q and −q are the same rotation


def test_product_per_factor_sqdists():
    m = get_manifold("T1xS2")
    x, y = points(m, 6, seed=13), points(m, 5, seed=14)
    per = m.pairwise_factor_sqdists(x, y)
    assert per.shape == (6, 5, 2)
    torch.testing.assert_close(per[..., 0], Torus(1).pairwise_chordal_sqdist(x[:, :1], y[:, :1]))
    torch.testing.assert_close(per[..., 1], Sphere(2).pairwise_chordal_sqdist(x[:, 1:], y[:, 1:]))
    torch.testing.assert_close(per.sum(-1), m.pairwise_chordal_sqdist(x, y))
    torch.testing.assert_close(
        m.factor_chordal_sqdists(x[:5], y).sum(-1), m.chordal_sqdist(x[:5], y)
    )


# ----------------------------------------------------------------------------- wrapped densities
def _normalisation(m: LatentManifold, sd: float, seed: int, n: int, kmax: int = 3):
    """Two unbiased estimates of ∫ q dV (both ≈ 1): E_uniform[q/u] and E_q[u/q].

    kmax = 3 suffices here: the first omitted preimage lies > 5 s.d. away even on SO(3)."""
    L = well_conditioned_tril(m.dim, sd, seed)
    mu = points(m, seed=seed)
    g = points(m, n, seed=seed + 1)
    lq = m.wrapped_log_prob(m.logmap_coords(mu, g), L, kmax)
    over_uniform = (lq - m.log_uniform()).exp().mean()
    v = torch.randn(n, m.dim, dtype=DT, generator=gen(seed + 2)) @ L.T
    gq = m.expmap_coords(mu, v)
    lq2 = m.wrapped_log_prob(m.logmap_coords(mu, gq), L, kmax)
    over_q = (m.log_uniform() - lq2).exp().mean()
    return float(over_uniform), float(over_q)


@pytest.mark.parametrize("name", COMPACT)
def test_wrapped_density_integrates_to_one(name):
    m = get_manifold(name)
    n = 20_000 if isinstance(m, Product | Torus) else 40_000  # tori: (2 kmax + 1)^d preimages
    # sd ≈ 1: the uniform-sample estimator (the singular k ≠ 0 focal terms are ~e^{-2π²} small)
    a, _ = _normalisation(m, 0.9, seed=20, n=n)
    assert abs(a - 1) < 0.02, a
    # sd ≈ 1.6: much of the mass wraps around (tests the sum over preimages), q-sample estimator
    _, b = _normalisation(m, 1.6, seed=30, n=n)
    assert abs(b - 1) < 0.02, b


def test_normalisation_test_detects_missing_wrapping():
    for name in ["S2", "SO3"]:
        _, b = _normalisation(get_manifold(name), 1.6, seed=30, n=40_000, kmax=0)
        assert abs(b - 1) > 0.05, (name, b)


def test_product_with_correlated_factors_integrates_to_one():
    m = get_manifold("T1xS2")
    L = well_conditioned_tril(3, 1.0, seed=40)
    L[1, 0] = L[2, 0] = 0.4  # correlations between the T1 and S2 coordinates
    assert not m.is_block_diagonal(L)
    mu = points(m, seed=41)
    g = points(m, 20_000, seed=42)
    lq = m.wrapped_log_prob(m.logmap_coords(mu, g), L, kmax=3)
    est = (lq - m.log_uniform()).exp().mean()
    assert abs(float(est) - 1) < 0.02


def test_product_block_diagonal_fast_path_equals_joint_sum():
    m = get_manifold("T1xS2")
    L = torch.zeros(3, 3, dtype=DT)
    L[0, 0] = 1.2
    L[1:, 1:] = well_conditioned_tril(2, 1.1, seed=43)
    v = 2 * torch.randn(25, 3, dtype=DT, generator=gen(44))
    assert m.is_block_diagonal(L)
    vk, nj = m.wrapped_preimages(v, 3)
    joint = torch.logsumexp(gaussian_log_prob(vk, L.unsqueeze(-3)) + nj, -1)
    torch.testing.assert_close(m.wrapped_log_prob(v, L, 3), joint)


def _torus_brute_force(v: torch.Tensor, L: torch.Tensor, kmax: int) -> torch.Tensor:
    """log Σ_{k ∈ {-kmax..kmax}ᵈ} N(v + 2πk; 0, L Lᵀ), one Gaussian per preimage, unwrapped v."""
    d = v.shape[-1]
    grid = torch.meshgrid(*[torch.arange(-kmax, kmax + 1, dtype=DT)] * d, indexing="ij")
    ks = torch.stack([g.reshape(-1) for g in grid], -1)
    lp = gaussian_log_prob(v.unsqueeze(-2) + 2 * math.pi * ks, L.unsqueeze(-3))
    return torch.logsumexp(lp, -1)


@HYP
@given(
    name=st.sampled_from(["T1", "T2", "T3", "T1xT1", "T1xT2"]),
    sd=st.floats(0.02, 2.5),
    shift=st.floats(0.0, 12.0),
    seed=st.integers(0, 10_000),
)
def test_torus_wrapped_log_prob_equals_the_long_sum(name, sd, shift, seed):
    """The wrapped Gaussian on tori keeps only the turns its s.d. needs (``Torus.wrap_range``) and
    wraps ``v`` first; it equals the sum over ±10–12 turns of the unwrapped ``v`` to rounding, for
    correlated covariances (the product's joint path), off-centre points and large s.d."""
    m = get_manifold(name)
    d = m.dim
    L = well_conditioned_tril(d, sd, seed=seed)
    v = torch.randn(30, d, dtype=DT, generator=gen(seed + 1)) @ L.T
    v = v + shift * torch.randn(30, d, dtype=DT, generator=gen(seed + 2))
    # the oracle's window must reach past the unwrapped v (|v| up to ~7 turns here) by the
    # Gaussian's own reach: ±12 turns (±10 on T³, 9261 preimages)
    expected = _torus_brute_force(v, L, kmax=12 if d < 3 else 10)
    torch.testing.assert_close(m.wrapped_log_prob(v, L, kmax=6), expected, rtol=1e-12, atol=1e-11)


@HYP
@given(
    name=st.sampled_from(["T1", "T2", "S2", "S3", "SO3", "R2", "T1xS2"]),
    sd=st.floats(0.05, 1.5),
    seed=st.integers(0, 10_000),
)
def test_wrapped_log_prob_scaled_equals_one_call_per_scale(name, sd, seed):
    """The transition densities of a Brownian walk over several gaps: the scaled variants
    (shared preimages on spheres and SO(3), one angle at a time on tori) equal the loop."""
    m = get_manifold(name)
    sds = sd * (0.5 + torch.rand(m.dim, dtype=DT, generator=gen(seed)))
    L = torch.diag_embed(sds)
    v = torch.randn(40, m.dim, dtype=DT, generator=gen(seed + 1)) * 1.5
    if isinstance(m, (SO3, Sphere)):  # inside the principal ball, where Log lands
        radius = math.pi / 2 if isinstance(m, SO3) else math.pi
        v = v * (0.99 * radius / v.norm(dim=-1, keepdim=True).clamp_min(radius))
    scales = torch.tensor([1.0, 2.0**0.5, 2.0, 3.0], dtype=DT)
    got = m.wrapped_log_prob_scaled(v, L, scales, kmax=5)
    assert got.shape == (4, 40)
    for k, s in enumerate(scales):
        torch.testing.assert_close(got[k], m.wrapped_log_prob(v, s * L, kmax=5),
                                   rtol=1e-10, atol=1e-10)


def test_torus_scaled_density_with_a_correlated_covariance_is_the_loop():
    m = Torus(2)
    L = torch.tensor([[0.4, 0.0], [0.2, 0.3]], dtype=DT)
    v = torch.randn(10, 2, dtype=DT, generator=gen(0))
    scales = torch.tensor([1.0, 2.0], dtype=DT)
    torch.testing.assert_close(m.wrapped_log_prob_scaled(v, L, scales),
                               torch.stack([m.wrapped_log_prob(v, s * L) for s in scales]))


def test_torus_wrap_range_grows_with_the_sd_and_respects_kmax():
    t = Torus(2)
    eye = torch.eye(2, dtype=DT)
    assert t.wrap_range(0.05 * eye) == 1
    assert t.wrap_range(0.99 * eye) == 1  # one turn each way up to σ ≈ 0.99 rad
    assert t.wrap_range(1.0 * eye) == 2
    assert t.wrap_range(torch.stack([0.1 * eye, 2.5 * eye])) == t.wrap_range(2.5 * eye) > 2
    assert t.wrap_range(100.0 * eye, kmax=5) == 5
    assert t.wrap_range(0.5 * eye, kmax=0) == 0
    with pytest.raises(ValueError, match="kmax"):
        t.wrap_range(eye, kmax=-1)
    # the bound: a dropped turn is below e^-40 of the kept one in that angle
    for sd in (0.3, 1.0, 2.0, 4.0):
        r = t.wrap_range(sd * eye, kmax=50)
        assert ((2 * r + 1) ** 2 - 1) * math.pi**2 / (2 * sd**2) >= 40.0
        assert r == 1 or ((2 * r - 1) ** 2 - 1) * math.pi**2 / (2 * sd**2) < 40.0


def test_gaussian_log_prob_shared_matches_one_solve_per_point():
    L = torch.stack([well_conditioned_tril(3, s, seed=70 + i) for i, s in enumerate((0.3, 2.0))])
    vk = torch.randn(5, 2, 7, 3, dtype=DT, generator=gen(72))
    torch.testing.assert_close(
        gaussian_log_prob_shared(vk, L), gaussian_log_prob(vk, L.unsqueeze(-3))
    )


@pytest.mark.parametrize("name,power", [("S2", 1), ("S3", 2), ("SO3", 2)])
def test_entropy_small_sigma_matches_gaussian_plus_jacobian(name, power):
    """H = E[−log q] ≈ H_gauss + E[log|J|], and E[log|J|] ≈ −(n−1) tr Σ / 6 for small Σ."""
    m = get_manifold(name)
    L = well_conditioned_tril(m.dim, 0.15, seed=50)
    mu = points(m, 100, seed=51)
    v = torch.randn(200, 100, m.dim, dtype=DT, generator=gen(52)) @ L.T
    g = m.expmap_coords(mu, v)
    lq = m.wrapped_log_prob(m.logmap_coords(mu, g), L)
    h_gauss = 0.5 * m.dim * math.log(2 * math.pi * math.e) + torch.log(torch.diagonal(L)).sum()
    delta = (gaussian_log_prob(v, L) - lq).mean()  # E[log|J|] (E[−log N] = H_gauss exactly)
    expected = -power * torch.trace(L @ L.T) / 6
    assert abs(float(delta - expected)) < 0.05 * abs(float(expected)) + 1e-4
    entropy = -lq.mean()
    assert abs(float(entropy - (h_gauss + expected))) < 0.03


@pytest.mark.parametrize("name", ["S2", "S3", "SO3"])
def test_wrapped_log_prob_stable_at_zero_and_matches_gaussian_for_tiny_sigma(name):
    m = get_manifold(name)
    L = 0.2 * torch.eye(m.dim, dtype=DT)
    v = torch.zeros(3, m.dim, dtype=DT, requires_grad=True)
    lp = m.wrapped_log_prob(v, L)
    (grad,) = torch.autograd.grad(lp.sum(), v)
    assert torch.isfinite(lp).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(lp, gaussian_log_prob(v, L).detach())
    small = torch.full((2, m.dim), 1e-9, dtype=DT)
    torch.testing.assert_close(m.wrapped_log_prob(small, L), gaussian_log_prob(small, L))
    x = torch.full((2, m.dim), 1e-9, dtype=torch.float32)
    assert torch.isfinite(m.wrapped_log_prob(x, L.float())).all()


@pytest.mark.parametrize("name", ["S2", "S3", "SO3", "T1xS2", "T2", "T1xT1"])
def test_gradcheck_wrapped_log_prob_and_expmap_coords(name):
    m = get_manifold(name)
    d = m.dim
    v = (0.7 * torch.randn(4, d, dtype=DT, generator=gen(60))).requires_grad_(True)
    L = well_conditioned_tril(d, 0.8, seed=61).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, L: m.wrapped_log_prob(v, L), (v, L))
    mu = points(m, 4, seed=62).requires_grad_(True)
    assert torch.autograd.gradcheck(m.expmap_coords, (mu, v))
    g = points(m, 4, seed=63).requires_grad_(True)
    assert torch.autograd.gradcheck(m.logmap_coords, (mu, g))


@pytest.mark.parametrize("name", ["S2", "S3", "SO3"])
def test_gradients_finite_at_v_zero_and_coincident_points(name):
    m = get_manifold(name)
    mu = points(m, 3, seed=64).requires_grad_(True)
    v = torch.zeros(3, m.dim, dtype=DT, requires_grad=True)
    g = m.expmap_coords(mu, v)
    grads = torch.autograd.grad(g.sum(), [mu, v])
    assert all(torch.isfinite(t).all() for t in grads)
    out = m.logmap_coords(mu, mu.detach().clone().requires_grad_(True))
    assert torch.isfinite(torch.autograd.grad(out.sum(), mu)[0]).all()


# --------------------------------------------------------------------------------- optimisation
@pytest.mark.parametrize("name", ["S2", "S3", "SO3", "T1xS2"])
def test_riemannian_adam_converges_and_stays_on_manifold(name):
    m = get_manifold(name)
    target = points(m, 8, seed=70)
    x = geoopt.ManifoldParameter(points(m, 8, seed=71), manifold=m)
    opt = geoopt.optim.RiemannianAdam([x], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss = m.chordal_sqdist(x, target).sum()
        loss.backward()
        opt.step()
    assert float(m.chordal_sqdist(x.detach(), target).max()) < 1e-4
    m.validate(x.detach(), atol=1e-8)


# ----------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("name", ["S2", "S3", "SO3", "T1xS2"])
def test_validation_errors_name_the_problem(name):
    m = get_manifold(name)
    x = points(m, 5)
    m.validate(x)
    with pytest.raises(ValueError, match="trailing dimension"):
        m.validate(torch.zeros(5, m.ambient_dim + 1, dtype=DT))
    bad = x.clone()
    bad[2, -1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m.validate(bad)
    with pytest.raises(ValueError, match="not on .*unit (vectors|quaternions)"):
        m.validate(torch.cat([x[:, :-3], 2 * x[:, -3:]], -1))
    with pytest.raises(ValueError, match="trailing dimension"):
        m.validate_coords(torch.zeros(5, m.dim + 1, dtype=DT))
    with pytest.raises(ValueError, match="scale_tril has shape"):
        m.wrapped_log_prob(torch.zeros(5, m.dim, dtype=DT), torch.eye(m.dim + 1, dtype=DT))
    with pytest.raises(ValueError, match="trailing dimension"):
        m.wrapped_log_prob(torch.zeros(5, m.dim + 1, dtype=DT), torch.eye(m.dim, dtype=DT))


def test_random_shapes_projx_and_tangent_checks():
    for m in [Sphere(2), SO3(), get_manifold("T1xS3")]:
        assert m.random(3, 4).shape == m.random((3, 4)).shape == (3, 4, m.ambient_dim)
        assert m.identity(2, dtype=DT).shape == (2, m.ambient_dim)
        y = m.projx(3 * torch.randn(7, m.ambient_dim, dtype=DT, generator=gen(80)))
        m.validate(y, atol=1e-12)
        u = m.proju(y, torch.randn(7, m.ambient_dim, dtype=DT, generator=gen(81)))
        assert m.check_vector_on_tangent(y, u, atol=1e-10)
    assert (SO3().random(100, dtype=DT)[..., 0] >= 0).all()
