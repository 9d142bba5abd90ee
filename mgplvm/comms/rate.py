"""Shannon rate of Gaussian packets sent through a linear network (Baggio et al. 2020).

Model (DESIGN §5): ẋ = Ax + Bu, y = Cx + η with η white of intensity σ².  A packet s_k ~ N(0, Σ)
(tr Σ = 1) arrives as an impulse x(kT⁺) = x(kT⁻) + B s_k every T; the receiver reads y on
[kT, (k+1)T) while the residual activity of earlier packets acts as Gaussian interference.
With A_d = e^{AT}, W_o(T) = ∫₀ᵀ e^{Aᵀt}CᵀC e^{At} dt and W_c = A_d W_c A_dᵀ + BΣBᵀ,

    R_T(Σ) = 1/(2T) log₂ det(σ²I + W_o W_c) / det(σ²I + W_o (W_c − BΣBᵀ))      [bits / time].

Evaluated in the equivalent, cancellation-free form (matrix determinant lemma)

    R_T(Σ) = 1/(2T) log₂ det(I_m + Σ BᵀMB),   M = (σ²I + W_o J)⁻¹ W_o,   J = A_d W_c A_dᵀ,

where J = W_c − BΣBᵀ is the interference covariance and M is symmetric positive semi-definite.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.optimize as sopt
import torch
from torch import Tensor

from ..control import observability_gramian, solve_discrete_lyapunov
from . import _checks as chk

__all__ = [
    "BoundaryOptimumWarning",
    "MaxRateResult",
    "effective_rank",
    "max_rate",
    "default_T_grid",
    "default_T_range",
    "optimal_input_covariance",
    "rate_vs_noise",
    "transmission_rate",
]

_LN2 = math.log(2.0)
_OPERATOR_MAX = 2_000_000  # use the linear interference operator when n²m² is below this
_FAST_GRAMIAN_N = 32  # W_o(T) from the infinite-horizon Gramian from this size on ...
_FAST_GRAMIAN_MIN_RATIO = 0.1  # ... when tr W_o(T) / tr W_o(∞) is at least this


def _t(x, dtype: torch.dtype | None = None) -> Tensor:
    """Tensor view of ``x``; non-floating inputs become float64."""
    if isinstance(x, Tensor):
        if not (x.is_floating_point() or x.is_complex()):
            x = x.to(torch.float64)
        return x if dtype is None else x.to(dtype)
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype or torch.float64)


def _gramians(A: Tensor, C: Tensor, T: Tensor) -> tuple[Tensor, Tensor]:
    """(A_d, W_o(T)) for a scalar horizon T and a Hurwitz A.

    For n ≥ ``_FAST_GRAMIAN_N`` first try W_o(T) = W_o(∞) − A_dᵀ W_o(∞) A_d (one Lyapunov solve,
    reusing A_d; its backward is one more solve instead of differentiating a 2n × 2n matrix
    exponential).  Its absolute error is ~ε‖W_o(∞)‖, so it is used only when
    tr W_o(T) ≥ ``_FAST_GRAMIAN_MIN_RATIO`` · tr W_o(∞) (mild cancellation); otherwise, and for
    small n, mgplvm.control's finite-horizon Gramian (Van Loan on a short step + doubling).
    """
    Ad = torch.linalg.matrix_exp(A * T)
    if A.shape[-1] >= _FAST_GRAMIAN_N:
        Winf = observability_gramian(A, C)
        Wo = Winf - Ad.mT @ Winf @ Ad
        with torch.no_grad():
            tr_t = Wo.diagonal(dim1=-2, dim2=-1).sum(-1)
            tr_inf = Winf.diagonal(dim1=-2, dim2=-1).sum(-1)
            ok = bool((tr_t >= _FAST_GRAMIAN_MIN_RATIO * tr_inf).all())
        if ok:
            return Ad, 0.5 * (Wo + Wo.mT)
    return Ad, observability_gramian(A, C, T)


def _rate_from(Ad: Tensor, Wo: Tensor, B: Tensor, Sigma: Tensor, T: Tensor, s2: Tensor) -> Tensor:
    S = B @ Sigma @ B.mT
    S = 0.5 * (S + S.mT)
    batch = torch.broadcast_shapes(Ad.shape[:-2], S.shape[:-2])
    Wc = solve_discrete_lyapunov(
        Ad.expand(*batch, *Ad.shape[-2:]), S.expand(*batch, *S.shape[-2:])
    )
    return _rate_from_interference(Ad @ Wc @ Ad.mT, Wo, B, Sigma, T, s2)


def _rate_from_interference(
    J: Tensor, Wo: Tensor, B: Tensor, Sigma: Tensor, T: Tensor, s2: Tensor
) -> Tensor:
    """Rate given the interference covariance J = A_d W_c A_dᵀ (= W_c − BΣBᵀ)."""
    J = 0.5 * (J + J.mT)
    n = J.shape[-1]
    eye = torch.eye(n, dtype=J.dtype, device=J.device)
    s2 = s2[..., None, None] if s2.dim() > 0 else s2
    batch = torch.broadcast_shapes(J.shape[:-2], Wo.shape[:-2])
    M = torch.linalg.solve(s2 * eye + Wo @ J, Wo.expand(*batch, n, n))
    M = 0.5 * (M + M.mT)
    G = B.mT @ M @ B
    m = G.shape[-1]
    _, logdet = torch.linalg.slogdet(torch.eye(m, dtype=G.dtype, device=G.device) + Sigma @ G)
    return logdet / (2.0 * T * _LN2)


def _interference_operator(Ad: Tensor, B: Tensor) -> Tensor:
    """K (m, m, n, n) with A_d W_c A_dᵀ = Σ_ij Σ_ij K_ij for W_c = dlyap(A_d, BΣBᵀ): the map
    Σ ↦ interference is linear, so one batched solve over the m² basis matrices replaces a solve
    per evaluation during the Σ search."""
    n, m = B.shape
    E = torch.eye(m * m, dtype=B.dtype).reshape(m * m, m, m)
    S = B @ E @ B.mT
    Wc = solve_discrete_lyapunov(Ad.expand(m * m, n, n), S)
    return (Ad @ Wc @ Ad.mT).reshape(m, m, n, n)


def _scalars(T: Tensor | float, noise_var: Tensor | float, dt: torch.dtype
             ) -> tuple[Tensor, Tensor]:
    """T and σ² as tensors of dtype ``dt``, checked positive and finite."""
    s2 = _t(noise_var, dt)
    chk.positive_tensor("noise_var", s2, "readout noise variance σ²")
    Tt = _t(T, dt)
    chk.positive_tensor("T", Tt, "packet interval")
    return Tt, s2


def transmission_rate(
    A: Tensor, B: Tensor, C: Tensor, Sigma: Tensor, T: Tensor | float, noise_var: Tensor | float,
    check: bool = True,
) -> Tensor:
    """Rate R_T(Σ) in bits per unit time (see module docstring).

    Shapes: A (..., n, n) Hurwitz, B (..., n, m), C (..., p, n), Sigma (..., m, m) symmetric PSD
    (the constraint tr Σ = 1 is *not* imposed here), T > 0 scalar, noise_var σ² > 0 scalar or
    (...).  Batch dimensions broadcast; differentiable in every argument.

    Always checked (ValueError naming the argument): shapes, finite entries, T > 0, σ² > 0 and
    stability — A must be Hurwitz, since for an unstable A the Gramians and the interference of
    past packets diverge and no rate exists.  ``check=False`` skips only the optional test that
    Σ is symmetric positive semi-definite (one eigvalsh; tolerance √eps relative), e.g. for
    finite differences in unconstrained directions of Σ.
    """
    A, B, C, Sigma = _t(A), _t(B), _t(C), _t(Sigma)
    dt = A.dtype
    B, C, Sigma = B.to(dt), C.to(dt), Sigma.to(dt)
    chk.system(A, B, C, Sigma)
    T, s2 = _scalars(T, noise_var, dt)
    if check:
        chk.psd("Sigma", Sigma)
    chk.hurwitz(A)
    Ad, Wo = _gramians(A, C, T)
    return _rate_from(Ad, Wo, B, Sigma, T, s2)


# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _few_threads(n: int, small: int = 64):
    """Run small problems single-threaded: for tiny batched LAPACK calls intra-op threads only add
    synchronisation cost (×10–20 on a loaded 2-core machine).  The setting is restored on exit."""
    if n > small:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _sigma_of(L: Tensor) -> Tensor:
    S = L @ L.mT
    return S / S.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]


def _initial_factors(
    Ad: Tensor, Wo: Tensor, B: Tensor, T: Tensor, s2: Tensor, restarts: int, gen: torch.Generator,
    warm: Tensor | None,
) -> Tensor:
    m = B.shape[-1]
    dt = B.dtype
    inits = [torch.eye(m, dtype=dt)]
    # rank-one start along the most observable input direction (wins at high noise)
    G = B.mT @ Wo @ B
    u = torch.linalg.eigh(0.5 * (G + G.mT)).eigenvectors[:, -1]
    inits.append(torch.outer(u, u) + 1e-3 * torch.eye(m, dtype=dt))
    if warm is not None:
        ev, V = torch.linalg.eigh(0.5 * (warm + warm.mT))
        inits.append(V * ev.clamp_min(1e-8).sqrt())
    while len(inits) < restarts:
        inits.append(torch.randn(m, m, generator=gen, dtype=dt) / math.sqrt(m))
    return torch.stack(inits)


def _optimise_sigma(
    Ad: Tensor, Wo: Tensor, B: Tensor, T: Tensor, s2: Tensor, restarts: int, max_iter: int,
    seed: int, warm: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    L = _initial_factors(Ad, Wo, B, T, s2, restarts, gen, warm).clone().requires_grad_(True)
    n, m = B.shape
    if n * n * m * m <= _OPERATOR_MAX:
        K = _interference_operator(Ad, B)

        def rate_of(Sig: Tensor) -> Tensor:
            J = torch.einsum("...ij,ijkl->...kl", Sig, K)
            return _rate_from_interference(J, Wo, B, Sig, T, s2)
    else:

        def rate_of(Sig: Tensor) -> Tensor:
            return _rate_from(Ad, Wo, B, Sig, T, s2)

    opt = torch.optim.LBFGS(
        [L], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=1e-11, tolerance_change=1e-13,
    )

    def closure():
        opt.zero_grad()
        loss = -rate_of(_sigma_of(L)).sum()
        loss.backward()
        return loss

    with _few_threads(n):
        opt.step(closure)
    with torch.no_grad():
        Sig = _sigma_of(L)
        r = _rate_from(Ad, Wo, B, Sig, T, s2)  # final values from the direct solve
        k = int(torch.argmax(torch.nan_to_num(r, nan=-math.inf)))
    S = 0.5 * (Sig[k] + Sig[k].mT)
    return S.detach(), r[k].detach()


def optimal_input_covariance(
    A: Tensor, B: Tensor, C: Tensor, T: Tensor | float, noise_var: Tensor | float,
    restarts: int = 6, max_iter: int = 300, seed: int = 0, init: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Σ* = argmax R_T(Σ) over {Σ ⪰ 0, tr Σ = 1}; returns ``(Sigma (m, m), rate ())``.

    Σ = LLᵀ / tr(LLᵀ) with an unconstrained L (m, m), maximised by L-BFGS (strong Wolfe) from
    ``restarts`` starts run as one batch: Σ = I/m, a rank-one start along the most observable input
    direction, ``init`` if given, and random L.  The problem is non-convex, so the result is a lower
    bound on the true maximum.  No gradient flows to A, B, C; by the envelope theorem
    ∇R*(A) = ∇_A R_T(Σ*) — call :func:`transmission_rate` with the returned Σ* for it.
    Shapes: A (n, n) Hurwitz, B (n, m), C (p, n), init (m, m) PSD; T > 0, noise_var > 0 scalars.
    """
    A, B, C = _t(A).detach(), _t(B).detach(), _t(C).detach()
    dt = A.dtype
    B, C = B.to(dt), C.to(dt)
    init = None if init is None else _t(init, dt)
    chk.system(A, B, C, init, batched=False)
    T, s2 = _scalars(T, noise_var, dt)
    for name, v in (("T", T), ("noise_var", s2)):
        if v.dim():
            raise ValueError(f"{name} must be a scalar here; got shape {tuple(v.shape)}")
    if init is not None:
        chk.psd("init", init)
    chk.hurwitz(A)
    with _few_threads(A.shape[-1]):
        with torch.no_grad():
            Ad, Wo = _gramians(A, C, T)
        return _optimise_sigma(Ad, Wo, B, T, s2, restarts, max_iter, seed, init)


class BoundaryOptimumWarning(UserWarning):
    """The best packet interval T of :func:`max_rate` is on an edge of the searched range: R_max
    is the maximum over that range only (the rate may keep rising beyond it)."""


@dataclass
class MaxRateResult:
    """Outcome of :func:`max_rate` (``rates_grid[i]`` is max_Σ R at ``T_grid[i]``).

    ``T_range``: the searched interval (T_min, T_max); ``boundary``: ``"lower"`` or ``"upper"``
    if the best T is on that edge of it (R_max then depends on the range), else None.
    """

    rate: float
    T: float
    Sigma: Tensor
    T_grid: np.ndarray
    rates_grid: np.ndarray
    T_range: tuple[float, float] = (math.nan, math.nan)
    boundary: str | None = None


#: multiples of the fastest / slowest time constant that bound the default T range
T_FAST_FACTOR, T_SLOW_FACTOR = 0.5, 10.0
_EDGE_TOL = 0.02  # |log T − log T_edge| below which the refined optimum counts as on the edge


def default_T_range(A: Tensor) -> tuple[float, float]:
    """Default packet-interval range (T_min, T_max) = (τ_fast / 2, 10 τ_slow) of a Hurwitz A,
    with τ_fast = 1 / max|λ(A)| the fastest and τ_slow = 1 / |α(A)| the slowest time constant
    of the network (α the spectral abscissa).

    Why these limits.  Each packet carries a fixed energy (tr Σ = 1), so the input power is
    1/T.  Packets closer than about half the fastest time constant arrive before the network
    has responded to the previous one; what still raises the model's rate as T → 0 is the
    unbounded input power of idealised impulse packets, not a property of the network (the
    normal chain n = 6 at σ² = 0.01: R_max = 17.1 bits/time at T = 0.1, 19.1 at T = 10⁻⁴, and
    no peak in between).  After ten slow time constants a packet has decayed by e⁻¹⁰, so
    waiting longer adds no information and the rate falls like 1/T.  A best T on either edge is
    reported (:class:`BoundaryOptimumWarning`, ``MaxRateResult.boundary``): R_max is then the
    maximum over this range only.  For the chains of :func:`mgplvm.comms.chain` (γ = −3,
    n = 4–12) the range is about [0.1, 7]–[0.1, 9.5].
    """
    ev = torch.linalg.eigvals(_t(A).detach()).cpu().numpy()
    fast = 1.0 / max(float(np.abs(ev).max()), 1e-12)
    slow = 1.0 / max(abs(float(ev.real.max())), 1e-3 * float(np.abs(ev).max()), 1e-12)
    return T_FAST_FACTOR * fast, T_SLOW_FACTOR * slow


def default_T_grid(A: Tensor, num: int = 16, T_range: tuple[float, float] | None = None
                   ) -> np.ndarray:
    """``num`` log-spaced packet intervals over ``T_range`` (default :func:`default_T_range`)."""
    lo, hi = default_T_range(A) if T_range is None else _check_T_range(T_range)
    return np.geomspace(lo, hi, chk.integer("num", num, 1))


def _check_T_range(T_range: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = T_range
    except (TypeError, ValueError):
        raise ValueError(f"T_range must be a pair (T_min, T_max); got {T_range!r}") from None
    lo = chk.number("T_range[0]", lo, "shortest packet interval T_min", positive=True)
    hi = chk.number("T_range[1]", hi, "longest packet interval T_max", positive=True)
    if lo > hi:
        raise ValueError(f"T_range must have T_min ≤ T_max; got ({lo:g}, {hi:g})")
    return lo, hi


def _grid_of(A: Tensor, T_grid: np.ndarray | None, T_range: tuple[float, float] | None
             ) -> np.ndarray:
    if T_grid is None:
        return default_T_grid(A, T_range=T_range)
    if T_range is not None:
        raise ValueError("pass T_grid or T_range, not both (T_grid spans its own range)")
    grid = np.sort(np.asarray(T_grid, dtype=float).ravel())
    if grid.size == 0 or not np.all(np.isfinite(grid)) or grid[0] <= 0:
        raise ValueError("T_grid (packet intervals) must be non-empty, positive and finite")
    return grid


def max_rate(
    A: Tensor, B: Tensor, C: Tensor, noise_var: float, T_grid: np.ndarray | None = None,
    refine: bool = True, restarts: int = 5, max_iter: int = 100, seed: int = 0,
    T_range: tuple[float, float] | None = None,
) -> MaxRateResult:
    """R_max = max_{T, Σ} R_T(Σ) over packet intervals T in a range: Σ-optimisation on a grid of
    T (warm-started along the grid), then a bounded scalar search in log T between the
    neighbours of the best grid point.

    The maximum over T depends on the range searched (for some networks the rate keeps rising as
    T → 0), so the range is an explicit argument: ``T_range=(T_min, T_max)`` (16 log-spaced
    points), default :func:`default_T_range` — half the fastest to ten times the slowest time
    constant of A; or explicit points ``T_grid`` (then the range is [min, max] of the grid).  If
    the best T is on an edge of the range, a :class:`BoundaryOptimumWarning` is issued and
    ``result.boundary`` says which edge.

    A (n, n) Hurwitz, B (n, m), C (p, n), noise_var σ² > 0.  Non-convex: a lower bound on the
    true maximum over the range.
    """
    with torch.no_grad():
        A, B, C = _t(A), _t(B), _t(C)
        dt = A.dtype
        B, C = B.to(dt), C.to(dt)
    chk.system(A, B, C, batched=False)
    s2 = torch.tensor(chk.number("noise_var", noise_var, "readout noise variance σ²",
                                 positive=True), dtype=dt)
    chk.hurwitz(A)
    grid = _grid_of(A, T_grid, T_range)
    with _few_threads(A.shape[-1]):
        res = _max_rate(A, B, C, s2, grid, refine, restarts, max_iter, seed)
    if res.boundary is not None:
        lo, hi = res.T_range
        warnings.warn(
            f"max_rate: the best packet interval T = {res.T:.3g} is on the {res.boundary} edge of "
            f"the searched range [{lo:.3g}, {hi:.3g}]; R_max = {res.rate:.4g} is the maximum over "
            "that range only (pass a wider T_range to look further)",
            BoundaryOptimumWarning,
            stacklevel=2,
        )
    return res


def _max_rate(
    A: Tensor, B: Tensor, C: Tensor, s2: Tensor, grid: np.ndarray, refine: bool,
    restarts: int, max_iter: int, seed: int,
) -> MaxRateResult:
    dt = A.dtype
    cache: dict[float, tuple[float, Tensor]] = {}

    def solve(T: float, warm: Tensor | None, nrest: int) -> tuple[float, Tensor]:
        if T in cache:
            return cache[T]
        Tt = torch.tensor(T, dtype=dt)
        with torch.no_grad():
            Ad, Wo = _gramians(A, C, Tt)
        S, r = _optimise_sigma(Ad, Wo, B, Tt, s2, nrest, max_iter, seed, warm)
        cache[T] = (float(r), S)
        return cache[T]

    rates = np.empty(len(grid))
    warm = None
    for i, T in enumerate(grid):
        rates[i], warm = solve(float(T), warm, restarts)
    i = int(np.nanargmax(rates))
    best_T, (best_r, best_S) = float(grid[i]), cache[float(grid[i])]
    if refine and len(grid) > 1:
        lo = math.log(grid[max(i - 1, 0)])
        hi = math.log(grid[min(i + 1, len(grid) - 1)])
        res = sopt.minimize_scalar(
            lambda lt: -solve(math.exp(lt), best_S, max(2, restarts // 2))[0],
            bounds=(lo, hi), method="bounded", options={"xatol": 1e-2},
        )
        T_ref = math.exp(res.x)
        r_ref, S_ref = solve(T_ref, best_S, max(2, restarts // 2))
        if r_ref > best_r:
            best_T, best_r, best_S = T_ref, r_ref, S_ref
    T_lo, T_hi = float(grid[0]), float(grid[-1])
    boundary = None
    if len(grid) > 1 and T_hi > T_lo:
        if math.log(best_T / T_lo) < _EDGE_TOL:
            boundary = "lower"
        elif math.log(T_hi / best_T) < _EDGE_TOL:
            boundary = "upper"
    return MaxRateResult(best_r, best_T, best_S, grid, rates, (T_lo, T_hi), boundary)


def rate_vs_noise(
    networks: dict[str, Tensor], noise_vars: list[float] | np.ndarray, B: Tensor | None = None,
    C: Tensor | None = None, **max_rate_kw,
) -> dict[str, np.ndarray]:
    """R_max for each network (dict label -> A (n, n)) at each noise variance σ² > 0; B = C = I
    by default.  ``max_rate_kw`` go to :func:`max_rate`, e.g. ``T_range=(T_min, T_max)`` (default
    per network: :func:`default_T_range`; R_max depends on it, and a best T on its edge gives a
    :class:`BoundaryOptimumWarning`).  Returns label -> array of rates (bits / time), ready for
    :func:`mgplvm.comms.plot_rate_vs_noise`."""
    noise = [chk.number("noise_vars", s2, "readout noise variance σ²", positive=True)
             for s2 in np.asarray(noise_vars, dtype=float).ravel()]
    out: dict[str, np.ndarray] = {}
    for label, A in networks.items():
        A = _t(A)
        chk.square(f"networks[{label!r}]", A, batched=False)
        eye = torch.eye(A.shape[-1], dtype=A.dtype)
        Bm = eye if B is None else B
        Cm = eye if C is None else C
        out[label] = np.array([max_rate(A, Bm, Cm, s2, **max_rate_kw).rate for s2 in noise])
    return out


def effective_rank(Sigma: Tensor, kind: str = "entropy") -> Tensor:
    """Effective rank of a PSD matrix Sigma (..., m, m) from its eigenvalues λ ≥ 0, p = λ / Σλ.

    ``kind="entropy"`` (default): exp(−Σ pᵢ log pᵢ) (Roy & Vetterli 2007), in [1, m].
    ``kind="participation"``: participation ratio (Σλᵢ)² / Σλᵢ², in [1, m].
    """
    Sigma = _t(Sigma)
    lam = torch.linalg.eigvalsh(0.5 * (Sigma + Sigma.mT)).clamp_min(0.0)
    if kind == "participation":
        return lam.sum(-1) ** 2 / (lam**2).sum(-1)
    if kind != "entropy":
        raise ValueError(f"unknown kind {kind!r}; use 'entropy' or 'participation'")
    p = lam / lam.sum(-1, keepdim=True)
    return torch.exp(-torch.special.xlogy(p, p).sum(-1))
