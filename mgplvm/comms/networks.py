"""Network constructors: chains with a shared spectrum, random networks, stability-optimised
circuits.

All constructors return the *dynamics* matrix A of ẋ = Ax (float64, shape (n, n)); for the random
networks A = W − leak·I with connectivity W (columns = presynaptic neurons).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import torch
from scipy.linalg.lapack import dtrsyl
from torch import Tensor

from ..control import solve_continuous_lyapunov
from . import _checks as chk
from .nonnormality import _ssa_newton

__all__ = [
    "SOCResult",
    "chain",
    "chain_pair",
    "ei_network",
    "erdos_renyi",
    "random_gaussian",
    "stability_optimised_circuit",
]

_F64 = torch.float64


def chain(n: int, alpha: float = 1.0, gamma: float = -3.0) -> Tensor:
    """Tridiagonal chain A (n, n): A[i+1, i] = α (forward), A[i, i+1] = 1/α (backward), A[i, i] = γ.

    The off-diagonal products are 1 for every α, so A = D S D⁻¹ with D = diag(αⁱ) and S the
    symmetric (α = 1) chain: the spectrum γ + 2cos(kπ/(n+1)), k = 1..n, does not depend on α.
    α = 1 is normal (symmetric); α ≠ 1 is non-normal (condition number of D is α^{n−1}).
    n ≥ 1; α finite and non-zero; γ finite (ValueError otherwise).
    """
    n = chk.integer("n", n, 1)
    alpha = chk.number("alpha", alpha, "forward weight; the backward weight is 1/alpha",
                       nonzero=True)
    gamma = chk.number("gamma", gamma, "diagonal (leak) of the chain")
    A = gamma * torch.eye(n, dtype=_F64)
    idx = torch.arange(n - 1)
    A[idx + 1, idx] = alpha
    A[idx, idx + 1] = 1.0 / alpha
    return A


def chain_pair(n: int, alpha: float = 5.0, gamma: float = -3.0) -> tuple[Tensor, Tensor]:
    """(normal chain α = 1, non-normal chain α) with the same spectrum; see :func:`chain`."""
    return chain(n, 1.0, gamma), chain(n, alpha, gamma)


def _random_args(n: int, radius: float, leak: float, p: float | None = None) -> None:
    chk.integer("n", n, 1)
    chk.number("radius", radius, "spectral radius of the connectivity", nonneg=True)
    chk.number("leak", leak, "leak: A = W − leak·I")
    if p is not None:
        chk.fraction("p", p, "connection probability")


def _gen(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**31, ()).item()))
    return g


def random_gaussian(n: int, radius: float = 0.8, leak: float = 1.0, seed: int | None = None
                    ) -> Tensor:
    """A = −leak·I + W, Wᵢⱼ ~ N(0, radius²/n): eigenvalues fill the disc of the given radius around
    −leak (circular law), so A is stable for radius < leak (up to finite-n fluctuations)."""
    _random_args(n, radius, leak)
    W = torch.randn(n, n, generator=_gen(seed), dtype=_F64) * (radius / math.sqrt(n))
    return W - leak * torch.eye(n, dtype=_F64)


def erdos_renyi(n: int, p: float = 0.1, radius: float = 0.8, leak: float = 1.0,
                seed: int | None = None) -> Tensor:
    """A = −leak·I + W with a directed Erdős–Rényi support (edge probability p, no self-loops) and
    N(0, radius²/(np)) weights on the edges (bulk spectral radius ≈ radius); p in (0, 1]."""
    _random_args(n, radius, leak, p)
    g = _gen(seed)
    mask = (torch.rand(n, n, generator=g, dtype=_F64) < p).to(_F64)
    mask.fill_diagonal_(0.0)
    W = mask * torch.randn(n, n, generator=g, dtype=_F64) * (radius / math.sqrt(n * p))
    return W - leak * torch.eye(n, dtype=_F64)


def ei_network(n: int = 200, p: float = 0.1, radius: float = 10.0, ratio: float = 3.0,
               frac_exc: float = 0.5, leak: float = 1.0, seed: int | None = None) -> Tensor:
    """Sparse excitatory/inhibitory network obeying Dale's law (Hennequin et al. 2014).

    Columns 0..n_E−1 are excitatory (weights w₀/√n ≥ 0), the rest inhibitory (−ratio·w₀/√n),
    each present with probability p, no self-loops; w₀ = √2·radius / √(p(1−p)(1+ratio²)) puts the
    bulk of the spectrum of W in a disc of about that radius (plus an outlier set by the mean).
    Returns A = W − leak·I, n_E = round(frac_exc·n).  p in (0, 1), ratio ≥ 0, frac_exc in [0, 1].
    """
    _random_args(n, radius, leak)
    chk.fraction("p", p, "connection probability", open_high=True)
    chk.number("ratio", ratio, "inhibitory / excitatory weight ratio", nonneg=True)
    chk.fraction("frac_exc", frac_exc, "fraction of excitatory neurons", open_low=False)
    g = _gen(seed)
    n_e = int(round(frac_exc * n))
    mask = (torch.rand(n, n, generator=g, dtype=_F64) < p).to(_F64)
    mask.fill_diagonal_(0.0)
    w0 = math.sqrt(2.0) * radius / math.sqrt(p * (1 - p) * (1 + ratio**2))
    W = mask * (w0 / math.sqrt(n))
    W[:, n_e:] *= -ratio
    return W - leak * torch.eye(n, dtype=_F64)


# --------------------------------------------------------------------------------------------
@dataclass
class SOCResult:
    """Stability-optimised circuit: A = W − I, with α(W) and the smoothed abscissa per iteration."""

    A: Tensor
    W: Tensor
    n_exc: int
    spectral_abscissa: float
    smoothed_abscissa: float
    iterations: int
    seconds: float
    converged: bool
    history: dict[str, list[float]] = field(default_factory=dict)


def _schur_pair(Tm: np.ndarray, s: float) -> tuple[Tensor, Tensor]:
    """Gramians of W − sI in the real Schur basis W = U Tm Uᵀ (the RHS −I is basis invariant):
    (Tm−s)P̃ + P̃(Tm−s)ᵀ = −I and (Tm−s)ᵀQ̃ + Q̃(Tm−s) = −I, by LAPACK trsyl (quasi-triangular)."""
    n = Tm.shape[0]
    Ts = Tm - s * np.eye(n)
    minus_eye = -np.eye(n)
    P, scp, infop = dtrsyl(Ts, Ts, minus_eye, tranb="T")
    Q, scq, infoq = dtrsyl(Ts, Ts, minus_eye, trana="T")
    if infop < 0 or infoq < 0:
        raise RuntimeError("trsyl failed")
    P, Q = P / scp, Q / scq
    return torch.from_numpy(0.5 * (P + P.T)), torch.from_numpy(0.5 * (Q + Q.T))


def _control_pair(W: Tensor, s: float) -> tuple[Tensor, Tensor]:
    n = W.shape[-1]
    eye = torch.eye(n, dtype=W.dtype)
    M = W - s * eye
    X = solve_continuous_lyapunov(torch.stack([M, M.mT]), -eye.expand(2, n, n))
    return 0.5 * (X[0] + X[0].mT), 0.5 * (X[1] + X[1].mT)


def _blas_single_thread():
    """Limit BLAS/LAPACK to one thread if threadpoolctl is installed (else a no-op): the Schur and
    Sylvester calls of the SOC loop are ~8× slower with oversubscribed threads on a busy CPU."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def stability_optimised_circuit(
    n: int = 200, p: float = 0.1, radius: float = 10.0, ratio: float = 3.0, frac_exc: float = 0.5,
    lr: float = 30.0, adaptive_lr: bool = True, target: float = 0.15, criterion: str = "abscissa",
    eps: float | None = None, smoothing: tuple[float, float] = (1.5, 0.2), dale: bool = True,
    balance: bool = True, max_inh_density: float | None = None, max_iter: int = 3000,
    max_seconds: float | None = None, solver: str = "schur", seed: int | None = 0,
    W0: Tensor | None = None, verbose: bool = False,
) -> SOCResult:
    """Stability-optimised circuit (Hennequin, Vogels & Gerstner 2014, Neuron 82:1394).

    Starts from an unstable Dale network W (:func:`ei_network` + I, bulk radius ``radius``) and
    descends the smoothed spectral abscissa α̃(W) over the *inhibitory* weights only:
    W_I ← W_I − lr · [QP / tr(QP)]_I (columns of inhibitory neurons), then projects on the
    constraints: Dale's law (inhibitory weights ≤ 0, ``dale``), E/I balance (``balance``: the
    I→E and I→I blocks are rescaled so that mean(W_EI) = −ratio·mean(W_EE) and
    mean(W_II) = −ratio·mean(W_IE), as in the published SOC code), optional cap on the inhibitory
    connection density (keep the strongest ``max_inh_density`` fraction), no self-loops.
    ``adaptive_lr``: lr ×1.1 after a step that lowered the criterion, ×0.6 otherwise
    (kept within [lr/3, 10·lr]).

    Smoothing: ``eps=None`` uses the paper's adaptive ε, i.e. α̃ is evaluated at
    s = max(C·α, α + B) with (C, B) = ``smoothing`` (so α̃ ≥ α + B). A float ``eps`` targets the
    exact α̃_ε (root f(s) = 1/ε, as :func:`smoothed_spectral_abscissa`): the adaptive descent runs
    until α(W) < ``target`` (α̃_ε ≥ α, and far from stability the adaptive ε descends much faster),
    then α̃_ε itself is descended with backtracking (a step that raises α̃_ε is undone and retried
    with half the learning rate; ×1.1 after an accepted step), so it decreases monotonically.
    ``solver="schur"``: one real Schur factorisation W = UTUᵀ per step gives α and both Gramians
    (two triangular Sylvester solves, reused across the root search) — ~3× faster than
    ``solver="control"`` (two mgplvm.control Lyapunov solves per evaluation).
    Stops when the ``criterion`` ("abscissa": α(W); "smoothed": α̃_ε for a float ``eps``, else
    the adaptive α̃) is below ``target``, or after ``max_iter`` / ``max_seconds``. Network
    dynamics: ẋ = (W − I)x. ``history``: per iteration α(W), the smoothed abscissa and lr;
    ``accepted`` (one fewer entry: not for the last iterate) marks backtracked steps False.
    """
    if criterion not in ("abscissa", "smoothed"):
        raise ValueError("criterion must be 'abscissa' or 'smoothed'")
    if solver not in ("schur", "control"):
        raise ValueError("solver must be 'schur' or 'control'")
    chk.number("lr", lr, "learning rate", positive=True)
    chk.number("target", target, "stopping threshold")
    if eps is not None:
        chk.number("eps", eps, "smoothing of the spectral abscissa", positive=True)
    for name, v in zip(("smoothing[0]", "smoothing[1]"), smoothing, strict=True):
        chk.number(name, v, "adaptive smoothing (C, B)")
    if max_inh_density is not None:
        chk.fraction("max_inh_density", max_inh_density, "inhibitory connection density")
    chk.integer("max_iter", max_iter, 0)
    if max_seconds is not None:
        chk.number("max_seconds", max_seconds, "time limit", positive=True)
    if W0 is None:
        W = ei_network(n, p, radius, ratio, frac_exc, leak=0.0, seed=seed)
    else:
        W = torch.as_tensor(W0, dtype=_F64).clone()
        n = chk.square("W0", W, batched=False)
        chk.fraction("frac_exc", frac_exc, "fraction of excitatory neurons", open_low=False)
        chk.number("ratio", ratio, "inhibitory / excitatory weight ratio", nonneg=True)
    n_e = int(round(frac_exc * n))
    C, Bm = smoothing
    hist: dict[str, list[float]] = {"abscissa": [], "smoothed": [], "lr": []}
    t0 = time.perf_counter()
    with _blas_single_thread():
        it, alpha, s, converged = _soc_loop(
            W, n, n_e, lr, adaptive_lr, target, criterion, eps, C, Bm, dale, balance, ratio,
            max_inh_density, max_iter, max_seconds, solver, verbose, hist, t0,
        )
    eye = torch.eye(n, dtype=_F64)
    return SOCResult(W - eye, W, n_e, alpha, s, it, time.perf_counter() - t0, converged, hist)


def _soc_loop(
    W: Tensor, n: int, n_e: int, lr: float, adaptive_lr: bool, target: float, criterion: str,
    eps: float | None, C: float, Bm: float, dale: bool, balance: bool, ratio: float,
    max_inh_density: float | None, max_iter: int, max_seconds: float | None, solver: str,
    verbose: bool, hist: dict[str, list[float]], t0: float,
) -> tuple[int, float, float, bool]:
    converged = False
    it = 0
    alpha = s = math.inf
    prev = math.inf
    s_prev: float | None = None
    lr0 = lr
    exact = False  # phase 2 of a fixed-ε run: exact α̃_ε with backtracking
    W_prev = G_prev = None
    Wn = W.numpy()  # shares memory with W; the loop runs in numpy (no intra-op thread overhead)

    def project() -> None:
        if dale:
            np.minimum(Wn[:, n_e:], 0.0, out=Wn[:, n_e:])
        if balance:
            mee, mie = Wn[:n_e, :n_e].mean(), Wn[n_e:, :n_e].mean()
            mei, mii = Wn[:n_e, n_e:].mean(), Wn[n_e:, n_e:].mean()
            if mei != 0:
                Wn[:n_e, n_e:] *= -ratio * mee / mei
            if mii != 0:
                Wn[n_e:, n_e:] *= -ratio * mie / mii
        if max_inh_density is not None:
            WI = Wn[:, n_e:]
            k = int(round((1.0 - max_inh_density) * WI.size))
            if k > 0:
                thr = np.partition(np.abs(WI).ravel(), k - 1)[k - 1]
                WI[np.abs(WI) <= thr] = 0.0
        np.fill_diagonal(Wn, 0.0)

    for it in range(max_iter + 1):
        U = None
        if solver == "schur":
            Tm, U = sla.schur(Wn, output="real")
            # standardised real Schur form: 2×2 blocks carry Re λ on their diagonal
            alpha = float(np.diag(Tm).max())

            def pair(x: float, Tm=Tm) -> tuple[Tensor, Tensor]:
                return _schur_pair(Tm, x)
        else:
            alpha = float(np.linalg.eigvals(Wn).real.max())

            def pair(x: float) -> tuple[Tensor, Tensor]:
                return _control_pair(W, x)
        # a fixed ε is used once α(W) < target (α̃_ε ≥ α, so it cannot be below target before):
        # far from stability the adaptive ε descends much faster
        exact = exact or (eps is not None and alpha < target)
        if exact:
            omega = float(np.linalg.eigvalsh(0.5 * (Wn + Wn.T))[-1])
            s, P, Q = _ssa_newton(pair, n, alpha, omega, eps, s0=s_prev)
            s_prev = s
        else:
            s = max(C * alpha, alpha + Bm)
        hist["abscissa"].append(alpha)
        hist["smoothed"].append(s)
        hist["lr"].append(lr)
        crit = alpha if criterion == "abscissa" or (eps is not None and not exact) else s
        if verbose and it % 50 == 0:
            print(f"SOC it {it:4d}  α(W) = {alpha:8.4f}  α̃ = {s:8.4f}  lr = {lr:.3g}")
        if crit < target:
            converged = True
            break
        if it == max_iter or (max_seconds is not None and time.perf_counter() - t0 > max_seconds):
            break
        rejected = exact and W_prev is not None and crit > prev
        hist.setdefault("accepted", []).append(not rejected)
        if rejected:
            # backtrack: the fixed-ε criterion went up; halve the step from the last iterate
            assert W_prev is not None and G_prev is not None
            Wn[:] = W_prev
            lr *= 0.5
            Wn[:, n_e:] -= lr * G_prev[:, n_e:]
            project()
            continue
        if adaptive_lr and it > 0 and not exact:
            lr = min(max(lr * (1.1 if crit < prev else 0.6), lr0 / 3), 10 * lr0)
        elif exact and W_prev is not None:
            lr *= 1.1
        prev = crit
        if not exact:
            P, Q = pair(s)
        QP = Q.numpy() @ P.numpy()
        G = QP / np.trace(QP)
        if U is not None:
            G = U @ G @ U.T
        if exact:
            W_prev, G_prev = Wn.copy(), G
        Wn[:, n_e:] -= lr * G[:, n_e:]
        project()
    return it, alpha, s, converged
