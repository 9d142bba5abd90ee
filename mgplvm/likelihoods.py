"""Observation models p(y | f) for the mGPLVM, as GPyTorch likelihoods returning torch/Pyro
distributions.

Conventions: function values ``f`` and observations ``y`` have shape ``(..., neurons, time)``; the
per-neuron parameters (noise, dispersion) have shape ``(neurons,)`` and broadcast over time. ``f``
is the GP output: the mean for :class:`GaussianLikelihood`, the log-rate in Hz (``exp`` link) or the
rate in Hz (``softplus`` link) for the count likelihoods, whose mean count per bin is
``bin_size · link(f)``.

Every likelihood provides

* ``forward(f)`` -> the conditional distribution ``p(y | f)`` (a :mod:`pyro.distributions` object,
  so ``likelihood(f)`` works as in GPyTorch),
* ``expected_log_prob_moments(y, mean, var)`` = ``E_{N(f; mean, var)}[log p(y | f)]`` elementwise:
  closed form for the Gaussian and for the Poisson with ``exp`` link
  (``y(log Δ + μ) − Δ exp(μ + σ²/2) − log y!``), Gauss–Hermite quadrature otherwise;
* ``expected_log_prob(y, function_dist)`` (the GPyTorch API, from a batch ``MultivariateNormal``),
* ``mean_moments(mean, var)`` -> mean and s.d. of ``link(f)`` (tuning curves in rate space),
* ``predictive_mean(mean, var)`` -> ``E[y]`` under ``f ~ N(mean, var)``,
* ``validate(Y)`` -> raise/warn about data the model cannot explain.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from gpytorch.constraints import GreaterThan, Positive
from gpytorch.likelihoods.likelihood import _OneDimensionalLikelihood
from gpytorch.utils.quadrature import GaussHermiteQuadrature1D

__all__ = [
    "MGPLVMLikelihood",
    "GaussianLikelihood",
    "PoissonLikelihood",
    "NegativeBinomialLikelihood",
    "LIKELIHOODS",
    "get_likelihood",
]

_LOG_2PI = math.log(2 * math.pi)
_LINKS = ("exp", "softplus")


class _Quadrature(GaussHermiteQuadrature1D):
    """GaussHermiteQuadrature1D with float64 nodes cast to the dtype/device of the inputs.

    (GPyTorch stores the nodes as float32 plain attributes, which would cap the accuracy of a
    float64 model at ~1e-7 and would not follow ``.to(device)``.)
    """

    def _locs_and_weights(self, num_locs):
        locations, weights = np.polynomial.hermite.hermgauss(num_locs)
        return torch.as_tensor(locations), torch.as_tensor(weights)

    def _nodes(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nodes ``f (Q, *mean.shape)`` and normalised weights ``(Q,)`` (summing to 1)."""
        locs = self.locations.to(dtype=mean.dtype, device=mean.device)
        wts = self.weights.to(dtype=mean.dtype, device=mean.device) / math.sqrt(math.pi)
        f = torch.sqrt(2.0 * var.clamp_min(0)) * locs.reshape((-1,) + (1,) * mean.dim()) + mean
        return f, wts

    def expect(
        self, func: Callable[[torch.Tensor], torch.Tensor], mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        """``E_{N(f; mean, var)}[func(f)]`` elementwise, ``func`` receiving ``(Q, *mean.shape)``."""
        f, wts = self._nodes(mean, var)
        vals = func(f)
        return (vals * wts.reshape((-1,) + (1,) * (vals.dim() - 1))).sum(0)

    def log_expect(
        self,
        log_func: Callable[[torch.Tensor], torch.Tensor],
        mean: torch.Tensor,
        var: torch.Tensor,
    ) -> torch.Tensor:
        """``log E_{N(f; mean, var)}[exp(log_func(f))]`` elementwise, by a log-sum-exp over the
        nodes (stable where ``exp(log_func)`` under- or overflows)."""
        f, wts = self._nodes(mean, var)
        vals = log_func(f)
        return torch.logsumexp(vals + wts.log().reshape((-1,) + (1,) * (vals.dim() - 1)), 0)

    def forward(self, func, gaussian_dists):
        return self.expect(func, gaussian_dists.mean, gaussian_dists.variance)


def _per_neuron(p: torch.Tensor) -> torch.Tensor:
    """``(neurons,) -> (neurons, 1)`` so that it broadcasts against ``(..., neurons, time)``."""
    return p.unsqueeze(-1)


def _is_count(Y: torch.Tensor) -> torch.Tensor:
    return (Y >= 0) & (Y == torch.round(Y))


class MGPLVMLikelihood(_OneDimensionalLikelihood):
    """Base class: a per-neuron observation model ``p(y_{n,t} | f_{n,t})``.

    Args:
        n_neurons: number of neurons (batch size of the per-neuron parameters).
        num_quadrature: Gauss–Hermite nodes for expectations without a closed form.
    """

    name = "base"
    is_count = False

    def __init__(self, n_neurons: int, num_quadrature: int = 20) -> None:
        super().__init__()
        if int(n_neurons) < 1:
            raise ValueError(f"n_neurons must be >= 1, got {n_neurons}")
        self.n_neurons = int(n_neurons)
        self.quadrature = _Quadrature(num_quadrature)

    # -- configuration ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (without ``n_neurons``)."""
        return {"num_quadrature": self.quadrature.num_locs}

    # -- the conditional -------------------------------------------------------------------------
    def forward(self, function_samples: torch.Tensor, *args: Any, **kwargs: Any):
        """``p(y | f)`` for ``f (..., neurons, time)``: a Pyro distribution of that batch shape."""
        raise NotImplementedError

    def log_prob(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """``log p(y | f)`` elementwise, ``(..., neurons, time)``."""
        return self.forward(f).log_prob(y)

    # -- expectations under f ~ N(mean, var) -----------------------------------------------------
    def expected_log_prob_moments(
        self, y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        """``E_{f ~ N(mean, var)}[log p(y | f)]`` elementwise (Gauss–Hermite quadrature)."""
        return self.quadrature.expect(lambda f: self.log_prob(y, f), mean, var)

    def log_predictive_moments(
        self, y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        """``log E_{f ~ N(mean, var)}[p(y | f)]`` elementwise: the log predictive density, which
        is ≥ :meth:`expected_log_prob_moments` (Jensen); Gauss–Hermite in log space."""
        return self.quadrature.log_expect(lambda f: self.log_prob(y, f), mean, var)

    def expected_log_prob(self, observations: torch.Tensor, function_dist, *args, **kwargs):
        """GPyTorch API: ``function_dist`` a batch MultivariateNormal, mean ``(..., N, T)``."""
        return self.expected_log_prob_moments(
            observations, function_dist.mean, function_dist.variance
        )

    def mean_moments(
        self, mean: torch.Tensor, var: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and s.d. of the tuning curve in its natural space (``f`` for the Gaussian, the rate
        ``link(f)`` in Hz for counts) under ``f ~ N(mean, var)``."""
        return mean, var.clamp_min(0).sqrt()

    def predictive_mean(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """``E[y]`` under ``f ~ N(mean, var)``."""
        return mean

    # -- data checks -----------------------------------------------------------------------------
    def validate(self, Y: torch.Tensor, name: str = "Y", warn: bool = True) -> None:
        """Raise ``ValueError`` for NaN/inf; warn (``warn``) about neurons without any signal."""
        if not torch.isfinite(Y).all():
            bad = int((~torch.isfinite(Y)).sum())
            raise ValueError(f"{name} contains {bad} NaN/inf entries")

    def init_mean(self, Y: torch.Tensor, bin_size: float | None = None) -> torch.Tensor:
        """A data-driven initial value of the per-neuron GP mean, ``(neurons,)``."""
        return Y.mean(dim=(0, -1))


class GaussianLikelihood(MGPLVMLikelihood):
    """``y ~ N(f, σ_n²)`` with a learned noise variance per neuron (``noise``, ``(neurons,)``)."""

    name = "gaussian"

    def __init__(
        self, n_neurons: int, noise: float = 1.0, min_noise: float = 1e-6, num_quadrature: int = 20
    ) -> None:
        super().__init__(n_neurons, num_quadrature)
        self.min_noise = float(min_noise)
        self.register_parameter("raw_noise", torch.nn.Parameter(torch.zeros(self.n_neurons)))
        self.register_constraint("raw_noise", GreaterThan(self.min_noise))
        self.noise = torch.full((self.n_neurons,), float(noise))

    @property
    def noise(self) -> torch.Tensor:
        """Noise variances σ², ``(neurons,)``."""
        return self.raw_noise_constraint.transform(self.raw_noise)

    @noise.setter
    def noise(self, value: torch.Tensor) -> None:
        value = torch.as_tensor(value, dtype=self.raw_noise.dtype, device=self.raw_noise.device)
        value = value.clamp_min(self.min_noise * 1.0001)
        self.initialize(raw_noise=self.raw_noise_constraint.inverse_transform(value))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "min_noise": self.min_noise}

    def forward(self, function_samples, *args, **kwargs):
        return dist.Normal(function_samples, _per_neuron(self.noise).sqrt())

    def expected_log_prob_moments(self, y, mean, var):
        """Closed form: ``−½ log 2πσ² − ((y − μ)² + v) / 2σ²``."""
        s2 = _per_neuron(self.noise)
        return -0.5 * (_LOG_2PI + s2.log()) - 0.5 * ((y - mean).pow(2) + var) / s2

    def log_predictive_moments(self, y, mean, var):
        """Closed form: ``log N(y; μ, v + σ²)``."""
        s2 = _per_neuron(self.noise) + var
        return -0.5 * (_LOG_2PI + s2.log()) - 0.5 * (y - mean).pow(2) / s2

    def init_noise(self, Y: torch.Tensor) -> torch.Tensor:
        """Half the per-neuron variance of ``Y`` (``(neurons,)``)."""
        return 0.5 * Y.var(dim=-1).mean(0).clamp_min(self.min_noise * 10)

    def validate(self, Y, name="Y", warn=True):
        super().validate(Y, name, warn)
        flat = Y.transpose(0, 1).reshape(Y.shape[1], -1)
        const = torch.nonzero(flat.std(-1) == 0).flatten().tolist() if flat.shape[1] > 1 else []
        if const and warn:
            warnings.warn(
                f"{name}: {len(const)} neuron(s) are constant over time ({_short(const)}); "
                "their tuning curves will be flat",
                stacklevel=3,
            )


class _CountLikelihood(MGPLVMLikelihood):
    """Shared code for count likelihoods: link, bin size, count-data validation."""

    is_count = True

    def __init__(
        self, n_neurons: int, link: str = "exp", bin_size: float = 1.0, num_quadrature: int = 20
    ):
        super().__init__(n_neurons, num_quadrature)
        if link not in _LINKS:
            raise ValueError(f"unknown link {link!r}; choose one of {_LINKS}")
        if not (float(bin_size) > 0 and math.isfinite(float(bin_size))):
            raise ValueError(f"bin_size must be a positive number of seconds, got {bin_size}")
        self.link = link
        self.bin_size = float(bin_size)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "link": self.link, "bin_size": self.bin_size}

    def rate(self, f: torch.Tensor) -> torch.Tensor:
        """Firing rate in Hz, ``link(f)``."""
        return torch.exp(f) if self.link == "exp" else F.softplus(f)

    def log_rate(self, f: torch.Tensor) -> torch.Tensor:
        return f if self.link == "exp" else torch.log(F.softplus(f).clamp_min(1e-30))

    def mean_moments(self, mean, var):
        """Lognormal moments for the ``exp`` link, quadrature for ``softplus``."""
        if self.link == "exp":
            m = torch.exp(mean + 0.5 * var)
            return m, m * torch.expm1(var).clamp_min(0).sqrt()
        m1 = self.quadrature.expect(F.softplus, mean, var)
        m2 = self.quadrature.expect(lambda f: F.softplus(f).pow(2), mean, var)
        return m1, (m2 - m1.pow(2)).clamp_min(0).sqrt()

    def predictive_mean(self, mean, var):
        return self.bin_size * self.mean_moments(mean, var)[0]

    def init_mean(self, Y, bin_size=None):
        rate = Y.mean(dim=(0, -1)) / self.bin_size
        rate = rate.clamp_min(0.1 / (self.bin_size * Y.shape[-1] * Y.shape[0]))
        return rate.log() if self.link == "exp" else rate + torch.log(-torch.expm1(-rate))

    def validate(self, Y, name="Y", warn=True):
        super().validate(Y, name, warn)
        if (Y < 0).any():
            raise ValueError(
                f"{name} has {int((Y < 0).sum())} negative entries: a {self.name} likelihood needs "
                "non-negative spike counts"
            )
        if not _is_count(Y).all():
            raise ValueError(
                f"{name} has {int((~_is_count(Y)).sum())} non-integer entries: a {self.name} "
                "likelihood needs integer spike counts (use likelihood='gaussian' for continuous "
                "data)"
            )
        silent = torch.nonzero(Y.sum(dim=(0, -1)) == 0).flatten().tolist()
        if silent and warn:
            warnings.warn(
                f"{name}: {len(silent)} neuron(s) never fire ({_short(silent)}); they carry no "
                "information about the latents and get near-zero rates",
                stacklevel=3,
            )


class PoissonLikelihood(_CountLikelihood):
    """``y ~ Poisson(Δ · link(f))``, ``Δ`` = ``bin_size`` in seconds (rates in Hz).

    ``link="exp"`` has the closed-form expectation
    ``E[log p] = y (log Δ + μ) − Δ exp(μ + v/2) − log Γ(y + 1)``; ``"softplus"`` uses quadrature.
    """

    name = "poisson"

    def forward(self, function_samples, *args, **kwargs):
        return dist.Poisson(self.bin_size * self.rate(function_samples))

    def log_prob(self, y, f):
        lam_log = math.log(self.bin_size) + self.log_rate(f)
        return y * lam_log - self.bin_size * self.rate(f) - torch.lgamma(y + 1)

    def expected_log_prob_moments(self, y, mean, var):
        if self.link == "exp":
            return (
                y * (math.log(self.bin_size) + mean)
                - self.bin_size * torch.exp(mean + 0.5 * var)
                - torch.lgamma(y + 1)
            )
        return super().expected_log_prob_moments(y, mean, var)


class NegativeBinomialLikelihood(_CountLikelihood):
    """``y ~ NB(mean λ = Δ · link(f), dispersion r_n)``: variance ``λ + λ²/r``, ``r`` learned per
    neuron (``dispersion``, ``(neurons,)``); expectations by Gauss–Hermite quadrature."""

    name = "negbin"

    def __init__(
        self,
        n_neurons: int,
        link: str = "exp",
        bin_size: float = 1.0,
        dispersion: float = 10.0,
        num_quadrature: int = 20,
    ) -> None:
        super().__init__(n_neurons, link, bin_size, num_quadrature)
        self.register_parameter(
            "raw_dispersion", torch.nn.Parameter(torch.zeros(self.n_neurons))
        )
        self.register_constraint("raw_dispersion", Positive())
        self.dispersion = torch.full((self.n_neurons,), float(dispersion))

    @property
    def dispersion(self) -> torch.Tensor:
        """Dispersion (``total_count``) ``r``, ``(neurons,)``; large = close to Poisson."""
        return self.raw_dispersion_constraint.transform(self.raw_dispersion)

    @dispersion.setter
    def dispersion(self, value: torch.Tensor) -> None:
        value = torch.as_tensor(
            value, dtype=self.raw_dispersion.dtype, device=self.raw_dispersion.device
        )
        self.initialize(raw_dispersion=self.raw_dispersion_constraint.inverse_transform(value))

    def forward(self, function_samples, *args, **kwargs):
        r = _per_neuron(self.dispersion)
        logits = math.log(self.bin_size) + self.log_rate(function_samples) - r.log()
        return dist.NegativeBinomial(total_count=r, logits=logits)

    def log_prob(self, y, f):
        r = _per_neuron(self.dispersion)
        log_lam = math.log(self.bin_size) + self.log_rate(f)
        log_r_lam = torch.logaddexp(r.log(), log_lam)
        return (
            torch.lgamma(y + r) - torch.lgamma(r) - torch.lgamma(y + 1)
            + r * (r.log() - log_r_lam) + y * (log_lam - log_r_lam)
        )


LIKELIHOODS: dict[str, type[MGPLVMLikelihood]] = {
    "gaussian": GaussianLikelihood,
    "poisson": PoissonLikelihood,
    "negbin": NegativeBinomialLikelihood,
}
_ALIASES = {"normal": "gaussian", "negative_binomial": "negbin", "nb": "negbin"}


def get_likelihood(name: str, n_neurons: int, **kwargs: Any) -> MGPLVMLikelihood:
    """Build a likelihood by name: ``"gaussian"``, ``"poisson"`` or ``"negbin"``.

    ``kwargs`` go to the constructor (``bin_size``, ``link``, ``noise``, ``dispersion``...);
    arguments a likelihood does not take (e.g. ``bin_size`` for the Gaussian) are dropped.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    cls = LIKELIHOODS[key]
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls(n_neurons, **{k: v for k, v in kwargs.items() if k in accepted})


def _short(idx: list[int], n: int = 8) -> str:
    s = ", ".join(map(str, idx[:n]))
    return f"indices {s}{', ...' if len(idx) > n else ''}"

