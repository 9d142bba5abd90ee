"""Communication through (non-normal) linear networks (DESIGN §5; Baggio, Rutten, Hennequin &
Zampieri 2020).

* rates: :func:`transmission_rate`, :func:`optimal_input_covariance`, :func:`max_rate`,
  :func:`rate_vs_noise`, :func:`effective_rank`; the packet-interval range searched for R_max,
  :func:`default_T_range` (half the fastest to ten times the slowest time constant of A), and
  :class:`BoundaryOptimumWarning` when the best interval is on its edge;
* non-normality: :func:`henrici`, :func:`numerical_abscissa`, :func:`spectral_abscissa`,
  :func:`smoothed_spectral_abscissa` (+ ``_grad``), :func:`transient_amplification`,
  :func:`max_amplification`;
* networks: :func:`chain`, :func:`chain_pair`, :func:`random_gaussian`, :func:`erdos_renyi`,
  :func:`ei_network`, :func:`stability_optimised_circuit`;
* design: :func:`design_network`;  plots: :func:`plot_rate_vs_noise`,
  :func:`plot_input_spectrum`, :func:`plot_transient_amplification`.

All Gramians and Lyapunov solves go through :mod:`mgplvm.control`, so every quantity is
differentiable with torch autograd.  Invalid arguments (wrong shapes, NaN/inf, σ² ≤ 0, T ≤ 0, an
indefinite Σ, an unstable A, a zero chain weight) raise a ValueError that names the argument.
Importing this package has no side effects (matplotlib is imported only when a plot is made).
"""

from .design import DesignResult, design_network
from .networks import (
    SOCResult,
    chain,
    chain_pair,
    ei_network,
    erdos_renyi,
    random_gaussian,
    stability_optimised_circuit,
)
from .nonnormality import (
    henrici,
    max_amplification,
    numerical_abscissa,
    smoothed_spectral_abscissa,
    smoothed_spectral_abscissa_grad,
    spectral_abscissa,
    transient_amplification,
)
from .plots import plot_input_spectrum, plot_rate_vs_noise, plot_transient_amplification
from .rate import (
    BoundaryOptimumWarning,
    MaxRateResult,
    default_T_grid,
    default_T_range,
    effective_rank,
    max_rate,
    optimal_input_covariance,
    rate_vs_noise,
    transmission_rate,
)

__all__ = [
    "BoundaryOptimumWarning",
    "DesignResult",
    "MaxRateResult",
    "SOCResult",
    "chain",
    "chain_pair",
    "default_T_grid",
    "default_T_range",
    "design_network",
    "effective_rank",
    "ei_network",
    "erdos_renyi",
    "henrici",
    "max_amplification",
    "max_rate",
    "numerical_abscissa",
    "optimal_input_covariance",
    "plot_input_spectrum",
    "plot_rate_vs_noise",
    "plot_transient_amplification",
    "random_gaussian",
    "rate_vs_noise",
    "smoothed_spectral_abscissa",
    "smoothed_spectral_abscissa_grad",
    "spectral_abscissa",
    "stability_optimised_circuit",
    "transient_amplification",
    "transmission_rate",
]
