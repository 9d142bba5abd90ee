"""The d-torus Tᵈ = (S¹)ᵈ as angles.

Hand-written because geoopt has no torus. Points are angles ``(..., d)`` wrapped to [-π, π); the
group product is angle addition, Exp at the identity is wrapping, and the metric is the flat one
inherited from Rᵈ, so geoopt's Riemannian optimisers act like their Euclidean versions followed by
wrapping.
"""

from __future__ import annotations

import itertools
import math

import torch

from mgplvm.manifolds.base import (
    _LOG_2PI,
    LatentManifold,
    check_tangent_gaussian,
    shifted_gaussian_logsumexp,
)

__all__ = ["Torus", "wrap_angle"]

#: a dropped wrapping term is below e^{-_WRAP_NATS} of a kept one (Torus.wrap_range)
_WRAP_NATS = 40.0


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Wrap angles to [-π, π)."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


class Torus(LatentManifold):
    """Tᵈ as ``d`` angles in [-π, π). ``ambient_dim = dim = d``; a commutative group."""

    is_group = True

    def __init__(self, d: int = 1):
        super().__init__()
        if int(d) < 1:
            raise ValueError(f"Torus dimension must be >= 1, got {d}")
        self.d = self.dim = self.ambient_dim = int(d)
        self.name = f"T{self.d}"

    # geoopt primitives -------------------------------------------------------------------------
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        tol = atol + 1e-6
        inside = (x >= -math.pi - tol) & (x <= math.pi + tol)
        if not bool(inside.all()):
            return False, "angles must lie in [-π, π] (use Torus.projx to wrap them)"
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        return True, None

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        return wrap_angle(x)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u.expand(torch.broadcast_shapes(x.shape, u.shape))

    egrad2rgrad = proju

    def inner(self, x, u, v=None, *, keepdim=False):
        v = u if v is None else v
        return (u * v).sum(-1, keepdim=keepdim)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return wrap_angle(x + u)

    retr = expmap

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return wrap_angle(y - x)

    def transp(self, x, y, v):
        return v

    def dist(self, x, y, *, keepdim=False):
        return wrap_angle(y - x).norm(dim=-1, keepdim=keepdim)

    # sampling ----------------------------------------------------------------------------------
    def random(self, *size, dtype=None, device=None, generator=None) -> torch.Tensor:
        size = size[0] if len(size) == 1 and isinstance(size[0], (tuple, torch.Size)) else size
        u = torch.rand(*size, self.d, dtype=dtype, device=device, generator=generator)
        return (2 * u - 1) * math.pi

    random_uniform = random

    def identity(self, *size, dtype=None, device=None) -> torch.Tensor:
        return torch.zeros(*size, self.d, dtype=dtype, device=device)

    # Lie structure ----------------------------------------------------------------------------
    def expmap_coords(self, mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return wrap_angle(mu + v)

    def logmap_coords(self, mu: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return wrap_angle(g - mu)

    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return wrap_angle(g + h)

    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        return wrap_angle(-g)

    # kernels ----------------------------------------------------------------------------------
    def chordal_sqdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σᵢ 2(1 − cos(θᵢ − θ'ᵢ)) = squared distance of the points embedded in (R²)ᵈ."""
        return (2 - 2 * torch.cos(x - y)).sum(-1)

    def pairwise_chordal_sqdist(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        # 2d − 2 Σᵢ (cos θᵢ cos θ'ᵢ + sin θᵢ sin θ'ᵢ): one matmul over the (cos, sin) embedding
        e1 = torch.cat([torch.cos(x1), torch.sin(x1)], -1)
        e2 = torch.cat([torch.cos(x2), torch.sin(x2)], -1)
        return (2 * self.d - 2 * e1 @ e2.transpose(-1, -2)).clamp_min(0)

    # densities --------------------------------------------------------------------------------
    def log_volume(self) -> float:
        return self.d * math.log(2 * math.pi)

    def turns(self, r: int, dtype=None, device=None) -> torch.Tensor:
        """The shifts ``2πk`` for ``k ∈ {-r..r}ᵈ`` (the last angle fastest): ``((2r + 1)ᵈ, d)``."""
        ks = torch.tensor(
            list(itertools.product(range(-r, r + 1), repeat=self.d)), dtype=dtype, device=device
        )
        return 2 * math.pi * ks

    def wrap_range(self, scale_tril: torch.Tensor, kmax: int = 5) -> int:
        """Wrapping terms per angle that :meth:`wrapped_log_prob` needs: the smallest ``k ≥ 1``,
        at most ``kmax``, with ``(2k + 1)² π² − π² ≥ 2·_WRAP_NATS·σ²`` for the largest marginal
        s.d. ``σ`` in the batch ``scale_tril (..., d, d)``.

        With the angles wrapped to [-π, π), a preimage that shifts angle ``i`` by more than ``k``
        turns lies at least ``(2k + 1)π`` from the centre in that angle, against at most ``π`` for
        the kept preimage that differs from it only there: for a diagonal covariance its term is
        below ``e^{-_WRAP_NATS}`` of that one, so dropping it is exact in double precision.
        ``σ`` ≤ 0.99 rad keeps one turn each way (3ᵈ terms instead of ``(2 kmax + 1)ᵈ``).
        """
        kmax = int(kmax)
        if kmax < 0:
            raise ValueError(f"kmax must be >= 0, got {kmax}")
        if kmax == 0 or scale_tril.numel() == 0:
            return kmax
        var = scale_tril.detach().pow(2).sum(-1).max()  # largest diagonal entry of L Lᵀ
        if not bool(torch.isfinite(var)):
            return kmax
        # smallest k with (2k + 1)² ≥ 1 + 2·_WRAP_NATS·σ²/π²
        need = (math.sqrt(1 + 2 * _WRAP_NATS * float(var) / math.pi**2) - 1) / 2
        return min(kmax, max(1, math.ceil(need - 1e-12)))

    def wrapped_log_prob(
        self, v: torch.Tensor, scale_tril: torch.Tensor, kmax: int = 5
    ) -> torch.Tensor:
        """Wrapped Gaussian on Tᵈ: log Σ_k N(v + 2πk; 0, Σ) (J = 1), ``v (..., d)``,
        ``scale_tril (..., d, d)`` -> ``(...)``.

        ``v`` is wrapped to [-π, π) first and ``k`` runs over ``{-r..r}ᵈ`` with
        ``r = wrap_range(scale_tril, kmax) ≤ kmax``: the omitted turns are below double precision
        (:meth:`wrap_range`). One triangular solve per point covers all the shifts,
        ``L⁻¹(v + 2πk) = L⁻¹v + 2π L⁻¹k``.
        """
        check_tangent_gaussian(self, v, scale_tril)
        r = self.wrap_range(scale_tril, kmax)
        shifts = self.turns(r, dtype=v.dtype, device=v.device)
        return shifted_gaussian_logsumexp(wrap_angle(v), shifts, scale_tril)

    def wrapped_log_prob_scaled(self, v, scale_tril, scales, kmax: int = 5):
        """With a diagonal ``scale_tril`` the wrapped Gaussian is a product over the angles:
        ``Σ_i log Σ_k N(v_i + 2πk; 0, (s σ_i)²)``, with each scale's own :meth:`wrap_range`
        (``d (2r + 1)`` terms per point instead of ``(2r + 1)ᵈ``). Else the loop."""
        check_tangent_gaussian(self, v, scale_tril)
        scales = torch.as_tensor(scales, dtype=v.dtype, device=v.device).reshape(-1)
        sd = torch.diagonal(scale_tril)
        if not bool(torch.equal(scale_tril, torch.diag_embed(sd))):
            return super().wrapped_log_prob_scaled(v, scale_tril, scales, kmax)
        w = wrap_angle(v).unsqueeze(-1)  # (..., d, 1)
        out = []
        for s in scales:
            r = self.wrap_range(s * scale_tril, kmax)
            turns = 2 * math.pi * torch.arange(-r, r + 1, dtype=v.dtype, device=v.device)
            sig = (s * sd).abs().unsqueeze(-1)  # (d, 1)
            z = (w + turns) / sig  # (..., d, 2r + 1)
            lp = torch.logsumexp(-0.5 * z.pow(2), -1) - sig[..., 0].log() - 0.5 * _LOG_2PI
            out.append(lp.sum(-1))
        return torch.stack(out)
