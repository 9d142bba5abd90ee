"""GPyTorch kernels of chordal distances on manifolds.

Every kernel is a function of the manifold's **chordal** squared distance ``D(g, g')`` (the squared
Euclidean distance of the points in an ambient embedding, see
:meth:`mgplvm.manifolds.LatentManifold.pairwise_chordal_sqdist`). Because ``D`` is a Euclidean
distance of an embedding, every kernel below is positive definite on every manifold:

* RBF: ``k = exp(−S/2)``,
* Matérn-ν (ν ∈ {1/2, 3/2, 5/2}) of ``r = √S``: ``exp(−r)``, ``(1 + √3 r) e^{−√3 r}``,
  ``(1 + √5 r + 5r²/3) e^{−√5 r}``,

with ``S = D/ℓ²`` or, with ARD on a :class:`~mgplvm.manifolds.Product`, ``S = Σ_f D_f/ℓ_f²`` (one
lengthscale per factor). ``k(g, g) = 1``; scale with :class:`gpytorch.kernels.ScaleKernel`.

Shapes follow GPyTorch: points ``(..., n, ambient_dim)``; the kernel's ``batch_shape`` (e.g.
``(n_neurons,)``) broadcasts against the points' batch dimensions, so give the points a singleton
axis there: points ``(n_mc, trials, 1, time, ambient)`` with ``batch_shape=(n_neurons,)`` give
``(n_mc, trials, n_neurons, time, time)``. The distances are computed once on the un-batched points
and only the scaling by ``1/ℓ²`` is done per neuron.

The plain functions :func:`rbf_gram` and :func:`matern_gram` compute the same matrices without
GPyTorch's lazy tensors; :func:`factor_sqdists` and :func:`scaled_sqdist` expose the two steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gpytorch
import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.priors import Prior

from mgplvm.manifolds import Euclid, LatentManifold, Torus

__all__ = [
    "ManifoldRBFKernel",
    "ManifoldMaternKernel",
    "n_factors",
    "factor_sqdists",
    "scaled_sqdist",
    "rbf_gram",
    "matern_gram",
]

_NUS = (0.5, 1.5, 2.5)
_SQRT3 = math.sqrt(3.0)
_SQRT5 = math.sqrt(5.0)

TensorOrFloat = torch.Tensor | float


# ------------------------------------------------------------------------------------- distances
def n_factors(manifold: LatentManifold) -> int:
    """Number of ARD factors: ``len(manifold.factors)`` for a Product, else 1."""
    factors = getattr(manifold, "factors", None)
    return len(factors) if factors else 1


def _check_points(manifold: LatentManifold, x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != manifold.ambient_dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{name} has shape {shape} but points on {manifold!r} need a trailing dimension of "
            f"{manifold.ambient_dim} (ambient coordinates)"
        )


def _per_factor(manifold: LatentManifold, x1: torch.Tensor, x2: torch.Tensor, fn_name: str):
    """Apply ``factor.<fn_name>`` to each Product factor's slice of the ambient coordinates."""
    out, start = [], 0
    for factor in manifold.factors:
        stop = start + factor.ambient_dim
        out.append(getattr(factor, fn_name)(x1[..., start:stop], x2[..., start:stop]))
        start = stop
    return out


def factor_sqdists(
    manifold: LatentManifold,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    per_factor: bool = False,
    diag: bool = False,
) -> list[torch.Tensor]:
    """Chordal squared distances, one tensor per ARD factor (a list of length 1 unless asked).

    Full: ``x1 (..., n, ambient)``, ``x2 (..., m, ambient)`` -> each ``(..., n, m)``; when ``x1``
    equals ``x2`` the diagonal is set to exactly 0 (no round-off from the matmul form).
    ``diag=True``: elementwise ``D(x1_i, x2_i)`` -> each ``(..., n)``. ``per_factor=True`` on a
    Product returns ``[D_1, ..., D_F]`` with ``D = Σ_f D_f``; otherwise ``[D]``.
    """
    x2 = x1 if x2 is None else x2
    _check_points(manifold, x1, "x1")
    _check_points(manifold, x2, "x2")
    split = per_factor and n_factors(manifold) > 1
    if diag:
        return (
            _per_factor(manifold, x1, x2, "chordal_sqdist")
            if split
            else [manifold.chordal_sqdist(x1, x2)]
        )
    ds = (
        _per_factor(manifold, x1, x2, "pairwise_chordal_sqdist")
        if split
        else [manifold.pairwise_chordal_sqdist(x1, x2)]
    )
    n = x1.shape[-2] if x1.dim() > 1 else 0
    if n and x1.shape == x2.shape and (x1 is x2 or torch.equal(x1, x2)):
        eye = torch.eye(n, dtype=torch.bool, device=x1.device)
        ds = [d.masked_fill(eye, 0.0) for d in ds]
    return ds


def scaled_sqdist(
    dists: Sequence[torch.Tensor], lengthscale: TensorOrFloat, *, diag: bool = False
) -> torch.Tensor:
    """``S = Σ_f D_f / ℓ_f²`` from :func:`factor_sqdists` output.

    ``lengthscale``: a float, or a tensor ``(*batch, F)`` whose last axis holds one lengthscale per
    entry of ``dists`` (``(*batch, 1)`` for a single, shared one; per-neuron lengthscales are
    ``(n_neurons, 1)``). ``D_f`` ``(..., n, m)`` (``(..., n)`` with ``diag``) broadcasts against
    ``*batch``, so a distance computed without the neuron axis is reused for every neuron.
    """
    if not isinstance(lengthscale, torch.Tensor):
        return sum(dists) / float(lengthscale) ** 2
    if lengthscale.dim() == 0:
        lengthscale = lengthscale.reshape(1)
    if lengthscale.shape[-1] != len(dists):
        raise ValueError(
            f"lengthscale has shape {tuple(lengthscale.shape)}: its last axis must hold one value "
            f"per factor ({len(dists)}); use shape (n_neurons, 1) for per-neuron lengthscales"
        )
    inv = lengthscale.pow(-2)
    tail = (1,) if diag else (1, 1)
    out = None
    for f, d in enumerate(dists):
        term = d * inv[..., f].reshape(*inv.shape[:-1], *tail)
        out = term if out is None else out + term
    return out


# -------------------------------------------------------------------------------------- profiles
def _safe_sqrt(s: torch.Tensor) -> torch.Tensor:
    """√s with a zero (not infinite) gradient at s = 0."""
    pos = s > 0
    return torch.where(pos, torch.where(pos, s, torch.ones_like(s)).sqrt(), torch.zeros_like(s))


def _rbf_profile(s: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * s)


def _matern_profile(s: torch.Tensor, nu: float) -> torch.Tensor:
    r = _safe_sqrt(s)
    if nu == 0.5:
        return torch.exp(-r)
    if nu == 1.5:
        a = _SQRT3 * r
        return (1 + a) * torch.exp(-a)
    a = _SQRT5 * r
    return (1 + a + (5.0 / 3.0) * s) * torch.exp(-a)


def _check_nu(nu: float) -> float:
    if nu not in _NUS:
        raise ValueError(f"Matérn nu must be one of {_NUS}, got {nu!r}")
    return float(nu)


def _wants_ard(manifold: LatentManifold, lengthscale: TensorOrFloat) -> bool:
    """Whether ``lengthscale`` asks for per-factor (ARD) distances."""
    return (
        isinstance(lengthscale, torch.Tensor)
        and lengthscale.dim() > 0
        and lengthscale.shape[-1] > 1
        and n_factors(manifold) > 1
    )


def _apply_outputscale(k: torch.Tensor, outputscale: TensorOrFloat, diag: bool) -> torch.Tensor:
    if isinstance(outputscale, torch.Tensor) and outputscale.dim() > 0:
        outputscale = outputscale.reshape(*outputscale.shape, *((1,) if diag else (1, 1)))
    return k * outputscale


def rbf_gram(
    manifold: LatentManifold,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    lengthscale: TensorOrFloat = 1.0,
    outputscale: TensorOrFloat = 1.0,
    *,
    diag: bool = False,
) -> torch.Tensor:
    """``s² exp(−Σ_f D_f / 2ℓ_f²)`` without GPyTorch overhead.

    ``x1 (..., n, ambient)``, ``x2 (..., m, ambient)``; ``lengthscale`` float or ``(*batch, F|1)``
    (see :func:`scaled_sqdist`); ``outputscale`` (``s²``) float or ``(*batch)``. Returns
    ``(*broadcast(..., batch), n, m)``, or ``(..., n)`` with ``diag=True``.
    """
    ds = factor_sqdists(manifold, x1, x2, per_factor=_wants_ard(manifold, lengthscale), diag=diag)
    k = _rbf_profile(scaled_sqdist(ds, lengthscale, diag=diag))
    return _apply_outputscale(k, outputscale, diag)


def matern_gram(
    manifold: LatentManifold,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    nu: float = 2.5,
    lengthscale: TensorOrFloat = 1.0,
    outputscale: TensorOrFloat = 1.0,
    *,
    diag: bool = False,
) -> torch.Tensor:
    """``s² Matérn_ν(r)`` with ``r = √(Σ_f D_f/ℓ_f²)``; shapes as in :func:`rbf_gram`."""
    nu = _check_nu(nu)
    ds = factor_sqdists(manifold, x1, x2, per_factor=_wants_ard(manifold, lengthscale), diag=diag)
    k = _matern_profile(scaled_sqdist(ds, lengthscale, diag=diag), nu)
    return _apply_outputscale(k, outputscale, diag)


# --------------------------------------------------------------------------------------- kernels
class _ChordalKernel(gpytorch.kernels.Kernel):
    """Base class: a stationary kernel ``k = φ(S)`` of the scaled chordal distance ``S``.

    The lengthscale is the raw parameter ``raw_lengthscale`` of shape ``(*batch_shape, 1, F)``
    (``F`` = number of Product factors with ``ard=True``, else 1) under a Positive constraint;
    ``kernel.lengthscale`` is the constrained value.
    """

    has_lengthscale = True

    def __init__(
        self,
        manifold: LatentManifold,
        *,
        ard: bool = True,
        lengthscale: TensorOrFloat | None = None,
        batch_shape: torch.Size | Sequence[int] | None = None,
        lengthscale_prior: Prior | None = None,
        lengthscale_constraint: Interval | None = None,
        **kwargs,
    ):
        if not isinstance(manifold, LatentManifold):
            raise TypeError(
                f"manifold must be an mgplvm LatentManifold, got {type(manifold).__name__}"
            )
        batch_shape = torch.Size(() if batch_shape is None else batch_shape)
        if lengthscale_constraint is None:
            lengthscale_constraint = Positive()
        super().__init__(
            batch_shape=batch_shape,
            lengthscale_prior=lengthscale_prior,
            lengthscale_constraint=lengthscale_constraint,
            **kwargs,
        )
        self.manifold = manifold
        self.ard = bool(ard) and n_factors(manifold) > 1
        if self.ard:  # one lengthscale per Product factor; the constraint stays registered
            self.register_parameter(
                "raw_lengthscale",
                torch.nn.Parameter(torch.zeros(*batch_shape, 1, n_factors(manifold))),
            )
        if lengthscale is not None:
            self.lengthscale = torch.as_tensor(lengthscale, dtype=self.raw_lengthscale.dtype)

    def _profile(self, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        diag: bool = False,
        last_dim_is_batch: bool = False,
        **params,
    ) -> torch.Tensor:
        """``(..., n, ambient), (..., m, ambient) -> (..., n, m)`` (``(..., n)`` with ``diag``)."""
        ls = self.lengthscale.squeeze(-2)  # (*batch, F)
        manifold = self.manifold
        if last_dim_is_batch:
            # only meaningful where every ambient coordinate is a 1-d manifold of its own
            if not isinstance(manifold, (Torus, Euclid)):
                raise NotImplementedError(
                    f"last_dim_is_batch needs coordinate-separable points (Torus, Euclid), "
                    f"not {manifold!r}"
                )
            manifold = type(manifold)(1)
            x1 = x1.transpose(-1, -2).unsqueeze(-1)
            x2 = x2.transpose(-1, -2).unsqueeze(-1)
            ls = ls.unsqueeze(-2)  # (*batch, 1, F): broadcast over the new coordinate axis
        ds = factor_sqdists(manifold, x1, x2, per_factor=self.ard, diag=diag)
        return self._profile(scaled_sqdist(ds, ls, diag=diag))

    def extra_repr(self) -> str:
        return f"manifold={self.manifold!r}, ard={self.ard}"


class ManifoldRBFKernel(_ChordalKernel):
    """Squared-exponential kernel of the chordal distance: ``k = exp(−Σ_f D_f / 2ℓ_f²)``.

    Args:
        manifold: an mgplvm manifold; points are ``(..., n, manifold.ambient_dim)``.
        ard: one lengthscale per factor of a Product manifold (no effect otherwise).
        lengthscale: initial value (float or tensor broadcastable to ``(*batch_shape, 1, F)``).
        batch_shape: e.g. ``(n_neurons,)`` for per-neuron lengthscales; ``()`` for one shared.
        lengthscale_prior, lengthscale_constraint: as in GPyTorch (default ``Positive()``).
    """

    def _profile(self, s: torch.Tensor) -> torch.Tensor:
        return _rbf_profile(s)


class ManifoldMaternKernel(_ChordalKernel):
    """Matérn-ν kernel of ``r = √(Σ_f D_f/ℓ_f²)``, ν ∈ {0.5, 1.5, 2.5}.

    ``ν=0.5: e^{−r}``; ``ν=1.5: (1 + √3 r) e^{−√3 r}``; ``ν=2.5: (1 + √5 r + 5r²/3) e^{−√5 r}``.
    ``√`` has a zero gradient at ``r = 0``, so gradients stay finite at coincident points. Other
    arguments as :class:`ManifoldRBFKernel`.
    """

    def __init__(self, manifold: LatentManifold, nu: float = 2.5, **kwargs):
        nu = _check_nu(nu)
        super().__init__(manifold, **kwargs)
        self.nu = nu

    def _profile(self, s: torch.Tensor) -> torch.Tensor:
        return _matern_profile(s, self.nu)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nu={self.nu}"
