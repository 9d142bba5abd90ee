"""Euclidean space Rᵈ as a (commutative, additive) Lie group."""

from __future__ import annotations

import torch

from mgplvm.manifolds.base import LatentManifold, gaussian_log_prob

__all__ = ["Euclid"]


class Euclid(LatentManifold):
    """Rᵈ with the flat metric. ``ambient_dim = dim = d``; chordal distance = Euclidean distance.

    Not compact: there is no uniform distribution, so Euclidean latents take a Gaussian or GP prior.
    ``random`` draws standard normal points.
    """

    is_group = True
    is_compact = False

    def __init__(self, d: int = 1):
        super().__init__()
        if int(d) < 1:
            raise ValueError(f"Euclid dimension must be >= 1, got {d}")
        self.d = self.dim = self.ambient_dim = int(d)
        self.name = f"R{self.d}"

    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        return True, None

    def projx(self, x):
        return x

    def proju(self, x, u):
        return u.expand(torch.broadcast_shapes(x.shape, u.shape))

    egrad2rgrad = proju

    def inner(self, x, u, v=None, *, keepdim=False):
        v = u if v is None else v
        return (u * v).sum(-1, keepdim=keepdim)

    def expmap(self, x, u):
        return x + u

    retr = expmap

    def logmap(self, x, y):
        return y - x

    def transp(self, x, y, v):
        return v

    def dist(self, x, y, *, keepdim=False):
        return (y - x).norm(dim=-1, keepdim=keepdim)

    def random(self, *size, dtype=None, device=None, generator=None) -> torch.Tensor:
        size = size[0] if len(size) == 1 and isinstance(size[0], (tuple, torch.Size)) else size
        return torch.randn(*size, self.d, dtype=dtype, device=device, generator=generator)

    random_uniform = random

    def identity(self, *size, dtype=None, device=None) -> torch.Tensor:
        return torch.zeros(*size, self.d, dtype=dtype, device=device)

    def expmap_coords(self, mu, v):
        return mu + v

    def logmap_coords(self, mu, g):
        return g - mu

    def compose(self, g, h):
        return g + h

    def inverse(self, g):
        return -g

    def chordal_sqdist(self, x, y):
        return (x - y).pow(2).sum(-1)

    def pairwise_chordal_sqdist(self, x1, x2):
        d = (
            x1.pow(2).sum(-1, keepdim=True)
            + x2.pow(2).sum(-1).unsqueeze(-2)
            - 2 * x1 @ x2.transpose(-1, -2)
        )
        return d.clamp_min(0)

    def log_volume(self) -> float:
        raise NotImplementedError("Rᵈ has infinite volume: use a Gaussian or GP prior")

    def wrapped_log_prob(self, v, scale_tril, kmax: int = 5):
        """No wrapping on Rᵈ: the plain Gaussian log-density."""
        return gaussian_log_prob(v, scale_tril)
