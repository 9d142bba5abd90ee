"""Products of manifolds, e.g. T¹ × R¹ or T¹ × S².

Points are concatenations of the factors' ambient coordinates and tangent coordinates are
concatenations of the factors' tangent coordinates (in factor order). Everything acts factor-wise:
the chordal squared distance is the sum of the factors' (kernels can put one lengthscale on each
factor, see :func:`mgplvm.kernels.factor_sqdists`), the uniform log-density is the sum of the
factors', and the group operations exist when every factor is a group.

The wrapped density of ``x ~ N(0, Σ)`` pushed through the factor-wise ``Exp`` sums over the product
of the factors' preimage sets with ``|J| = Π_f |J_f|``. With a block-diagonal ``Σ`` (one block per
factor) this is the sum of the factors' wrapped log-densities (fast path); with correlations across
factors the joint sum over all ``Π_f K_f`` preimage combinations is evaluated (exact, slower).
"""

from __future__ import annotations

import itertools
import math

import torch

from mgplvm.manifolds.base import (
    LatentManifold,
    check_tangent_gaussian,
    gaussian_log_prob_shared,
)
from mgplvm.manifolds.euclid import Euclid
from mgplvm.manifolds.torus import Torus, wrap_angle

__all__ = ["Product"]


def _preimages(factor: LatentManifold, v: torch.Tensor, kmax: int):
    """``(v_k (..., K, d), −log|J(v_k)| (..., K))`` of one factor."""
    if hasattr(factor, "wrapped_preimages"):
        return factor.wrapped_preimages(v, kmax)
    if isinstance(factor, Torus):  # angles wrapped to [-π, π) first, as Torus.wrapped_log_prob
        vk = wrap_angle(v).unsqueeze(-2) + factor.turns(kmax, dtype=v.dtype, device=v.device)
    elif isinstance(factor, Euclid):
        vk = v.unsqueeze(-2)
    else:
        raise NotImplementedError(
            f"{factor!r} has no wrapped_preimages(v, kmax): cannot evaluate a product density "
            "with correlations across factors"
        )
    return vk, torch.zeros(vk.shape[:-1], dtype=v.dtype, device=v.device)


class Product(LatentManifold):
    """Product manifold ``M₁ × … × M_F`` of :class:`LatentManifold` factors.

    ``Product(Torus(1), Sphere(2))``: points ``(..., 1 + 3)``, tangent coordinates ``(..., 1 + 2)``.
    Nested products are flattened. ``factors`` holds the factors (kernels read it for ARD);
    ``split(x)`` / ``split_coords(v)`` cut ambient / tangent coordinates into per-factor pieces.
    """

    def __init__(self, *factors: LatentManifold):
        super().__init__()
        if len(factors) == 1 and isinstance(factors[0], (list, tuple)):
            factors = tuple(factors[0])
        flat: list[LatentManifold] = []
        for f in factors:
            if isinstance(f, Product):
                flat.extend(f.factors)
            elif isinstance(f, LatentManifold):
                flat.append(f)
            else:
                raise TypeError(
                    f"Product factors must be LatentManifold instances, got {type(f).__name__}"
                )
        if not flat:
            raise ValueError("Product needs at least one factor")
        self.factors = tuple(flat)
        self.ambient_dims = tuple(f.ambient_dim for f in flat)
        self.dims = tuple(f.dim for f in flat)
        self.ambient_dim = sum(self.ambient_dims)
        self.dim = sum(self.dims)
        self.is_group = all(f.is_group for f in flat)
        self.is_compact = all(f.is_compact for f in flat)
        self.name = "x".join(f.name for f in flat)

    # splitting ---------------------------------------------------------------------------------
    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-factor ambient coordinates of ``x (..., ambient_dim)``."""
        return torch.split(x, self.ambient_dims, dim=-1)

    def split_coords(self, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-factor tangent coordinates of ``v (..., dim)``."""
        return torch.split(v, self.dims, dim=-1)

    def _map(self, fn: str, *tensors: torch.Tensor, coords: tuple[bool, ...] | None = None):
        coords = coords or (False,) * len(tensors)
        parts = [
            self.split_coords(t) if c else self.split(t)
            for t, c in zip(tensors, coords, strict=True)
        ]
        return [getattr(f, fn)(*args) for f, *args in zip(self.factors, *parts, strict=True)]

    def _cat(self, fn: str, *tensors: torch.Tensor, coords=None) -> torch.Tensor:
        outs = self._map(fn, *tensors, coords=coords)
        shape = torch.broadcast_shapes(*(o.shape[:-1] for o in outs))
        return torch.cat([o.expand(*shape, o.shape[-1]) for o in outs], -1)

    # geoopt primitives -------------------------------------------------------------------------
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        for f, xf in zip(self.factors, self.split(x), strict=True):
            ok, reason = f._check_point_on_manifold(xf, atol=atol, rtol=rtol)
            if not ok:
                return False, f"factor {f!r}: {reason}"
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        for f, xf, uf in zip(self.factors, self.split(x), self.split(u), strict=True):
            ok, reason = f._check_vector_on_tangent(xf, uf, atol=atol, rtol=rtol)
            if not ok:
                return False, f"factor {f!r}: {reason}"
        return True, None

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        return self._cat("projx", x)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._cat("proju", x, u)

    def egrad2rgrad(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._cat("egrad2rgrad", x, u)

    def inner(self, x, u, v=None, *, keepdim=False):
        v = u if v is None else v
        parts = zip(self.factors, self.split(x), self.split(u), self.split(v), strict=True)
        return sum(f.inner(xf, uf, vf, keepdim=keepdim) for f, xf, uf, vf in parts)

    def component_inner(self, x, u, v=None):
        """Each factor's inner product repeated over that factor's ambient coordinates (so that
        :class:`geoopt.optim.RiemannianAdam` keeps one second-moment estimate per factor)."""
        v = u if v is None else v
        outs = []
        for f, xf, uf, vf in zip(
            self.factors, self.split(x), self.split(u), self.split(v), strict=True
        ):
            ip = f.inner(xf, uf, vf, keepdim=True)
            outs.append(ip.expand(*ip.shape[:-1], f.ambient_dim))
        shape = torch.broadcast_shapes(*(o.shape[:-1] for o in outs))
        return torch.cat([o.expand(*shape, o.shape[-1]) for o in outs], -1)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._cat("expmap", x, u)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._cat("retr", x, u)

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._cat("logmap", x, y)

    def transp(self, x, y, v):
        return self._cat("transp", x, y, v)

    def dist(self, x, y, *, keepdim=False):
        parts = zip(self.factors, self.split(x), self.split(y), strict=True)
        return sum(f.dist(xf, yf, keepdim=keepdim).pow(2) for f, xf, yf in parts).sqrt()

    # sampling ----------------------------------------------------------------------------------
    def random(self, *size, dtype=None, device=None, generator=None) -> torch.Tensor:
        """Factor-wise ``random`` (uniform on compact factors), concatenated."""
        return torch.cat(
            [
                f.random(*size, dtype=dtype, device=device, generator=generator)
                for f in self.factors
            ],
            -1,
        )

    random_uniform = random

    def identity(self, *size, dtype=None, device=None) -> torch.Tensor:
        return torch.cat([f.identity(*size, dtype=dtype, device=device) for f in self.factors], -1)

    # Lie structure ----------------------------------------------------------------------------
    def expmap_coords(self, mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._cat("expmap_coords", mu, v, coords=(False, True))

    def logmap_coords(self, mu: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self._cat("logmap_coords", mu, g)

    def _require_group(self):
        if not self.is_group:
            non = ", ".join(repr(f) for f in self.factors if not f.is_group)
            raise NotImplementedError(f"{self!r} is not a group: factor(s) {non} are not groups")

    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self._require_group()
        return self._cat("compose", g, h)

    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        self._require_group()
        return self._cat("inverse", g)

    # kernels ----------------------------------------------------------------------------------
    def factor_chordal_sqdists(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-factor elementwise chordal squared distances ``(..., n_factors)``."""
        return torch.stack(self._map("chordal_sqdist", x, y), -1)

    def pairwise_factor_sqdists(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Per-factor pairwise chordal squared distances ``(..., n, m, n_factors)``."""
        outs = [
            f.pairwise_chordal_sqdist(a, b)
            for f, a, b in zip(self.factors, self.split(x1), self.split(x2), strict=True)
        ]
        return torch.stack(torch.broadcast_tensors(*outs), -1)

    def chordal_sqdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum of the factors' chordal squared distances."""
        return sum(self._map("chordal_sqdist", x, y))

    def pairwise_chordal_sqdist(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return sum(
            f.pairwise_chordal_sqdist(a, b)
            for f, a, b in zip(self.factors, self.split(x1), self.split(x2), strict=True)
        )

    # densities --------------------------------------------------------------------------------
    def log_volume(self) -> float:
        """Sum of the factors' log-volumes (raises if a factor is not compact)."""
        return sum(f.log_volume() for f in self.factors)

    def _offsets(self) -> list[int]:
        return [0, *itertools.accumulate(self.dims)]

    def is_block_diagonal(self, scale_tril: torch.Tensor) -> bool:
        """Whether every entry of ``scale_tril`` outside the factor blocks is exactly 0."""
        off = self._offsets()
        with torch.no_grad():
            for i in range(1, len(self.factors)):
                if bool((scale_tril[..., off[i] :, off[i - 1] : off[i]] != 0).any()):
                    return False
                if bool((scale_tril[..., off[i - 1] : off[i], off[i] :] != 0).any()):
                    return False
        return True

    def wrapped_preimages(
        self, v: torch.Tensor, kmax: int = 5, scale_tril: torch.Tensor | None = None
    ):
        """All combinations of the factors' preimages: ``(..., Π_f K_f, dim)`` and
        ``−log|J| = Σ_f −log|J_f|`` ``(..., Π_f K_f)``. With ``scale_tril``, a torus factor keeps
        only the turns its block of the covariance needs (:meth:`Torus.wrap_range`)."""
        vks, njs = [], []
        off = self._offsets()
        for i, (f, vf) in enumerate(zip(self.factors, self.split_coords(v), strict=True)):
            kf = kmax
            if scale_tril is not None and isinstance(f, Torus):
                # the marginal s.d.s of the factor's angles: its rows of L, all columns
                kf = f.wrap_range(scale_tril[..., off[i] : off[i + 1], :], kmax)
            vk, nj = _preimages(f, vf, kf)
            vks.append(vk)
            njs.append(nj)
        batch = torch.broadcast_shapes(*(vk.shape[:-2] for vk in vks))
        n = len(vks)
        ks = [vk.shape[-2] for vk in vks]
        grid_v, grid_j = [], 0
        for i, (vk, nj) in enumerate(zip(vks, njs, strict=True)):
            shape = [1] * n
            shape[i] = ks[i]
            grid_v.append(
                vk.reshape(*vk.shape[:-2], *shape, vk.shape[-1]).expand(*batch, *ks, vk.shape[-1])
            )
            grid_j = grid_j + nj.reshape(*nj.shape[:-1], *shape)
        total = math.prod(ks)
        vk = torch.cat(grid_v, -1).reshape(*batch, total, self.dim)
        nj = torch.as_tensor(grid_j).expand(*batch, *ks).reshape(*batch, total)
        return vk, nj

    def wrapped_log_prob(
        self, v: torch.Tensor, scale_tril: torch.Tensor, kmax: int = 5
    ) -> torch.Tensor:
        """Wrapped log-density of ``Exp(v)``: the sum of the factors' wrapped log-densities when
        ``scale_tril`` is block-diagonal over the factors, otherwise the joint sum over all
        combinations of the factors' preimages (``Π_f K_f`` Gaussian evaluations per point)."""
        check_tangent_gaussian(self, v, scale_tril)
        if self.is_block_diagonal(scale_tril):
            off = self._offsets()
            return sum(
                f.wrapped_log_prob(
                    vf, scale_tril[..., off[i] : off[i + 1], off[i] : off[i + 1]], kmax
                )
                for i, (f, vf) in enumerate(zip(self.factors, self.split_coords(v), strict=True))
            )
        vk, nj = self.wrapped_preimages(v, kmax, scale_tril)
        lp = gaussian_log_prob_shared(vk, scale_tril)
        return torch.logsumexp(lp + nj, dim=-1)

    def extra_repr(self) -> str:
        return ", ".join(repr(f) for f in self.factors)
