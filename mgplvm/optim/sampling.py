"""Model-sampled negative log-likelihoods for Fisher–vector products of Pyro models.

* :func:`pyro_sample_nll` — generic Pyro model/guide pair: observed sample sites are resampled from
  the model; ``pyro.factor`` sites enter unchanged. For the bound methods ``MGPLVM.model`` /
  ``MGPLVM.guide`` (what :func:`mgplvm.fit` passes) it dispatches to :func:`mgplvm_sample_nll`.
* :func:`mgplvm_sample_nll` — the mGPLVM, whose likelihood is a ``pyro.factor`` (closed-form /
  quadrature expected log-likelihood): resamples the *data* ``Y_s ~ p(y | f)``, ``f ~ q(f | g)`` at
  the guide's own latent draw ``g`` and evaluates the negative ELBO on ``Y_s``, with GP marginals
  computed by plain autograd so that double backward (Hessian–vector products) is exact.
* :func:`resampled_data_nll` — any loss with a user-supplied sampler of synthetic data sets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_factor, site_is_subsample
from torch import Tensor

__all__ = ["differentiable_gp_marginals", "mgplvm_sample_nll", "pyro_sample_nll",
           "resampled_data_nll"]


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

    If ``model`` and ``guide`` are the bound ``model`` / ``guide`` methods of one
    :class:`~mgplvm.model.MGPLVM` (as in :func:`mgplvm.fit`), this returns
    :func:`mgplvm_sample_nll` ``(owner, *args, **kwargs)`` instead: the mGPLVM's likelihood is a
    ``pyro.factor`` that the generic path could not resample (it would give the Hessian of the
    *data* loss, not the Fisher), and its fused GP marginals do not support double backward.
    """
    owner = _mgplvm_owner(model, guide)
    if owner is not None:
        return mgplvm_sample_nll(owner, *args, latent_terms=latent_terms, **kwargs)

    def sample_nll() -> Tensor:
        guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
        total = _trace_nll(model_tr, guide_tr, latent_terms, resample_observed=True)
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


# ------------------------------------------------------------------------------------- mGPLVM
def _mgplvm_owner(model: Any, guide: Any) -> Any:
    """The MGPLVM whose bound ``model``/``guide`` methods these are, else None."""
    owner = getattr(model, "__self__", None)
    if owner is None or getattr(guide, "__self__", None) is not owner:
        return None
    if getattr(model, "__name__", "") != "model" or getattr(guide, "__name__", "") != "guide":
        return None
    needed = ("gp", "likelihood", "latents", "f_moments", "gp_marginals")
    return owner if all(hasattr(owner, a) for a in needed) else None


def differentiable_gp_marginals(mgplvm: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    """``q(f_n(x))`` marginals ``(N, P)`` of an mGPLVM's whitened SVGP, by plain autograd.

    Same values as ``MGPLVM.gp_marginals`` (GPyTorch's whitened ``VariationalStrategy`` with its
    jitter): ``L = chol(K_uu + jitter)``, ``A = L⁻¹ K_ux``, ``mean = c + Aᵀ m``,
    ``var = k(x, x) + jitter + diag(Aᵀ (S − I) A)``. Unlike the model's fused kernel
    (``_SVGPMarginals``) and GPyTorch's ``ComputePredictiveUpdates``, whose hand-written backward
    passes treat saved intermediates as constants, every operation here is differentiable twice,
    so Hessian–vector products through it are exact. Costs ``O(N M² P)`` memory-bound ops without
    chunking — fine for the one-particle evaluations FishLeg makes.
    """
    from linear_operator.utils.cholesky import psd_safe_cholesky

    gp = mgplvm.gp
    vs = gp.variational_strategy
    vs._clear_cache()
    Z = vs.inducing_points
    M = Z.shape[-2]
    eye = torch.eye(M, dtype=x.dtype, device=x.device)
    jitter = vs.jitter_val
    Kuu = gp.covar_module(Z).to_dense()  # (N, M, M)
    Kux = gp.covar_module(Z, x).to_dense()  # (N, M, P)
    kxx = gp.covar_module(x, diag=True)  # (N, P)
    L = psd_safe_cholesky(Kuu + jitter * eye)
    A = torch.linalg.solve_triangular(L, Kux, upper=False)  # (N, M, P)
    qd = vs.variational_distribution
    m, S = qd.mean, qd.covariance_matrix
    mean = gp.mean_module(x) + (A * m.unsqueeze(-1)).sum(-2)
    var = kxx + jitter + (A * ((S - eye) @ A)).sum(-2)
    return mean, var


@contextlib.contextmanager
def _autograd_marginals(mgplvm: Any) -> Iterator[None]:
    """Route ``mgplvm.gp_marginals`` through :func:`differentiable_gp_marginals` (then restore)."""
    had = "gp_marginals" in vars(mgplvm)
    old = vars(mgplvm).get("gp_marginals")
    object.__setattr__(mgplvm, "gp_marginals", lambda x: differentiable_gp_marginals(mgplvm, x))
    try:
        yield
    finally:
        if had:
            object.__setattr__(mgplvm, "gp_marginals", old)
        else:
            object.__delattr__(mgplvm, "gp_marginals")
        mgplvm.gp.variational_strategy._clear_cache()


def mgplvm_sample_nll(
    mgplvm: Any,
    Y: Tensor,
    t_idx: Tensor | None = None,
    beta: float = 1.0,
    *,
    latent_terms: bool = True,
) -> Callable[[], Tensor]:
    """A :data:`~mgplvm.optim.fishleg.SampleNLL` for an :class:`~mgplvm.model.MGPLVM`.

    Each call (one Monte-Carlo particle):

    1. runs the guide: ``g ~ q(g)`` on the bins ``t_idx`` (reparameterised);
    2. draws synthetic data at *that* ``g`` from the model's predictive, without gradient:
       ``f ~ q(f | g)`` (marginally per bin), ``Y_s ~ p(y | f)``;
    3. replays ``mgplvm.model`` on ``g`` with ``Y_s`` in place of the data and returns

       ℓ(θ) = −E_q(f|g)[log p(Y_s | f)] + KL(q(u) ‖ p(u)) [ + β (log q(g) − log p(g)) ]

       (Pyro's plate scaling for minibatches included; the latent terms only if ``latent_terms``).

    The residual terms ``(Y_s − E[Y_s | g]) ∂²(·)`` of ∇²ℓ vanish in expectation because ``Y_s`` is
    drawn at the same ``g``, so ``E[∇²ℓ]`` is the Fisher of the observation model plus the exact
    curvature of the KL / entropy terms — not the Hessian of the loss on the real data. GP
    marginals go through :func:`differentiable_gp_marginals` so double backward is exact.

    ``Y``, ``t_idx``, ``beta``: as passed to ``mgplvm.model`` / ``mgplvm.guide`` by
    :func:`mgplvm.fit`.
    """

    def sample_nll() -> Tensor:
        with _autograd_marginals(mgplvm):
            guide_tr = poutine.trace(mgplvm.guide).get_trace(Y, t_idx, beta)
            g = guide_tr.nodes["g"]["value"]
            with torch.no_grad():
                mean, var = mgplvm.f_moments(g.detach())
                f = mean + var.clamp_min(0).sqrt() * torch.randn_like(mean)
                y_b = mgplvm.likelihood(f).sample().to(Y.dtype)
                if t_idx is None:
                    Ys = y_b.reshape(Y.shape)
                else:
                    Ys = Y.clone()
                    Ys[..., t_idx] = y_b
            model_tr = poutine.trace(poutine.replay(mgplvm.model, trace=guide_tr)).get_trace(
                Ys, t_idx, beta
            )
            total = _trace_nll(model_tr, guide_tr, latent_terms, resample_observed=False)
        if not isinstance(total, Tensor):
            raise ValueError("the mGPLVM trace has no sample sites")
        return total

    return sample_nll


def _trace_nll(model_tr, guide_tr, latent_terms: bool, resample_observed: bool) -> Tensor | float:
    """−Σ_obs log p(y) [+ Σ_latent (log q − log p)] over a replayed model trace (plate ``scale`` and
    ``mask`` honoured). ``resample_observed``: replace each observed value (except ``pyro.factor``
    sites) by a draw from its own distribution, without gradient through the draw."""
    total: Tensor | float = 0.0
    for name, site in model_tr.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        dist = site["fn"]
        if site["is_observed"]:
            value = site["value"]
            if resample_observed and not site_is_factor(site):
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
    return total
