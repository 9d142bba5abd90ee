"""``make_optimizer``: the optimisers selectable by name in ``mgplvm.fit(..., optimizer=name)``.

Parameters of a model are split three ways (:func:`split_parameters`):

* **q(u)** — parameters of GPyTorch variational-distribution modules (the inducing-point posterior,
  batched over neurons: mean ``(N, M)`` and Cholesky ``(N, M, M)``, or natural parameters);
* **manifold** — :class:`geoopt.ManifoldParameter` s (inducing points ``(M, ambient)``, latent means
  ``(T, ambient)``);
* **Euclidean** — everything else (kernel / likelihood hyperparameters, latent scales, …).

=================  ===============================================================================
name               optimisers
=================  ===============================================================================
``"adam"``         Riemannian Adam (geoopt) on everything (Euclidean parameters: plain Adam).
``"ngd"``          :class:`ScheduledNGD` on q(u) + Riemannian Adam on manifold and Euclidean.
``"fishleg"``      :class:`FishLeg` on everything (q(u): Kronecker blocks per neuron).
``"ngd+fishleg"``  :class:`ScheduledNGD` on q(u) + :class:`FishLeg` on the rest.
=================  ===============================================================================

The returned :class:`CompositeOptimizer` has the protocol a training loop needs::

    opt = make_optimizer("ngd+fishleg", model, sample_nll_fn=pyro_sample_nll(m, g, Y))
    for it in range(n_iter):
        opt.zero_grad()
        loss = Trace_ELBO().differentiable_loss(m, g, Y)   # total negative ELBO
        loss.backward()
        opt.step()            # FishLeg runs its auxiliary update itself every aux_every steps

If ``sample_nll_fn`` cannot be given at construction, call ``opt.set_sample_nll_fn(fn)`` once, or
``if opt.aux_due: opt.update_aux(fn)`` before ``opt.step()``; ``opt.needs_sample_nll`` tells whether
any of this matters (True only when FishLeg is part of the optimiser).

For an :class:`~mgplvm.model.MGPLVM`, ``pyro_sample_nll(m.model, m.guide, Y, t_idx, beta)`` (what
``mgplvm.fit`` passes) returns :func:`~mgplvm.optim.sampling.mgplvm_sample_nll`: data resampled
from the model at the guide's latent draw, GP marginals by plain autograd (the model's fused
marginals cannot be differentiated twice).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import geoopt
import gpytorch
import torch
from torch import Tensor, nn

from mgplvm.optim.fishleg import FishLeg, SampleNLL
from mgplvm.optim.ngd import ScheduledNGD

__all__ = [
    "CompositeOptimizer",
    "FISHLEG_DEFAULTS",
    "OPTIMIZER_NAMES",
    "make_optimizer",
    "split_parameters",
]

OPTIMIZER_NAMES = ("adam", "ngd", "fishleg", "ngd+fishleg")
_NATURAL = gpytorch.variational._NaturalVariationalDistribution


def split_parameters(
    model: nn.Module | Iterable[Tensor],
) -> tuple[list[gpytorch.variational._VariationalDistribution], list[Tensor], list[Tensor]]:
    """Split trainable parameters into (q(u) modules, manifold params, Euclidean params).

    ``model`` may be an ``nn.Module`` or a plain iterable of tensors (then no q(u) modules are
    found). Parameters with ``requires_grad=False`` are skipped; shared parameters counted once.
    """
    if isinstance(model, nn.Module):
        dists = [
            m
            for m in model.modules()
            if isinstance(m, gpytorch.variational._VariationalDistribution)
        ]
        params = list(model.parameters())
    else:
        dists, params = [], list(model)
    seen = {id(p) for d in dists for p in d.parameters()}
    manifold, euclid = [], []
    for p in params:
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        is_man = isinstance(p, (geoopt.ManifoldParameter, geoopt.ManifoldTensor))
        (manifold if is_man else euclid).append(p)
    return dists, manifold, euclid


class CompositeOptimizer:
    """Several optimisers over disjoint parameter sets behind one ``zero_grad``/``step``.

    ``parts`` maps a label (``"adam"``, ``"ngd"``, ``"fishleg"``) to a torch optimiser.
    """

    def __init__(self, parts: dict[str, torch.optim.Optimizer]) -> None:
        self.parts = {k: v for k, v in parts.items() if v is not None}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.parts.values() for g in opt.param_groups]

    @property
    def fishleg(self) -> FishLeg | None:
        return next((o for o in self.parts.values() if isinstance(o, FishLeg)), None)

    @property
    def needs_sample_nll(self) -> bool:
        """True when a FishLeg part needs a :data:`SampleNLL` for its auxiliary updates."""
        return self.fishleg is not None

    @property
    def aux_due(self) -> bool:
        """True when the next :meth:`step` is a FishLeg auxiliary-update iteration."""
        fl = self.fishleg
        return fl is not None and fl.aux_due

    def set_sample_nll_fn(self, fn: SampleNLL | None) -> None:
        if self.fishleg is not None:
            self.fishleg.set_sample_nll_fn(fn)

    def update_aux(self, sample_nll_fn: SampleNLL | None = None, steps: int | None = None) -> float:
        """Forward to :meth:`FishLeg.update_aux` (returns NaN when there is no FishLeg part)."""
        fl = self.fishleg
        return float("nan") if fl is None else fl.update_aux(sample_nll_fn, steps)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.parts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Evaluate ``closure`` (loss + backward) once if given, then step every part."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.parts.values():
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {k: opt.state_dict() for k, opt in self.parts.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for k, opt in self.parts.items():
            opt.load_state_dict(state_dict[k])

    def __repr__(self) -> str:
        return f"CompositeOptimizer({', '.join(self.parts)})"


_DEFAULT_LR = {"adam": 0.05, "ngd": 0.05, "fishleg": 0.05, "ngd+fishleg": 0.05}
"""Default step sizes, equal to ``mgplvm.fit``'s ``lr`` default (0.05) so that ``make_optimizer``
and ``fit`` agree. FishLeg's η = 0.3 (the previous default) diverged on the benchmark ring
(benchmarks/optimizers.py); 0.1 diverged there too after ~45 iterations; 0.05 was stable."""

FISHLEG_DEFAULTS: dict[str, Any] = dict(
    damping=1.0, beta=0.5, max_rms=0.05, aux_every=1, warm_start=3, structure="diag"
)
"""FishLeg settings used by :func:`make_optimizer` unless overridden. Chosen for stochastic
mGPLVM ELBOs (total loss in the 10⁴ range, Fishers of latents and lengthscales ≈ 0 at
initialisation): absolute damping 1, a per-tensor trust region of 0.05 RMS per step, and diagonal
blocks — Kronecker blocks learned from single-sample FVPs were less stable in our trials (see
benchmarks/optimizers.py)."""


def make_optimizer(
    name: str,
    model: nn.Module | Iterable[Tensor],
    *,
    lr: float | None = None,
    ngd_lr: float = 0.1,
    ngd_lr_init: float = 0.01,
    ngd_ramp: int = 20,
    num_data: int = 1,
    sample_nll_fn: SampleNLL | None = None,
    **fishleg_kwargs: Any,
) -> CompositeOptimizer:
    """Build the optimiser called ``name`` (one of :data:`OPTIMIZER_NAMES`) for ``model``.

    Args:
        name: ``"adam" | "ngd" | "fishleg" | "ngd+fishleg"`` (see module docstring).
        model: ``nn.Module`` (q(u) modules are detected) or iterable of parameters.
        lr: step size of the non-NGD part: Adam's learning rate for ``"adam"``/``"ngd"``,
            FishLeg's η for ``"fishleg"``/``"ngd+fishleg"`` (default 0.05 for all, as in
            ``mgplvm.fit``).
        ngd_lr, ngd_lr_init, ngd_ramp: NGD step γ ramped from ``ngd_lr_init`` to ``ngd_lr`` over
            ``ngd_ramp`` steps (use ``ngd_lr=1, ngd_ramp=0`` for a Gaussian likelihood).
        num_data: NGD gradient multiplier; 1 for a total-ELBO loss (Pyro's differentiable_loss).
        sample_nll_fn: :data:`SampleNLL` for FishLeg's Fisher–vector products, e.g.
            :func:`~mgplvm.optim.sampling.pyro_sample_nll`.
        **fishleg_kwargs: forwarded to :class:`FishLeg` (``damping``, ``aux_every``, ...), on top
            of :data:`FISHLEG_DEFAULTS`.
    """
    key = name.lower().replace(" ", "")
    if key not in OPTIMIZER_NAMES:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZER_NAMES}")
    lr = _DEFAULT_LR[key] if lr is None else float(lr)
    dists, manifold, euclid = split_parameters(model)
    qu = [p for d in dists for p in d.parameters() if p.requires_grad]
    if fishleg_kwargs and "fishleg" not in key:
        raise TypeError(f"unexpected arguments for {name!r}: {sorted(fishleg_kwargs)}")
    parts: dict[str, torch.optim.Optimizer] = {}
    use_ngd = key.startswith("ngd")
    if use_ngd:
        if not qu:
            raise ValueError(f"{name!r} needs a model with a GPyTorch variational distribution")
        bad = [type(d).__name__ for d in dists if not isinstance(d, _NATURAL)]
        if bad:
            raise TypeError(
                f"optimizer {name!r} takes natural-gradient steps on q(u), which needs a "
                f"natural-parameterised variational distribution, but the model's q(u) is "
                f"{', '.join(sorted(set(bad)))}. Build the model with "
                "MGPLVM(..., variational_distribution='natural') (or 'tril_natural'); for a "
                "plain GPyTorch model use gpytorch.variational.NaturalVariationalDistribution. "
                "Or choose optimizer='adam' / 'fishleg', which work with any q(u)."
            )
        parts["ngd"] = ScheduledNGD(dists, num_data, ngd_lr, ngd_lr_init, ngd_ramp)
        rest = manifold + euclid
    else:
        rest = qu + manifold + euclid
        if any(isinstance(d, _NATURAL) for d in dists):
            warnings.warn(
                f"{name!r} takes unconstrained steps on natural parameters of q(u), which can make "
                "the covariance indefinite; use a Cholesky variational distribution or an 'ngd' "
                "optimizer",
                stacklevel=2,
            )
    if not rest and not use_ngd:
        raise ValueError("no trainable parameters")
    if rest:
        if "fishleg" in key:
            kw = {**FISHLEG_DEFAULTS, **fishleg_kwargs}
            groups: list[dict[str, Any]] = []
            if not use_ngd:  # q(u): one Kronecker block per neuron (the dists' batch dims)
                for d in dists:
                    ps = [p for p in d.parameters() if p.requires_grad]
                    bd = len(getattr(d, "batch_shape", ()))
                    if ps:
                        groups.append({"params": ps, "batch_dims": bd, "structure": "auto"})
                rest = manifold + euclid
            if rest:
                groups.append({"params": rest})
            parts["fishleg"] = FishLeg(groups, lr=lr, sample_nll_fn=sample_nll_fn, **kw)
        else:
            parts["adam"] = geoopt.optim.RiemannianAdam(rest, lr=lr)
    return CompositeOptimizer(parts)
