"""Base class shared by every mgplvm manifold.

geoopt supplies the Riemannian-optimisation interface (``expmap``, ``logmap``, ``proju``, ``projx``,
``retr``, ``inner``, ``egrad2rgrad``) that :class:`geoopt.optim.RiemannianAdam` reads off a
:class:`geoopt.ManifoldParameter`. On top of it every mgplvm manifold adds what the mGPLVM needs:

* Lie-algebra (tangent) *coordinates* ``v`` of shape ``(..., dim)`` and the reparameterised map
  ``g = expmap_coords(mu, v)`` (``mu · Exp(v)`` on groups, ``Exp_mu(F(mu) v)`` on spheres, with
  ``F(mu)`` an orthonormal tangent frame),
* the chordal squared distance used by kernels (keeps the squared-exponential kernel positive
  definite),
* the uniform (Haar) log-density, and
* the log-density of the push-forward of a tangent Gaussian through ``Exp``, summed over the wrapped
  preimages (``wrapped_log_prob``), which gives the entropy term of the ELBO.

Shapes: points ``(..., ambient_dim)``; tangent coordinates ``(..., dim)``; Cholesky factors of the
tangent covariance ``(..., dim, dim)``.
"""

from __future__ import annotations

import math

import geoopt
import torch

__all__ = [
    "LatentManifold",
    "check_tangent_gaussian",
    "gaussian_log_prob",
    "gaussian_log_prob_shared",
    "shifted_gaussian_logsumexp",
]

_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(v: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """log N(v; 0, L Lᵀ) for ``v`` ``(..., d)``, ``L`` ``(..., d, d)`` (broadcast) -> ``(...)``."""
    d = v.shape[-1]
    batch = torch.broadcast_shapes(v.shape[:-1], scale_tril.shape[:-2])
    v = v.expand(*batch, d)
    L = scale_tril.expand(*batch, d, d)
    z = torch.linalg.solve_triangular(L, v.unsqueeze(-1), upper=False).squeeze(-1)
    half_logdet = torch.diagonal(L, dim1=-2, dim2=-1).abs().log().sum(-1)
    return -0.5 * (z.pow(2).sum(-1) + d * _LOG_2PI) - half_logdet


def check_tangent_gaussian(
    manifold: LatentManifold, v: torch.Tensor, scale_tril: torch.Tensor
) -> None:
    """Refuse ``v``/``scale_tril`` whose trailing shapes are not ``(dim,)``/``(dim, dim)`` for
    ``manifold``'s tangent coordinates (the arguments of ``wrapped_log_prob``)."""
    d = manifold.dim
    if v.dim() == 0 or v.shape[-1] != d:
        raise ValueError(
            f"v has shape {tuple(v.shape)} but tangent coordinates on {manifold!r} need a "
            f"trailing dimension of {d}"
        )
    if scale_tril.dim() < 2 or scale_tril.shape[-2:] != (d, d):
        raise ValueError(
            f"scale_tril has shape {tuple(scale_tril.shape)}; expected (..., {d}, {d}) on "
            f"{manifold!r}"
        )


def gaussian_log_prob_shared(vk: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """log N(v_k; 0, L Lᵀ) for ``K`` points per covariance: ``vk (..., K, d)``,
    ``L (..., d, d)`` (broadcast) -> ``(..., K)``, with one ``K``-column triangular solve per
    covariance instead of ``K`` solves."""
    d = vk.shape[-1]
    batch = torch.broadcast_shapes(vk.shape[:-2], scale_tril.shape[:-2])
    L = scale_tril.expand(*batch, d, d)
    z = torch.linalg.solve_triangular(L, vk.expand(*batch, *vk.shape[-2:]).mT, upper=False)
    half_logdet = torch.diagonal(L, dim1=-2, dim2=-1).abs().log().sum(-1, keepdim=True)
    return -0.5 * (z.pow(2).sum(-2) + d * _LOG_2PI) - half_logdet


def shifted_gaussian_logsumexp(
    v: torch.Tensor, shifts: torch.Tensor, scale_tril: torch.Tensor
) -> torch.Tensor:
    """``log Σ_k N(v + s_k; 0, L Lᵀ)`` for ``v (..., d)``, shifts ``s (K, d)`` shared by every
    point and ``L (..., d, d)`` (broadcast) -> ``(...)``.

    One triangular solve per point with ``1 + K`` right-hand sides, ``[L⁻¹v | L⁻¹s_k]``, instead
    of ``K`` solves of the shifted points.
    """
    d = v.shape[-1]
    batch = torch.broadcast_shapes(v.shape[:-1], scale_tril.shape[:-2])
    L = scale_tril.expand(*batch, d, d)
    rhs = torch.cat([v.expand(*batch, d).unsqueeze(-1),
                     shifts.mT.to(v).expand(*batch, d, shifts.shape[0])], -1)
    ab = torch.linalg.solve_triangular(L, rhs, upper=False)  # (..., d, 1 + K)
    z2 = (ab[..., :1] + ab[..., 1:]).pow(2).sum(-2)  # (..., K)
    half_logdet = torch.diagonal(L, dim1=-2, dim2=-1).abs().log().sum(-1)
    return torch.logsumexp(-0.5 * z2, dim=-1) - 0.5 * d * _LOG_2PI - half_logdet


class LatentManifold(geoopt.Manifold):
    """Abstract mgplvm manifold: a :class:`geoopt.Manifold` plus the operations of the mGPLVM.

    Subclasses set ``name``, ``ambient_dim`` (length of a point's trailing axis), ``dim`` (intrinsic
    dimension = length of tangent coordinates) and ``is_group``, and implement the geoopt
    primitives together with :meth:`expmap_coords`, :meth:`logmap_coords`, :meth:`chordal_sqdist`,
    :meth:`log_uniform` and :meth:`wrapped_log_prob`.
    """

    ndim = 1  # one trailing axis per point (geoopt convention)
    reversible = True
    ambient_dim: int
    dim: int
    is_group: bool = False
    is_compact: bool = True

    # ------------------------------------------------------------------ validation
    def validate(self, x: torch.Tensor, name: str = "x", atol: float = 1e-4) -> torch.Tensor:
        """Raise a ``ValueError`` naming the problem if ``x`` is not a batch of points.

        Checks: a tensor, floating dtype, trailing dimension ``ambient_dim``, no NaN/inf, and
        on-manifold within ``atol``. Returns ``x`` unchanged.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {x.dtype}")
        if x.dim() == 0 or x.shape[-1] != self.ambient_dim:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} but points on {self!r} need a trailing "
                f"dimension of {self.ambient_dim} (ambient coordinates)"
            )
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).sum().item()
            raise ValueError(f"{name} contains {bad} NaN/inf entries")
        ok, reason = self._check_point_on_manifold(x.detach(), atol=atol, rtol=atol)
        if not ok:
            raise ValueError(f"{name} is not on {self!r}: {reason}")
        return x

    def validate_coords(self, v: torch.Tensor, name: str = "v") -> torch.Tensor:
        """Raise a ``ValueError`` unless ``v`` has trailing dimension ``dim`` and is finite."""
        if v.dim() == 0 or v.shape[-1] != self.dim:
            raise ValueError(
                f"{name} has shape {tuple(v.shape)} but tangent coordinates on {self!r} need a "
                f"trailing dimension of {self.dim}"
            )
        if not torch.isfinite(v).all():
            raise ValueError(f"{name} contains NaN/inf entries")
        return v

    # ------------------------------------------------------------------ sampling
    def random(self, *size, dtype=None, device=None, generator=None) -> torch.Tensor:
        """Uniform (Haar) samples of shape ``(*size, ambient_dim)``."""
        raise NotImplementedError

    random_uniform = random

    def identity(self, *size, dtype=None, device=None) -> torch.Tensor:
        """The identity / base point, shape ``(*size, ambient_dim)``."""
        raise NotImplementedError

    def origin(self, *size, dtype=None, device=None, seed=42) -> torch.Tensor:  # geoopt API
        size = size[0] if len(size) == 1 and isinstance(size[0], (tuple, torch.Size)) else size
        size = tuple(size)
        if size and size[-1] == self.ambient_dim:
            size = size[:-1]
        return self.identity(*size, dtype=dtype, device=device)

    # ------------------------------------------------------------------ Lie structure
    def exp0(self, v: torch.Tensor) -> torch.Tensor:
        """Exp at the identity / base point: ``(..., dim) -> (..., ambient_dim)``."""
        return self.expmap_coords(self.identity(dtype=v.dtype, device=v.device), v)

    def log0(self, g: torch.Tensor) -> torch.Tensor:
        """Principal Log at the identity / base point: ``(..., ambient_dim) -> (..., dim)``."""
        return self.logmap_coords(self.identity(dtype=g.dtype, device=g.device), g)

    def expmap_coords(self, mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Reparameterised point ``mu · Exp(v)``: ``mu (..., ambient)``, ``v (..., dim)``."""
        raise NotImplementedError

    def logmap_coords(self, mu: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`expmap_coords` (principal branch): tangent coordinates of ``g`` at
        ``mu``."""
        raise NotImplementedError

    def pairwise_sqdist_coords(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``‖logmap_coords(x1_i, x2_j)‖²`` for all pairs, ``(..., n, A), (..., m, A) ->
        (..., n, m)`` (the squared geodesic distance on the principal branch). Subclasses
        override with a matmul form; this default broadcasts :meth:`logmap_coords`."""
        n, m = x1.shape[-2], x2.shape[-2]
        a = x1.unsqueeze(-2).expand(*x1.shape[:-1], m, x1.shape[-1])
        b = x2.unsqueeze(-3).expand(*x2.shape[:-2], n, m, x2.shape[-1])
        return self.logmap_coords(a, b).pow(2).sum(-1)

    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Group product ``g · h`` (groups only)."""
        raise NotImplementedError(f"{self!r} is not a group")

    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        """Group inverse ``g⁻¹`` (groups only)."""
        raise NotImplementedError(f"{self!r} is not a group")

    # ------------------------------------------------------------------ kernels
    def chordal_sqdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Elementwise chordal squared distance, broadcasting ``(..., ambient)`` -> ``(...)``."""
        raise NotImplementedError

    def pairwise_chordal_sqdist(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Pairwise chordal squared distances ``(..., n, D), (..., m, D) -> (..., n, m)``.

        Subclasses override with a matmul form; this default broadcasts.
        """
        return self.chordal_sqdist(x1.unsqueeze(-2), x2.unsqueeze(-3))

    # ------------------------------------------------------------------ densities
    def log_volume(self) -> float:
        """Log of the Riemannian volume (compact manifolds)."""
        raise NotImplementedError(f"{self!r} has infinite volume")

    def log_uniform(self) -> float:
        """Log-density of the uniform (Haar) distribution w.r.t. the Riemannian volume."""
        return -self.log_volume()

    def wrapped_log_prob(
        self, v: torch.Tensor, scale_tril: torch.Tensor, kmax: int = 5
    ) -> torch.Tensor:
        """log-density at ``Exp(v)`` of the push-forward through ``Exp`` of ``N(0, L Lᵀ)``.

        ``log q(g) = log Σ_k N(v_k; 0, Σ) / |J(v_k)|`` summed over the preimages ``v_k`` of
        ``Exp(v)`` with ``|k| <= kmax``; ``J`` is the Jacobian determinant of ``Exp``. The density
        is w.r.t. the Riemannian volume, so ``E[-wrapped_log_prob]`` is the entropy. Shapes:
        ``v (..., dim)``, ``scale_tril (..., dim, dim)`` -> ``(...)``.
        """
        raise NotImplementedError

    def wrapped_log_prob_scaled(
        self, v: torch.Tensor, scale_tril: torch.Tensor, scales: torch.Tensor, kmax: int = 5
    ) -> torch.Tensor:
        """:meth:`wrapped_log_prob` of ``v (..., dim)`` under ``s · scale_tril`` for each of the
        ``G`` factors ``scales (G,)``, with one ``scale_tril (dim, dim)`` for all points ->
        ``(G, ...)``: the transition densities of a Brownian walk over gaps of ``s²`` steps.
        Manifolds whose density has structure to share between the scales override this loop."""
        return torch.stack([self.wrapped_log_prob(v, s * scale_tril, kmax) for s in scales])

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return self.name
