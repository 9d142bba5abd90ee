"""align(): known symmetries of each manifold are recovered exactly."""

import math

import pytest
import torch

import mgplvm.manifolds as manifolds
from mgplvm.alignment import align, angle_error
from mgplvm.manifolds import Euclid, Torus, wrap_angle

pytestmark = pytest.mark.usefixtures("float64_one_thread")


def _exact(al, truth, tol=1e-9):
    assert al.median_error < tol and al.mean_error < tol
    assert al.aligned.shape == truth.shape


def test_ring_rotation_and_reflection():
    m = Torus(1)
    truth = m.random(2, 50)
    latents = wrap_angle(-truth + 1.3)
    al = align(latents, truth, m)
    _exact(al, truth)
    assert al.transform["reflection"] == [-1]
    assert al.errors.shape == (2, 50, 1)  # per point and angle
    torch.testing.assert_close(wrap_angle(al.inverse(truth) - latents), torch.zeros_like(truth))
    torch.testing.assert_close(wrap_angle(al.apply(latents) - truth), torch.zeros_like(truth))


def test_torus_swap_reflection_translation():
    m = Torus(2)
    truth = m.random(1, 60)
    latents = wrap_angle(torch.stack([truth[..., 1] - 0.4, -truth[..., 0] + 2.0], -1))
    al = align(latents, truth, m)
    _exact(al, truth)
    assert al.transform["permutation"] == [1, 0]
    assert al.errors.shape == (1, 60, 2) and len(al.per_dim_median) == 2
    torch.testing.assert_close(wrap_angle(al.inverse(truth) - latents), torch.zeros_like(truth))


def test_torus_errors_are_wrapped_angles():
    m = Torus(1)
    truth = m.random(1, 200)
    noise = 0.1 * torch.randn_like(truth)
    al = align(wrap_angle(truth + noise + 2.0), truth, m)
    # the best translation absorbs the noise mean; errors are |wrap(aligned − truth)|
    torch.testing.assert_close(al.errors, angle_error(al.aligned, truth))
    assert abs(al.median_error - float((noise - noise.mean()).abs().median())) < 0.02


def _random_orthogonal(n, reflect):
    Q, _ = torch.linalg.qr(torch.randn(n, n))
    if reflect and torch.det(Q) > 0 or not reflect and torch.det(Q) < 0:
        Q[:, 0] = -Q[:, 0]
    return Q


@pytest.mark.parametrize("reflect", [False, True])
def test_sphere_procrustes(reflect):
    if not hasattr(manifolds, "Sphere"):
        pytest.skip("no Sphere manifold")
    m = manifolds.Sphere(2)
    truth = m.random(1, 80)
    R = _random_orthogonal(3, reflect)
    latents = truth @ R  # truth = latents @ Rᵀ
    al = align(latents, truth, m)
    _exact(al, truth, 1e-6)  # arccos near 1 loses half the digits
    torch.testing.assert_close(al.inverse(truth), latents)


def test_so3_left_right_multiplication_and_signs():
    if not hasattr(manifolds, "SO3"):
        pytest.skip("no SO3 manifold")
    m = manifolds.SO3()
    truth = m.random(1, 100)
    a = m.random(())
    b = m.random(())
    latents = m.compose(m.compose(a.expand_as(truth), truth), b.expand_as(truth))
    signs = torch.where(torch.rand(1, 100, 1) < 0.5, -1.0, 1.0)
    al = align(latents * signs, truth, m)
    _exact(al, truth, 1e-6)


def test_euclid_affine_and_similarity():
    m = Euclid(2)
    truth = torch.randn(1, 40, 2)
    A = torch.tensor([[2.0, 0.5], [-0.3, 0.7]])
    b = torch.tensor([1.0, -2.0])
    latents = (truth - b) @ torch.linalg.inv(A)  # truth = latents A + b
    al = align(latents, truth, m)
    _exact(al, truth)
    torch.testing.assert_close(al.inverse(truth), latents)
    R = _random_orthogonal(2, reflect=True)
    lat2 = 0.5 * truth @ R + 3.0
    al2 = align(lat2, truth, m, euclid="procrustes")
    _exact(al2, truth)
    torch.testing.assert_close(al2.inverse(truth), lat2)
    with pytest.raises(ValueError, match="euclid"):
        align(lat2, truth, m, euclid="shear")


def test_product_factors_aligned_separately():
    if not hasattr(manifolds, "Product"):
        pytest.skip("no Product manifold")
    m = manifolds.Product(Torus(1), Euclid(1))
    truth = torch.cat([Torus(1).random(1, 30), torch.randn(1, 30, 1)], -1)
    latents = torch.cat([wrap_angle(-truth[..., :1] + 0.5), 3 * truth[..., 1:] - 1], -1)
    al = align(latents, truth, m)
    _exact(al, truth)
    assert al.errors.shape == (1, 30, 2)


def test_input_errors_and_numpy():
    m = Torus(1)
    with pytest.raises(ValueError, match="differ in shape"):
        align(torch.zeros(1, 5, 1), torch.zeros(1, 6, 1), m)
    with pytest.raises(ValueError, match="trailing dimension"):
        align(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2), m)
    truth = m.random(1, 10)
    al = align(truth.numpy(), truth.numpy(), m)
    assert al.median_error < 1e-12
    assert math.isclose(float(angle_error(torch.tensor(3.0), torch.tensor(-3.0))),
                        2 * math.pi - 6.0, rel_tol=1e-12)


def test_untracked_truth_points_are_left_out():
    """NaN truth (untracked bins of a real recording): the symmetry is fitted on the others,
    their errors are NaN and not counted."""
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(1, 200, 1, generator=g, dtype=torch.float64) * 6 - 3
    latents = -truth + 0.7  # a reflection and a rotation
    truth_nan = truth.clone()
    truth_nan[0, 50:80] = float("nan")
    al = align(latents, truth_nan, Torus(1))
    assert al.median_error == pytest.approx(0.0, abs=1e-9)
    assert torch.isnan(al.errors[0, 50:80]).all() and torch.isfinite(al.errors[0, :50]).all()
    torch.testing.assert_close(al.aligned, wrap_angle(truth), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="every truth point is NaN"):
        align(latents, torch.full_like(truth, float("nan")), Torus(1))
    with pytest.raises(ValueError, match="latents contain NaN"):
        align(truth_nan, truth, Torus(1))
