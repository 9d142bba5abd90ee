"""The rotation group SO(3) as unit quaternions ``q ≡ −q``.

Hand-written because geoopt has no SO(3). Points are unit quaternions ``(..., 4)`` (scalar first,
Hamilton product); ``q`` and ``−q`` are the same rotation and every function here is invariant
under either sign.

Conventions (DESIGN.md §2)
--------------------------
* ``Exp(v) = (cos‖v‖, sin‖v‖ v/‖v‖)`` for ``v ∈ R³``: the rotation about ``v/‖v‖`` by the angle
  ``φ = 2‖v‖``; ``expmap_coords(μ, v) = μ ⊗ Exp(v)``.
* ``logmap_coords(μ, g) = Log(±μ⁻¹ ⊗ g)`` with the sign giving a non-negative scalar part, so
  ``‖v‖ = φ/2 ∈ [0, π/2]``.
* Metric and volume are those induced by S³ (locally isometric double cover): geodesic distance
  ``arccos|qᵀq'| = φ/2``; Haar volume ``π²`` (half of |S³| = 2π²), uniform log-density ``−log π²``.
* Chordal squared distance ``4(1 − (qᵀq')²) = 2(1 − cos φ)``.
* Wrapped density of ``μ ⊗ Exp(x)``, ``x ~ N(0, Σ)``: the preimages of ``[Exp(v)]`` are
  ``v_k = (‖v‖ + πk) v/‖v‖`` (``k`` odd: the antipodal quaternion) and
  ``|J(v_k)|⁻¹ = φ_k² / (2 − 2 cos φ_k) = (‖v_k‖ / sin‖v_k‖)²`` with ``φ_k = 2‖v_k‖``:
  ``log q(g) = log Σ_{|k| ≤ kmax} N(v_k; 0, Σ) φ_k² / (2 − 2 cos φ_k)``, a density w.r.t. the Haar
  volume of total ``π²`` that integrates to 1.
"""

from __future__ import annotations

import math

import torch

from mgplvm.manifolds.base import LatentManifold, check_tangent_gaussian
from mgplvm.manifolds.sphere import (
    _size,
    _unit_random,
    qconj,
    qexp,
    qlog,
    qmul,
    radial_preimages,
    radial_wrapped_log_prob,
    radial_wrapped_log_prob_scaled,
    sphere_exp,
    sphere_log,
)

__all__ = ["SO3"]


def _sign(x: torch.Tensor) -> torch.Tensor:
    """+1 for ``x >= 0``, −1 otherwise (never 0)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class SO3(LatentManifold):
    """SO(3) as unit quaternions: ``ambient_dim = 4``, ``dim = 3``, a (non-commutative) group.

    See the module docstring for the ``Exp`` convention (rotation angle ``φ = 2‖v‖``), the metric,
    the chordal distance and the wrapped density.
    """

    is_group = True

    def __init__(self):
        super().__init__()
        self.dim = 3
        self.ambient_dim = 4
        self.name = "SO3"

    # geoopt primitives -------------------------------------------------------------------------
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        dev = (x.norm(dim=-1) - 1).abs()
        if dev.numel() and not bool((dev <= atol).all()):
            return False, (
                f"points must be unit quaternions; max |‖q‖ − 1| = {dev.max().item():.3g} > "
                f"{atol:.3g} (use projx to normalise)"
            )
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        dev = (x * u).sum(-1).abs()
        if dev.numel() and not bool((dev <= atol).all()):
            return False, f"tangent vectors must satisfy qᵀu = 0; max |qᵀu| = {dev.max():.3g}"
        return True, None

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (the sign is kept, so optimisation paths stay continuous)."""
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u - (x * u).sum(-1, keepdim=True) * x

    egrad2rgrad = proju

    def inner(self, x, u, v=None, *, keepdim=False):
        v = u if v is None else v
        return (u * v).sum(-1, keepdim=keepdim)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return sphere_exp(x, u)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.projx(sphere_exp(x, u))

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Log at ``x`` of the representative ``±y`` nearest to ``x`` (norm ``φ/2 <= π/2``)."""
        return sphere_log(x, _sign((x * y).sum(-1, keepdim=True)) * y)

    def transp(self, x, y, v):
        return self.proju(y, v)

    def dist(self, x, y, *, keepdim=False):
        """Geodesic distance ``arccos|xᵀy| = φ/2`` (half the rotation angle), computed stably."""
        y = _sign((x * y).sum(-1, keepdim=True)) * y
        return 2 * torch.atan2(
            (x - y).norm(dim=-1, keepdim=keepdim), (x + y).norm(dim=-1, keepdim=keepdim)
        )

    # sampling ----------------------------------------------------------------------------------
    def random(self, *size, dtype=None, device=None, generator=None) -> torch.Tensor:
        """Haar-uniform rotations (uniform on S³), returned with ``q₀ >= 0``."""
        q = _unit_random(_size(size), 4, dtype, device, generator)
        return _sign(q[..., :1]) * q

    random_uniform = random

    def identity(self, *size, dtype=None, device=None) -> torch.Tensor:
        e = torch.zeros(*_size(size), 4, dtype=dtype, device=device)
        e[..., 0] = 1
        return e

    # Lie structure ----------------------------------------------------------------------------
    def expmap_coords(self, mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``μ ⊗ Exp(v)``, ``Exp(v) = (cos‖v‖, sin‖v‖ v/‖v‖)`` (rotation angle ``2‖v‖``)."""
        return qmul(mu, qexp(v))

    def logmap_coords(self, mu: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``Log(±μ⁻¹ ⊗ g)`` with the sign making the scalar part >= 0: ``‖v‖ ∈ [0, π/2]``."""
        q = qmul(qconj(mu), g)
        return qlog(_sign(q[..., :1]) * q)

    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Quaternion (Hamilton) product = composition of rotations."""
        return qmul(g, h)

    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        return qconj(g)

    # kernels ----------------------------------------------------------------------------------
    def chordal_sqdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``4(1 − (xᵀy)²)`` (invariant to ``q → −q``), clamped at 0."""
        return (4 - 4 * (x * y).sum(-1).pow(2)).clamp_min(0)

    def pairwise_chordal_sqdist(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return (4 - 4 * (x1 @ x2.transpose(-1, -2)).pow(2)).clamp_min(0)

    def pairwise_sqdist_coords(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``ρ²`` with ``ρ = atan2(√(1 − c²), |c|)``, ``c = x1ᵢᵀ x2ⱼ`` (half the rotation angle)."""
        c = (x1 @ x2.transpose(-1, -2)).abs().clamp_max(1)
        return torch.atan2((1 - c * c).clamp_min(0).sqrt(), c).pow(2)

    # densities --------------------------------------------------------------------------------
    def log_volume(self) -> float:
        """``log π²`` (Haar volume with the metric induced by S³)."""
        return 2 * math.log(math.pi)

    def wrapped_preimages(self, v: torch.Tensor, kmax: int = 5):
        """Preimages ``v_k = (‖v‖ + πk) v/‖v‖`` ``(..., K, 3)`` and ``−log|J(v_k)|``
        ``(..., K)``."""
        return radial_preimages(v, math.pi, 2, kmax)

    def wrapped_log_prob(
        self, v: torch.Tensor, scale_tril: torch.Tensor, kmax: int = 5
    ) -> torch.Tensor:
        """``log Σ_k N(v_k; 0, Σ) φ_k²/(2 − 2cos φ_k)``, ``v_k = (‖v‖ + πk) v/‖v‖``,
        ``φ_k = 2‖v_k‖``.

        ``v (..., 3)``, ``scale_tril (..., 3, 3)`` -> ``(...)``; w.r.t. the Haar volume ``π²``.
        """
        check_tangent_gaussian(self, v, scale_tril)
        return radial_wrapped_log_prob(v, scale_tril, math.pi, 2, kmax)

    def wrapped_log_prob_scaled(self, v, scale_tril, scales, kmax: int = 5):
        """One pass per scale over the shared preimages (:func:`radial_wrapped_log_prob_scaled`)."""
        check_tangent_gaussian(self, v, scale_tril)
        scales = torch.as_tensor(scales, dtype=v.dtype, device=v.device).reshape(-1)
        return radial_wrapped_log_prob_scaled(v, scale_tril, scales, math.pi, 2, kmax)
