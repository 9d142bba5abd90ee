"""The n-sphere Sⁿ as unit vectors in Rⁿ⁺¹ (S³ also as the group of unit quaternions).

Hand-written (rather than wrapping :class:`geoopt.Sphere`) for the mGPLVM extras: tangent
coordinates through a smooth orthonormal frame, wrapped densities, chordal distances and, on S³, the
quaternion group structure.

Conventions
-----------
* Base point / identity ``e₀ = (1, 0, …, 0)``.
* Tangent coordinates ``v (..., n)`` at ``μ`` are mapped into the ambient tangent space by an
  orthonormal frame ``F(μ)`` and ``g = expmap_coords(μ, v) = Exp_μ(F(μ) v)`` with the Riemannian
  exponential ``Exp_μ(u) = cos‖u‖ μ + sin‖u‖ u/‖u‖``.

  - Sⁿ, n ≠ 3: ``F(μ)`` is the parallel transport of the standard frame ``(e₁, …, eₙ)`` from ``e₀``
    to ``μ`` along the great circle: ``F(μ) v = (0, v) − (e₀ + μ)(μ₁:ₙ·v)/(1 + μ₀)``, smooth
    everywhere except at ``−e₀`` (no global smooth frame exists on S², hairy-ball theorem); near
    ``−e₀`` ``1/(1 + μ₀)`` is evaluated as ``(1 − μ₀)/‖μ₁:ₙ‖²`` to avoid cancellation.
  - S³: the left-invariant frame ``F(μ) v = μ ⊗ (0, v)``, so ``expmap_coords(μ, v) = μ ⊗ Exp(v)``
    with ``Exp(v) = (cos‖v‖, sin‖v‖ v/‖v‖)`` (Hamilton product, scalar first). This is the
    Riemannian exponential of the round metric, so the same density formulas hold.
* Chordal squared distance ``2(1 − xᵀy)`` (= ‖x − y‖² for unit vectors).
* Uniform log-density ``−log |Sⁿ|`` with ``|Sⁿ| = 2π^{(n+1)/2} / Γ((n+1)/2)`` (S²: 4π, S³: 2π²).
* Wrapped density of the push-forward of ``N(0, Σ)`` through ``v ↦ Exp_μ(F(μ) v)``: every tangent
  vector on the same great circle maps to ``g``, i.e. the preimages of ``Exp(v)`` are
  ``v_k = (‖v‖ + 2πk) v/‖v‖`` for all integers ``k`` (negative ``k`` run the circle the other way),
  and ``|J(v)| = |sin‖v‖ / ‖v‖|^{n−1}``:
  ``log q(g) = log Σ_{|k| ≤ kmax} N(v_k; 0, Σ) |‖v_k‖ / sin‖v‖|^{n−1}``.
  The density is w.r.t. the round (Riemannian) volume and integrates to 1. For n ≥ 2 it is
  genuinely infinite at ``μ`` and at ``−μ`` (focal points of ``Exp``; integrable singularities of
  weight ``≈ N(2πk)``): the implementation returns large but finite values there (radii are
  floored at 1e-8 and ``|sin|`` at 1e-30) and finite gradients.
"""

from __future__ import annotations

import math

import torch

from mgplvm.manifolds.base import LatentManifold, check_tangent_gaussian

__all__ = [
    "Sphere",
    "qmul",
    "qconj",
    "qexp",
    "qlog",
    "sphere_exp",
    "sphere_log",
    "radial_preimages",
    "radial_wrapped_log_prob",
    "radial_wrapped_log_prob_scaled",
]

_SMALL = 1e-6  # squared-angle threshold for the Taylor branches (error ~ x³/5040)
_R_FLOOR = 1e-8  # radius below which the direction of v is replaced by e₁ (k ≠ 0 preimages)
_SIN_FLOOR = 1e-30  # floor of |sin r| and |r + Pk| inside logs (focal points)
_LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------------------------- helpers
def _cos_sinc(r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos r, sin r / r)`` as functions of ``r² >= 0``, with stable values and gradients at 0."""
    small = r2 < _SMALL
    r = torch.where(small, torch.ones_like(r2), r2).sqrt()
    cos = torch.where(small, 1 - r2 / 2 + r2 * r2 / 24, torch.cos(r))
    sinc = torch.where(small, 1 - r2 / 6 + r2 * r2 / 120, torch.sin(r) / r)
    return cos, sinc


def _atan_ratio(s2: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``atan2(s, c) / s`` for ``s = √s2 >= 0``; finite with finite gradients as ``s → 0``.

    For ``c > 0`` and small ``t² = s²/c²`` the Taylor series ``(1 − t²/3 + t⁴/5)/c`` is used.
    Near the cut locus (``s → 0``, ``c < 0``) the ratio grows like ``π/s``; ``s`` is floored at
    1e-15 so that the result stays finite (also in float32).
    """
    c_safe = torch.where(c > 0, c, torch.ones_like(c))
    t2 = s2 / (c_safe * c_safe)
    small = (c > 0) & (t2 < _SMALL)
    s = torch.where(small, torch.ones_like(s2), s2).clamp_min(1e-30).sqrt()
    big = torch.atan2(s, c) / s
    series = (1 - t2 / 3 + t2 * t2 / 5) / c_safe
    return torch.where(small, series, big)


def sphere_exp(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Riemannian exponential on a unit sphere: ``cos‖u‖ x + sin‖u‖ u/‖u‖`` (stable at u = 0)."""
    cos, sinc = _cos_sinc(u.pow(2).sum(-1, keepdim=True))
    return cos * x + sinc * u


def sphere_log(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Riemannian logarithm on a unit sphere: the tangent vector at ``x`` of length
    ``angle(x, y)`` pointing to ``y`` (undefined at ``y = −x``, where a finite vector is returned).
    """
    c = (x * y).sum(-1, keepdim=True)
    w = y - c * x
    return _atan_ratio(w.pow(2).sum(-1, keepdim=True), c) * w


def qmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of quaternions ``(..., 4)`` (scalar first), broadcasting."""
    a0, a1, a2, a3 = a.unbind(-1)
    b0, b1, b2, b3 = b.unbind(-1)
    return torch.stack(
        [
            a0 * b0 - a1 * b1 - a2 * b2 - a3 * b3,
            a0 * b1 + a1 * b0 + a2 * b3 - a3 * b2,
            a0 * b2 - a1 * b3 + a2 * b0 + a3 * b1,
            a0 * b3 + a1 * b2 - a2 * b1 + a3 * b0,
        ],
        dim=-1,
    )


def qconj(q: torch.Tensor) -> torch.Tensor:
    """Quaternion conjugate ``(q₀, −q₁, −q₂, −q₃)`` (the inverse of a unit quaternion)."""
    return torch.cat([q[..., :1], -q[..., 1:]], -1)


def qexp(v: torch.Tensor) -> torch.Tensor:
    """``Exp(v) = (cos‖v‖, sin‖v‖ v/‖v‖)`` for ``v (..., 3)`` -> unit quaternions ``(..., 4)``."""
    cos, sinc = _cos_sinc(v.pow(2).sum(-1, keepdim=True))
    return torch.cat([cos, sinc * v], -1)


def qlog(q: torch.Tensor) -> torch.Tensor:
    """Principal inverse of :func:`qexp`: ``atan2(‖q_v‖, q₀) q_v/‖q_v‖`` (norm in [0, π])."""
    qv = q[..., 1:]
    return _atan_ratio(qv.pow(2).sum(-1, keepdim=True), q[..., :1]) * qv


def _radial_parts(v: torch.Tensor, period: float, power: int, kmax: int):
    """``(v̂ (..., d), P·k (K,), −log|J(v_k)| (..., K))`` for :func:`radial_preimages`."""
    kmax = int(kmax)
    if kmax < 0:
        raise ValueError(f"kmax must be >= 0, got {kmax}")
    pk = period * torch.arange(-kmax, kmax + 1, dtype=v.dtype, device=v.device)  # (K,)
    r2 = v.pow(2).sum(-1, keepdim=True)  # (..., 1)
    r = r2.clamp_min(_R_FLOOR**2).sqrt()
    e1 = torch.zeros_like(v)
    e1[..., 0] = 1
    vhat = torch.where(r2 > _R_FLOOR**2, v / r, e1)  # unit direction (e₁ at v = 0)
    if power == 0:
        return vhat, pk, torch.zeros(r2.shape[:-1] + pk.shape, dtype=v.dtype, device=v.device)
    # −log|J(v_k)| = power (log|r + Pk| − log|sin r|),  log|sin r| = log r + log|sinc r|
    _, sinc = _cos_sinc(r2)
    log_abs_sinc = sinc.abs().clamp_min(_SIN_FLOOR).log()  # (..., 1)
    log_ratio = (1 + pk / r).abs().clamp_min(_SIN_FLOOR).log()  # log|r_k| − log r
    return vhat, pk, power * (log_ratio - log_abs_sinc)


def radial_preimages(
    v: torch.Tensor, period: float, power: int, kmax: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Preimages ``v_k = (‖v‖ + k·period) v/‖v‖`` (``|k| <= kmax``) and ``−log|J(v_k)|``.

    ``|J(v_k)| = |sin‖v_k‖ / ‖v_k‖|^power`` (``power = n − 1`` on Sⁿ, 2 on SO(3)). Shapes:
    ``v (..., d)`` -> ``(..., K, d)`` and ``(..., K)`` with ``K = 2 kmax + 1`` (``k = -kmax..kmax``
    in increasing order). The ``k = 0`` term is exact and smooth for every ``v``.
    """
    vhat, pk, neg_log_j = _radial_parts(v, period, power, kmax)
    vk = v.unsqueeze(-2) + pk.unsqueeze(-1) * vhat.unsqueeze(-2)  # (..., K, d)
    return vk, neg_log_j


def _whiten_by_one_tril(scale_tril: torch.Tensor, *xs: torch.Tensor) -> list[torch.Tensor]:
    """``L⁻¹x`` for each ``x (..., d)`` with one ``scale_tril (d, d)``: ``L⁻¹`` once, then matrix
    products (instead of a batched triangular solve per point)."""
    eye = torch.eye(scale_tril.shape[-1], dtype=scale_tril.dtype, device=scale_tril.device)
    L_inv_t = torch.linalg.solve_triangular(scale_tril, eye, upper=False).mT
    return [x @ L_inv_t for x in xs]


def radial_wrapped_log_prob(
    v: torch.Tensor, scale_tril: torch.Tensor, period: float, power: int, kmax: int
) -> torch.Tensor:
    """``log Σ_k N(v_k; 0, L Lᵀ) / |J(v_k)|`` over :func:`radial_preimages`, ``(...)``.

    Since every ``v_k = v + Pk v̂`` lies on one line, ``L⁻¹ v_k = L⁻¹ v + Pk L⁻¹ v̂`` needs only two
    triangular solves per point instead of ``K``; a single ``scale_tril (d, d)`` for all points
    is inverted once and applied by matrix products.
    """
    vhat, pk, neg_log_j = _radial_parts(v, period, power, kmax)
    d = v.shape[-1]
    if scale_tril.ndim == 2:  # one L for every point (a transition matrix): L⁻¹ once, matmuls
        a, b = _whiten_by_one_tril(scale_tril, v, vhat)
        z = a.unsqueeze(-2) + pk.unsqueeze(-1) * b.unsqueeze(-2)  # (..., K, d)
        half_logdet = torch.diagonal(scale_tril).abs().log().sum()
    else:
        batch = torch.broadcast_shapes(v.shape[:-1], scale_tril.shape[:-2])
        rhs = torch.stack([v, vhat], -1).expand(*batch, d, 2)
        L = scale_tril.expand(*batch, d, d)
        ab = torch.linalg.solve_triangular(L, rhs, upper=False)  # (..., d, 2)
        z = ab[..., :1].transpose(-1, -2) + pk.unsqueeze(-1) * ab[..., 1:].transpose(-1, -2)
        half_logdet = torch.diagonal(L, dim1=-2, dim2=-1).abs().log().sum(-1, keepdim=True)
    lp = -0.5 * (z.pow(2).sum(-1) + d * _LOG_2PI) - half_logdet  # (..., K)
    return torch.logsumexp(lp + neg_log_j, dim=-1)


def radial_wrapped_log_prob_scaled(
    v: torch.Tensor, scale_tril: torch.Tensor, scales: torch.Tensor, period: float, power: int,
    kmax: int,
) -> torch.Tensor:
    """:func:`radial_wrapped_log_prob` under ``s · scale_tril`` for each ``s`` in ``scales (G,)``
    (one ``scale_tril (d, d)`` for all points) -> ``(G, ...)``. The preimages and Jacobians do
    not depend on the scale and ``‖L⁻¹v_k‖² = A + 2Pk B + (Pk)² C`` (``A = ‖L⁻¹v‖²``,
    ``B = (L⁻¹v)ᵀL⁻¹v̂``, ``C = ‖L⁻¹v̂‖²``), so each scale costs one pass over ``(..., K)``."""
    vhat, pk, neg_log_j = _radial_parts(v, period, power, kmax)
    d = v.shape[-1]
    a, b = _whiten_by_one_tril(scale_tril, v, vhat)
    A = a.pow(2).sum(-1, keepdim=True)
    B = (a * b).sum(-1, keepdim=True)
    C = b.pow(2).sum(-1, keepdim=True)
    q = A + 2 * pk * B + pk.pow(2) * C  # (..., K): ‖L⁻¹ v_k‖²
    half_logdet = torch.diagonal(scale_tril).abs().log().sum()
    out = []
    for s in scales:  # one fused pass per scale, the constants after the logsumexp
        w = torch.addcmul(neg_log_j, q, -0.5 / s**2)
        out.append(torch.logsumexp(w, dim=-1)
                   - (0.5 * d * _LOG_2PI + half_logdet + d * torch.log(s)))
    return torch.stack(out)


def _unit_random(shape, n_ambient, dtype, device, generator) -> torch.Tensor:
    x = torch.randn(*shape, n_ambient, dtype=dtype, device=device, generator=generator)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def _size(size) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        return tuple(size[0])
    return size


# ------------------------------------------------------------------------------------- Sphere
class Sphere(LatentManifold):
    """Sⁿ as unit vectors in Rⁿ⁺¹: ``ambient_dim = n + 1``, ``dim = n``.

    A homogeneous space (``compose``/``inverse`` raise) except S³, which is the group of unit
    quaternions (``is_group = True``: ``compose`` = Hamilton product, ``inverse`` = conjugate,
    ``identity = (1, 0, 0, 0)``) and S¹, the unit complex numbers. See the module docstring for the
    tangent frame, the ``Exp`` convention and the wrapped density.
    """

    def __init__(self, n: int = 2):
        super().__init__()
        if int(n) != n or int(n) < 1:
            raise ValueError(f"Sphere dimension must be an integer >= 1, got {n}")
        self.n = self.dim = int(n)
        self.ambient_dim = self.n + 1
        self.is_group = self.n in (1, 3)
        self.name = f"S{self.n}"

    # geoopt primitives -------------------------------------------------------------------------
    def _check_point_on_manifold(self, x, *, atol=1e-5, rtol=1e-5):
        dev = (x.norm(dim=-1) - 1).abs()
        if dev.numel() and not bool((dev <= atol).all()):
            return False, (
                f"points must be unit vectors; max |‖x‖ − 1| = {dev.max().item():.3g} > {atol:.3g} "
                "(use projx to normalise)"
            )
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=1e-5, rtol=1e-5):
        dev = (x * u).sum(-1).abs()
        if dev.numel() and not bool((dev <= atol).all()):
            return False, f"tangent vectors must satisfy xᵀu = 0; max |xᵀu| = {dev.max():.3g}"
        return True, None

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return u - (x * u).sum(-1, keepdim=True) * x

    egrad2rgrad = proju

    def inner(self, x, u, v=None, *, keepdim=False):
        v = u if v is None else v
        return (u * v).sum(-1, keepdim=keepdim)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return sphere_exp(x, u)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.projx(sphere_exp(x, u))

    def logmap(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sphere_log(x, y)

    def transp(self, x, y, v):
        return self.proju(y, v)

    def dist(self, x, y, *, keepdim=False):
        """Geodesic angle ``2 atan2(‖x − y‖, ‖x + y‖)`` (stable at 0 and π)."""
        return 2 * torch.atan2(
            (x - y).norm(dim=-1, keepdim=keepdim), (x + y).norm(dim=-1, keepdim=keepdim)
        )

    # sampling ----------------------------------------------------------------------------------
    def random(self, *size, dtype=None, device=None, generator=None) -> torch.Tensor:
        """Uniform points: normalised standard normal vectors, shape ``(*size, n + 1)``."""
        return _unit_random(_size(size), self.ambient_dim, dtype, device, generator)

    random_uniform = random

    def identity(self, *size, dtype=None, device=None) -> torch.Tensor:
        """The base point ``e₀ = (1, 0, …, 0)`` (the group identity on S¹ and S³)."""
        e = torch.zeros(*_size(size), self.ambient_dim, dtype=dtype, device=device)
        e[..., 0] = 1
        return e

    # tangent frame -----------------------------------------------------------------------------
    def _inv_one_plus(self, mu: torch.Tensor) -> torch.Tensor:
        """``1/(1 + μ₀)`` (``(..., 1)``), via ``(1 − μ₀)/‖μ₁:ₙ‖²`` when ``μ₀ < 0``."""
        c = mu[..., :1]
        w2 = mu[..., 1:].pow(2).sum(-1, keepdim=True)
        pos = c >= 0
        a = torch.where(pos, 1 + c, torch.ones_like(c))
        b = torch.where(pos, torch.ones_like(w2), w2).clamp_min(1e-12)
        return torch.where(pos, 1 / a, (1 - c) / b)

    def frame(self, mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``F(μ) v``: tangent coordinates ``(..., n)`` -> ambient tangent ``(..., n + 1)``."""
        if self.n == 3:
            return qmul(mu, torch.cat([torch.zeros_like(v[..., :1]), v], -1))
        # (0, v) − (e₀ + μ)(w·v)/(1 + μ₀) with w = μ₁:ₙ; the first entry is exactly −w·v
        w = mu[..., 1:]
        wv = (w * v).sum(-1, keepdim=True)
        rest = v - w * (wv * self._inv_one_plus(mu))
        return torch.cat([(-wv).expand(*rest.shape[:-1], 1), rest], -1)

    def frame_transpose(self, mu: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``F(μ)ᵀ u``: ambient vector ``(..., n + 1)`` -> tangent coordinates ``(..., n)``."""
        if self.n == 3:
            return qmul(qconj(mu), u)[..., 1:]
        # u₁:ₙ − (u₀ + μᵀu) w/(1 + μ₀), with (u₀ + μᵀu)/(1 + μ₀) = u₀ + (w·u)/(1 + μ₀)
        w = mu[..., 1:]
        coef = u[..., :1] + (w * u[..., 1:]).sum(-1, keepdim=True) * self._inv_one_plus(mu)
        return u[..., 1:] - coef * w

    # Lie / homogeneous structure --------------------------------------------------------------
    def expmap_coords(self, mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``Exp_μ(F(μ) v)``; on S³ this is ``μ ⊗ Exp(v)``."""
        if self.n == 3:
            return qmul(mu, qexp(v))
        return sphere_exp(mu, self.frame(mu, v))

    def logmap_coords(self, mu: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``F(μ)ᵀ Log_μ(g)`` (norm = geodesic angle in [0, π]); on S³ ``Log(μ⁻¹ ⊗ g)``."""
        if self.n == 3:
            return qlog(qmul(qconj(mu), g))
        return self.frame_transpose(mu, sphere_log(mu, g))

    def compose(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Group product: Hamilton product on S³, complex product on S¹."""
        if self.n == 3:
            return qmul(g, h)
        if self.n == 1:
            return torch.stack(
                [
                    g[..., 0] * h[..., 0] - g[..., 1] * h[..., 1],
                    g[..., 0] * h[..., 1] + g[..., 1] * h[..., 0],
                ],
                -1,
            )
        raise NotImplementedError(
            f"{self!r} is not a group (only S¹ and S³ are): use expmap_coords/logmap_coords, "
            "which act through the tangent frame F(μ)"
        )

    def inverse(self, g: torch.Tensor) -> torch.Tensor:
        """Group inverse (conjugate) on S¹ and S³."""
        if self.n in (1, 3):
            return torch.cat([g[..., :1], -g[..., 1:]], -1)
        raise NotImplementedError(
            f"{self!r} is not a group (only S¹ and S³ are): there is no inverse"
        )

    # kernels ----------------------------------------------------------------------------------
    def chordal_sqdist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``2(1 − xᵀy)`` (= ‖x − y‖² for unit vectors), clamped at 0."""
        return (2 - 2 * (x * y).sum(-1)).clamp_min(0)

    def pairwise_chordal_sqdist(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return (2 - 2 * x1 @ x2.transpose(-1, -2)).clamp_min(0)

    def pairwise_sqdist_coords(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Squared geodesic angle ``atan2(√(1 − c²), c)²``, ``c = x1ᵢᵀ x2ⱼ``."""
        c = (x1 @ x2.transpose(-1, -2)).clamp(-1, 1)
        return torch.atan2((1 - c * c).clamp_min(0).sqrt(), c).pow(2)

    # densities --------------------------------------------------------------------------------
    def log_volume(self) -> float:
        """``log |Sⁿ| = log 2 + (n+1)/2 log π − log Γ((n+1)/2)`` (S²: log 4π, S³: log 2π²)."""
        h = (self.n + 1) / 2
        return math.log(2) + h * math.log(math.pi) - math.lgamma(h)

    def wrapped_preimages(self, v: torch.Tensor, kmax: int = 5):
        """Preimages ``v_k = (‖v‖ + 2πk) v/‖v‖`` ``(..., K, n)`` and ``−log|J(v_k)|``
        ``(..., K)``."""
        return radial_preimages(v, 2 * math.pi, self.n - 1, kmax)

    def wrapped_log_prob(
        self, v: torch.Tensor, scale_tril: torch.Tensor, kmax: int = 5
    ) -> torch.Tensor:
        """``log Σ_k N(v_k; 0, Σ) |‖v_k‖/sin‖v‖|^{n−1}``, ``v_k = (‖v‖ + 2πk) v/‖v‖``, |k| <= kmax.

        ``v (..., n)`` are the coordinates of ``g`` at ``μ`` (``logmap_coords(μ, g)``);
        ``scale_tril (..., n, n)`` -> ``(...)``; w.r.t. the round volume (integrates to 1).
        """
        check_tangent_gaussian(self, v, scale_tril)
        return radial_wrapped_log_prob(v, scale_tril, 2 * math.pi, self.n - 1, kmax)

    def wrapped_log_prob_scaled(self, v, scale_tril, scales, kmax: int = 5):
        """One pass per scale over the shared preimages (:func:`radial_wrapped_log_prob_scaled`)."""
        check_tangent_gaussian(self, v, scale_tril)
        scales = torch.as_tensor(scales, dtype=v.dtype, device=v.device).reshape(-1)
        return radial_wrapped_log_prob_scaled(v, scale_tril, scales, 2 * math.pi, self.n - 1,
                                              kmax)
