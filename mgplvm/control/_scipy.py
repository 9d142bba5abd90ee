"""CPU backend: Bartels–Stewart through LAPACK (``?gees`` + ``?trsyl``); Riccati equations by
Laub's ordered Schur method (CARE) and QZ on the 2n × 2n symplectic pencil (DARE), with scipy's
extended-pencil solvers as the fallback (see :func:`care_laub`).

Hand-written because PyTorch has no Schur decomposition.  The Lyapunov/Sylvester solves call
the LAPACK routines that :func:`scipy.linalg.solve_sylvester` uses, directly, so that

* the eigenvalues come out of the Schur factorisation for free (near-singularity and stability
  checks cost nothing), and
* the Schur factors of A are cached and reused for the adjoint solve with Aᴴ (backward pass) and
  for tangent solves (forward mode): only a triangular ``?trsyl`` solve and two products are
  left, which is what keeps backward/forward cost low.

The discrete Lyapunov (Stein) equation is mapped to a continuous one by the bilinear transform
M = (A + I)⁻¹(A − I), exactly as :func:`scipy.linalg.solve_discrete_lyapunov` does for n ≥ 10.
Every routine loops over a flattened batch; factors of a shared (broadcast) A are computed once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla
from scipy.linalg import get_lapack_funcs

__all__ = ["care", "clyap", "dare", "dlyap", "sylvester"]

_FUNCS: dict[tuple[str, str], Any] = {}
_LWORK: dict[tuple[str, int], int] = {}


def _lapack(name: str, dtype: np.dtype) -> Any:
    key = (name, dtype.char)
    f = _FUNCS.get(key)
    if f is None:
        (f,) = get_lapack_funcs((name,), dtype=dtype)
        _FUNCS[key] = f
    return f


def _select(*args: Any) -> int:
    return 0


#: LAPACK's smallest admissible workspace per routine, for matrices of side n
_MIN_LWORK = {"gees": lambda n: max(3 * n, 1), "gges": lambda n: 8 * n + 16}


def _lwork(name: str, a: np.ndarray, query: Callable[[], Any]) -> int:
    """Workspace size for LAPACK ``?<name>`` on the square ``a``: the optimum that ``query()`` (a
    ``lwork=-1`` call) reports, at least LAPACK's minimum; cached per routine, dtype and size."""
    n = a.shape[0]
    key = (name + a.dtype.char, n)
    lwork = _LWORK.get(key)
    if lwork is None:
        lwork = max(int(np.real(query()[-2][0])), _MIN_LWORK[name](n))
        _LWORK[key] = lwork
    return lwork


@dataclass
class Factor:
    """Schur factorisation M = Z T Zᴴ of a matrix derived from ``src`` (cache entry)."""

    src: np.ndarray  # the matrix the factor was computed for (used to validate cache hits)
    T: np.ndarray
    Z: np.ndarray
    Zh: np.ndarray  # Zᴴ
    eig: np.ndarray  # eigenvalues of src (complex; for dlyap those of A, not of M)
    lu: Any = None  # dlyap only: LU factors of src + I
    memo: dict[str, Any] | None = None  # per-factor check results (separation, stability)


def schur(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real (quasi-triangular) or complex Schur form a = Z T Zᴴ, plus eigenvalues."""
    a = np.array(a, order="F", copy=True)
    gees = _lapack("gees", a.dtype)
    lwork = _lwork("gees", a, lambda: gees(_select, a, lwork=-1))
    res = gees(_select, a, lwork=lwork, overwrite_a=1)
    if res[-1] != 0:
        raise np.linalg.LinAlgError(f"Schur decomposition failed (LAPACK ?gees info={res[-1]})")
    if np.iscomplexobj(a):
        T, _, w, Z = res[:4]
        return T, Z, w
    T, _, wr, wi, Z = res[:5]
    return T, Z, wr + 1j * wi


def _lookup(
    entries: list[Factor | None], i: int, src: np.ndarray, make: Callable[[np.ndarray], Factor]
) -> tuple[Factor, bool]:
    """Cached factor for ``src`` (returns False) or for ``srcᴴ`` (returns True, "transposed");
    computed when missing or stale."""
    e = entries[i]
    if e is not None and e.src.shape == src.shape:
        if np.array_equal(e.src, src):
            return e, False
        if np.array_equal(e.src, src.conj().T):
            return e, True
    e = make(src)
    entries[i] = e
    return e, False


def _factor(
    src: np.ndarray, T: np.ndarray, Z: np.ndarray, eig: np.ndarray, lu: Any = None
) -> Factor:
    Zh = Z.conj().T if np.iscomplexobj(Z) else Z.T
    return Factor(src.copy(), T, Z, np.ascontiguousarray(Zh), eig, lu)


def _schur_factor(src: np.ndarray) -> Factor:
    return _factor(src, *schur(src))


def _entries(cache: dict[str, Any], key: str, count: int) -> list[Factor | None]:
    lst = cache.get(key)
    if lst is None or len(lst) != count:
        lst = [None] * count
        cache[key] = lst
    return lst


_OPS = {  # (complex?, transposed?) -> (op for the A slot, op for the Aᴴ slot)
    (False, False): ("N", "T"),
    (False, True): ("T", "N"),
    (True, False): ("N", "C"),
    (True, True): ("C", "N"),
}


def _trsyl(Ta: np.ndarray, Tb: np.ndarray, F: np.ndarray, opa: str, opb: str) -> np.ndarray:
    """Solve op(T_a) Y + Y op(T_b) = F (LAPACK ?trsyl, with its overflow scale undone)."""
    Y, scale, info = _lapack("trsyl", Ta.dtype)(Ta, Tb, F, trana=opa, tranb=opb)
    if info < 0:  # pragma: no cover - argument error
        raise ValueError(f"LAPACK ?trsyl: illegal value in argument {-info}")
    return Y / scale if scale != 1.0 else Y


class Worst:
    """Track the worst (smallest relative) eigenvalue separation over a batch; the message is
    only formatted when it is needed."""

    def __init__(self) -> None:
        self.rel = np.inf
        self.sep = self.scale = 0.0
        self._msg: Callable[[], str] = str

    @property
    def msg(self) -> str:
        return self._msg()

    def update(self, sep: float, scale: float, msg: Callable[[], str]) -> None:
        rel = sep / scale if scale > 0 else 0.0
        if rel < self.rel:
            self.rel, self._msg, self.sep, self.scale = rel, msg, sep, scale


def _pair_min(
    la: np.ndarray, mu: np.ndarray, fn: Callable[[Any, Any], Any]
) -> tuple[float, int, int]:
    v = np.abs(fn(la[:, None], mu[None, :]))
    k = int(np.argmin(v))
    i, j = divmod(k, v.shape[1])
    return float(v[i, j]), i, j


def _fro(a: np.ndarray) -> float:
    return float(np.sqrt(np.vdot(a, a).real))


def _real_range(f: Factor) -> tuple[float, float]:
    """(min Re λ, max Re λ) of the factor's eigenvalues (invariant under conjugation), memoised."""
    memo = f.memo if f.memo is not None else {}
    f.memo = memo
    if "re" not in memo:
        re = f.eig.real
        memo["re"] = (float(re.min()), float(re.max()))
    return memo["re"]


def _half_plane_gap(fa: Factor, fb: Factor) -> float:
    """Lower bound on min |λ + μ| over eigenvalues λ of A, μ of B: when both spectra lie in the
    same open half-plane, |λ + μ| ≥ |Re λ + Re μ| ≥ min |Re λ| + min |Re μ|; else 0."""
    amin, amax = _real_range(fa)
    bmin, bmax = _real_range(fb)
    if amax < 0 and bmax < 0:
        return -(amax + bmax)
    if amin > 0 and bmin > 0:
        return amin + bmin
    return 0.0


def _sylv_sep(
    fa: Factor, ta: bool, fb: Factor, tb: bool, scale: float
) -> tuple[float, float, Callable[[], str]] | None:
    """min |λ + μ| over eigenvalues λ of A, μ of B (factors possibly transposed), with the
    scale it is judged against and a description; None when the half-plane gap already puts
    it well above the warning level √eps · scale (no pairwise minimum needed)."""
    if _half_plane_gap(fa, fb) >= 10 * np.sqrt(np.finfo(fa.T.dtype).eps) * scale:
        return None
    la = fa.eig.conj() if ta else fa.eig
    mb = fb.eig.conj() if tb else fb.eig
    sep, i, j = _pair_min(la, mb, np.add)
    return (
        sep,
        scale,
        lambda: f"eigenvalues λ = {la[i]:.3g} of A and μ = {mb[j]:.3g} of B give "
        f"|λ + μ| = {abs(la[i] + mb[j]):.2e}",
    )


def _clyap_sep(f: Factor) -> tuple[float, float, Callable[[], str]]:
    """min |λᵢ + λ̄ⱼ| over eigenvalues of A (invariant under A → Aᴴ), memoised on the factor."""
    memo = f.memo if f.memo is not None else {}
    f.memo = memo
    if "sep" not in memo:
        lam = f.eig
        re = lam.real
        if re.max() < 0:  # one half plane: the minimum is 2 min |Re λ|
            i = j = int(re.argmax())
            sep = -2.0 * float(re[i])
        elif re.min() > 0:
            i = j = int(re.argmin())
            sep = 2.0 * float(re[i])
        else:
            sep, i, j = _pair_min(lam, lam.conj(), np.add)
        memo["sep"] = (
            sep,
            2 * _fro(f.T),
            lambda: (
                f"eigenvalues λᵢ = {lam[i]:.3g}, λⱼ = {lam[j]:.3g} of A give "
                f"|λᵢ + λ̄ⱼ| = {abs(lam[i] + lam[j].conjugate()):.2e}"
            ),
        )
    return memo["sep"]


def sylvester(
    A: np.ndarray,
    ia: np.ndarray,
    B: np.ndarray,
    ib: np.ndarray,
    Q: np.ndarray,
    iq: np.ndarray,
    cache: dict[str, Any],
    check: bool,
) -> tuple[np.ndarray, Worst | None]:
    """AX + XB = Q for systems k: A[ia[k]], B[ib[k]], Q[iq[k]] (flattened batches)."""
    N = len(ia)
    out = np.empty((N, A.shape[-2], B.shape[-1]), dtype=np.result_type(A, Q))
    ea = _entries(cache, "sylv:A", A.shape[0])
    eb = _entries(cache, "sylv:B", B.shape[0])
    cplx = np.iscomplexobj(A)
    worst = Worst() if check else None
    for k in range(N):
        i, j = int(ia[k]), int(ib[k])
        fa, ta = _lookup(ea, i, A[i], _schur_factor)
        fb, tb = _lookup(eb, j, B[j], _schur_factor)
        Y = _trsyl(fa.T, fb.T, fa.Zh @ Q[iq[k]] @ fb.Z, _OPS[cplx, ta][0], _OPS[cplx, tb][0])
        out[k] = fa.Z @ Y @ fb.Zh
        if worst is not None:
            sep = _sylv_sep(fa, ta, fb, tb, _fro(A[i]) + _fro(B[j]))
            if sep is not None:
                worst.update(sep[0], sep[1], lambda msg=sep[2], k=k: f"{msg()} (system {k})")
    return out, worst


def sylvester1(
    a: np.ndarray, b: np.ndarray, q: np.ndarray, cache: dict[str, Any], check: bool
) -> tuple[np.ndarray, tuple[float, float, Callable[[], str]] | None]:
    """Single-system AX + XB = Q (lean path for small unbatched solves; same maths as
    :func:`sylvester`).  Returns (X, separation info or None when far from singular)."""
    ea = cache.get("sylv:A")
    if ea is None or len(ea) != 1:
        ea = cache["sylv:A"] = [None]
    eb = cache.get("sylv:B")
    if eb is None or len(eb) != 1:
        eb = cache["sylv:B"] = [None]
    fa, ta = _lookup(ea, 0, a, _schur_factor)
    fb, tb = _lookup(eb, 0, b, _schur_factor)
    cplx = np.iscomplexobj(a)
    Y = _trsyl(fa.T, fb.T, fa.Zh @ q @ fb.Z, _OPS[cplx, ta][0], _OPS[cplx, tb][0])
    x = fa.Z @ Y @ fb.Zh
    return x, (_sylv_sep(fa, ta, fb, tb, _fro(a) + _fro(b)) if check else None)


def clyap(
    A: np.ndarray,
    ia: np.ndarray,
    Q: np.ndarray,
    iq: np.ndarray,
    cache: dict[str, Any],
    check: bool,
    stable: bool,
) -> tuple[np.ndarray, Worst | None, tuple[int, complex] | None]:
    """AX + XAᴴ = Q.  Returns (X, worst separation, first unstable (system, eigenvalue))."""
    N = len(ia)
    out = np.empty((N, *Q.shape[-2:]), dtype=np.result_type(A, Q))
    ea = _entries(cache, "clyap:A", A.shape[0])
    cplx = np.iscomplexobj(A)
    worst = Worst() if check else None
    unstable = None
    for k in range(N):
        i = int(ia[k])
        f, t = _lookup(ea, i, A[i], _schur_factor)
        opa, opb = _OPS[cplx, t]
        Y = _trsyl(f.T, f.T, f.Zh @ Q[iq[k]] @ f.Z, opa, opb)
        out[k] = f.Z @ Y @ f.Zh
        if stable and unstable is None and f.eig.real.max() >= 0:
            lam = f.eig.conj() if t else f.eig
            unstable = (k, complex(lam[np.argmax(lam.real)]))
        if worst is not None:
            sep, scale, msg = _clyap_sep(f)
            if (sep / scale if scale > 0 else 0.0) < worst.rel:
                worst.update(sep, scale, lambda msg=msg, k=k: f"{msg()} (system {k})")
    return out, worst, unstable


def clyap1(
    a: np.ndarray, q: np.ndarray, cache: dict[str, Any], check: bool
) -> tuple[np.ndarray, tuple[float, float, Callable[[], str]] | None, Factor]:
    """Single-system AX + XAᴴ = Q (lean path for small unbatched solves; same maths as
    :func:`clyap`).  Returns (X, separation info or None, factor)."""
    ea = cache.get("clyap:A")
    if ea is None or len(ea) != 1:
        ea = cache["clyap:A"] = [None]
    f, t = _lookup(ea, 0, a, _schur_factor)
    opa, opb = _OPS[np.iscomplexobj(a), t]
    Y = _trsyl(f.T, f.T, f.Zh @ q @ f.Z, opa, opb)
    return f.Z @ Y @ f.Zh, (_clyap_sep(f) if check else None), f


def _lu_solve(lu: tuple[np.ndarray, np.ndarray], b: np.ndarray, trans: int = 0) -> np.ndarray:
    """LAPACK ?getrs with the factors of ?getrf (op = N, T, C for trans = 0, 1, 2); direct, since
    scipy.linalg.lu_solve's wrappers cost more than a small solve."""
    x, info = _lapack("getrs", lu[0].dtype)(lu[0], lu[1], b, trans=trans)
    if info < 0:  # pragma: no cover - argument error
        raise ValueError(f"LAPACK ?getrs: illegal value in argument {-info}")
    return x


def _dlyap_factor(src: np.ndarray) -> Factor:
    n = src.shape[0]
    eye = np.eye(n, dtype=src.dtype)
    with np.errstate(all="ignore"):
        lu, piv, info = _lapack("getrf", src.dtype)(src + eye, overwrite_a=1)
    if info != 0 or not np.isfinite(lu.sum()):
        raise np.linalg.LinAlgError(
            "the discrete Lyapunov equation is singular: A has the eigenvalue −1 (1 − λᵢλ̄ⱼ = 0)"
        )
    M = _lu_solve((lu, piv), src - eye)
    T, Z, mu = schur(M)
    with np.errstate(all="ignore"):
        lam = (1 + mu) / (1 - mu)  # eigenvalues of A from those of M = (A + I)⁻¹(A − I)
    return _factor(src, T, Z, lam, (lu, piv))


def _dlyap_sep(f: Factor) -> tuple[float, float, Callable[[], str]]:
    memo = f.memo if f.memo is not None else {}
    f.memo = memo
    if "sep" not in memo:
        lam = f.eig
        scale = 1 + _fro(f.src) ** 2
        r = np.abs(lam)
        rmin, rmax = float(r.min()), float(r.max())
        # |1 − λᵢλ̄ⱼ| ≥ 1 − rmax² inside the unit disk, ≥ rmin² − 1 outside it
        gap = 1 - rmax * rmax if rmax < 1 else rmin * rmin - 1 if rmin > 1 else 0.0
        if gap >= 10 * np.sqrt(np.finfo(f.T.dtype).eps) * scale:  # far from singular
            memo["sep"] = (gap, scale, lambda: f"|1 − λᵢλ̄ⱼ| ≥ {gap:.2e} for eigenvalues of A")
        else:
            sep, i, j = _pair_min(lam, lam.conj(), lambda x, y: 1 - x * y)
            memo["sep"] = (
                sep,
                scale,
                lambda: (
                    f"eigenvalues λᵢ = {lam[i]:.3g}, λⱼ = {lam[j]:.3g} of A give "
                    f"|1 − λᵢλ̄ⱼ| = {abs(1 - lam[i] * lam[j].conjugate()):.2e}"
                ),
            )
    return memo["sep"]


def dlyap(
    A: np.ndarray,
    ia: np.ndarray,
    Q: np.ndarray,
    iq: np.ndarray,
    cache: dict[str, Any],
    check: bool,
    stable: bool,
) -> tuple[np.ndarray, Worst | None, tuple[int, complex] | None]:
    """AXAᴴ − X + Q = 0 via M = (A + I)⁻¹(A − I): MX + XMᴴ = −2(A + I)⁻¹Q(Aᴴ + I)⁻¹."""
    N = len(ia)
    out = np.empty((N, *Q.shape[-2:]), dtype=np.result_type(A, Q))
    ea = _entries(cache, "dlyap:A", A.shape[0])
    cplx = np.iscomplexobj(A)
    worst = Worst() if check else None
    unstable = None
    for k in range(N):
        i = int(ia[k])
        f, t = _lookup(ea, i, A[i], _dlyap_factor)
        tr = 2 if t else 0  # (A + I)⁻¹ or (Aᴴ + I)⁻¹
        P = _lu_solve(f.lu, Q[iq[k]], tr)
        C = _lu_solve(f.lu, P.conj().T, tr).conj().T
        opa, opb = _OPS[cplx, t]
        Y = _trsyl(f.T, f.T, f.Zh @ (-2.0 * C) @ f.Z, opa, opb)
        out[k] = f.Z @ Y @ f.Zh
        if stable and unstable is None and np.abs(f.eig).max() >= 1:
            lam = f.eig.conj() if t else f.eig
            unstable = (k, complex(lam[np.argmax(np.abs(lam))]))
        if worst is not None:
            sep, scale, msg = _dlyap_sep(f)
            if (sep / scale if scale > 0 else 0.0) < worst.rel:
                worst.update(sep, scale, lambda msg=msg, k=k: f"{msg()} (system {k})")
    return out, worst, unstable


def _riccati(
    solver: Callable[..., tuple[np.ndarray, float | None]],
    name: str,
    A: np.ndarray,
    ia: np.ndarray,
    B: np.ndarray,
    ib: np.ndarray,
    Q: np.ndarray,
    iq: np.ndarray,
    R: np.ndarray,
    ir: np.ndarray,
) -> tuple[np.ndarray, tuple[float, int] | None]:
    """Solve every system of the flattened batch; returns the solutions and (largest relative
    residual, its system) over the systems that ``solver`` computed by scipy's fallback (None if
    none did: the fast-path solutions are clean by construction)."""
    N = len(ia)
    n = A.shape[-1]
    dtype = np.result_type(A, B, Q, R)
    out = np.empty((N, n, n), dtype=dtype)
    worst: tuple[float, int] | None = None
    for k in range(N):
        try:
            X, rel = solver(A[ia[k]], B[ib[k]], Q[iq[k]], R[ir[k]])
        except (np.linalg.LinAlgError, ValueError) as err:
            raise np.linalg.LinAlgError(
                f"{name}: no stabilising solution for system {k} ({err}). Check that (A, B) is "
                "stabilisable and that the Hamiltonian/symplectic pencil has no eigenvalues on "
                "the stability boundary ((A, Q) detectable)."
            ) from err
        out[k] = X
        if rel is not None:
            rel = np.inf if np.isnan(rel) else rel  # a NaN residual is the worst possible
            if worst is None or rel > worst[0]:
                worst = (rel, k)
    return out, worst


def _lhp_real(wr: float, wi: float) -> int:
    return int(wr < 0.0)


def _lhp_complex(w: complex) -> int:
    return int(w.real < 0.0)


def _iuc_real(ar: float, ai: float, b: float) -> int:
    return int(ar * ar + ai * ai < b * b)


def _iuc_complex(a: complex, b: complex) -> int:
    return int(abs(a) < abs(b))


def _riccati_double(
    A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray
) -> tuple[np.ndarray, ...] | None:
    """The inputs in double precision, plus G = BR⁻¹Bᴴ (through a Cholesky factor of R);
    None if R is not positive definite."""
    dt = np.result_type(A, B, Q, R, np.float64)
    A, B, Q, R = (np.asarray(t, dtype=dt) for t in (A, B, Q, R))
    try:
        L = np.linalg.cholesky(R)
    except np.linalg.LinAlgError:
        return None
    W = sla.solve_triangular(L, B.conj().T, lower=True, check_finite=False)
    return A, B, Q, R, W.conj().T @ W


def _graph_solution(Z: np.ndarray, n: int) -> np.ndarray | None:
    """X = U₂₁U₁₁⁻¹ (Hermitian part) from the first n columns [U₁₁; U₂₁] of an orthonormal
    basis of the stable subspace; None when U₁₁ has rcond < √eps (scipy's own criterion)."""
    dt = Z.dtype
    U11, U21 = np.asfortranarray(Z[:n, :n]), Z[n:, :n]
    lu, piv, info = _lapack("getrf", dt)(U11)
    if info != 0:
        return None
    rcond, info = _lapack("gecon", dt)(lu, float(np.abs(U11).sum(axis=0).max()), norm="1")
    if info != 0 or not rcond >= np.sqrt(np.finfo(dt).eps):
        return None
    X = _lu_solve((lu, piv), np.ascontiguousarray(U21.conj().T), trans=2).conj().T
    return 0.5 * (X + X.conj().T)


def _clean(rel: float, n: int, dtype: np.dtype) -> bool:
    """Relative residual ≤ 10³·n·eps (NaN fails)."""
    return bool(rel <= 1e3 * n * np.finfo(dtype).eps)


def _care_rel_residual(A: np.ndarray, Q: np.ndarray, G: np.ndarray, X: np.ndarray) -> float:
    """‖AᴴX + XA − XGX + Q‖ / (2‖A‖‖X‖ + ‖XGX‖ + ‖Q‖) (Frobenius), G = BR⁻¹Bᴴ."""
    AX = A.conj().T @ X
    XGX = X @ G @ X
    den = 2 * _fro(A) * _fro(X) + _fro(XGX) + _fro(Q)
    return _fro(AX + AX.conj().T - XGX + Q) / max(den, np.finfo(X.dtype).tiny)


def _dare_rel_residual(
    A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, X: np.ndarray
) -> float:
    """‖AᴴXA − X − T + Q‖ / (‖A‖²‖X‖ + ‖X‖ + ‖T‖ + ‖Q‖), T = AᴴXB(R + BᴴXB)⁻¹BᴴXA."""
    XB = X @ B
    P = XB.conj().T @ A
    T = P.conj().T @ np.linalg.solve(R + B.conj().T @ XB, P)
    den = _fro(A) ** 2 * _fro(X) + _fro(X) + _fro(T) + _fro(Q)
    res = A.conj().T @ X @ A - X - T + Q
    return _fro(res) / max(den, np.finfo(X.dtype).tiny)


def care_laub(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray) -> np.ndarray | None:
    """Stabilising solution of AᴴX + XA − XBR⁻¹BᴴX + Q = 0 by Laub's Schur method, or None.

    Hand-written (scipy only has the QZ method on the extended pencil): the Hamiltonian
    H = [[A, −G], [−Q, −Aᴴ]], G = BR⁻¹Bᴴ, is brought to real/complex Schur form with its
    left-half-plane eigenvalues ordered first (one LAPACK ``?gees`` call with a selection);
    the first n Schur vectors [U₁₁; U₂₁] span the stable invariant subspace and X = U₂₁U₁₁⁻¹.
    A 2n × 2n eigenproblem instead of scipy's (2n + m) × (2n + m) QZ with balancing.  Computed
    in double precision.  Returns None — and the caller falls back to scipy's QZ solver — when
    the solution is not found cleanly: R not positive definite, not exactly n stable
    eigenvalues, U₁₁ ill-conditioned, or a relative residual above 10³·n·eps (badly scaled or
    nearly unstabilisable problems, where scipy's balancing and QZ do better).
    """
    prep = _riccati_double(A, B, Q, R)
    if prep is None:
        return None
    A, _, Q, _, G = prep
    n = A.shape[-1]
    Ah = A.conj().T
    H = np.empty((2 * n, 2 * n), dtype=A.dtype, order="F")
    H[:n, :n], H[:n, n:], H[n:, :n], H[n:, n:] = A, -G, -Q, -Ah
    gees = _lapack("gees", H.dtype)
    lwork = _lwork("gees", H, lambda: gees(_select, H, lwork=-1))
    select = _lhp_complex if np.iscomplexobj(H) else _lhp_real
    res = gees(select, H, lwork=lwork, sort_t=1, overwrite_a=1)
    if res[-1] != 0 or res[1] != n:  # failed, reordering failed, or not n stable eigenvalues
        return None
    X = _graph_solution(res[-3], n)
    if X is None:
        return None
    return X if _clean(_care_rel_residual(A, Q, G, X), n, X.dtype) else None


def dare_pencil(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray) -> np.ndarray | None:
    """Stabilising solution of AᴴXA − X − AᴴXB(R + BᴴXB)⁻¹BᴴXA + Q = 0 from the 2n × 2n
    symplectic pencil, or None.

    Hand-written (scipy runs QZ on the balanced (2n + m) × (2n + m) extended pencil): the
    pencil L − λM, L = [[A, 0], [−Q, I]], M = [[I, G], [0, Aᴴ]], G = BR⁻¹Bᴴ, is brought to
    generalised Schur form with the eigenvalues inside the unit circle ordered first (one LAPACK
    ``?gges`` call with a selection); the first n right Schur vectors [U₁₁; U₂₁] give
    X = U₂₁U₁₁⁻¹.  A singular A only adds infinite eigenvalues.  Double precision; None (the
    caller then uses scipy) under the same conditions as :func:`care_laub`.
    """
    prep = _riccati_double(A, B, Q, R)
    if prep is None:
        return None
    A, B, Q, R, G = prep
    n = A.shape[-1]
    dt = A.dtype
    Ah = A.conj().T
    L = np.zeros((2 * n, 2 * n), dtype=dt, order="F")
    M = np.zeros((2 * n, 2 * n), dtype=dt, order="F")
    L[:n, :n], L[n:, :n] = A, -Q
    M[:n, n:], M[n:, n:] = G, Ah
    idx = np.arange(n)
    L[n + idx, n + idx] = 1.0
    M[idx, idx] = 1.0
    gges = _lapack("gges", dt)
    complex_ = np.iscomplexobj(L)
    select = _iuc_complex if complex_ else _iuc_real
    lwork = _lwork("gges", L, lambda: gges(select, L, M, lwork=-1, jobvsl=0))
    res = gges(select, L, M, jobvsl=0, sort_t=1, lwork=lwork, overwrite_a=1, overwrite_b=1)
    if res[-1] != 0 or res[2] != n:
        return None
    X = _graph_solution(res[-3], n)
    if X is None:
        return None
    return X if _clean(_dare_rel_residual(A, B, Q, R, X), n, X.dtype) else None


def _care_one(
    A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray
) -> tuple[np.ndarray, float | None]:
    """(X, None) from :func:`care_laub`, else (scipy's X, its relative residual)."""
    X = care_laub(A, B, Q, R)
    if X is not None:
        return X, None
    X = sla.solve_continuous_are(A, B, Q, R)
    prep = _riccati_double(A, B, Q, R)
    if prep is None:  # R not positive definite (only reachable with check=False)
        return X, None
    Ad, _, Qd, _, G = prep
    return X, _care_rel_residual(Ad, Qd, G, np.asarray(X, dtype=Ad.dtype))


def _dare_one(
    A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray
) -> tuple[np.ndarray, float | None]:
    """(X, None) from :func:`dare_pencil`, else (scipy's X, its relative residual)."""
    X = dare_pencil(A, B, Q, R)
    if X is not None:
        return X, None
    X = sla.solve_discrete_are(A, B, Q, R)
    dt = np.result_type(A, B, Q, R, np.float64)
    Ad, Bd, Qd, Rd, Xd = (np.asarray(t, dtype=dt) for t in (A, B, Q, R, X))
    return X, _dare_rel_residual(Ad, Bd, Qd, Rd, Xd)


def care(*args: np.ndarray) -> tuple[np.ndarray, tuple[float, int] | None]:
    """AᴴX + XA − XBR⁻¹BᴴX + Q = 0 per system: Laub's ordered Schur method
    (:func:`care_laub`), falling back to scipy.linalg.solve_continuous_are (QZ on the
    balanced extended pencil) whenever that does not give a clean solution.  Returns the
    solutions and the worst relative residual of the fallback solves (see :func:`_riccati`)."""
    return _riccati(_care_one, "CARE", *args)


def dare(*args: np.ndarray) -> tuple[np.ndarray, tuple[float, int] | None]:
    """AᴴXA − X − AᴴXB(R + BᴴXB)⁻¹BᴴXA + Q = 0 per system: QZ on the 2n × 2n symplectic
    pencil (:func:`dare_pencil`), falling back to scipy.linalg.solve_discrete_are whenever that
    does not give a clean solution.  Returns the solutions and the worst relative residual of the
    fallback solves (see :func:`_riccati`)."""
    return _riccati(_dare_one, "DARE", *args)
