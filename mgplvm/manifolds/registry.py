"""Manifolds by name: ``get_manifold("T1")``, ``get_manifold("T1xS2")``, ...

Grammar (case-insensitive, spaces ignored): a factor is ``T<d>`` (torus Tᵈ), ``R<d>`` (Euclidean
Rᵈ), ``S<n>`` (sphere Sⁿ) or ``SO3``; ``^`` and ``SO(3)`` spellings are accepted (``S^2``,
``R^3``). Factors joined by ``x``, ``*`` or ``×`` give a :class:`~mgplvm.manifolds.Product`.
Manifold objects (and lists of names / manifolds, taken as products) pass through.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mgplvm.manifolds.base import LatentManifold
from mgplvm.manifolds.euclid import Euclid
from mgplvm.manifolds.product import Product
from mgplvm.manifolds.so3 import SO3
from mgplvm.manifolds.sphere import Sphere
from mgplvm.manifolds.torus import Torus

__all__ = ["get_manifold", "MANIFOLD_NAMES"]

MANIFOLD_NAMES = (
    "T<d> (torus, e.g. T1 ring, T2), R<d> (Euclidean, e.g. R1, R3), S<n> (sphere, e.g. S2, S3), "
    "SO3 (rotations), and products joined by 'x' or '*' (e.g. T1xR1, T1*S2)"
)

_FACTOR = re.compile(r"(so3|[trs]\d+)")
_CLASSES = {"t": Torus, "r": Euclid, "s": Sphere}


def _factor(token: str, name: str) -> LatentManifold:
    if not _FACTOR.fullmatch(token):
        raise ValueError(
            f"unknown manifold {name!r} (factor {token!r}); valid forms: {MANIFOLD_NAMES}"
        )
    if token == "so3":
        return SO3()
    d = int(token[1:])
    if d < 1:
        raise ValueError(f"manifold {name!r}: dimension must be >= 1 in {token!r}")
    return _CLASSES[token[0]](d)


def get_manifold(name: str | LatentManifold | Sequence) -> LatentManifold:
    """The manifold called ``name`` (see the module docstring); raises ``ValueError`` listing
    the valid forms for unknown names."""
    if isinstance(name, LatentManifold):
        return name
    if isinstance(name, (list, tuple)):
        if not name:
            raise ValueError(f"empty manifold list; valid forms: {MANIFOLD_NAMES}")
        parts = [get_manifold(p) for p in name]
        return parts[0] if len(parts) == 1 else Product(*parts)
    if not isinstance(name, str):
        raise TypeError(f"manifold must be a name or a LatentManifold, got {type(name).__name__}")
    key = re.sub(r"[\s^]", "", name.lower()).replace("so(3)", "so3")
    tokens = re.split(r"[x*×]", key)
    if not key or any(not t for t in tokens):
        raise ValueError(f"unknown manifold {name!r}; valid forms: {MANIFOLD_NAMES}")
    parts = [_factor(t, name) for t in tokens]
    return parts[0] if len(parts) == 1 else Product(*parts)
