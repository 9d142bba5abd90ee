"""Natural-gradient descent on the inducing-point posterior q(u) with a step-size ramp.

GPyTorch's :class:`~gpytorch.variational.NaturalVariationalDistribution` stores q(u) = N(m, S) by
its natural parameters θ = (S⁻¹m, −½S⁻¹) and routes gradients to the expectation parameters
η = (m, S + mmᵀ). Since the Fisher of an exponential family is ∂η/∂θ, the natural gradient with
respect to θ equals the ordinary gradient with respect to η, and :class:`gpytorch.optim.NGD` steps

    θ ← θ − γ · num_data · ∂L/∂η .

For a loss ``L`` that is the *total* negative ELBO (a sum over data, as returned by Pyro's
``Trace_ELBO().differentiable_loss``) use ``num_data = 1``; for GPyTorch's per-datum
``VariationalELBO`` use ``num_data = N``. For a Gaussian likelihood the expected log-likelihood is
linear in η, so one step with γ = 1 lands exactly on the optimal q(u) given everything else.

Non-conjugate likelihoods (Poisson, negative binomial) make the objective non-linear in η and large
steps can leave the cone of valid precisions. :class:`NGDSchedule` therefore ramps γ
geometrically from ``lr_init`` (default 0.01) to ``lr`` (default 0.1) over ``ramp_steps``
iterations and keeps it there (capped); :class:`ScheduledNGD` additionally halves a step (up to 10
times) whenever it would make ``−natural_mat`` indefinite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import gpytorch
import torch
from torch import Tensor

__all__ = ["NGDSchedule", "ScheduledNGD"]


class NGDSchedule:
    """γ_t = min(γ_max, γ₀ (γ_max / γ₀)^{t / ramp_steps}); constant γ_max if ``ramp_steps == 0``.

    With the defaults γ goes 0.01 → 0.1 over 20 steps (×1.12 per step), then stays at 0.1.
    """

    def __init__(self, lr: float = 0.1, lr_init: float = 0.01, ramp_steps: int = 20) -> None:
        if lr <= 0 or lr_init <= 0 or ramp_steps < 0:
            raise ValueError("need lr > 0, lr_init > 0, ramp_steps >= 0")
        self.lr, self.lr_init, self.ramp_steps = float(lr), float(min(lr_init, lr)), int(ramp_steps)

    def __call__(self, t: int) -> float:
        if self.ramp_steps == 0 or t >= self.ramp_steps:
            return self.lr
        return min(self.lr, self.lr_init * (self.lr / self.lr_init) ** (t / self.ramp_steps))


class ScheduledNGD(gpytorch.optim.NGD):
    """:class:`gpytorch.optim.NGD` over variational-distribution modules, with :class:`NGDSchedule`.

    Args:
        dists: the natural-parameterised variational distributions
            (``NaturalVariationalDistribution`` / ``TrilNaturalVariationalDistribution``), any batch
            shape (e.g. ``(N,)`` neurons × ``M`` inducing points: ``natural_vec (N, M)``,
            ``natural_mat (N, M, M)``).
        num_data: gradient multiplier (1 for a total-loss objective, see module docstring).
        lr, lr_init, ramp_steps: the γ schedule.
        safeguard: halve a step that would make ``−natural_mat`` (non-Tril form) indefinite.
    """

    def __init__(
        self,
        dists: Iterable[gpytorch.variational._VariationalDistribution],
        num_data: int = 1,
        lr: float = 0.1,
        lr_init: float = 0.01,
        ramp_steps: int = 20,
        safeguard: bool = True,
    ) -> None:
        dists = list(dists)
        for d in dists:
            if not isinstance(d, gpytorch.variational._NaturalVariationalDistribution):
                raise TypeError(
                    f"NGD needs a natural-parameterised q(u), got {type(d).__name__}; "
                    "construct the model with variational_distribution=gpytorch.variational."
                    "NaturalVariationalDistribution (or TrilNaturalVariationalDistribution)"
                )
        params = [p for d in dists for p in d.parameters() if p.requires_grad]
        super().__init__(params, num_data=num_data, lr=lr)
        self.schedule = NGDSchedule(lr, lr_init, ramp_steps)
        self.safeguard = safeguard
        self._dists = dists
        self._t = 0

    def _valid(self) -> bool:
        for d in self._dists:
            if isinstance(d, gpytorch.variational.NaturalVariationalDistribution):
                neg = -0.5 * (d.natural_mat + d.natural_mat.transpose(-1, -2))
                if not bool((torch.linalg.cholesky_ex(neg).info == 0).all()):
                    return False
        return True

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        gamma = self.schedule(self._t)
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        old = [p.detach().clone() for p in params] if self.safeguard else []
        for _ in range(11):
            for group in self.param_groups:
                group["lr"] = gamma
            super().step()
            if not self.safeguard or self._valid():
                break
            for p, o in zip(params, old, strict=True):
                p.copy_(o)
            gamma *= 0.5
        self.last_lr = gamma
        self._t += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The torch state plus the schedule's step count (a resumed fit continues the ramp)."""
        return {**super().state_dict(), "schedule_step": self._t}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self._t = int(state_dict.pop("schedule_step", 0))
        super().load_state_dict(state_dict)
