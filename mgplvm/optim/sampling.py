"""Model-sampled negative log-likelihoods for Fisher–vector products of Pyro models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_factor, site_is_subsample
from torch import Tensor

__all__ = ["pyro_sample_nll", "resampled_data_nll"]


def pyro_sample_nll(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    latent_terms: bool = True,
    **kwargs: Any,
) -> Callable[[], Tensor]:
    """Build a :data:`~mgplvm.optim.fishleg.SampleNLL` for FishLeg from a Pyro model and guide.

    Each call runs the guide (reparameterised latent draws z ~ q), replays the model on them and,
    at every observed sample site with distribution p(y | z, θ), replaces the data by a fresh draw
    ``y_s ~ p(y | z, θ)`` (no gradient through the draw). It returns

        ℓ(θ) = −Σ_obs log p(y_s | z, θ)  [ + Σ_latent (log q(z) − log p(z)) if latent_terms ]

    i.e. the single-sample negative ELBO with the data replaced by model samples. Its expected
    Hessian over y_s is the Fisher of the observation model (plus the curvature of the KL / entropy
    terms), which is what FishLeg's ``fvp="hessian"`` mode estimates. Observed sites that cannot be
    resampled (``pyro.factor``, e.g. a closed-form expected log-likelihood) enter with their value
    unchanged: their exact Hessian is used. Plate ``scale`` and ``mask`` are honoured.

    ``args``/``kwargs`` are those passed to ``Trace_ELBO().differentiable_loss(model, guide, ...)``.
    """

    def sample_nll() -> Tensor:
        guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
        total: Tensor | float = 0.0
        for name, site in model_tr.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            dist = site["fn"]
            if site["is_observed"]:
                value = site["value"]
                if not site_is_factor(site):
                    with torch.no_grad():
                        value = dist.sample()
                lp = dist.log_prob(value)
            elif latent_terms:
                lp = dist.log_prob(site["value"])
                gsite = guide_tr.nodes.get(name)
                if gsite is not None and gsite["type"] == "sample":
                    glp = gsite["fn"].log_prob(gsite["value"])
                    total = total + scale_and_mask(glp, gsite["scale"], gsite["mask"]).sum()
            else:
                continue
            total = total - scale_and_mask(lp, site["scale"], site["mask"]).sum()
        if not isinstance(total, Tensor):
            raise ValueError("the Pyro model has no sample sites to build a sampled NLL from")
        return total

    return sample_nll


def resampled_data_nll(
    loss_fn: Callable[[Tensor], Tensor], sample_data_fn: Callable[[], Tensor]
) -> Callable[[], Tensor]:
    """A :data:`~mgplvm.optim.fishleg.SampleNLL` by substituting model-sampled data into a loss.

    For models whose likelihood enters the ELBO in closed form (e.g. ``pyro.factor`` of the
    Poisson expectation ``y(log Δ + μ) − Δ e^{μ+σ²/2} − log y!``), there is no observed sample site
    to resample. Instead draw a synthetic data set ``Y_s ~ p(Y | θ)`` from the model's predictive
    (``sample_data_fn``, no gradient) and return ``loss_fn(Y_s)``: the training loss (negative
    ELBO) evaluated on model-sampled data. Its Hessian, averaged over ``Y_s``, is the Fisher of the
    observation model plus the curvature of the data-independent terms (KL, entropy); the terms of
    the true Hessian that are proportional to the residual ``Y − E[Y]`` vanish in expectation.

    Args:
        loss_fn: ``Y ↦`` scalar loss, differentiable in the parameters (e.g.
            ``lambda Y: Trace_ELBO().differentiable_loss(model.model, model.guide, Y)``).
        sample_data_fn: draws one synthetic data set shaped like the training data.
    """

    def sample_nll() -> Tensor:
        with torch.no_grad():
            y_s = sample_data_fn()
        return loss_fn(y_s.detach())

    return sample_nll
