"""Manifolds for mGPLVM latents: geoopt manifolds with Lie-group / homogeneous-space extras."""

from mgplvm.manifolds.base import LatentManifold, gaussian_log_prob
from mgplvm.manifolds.euclid import Euclid
from mgplvm.manifolds.product import Product
from mgplvm.manifolds.registry import MANIFOLD_NAMES, get_manifold
from mgplvm.manifolds.so3 import SO3
from mgplvm.manifolds.sphere import Sphere, qconj, qexp, qlog, qmul
from mgplvm.manifolds.torus import Torus, wrap_angle

__all__ = [
    "LatentManifold",
    "gaussian_log_prob",
    "Euclid",
    "Torus",
    "wrap_angle",
    "Sphere",
    "SO3",
    "Product",
    "get_manifold",
    "MANIFOLD_NAMES",
    "qmul",
    "qconj",
    "qexp",
    "qlog",
]
