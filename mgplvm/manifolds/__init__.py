"""Manifolds for mGPLVM latents: geoopt manifolds with Lie-group / homogeneous-space extras."""

from mgplvm.manifolds.base import LatentManifold, gaussian_log_prob
from mgplvm.manifolds.euclid import Euclid
from mgplvm.manifolds.torus import Torus, wrap_angle

__all__ = ["LatentManifold", "gaussian_log_prob", "Euclid", "Torus", "wrap_angle"]
