"""Align inferred latents to ground truth up to the symmetries the model cannot identify.

The mGPLVM likelihood only depends on latents through chordal distances, so latents are identified
up to the isometries of the manifold (and, on Rᵈ, up to the kernel-lengthscale scaling). Before
comparing with ground truth, :func:`align` finds the symmetry that best maps the inferred latents
onto the truth:

* Tᵈ: a permutation of the angles (e.g. the swap on T²), a reflection ``θ_i → −θ_i`` per angle and
  a translation per angle (circular mean of the differences); the combination with the smallest
  mean chordal error wins. Errors: absolute wrapped angle differences per angle.
* spheres Sⁿ (points in Rⁿ⁺¹): an orthogonal map ``R ∈ O(n+1)`` (Kabsch / orthogonal
  Procrustes). Errors: great-circle distance ``arccos(xᵀy)``.
* SO(3) as unit quaternions: left and right multiplication by fixed rotations (and inversion) are
  the maps ``q → R q`` with ``R ∈ O(4)``, up to the sign ``q ≡ −q``; Procrustes alternated with
  per-point sign choices, from several starts. Errors: rotation angle ``2 arccos |qᵀp|``.
* Rᵈ: affine map ``x → A x + b`` by least squares (``euclid="affine"``) or a similarity
  (``"procrustes"``: rotation, scale, translation). Errors: Euclidean distance.
* Products: each factor separately.

Shapes: ``latents`` and ``truth`` ``(..., ambient_dim)`` (e.g. ``(trials, time, ambient)``).
Points where the truth is NaN (an untracked bin of a real recording) are left out: the symmetry
is fitted on the others, and their errors are NaN and not counted in the medians and means.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mgplvm.manifolds import Euclid, LatentManifold, Torus, wrap_angle

__all__ = ["Alignment", "align", "angle_error"]


@dataclass
class Alignment:
    """Result of :func:`align`.

    ``aligned``: the latents mapped into the truth's frame (shape of the input); ``errors``: per
    point (per point and angle on tori, ``(..., d)``) in radians (distance units on Rᵈ), NaN
    where the truth is NaN;
    ``median_error`` / ``mean_error`` over all entries; ``per_dim_median``: per angle on tori (per
    factor on products); ``transform``: a JSON-able description. :meth:`apply` maps model points
    into the truth's frame, :meth:`inverse` truth points into the model's frame (e.g. to evaluate
    the model's tuning curves at the true latents).
    """

    aligned: torch.Tensor
    errors: torch.Tensor
    median_error: float
    mean_error: float
    per_dim_median: list[float]
    transform: dict[str, Any]
    _fwd: Any = field(default=None, repr=False)
    _inv: Any = field(default=None, repr=False)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Model frame -> truth frame, ``(..., ambient)``."""
        return self._fwd(torch.as_tensor(x, dtype=self.aligned.dtype))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Truth frame -> model frame, ``(..., ambient)``."""
        return self._inv(torch.as_tensor(y, dtype=self.aligned.dtype))


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return torch.as_tensor(x).detach().to(torch.float64).cpu()


def align(
    latents: Any,
    truth: Any,
    manifold: LatentManifold,
    *,
    euclid: str = "affine",
    restarts: int = 16,
    seed: int = 0,
) -> Alignment:
    """Best symmetry of ``manifold`` mapping ``latents`` onto ``truth`` (see module docstring).

    Args:
        latents, truth: ``(..., ambient_dim)`` points of the same shape.
        manifold: the manifold both live on.
        euclid: ``"affine"`` or ``"procrustes"`` for Rᵈ.
        restarts: random starts for the SO(3) sign/rotation alternation.
    """
    x, y = _as_tensor(latents), _as_tensor(truth)
    if x.shape != y.shape:
        raise ValueError(f"latents {tuple(x.shape)} and truth {tuple(y.shape)} differ in shape")
    if x.shape[-1] != manifold.ambient_dim:
        raise ValueError(
            f"points have trailing dimension {x.shape[-1]}, {manifold!r} needs "
            f"{manifold.ambient_dim}"
        )
    if x.numel() == 0:
        raise ValueError("no points to align")
    shape = x.shape
    xf, yf = x.reshape(-1, shape[-1]), y.reshape(-1, shape[-1])
    if not bool(torch.isfinite(xf).all()):
        raise ValueError("latents contain NaN/inf entries")
    ok = torch.isfinite(yf).all(-1)
    if not bool(ok.any()):
        raise ValueError("every truth point is NaN (untracked): nothing to align to")
    fwd, inv, err, desc = _align_flat(xf[ok], yf[ok], manifold, euclid, restarts, seed)
    aligned = fwd(xf)
    err_t = err(aligned[ok], yf[ok])
    full = torch.full((xf.shape[0], *err_t.shape[1:]), float("nan"), dtype=err_t.dtype)
    full[ok] = err_t
    if err_t.dim() == 1:
        per_dim = [float(err_t.median())]
        err_out = full.reshape(shape[:-1])
    else:
        per_dim = [float(e) for e in err_t.median(0).values]
        err_out = full.reshape(*shape[:-1], err_t.shape[-1])
    return Alignment(
        aligned=aligned.reshape(shape),
        errors=err_out,
        median_error=float(err_t.median()),
        mean_error=float(err_t.mean()),
        per_dim_median=per_dim,
        transform=desc,
        _fwd=fwd,
        _inv=inv,
    )


def _kind(manifold: LatentManifold) -> str:
    if getattr(manifold, "factors", None):
        return "product"
    if isinstance(manifold, Torus):
        return "torus"
    if isinstance(manifold, Euclid):
        return "euclid"
    name = getattr(manifold, "name", "")
    if type(manifold).__name__ == "SO3" or name == "SO3":
        return "so3"
    if manifold.ambient_dim == manifold.dim + 1:
        return "sphere"
    raise NotImplementedError(f"no alignment implemented for {manifold!r}")


def _align_flat(x, y, manifold, euclid, restarts, seed):
    kind = _kind(manifold)
    if kind == "torus":
        return _align_torus(x, y)
    if kind == "sphere":
        return _align_orthogonal(x, y)
    if kind == "so3":
        return _align_quaternion(x, y, restarts, seed)
    if kind == "euclid":
        return _align_euclid(x, y, euclid)
    return _align_product(x, y, manifold, euclid, restarts, seed)


# ------------------------------------------------------------------------------------ tori
def _align_torus(x, y):
    d = x.shape[-1]
    best = None
    perms = list(itertools.permutations(range(d))) if d <= 4 else [tuple(range(d))]
    for perm in perms:
        xp = x[:, list(perm)]
        for signs in itertools.product((1.0, -1.0), repeat=d):
            s = torch.tensor(signs, dtype=x.dtype)
            diff = y - s * xp
            c = torch.atan2(diff.sin().mean(0), diff.cos().mean(0))
            cost = float((1 - torch.cos(diff - c)).mean())
            if best is None or cost < best[0]:
                best = (cost, perm, s, c)
    _, perm, s, c = best
    perm_l = list(perm)
    back = list(np.argsort(perm_l))

    def fwd(p):
        return wrap_angle(s * p[..., perm_l] + c)

    def inv(q):
        z = s * wrap_angle(q - c)
        return z[..., back]

    def err(a, b):
        return wrap_angle(a - b).abs()

    desc = {"kind": "torus", "permutation": perm_l, "reflection": [int(v) for v in s.tolist()],
            "translation": c.tolist()}
    return fwd, inv, err, desc


# ------------------------------------------------------------------------------------ spheres
def _procrustes(x, y):
    """``R ∈ O(n)`` minimising ``Σ |R x_i − y_i|²``."""
    H = y.T @ x
    U, _, Vh = torch.linalg.svd(H)
    return U @ Vh


def _sphere_err(a, b):
    return torch.arccos((a * b).sum(-1).clamp(-1, 1))


def _align_orthogonal(x, y):
    R = _procrustes(x, y)

    def fwd(p):
        return p @ R.T

    def inv(q):
        return q @ R

    return fwd, inv, _sphere_err, {"kind": "orthogonal", "R": R.tolist()}


def _quat_err(a, b):
    return 2 * torch.arccos((a * b).sum(-1).abs().clamp(max=1))


def _align_quaternion(x, y, restarts, seed):
    g = torch.Generator().manual_seed(seed)
    starts = [torch.eye(4, dtype=x.dtype)]
    for _ in range(max(0, restarts - 1)):
        Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=x.dtype))
        starts.append(Q)
    best = None
    for R in starts:
        for _ in range(50):
            s = torch.sign((y * (x @ R.T)).sum(-1))
            s = torch.where(s == 0, torch.ones_like(s), s)
            R_new = _procrustes(x * s[:, None], y)
            if torch.allclose(R_new, R, atol=1e-10):
                R = R_new
                break
            R = R_new
        score = float(((x @ R.T) * y).sum(-1).pow(2).mean())
        if best is None or score > best[0]:
            best = (score, R)
    R = best[1]

    def fwd(p):
        q = p @ R.T
        s = torch.where(q[..., :1] < 0, -1.0, 1.0)  # canonical sign (first component >= 0)
        return q * s

    def inv(q):
        return q @ R

    def err(a, b):
        return _quat_err(a, b)

    return fwd, inv, err, {"kind": "quaternion_orthogonal", "R": R.tolist()}


# ------------------------------------------------------------------------------------ Rᵈ
def _align_euclid(x, y, method):
    n = x.shape[0]
    if method == "affine":
        X = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], -1)
        W = torch.linalg.lstsq(X, y).solution  # (d + 1, d)
        A, b = W[:-1], W[-1]

        def fwd(p):
            return p @ A + b

        def inv(q):
            return torch.linalg.lstsq(A.T, (q - b).reshape(-1, q.shape[-1]).T).solution.T.reshape(
                q.shape
            )

        desc = {"kind": "affine", "A": A.tolist(), "b": b.tolist()}
    elif method == "procrustes":
        mx, my = x.mean(0), y.mean(0)
        xc, yc = x - mx, y - my
        R = _procrustes(xc, yc)
        scale = float((yc * (xc @ R.T)).sum() / xc.pow(2).sum().clamp_min(1e-30))

        def fwd(p):
            return scale * (p - mx) @ R.T + my

        def inv(q):
            return ((q - my) @ R) / scale + mx

        desc = {"kind": "similarity", "R": R.tolist(), "scale": scale, "shift": mx.tolist()}
    else:
        raise ValueError(f"euclid must be 'affine' or 'procrustes', got {method!r}")

    def err(a, b):
        return (a - b).norm(dim=-1)

    return fwd, inv, err, desc


# ------------------------------------------------------------------------------------ products
def _align_product(x, y, manifold, euclid, restarts, seed):
    parts, start = [], 0
    for f in manifold.factors:
        stop = start + f.ambient_dim
        parts.append((start, stop, _align_flat(x[:, start:stop], y[:, start:stop], f, euclid,
                                               restarts, seed)))
        start = stop

    def fwd(p):
        return torch.cat([a[0](p[..., s:e]) for s, e, a in parts], -1)

    def inv(q):
        return torch.cat([a[1](q[..., s:e]) for s, e, a in parts], -1)

    def err(a, b):
        cols = []
        for s, e, al in parts:
            ef = al[2](a[..., s:e], b[..., s:e])
            cols.append(ef if ef.dim() == a.dim() else ef.unsqueeze(-1))
        return torch.cat(cols, -1)

    return fwd, inv, err, {"kind": "product", "factors": [a[3] for _, _, a in parts]}


def angle_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Absolute wrapped angle difference ``|wrap(a − b)|``."""
    return wrap_angle(torch.as_tensor(a) - torch.as_tensor(b)).abs()

