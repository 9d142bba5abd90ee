"""mgplvm: manifold Gaussian-process latent variable models for neural recordings.

Subpackages are imported lazily so that ``import mgplvm`` stays cheap and has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "manifolds",
    "kernels",
    "datasets",
    "control",
    "comms",
    "likelihoods",
    "latents",
    "smoothing",
    "model",
    "fitting",
    "crossval",
    "optim",
    "plotting",
}
# public names re-exported from submodules: name -> module
_EXPORTS = {
    "MGPLVM": "model",
    "fit": "fitting",
    "refit_by_smoothing": "fitting",
    "crossvalidate": "crossval",
    "Euclid": "manifolds",
    "Torus": "manifolds",
    "Sphere": "manifolds",
    "SO3": "manifolds",
    "Product": "manifolds",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"mgplvm.{_EXPORTS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"mgplvm.{name}")
    raise AttributeError(f"module 'mgplvm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | set(_EXPORTS))
