"""The manifold GPLVM (Jensen et al. 2020) as a Pyro model / guide pair.

Generative model, for trials ``s``, neurons ``n`` and time bins ``t``::

    g_{s,t} ~ p(g)                       latent on a manifold (uniform, Brownian, AR(1), GP prior)
    f_n ~ GP(c_n, k_n)                   per-neuron tuning curve, k_n = s_n² φ(D(g, g') / ℓ_n²)
    y_{s,n,t} ~ p(y | f_n(g_{s,t}))      Gaussian / Poisson / negative binomial

Tuning curves are a sparse variational GP built from GPyTorch: an
:class:`gpytorch.models.ApproximateGP` with a whitened :class:`~gpytorch.variational.
VariationalStrategy`, a variational distribution over ``M`` inducing values batched over neurons
(``batch_shape=(N,)``) and ``M`` inducing points on the manifold, one
:class:`geoopt.ManifoldParameter` ``(M, ambient)`` shared by all neurons.

The ELBO, estimated by Pyro's ``Trace_ELBO(num_particles=n_mc, vectorize_particles=True)``::

    ELBO = Σ_{s,t} E_q(g)[ E_q(f|g)[log p(y_{s,:,t} | f)] + β (log p(g) − log q(g)) ]
           − Σ_n KL(q(u_n) ‖ p(u_n))

The latents are the Pyro sample site ``"g"`` (guide: :class:`~mgplvm.latents.ReLieNormal`); the GP
part is added with ``pyro.factor``: ``"y"`` (the expected log-likelihood, closed form or
Gauss–Hermite, inside the ``trials``/``time`` plates so that minibatches are rescaled) and
``"kl_u"`` (from ``variational_strategy.kl_divergence()``). All ``n_mc × trials × time`` latent
samples go through the GP in one call with inputs ``(P, ambient)``.

Speed: for the ScaleKernel(ManifoldRBFKernel / ManifoldMaternKernel) kernels the predictive
marginals ``E_q[f]``, ``Var_q[f]`` at the ``P`` inputs are computed by a fused, chunked autograd
function (:class:`_SVGPMarginals`) equal to GPyTorch's whitened ``VariationalStrategy`` output:
with ``L = chol(K_uu + jitter)``, ``α = L⁻ᵀ m`` and ``B = L⁻ᵀ (S − I) L⁻¹`` (``(N, M, M)``, formed
once), ``mean = c + K_fu α`` and ``var = s² + jitter + diag(K_fu B K_uf)``. The chordal distances
``(P, M)`` are computed once for all neurons; no ``P × P`` matrix is formed; forward and backward
each cost one batched ``N M² P`` matmul and memory stays ``O(N M chunk)`` when needed. In float32 a
whitened variant (GPyTorch's ``ComputePredictiveUpdates``) is used instead, which avoids the
cancellation in ``B``. On the circle T¹ with the RBF kernel (float64) the same marginals are
computed from the kernel's Fourier series (:func:`_circle_marginals`, ``gp_mode="circle"``, the
default there): O(K) work per input and neuron, K ≈ 10–40 terms, instead of O(M²). Other kernels go
through ``ApproximateGP.__call__``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geoopt
import gpytorch
import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from gpytorch.kernels import ScaleKernel
from gpytorch.variational.variational_strategy import ComputePredictiveUpdates
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import nn

from mgplvm._atomic import atomic_torch_save
from mgplvm.grid import DEFAULT_GRID_POINTS, GridPosterior
from mgplvm.kernels import (
    ManifoldMaternKernel,
    ManifoldRBFKernel,
    _check_points,
    factor_sqdists,
)
from mgplvm.latents import (
    BrownianPrior,
    LatentPrior,
    ReLiePosterior,
    UniformPrior,
    get_prior,
    pca_init,
    rotation_quadratic_init,
    viterbi_path,
)
from mgplvm.likelihoods import GaussianLikelihood, MGPLVMLikelihood, get_likelihood
from mgplvm.manifolds import SO3, Euclid, LatentManifold, Torus, get_manifold
from mgplvm.smoothing import SmoothedPath, particle_smoother

__all__ = [
    "MGPLVM",
    "TuningGP",
    "LatentPosteriorSummary",
    "VARIATIONAL_DISTRIBUTIONS",
    "manifold_from_name",
    "default_n_inducing",
]

FORMAT = "mgplvm.MGPLVM/1"

VARIATIONAL_DISTRIBUTIONS = {
    "cholesky": gpytorch.variational.CholeskyVariationalDistribution,
    "natural": gpytorch.variational.NaturalVariationalDistribution,
    "tril_natural": gpytorch.variational.TrilNaturalVariationalDistribution,
    "meanfield": gpytorch.variational.MeanFieldVariationalDistribution,
}

#: particles of the ``"smooth"`` latent initialisation (:meth:`MGPLVM.init_latents`)
SMOOTH_INIT_PARTICLES = 1000

_KERNELS = {"rbf": None, "matern12": 0.5, "matern32": 1.5, "matern52": 2.5}


def default_n_inducing(dim: int) -> int:
    """Inducing points ``M`` of a model on a ``dim``-dimensional manifold when none are given:
    24 / 64 / 100 for 1- / 2- / ≥3-dimensional manifolds."""
    return {1: 24, 2: 64}.get(int(dim), 100)


#: alias of :func:`mgplvm.manifolds.get_manifold` (``"T1"``, ``"R2"``, ``"S3"``, ``"SO3"``,
#: ``"T1xS2"``...; manifold objects pass through)
manifold_from_name = get_manifold


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ------------------------------------------------------------------------------------ fused GP
class _SVGPMarginals(torch.autograd.Function):
    """Predictive-marginal updates of a whitened SVGP with a stationary chordal kernel.

    Inputs: ``D (F, P, M)`` chordal squared distances per ARD factor between the ``P`` inputs and
    the ``M`` inducing points (shared by all neurons); ``c (N, F)`` = ``1/ℓ²``; ``s2 (N,)``
    outputscales; ``alpha (N, M)`` = ``L⁻ᵀ m``; ``B (N, M, M)`` = ``L⁻ᵀ(S − I)L⁻¹`` (symmetric).
    With ``K_npm = s2_n φ(Σ_f c_nf D_fpm)`` returns ``mean (N, P) = K α`` and
    ``quad (N, P) = diag(K B Kᵀ)``.

    ``chunk`` inputs are processed at a time (small enough for the elementwise passes to stay in
    cache). Forward: per chunk one pass for ``K`` (RBF: ``exp(log s² − S/2)``), one batched matmul
    ``K [B | α]`` and one pass for the quadratic form. Backward: one batched matmul
    ``Kᵀ [diag(g_quad) K | g_mean]`` (gradients of ``B`` and ``α``), three passes for
    ``W = K ⊙ ∂L/∂K`` and one each for the gradients of ``c`` and ``D``; the gradient of ``s²`` is
    ``Σ_p (g_mean · mean + 2 g_quad · quad) / s²`` (``K`` is linear in ``s²``). ``save``:
    ``"all"`` keeps ``K`` and ``K [B | α]`` for the backward pass, ``"kb"`` only the latter
    (``K`` recomputed), ``"none"`` recomputes both.
    """

    @staticmethod
    def _kernel(D, c, s2, profile, nu, inplace=True, out=None):
        # D (F, p, M) -> K (N, p, M), S (N, p, M) (S only for Matérn); ``out``: a buffer for K
        if profile == "rbf":
            if not inplace:  # differentiable by autograd
                S = torch.einsum("nf,fpm->npm", c, D)
                return torch.exp(-0.5 * S) * s2[:, None, None], None
            # K = exp(log s² − S/2): two passes over (N, p, M)
            log_s2 = s2.log()[:, None, None]
            if D.shape[0] == 1:
                cc = (-0.5 * c[:, 0])[:, None, None]
                if out is None:
                    E = torch.addcmul(log_s2, cc, D[0])
                else:
                    E = torch.addcmul(log_s2, cc, D[0], out=out)
            else:
                E = torch.einsum("nf,fpm->npm", -0.5 * c, D).add_(log_s2)
            return E.exp_(), None
        S = c[:, 0, None, None] * D[0] if D.shape[0] == 1 else torch.einsum("nf,fpm->npm", c, D)
        r = S.clamp_min(0).sqrt()
        if nu == 0.5:
            phi = torch.exp(-r)
        elif nu == 1.5:
            a = math.sqrt(3.0) * r
            phi = (1 + a) * torch.exp(-a)
        else:
            a = math.sqrt(5.0) * r
            phi = (1 + a + a.pow(2) / 3) * torch.exp(-a)
        return phi * s2[:, None, None], S

    @staticmethod
    def _dphi(S, nu):
        """dφ/dS for the Matérn profiles (zero at S = 0 for ν = 1/2, as in mgplvm.kernels)."""
        r = S.clamp_min(0).sqrt()
        if nu == 0.5:
            return torch.where(r > 0, -torch.exp(-r) / (2 * r.clamp_min(1e-30)), 0.0)
        if nu == 1.5:
            return -1.5 * torch.exp(-math.sqrt(3.0) * r)
        a = math.sqrt(5.0) * r
        return -(5.0 / 6.0) * (1 + a) * torch.exp(-a)

    @staticmethod
    def forward(ctx, D, c, s2, alpha, B, profile, nu, chunk, save):
        if save is True or save is False:  # accept booleans as well as "all"/"kb"/"none"
            save = "all" if save else "none"
        N, M = alpha.shape
        P = D.shape[1]
        Ba = torch.cat([B, alpha.unsqueeze(-1)], -1)  # (N, M, M + 1)
        mean = D.new_empty(N, P)
        quad = D.new_empty(N, P)
        saved = []
        # work buffers reused across chunks (fresh large allocations cost page faults)
        width = min(chunk, P)
        tmp = D.new_empty(N, width, M)
        kbuf = None if save == "all" else D.new_empty(N, width, M)
        kbbuf = None if save != "none" else D.new_empty(N, width, M + 1)
        for p0 in range(0, P, chunk):
            sl = slice(p0, min(P, p0 + chunk))
            p = sl.stop - p0
            K, _ = _SVGPMarginals._kernel(
                D[:, sl], c, s2, profile, nu, out=None if kbuf is None else kbuf[:, :p]
            )
            if kbbuf is None:
                KBa = torch.bmm(K, Ba)  # (N, p, M + 1): K B and K α
            else:
                KBa = torch.bmm(K, Ba, out=kbbuf[:, :p])
            mean[:, sl] = KBa[..., M]
            t = torch.mul(K, KBa[..., :M], out=tmp[:, :p])
            torch.sum(t, -1, out=quad[:, sl])
            if save == "all":
                saved += [K, KBa]
            elif save == "kb":
                saved.append(KBa)
        # saved through save_for_backward (not ctx attributes) so that autograd frees them after
        # the backward pass, as it does the inputs
        ctx.profile, ctx.nu, ctx.chunk, ctx.save = profile, nu, chunk, save
        ctx.save_for_backward(D, c, s2, alpha, B, mean, quad, *saved)
        return mean, quad

    @staticmethod
    def backward(ctx, g_mean, g_quad):
        D, c, s2, alpha, B, mean, quad, *saved = ctx.saved_tensors
        profile, nu, chunk, save = ctx.profile, ctx.nu, ctx.chunk, ctx.save
        need_D, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # q(u) frozen (latent-only fits at test bins): skip the batched matmul for its gradient
        need_Ba = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        N, M = alpha.shape
        F_, P = D.shape[0], D.shape[1]
        if g_mean is None:
            g_mean = torch.zeros_like(mean)
        if g_quad is None:
            g_quad = torch.zeros_like(quad)
        gD = torch.empty_like(D) if need_D else None
        gc = torch.zeros_like(c) if need_c else None
        # K is proportional to s²: mean is linear and quad quadratic in it
        gs2 = ((g_mean * mean).sum(-1) + 2 * (g_quad * quad).sum(-1)) / s2
        gBa = torch.zeros(N, M, M + 1, dtype=B.dtype, device=B.device) if need_Ba else None
        Ba = None if save == "all" else torch.cat([B, alpha.unsqueeze(-1)], -1)
        # work buffers reused across chunks (fresh large allocations cost page faults)
        width = min(chunk, P)
        Gbuf = D.new_empty(N, width, M + 1) if need_Ba else None
        Wbuf = D.new_empty(N, width, M)
        kbuf = None if save == "all" else D.new_empty(N, width, M)
        kbbuf = None if save != "none" else D.new_empty(N, width, M + 1)
        for i, p0 in enumerate(range(0, P, chunk)):
            sl = slice(p0, min(P, p0 + chunk))
            Dc = D[:, sl]
            p = Dc.shape[1]
            S = None
            if save == "all":
                K, KBa = saved[2 * i], saved[2 * i + 1]
            else:
                K, S = _SVGPMarginals._kernel(
                    Dc, c, s2, profile, nu, out=None if kbuf is None else kbuf[:, :p]
                )
                KBa = saved[i] if save == "kb" else torch.bmm(K, Ba, out=kbbuf[:, :p])
            gm = g_mean[:, sl].unsqueeze(-1)  # (N, p, 1)
            gq = g_quad[:, sl].unsqueeze(-1)
            if need_Ba:  # [dL/dB | dL/dα] = Kᵀ [diag(g_quad) K | g_mean]
                G = Gbuf[:, :p]
                torch.mul(K, gq, out=G[..., :M])
                G[..., M] = gm[..., 0]
                gBa.baddbmm_(K.mT, G)
            # dL/dK = g_mean αᵀ + 2 g_quad (K B);  W = K ⊙ dL/dK
            W = torch.mul(KBa[..., :M], 2 * gq, out=Wbuf[:, :p])
            W.addcmul_(gm, alpha.unsqueeze(1))
            if profile == "rbf":
                W.mul_(K)  # dL/dS = −W / 2 (K = s² exp(−S/2)); the −1/2 goes on the sums
                scale = -0.5
            else:
                if S is None:
                    S = c[:, 0, None, None] * Dc[0] if F_ == 1 else torch.einsum(
                        "nf,fpm->npm", c, Dc
                    )
                W.mul_(_SVGPMarginals._dphi(S, nu)).mul_(s2[:, None, None])  # = dL/dS
                scale = 1.0
            W2 = W.reshape(N, p * M)
            if F_ == 1:
                if need_c:
                    gc[:, 0] += scale * (W2 @ Dc.reshape(p * M))
                if need_D:
                    gD[0, sl] = (scale * c[:, 0] @ W2).reshape(p, M)
            else:
                if need_c:
                    gc += scale * (W2 @ Dc.reshape(F_, p * M).T)
                if need_D:
                    gD[:, sl] = (scale * c.T @ W2).reshape(F_, p, M)
        gB = galpha = None  # a frozen input gets None, as D does, not a zero gradient
        if need_Ba:
            gB = gBa[..., :M]
            gB = 0.5 * (gB + gB.transpose(1, 2))
            galpha = gBa[..., M]
        return gD, gc, gs2, galpha, gB, None, None, None, None


def _same_key(a: list | None, b: list) -> bool:
    """Equal lists of names, numbers, None and tensors (same shape and values)."""
    if a is None or len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                    and x.shape == y.shape and bool(torch.equal(x, y))):
                return False
        elif x != y:
            return False
    return True


# ------------------------------------------------------------------------ circle (T¹) GP path
#: quadrature points for the Fourier coefficients of the circle's RBF kernel; the truncation |k| ≤ K
#: keeps every coefficient above ``_CIRCLE_TOL`` relative to the largest, and a kernel that needs
#: K > ``_CIRCLE_MAX_K`` (a lengthscale below ≈ 0.1 rad) takes the dense fused path instead
_CIRCLE_GRID = 512
_CIRCLE_TOL = 1e-15
_CIRCLE_MAX_K = 96


def _circle_coefficients(c: torch.Tensor) -> torch.Tensor:
    """Fourier coefficients ``κ (N, Q/2 + 1)``, k = 0 … Q/2, of the circle RBF profile
    ``φ_n(Δ) = exp(−c_n(1 − cos Δ)) = Σ_k κ_nk e^{ikΔ}`` (``κ_nk = e^{−c_n} I_k(c_n)``) for
    ``c (N,)``, by the trapezoid rule on Q = ``_CIRCLE_GRID`` points: exact up to aliasing from
    |k| ≥ Q − K, negligible because κ decays faster than geometrically. Differentiable in ``c``."""
    w = torch.arange(_CIRCLE_GRID, dtype=c.dtype, device=c.device) * (2 * math.pi / _CIRCLE_GRID)
    f = torch.exp(-c[:, None] * (1 - torch.cos(w)))
    return torch.fft.rfft(f, dim=-1).real / _CIRCLE_GRID


def _circle_truncation(kappa: torch.Tensor) -> int:
    """Smallest K with every |κ_nk| < ``_CIRCLE_TOL`` κ_n0 for k > K − 2 (two terms of margin)."""
    with torch.no_grad():
        big = (kappa.abs() >= _CIRCLE_TOL * kappa[:, :1]).any(0)  # (Q/2 + 1,)
        last = int(torch.nonzero(big).max()) if bool(big.any()) else 0
    return last + 2


def _circle_marginals(
    theta: torch.Tensor,
    z: torch.Tensor,
    kappa: torch.Tensor,
    s2: torch.Tensor,
    alpha: torch.Tensor,
    B: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean = K α`` and ``quad = diag(K B Kᵀ)`` ``(N, P)`` of :class:`_SVGPMarginals` for the RBF
    kernel on the circle, ``K_npm = s²_n φ_n(θ_p − z_m)``, through the Fourier series of φ.

    Hand-written (neither GPyTorch nor geoopt has it). With ``φ_n(Δ) = Σ_{|k|≤K} κ_nk e^{ikΔ}``,
    ``K = Φ Ψ``, ``Φ_pk = s²κ_k e^{ikθ_p}``, ``Ψ_km = e^{−ikz_m}``, so
    ``mean_p = Σ_k a_k e^{ikθ_p}`` with ``a = s²κ ⊙ Ψα``, and
    ``quad_p = Σ_{k,k'} W_kk' e^{i(k−k')θ_p} = Σ_{j=−2K}^{2K} C_j e^{ijθ_p}`` with
    ``W = s⁴ diag(κ) Ψ B Ψᴴ diag(κ)`` and ``C_j`` the sum of W's j-th diagonal. Both are real
    trigonometric series in θ (``a_{−k} = ā_k``, ``C_{−j} = C̄_j``), evaluated by one real matmul
    of ``(2N, 2(2K+1))`` coefficients with the ``(2(2K+1), P)`` basis cos jθ, sin jθ: per input
    and neuron O(K) work instead of the dense path's O(M²), the same ``s²`` and ``B``.
    ``theta (P,)``, ``z (M,)``, ``kappa (N, K+1)`` (k = 0 … K), ``s2 (N,)``, ``alpha (N, M)``,
    ``B (N, M, M)`` symmetric.
    """
    N, K1 = kappa.shape
    K = K1 - 1
    n2 = 2 * K + 1
    cdt = torch.complex128 if theta.dtype == torch.float64 else torch.complex64
    k = torch.arange(-K, K + 1, dtype=theta.dtype, device=theta.device)
    ang = k[:, None] * z[None, :]  # (2K+1, M)
    psi = torch.complex(torch.cos(ang), -torch.sin(ang))  # e^{−ikz_m}
    sk = torch.cat([kappa[:, 1:].flip(-1), kappa], -1) * s2[:, None]  # s²κ_k, k = −K … K
    a = sk[:, K:] * (alpha.to(cdt) @ psi[K:].mT)  # (N, K+1): a_k, k = 0 … K
    V = psi @ B.to(cdt) @ psi.mH  # (N, 2K+1, 2K+1)
    W = sk[:, :, None] * V * sk[:, None, :]
    r, col = torch.tril_indices(n2, n2, device=theta.device)
    C = torch.zeros(N, n2, dtype=cdt, device=theta.device).index_add(1, r - col, W[:, r, col])
    w = torch.full((n2,), 2.0, dtype=theta.dtype, device=theta.device)
    w[0] = 1.0
    coef = theta.new_zeros(2 * N, 2 * n2)
    coef[:N, :K1] = a.real * w[:K1]
    coef[:N, n2 : n2 + K1] = -a.imag * w[:K1]
    coef[N:, :n2] = C.real * w
    coef[N:, n2:] = -C.imag * w
    j = torch.arange(n2, dtype=theta.dtype, device=theta.device)
    jt = theta[:, None] * j  # (P, 2K+1)
    basis = torch.cat([torch.cos(jt), torch.sin(jt)], -1)  # (P, 2(2K+1))
    out = coef @ basis.mT  # (2N, P)
    return out[:N], out[N:]


# ------------------------------------------------------------------------------------ GP module
class TuningGP(gpytorch.models.ApproximateGP):
    """Per-neuron tuning curves: an SVGP batched over neurons with shared manifold inducing points.

    Args:
        manifold: latent manifold.
        n_neurons: batch size ``N`` of q(u), kernel and mean.
        inducing_points: ``(M, ambient)`` initial inducing points (shared by all neurons).
        kernel: ``"rbf"`` or ``"matern12" | "matern32" | "matern52"`` (wrapped in a ScaleKernel
            with per-neuron outputscale; per-neuron lengthscales).
        mean: ``"constant"`` (per neuron) or ``"zero"``.
        variational_distribution: a name in :data:`VARIATIONAL_DISTRIBUTIONS` or a GPyTorch
            ``_VariationalDistribution`` class (natural-parameter classes for NGD).
        learn_inducing: learn the inducing points (a :class:`geoopt.ManifoldParameter`).
    """

    def __init__(
        self,
        manifold: LatentManifold,
        n_neurons: int,
        inducing_points: torch.Tensor,
        kernel: str = "rbf",
        mean: str = "constant",
        variational_distribution: str | type = "cholesky",
        learn_inducing: bool = True,
        lengthscale: float = 1.0,
        outputscale: float = 1.0,
        ard: bool = True,
    ) -> None:
        M = inducing_points.shape[-2]
        N = int(n_neurons)
        if isinstance(variational_distribution, str):
            if variational_distribution not in VARIATIONAL_DISTRIBUTIONS:
                raise ValueError(
                    f"unknown variational distribution {variational_distribution!r}; choose one "
                    f"of {sorted(VARIATIONAL_DISTRIBUTIONS)} or pass a GPyTorch class"
                )
            vd_cls = VARIATIONAL_DISTRIBUTIONS[variational_distribution]
        else:
            vd_cls = variational_distribution
        q_u = vd_cls(M, batch_shape=torch.Size([N]))
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing_points, q_u, learn_inducing_locations=learn_inducing
        )
        super().__init__(strategy)
        if learn_inducing:  # gpytorch registered a plain Parameter: make it a ManifoldParameter
            Z = strategy.inducing_points.detach().clone()
            strategy.inducing_points = geoopt.ManifoldParameter(Z, manifold=manifold)
        self.manifold = manifold
        self.n_neurons = N
        if mean == "constant":
            self.mean_module = gpytorch.means.ConstantMean(batch_shape=torch.Size([N]))
        elif mean == "zero":
            self.mean_module = gpytorch.means.ZeroMean(batch_shape=torch.Size([N]))
        else:
            raise ValueError(f"mean must be 'constant' or 'zero', got {mean!r}")
        if kernel not in _KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of {sorted(_KERNELS)}")
        if _KERNELS[kernel] is None:
            base = ManifoldRBFKernel(manifold, ard=ard, batch_shape=torch.Size([N]))
        else:
            base = ManifoldMaternKernel(
                manifold, nu=_KERNELS[kernel], ard=ard, batch_shape=torch.Size([N])
            )
        self.covar_module = ScaleKernel(base, batch_shape=torch.Size([N]))
        base.lengthscale = torch.full_like(base.lengthscale, float(lengthscale))
        self.covar_module.outputscale = torch.full((N,), float(outputscale))
        # initialise q(u) now (GPyTorch would do it lazily, consuming the RNG at first call)
        q_u.initialize_variational_distribution(strategy.prior_distribution)
        strategy.variational_params_initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        """GP prior at ``x (..., P, ambient)``: batch ``(N,)`` MultivariateNormal."""
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    @property
    def inducing_points(self) -> torch.Tensor:
        return self.variational_strategy.inducing_points

    def kl_divergence(self) -> torch.Tensor:
        """``KL(q(u_n) ‖ p(u_n))`` per neuron, ``(N,)`` (GPyTorch, whitened)."""
        vs = self.variational_strategy
        vs._clear_cache()
        return vs.kl_divergence()


# ------------------------------------------------------------------------------------ summaries
@dataclass
class LatentPosteriorSummary:
    """Posterior over latents: ``mean (trials, time, ambient)`` (= μ), ``cov (trials, time, dim,
    dim)`` (Σ of the tangent Gaussian), ``sd (trials, time, dim)``; on tori and Rᵈ per-coordinate
    credible bands ``lower``/``upper`` ``(trials, time, dim)`` = μ ∓ z·sd (angles not wrapped);
    ``radius (trials, time)``: the ``level`` quantile of the geodesic distance ``dist(μ, g)`` under
    q (Monte Carlo).

    With the grid posterior of the ring (:mod:`mgplvm.grid`) everything is exact: ``mean`` the
    circular mean of each bin's marginal, ``sd`` its circular s.d., ``radius`` the smallest
    half-width of an arc around the mean that holds ``level`` of the posterior, and
    ``lower``/``upper`` = mean ∓ radius (so the band holds ``level`` of the posterior even where
    it is skewed or has two modes)."""

    mean: torch.Tensor
    cov: torch.Tensor
    sd: torch.Tensor
    lower: torch.Tensor | None
    upper: torch.Tensor | None
    radius: torch.Tensor
    level: float


def _resolve_posterior(name: str, manifold: LatentManifold, prior: LatentPrior) -> str:
    """``"auto"`` -> ``"grid"`` on T¹ with a Brownian or uniform prior, else ``"relie"``."""
    ring = isinstance(manifold, Torus) and manifold.dim == 1
    if name == "auto":
        return "grid" if ring and type(prior) in (BrownianPrior, UniformPrior) else "relie"
    if name not in ("grid", "relie"):
        raise ValueError(f"latent_posterior must be 'auto', 'grid' or 'relie', got {name!r}")
    if name == "grid" and not ring:
        raise ValueError(f"latent_posterior='grid' is for the ring T1, not {manifold!r}")
    if name == "grid" and type(prior) not in (BrownianPrior, UniformPrior):
        raise ValueError(f"latent_posterior='grid' needs a Brownian or uniform prior, not "
                         f"{type(prior).__name__}")
    return name


def _check_bin_times(bin_times: Any, n_time: int) -> torch.Tensor | None:
    """``bin_times`` as a float64 tensor ``(n_time,)``, checked: finite, strictly increasing."""
    if bin_times is None:
        return None
    t = torch.as_tensor(np.asarray(bin_times, dtype=np.float64))
    if t.shape != (n_time,):
        raise ValueError(f"bin_times must have one entry per bin, shape ({n_time},); got "
                         f"{tuple(t.shape)}")
    if not bool(torch.all(torch.isfinite(t))):
        raise ValueError("bin_times contains NaN/inf entries")
    if n_time > 1 and not bool(torch.all(t[1:] > t[:-1])):
        raise ValueError("bin_times must be strictly increasing")
    return t


# ------------------------------------------------------------------------------------ the model
class MGPLVM(nn.Module):
    """Manifold GPLVM: latents on ``manifold``, SVGP tuning curves, Pyro ``model``/``guide``.

    Args:
        manifold: a :class:`~mgplvm.manifolds.LatentManifold` or its name (``"T1"``, ``"R2"``...).
        n_neurons, n_time, n_trials: data shape ``Y (trials, neurons, time)``.
        likelihood: ``"poisson"`` (default), ``"negbin"``, ``"gaussian"`` or a
            :class:`~mgplvm.likelihoods.MGPLVMLikelihood` instance (not saved by name).
        bin_size: seconds per bin for count likelihoods (rates are then in Hz).
        link: ``"exp"`` or ``"softplus"`` for count likelihoods.
        n_inducing: inducing points ``M`` (default 24 / 64 / 100 for 1- / 2- / ≥3-dim manifolds).
        kernel: ``"rbf"`` or ``"matern12" | "matern32" | "matern52"``.
        lengthscale, outputscale: initial kernel hyperparameters.
        mean: ``"constant"`` (per neuron) or ``"zero"`` GP mean.
        prior: ``"uniform"``, ``"brownian"``, ``"ar1"``, ``"gp"`` or None (uniform on compact
            manifolds, GP over time on Rᵈ); ``prior_kwargs`` go to its constructor.
        latent_cov: ``"full"`` or ``"diagonal"`` Σ_t; ``latent_sd``: its initial s.d.
        latent_posterior: ``"grid"`` — on the ring T¹ only: the exact posterior of the latent
            path on a grid of ``grid_points`` angles (a hidden Markov chain, filled by the
            forward–backward recursion; :mod:`mgplvm.grid`), fitted by EM (:mod:`mgplvm.em`);
            ``"relie"`` — per-bin Gaussians on the Lie algebra (:class:`~mgplvm.latents.
            ReLiePosterior`), fitted by stochastic variational inference; ``"auto"`` (default):
            ``"grid"`` on T¹ with a Brownian or uniform prior, else ``"relie"``.
        grid_points: angles of the grid posterior (default 120, 3° apart).
        latent_coupling: ``"none"`` (mean-field over bins) or ``"ar1"`` (the posterior noise is
            an AR(1) process over consecutive bins with learned correlation: same marginals,
            but a learned Brownian/AR(1) prior is no longer biased toward rough paths; see
            :class:`~mgplvm.latents.ReLieMarkovNormal`).
        variational_distribution: q(u) class name (``"cholesky"``, ``"natural"``,
            ``"tril_natural"``, ``"meanfield"``) or a GPyTorch class.
        Y: if given, initialise from data now (:meth:`init_from_data`); otherwise ``fit`` does it.
        init: latent initialisation used with data: ``"pca"`` (default), ``"quadratic"``
            (SO(3) only, see :meth:`init_latents`), ``"decode"``, ``"random"``.
        bin_times: the time of each of the ``n_time`` bins, in bins (strictly increasing; default
            ``0, 1, …, n_time − 1``). The priors over time (Brownian, AR(1), GP) use them: for a
            subset of a recording's bins (a cross-validation split) a Brownian step between
            bins ``k`` apart has variance ``k σ²``, where without them it would be ``σ²``.
        seed: seed for the random initial values (the global RNG is left untouched).
        dtype: parameter dtype (default float64).
    """

    def __init__(
        self,
        manifold: LatentManifold | str,
        n_neurons: int,
        n_time: int,
        n_trials: int = 1,
        *,
        likelihood: str | MGPLVMLikelihood = "poisson",
        bin_size: float = 1.0,
        link: str = "exp",
        likelihood_kwargs: dict[str, Any] | None = None,
        n_inducing: int | None = None,
        kernel: str = "rbf",
        lengthscale: float = 1.0,
        outputscale: float = 1.0,
        mean: str = "constant",
        prior: str | None = None,
        prior_kwargs: dict[str, Any] | None = None,
        latent_cov: str = "full",
        latent_sd: float = 0.1,
        latent_coupling: str = "none",
        latent_posterior: str = "auto",
        grid_points: int | None = None,
        variational_distribution: str | type = "cholesky",
        learn_inducing: bool = True,
        Y: Any = None,
        init: str = "pca",
        seed: int | None = None,
        dtype: torch.dtype | str = torch.float64,
        bin_times: Any = None,
    ) -> None:
        super().__init__()
        if isinstance(manifold, str):
            manifold = manifold_from_name(manifold)
        if not isinstance(manifold, LatentManifold):
            raise TypeError(f"manifold must be a LatentManifold or a name, got {manifold!r}")
        for name, v, lo in (("n_neurons", n_neurons, 1), ("n_time", n_time, 1),
                            ("n_trials", n_trials, 1)):
            if int(v) != v or int(v) < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v}")
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.manifold = manifold
        self.n_neurons, self.n_time, self.n_trials = int(n_neurons), int(n_time), int(n_trials)
        self.bin_times = _check_bin_times(bin_times, self.n_time)
        if n_inducing is None:
            n_inducing = default_n_inducing(manifold.dim)
        self.n_inducing = int(n_inducing)
        if self.n_inducing < 1:
            raise ValueError(f"n_inducing must be >= 1, got {n_inducing}")
        for name, v in (("lengthscale", lengthscale), ("outputscale", outputscale),
                        ("latent_sd", latent_sd)):
            if not _positive_finite(v):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        self.init_method = init
        vd_name = (
            variational_distribution
            if isinstance(variational_distribution, str)
            else variational_distribution.__name__
        )
        self._config: dict[str, Any] = {
            "manifold": manifold.name,
            "n_neurons": self.n_neurons,
            "n_time": self.n_time,
            "n_trials": self.n_trials,
            "n_inducing": self.n_inducing,
            "kernel": kernel,
            "mean": mean,
            "latent_cov": latent_cov,
            "latent_coupling": latent_coupling,
            "variational_distribution": vd_name,
            "learn_inducing": bool(learn_inducing),
            "init": init,
        }
        if self.bin_times is not None:  # only when set: earlier saved configs stay as they were
            self._config["bin_times"] = self.bin_times.tolist()
        self.gp_mode = "auto"  # "auto" | "circle" | "fused" | "whitened" | "gpytorch"
        self.memory_budget = 2**30  # bytes of kernel tensors the fused GP may keep for backward
        self.chunk_elements = 2**18  # N·M·chunk elements processed at once by the fused GP
        self.min_chunk = 128  # ... but at least this many inputs per chunk

        fork = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with fork:
            if seed is not None:
                torch.manual_seed(seed)
            Z = self._initial_inducing_points(self.n_inducing)
            self.gp = TuningGP(
                manifold, self.n_neurons, Z, kernel=kernel, mean=mean,
                variational_distribution=variational_distribution,
                learn_inducing=learn_inducing, lengthscale=lengthscale, outputscale=outputscale,
            )
            if isinstance(likelihood, MGPLVMLikelihood):
                if likelihood.n_neurons != self.n_neurons:
                    raise ValueError(
                        f"likelihood has {likelihood.n_neurons} neurons, model {self.n_neurons}"
                    )
                self.likelihood = likelihood
            else:
                kw = {"bin_size": bin_size, "link": link, **(likelihood_kwargs or {})}
                self.likelihood = get_likelihood(likelihood, self.n_neurons, **kw)
            self._config["likelihood"] = self.likelihood.name
            self._config["likelihood_kwargs"] = self.likelihood.config()
            self.prior: LatentPrior = get_prior(prior, manifold, **(prior_kwargs or {}))
            self._config["prior"] = self.prior.name
            self._config["prior_kwargs"] = self.prior.config()
            posterior = _resolve_posterior(latent_posterior, manifold, self.prior)
            self._config["latent_posterior"] = posterior
            if posterior == "grid":
                self.latents = GridPosterior(manifold, self.n_trials, self.n_time,
                                             n_points=grid_points or DEFAULT_GRID_POINTS)
                self._config["grid_points"] = self.latents.n_points
            else:
                self.latents = ReLiePosterior(
                    manifold, self.n_trials, self.n_time, cov=latent_cov, init_sd=latent_sd,
                    coupling=latent_coupling,
                )
            self._config["latent_kmax"] = self.latents.kmax
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("latents_initialized", torch.tensor(False))
        self.to(dtype)
        if Y is not None:
            self.init_from_data(Y)

    # ------------------------------------------------------------------ construction helpers
    def _initial_inducing_points(self, M: int) -> torch.Tensor:
        m = self.manifold
        if isinstance(m, Torus):
            if m.dim == 1:
                return torch.linspace(-math.pi, math.pi, M + 1)[:-1, None] + math.pi / M
            sob = torch.quasirandom.SobolEngine(m.dim, scramble=True)
            return (2 * sob.draw(M) - 1) * math.pi
        if isinstance(m, Euclid):
            return torch.randn(M, m.dim)
        return m.random(M)

    @property
    def dtype(self) -> torch.dtype:
        return self.gp.covar_module.raw_outputscale.dtype

    @property
    def device(self) -> torch.device:
        return self.gp.covar_module.raw_outputscale.device

    @property
    def bin_size(self) -> float:
        return float(getattr(self.likelihood, "bin_size", 1.0))

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments: ``MGPLVM.from_config(model.config())`` rebuilds the
        architecture (parameters from :meth:`state_dict`)."""
        cfg = copy.deepcopy(self._config)
        if "prior_kwargs" in cfg:  # read live: a prior may stop learning (fix_step_sd)
            cfg["prior_kwargs"] = self.prior.config()
        return {**cfg, "dtype": _dtype_name(self.dtype)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MGPLVM:
        """Build an (untrained) model from :meth:`config` output."""
        cfg = dict(config)
        lik_kw = dict(cfg.pop("likelihood_kwargs", {}) or {})
        vd = cfg.pop("variational_distribution", "cholesky")
        if vd not in VARIATIONAL_DISTRIBUTIONS:
            vd = getattr(gpytorch.variational, vd)
        kmax = cfg.pop("latent_kmax", 5)
        model = cls(
            cfg.pop("manifold"),
            cfg.pop("n_neurons"),
            cfg.pop("n_time"),
            cfg.pop("n_trials", 1),
            likelihood=cfg.pop("likelihood", "poisson"),
            likelihood_kwargs=lik_kw,
            n_inducing=cfg.pop("n_inducing", None),
            kernel=cfg.pop("kernel", "rbf"),
            mean=cfg.pop("mean", "constant"),
            prior=cfg.pop("prior", None),
            prior_kwargs=cfg.pop("prior_kwargs", None),
            latent_cov=cfg.pop("latent_cov", "full"),
            latent_coupling=cfg.pop("latent_coupling", "none"),
            # saved before the grid posterior existed: the per-bin Gaussian one
            latent_posterior=cfg.pop("latent_posterior", "relie"),
            grid_points=cfg.pop("grid_points", None),
            variational_distribution=vd,
            learn_inducing=cfg.pop("learn_inducing", True),
            init=cfg.pop("init", "pca"),
            dtype=cfg.pop("dtype", "float64"),
            seed=0,
            bin_times=cfg.pop("bin_times", None),
        )
        model.latents.kmax = int(kmax)
        return model

    # ------------------------------------------------------------------ data handling
    #: set while a caller that has already validated (and warned about) ``Y`` hands it on:
    #: the nested checks still raise, but do not repeat the warnings (:meth:`_validated`)
    _quiet_data_warnings: bool = False

    @contextlib.contextmanager
    def _validated(self):
        """Within this block :meth:`validate_data` checks but does not warn again: the caller
        validated the data already (``fit`` → :meth:`init_from_data` → :meth:`init_latents`)."""
        outer = self._quiet_data_warnings
        self._quiet_data_warnings = True
        try:
            yield
        finally:
            self._quiet_data_warnings = outer

    def validate_data(self, Y: Any, name: str = "Y", neurons: Any = None) -> torch.Tensor:
        """Check ``Y (trials, neurons, time)`` against the model and the likelihood and return it
        as a tensor of the model's dtype/device. Raises ``ValueError`` naming the problem; warns
        about neurons that never fire (count likelihoods) or are constant (Gaussian)."""
        if isinstance(Y, np.ndarray):
            Y = torch.from_numpy(np.ascontiguousarray(Y))
        if not isinstance(Y, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(Y).__name__}")
        if Y.dim() != 3:
            raise ValueError(
                f"{name} must have shape (trials, neurons, time); got {Y.dim()} dimension(s) "
                f"{tuple(Y.shape)} (add a leading trial axis with Y[None] for a single trial)"
            )
        n_neurons = self.n_neurons if neurons is None else len(neurons)
        expected = (self.n_trials, n_neurons, self.n_time)
        if tuple(Y.shape) != expected:
            what = [
                f"{lbl} {got} != {want}"
                for lbl, got, want in zip(
                    ("trials", "neurons", "time"), Y.shape, expected, strict=True
                )
                if got != want
            ]
            raise ValueError(
                f"{name} has shape {tuple(Y.shape)} but the model expects {expected} "
                f"(trials, neurons, time): {', '.join(what)}"
            )
        if self.n_time < 2:
            raise ValueError(f"too few time bins: {self.n_time} (need at least 2)")
        Y = Y.to(dtype=self.dtype, device=self.device)
        self.likelihood.validate(Y, name, warn=not self._quiet_data_warnings)
        return Y

    @torch.no_grad()
    def init_from_data(self, Y: Any, init: str | torch.Tensor | None = None) -> None:
        """Data-driven initialisation: per-neuron GP mean from the average rate (log-rate for the
        ``exp`` link), Gaussian noise from half the variance, and latent means (see
        :meth:`init_latents`)."""
        Y = self.validate_data(Y)
        lik = self.likelihood
        mm = self.gp.mean_module
        if isinstance(mm, gpytorch.means.ConstantMean):
            mm.constant = lik.init_mean(Y).to(self.dtype)
        if isinstance(lik, GaussianLikelihood):
            lik.noise = lik.init_noise(Y)
            self.gp.covar_module.outputscale = Y.var(dim=-1).mean(0).clamp_min(1e-6)
        with self._validated():
            self.init_latents(Y, self.init_method if init is None else init)
        self.initialized.fill_(True)

    @torch.no_grad()
    def init_latents(
        self, Y: Any, method: str | torch.Tensor = "pca", *, decode_cache: dict | None = None
    ) -> None:
        """Initialise the latent means μ from data.

        ``"pca"``: :func:`mgplvm.latents.pca_init` (angle of the two leading PCs on a ring);
        ``"quadratic"`` (SO(3) only): :func:`mgplvm.latents.rotation_quadratic_init` (the 9
        leading PCs fitted as a linear image of ``q qᵀ``);
        ``"decode"``: for every bin the best of ~1000 candidate points (uniform draws and the
        inducing points) under the current tuning curves (for held-out data with a trained
        generative model; the best *path* through them under a Brownian prior);
        ``"smooth"`` (Brownian prior): the particle-smoothed path under the current tuning curves
        and the prior's step s.d. (:meth:`smooth_latents` with 1000 particles) — slower than
        ``"decode"``, and not limited to the candidate grid; ``"random"``: uniform draws; a tensor
        ``(trials, time, ambient)``: used as is.

        ``decode_cache`` (``"decode"`` only): a dict passed to every call on models that share
        the manifold, inducing points, latent prior and bin times (e.g. the two neuron halves of
        a cross-validation fold). The first call stores its candidate points and transition
        matrices there, and later calls reuse them instead of drawing and computing their own;
        they do not depend on the tuning curves.

        With the grid posterior (T¹) ``"decode"`` and ``"smooth"`` both give the exact posterior
        under the current tuning curves and prior (one forward–backward pass); the other
        methods set bumps around their path (:meth:`~mgplvm.grid.GridPosterior.set_mean`).
        """
        if isinstance(self.latents, GridPosterior) and method in ("decode", "smooth"):
            from mgplvm.em import fit_em

            fit_em(self, Y, train="latents", learn_prior=False, progress=False)
            return
        if isinstance(method, torch.Tensor | np.ndarray):
            mu = torch.as_tensor(method, dtype=self.dtype, device=self.device)
            self.manifold.validate(mu, "initial latents")
            self.latents.set_mean(mu)
        else:
            Y = self.validate_data(Y)
            if method == "pca" and (self.n_time * self.n_trials < 3 or self.n_neurons < 2):
                warnings.warn(
                    "too little data for a PCA initialisation of the latents; using random points",
                    stacklevel=2,
                )
                method = "random"
            if method == "pca":
                mu = pca_init(
                    Y.to(torch.float64).cpu(), self.manifold, sqrt=self.likelihood.is_count
                )
            elif method == "decode":
                mu = self._decode_init(Y, cache=decode_cache)
            elif method == "smooth":
                with self._validated():
                    mu = self.smooth_latents(Y, n_particles=SMOOTH_INIT_PARTICLES).mean
            elif method == "quadratic":
                if not isinstance(self.manifold, SO3):
                    raise ValueError(
                        f"latent init 'quadratic' is for SO(3) latents, not {self.manifold!r}"
                    )
                mu = rotation_quadratic_init(
                    Y.to(torch.float64).cpu(), sqrt=self.likelihood.is_count
                )
            elif method == "random":
                mu = self.manifold.random(self.n_trials, self.n_time, dtype=self.dtype)
            else:
                raise ValueError(
                    f"unknown latent init {method!r}: 'pca', 'quadratic', 'decode', 'smooth' "
                    "or 'random'"
                )
            self.latents.set_mean(mu.to(self.dtype))
        self.latents_initialized.fill_(True)

    @torch.no_grad()
    def smooth_latents(
        self,
        Y: Any,
        step_sd: float | torch.Tensor | None = None,
        *,
        n_particles: int = 2000,
        n_initial: int | None = None,
        seed: int = 0,
    ) -> SmoothedPath:
        """Latent path by particle smoothing under the current tuning curves (frozen).

        The latents follow a Brownian walk with step s.d. ``step_sd`` per tangent coordinate
        (default: the Brownian prior's); bin ``t`` is weighted by the log predictive density
        ``Σ_n log E_{q(f_n)}[p(y_{n,t} | f_n(g))]``. Returns a
        :class:`~mgplvm.smoothing.SmoothedPath`: ``mean (trials, time, ambient)``, the
        ``log_evidence (trials,)`` of ``Y`` under this step s.d. (compare it over a grid of
        ``step_sd`` values with one ``seed`` to choose the step s.d. by marginal likelihood), and
        the filter's effective sample sizes. The first bin starts from ``n_initial`` (default
        ``20 × n_particles``) draws of the uniform density (compact manifolds) or, on Rᵈ, of a
        normal density with the per-coordinate mean and s.d. of the inducing points (the region
        where the tuning curves were learned). Cost: ``O(time × particles²)`` for the backward
        pass, and one evaluation of the GP marginals at ``particles`` points per bin.
        """
        Y = self.validate_data(Y)
        if step_sd is None:
            if type(self.prior) is not BrownianPrior:
                raise ValueError(
                    "smooth_latents needs step_sd, or a Brownian latent prior to read it from "
                    f"(the prior is {type(self.prior).__name__})"
                )
            step_sd = self.prior.step_sd.detach()
        m, B = self.manifold, self.n_trials
        g = torch.Generator(device=self.device).manual_seed(int(seed))
        n0 = int(n_initial or 20 * n_particles)
        if m.is_compact:
            initial = m.random(B, n0, dtype=self.dtype, device=self.device, generator=g)
        else:
            z = m.log0(self.gp.inducing_points.detach())  # (M, dim)
            eps = torch.randn(B, n0, m.dim, dtype=self.dtype, device=self.device, generator=g)
            initial = m.exp0(z.mean(0) + z.std(0).clamp_min(1e-3) * eps)
        lik = self.likelihood

        def log_lik(x: torch.Tensor, t: int) -> torch.Tensor:
            P = x.shape[1]
            mean, var = self.gp_marginals(x.reshape(B * P, -1))  # (neurons, B * P)
            mean = mean.reshape(-1, B, P).transpose(0, 1)  # (B, neurons, P)
            var = var.reshape(-1, B, P).transpose(0, 1)
            y = Y[:, :, t : t + 1].to(self.dtype)  # (B, neurons, 1)
            return lik.log_predictive_moments(y, mean, var).sum(-2)  # (B, P)

        return particle_smoother(
            m, log_lik, initial, self.n_time, step_sd, n_particles=n_particles, generator=g,
            gaps=self.bin_gaps(),
        )

    def _decode_init(
        self, Y: torch.Tensor, n_candidates: int = 1000, cache: dict | None = None
    ) -> torch.Tensor:
        """Per-bin best candidate under the current tuning curves; with a Markov prior over time
        (Brownian / AR(1)) the best candidate *path* instead (:func:`~mgplvm.latents.viterbi_path`
        on the candidates), which avoids isolated bins or segments decoded into the wrong mode.
        ``cache``: see :meth:`init_latents` (``decode_cache``); reused only when this model's
        key (manifold, ``n_candidates``, inducing points, prior state, bin gaps) matches."""
        markov = isinstance(self.prior, BrownianPrior) and self.n_time > 1
        gaps = self.bin_gaps() if markov else None
        key = [self.manifold.name, int(n_candidates), self.gp.inducing_points.detach()]
        if markov:  # the transition matrices depend on the prior and the gaps too
            key += [gaps, *(v.detach() for v in self.prior.state_dict().values())]
        hit = cache is not None and _same_key(cache.get("key"), key)
        if hit:
            cand = cache["candidates"]
        else:
            cand = torch.cat(
                [
                    self.manifold.random(n_candidates, dtype=self.dtype).to(self.device),
                    self.gp.inducing_points.detach(),
                ]
            )
        mean, var = self.gp_marginals(cand)  # (N, K)
        K = cand.shape[0]
        ell = torch.empty(self.n_trials, K, self.n_time, dtype=self.dtype, device=self.device)
        step = max(1, int(2**22 // max(1, K * self.n_neurons)))
        for t0 in range(0, self.n_time, step):
            y = Y[:, :, t0 : t0 + step]  # (trials, N, t)
            ell[..., t0 : t0 + step] = self.likelihood.expected_log_prob_moments(
                y.unsqueeze(1), mean.T[None, :, :, None], var.T[None, :, :, None]
            ).sum(-2)  # (trials, K, t)
        if not markov:
            if cache is not None and not hit:
                cache.update(key=key, candidates=cand)
            return cand[ell.argmax(1)]
        if hit:
            log_trans, step_index = cache["log_trans"], cache["step_index"]
        else:
            process = self.prior.distribution(self.n_trials, None, self.n_time)
            if gaps is None:
                log_trans, step_index = process.transition_log_prob(cand, cand, gap=1), None
            else:  # one transition matrix per distinct gap between consecutive bins
                distinct, step_index = torch.unique(gaps, return_inverse=True)
                log_trans = process.transition_log_prob(cand, cand, gap=distinct)
            if cache is not None:
                cache.update(key=key, candidates=cand, log_trans=log_trans, step_index=step_index)
        return cand[viterbi_path(ell, log_trans, step_index=step_index)]

    # ------------------------------------------------------------------ time
    def _prior_times(self, t_idx: torch.Tensor | None) -> torch.Tensor | None:
        """What the prior's ``distribution`` takes as its bins: ``t_idx`` itself (indices are
        times) unless :attr:`bin_times` is set, then the times of the bins ``t_idx`` (all
        bins for None)."""
        if self.bin_times is None:
            return t_idx
        times = self.bin_times.to(self.device)
        return times if t_idx is None else times[torch.as_tensor(t_idx, device=self.device)]

    def bin_gaps(self) -> torch.Tensor | None:
        """Times between consecutive bins ``(n_time − 1,)``, in bins; None when every gap is 1
        (no :attr:`bin_times`, or consecutive ones)."""
        if self.bin_times is None:
            return None
        gaps = self.bin_times[1:] - self.bin_times[:-1]
        return None if bool(torch.all(gaps == 1)) else gaps.to(self.device)

    # ------------------------------------------------------------------ the GP
    def _gp_mode(self) -> str:
        base = self.gp.covar_module.base_kernel
        fast = isinstance(self.gp.covar_module, ScaleKernel) and isinstance(
            base, (ManifoldRBFKernel, ManifoldMaternKernel)
        )
        circle = (
            fast and isinstance(base, ManifoldRBFKernel) and isinstance(self.manifold, Torus)
            and self.manifold.d == 1
        )
        if self.gp_mode != "auto":
            if self.gp_mode in ("fused", "whitened") and not fast:
                raise ValueError(f"gp_mode {self.gp_mode!r} needs a ScaleKernel(Manifold*Kernel)")
            if self.gp_mode == "circle" and not circle:
                raise ValueError(
                    "gp_mode 'circle' needs Torus(1) and a ScaleKernel(ManifoldRBFKernel)"
                )
            return self.gp_mode
        if not fast:
            return "gpytorch"
        if self.dtype != torch.float64:
            return "whitened"
        return "circle" if circle else "fused"

    def gp_marginals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginals of ``q(f_n(x))``: mean and variance ``(N, P)`` for inputs ``x (P, ambient)``.

        Equal to ``self.gp(x).mean`` / ``.variance`` (GPyTorch's whitened VariationalStrategy,
        including its jitter), computed by the fused path when possible.
        """
        mode = self._gp_mode()
        # GPyTorch memoises q(u) (and K_uu's Cholesky factor) on the strategy: a memo from an
        # earlier call would hold stale parameter values and a freed autograd graph
        self.gp.variational_strategy._clear_cache()
        if mode == "gpytorch":
            out = self.gp(x)
            return out.mean, out.variance
        gp = self.gp
        vs = gp.variational_strategy
        base = gp.covar_module.base_kernel
        Z = vs.inducing_points
        dtype = x.dtype
        jitter = vs.jitter_val
        s2 = gp.covar_module.outputscale  # (N,)
        c = base.lengthscale.squeeze(-2).pow(-2)  # (N, F)
        Kuu = gp.covar_module(Z).to_dense()
        eye = torch.eye(Z.shape[-2], dtype=dtype, device=x.device)
        L = psd_safe_cholesky((Kuu + jitter * eye).to(torch.float64)).to(dtype)
        qd = vs.variational_distribution
        m, S = qd.mean, qd.covariance_matrix
        const = gp.mean_module(x[..., :1, :])  # (N, 1)

        def sqdists() -> torch.Tensor:  # (F, P, M), not needed by the circle path
            Ds = factor_sqdists(self.manifold, x, Z, per_factor=base.ard)
            return torch.stack(Ds) if len(Ds) > 1 else Ds[0].unsqueeze(0)

        if mode == "whitened":
            D = sqdists()
            N, M = m.shape
            profile = "rbf" if isinstance(base, ManifoldRBFKernel) else "matern"
            nu = getattr(base, "nu", None)
            K, _ = _SVGPMarginals._kernel(D, c, s2, profile, nu, inplace=False)  # (N, P, M)
            mean_upd, var_upd = ComputePredictiveUpdates.apply(
                L, K.transpose(-1, -2), S - eye, m
            )
            return const + mean_upd, s2[:, None] + jitter + var_upd
        alpha = torch.linalg.solve_triangular(L.mT, m.unsqueeze(-1), upper=True).squeeze(-1)
        X = torch.linalg.solve_triangular(L.mT, S - eye, upper=True)
        B = torch.linalg.solve_triangular(L.mT, X.mT, upper=True)
        B = 0.5 * (B + B.mT)
        N, M = m.shape
        P = x.shape[-2]
        if mode == "circle":
            _check_points(self.manifold, x, "x")
            kappa = _circle_coefficients(c[:, 0])
            K = _circle_truncation(kappa)
            if K > _CIRCLE_MAX_K and self.gp_mode == "circle":
                raise ValueError(
                    f"gp_mode 'circle': the kernel needs {K} > {_CIRCLE_MAX_K} Fourier terms "
                    f"(smallest lengthscale {float(c.detach().max()) ** -0.5:.3g} rad); use 'fused'"
                )
            if K <= _CIRCLE_MAX_K:
                mean_upd, quad = _circle_marginals(x[:, 0], Z[:, 0], kappa[:, : K + 1], s2,
                                                   alpha, B)
                return const + mean_upd, s2[:, None] + jitter + quad
        D = sqdists()
        # cache-sized chunks, but at least 128 inputs: smaller batched matmuls run far below peak
        chunk = max(self.min_chunk, int(self.chunk_elements // max(1, N * M)))
        kb_bytes = N * (M + 1) * P * D.element_size()
        save = (
            "all" if 2 * kb_bytes <= self.memory_budget
            else "kb" if kb_bytes <= self.memory_budget else "none"
        )
        profile = "rbf" if isinstance(base, ManifoldRBFKernel) else "matern"
        nu = getattr(base, "nu", None)
        mean_upd, quad = _SVGPMarginals.apply(D, c, s2, alpha, B, profile, nu, chunk, save)
        return const + mean_upd, s2[:, None] + jitter + quad

    def f_moments(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginals of ``q(f)`` at latents ``g (..., trials, time, ambient)`` -> mean and variance
        ``(..., trials, neurons, time)``; all points go through the GP in one call."""
        lead = g.shape[:-1]
        mean, var = self.gp_marginals(g.reshape(-1, g.shape[-1]))
        shape = (self.n_neurons, *lead)
        return mean.reshape(shape).movedim(0, -2), var.reshape(shape).movedim(0, -2)

    def kl_u(self) -> torch.Tensor:
        """``Σ_n KL(q(u_n) ‖ p(u_n))`` (scalar)."""
        return self.gp.kl_divergence().sum()

    # ------------------------------------------------------------------ Pyro model and guide
    def model(
        self, Y: torch.Tensor, t_idx: torch.Tensor | None = None, beta: float = 1.0
    ) -> None:
        """Pyro model. ``Y (trials, neurons, time)``; ``t_idx``: the minibatch of time bins (a
        subsample of the ``time`` plate, rescaled by ``n_time / len(t_idx)``); ``beta``: weight of
        the latent prior (KL annealing)."""
        Yb = Y if t_idx is None else Y[..., t_idx]
        pyro.factor("kl_u", -self.kl_u())
        with self._plates(t_idx):
            with _scale(beta):
                g = pyro.sample(
                    "g", self.prior.distribution(self.n_trials, self._prior_times(t_idx),
                                                 self.n_time)
                )
            mean, var = self.f_moments(g)
            ell = self.likelihood.expected_log_prob_moments(Yb, mean, var).sum(-2)
            pyro.factor("y", ell)

    def guide(
        self, Y: torch.Tensor, t_idx: torch.Tensor | None = None, beta: float = 1.0
    ) -> None:
        """Pyro guide: ``g ~ ReLieNormal(μ_t, L_t)`` on the bins ``t_idx``, weighted by ``beta``."""
        with self._plates(t_idx):
            with _scale(beta):
                pyro.sample("g", self.latents.distribution(t_idx))

    @contextlib.contextmanager
    def _plates(self, t_idx):
        with pyro.plate("trials", self.n_trials, dim=-2), pyro.plate(
            "time", self.n_time, subsample=t_idx, dim=-1
        ):
            yield

    def elbo(
        self, Y: Any, n_mc: int = 16, t_idx: torch.Tensor | None = None, beta: float = 1.0
    ) -> torch.Tensor:
        """A Monte-Carlo estimate of the ELBO (differentiable), with ``n_mc`` latent samples."""
        Y = self.validate_data(Y)
        loss = pyro.infer.Trace_ELBO(
            num_particles=n_mc, vectorize_particles=True, max_plate_nesting=2
        ).differentiable_loss(self.model, self.guide, Y, t_idx, beta)
        return -loss

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def latent_posterior(self, level: float = 0.9, n_samples: int = 500) -> LatentPosteriorSummary:
        """Posterior mean μ and credible intervals of the latents (see
        :class:`LatentPosteriorSummary`)."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        if isinstance(self.latents, GridPosterior):  # exact marginals: no sampling needed
            mean, sd, radius = self.latents.summary(level)
            mu = mean[..., None].to(self.dtype)
            sd = sd[..., None].to(self.dtype)
            r = radius[..., None].to(self.dtype)
            return LatentPosteriorSummary(mu, sd.pow(2)[..., None], sd, mu - r, mu + r,
                                          radius.to(self.dtype), level)
        q = self.latents.distribution()
        cov = self.latents.covariance
        sd = torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()
        z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)))
        mu = self.latents.mu.detach().clone()
        lower = upper = None
        if isinstance(self.manifold, Torus | Euclid):
            lower, upper = mu - z * sd, mu + z * sd
        g = q.sample((n_samples,))
        dist = self.manifold.dist(mu.expand_as(g), g)
        radius = torch.quantile(dist, level, dim=0)
        return LatentPosteriorSummary(mu, cov, sd, lower, upper, radius, level)

    @torch.no_grad()
    def tuning_curves(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and s.d. of every tuning curve at ``points (K, ambient)`` -> two
        ``(neurons, K)`` tensors. Count likelihoods: the rate ``link(f)`` in Hz (lognormal moments
        for ``exp``, quadrature for ``softplus``); Gaussian: ``f``."""
        points = torch.as_tensor(points, dtype=self.dtype, device=self.device)
        if points.dim() == 1:
            points = points.unsqueeze(-1)
        self.manifold.validate(points, "points")
        mean, var = self.gp_marginals(points)
        return self.likelihood.mean_moments(mean, var)

    @torch.no_grad()
    def _latent_samples(self, n_samples: int) -> torch.Tensor:
        if n_samples == 0:
            return self.latents.mu.detach().unsqueeze(0)
        return self.latents.distribution().sample((n_samples,))

    @torch.no_grad()
    def predict(
        self, neurons: Any = None, n_samples: int = 32, batch: int = 8
    ) -> torch.Tensor:
        """Posterior-predictive mean ``E[y]`` of ``neurons`` (indices; all if None) at the current
        latent posterior: ``(trials, len(neurons), time)``, averaged over ``n_samples`` latent
        draws (``n_samples=0``: at μ)."""
        idx = self._neuron_index(neurons)
        total, count = 0.0, 0
        n = max(1, n_samples)
        for s0 in range(0, n, batch):
            k = min(batch, n - s0)
            g = self._latent_samples(0 if n_samples == 0 else k)
            mean, var = self.f_moments(g)
            total = total + self.likelihood.predictive_mean(mean, var)[..., idx, :].sum(0)
            count += g.shape[0]
        return total / count

    @torch.no_grad()
    def sample_posterior_predictive(self, n: int = 1) -> torch.Tensor:
        """Draws of new data ``(n, trials, neurons, time)``: ``g ~ q(g)``, ``f ~ q(f | g)``
        (marginally per bin), ``y ~ p(y | f)``."""
        g = self._latent_samples(n)
        mean, var = self.f_moments(g)
        f = mean + var.clamp_min(0).sqrt() * torch.randn_like(mean)
        return self.likelihood(f).sample()

    @torch.no_grad()
    def log_marginal_likelihood_bound(
        self, Y: Any, n_samples: int = 64, batch: int = 16
    ) -> float:
        """Importance-weighted lower bound on ``log p(Y)``::

            log (1/K) Σ_k exp(E_q(f|g_k)[log p(Y|f)] + log p(g_k) − log q(g_k)) − KL(q(u) ‖ p(u))

        with ``g_k ~ q(g)`` whole trajectories. It is a valid bound (Jensen twice:
        ``log p(Y|g,u) ≥ E_p(f|u)[log p(Y|f)]`` and, logsumexp being convex,
        ``E_q(u)[logsumexp(·)] ≥ logsumexp(E_q(u)[·])``) and its expectation is ≥ the ELBO (equal
        for K = 1).
        """
        Y = self.validate_data(Y)
        w = self._log_weights(Y, n_samples, batch, latent_terms=True)
        K = w.numel()
        return float(torch.logsumexp(w, 0) - math.log(K) - self.kl_u())

    @torch.no_grad()
    def held_out_log_likelihood(
        self, Y: Any, neurons: Any = None, n_samples: int = 64, batch: int = 16
    ) -> float:
        """Predictive score of ``Y (trials, len(neurons), time)`` given the current latent
        posterior (e.g. latents inferred from other neurons)::

            log (1/K) Σ_k exp( E_q(f|g_k)[log p(Y | f)] ),   g_k ~ q(g)

        (a lower bound on ``log E_q(g)[p(Y | g)]`` under the variational q(f)).
        """
        idx = self._neuron_index(neurons)
        Y = self.validate_data(Y, neurons=idx)
        w = self._log_weights(Y, n_samples, batch, latent_terms=False, idx=idx)
        return float(torch.logsumexp(w, 0) - math.log(w.numel()))

    def _log_weights(self, Y, n_samples, batch, latent_terms, idx=None) -> torch.Tensor:
        out = []
        lik = self.likelihood_subset(idx)
        q = self.latents.distribution()
        p = self.prior.distribution(self.n_trials, self._prior_times(None), self.n_time)
        for s0 in range(0, n_samples, batch):
            k = min(batch, n_samples - s0)
            g = q.sample((k,))
            mean, var = self.f_moments(g)
            if idx is not None:
                mean, var = mean[..., idx, :], var[..., idx, :]
            w = lik.expected_log_prob_moments(Y, mean, var)
            w = w.sum((-3, -2, -1))
            if latent_terms:
                w = w + (p.log_prob(g) - q.log_prob(g)).sum((-2, -1))
            out.append(w)
        return torch.cat(out)

    def likelihood_subset(self, idx: torch.Tensor | None) -> MGPLVMLikelihood:
        """The likelihood restricted to neurons ``idx`` (a copy; itself if ``idx`` is None)."""
        if idx is None:
            return self.likelihood
        lik = copy.deepcopy(self.likelihood)
        with torch.no_grad():
            for name, p in list(lik.named_parameters()):
                _set_param(lik, name, nn.Parameter(p[idx].clone(), p.requires_grad))
        lik.n_neurons = len(idx)
        return lik

    def _neuron_index(self, neurons: Any) -> torch.Tensor:
        if neurons is None:
            return torch.arange(self.n_neurons, device=self.device)
        idx = torch.as_tensor(neurons, device=self.device).long().flatten()
        if idx.numel() == 0:
            raise ValueError("empty neuron selection")
        if (idx < 0).any() or (idx >= self.n_neurons).any():
            raise ValueError(f"neuron indices must lie in [0, {self.n_neurons})")
        return idx

    # ------------------------------------------------------------------ restriction / reuse
    def _per_neuron_keys(self) -> set[str]:
        keys = {
            f"gp.{n}" for n, _ in self.gp.named_parameters() if not n.endswith("inducing_points")
        }
        keys |= {f"likelihood.{n}" for n, _ in self.likelihood.named_parameters()}
        return keys

    def _rebuilt(self, **changes: Any) -> MGPLVM:
        cfg = {**self.config(), **changes}
        if cfg.get("likelihood") not in ("gaussian", "poisson", "negbin"):
            raise ValueError("models with a custom likelihood object cannot be rebuilt")
        return type(self).from_config(cfg).to(device=self.device, dtype=self.dtype)

    def neuron_subset(self, idx: Any, share_latents: bool = True) -> MGPLVM:
        """A model of neurons ``idx`` only: q(u), kernel, mean and likelihood parameters sliced
        along the neuron batch (copies); inducing points and prior copied. With ``share_latents``
        the latent posterior module is *shared* with this model (fitting the subset with
        ``train="latents"`` updates this model's latents too — the cross-validation workflow);
        otherwise it is copied."""
        idx = self._neuron_index(idx)
        new = self._rebuilt(n_neurons=len(idx))
        per = self._per_neuron_keys()
        state = {
            k: (v[idx.to(v.device)] if k in per else v) for k, v in self.state_dict().items()
        }
        new.load_state_dict(state)
        new.gp_mode, new.memory_budget = self.gp_mode, self.memory_budget
        new.chunk_elements = self.chunk_elements
        if share_latents:
            new.latents = self.latents
        return new

    def with_new_latents(
        self, n_time: int, n_trials: int = 1, Y: Any = None, init: str = "decode",
        bin_times: Any = None,
    ) -> MGPLVM:
        """Same generative model (a copy: GP, likelihood, prior), fresh latent posterior for
        ``n_trials × n_time`` new bins at ``bin_times`` (default consecutive). With data ``Y`` the
        latent means are initialised by ``init`` (default ``"decode"``); else random, and
        :func:`mgplvm.fit` initialises them."""
        times = None if bin_times is None else _check_bin_times(bin_times, int(n_time)).tolist()
        new = self._rebuilt(n_time=int(n_time), n_trials=int(n_trials), bin_times=times)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("latents.")}
        state["latents_initialized"] = torch.tensor(False)
        missing, unexpected = new.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("latents.") for k in missing), missing
        new.gp_mode, new.memory_budget = self.gp_mode, self.memory_budget
        new.chunk_elements = self.chunk_elements
        if Y is not None:
            new.init_latents(Y, init)
        return new

    def decode(
        self,
        Y: Any,
        *,
        bin_times: Any = None,
        level: float = 0.95,
        learn_prior: bool = True,
        n_iter: int = 300,
        progress: bool = False,
    ) -> tuple[LatentPosteriorSummary, MGPLVM]:
        """Infer the latents of new data ``Y (trials, neurons, time)`` from the same neurons under
        this model's frozen tuning curves — e.g. the internal head direction during sleep from a
        model fitted on wake.

        The latent posterior has this model's family: with the grid posterior (T¹) the exact
        posterior of the new path, with the Brownian step s.d. re-learned on the new data by EM
        (``learn_prior``; sleep dynamics differ from wake); otherwise the per-bin Gaussians of a
        latent-only fit of ``n_iter`` iterations from the ``"decode"`` start. ``bin_times``: the
        new bins' times, in bins (gaps between epochs). Returns ``(summary, model)``: the
        :class:`LatentPosteriorSummary` at ``level`` and the model of the new data (a copy).
        """
        Y = torch.as_tensor(np.asarray(Y) if isinstance(Y, np.ndarray) else Y)
        if Y.dim() == 2:
            Y = Y[None]
        if Y.dim() != 3 or Y.shape[1] != self.n_neurons:
            raise ValueError(f"Y must be (trials, {self.n_neurons} neurons, time) for this model; "
                             f"got shape {tuple(Y.shape)}")
        new = self.with_new_latents(Y.shape[-1], Y.shape[0], bin_times=bin_times)
        if isinstance(new.latents, GridPosterior):
            from mgplvm.em import fit_em

            fit_em(new, Y, train="latents", learn_prior=learn_prior, progress=progress,
                   n_iter=n_iter)
        else:
            from mgplvm.fitting import fit

            new.init_latents(Y, "decode")
            fit(new, Y, train="latents", n_iter=n_iter, progress=progress)
        return new.latent_posterior(level=level), new

    def generative_parameters(self) -> list[nn.Parameter]:
        """Everything but the latent posterior: GP, likelihood and prior parameters."""
        latent = {id(p) for p in self.latents.parameters()}
        return [p for p in self.parameters() if id(p) not in latent]

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> None:
        """Save config (JSON-able dict) and parameters (plain tensors) with ``torch.save``.

        The write is atomic: a temporary file in the same folder, flushed to disk, then renamed
        over ``path``, so an interrupted save leaves any earlier file intact."""
        atomic_torch_save({"format": FORMAT, "config": self.config(),
                           "state_dict": _plain_state(self)}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: Any = None) -> MGPLVM:
        """Inverse of :meth:`save`."""
        blob = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"{path} is not a saved MGPLVM ({FORMAT})")
        model = cls.from_config(blob["config"])
        model.load_state_dict(blob["state_dict"])
        if map_location is not None:
            model.to(map_location)
        return model

    def extra_repr(self) -> str:
        return (
            f"manifold={self.manifold!r}, n_neurons={self.n_neurons}, n_time={self.n_time}, "
            f"n_trials={self.n_trials}, n_inducing={self.n_inducing}, "
            f"likelihood={self.likelihood.name}, prior={self.prior.name}"
        )


# ------------------------------------------------------------------------------------ helpers
def _scale(beta: float):
    if isinstance(beta, torch.Tensor) or beta != 1.0:
        return poutine.scale(scale=beta)
    return contextlib.nullcontext()


def _positive_finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v)) and float(v) > 0
    except (TypeError, ValueError):
        return False


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` with geoopt ManifoldTensors turned into plain tensors (no pickled
    manifolds)."""
    return {
        k: v.detach().clone().as_subclass(torch.Tensor) for k, v in module.state_dict().items()
    }


def _set_param(module: nn.Module, dotted: str, value: nn.Parameter) -> None:
    *path, leaf = dotted.split(".")
    for p in path:
        module = getattr(module, p)
    setattr(module, leaf, value)
