"""Curvature-aware optimisers: natural gradient for q(u), FishLeg, Riemannian wrappers.

``make_optimizer(name, model, **kwargs)`` builds ``"adam" | "ngd" | "fishleg" | "ngd+fishleg"``;
see :mod:`mgplvm.optim.factory` for the training-loop protocol.
"""

from mgplvm.optim.factory import (
    OPTIMIZER_NAMES,
    CompositeOptimizer,
    make_optimizer,
    split_parameters,
)
from mgplvm.optim.fishleg import (
    DiagLowRankBlock,
    FishLeg,
    FullBlock,
    KronBlock,
    SampleNLL,
    build_blocks,
    fisher_vector_product,
)
from mgplvm.optim.ngd import NGDSchedule, ScheduledNGD
from mgplvm.optim.sampling import (
    differentiable_gp_marginals,
    mgplvm_sample_nll,
    pyro_sample_nll,
    resampled_data_nll,
)

__all__ = [
    "OPTIMIZER_NAMES",
    "CompositeOptimizer",
    "DiagLowRankBlock",
    "FishLeg",
    "FullBlock",
    "KronBlock",
    "NGDSchedule",
    "SampleNLL",
    "ScheduledNGD",
    "build_blocks",
    "differentiable_gp_marginals",
    "fisher_vector_product",
    "make_optimizer",
    "mgplvm_sample_nll",
    "pyro_sample_nll",
    "resampled_data_nll",
    "split_parameters",
]
