"""Tests of mgplvm.control: Sylvester / Lyapunov / Riccati solvers and Gramians (DESIGN.md §4).

scipy (float64 / complex128) is the oracle; known-solution constructions check without it.
Derivatives: gradcheck / gradgradcheck, a jvp–vjp dot-product test and vmap-vs-loop.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.integrate as sint
import scipy.linalg as sla
import torch
from torch.autograd import gradcheck, gradgradcheck

import mgplvm.control as ctl

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

F32, F64, C64, C128 = torch.float32, torch.float64, torch.complex64, torch.complex128
DTYPES = [F32, F64, C64, C128]
RTOL = {F32: 1e-4, C64: 1e-4, F64: 1e-10, C128: 1e-10}
HIGH = {F32: F64, C64: C128, F64: F64, C128: C128}


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Tiny LAPACK calls with a multi-threaded OpenBLAS on a shared, oversubscribed CPU can be
    1000× slower than single-threaded ones (torch's OpenMP pool similarly); one thread each
    keeps the run fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
    else:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


EQS = ["sylv", "clyap", "dlyap", "care", "dare"]
LINEAR = ["sylv", "clyap", "dlyap"]


# ------------------------------------------------------------------------------------------
# problem construction (generated in double precision, then cast)
# ------------------------------------------------------------------------------------------
def _randn(g: torch.Generator, *shape: int, dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(*shape, generator=g, dtype=F64)
    if dtype.is_complex:
        x = torch.complex(x, torch.randn(*shape, generator=g, dtype=F64)) / math.sqrt(2)
    return x


def _hurwitz(g: torch.Generator, *shape: int, dtype: torch.dtype, margin: float = 1.0):
    """Random matrices with max Re λ = −margin (per batch element)."""
    n = shape[-1]
    M = _randn(g, *shape, dtype=dtype) / math.sqrt(n)
    shift = torch.linalg.eigvals(M).real.amax(-1) + margin
    return M - shift[..., None, None] * torch.eye(n, dtype=M.dtype)


def _schur_stable(g: torch.Generator, *shape: int, dtype: torch.dtype, rho: float = 0.8):
    """Random matrices with spectral radius rho."""
    M = _randn(g, *shape, dtype=dtype)
    r = torch.linalg.eigvals(M).abs().amax(-1)
    return M * (rho / r)[..., None, None]


def _pd(g: torch.Generator, *shape: int, dtype: torch.dtype) -> torch.Tensor:
    n = shape[-1]
    C = _randn(g, *shape, dtype=dtype) / math.sqrt(n)
    return C @ C.mH + torch.eye(n, dtype=C.dtype)


def _riccati_dims(n: int) -> int:
    return max(1, n // 2)


def make_problem(
    eq: str, n: int, dtype: torch.dtype, shapes: str = "unbatched", seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Inputs of equation ``eq`` with batch layout ``shapes`` (unbatched | batched | broadcast)."""
    g = torch.Generator().manual_seed(seed)
    if shapes == "unbatched":
        lead = [(), (), (), ()]
    elif shapes == "batched":
        lead = [(9,), (9,), (9,), (9,)]
    else:  # broadcast: A (2, 1), second (1,) or (), third (3,), R unbatched
        lead = [(2, 1), (1,), (3,), ()]
    m = n + 1 if n < 64 else n
    if eq == "sylv":
        out = (
            _hurwitz(g, *lead[0], n, n, dtype=dtype),
            _hurwitz(g, *lead[1], m, m, dtype=dtype),
            _randn(g, *lead[2], n, m, dtype=dtype),
        )
    elif eq == "clyap":
        out = (_hurwitz(g, *lead[0], n, n, dtype=dtype), _randn(g, *lead[2], n, n, dtype=dtype))
    elif eq == "dlyap":
        out = (
            _schur_stable(g, *lead[0], n, n, dtype=dtype),
            _randn(g, *lead[2], n, n, dtype=dtype),
        )
    else:
        k = _riccati_dims(n)
        A = _randn(g, *lead[0], n, n, dtype=dtype) / math.sqrt(n)
        if eq == "dare":
            A = 1.1 * A
        out = (
            A,
            _randn(g, *lead[1], n, k, dtype=dtype),
            _pd(g, *lead[2], n, n, dtype=dtype),
            _pd(g, *lead[3], k, k, dtype=dtype),
        )
    return tuple(t.to(dtype) for t in out)


def solve(eq: str, *args: torch.Tensor, **kw):
    fn = {
        "sylv": ctl.solve_sylvester,
        "clyap": ctl.solve_continuous_lyapunov,
        "dlyap": ctl.solve_discrete_lyapunov,
        "care": ctl.solve_continuous_are,
        "dare": ctl.solve_discrete_are,
    }[eq]
    return fn(*args, **kw)


_SCIPY = {
    "sylv": sla.solve_sylvester,
    "clyap": sla.solve_continuous_lyapunov,
    "dlyap": sla.solve_discrete_lyapunov,
    "care": sla.solve_continuous_are,
    "dare": sla.solve_discrete_are,
}


def oracle(eq: str, *args: torch.Tensor) -> np.ndarray:
    """scipy in float64/complex128 on every system of the broadcast batch."""
    arrs = [t.detach().to(HIGH[t.dtype]).numpy() for t in args]
    batch = np.broadcast_shapes(*(a.shape[:-2] for a in arrs))
    flat = [np.broadcast_to(a, batch + a.shape[-2:]).reshape(-1, *a.shape[-2:]) for a in arrs]
    out = [_SCIPY[eq](*(f[k] for f in flat)) for k in range(flat[0].shape[0])]
    return np.stack(out).reshape(*batch, *out[0].shape)


def rel_err(X: torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    ref = torch.as_tensor(ref).to(HIGH[X.dtype])
    Xh = X.detach().to(HIGH[X.dtype])
    return float(torch.linalg.norm(Xh - ref) / torch.linalg.norm(ref))


def residual(eq: str, X: torch.Tensor, *args: torch.Tensor) -> float:
    """Relative residual of the equation (double precision)."""
    X = X.detach().to(HIGH[X.dtype])
    a = [t.detach().to(HIGH[t.dtype]) for t in args]
    nrm = torch.linalg.norm
    if eq == "sylv":
        A, B, Q = a
        return float(nrm(A @ X + X @ B - Q) / (nrm(A) * nrm(X) + nrm(X) * nrm(B) + nrm(Q)))
    if eq == "clyap":
        A, Q = a
        return float(nrm(A @ X + X @ A.mH - Q) / (2 * nrm(A) * nrm(X) + nrm(Q)))
    if eq == "dlyap":
        A, Q = a
        return float(nrm(A @ X @ A.mH - X + Q) / (nrm(A) ** 2 * nrm(X) + nrm(X) + nrm(Q)))
    A, B, Q, R = a
    if eq == "care":
        XGX = X @ B @ torch.linalg.solve(R, B.mH @ X)
        res = A.mH @ X + X @ A - XGX + Q
        return float(nrm(res) / (2 * nrm(A) * nrm(X) + nrm(XGX) + nrm(Q)))
    P = B.mH @ X @ A
    T = P.mH @ torch.linalg.solve(R + B.mH @ X @ B, P)
    res = A.mH @ X @ A - X - T + Q
    return float(nrm(res) / (nrm(A) ** 2 * nrm(X) + nrm(X) + nrm(T) + nrm(Q)))


# ------------------------------------------------------------------------------------------
# against scipy: all equations, dtypes, batch layouts, sizes
# ------------------------------------------------------------------------------------------
_CASES = [(n, s) for n in (1, 2, 5, 16) for s in ("unbatched", "batched", "broadcast")]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("n", "shapes"), _CASES)
@pytest.mark.parametrize("eq", EQS)
def test_against_scipy(eq: str, n: int, shapes: str, dtype: torch.dtype) -> None:
    args = make_problem(eq, n, dtype, shapes, seed=n)
    X = solve(eq, *args)
    ref = oracle(eq, *args)
    assert X.dtype == dtype
    assert X.shape == ref.shape
    assert rel_err(X, ref) < RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("eq", EQS)
def test_against_scipy_n64(eq: str, dtype: torch.dtype) -> None:
    args = make_problem(eq, 64, dtype, seed=64)
    X = solve(eq, *args)
    assert X.dtype == dtype
    assert rel_err(X, oracle(eq, *args)) < RTOL[dtype]


@pytest.mark.parametrize("eq", EQS)
def test_batched_n64_torch_backend(eq: str) -> None:
    """n = 64 (Riccati: 32) on the pure-torch backend (the GPU / batch path)."""
    n = 32 if eq in ("care", "dare") else 64
    args = make_problem(eq, n, F64, seed=7)
    args = tuple(t.expand(2, *t.shape) for t in args)
    X, info = solve(eq, *args, backend="torch", return_info=True)
    assert info.backend == "torch"
    assert rel_err(X, oracle(eq, *(t[:1] for t in args)).repeat(2, 0)) < 1e-10


# ------------------------------------------------------------------------------------------
# known solutions (no oracle)
# ------------------------------------------------------------------------------------------
def known_solution(eq: str, n: int, dtype: torch.dtype, seed: int = 0):
    """(inputs, X) with Q built from a chosen X."""
    g = torch.Generator().manual_seed(seed)
    if eq == "sylv":
        A, B = _hurwitz(g, n, n, dtype=dtype), _hurwitz(g, n + 2, n + 2, dtype=dtype)
        X = _randn(g, n, n + 2, dtype=dtype)
        return (A, B, A @ X + X @ B), X
    if eq == "clyap":
        A, X = _hurwitz(g, n, n, dtype=dtype), _randn(g, n, n, dtype=dtype)
        return (A, A @ X + X @ A.mH), X
    if eq == "dlyap":
        A, X = _schur_stable(g, n, n, dtype=dtype), _randn(g, n, n, dtype=dtype)
        return (A, X - A @ X @ A.mH), X
    k = _riccati_dims(n)
    X = _pd(g, n, n, dtype=dtype)
    B, R = _randn(g, n, k, dtype=dtype), _pd(g, k, k, dtype=dtype)
    if eq == "care":
        A = _hurwitz(g, n, n, dtype=dtype, margin=0.5)
        Q = -(A.mH @ X + X @ A - X @ B @ torch.linalg.solve(R, B.mH @ X))
        Acl = A - B @ torch.linalg.solve(R, B.mH @ X)
        assert torch.linalg.eigvals(Acl).real.max() < 0  # X is the stabilising solution
    else:
        A = _schur_stable(g, n, n, dtype=dtype, rho=0.9)
        K = torch.linalg.solve(R + B.mH @ X @ B, B.mH @ X @ A)
        Q = X - A.mH @ X @ A + A.mH @ X @ B @ K
        assert torch.linalg.eigvals(A - B @ K).abs().max() < 1
    Q = 0.5 * (Q + Q.mH)
    return (A, B, Q, R), X


def _backends(eq: str, n: int) -> list[str]:
    out = ["auto", "scipy", "torch"]
    if eq in LINEAR and n <= 8:
        out.append("kron")
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 3, 12])
@pytest.mark.parametrize("eq", EQS)
def test_known_solution(eq: str, n: int, dtype: torch.dtype) -> None:
    args, X = known_solution(eq, n, HIGH[dtype], seed=n)
    args, X = tuple(t.to(dtype) for t in args), X.to(dtype)
    tol = 1e-9 if dtype in (F64, C128) else 1e-3
    for backend in _backends(eq, n):
        Xs = solve(eq, *args, backend=backend)
        assert rel_err(Xs, X) < tol, backend


# ------------------------------------------------------------------------------------------
# backends, fallback, return_info
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shapes", ["unbatched", "batched"])
@pytest.mark.parametrize("eq", EQS)
def test_each_backend(eq: str, shapes: str) -> None:
    args = make_problem(eq, 6, C128 if shapes == "batched" else F64, shapes, seed=3)
    ref = oracle(eq, *args)
    for backend in ["scipy", "torch"] + (["kron"] if eq in LINEAR else []):
        X, info = solve(eq, *args, backend=backend, return_info=True)
        assert info.backend == backend
        assert (info.iterations > 0) == (backend == "torch")
        assert rel_err(X, ref) < 1e-10, backend
        assert info.residual < 1e-12
        assert info.residuals.shape == X.shape[:-2]


def test_auto_backend_choice() -> None:
    g = torch.Generator().manual_seed(0)
    A3, A8 = _hurwitz(g, 3, 3, dtype=F64), _hurwitz(g, 8, 8, dtype=F64)
    assert ctl.solve_continuous_lyapunov(A3, A3, return_info=True)[1].backend == "kron"
    assert ctl.solve_continuous_lyapunov(A8, A8, return_info=True)[1].backend == "scipy"
    Ab = _hurwitz(g, 8, 8, 8, dtype=F64)
    _, info = ctl.solve_continuous_lyapunov(Ab, Ab, return_info=True)
    assert info.backend == "torch" and info.iterations > 0
    A32 = _hurwitz(g, 8, 32, 32, dtype=F64)  # the chain-test size: batches go to torch
    Bm = _randn(g, 32, 2, dtype=F64)
    _, info = ctl.solve_continuous_are(
        A32, Bm, torch.eye(32, dtype=F64), torch.eye(2, dtype=F64), return_info=True
    )
    assert info.backend == "torch"
    _, info = ctl.solve_continuous_are(
        A32[0], Bm, torch.eye(32, dtype=F64), torch.eye(2, dtype=F64), return_info=True
    )
    assert info.backend == "scipy"


def test_auto_falls_back_to_scipy() -> None:
    """A batch with one system that the sign iteration cannot take (A neither Hurwitz nor
    anti-Hurwitz): auto re-solves it by Bartels–Stewart; backend='torch' refuses."""
    g = torch.Generator().manual_seed(1)
    A = _hurwitz(g, 10, 8, 8, dtype=F64)
    A[4] = torch.diag(torch.tensor([1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 0.5, -0.7], dtype=F64))
    A[4] += 0.1 * _randn(g, 8, 8, dtype=F64)
    Q = _randn(g, 10, 8, 8, dtype=F64)
    X, info = ctl.solve_continuous_lyapunov(A, Q, return_info=True)
    assert info.backend == "scipy+torch"
    assert rel_err(X, oracle("clyap", A, Q)) < 1e-10
    with pytest.raises(ctl.StabilityError, match="system 4"):
        ctl.solve_continuous_lyapunov(A, Q, backend="torch")


@pytest.mark.parametrize("dtype", [F64, F32, C128], ids=str)
def test_small_products_match_torch(dtype: torch.dtype) -> None:
    """``_iterative._mm`` (numpy's matmul for small real CPU matrices) equals ``torch.matmul``:
    stacked, broadcast (one matrix for a stack, batch dims (2, 1) × (3,)), transposed views,
    inputs that require grad, sides above the numpy limit; overflow gives inf silently, as in
    torch; the dtype is kept."""
    from mgplvm.control import _iterative as it

    g = torch.Generator().manual_seed(11)
    tol = 1e-5 if dtype == F32 else 1e-12
    cases = [
        (_randn(g, 5, 4, 6, dtype=dtype), _randn(g, 5, 6, 3, dtype=dtype)),
        (_randn(g, 4, 4, dtype=dtype), _randn(g, 7, 4, 4, dtype=dtype)),
        (_randn(g, 2, 1, 3, 3, dtype=dtype), _randn(g, 3, 3, 3, dtype=dtype).mT),
        (_randn(g, 3, 3, dtype=dtype).requires_grad_(), _randn(g, 3, 3, dtype=dtype)),
        (_randn(g, 2, 70, 70, dtype=dtype), _randn(g, 2, 70, 70, dtype=dtype)),
    ]
    for a, b in cases:
        a, b = a.to(dtype), b.to(dtype)
        out = it._mm(a, b)
        ref = (a @ b).detach()
        assert out.dtype == dtype and out.shape == ref.shape
        assert rel_err(out, ref) < tol
    big = torch.full((2, 3, 3), 1e200 if dtype != F32 else 1e30, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isinf(it._mm(big, big).abs()).all()


@pytest.mark.parametrize("dtype", [F64, C128, F32], ids=str)
def test_cayley_smith_batches(dtype: torch.dtype) -> None:
    """The batched continuous-time iteration (Cayley transform + squared Smith doubling), one
    shift per system: Hurwitz and anti-Hurwitz systems solved, with the right ``hurwitz`` flag;
    a system with eigenvalues on both sides of the imaginary axis reported as not ok; a stiff
    spectrum (|λ| from 1e-3 to 1e3) still converges."""
    from mgplvm.control import _iterative as it

    g = torch.Generator().manual_seed(5)
    A = _hurwitz(g, 6, 7, 7, dtype=dtype).to(dtype)
    B = _hurwitz(g, 6, 5, 5, dtype=dtype).to(dtype)
    A[1], B[1] = -A[1], -B[1]  # both anti-Hurwitz
    lam = -torch.logspace(-3, 3, 7, dtype=F64)  # stiff, and non-normal through V
    V = torch.eye(7, dtype=F64) + 0.3 * _randn(g, 7, 7, dtype=F64)
    A[2] = (V @ torch.diag(lam) @ torch.linalg.inv(V)).to(dtype)
    A[3] = torch.diag(torch.tensor([1.0, -1, 2, -2, 3, -3, 0.5], dtype=F64)).to(dtype)
    Q = _randn(g, 6, 7, 7, dtype=dtype).to(dtype)
    Qs = _randn(g, 6, 7, 5, dtype=dtype).to(dtype)
    X, ok, k, hurwitz = it.cayley_smith(A, Q)
    assert ok.tolist() == [True, True, True, False, True, True]
    assert hurwitz[[0, 1, 2]].tolist() == [True, False, True]
    # the stiff system (κ ~ 1e6) only in double precision: scipy itself is off by ~1e-2 in float32
    good = [0, 1, 4, 5] if dtype == F32 else [0, 1, 2, 4, 5]
    tol = {F32: 1e-4, F64: 1e-9, C128: 1e-9}[dtype]
    assert rel_err(X[good], oracle("clyap", A[good], Q[good])) < tol
    Y, oky, _, _ = it.cayley_smith(A, Qs, B)
    assert oky.tolist() == [True, True, True, False, True, True]
    # one A for a batch of Q (its powers computed once), and broadcast batch shapes
    Xs, oks, _, _ = it.cayley_smith(A[0], Q)
    assert oks.all() and rel_err(Xs, oracle("clyap", A[0].expand_as(Q), Q)) < tol
    Ab = torch.stack([A[0], A[4]])[:, None]  # (2, 1, 7, 7) with Q (6, 7, 7) -> batch (2, 6)
    Xb, okb, _, _ = it.cayley_smith(Ab, Q)
    assert Xb.shape == (2, 6, 7, 7) and okb.all()
    assert rel_err(Xb, oracle("clyap", Ab.expand(2, 6, 7, 7), Q.expand(2, 6, 7, 7))) < tol
    assert rel_err(Y[good], oracle("sylv", A[good], B[good], Qs[good])) < tol
    assert 0 < k <= 50


@pytest.mark.parametrize("eq", ["clyap", "sylv"])
def test_torch_backend_retries_unconverged_with_sign_iteration(eq: str, monkeypatch) -> None:
    """Systems the Cayley–Smith doubling leaves unconverged are re-solved by the Newton sign
    iteration (not dropped, not left wrong)."""
    from mgplvm.control import _iterative as it

    real = it.cayley_smith
    args = make_problem(eq, 6, F64, "batched", seed=3)
    ref = oracle(eq, *args)
    calls = []

    def sign(*a, **kw):
        calls.append(a[0].shape[0])
        return sign_real(*a, **kw)

    sign_name = "sign_lyapunov" if eq == "clyap" else "sign_sylvester"
    sign_real = getattr(it, sign_name)
    monkeypatch.setattr(it, sign_name, sign)

    def broken(*args, **kw):
        X, ok, k, hurwitz = real(*args, **kw)
        X = X.clone()
        X[2] = float("nan")
        ok = ok.clone()
        ok[2] = False
        return X, ok, k, hurwitz

    monkeypatch.setattr(it, "cayley_smith", broken)
    X, info = solve(eq, *args, backend="torch", return_info=True)
    assert info.backend == "torch"
    assert calls == [1]  # only the unconverged system went to the sign iteration
    assert rel_err(X, ref) < 1e-10


def test_return_info_fields() -> None:
    args = make_problem("care", 5, F64, seed=2)
    X, info = ctl.solve_continuous_are(*args, return_info=True)
    assert isinstance(info, ctl.SolveInfo)
    assert info.backend == "scipy" and info.iterations == 0
    assert 0 <= info.residual < 1e-12 and info.residuals.shape == ()
    argsb = make_problem("dare", 5, F64, "batched", seed=2)
    X, info = ctl.solve_discrete_are(*argsb, return_info=True)
    assert info.backend == "torch" and info.iterations > 0
    assert info.residuals.shape == (9,) and float(info.residuals.max()) == info.residual


# ------------------------------------------------------------------------------------------
# derivatives
# ------------------------------------------------------------------------------------------
def _fn(eq: str, backend: str):
    """Solver as a function of all inputs; Riccati with check=False so that gradcheck may
    perturb Q and R off the Hermitian set (the solver uses their Hermitian parts)."""
    if eq in ("care", "dare"):
        return lambda *a: solve(eq, *a, backend=backend, check=False)
    return lambda *a: solve(eq, *a, backend=backend)


def _grad_inputs(eq: str, dtype: torch.dtype, n: int = 3, shapes: str = "unbatched", seed=0):
    args = make_problem(eq, n, dtype, shapes, seed=seed)
    return tuple(t.detach().clone().requires_grad_(True) for t in args)


_GRAD_CASES = [(eq, b) for eq in EQS for b in ("scipy", "torch")] + [(eq, "kron") for eq in LINEAR]


@pytest.mark.parametrize("dtype", [F64, C128], ids=str)
@pytest.mark.parametrize(("eq", "backend"), _GRAD_CASES)
def test_gradcheck(eq: str, backend: str, dtype: torch.dtype) -> None:
    args = _grad_inputs(eq, dtype, n=2 if eq == "sylv" else 3)
    assert gradcheck(_fn(eq, backend), args)


@pytest.mark.parametrize("dtype", [F64, C128], ids=str)
@pytest.mark.parametrize("eq", EQS)
def test_gradgradcheck(eq: str, dtype: torch.dtype) -> None:
    args = _grad_inputs(eq, dtype, n=2 if eq == "sylv" else 3)
    assert gradgradcheck(_fn(eq, "scipy"), args)


@pytest.mark.parametrize("eq", EQS)
def test_gradcheck_broadcast(eq: str) -> None:
    """Gradients of broadcast inputs are reduced to their own shapes."""
    g = torch.Generator().manual_seed(5)
    args = list(make_problem(eq, 2, F64, seed=5))
    args[0] = torch.stack([args[0], args[0] + 0.05 * _randn(g, 2, 2, dtype=F64)])[:, None]
    if eq in ("care", "dare"):
        args[2] = args[2].expand(3, 2, 2).clone()
    else:
        args[-1] = torch.stack([args[-1], 2 * args[-1], -args[-1]])
    args = tuple(t.detach().requires_grad_(True) for t in args)
    assert gradcheck(_fn(eq, "auto"), args)
    if eq in ("clyap", "care"):
        assert gradgradcheck(_fn(eq, "auto"), args)


def _inner(U: torch.Tensor, V: torch.Tensor) -> float:
    return float(torch.vdot(U.reshape(-1), V.reshape(-1)).real)


@pytest.mark.parametrize("dtype", [F64, C128], ids=str)
@pytest.mark.parametrize("eq", EQS)
def test_jvp_vjp_dot_product(eq: str, dtype: torch.dtype) -> None:
    """⟨X̄, J d⟩ = ⟨Jᵀ X̄, d⟩ with torch.func.jvp / torch.func.vjp (real inner product)."""
    args = make_problem(eq, 5, dtype, seed=11)
    g = torch.Generator().manual_seed(12)
    dirs = tuple(_randn(g, *t.shape, dtype=dtype) for t in args)
    if eq in ("care", "dare"):  # tangent directions for Hermitian inputs
        dirs = dirs[:2] + tuple(0.5 * (d + d.mH) for d in dirs[2:])
    fn = _fn(eq, "auto")
    X, Xdot = torch.func.jvp(fn, args, dirs)
    Xbar = _randn(g, *X.shape, dtype=dtype)
    _, pullback = torch.func.vjp(fn, *args)
    grads = pullback(Xbar)
    lhs = _inner(Xbar, Xdot)
    rhs = sum(_inner(gr, d) for gr, d in zip(grads, dirs, strict=True))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-12)
    # and the tangent agrees with a central finite difference
    h = 1e-6
    Xp = fn(*(a + h * d for a, d in zip(args, dirs, strict=True)))
    Xm = fn(*(a - h * d for a, d in zip(args, dirs, strict=True)))
    assert rel_err(Xdot, (Xp - Xm) / (2 * h)) < 1e-7


@pytest.mark.parametrize("eq", EQS)
def test_vmap_equals_loop(eq: str) -> None:
    args = make_problem(eq, 4, F64, "batched", seed=13)
    args = (args[0][:5],) + tuple(t[:5] for t in args[1:])
    fn = _fn(eq, "auto")
    loop = torch.stack([fn(*(t[i] for t in args)) for i in range(5)])
    assert rel_err(torch.func.vmap(fn)(*args), loop) < 1e-13
    # one input unbatched (in_dims None), and vmap over a batched (broadcast) input
    in_dims = (0,) + (None,) * (len(args) - 1)
    fixed = tuple(t[0] for t in args[1:])
    loop = torch.stack([fn(args[0][i], *fixed) for i in range(5)])
    assert rel_err(torch.func.vmap(fn, in_dims=in_dims)(args[0], *fixed), loop) < 1e-13
    inner = (args[0][:, None].expand(5, 2, *args[0].shape[1:]),) + fixed
    out = torch.func.vmap(fn, in_dims=in_dims)(*inner)
    assert out.shape == (5, 2, *loop.shape[1:])
    assert rel_err(out[:, 1], loop) < 1e-13


def test_vmap_of_grad_and_jacfwd() -> None:
    args = make_problem("clyap", 3, F64, "batched", seed=14)
    A, Q = args[0][:4], args[1][:4]

    def loss(a: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return ctl.solve_continuous_lyapunov(a, q).square().sum()

    gv = torch.func.vmap(torch.func.grad(loss))(A, Q)
    gl = torch.stack([torch.func.grad(loss)(A[i], Q[i]) for i in range(4)])
    assert rel_err(gv, gl) < 1e-12
    jf = torch.func.jacfwd(lambda a: ctl.solve_continuous_lyapunov(a, Q[0]))(A[0])
    jr = torch.func.jacrev(lambda a: ctl.solve_continuous_lyapunov(a, Q[0]))(A[0])
    assert rel_err(jf, jr) < 1e-12


_BATCHED_CASES = [(eq, b) for eq in LINEAR for b in ("scipy", "torch")] + [
    (eq, "torch") for eq in ("care", "dare")
]


@pytest.mark.parametrize("dtype", [F64, C128], ids=str)
@pytest.mark.parametrize(("eq", "backend"), _BATCHED_CASES)
def test_gradcheck_batched_grad(eq: str, backend: str, dtype: torch.dtype) -> None:
    """The legacy vmap of check_batched_grad reaches the Functions' forward with BatchedTensors
    (solved sample by sample through a custom op); tests/test_faults_comms.py covers "auto"."""
    args = _grad_inputs(eq, dtype, n=2)
    assert gradcheck(_fn(eq, backend), args, check_batched_grad=True)


@pytest.mark.parametrize("eq", ["clyap", "care"])
def test_gradgradcheck_batched_grad(eq: str) -> None:
    args = _grad_inputs(eq, F64, n=2)
    assert gradgradcheck(_fn(eq, "auto"), args, check_batched_grad=True)


@pytest.mark.parametrize("eq", EQS)
def test_jacobian_vectorized_forward_mode(eq: str) -> None:
    """jacobian(vectorize=True, strategy="forward-mode"): legacy vmap over the tangents."""
    args = make_problem(eq, 3, F64, seed=15)
    fn = _fn(eq, "auto")

    def of_A(a: torch.Tensor) -> torch.Tensor:
        return fn(a, *args[1:])

    J = torch.autograd.functional.jacobian(of_A, args[0], vectorize=True, strategy="forward-mode")
    assert rel_err(J, torch.func.jacfwd(of_A)(args[0])) < 1e-12


@pytest.mark.parametrize("backend", ["scipy", "torch", "kron"])
@pytest.mark.parametrize("eq", EQS)
def test_forward_ad_dual_tensors(eq: str, backend: str) -> None:
    """torch.autograd.forward_ad dual tensors give torch.func.jvp's tangent on every backend
    (a view returned by the forward used to stop the torch CARE with an internal assert)."""
    import torch.autograd.forward_ad as fwAD

    if backend == "kron" and eq not in LINEAR:
        pytest.skip("no Kronecker backend for the Riccati equations")
    args = make_problem(eq, 3, F64, seed=16)
    g = torch.Generator().manual_seed(17)
    dirs = tuple(_randn(g, *t.shape, dtype=F64) for t in args)
    if eq in ("care", "dare"):
        dirs = dirs[:2] + tuple(d + d.mT for d in dirs[2:])
    fn = _fn(eq, backend)
    with fwAD.dual_level():
        out = fn(*(fwAD.make_dual(a, d) for a, d in zip(args, dirs, strict=True)))
        tangent = fwAD.unpack_dual(out).tangent
    _, ref = torch.func.jvp(fn, args, dirs)
    assert rel_err(tangent, ref) < 1e-12


def test_no_graph_through_solver() -> None:
    """The backward graph is one Function node, not the solver's iterations."""
    A, Q = _grad_inputs("clyap", F64, n=6, shapes="batched")
    X = ctl.solve_continuous_lyapunov(A, Q, backend="torch")
    assert type(X.grad_fn).__name__.startswith("CLyapFn")
    X.sum().backward()
    assert A.grad is not None and Q.grad is not None


# ------------------------------------------------------------------------------------------
# non-normal accuracy: chain networks
# ------------------------------------------------------------------------------------------
def chain(n: int, alpha: float) -> torch.Tensor:
    """Weights α ahead (superdiagonal), 1 behind (subdiagonal), diagonal shifted to stability
    (eigenvalues −0.5 − 2√α(1 − cos(kπ/(n+1))))."""
    W = alpha * torch.diag(torch.ones(n - 1, dtype=F64), 1)
    W = W + torch.diag(torch.ones(n - 1, dtype=F64), -1)
    return W - (2 * math.sqrt(alpha) + 0.5) * torch.eye(n, dtype=F64)


def chain_problem(eq: str, alpha: float, n: int = 32) -> tuple[torch.Tensor, ...]:
    A = chain(n, alpha)
    g = torch.Generator().manual_seed(int(alpha))
    Ad = (A + (2 * math.sqrt(alpha) + 0.5) * torch.eye(n, dtype=F64)) / (2 * math.sqrt(alpha) + 0.5)
    B = _randn(g, n, 2, dtype=F64)
    eye = torch.eye(n, dtype=F64)
    if eq == "sylv":
        return A, chain(n, 1 / alpha).mT, _randn(g, n, n, dtype=F64)
    if eq == "clyap":
        return A, -(B @ B.mT)
    if eq == "dlyap":
        return Ad, B @ B.mT
    if eq == "care":
        return A, B, eye, torch.eye(2, dtype=F64)
    return Ad, B, eye, torch.eye(2, dtype=F64)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("eq", EQS)
def test_chain_non_normal(eq: str, alpha: float) -> None:
    """Both default backends: scipy (one system on CPU) and torch (batches of ≥ 8 small systems
    on CPU, everything on GPU; see test_auto_backend_choice), here run on one system."""
    args = chain_problem(eq, alpha)
    ref = oracle(eq, *args)
    X, info = solve(eq, *args, return_info=True)
    assert info.backend == "scipy"
    assert rel_err(X, ref) < 1e-9
    Xt, info = solve(eq, *args, backend="torch", return_info=True)
    assert info.backend == "torch"
    assert rel_err(Xt, ref) < 1e-9


@pytest.mark.parametrize("eq", ["care", "dare"])
def test_riccati_fast_path_and_fallback(eq: str) -> None:
    """The CPU Riccati solves: CARE by Laub's ordered Schur method on the Hamiltonian, DARE by
    QZ on the 2n × 2n symplectic pencil, both with scipy's solver as fallback.
    Well-conditioned problems (the non-normal chains, a complex one) take the fast path and
    agree with scipy; where its residual or U₁₁ is not clean it declines (returns None) and the
    default solve is exactly scipy's."""
    from mgplvm.control._scipy import care_laub, dare_pencil

    fast = care_laub if eq == "care" else dare_pencil
    for alpha in (1.0, 2.0, 3.0):
        A, B, Q, R = (t.numpy() for t in chain_problem(eq, alpha))
        X = fast(A, B, Q, R)
        assert X is not None
        Xs = _SCIPY[eq](A, B, Q, R)
        assert np.linalg.norm(X - Xs) / np.linalg.norm(Xs) < 1e-10
    A, B, Q, R = (t.numpy() for t in make_problem(eq, 5, C128, seed=3))
    X = fast(A, B, Q, R)
    assert X is not None and X.dtype == np.complex128
    Xs = _SCIPY[eq](A, B, Q, R)
    assert np.linalg.norm(X - Xs) / np.linalg.norm(Xs) < 1e-10
    if eq == "dare":  # a singular A only adds infinite eigenvalues to the pencil
        A, B, Q, R = (t.numpy() for t in make_problem(eq, 5, F64, seed=4))
        A = A.copy()
        A[:, 0] = 0.0
        X = fast(A, B, Q, R)
        assert X is not None
        Xs = _SCIPY[eq](A, B, Q, R)
        assert np.linalg.norm(X - Xs) / np.linalg.norm(Xs) < 1e-10

    eye2, one = np.eye(2), np.eye(1)
    unstable_mode = np.diag([1.0, -1.0] if eq == "care" else [1.5, 0.5])
    declined = {
        # the unstable mode barely reachable: ‖X‖ ~ 3e6 (CARE), 4e6 (DARE)
        "near-unstabilisable": (unstable_mode, np.array([[1e-3], [1.0]]), eye2, one),
        "unstabilisable": (unstable_mode, np.array([[0.0], [1.0]]), eye2, one),
        "R indefinite": (-0.5 * np.eye(2), np.ones((2, 1)), eye2, -one),
    }
    rng = np.random.default_rng(0)
    D = np.diag(10.0 ** np.arange(-6, 6, 2))  # a scaling only scipy's balancing undoes
    A0 = rng.standard_normal((6, 6))
    A0 = A0 - 3 * np.eye(6) if eq == "care" else A0 / (1.2 * np.abs(np.linalg.eigvals(A0)).max())
    Di = np.linalg.inv(D)
    declined["badly scaled"] = (D @ A0 @ Di, D @ rng.standard_normal((6, 2)), Di @ Di, eye2)
    for name, (A, B, Q, R) in declined.items():
        assert fast(A, B, Q, R) is None, name
    for name in ("badly scaled", "near-unstabilisable"):
        args = declined[name]
        X = solve(eq, *(torch.tensor(t) for t in args)).numpy()
        np.testing.assert_array_equal(X, _SCIPY[eq](*args), err_msg=name)


def test_eigendecomposition_would_miss_on_chain() -> None:
    """Why no eigendecomposition default: on the α = 3 chain an eigenvector solve misses the
    1e-9 target that the backends above meet."""
    A, Q = chain_problem("clyap", 3.0)
    lam, V = torch.linalg.eig(A.to(C128))
    Vi = torch.linalg.inv(V)
    Qt = Vi @ Q.to(C128) @ Vi.mH
    Xe = V @ (Qt / (lam[:, None] + lam.conj()[None, :])) @ V.mH
    assert rel_err(Xe.real, oracle("clyap", A, Q)) > 1e-9


# ------------------------------------------------------------------------------------------
# Gramians
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [F64, C128, F32], ids=str)
def test_gramians_infinite_vs_scipy(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(21)
    A = _hurwitz(g, 6, 6, dtype=dtype).to(dtype)
    B, C = _randn(g, 6, 2, dtype=dtype).to(dtype), _randn(g, 3, 6, dtype=dtype).to(dtype)
    a, b, c = (t.to(HIGH[dtype]).numpy() for t in (A, B, C))
    Wc = ctl.controllability_gramian(A, B)
    Wo = ctl.observability_gramian(A, C)
    assert rel_err(Wc, sla.solve_continuous_lyapunov(a, -b @ b.conj().T)) < RTOL[dtype]
    assert rel_err(Wo, sla.solve_continuous_lyapunov(a.conj().T, -c.conj().T @ c)) < RTOL[dtype]
    Ad = _schur_stable(g, 6, 6, dtype=dtype).to(dtype)
    ad = Ad.to(HIGH[dtype]).numpy()
    Wd = ctl.controllability_gramian(Ad, B, discrete=True)
    assert rel_err(Wd, sla.solve_discrete_lyapunov(ad, b @ b.conj().T)) < RTOL[dtype]
    Wdo = ctl.observability_gramian(Ad, C, discrete=True)
    assert rel_err(Wdo, sla.solve_discrete_lyapunov(ad.conj().T, c.conj().T @ c)) < RTOL[dtype]
    for backend in ("scipy", "torch", "kron"):
        W = ctl.controllability_gramian(A, B, backend=backend)
        assert rel_err(W, Wc) < 10 * RTOL[dtype]


def _quad_gramian(A: np.ndarray, B: np.ndarray, T: float) -> np.ndarray:
    BB = B @ B.conj().T

    def f(t: float) -> np.ndarray:
        E = sla.expm(A * t)
        return E @ BB @ E.conj().T

    W, _ = sint.quad_vec(f, 0.0, T, epsabs=1e-14, epsrel=1e-13)
    return W


@pytest.mark.parametrize("dtype", [F64, C128], ids=str)
@pytest.mark.parametrize("stable", [True, False])
def test_gramian_finite_horizon_vs_quadrature(stable: bool, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(22)
    A = _hurwitz(g, 4, 4, dtype=dtype, margin=0.3 if stable else -0.4)
    B = _randn(g, 4, 2, dtype=dtype)
    for T in (0.3, 2.5):
        W = ctl.controllability_gramian(A, B, T)
        assert rel_err(W, _quad_gramian(A.numpy(), B.numpy(), T)) < 1e-10
        Wo = ctl.observability_gramian(A, B.mH, T)
        assert rel_err(Wo, _quad_gramian(A.mH.resolve_conj().numpy(), B.numpy(), T)) < 1e-10
    assert float(ctl.controllability_gramian(A, B, 0.0).abs().max()) == 0.0


def test_gramian_finite_horizon_batched_T_and_limit() -> None:
    g = torch.Generator().manual_seed(23)
    A = _hurwitz(g, 3, 5, 5, dtype=F64)
    B = _randn(g, 5, 2, dtype=F64)
    T = torch.tensor([0.5, 1.0, 40.0], dtype=F64)
    W = ctl.controllability_gramian(A, B, T)
    for i in range(3):
        assert rel_err(W[i], ctl.controllability_gramian(A[i], B, float(T[i]))) < 1e-13
    assert rel_err(W[2], ctl.controllability_gramian(A[2], B)) < 1e-10
    # T derivative: dW/dT = e^{AT}BBᴴe^{AᴴT}
    Tg = torch.tensor(0.7, dtype=F64, requires_grad=True)
    dW = torch.func.jacfwd(lambda t: ctl.controllability_gramian(A[0], B, t))(Tg)
    E = torch.linalg.matrix_exp(A[0] * 0.7)
    assert rel_err(dW, E @ B @ B.mT @ E.mT) < 1e-10


def test_gramian_discrete_finite_horizon() -> None:
    g = torch.Generator().manual_seed(24)
    A, B = _randn(g, 4, 4, dtype=C128), _randn(g, 4, 2, dtype=C128)  # need not be stable
    for T in (0, 1, 5, 12):
        ref = sum(
            (torch.linalg.matrix_power(A, k) @ B @ B.mH @ torch.linalg.matrix_power(A, k).mH)
            for k in range(T)
        )
        W = ctl.controllability_gramian(A, B, T, discrete=True)
        if T == 0:
            assert float(W.abs().max()) == 0.0
        else:
            assert rel_err(W, ref) < 1e-12
    with pytest.raises(ValueError, match="integer"):
        ctl.controllability_gramian(A, B, 2.5, discrete=True)


@pytest.mark.parametrize("dtype", [F64, C128], ids=str)
@pytest.mark.parametrize("T", [None, 1.3])
def test_gramian_gradcheck(T: float | None, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(25)
    A = _hurwitz(g, 3, 3, dtype=dtype).requires_grad_(True)
    C = _randn(g, 2, 3, dtype=dtype).requires_grad_(True)
    if T is None:
        assert gradcheck(lambda a, c: ctl.observability_gramian(a, c, backend="scipy"), (A, C))
        assert gradgradcheck(lambda a, c: ctl.controllability_gramian(a, c.mH), (A, C))
    else:
        Tt = torch.tensor(T, dtype=F64, requires_grad=True)
        assert gradcheck(lambda a, c, t: ctl.controllability_gramian(a, c.mH, t), (A, C, Tt))
        assert gradgradcheck(lambda a, c, t: ctl.observability_gramian(a, c, t), (A, C, Tt))


def test_gramian_vmap() -> None:
    g = torch.Generator().manual_seed(26)
    A, B = _hurwitz(g, 4, 6, 6, dtype=F64), _randn(g, 4, 6, 2, dtype=F64)
    out = torch.func.vmap(ctl.controllability_gramian)(A, B)
    loop = torch.stack([ctl.controllability_gramian(A[i], B[i]) for i in range(4)])
    assert rel_err(out, loop) < 1e-13


# ------------------------------------------------------------------------------------------
# validation: clear errors and warnings
# ------------------------------------------------------------------------------------------
def test_shape_and_dtype_errors() -> None:
    A = torch.eye(3, dtype=F64) * -1
    with pytest.raises(
        ValueError, match=r"shape mismatch: A.shape\[-1\] = 3 but Q.shape\[-1\] = 4"
    ):
        ctl.solve_continuous_lyapunov(A, torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="B.shape\\[-1\\] = 2 but Q.shape\\[-1\\] = 3"):
        ctl.solve_sylvester(A, -torch.eye(2, dtype=F64), torch.ones(3, 3, dtype=F64))
    with pytest.raises(ValueError, match="A must be square"):
        ctl.solve_continuous_lyapunov(torch.ones(3, 4, dtype=F64), torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="at least 2 dims"):
        ctl.solve_discrete_lyapunov(torch.ones(3, dtype=F64), torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="batch dimensions do not broadcast"):
        ctl.solve_continuous_lyapunov(A.expand(2, 3, 3), torch.eye(3, dtype=F64).expand(3, 3, 3))
    with pytest.raises(TypeError, match="dtype mismatch"):
        ctl.solve_continuous_lyapunov(A, torch.eye(3, dtype=F32))
    with pytest.raises(TypeError, match="torch.int64"):
        ctl.solve_continuous_lyapunov(-torch.eye(3, dtype=torch.long), torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="B.shape\\[-2\\]"):
        ctl.solve_continuous_are(A, torch.ones(2, 1, dtype=F64), A, torch.eye(1, dtype=F64))
    with pytest.raises(ValueError, match="backend must be one of"):
        ctl.solve_continuous_lyapunov(A, A, backend="eig")
    with pytest.raises(ValueError, match="kron.*not available"):
        ctl.solve_continuous_are(A, A, -A, -A, backend="kron")


def test_value_errors() -> None:
    A = -torch.eye(3, dtype=F64) + 0.1 * torch.ones(3, 3, dtype=F64)
    Qnan = torch.eye(3, dtype=F64)
    Qnan[1, 2] = float("nan")
    for shapes in ((), (2,)):
        with pytest.raises(ValueError, match="Q contains non-finite values \\(\\d NaN"):
            ctl.solve_continuous_lyapunov(
                A.expand(*shapes, 3, 3), Qnan.expand(*shapes, 3, 3), backend="scipy"
            )
    with pytest.raises(ValueError, match="A contains non-finite"):
        ctl.solve_discrete_lyapunov(Qnan, A)
    for shapes in ((), (2,)):  # the lean unbatched Sylvester path diagnoses from its output
        with pytest.raises(ValueError, match="B contains non-finite"):
            ctl.solve_sylvester(A.expand(*shapes, 3, 3), Qnan, A)
        with pytest.raises(ValueError, match="Q contains non-finite"):
            ctl.solve_sylvester(A, A.expand(*shapes, 3, 3), Qnan)
    with pytest.raises(torch.linalg.LinAlgError, match="singular"):  # λ + μ = 1 − 1 = 0
        ctl.solve_sylvester(
            torch.diag(torch.tensor([1.0, -2.0], dtype=F64)),
            torch.diag(torch.tensor([-1.0, -3.0], dtype=F64)),
            torch.ones(2, 2, dtype=F64),
        )
    B, R = torch.ones(3, 1, dtype=F64), torch.eye(1, dtype=F64)
    Qns = torch.eye(3, dtype=F64)
    Qns[0, 1] = 0.5
    for backend in ("scipy", "torch"):  # numpy-side and torch-side checks say the same
        with pytest.raises(ValueError, match="Q must be symmetric"):
            ctl.solve_continuous_are(A, B, Qns.expand(2, 3, 3), R, backend=backend)
        with pytest.raises(ValueError, match="R must be positive definite"):
            ctl.solve_discrete_are(
                A, B, torch.eye(3, dtype=F64), -R.expand(2, 1, 1), backend=backend
            )
        with pytest.raises(ValueError, match="B contains non-finite"):
            ctl.solve_discrete_are(A, B * float("inf"), torch.eye(3, dtype=F64), R, backend=backend)
    with pytest.raises(ValueError, match="Q must be symmetric"):
        ctl.solve_continuous_are(A, B, Qns, R)
    with pytest.raises(ValueError, match="Q must be Hermitian"):
        ctl.solve_discrete_are(A.to(C128), B.to(C128), Qns.to(C128) * 1j, R.to(C128))
    with pytest.raises(ValueError, match="R must be positive definite"):
        ctl.solve_discrete_are(A, B, torch.eye(3, dtype=F64), -R)
    with pytest.raises(ValueError, match="R must be positive definite"):
        ctl.solve_continuous_are(A, B, torch.eye(3, dtype=F64), torch.zeros(1, 1, dtype=F64))


def test_stability_errors() -> None:
    A = torch.diag(torch.tensor([-1.0, 0.5, -2.0], dtype=F64))
    B = torch.ones(3, 1, dtype=F64)
    for backend in ("auto", "scipy", "torch", "kron"):
        with pytest.raises(ctl.StabilityError, match="Hurwitz.*pass a finite T"):
            ctl.controllability_gramian(A, B, backend=backend)
        with pytest.raises(ctl.StabilityError, match="ρ\\(A\\) < 1|spectral radius"):
            ctl.controllability_gramian(3 * A, B, discrete=True, backend=backend)
    # a finite horizon works for unstable A
    assert torch.isfinite(ctl.controllability_gramian(A, B, 1.0)).all()
    # the torch iterations state their precondition
    with pytest.raises(ctl.StabilityError, match="spectral radius"):
        ctl.solve_discrete_lyapunov(3 * A, torch.eye(3, dtype=F64), backend="torch")
    with pytest.raises(ctl.StabilityError, match="Hurwitz"):
        ctl.solve_continuous_lyapunov(A, torch.eye(3, dtype=F64), backend="torch")
    # but the scipy backend solves the (regular) equation for unstable A
    X = ctl.solve_continuous_lyapunov(A, torch.eye(3, dtype=F64))
    assert residual("clyap", X, A, torch.eye(3, dtype=F64)) < 1e-14
    # Riccati without a stabilising solution
    with pytest.raises(np.linalg.LinAlgError, match="stabilis"):
        ctl.solve_continuous_are(
            torch.eye(2, dtype=F64), torch.zeros(2, 1, dtype=F64), torch.eye(2, dtype=F64), R1()
        )


def R1() -> torch.Tensor:
    return torch.eye(1, dtype=F64)


@pytest.mark.parametrize("backend", ["scipy", "kron", "torch"])
def test_near_singular_warning_and_singular_error(backend: str) -> None:
    # eigenvalues −1e-10 and −1: λ + λ̄ = −2e-10 → warning (relative ≈ 1e-10 < √eps)
    A = torch.tensor([[-1e-10, 1.0], [0.0, -1.0]], dtype=F64)
    Q = torch.eye(2, dtype=F64)
    with pytest.warns(ctl.NearSingularWarning, match="near-singular.*λ"):
        ctl.solve_continuous_lyapunov(A, Q, backend=backend)
    if backend != "torch":  # exactly singular: error naming the eigenvalues
        with pytest.raises(torch.linalg.LinAlgError, match="singular"):
            ctl.solve_continuous_lyapunov(
                torch.tensor([[0.0, 1.0], [0.0, -1.0]], dtype=F64), Q, backend=backend
            )
    if backend == "scipy":  # also in a batch (the worst system is reported)
        Z = torch.zeros(3, 2, 2, dtype=F64)
        Z[0] = -torch.eye(2, dtype=F64)
        with pytest.raises(torch.linalg.LinAlgError, match="singular.*system 1"):
            ctl.solve_continuous_lyapunov(Z, Q, backend=backend)
    with pytest.warns(ctl.NearSingularWarning, match="1 − λᵢλ̄ⱼ"):
        ctl.solve_discrete_lyapunov(
            torch.diag(torch.tensor([1 - 1e-11, 0.5], dtype=F64)), Q, backend=backend
        )
    with pytest.warns(ctl.NearSingularWarning, match="λ.*μ"):
        ctl.solve_sylvester(
            torch.diag(torch.tensor([-1e-11, -2.0], dtype=F64)),
            torch.diag(torch.tensor([-1e-11, -3.0], dtype=F64)),
            torch.ones(2, 2, dtype=F64),
            backend=backend,
        )


def test_check_false_skips_checks() -> None:
    A = torch.tensor([[-1e-10, 1.0], [0.0, -1.0]], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ctl.solve_continuous_lyapunov(A, torch.eye(2, dtype=F64), check=False, backend="scipy")


# ------------------------------------------------------------------------------------------
# property test and the inverse-LQR demo
# ------------------------------------------------------------------------------------------
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    eq=st.sampled_from(EQS),
    n=st.integers(1, 10),
    dtype=st.sampled_from([F64, C128]),
    shapes=st.sampled_from(["unbatched", "batched", "broadcast"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_small_residual(eq: str, n: int, dtype, shapes: str, seed: int) -> None:
    args = make_problem(eq, n, dtype, shapes, seed=seed)
    X, info = solve(eq, *args, return_info=True)
    assert info.residual < 1e-11
    a = [t.expand(*X.shape[:-2], *t.shape[-2:]).reshape(-1, *t.shape[-2:]) for t in args]
    Xf = X.reshape(-1, *X.shape[-2:])
    worst = max(residual(eq, Xf[k], *(t[k] for t in a)) for k in range(Xf.shape[0]))
    assert worst < 1e-11


def test_inverse_lqr_recovers_Q() -> None:
    """Inverse LQR: recover the state cost Q of a 4-state system (R known) from closed-loop
    trajectories by gradient descent (L-BFGS) through solve_discrete_are."""
    g = torch.Generator().manual_seed(31)
    n = 4
    eye = torch.eye(n, dtype=F64)
    A = _randn(g, n, n, dtype=F64) / 2
    B = _randn(g, n, n, dtype=F64) / 2 + eye
    R = eye
    L = torch.tril(_randn(g, n, n, dtype=F64))
    Q_true = L @ L.mT + 0.5 * eye

    def gain(Q: torch.Tensor) -> torch.Tensor:
        X = ctl.solve_discrete_are(A, B, Q, R)
        return torch.linalg.solve(R + B.mT @ X @ B, B.mT @ X @ A)

    # closed-loop trajectories x_{k+1} = Ax_k + Bu_k with the optimal policy u_k = −Kx_k
    with torch.no_grad():
        K = gain(Q_true)
        xs, us = [], []
        x = _randn(g, 6, n, dtype=F64)
        for _ in range(10):
            u = -x @ K.mT
            xs.append(x)
            us.append(u)
            x = x @ A.mT + u @ B.mT
        Xs, Us = torch.cat(xs), torch.cat(us)

    P = eye.clone().requires_grad_(True)  # Q = sym(P), started at the identity
    opt = torch.optim.LBFGS(
        [P],
        lr=1,
        max_iter=150,
        tolerance_grad=1e-12,
        tolerance_change=0,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        pred = -Xs @ gain(0.5 * (P + P.mT)).mT
        loss = (pred - Us).square().sum() / Us.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    Q_fit = 0.5 * (P + P.mT).detach()
    assert rel_err(Q_fit, Q_true) < 1e-3


# ------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("eq", EQS)
def test_cuda_matches_cpu(eq: str) -> None:
    args = make_problem(eq, 8, F64, "batched", seed=41)
    Xc, info = solve(eq, *(t.cuda() for t in args), return_info=True)
    assert Xc.is_cuda and info.backend == "torch"
    assert rel_err(Xc.cpu(), oracle(eq, *args)) < 1e-10
    argsg = tuple(t.cuda().requires_grad_(True) for t in args)
    solve(eq, *argsg).abs().sum().backward()
    assert all(t.grad is not None and t.grad.is_cuda for t in argsg)
