"""Argument checks shared by mgplvm.comms: one-line ValueErrors that name the argument, what is
wrong and what is needed."""

from __future__ import annotations

import math
from numbers import Integral

import torch
from torch import Tensor


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def number(name: str, x: object, what: str = "", *, positive: bool = False,
           nonneg: bool = False, nonzero: bool = False) -> float:
    """``x`` as a float, finite (and > 0, ≥ 0 or ≠ 0 if asked); ``what`` says what it is."""
    label = f"{name} ({what})" if what else name
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a real number; got {x!r}") from None
    need = ("positive and finite" if positive else "≥ 0 and finite" if nonneg
            else "finite and non-zero" if nonzero else "finite")
    bad = (not math.isfinite(v) or (positive and v <= 0) or (nonneg and v < 0)
           or (nonzero and v == 0))
    if bad:
        raise ValueError(f"{label} must be {need}; got {v:g}")
    return v


def integer(name: str, x: object, minimum: int) -> int:
    """``x`` as an int ≥ ``minimum``."""
    if isinstance(x, bool) or not isinstance(x, Integral) or int(x) < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}; got {x!r}")
    return int(x)


def fraction(name: str, x: object, what: str, *, open_low: bool = True,
             open_high: bool = False) -> float:
    """``x`` in (0, 1] by default; ``open_low`` / ``open_high`` exclude 0 / 1."""
    v = number(name, x, what)
    lo_ok = v > 0 if open_low else v >= 0
    hi_ok = v < 1 if open_high else v <= 1
    if not (lo_ok and hi_ok):
        interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
        raise ValueError(f"{name} ({what}) must be in {interval}; got {v:g}")
    return v


def positive_tensor(name: str, x: Tensor, what: str) -> None:
    """Every entry of ``x`` finite and > 0."""
    v = x.detach()
    ok = torch.isfinite(v) & (v > 0)
    if not bool(ok.all()):
        bad = float(v[~ok].flatten()[0])
        raise ValueError(f"{name} ({what}) must be positive and finite; got {bad:g}")


def finite(name: str, x: Tensor) -> None:
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} contains NaN or inf entries; all entries must be finite")


def square(name: str, A: Tensor, batched: bool = True) -> int:
    """A (..., n, n) (or (n, n) if not ``batched``) with finite entries; returns n."""
    if A.dim() < 2 or A.shape[-1] != A.shape[-2] or (not batched and A.dim() != 2):
        need = "(..., n, n)" if batched else "(n, n)"
        raise ValueError(f"{name} must be a square matrix {need}; got shape {_shape(A)}")
    finite(name, A)
    return A.shape[-1]


def system(A: Tensor, B: Tensor, C: Tensor, Sigma: Tensor | None = None,
           batched: bool = True) -> None:
    """Shapes A (..., n, n), B (..., n, m), C (..., p, n), Sigma (..., m, m) (unbatched unless
    ``batched``), broadcastable batch dimensions and finite entries."""
    n = square("A", A, batched)
    nd = "" if batched else "exactly "
    if B.dim() < 2 or B.shape[-2] != n or (not batched and B.dim() != 2):
        raise ValueError(f"B has shape {_shape(B)} but A is {n}×{n}: need {nd}({n}, m)")
    m = B.shape[-1]
    if C.dim() < 2 or C.shape[-1] != n or (not batched and C.dim() != 2):
        raise ValueError(f"C has shape {_shape(C)} but A is {n}×{n}: need {nd}(p, {n})")
    named = [("A", A), ("B", B), ("C", C)]
    if Sigma is not None:
        if Sigma.dim() < 2 or Sigma.shape[-2:] != (m, m):
            raise ValueError(
                f"Sigma has shape {_shape(Sigma)} but B is {n}×{m}: need {nd}({m}, {m})"
            )
        named.append(("Sigma", Sigma))
    try:
        torch.broadcast_shapes(*(t.shape[:-2] for _, t in named))
    except RuntimeError:
        shapes = ", ".join(f"{k} {_shape(t)}" for k, t in named)
        raise ValueError(f"batch dimensions do not broadcast: {shapes}") from None
    for name, t in named[1:]:
        finite(name, t)


def psd(name: str, S: Tensor) -> None:
    """S (..., m, m) symmetric positive semi-definite, both up to √eps relative to its largest
    |entry| / |eigenvalue| (eigvalsh)."""
    S = S.detach()
    if S.numel() == 0:
        return
    tol = math.sqrt(torch.finfo(S.dtype).eps)
    scale = S.abs().amax((-2, -1))
    asym = (S - S.mT).abs().amax((-2, -1))
    if bool((asym > tol * scale).any()):
        worst = float((asym / scale.clamp_min(torch.finfo(S.dtype).tiny)).max())
        raise ValueError(
            f"{name} must be symmetric positive semi-definite; max |{name} − {name}ᵀ| is "
            f"{worst:.1e} of its largest entry"
        )
    lam = torch.linalg.eigvalsh(0.5 * (S + S.mT))
    low = lam[..., 0]
    if bool((low < -tol * lam.abs().amax(-1)).any()):
        raise ValueError(
            f"{name} must be symmetric positive semi-definite; its smallest eigenvalue is "
            f"{float(low.min()):.3g} < 0"
        )


def hurwitz(A: Tensor) -> None:
    """Spectral abscissa α(A) < 0 (always checked: with an unstable A the Gramians diverge)."""
    alpha = float(torch.linalg.eigvals(A.detach()).real.max())
    if not alpha < 0:
        raise ValueError(
            f"A must be Hurwitz (spectral abscissa {alpha:.3g} ≥ 0): with an unstable network the "
            "interference of past packets diverges and the rate is undefined"
        )
