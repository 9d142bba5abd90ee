"""Shared pieces of :mod:`mgplvm.control`: options, result info, warnings, input checks."""

from __future__ import annotations

import inspect
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "BACKENDS",
    "ControlWarning",
    "InaccurateSolutionWarning",
    "NearSingularWarning",
    "SolveInfo",
    "StabilityError",
]

BACKENDS = ("auto", "scipy", "torch", "kron")
KRON_MAX_N = 4  # "auto" uses the Kronecker solve up to this size
KRON_LIMIT = 4096  # largest n·m the Kronecker backend accepts (an (nm)² dense system)


class ControlWarning(UserWarning):
    """Base class of the warnings raised by :mod:`mgplvm.control`."""


class NearSingularWarning(ControlWarning):
    """The equation is close to singular (e.g. λᵢ + λ̄ⱼ ≈ 0); the solution is inaccurate."""


class InaccurateSolutionWarning(NearSingularWarning):
    """A Riccati solution's relative residual exceeds :func:`residual_tol` (badly conditioned
    problem, e.g. a strongly non-normal A with a huge ‖X‖): the solution may be inaccurate."""


class StabilityError(ValueError):
    """A method's stability precondition fails (e.g. A not Hurwitz for the sign iteration)."""


@dataclass(frozen=True)
class SolveInfo:
    """Diagnostics returned with ``return_info=True``.

    Attributes:
        residual: largest relative residual over the batch, e.g.
            ‖AX + XAᴴ − Q‖_F / (2‖A‖_F‖X‖_F + ‖Q‖_F) for the continuous Lyapunov equation.
        backend: backend that produced the solution ("scipy", "torch", "kron"; "torch+scipy"
            etc. when some systems of a batch fell back to another backend).
        iterations: iterations of the torch iterative method (0 for direct methods).
        residuals: per-system relative residuals, shape = batch shape.
    """

    residual: float
    backend: str
    iterations: int
    residuals: Tensor


class _Record:
    """Mutable sink the autograd forward fills (backend used, iterations, factor cache)."""

    __slots__ = ("backends", "iterations", "cache")

    def __init__(self, cache: dict[str, Any] | None = None) -> None:
        self.backends: set[str] = set()
        self.iterations = 0
        self.cache: dict[str, Any] = {} if cache is None else cache

    @property
    def backend(self) -> str:
        order = [b for b in ("scipy", "torch", "kron") if b in self.backends]
        return "+".join(order) if order else "none"


class _Config:
    """Options handed (as a non-tensor argument) to the autograd Functions.

    backend: "auto" | "scipy" | "torch" | "kron"; check: value checks and warnings;
    maxiter: cap of the torch iterations; require_stable: "continuous" | "discrete" | None
    (Gramians); record: sink for the backend used / iterations / cached factorisations.
    """

    __slots__ = ("backend", "check", "maxiter", "require_stable", "record")

    def __init__(
        self,
        backend: str = "auto",
        check: bool = True,
        maxiter: int = 100,
        require_stable: str | None = None,
        record: _Record | None = None,
    ) -> None:
        self.backend = backend
        self.check = check
        self.maxiter = maxiter
        self.require_stable = require_stable
        self.record = _Record() if record is None else record

    def replace(self, **kw: Any) -> _Config:
        args = {k: getattr(self, k) for k in self.__slots__}
        args.update(kw)
        return _Config(**args)

    def child(self) -> _Config:
        """Config for an internal (adjoint / tangent) solve: shares the factor cache only."""
        rec = _Record(cache=self.record.cache)
        return self.replace(check=False, require_stable=None, record=rec)


_EPS = {
    "float32": float(torch.finfo(torch.float32).eps),
    "complex64": float(torch.finfo(torch.float32).eps),
    "float64": float(torch.finfo(torch.float64).eps),
    "complex128": float(torch.finfo(torch.float64).eps),
}


def eps_of(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


_SKIP_DIRS = tuple(os.path.join(os.path.dirname(f), "") for f in (__file__, torch.__file__))


def caller_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` called here that points at the first frame outside
    mgplvm.control and torch (the user's call, through any autograd machinery)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP_DIRS):
        frame, level = frame.f_back, level + 1
    return level


#: relative residual above which a double-precision Riccati solution is reported as inaccurate
RESIDUAL_TOL = 1e-6


def residual_tol(dtype: torch.dtype) -> float:
    """Tolerance on the relative residual of a Riccati solution: ``max(RESIDUAL_TOL, 100·eps)``,
    i.e. 1e-6 in float64/complex128 and 1.2e-5 in float32/complex64 (where rounding the solution
    alone costs a few eps).  A backward-stable solve gives about n·eps."""
    return max(RESIDUAL_TOL, 100.0 * eps_of(real_dtype(dtype)))


def warn_inaccurate(name: str, rel: float, system: int, dtype: torch.dtype) -> None:
    """Warn (:class:`InaccurateSolutionWarning`) if the relative residual ``rel`` of system
    ``system`` exceeds :func:`residual_tol`."""
    tol = residual_tol(dtype)
    if rel <= tol:
        return
    warnings.warn(
        f"inaccurate {name} solution: relative residual {rel:.1e} > {tol:.0e} (system {system}); "
        "the problem is badly conditioned (e.g. strongly non-normal A, huge ‖X‖): check the "
        "solution with return_info=True",
        InaccurateSolutionWarning,
        stacklevel=caller_stacklevel(),
    )


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


# ------------------------------------------------------------------------------------------
# input checks done on logical shapes in the public functions (safe under torch.func)
# ------------------------------------------------------------------------------------------
def as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except Exception as err:  # pragma: no cover - message only
        raise TypeError(f"{name} must be a tensor (got {type(x).__name__})") from err


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_inputs(
    named: Sequence[tuple[str, Tensor]], square: Sequence[str] = ()
) -> tuple[torch.dtype, torch.device]:
    """Check ranks, squareness, one common floating/complex dtype and one device."""
    first_name, first = named[0]
    for name, t in named:
        if t.dim() < 2:
            raise ValueError(
                f"{name} must have at least 2 dims (..., rows, cols); got {tuple(t.shape)}"
            )
        if name in square and t.shape[-1] != t.shape[-2]:
            raise ValueError(f"{name} must be square in its last two dims; got {tuple(t.shape)}")
        if not (t.dtype.is_floating_point or t.dtype.is_complex):
            raise TypeError(
                f"{name} has dtype {t.dtype}; use float32, float64, complex64 or complex128 "
                f"(e.g. {name}.double())"
            )
        if t.dtype in (torch.float16, torch.bfloat16, torch.complex32):
            raise TypeError(f"{name} has dtype {t.dtype}; half precision is not supported")
        if t.dtype != first.dtype:
            raise TypeError(
                f"dtype mismatch: {first_name} is {first.dtype} but {name} is {t.dtype}; "
                "convert all inputs to one dtype"
            )
        if t.device != first.device:
            raise ValueError(
                f"device mismatch: {first_name} is on {first.device} but {name} is on {t.device}"
            )
    return first.dtype, first.device


def bshape(*shapes: Sequence[int]) -> torch.Size:
    """Broadcast shapes (fast path for the common equal/empty cases; RuntimeError if they
    do not broadcast)."""
    out: tuple[int, ...] = ()
    for s in shapes:
        s = tuple(s)
        if s == out or not s:
            continue
        if not out:
            out = s
            continue
        rank = max(len(out), len(s))
        a = (1,) * (rank - len(out)) + out
        b = (1,) * (rank - len(s)) + s
        res = []
        for x, y in zip(a, b, strict=True):
            if x != y and x != 1 and y != 1:
                raise RuntimeError(f"shapes {out} and {s} do not broadcast")
            res.append(y if x == 1 else x)
        out = tuple(res)
    return torch.Size(out)


def broadcast_batch(named: Sequence[tuple[str, Tensor]]) -> torch.Size:
    try:
        return bshape(*(t.shape[:-2] for _, t in named))
    except RuntimeError as err:
        shapes = ", ".join(f"{n}: {tuple(t.shape)}" for n, t in named)
        raise ValueError(f"batch dimensions do not broadcast ({shapes})") from err


def check_dims(pairs: Sequence[tuple[str, int, str, int]]) -> None:
    """Each (name_a, size_a, name_b, size_b) must agree."""
    for na, sa, nb, sb in pairs:
        if sa != sb:
            raise ValueError(f"shape mismatch: {na} = {sa} but {nb} = {sb}")


# ------------------------------------------------------------------------------------------
# value checks (done inside the autograd forward, on plain tensors)
# ------------------------------------------------------------------------------------------
def check_finite(*named: tuple[str, Tensor]) -> None:
    for name, t in named:
        if bool(torch.isfinite(t.sum())):  # one reduction; NaN/inf propagate into the sum
            continue
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            nn = int(torch.isnan(t).sum())
            ni = int(bad.sum()) - nn
            raise ValueError(f"{name} contains non-finite values ({nn} NaN, {ni} inf)")


def hermitian_part(name: str, t: Tensor, check: bool) -> Tensor:
    """(T + Tᴴ)/2, after checking that T is Hermitian up to √eps (relative, Frobenius)."""
    if check:
        asym = torch.linalg.matrix_norm(t - t.mH)
        nrm = torch.linalg.matrix_norm(t)
        tol = math.sqrt(eps_of(real_dtype(t.dtype)))
        rel = asym / torch.where(nrm > 0, nrm, torch.ones_like(nrm))
        worst = float(rel.max()) if rel.numel() else 0.0
        if worst > tol:
            kind = "Hermitian" if t.is_complex() else "symmetric"
            raise ValueError(
                f"{name} must be {kind}: ‖{name} − {name}ᴴ‖/‖{name}‖ = {worst:.2e} > {tol:.1e}"
            )
    return 0.5 * (t + t.mH)


def check_posdef(name: str, t: Tensor) -> None:
    """Raise unless t (Hermitian) is positive definite (Cholesky)."""
    _, info = torch.linalg.cholesky_ex(t)
    if bool((info != 0).any()):
        ev = torch.linalg.eigvalsh(t).min()
        raise ValueError(f"{name} must be positive definite (smallest eigenvalue {float(ev):.3e})")


def warn_near_singular(sep: float, scale: float, what: str | Callable[[], str], dtype: Any) -> None:
    """Warn if sep/scale < √eps, raise if it is at rounding level (singular equation).

    ``what`` (or what it returns, when callable) describes the offending eigenvalues.
    """
    eps = _EPS.get(str(dtype).replace("torch.", ""), 2.220446049250313e-16)
    rel = sep / scale if scale > 0 else 0.0
    if rel >= math.sqrt(eps):
        return
    if callable(what):
        what = what()
    if rel <= 10 * eps:
        raise torch.linalg.LinAlgError(
            f"the equation is singular: {what} (relative {rel:.1e}); no unique solution"
        )
    if rel < math.sqrt(eps):
        warnings.warn(
            f"near-singular equation: {what} (relative {rel:.1e}); expect a loss of about "
            f"{-math.log10(max(rel, 1e-300)):.0f} digits",
            NearSingularWarning,
            stacklevel=caller_stacklevel(),
        )


def freeze_signature(fn_cls: Any) -> Any:
    """Class decorator: precompute ``forward``'s signature.

    ``autograd.Function.apply`` (setup_context style) calls ``inspect.signature(forward)`` on
    every call, which costs tens of µs; a stored ``__signature__`` makes that a lookup.
    """
    fwd = fn_cls.forward
    fwd.__signature__ = inspect.signature(fwd)
    return fn_cls


def sum_to(g: Tensor | None, shape: torch.Size) -> Tensor | None:
    """Reduce a broadcast gradient to ``shape``."""
    if g is None or g.shape == shape:
        return g
    lead = g.dim() - len(shape)
    if lead > 0:
        g = g.sum(tuple(range(lead)))
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if dims:
        g = g.sum(dims, keepdim=True)
    return g


def vmap_align(in_dims: Sequence[int | None], args: Sequence[Any], batch_size: int) -> list[Any]:
    """Move vmapped dims to the front so that ordinary broadcasting does the rest.

    Tensors with a vmapped dim get it at position 0 and singleton dims inserted so that their
    logical batch rank equals the largest one; tensors without a vmapped dim are left alone
    (broadcasting adds leading dims).  Non-tensor arguments pass through.
    """
    logical = [
        (a.dim() - (d is not None))
        for a, d in zip(args, in_dims, strict=True)
        if isinstance(a, Tensor)
    ]
    rank = max(logical) if logical else 0
    out: list[Any] = []
    for a, d in zip(args, in_dims, strict=True):
        if isinstance(a, Tensor) and d is not None:
            a = a.movedim(d, 0)
            pad = rank - (a.dim() - 1)
            a = a.reshape(a.shape[0], *([1] * pad), *a.shape[1:])
        out.append(a)
    return out
