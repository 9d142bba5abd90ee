"""Fault cases of mgplvm.comms and mgplvm.control: each test reproduces a reported fault on small
data and checks the fixed behaviour.  The two strings of each ``fault`` marker (input tried,
behaviour now) are collected into the docs."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
import torch

import mgplvm.control as ctl
from mgplvm import comms

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _chain_system(n: int = 4, alpha: float = 1.0):
    eye = torch.eye(n, dtype=F64)
    return comms.chain(n, alpha), eye, eye, eye / n


def _rate_calls(A, B, C, Sigma, T=1.0, noise_var=1.0):
    """The public rate functions on one system (max_rate and rate_vs_noise on a one-point grid)."""
    grid = np.array([float(T)])
    return {
        "transmission_rate": lambda: comms.transmission_rate(A, B, C, Sigma, T, noise_var),
        "optimal_input_covariance": lambda: comms.optimal_input_covariance(
            A, B, C, T, noise_var, restarts=2, max_iter=5),
        "max_rate": lambda: comms.max_rate(A, B, C, noise_var, T_grid=grid, restarts=2,
                                           max_iter=5),
        "rate_vs_noise": lambda: comms.rate_vs_noise({"A": A}, [noise_var], B, C, T_grid=grid,
                                                     restarts=2, max_iter=5),
    }


# ------------------------------------------------------------------------------ A. comms inputs
@pytest.mark.fault("noise_var = −1, 0, NaN or inf in a rate function",
                   "ValueError naming noise_var: must be positive and finite")
@pytest.mark.parametrize("noise_var", [-1.0, 0.0, math.nan, math.inf])
@pytest.mark.parametrize(
    "fn", ["transmission_rate", "optimal_input_covariance", "max_rate", "rate_vs_noise"])
def test_noise_var_must_be_positive_and_finite(fn, noise_var):
    A, B, C, S = _chain_system()
    with pytest.raises(ValueError, match=r"^noise_vars? \(.*must be positive and finite"):
        _rate_calls(A, B, C, S, noise_var=noise_var)[fn]()


@pytest.mark.fault("input covariance Σ indefinite (eigenvalue −0.5) or not symmetric",
                   "ValueError: Sigma must be symmetric positive semi-definite")
@pytest.mark.parametrize("kind", ["indefinite", "asymmetric"])
def test_sigma_must_be_symmetric_psd(kind):
    A, B, C, _ = _chain_system()
    if kind == "indefinite":
        S = torch.diag(torch.tensor([1.0, 1.0, 1.0, -0.5], dtype=F64))
    else:
        S = torch.eye(4, dtype=F64) / 4
        S[0, 1] = 0.1
    with pytest.raises(ValueError, match="^Sigma must be symmetric positive semi-definite"):
        comms.transmission_rate(A, B, C, S, 1.0, 1.0)
    with pytest.raises(ValueError, match="^init must be symmetric positive semi-definite"):
        comms.optimal_input_covariance(A, B, C, 1.0, 1.0, init=S)
    # rounding-level asymmetry and eigenvalues of −1e-17 (a rank-deficient LLᵀ) are accepted
    L = torch.randn(4, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    S = L @ L.mT / (L @ L.mT).trace()
    assert float(comms.transmission_rate(A, B, C, S, 1.0, 1.0)) > 0


@pytest.mark.fault("unstable A (spectral abscissa 2.6) with check=False",
                   "ValueError: A must be Hurwitz; stability is checked whatever check says")
def test_unstable_A_refused_even_with_check_false():
    A, B, C, S = _chain_system()
    A = A + 4.0 * torch.eye(4, dtype=F64)
    for check in (True, False):
        with pytest.raises(ValueError, match="^A must be Hurwitz"):
            comms.transmission_rate(A, B, C, S, 1.0, 1.0, check=check)
    for fn in ("optimal_input_covariance", "max_rate", "rate_vs_noise"):
        with pytest.raises(ValueError, match="^A must be Hurwitz"):
            _rate_calls(A, B, C, S)[fn]()


@pytest.mark.fault("Σ of the wrong size, non-square A, or C with the wrong number of columns",
                   "ValueError naming the argument, its shape and the shape needed")
@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("Sigma", r"^Sigma has shape \(3, 3\) but B is 4×4: need \(4, 4\)$"),
        ("A", r"^A must be a square matrix \(\.\.\., n, n\); got shape \(3, 4\)$"),
        ("C", r"^C has shape \(2, 3\) but A is 4×4: need \(p, 4\)$"),
    ],
)
def test_wrong_shapes_are_named(arg, message):
    A, B, C, S = _chain_system()
    bad = {"Sigma": torch.eye(3, dtype=F64) / 3, "A": A[:3], "C": torch.ones(2, 3, dtype=F64)}
    args = {"A": A, "B": B, "C": C, "Sigma": S, **{arg: bad[arg]}}
    with pytest.raises(ValueError, match=message):
        comms.transmission_rate(args["A"], args["B"], args["C"], args["Sigma"], 1.0, 1.0)
    if arg != "Sigma":  # max_rate takes one (unbatched) network
        shape = r"\(3, 4\)" if arg == "A" else r"\(2, 3\)"
        with pytest.raises(ValueError, match=f"^{arg} .*{shape}"):
            comms.max_rate(args["A"], args["B"], args["C"], 1.0, T_grid=[1.0])


@pytest.mark.fault("B with 3 rows for a 4-neuron network (optimal_input_covariance, max_rate)",
                   "ValueError naming B and the shape needed, (4, m), not an internal Q")
@pytest.mark.parametrize("fn", ["transmission_rate", "optimal_input_covariance", "max_rate"])
def test_bad_B_is_named(fn):
    A, _, C, S = _chain_system()
    B = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match=r"^B has shape \(3, 3\) but A is 4×4: need .*\(4, m\)$"):
        _rate_calls(A, B, C, S)[fn]()


@pytest.mark.fault("packet interval T = 0 (or −1, NaN)",
                   "ValueError: T (packet interval) must be positive and finite")
@pytest.mark.parametrize("T", [0.0, -1.0, math.nan])
def test_packet_interval_must_be_positive(T):
    A, B, C, S = _chain_system()
    with pytest.raises(ValueError, match=r"^T \(packet interval\) must be positive and finite"):
        comms.transmission_rate(A, B, C, S, T, 1.0)
    with pytest.raises(ValueError, match=r"^T \(packet interval\) must be positive and finite"):
        comms.optimal_input_covariance(A, B, C, T, 1.0)
    with pytest.raises(ValueError, match="T_grid"):
        comms.max_rate(A, B, C, 1.0, T_grid=[T, 1.0])


@pytest.mark.fault("chain forward weight alpha = 0, NaN or inf (e.g. mgplvm comms --alpha 0)",
                   "ValueError naming alpha: must be finite and non-zero")
@pytest.mark.parametrize("alpha", [0.0, math.nan, math.inf])
def test_chain_alpha_must_be_finite_and_nonzero(alpha):
    with pytest.raises(ValueError, match=r"^alpha \(forward weight.*finite and non-zero"):
        comms.chain(4, alpha)
    with pytest.raises(ValueError, match=r"^alpha \(forward weight.*finite and non-zero"):
        comms.chain_pair(4, alpha)
    assert bool(torch.isfinite(comms.chain(4, -2.0)).all())  # negative weights are fine


@pytest.mark.fault("NaN or inf in A, B, C, Σ, a network constructor's radius or the smoothing ε",
                   "ValueError naming the argument that is not finite")
@pytest.mark.parametrize("arg", ["A", "B", "C", "Sigma"])
def test_non_finite_inputs_are_named(arg):
    A, B, C, S = _chain_system()
    args = {"A": A, "B": B, "C": C, "Sigma": S}
    args[arg] = args[arg].clone()
    args[arg][0, 0] = math.nan
    with pytest.raises(ValueError, match=f"^{arg} contains NaN or inf"):
        comms.transmission_rate(args["A"], args["B"], args["C"], args["Sigma"], 1.0, 1.0)
    with pytest.raises(ValueError, match="^radius"):
        comms.random_gaussian(4, radius=math.inf, seed=0)
    with pytest.raises(ValueError, match="^eps"):
        comms.smoothed_spectral_abscissa(A, math.nan)


# ------------------------------------------------------------------------------ B. control
def _nonnormal_dare(n: int = 64, alpha: float = 5.0):
    """Discrete chain, α ahead and 1 behind, scaled to spectral radius ≈ 0.9 (κ(V) ~ α^{n/2}), one
    random input: ‖X‖ ≈ 3e13, scipy's QZ solution has a relative residual ≈ 1e-4."""
    s = 2 * math.sqrt(alpha) + 0.5
    A = (alpha * torch.diag(torch.ones(n - 1, dtype=F64), 1)
         + torch.diag(torch.ones(n - 1, dtype=F64), -1)) / s
    B = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    return A, B, torch.eye(n, dtype=F64), torch.eye(1, dtype=F64)


@pytest.mark.fault("DARE on a strongly non-normal chain (α = 5, n = 64, ‖X‖ ≈ 3e13)",
                   "InaccurateSolutionWarning: relative residual 1e-4 above the tolerance 1e-6")
def test_dare_inaccurate_solution_warns():
    args = _nonnormal_dare()
    with pytest.warns(ctl.InaccurateSolutionWarning, match=r"relative residual .* > 1e-06"):
        X, info = ctl.solve_discrete_are(*args, return_info=True)
    assert info.residual > 1e-6 and float(X.norm()) > 1e12
    assert issubclass(ctl.InaccurateSolutionWarning, ctl.NearSingularWarning)
    with warnings.catch_warnings():  # check=False skips it; a benign problem never warns
        warnings.simplefilter("error", ctl.InaccurateSolutionWarning)
        ctl.solve_discrete_are(*args, check=False)
        A, B, Q, R = _nonnormal_dare(n=8, alpha=1.0)
        _, info = ctl.solve_discrete_are(A, B, Q, R, return_info=True)
        assert info.residual < 1e-12


@pytest.mark.fault("CARE (torch backend) on torch.autograd.forward_ad dual tensors",
                   "tangent equals torch.func.jvp and central finite differences")
@pytest.mark.parametrize("backend", ["torch", "scipy"])
def test_care_forward_ad_dual_tensors(backend):
    import torch.autograd.forward_ad as fwAD

    g = torch.Generator().manual_seed(1)
    n, m = 3, 2
    A = torch.randn(n, n, generator=g, dtype=F64) / math.sqrt(n)
    B = torch.randn(n, m, generator=g, dtype=F64)
    Q, R = torch.eye(n, dtype=F64), torch.eye(m, dtype=F64)
    dirs = [torch.randn(t.shape, generator=g, dtype=F64) for t in (A, B, Q, R)]
    dirs[2], dirs[3] = dirs[2] + dirs[2].mT, dirs[3] + dirs[3].mT

    def care(*t):
        return ctl.solve_continuous_are(*t, backend=backend)

    with fwAD.dual_level():
        duals = [fwAD.make_dual(t, d) for t, d in zip((A, B, Q, R), dirs, strict=True)]
        tangent = fwAD.unpack_dual(care(*duals)).tangent
    _, ref = torch.func.jvp(care, (A, B, Q, R), tuple(dirs))
    h = 1e-6
    fd = (care(*(t + h * d for t, d in zip((A, B, Q, R), dirs, strict=True)))
          - care(*(t - h * d for t, d in zip((A, B, Q, R), dirs, strict=True)))) / (2 * h)
    torch.testing.assert_close(tangent, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tangent, fd, rtol=1e-6, atol=1e-8)


def _solver_problem(eq: str):
    g = torch.Generator().manual_seed(2)
    n = 3
    M = torch.randn(n, n, generator=g, dtype=F64) / math.sqrt(n)
    stable = M - (torch.linalg.eigvals(M).real.max() + 1.0) * torch.eye(n, dtype=F64)
    Q = torch.randn(n, n, generator=g, dtype=F64)
    if eq == "sylv":
        return ctl.solve_sylvester, (stable, stable.mT + 0.3, Q)
    if eq == "clyap":
        return ctl.solve_continuous_lyapunov, (stable, Q)
    if eq == "dlyap":
        return ctl.solve_discrete_lyapunov, (0.8 * M / torch.linalg.eigvals(M).abs().max(), Q)
    B = torch.randn(n, 2, generator=g, dtype=F64)
    P = Q @ Q.mT + torch.eye(n, dtype=F64)
    fn = ctl.solve_continuous_are if eq == "care" else ctl.solve_discrete_are
    return fn, (M, B, P, torch.eye(2, dtype=F64))


@pytest.mark.fault("gradcheck(check_batched_grad=True) and jacobian(vectorize=True) on a solver",
                   "batched gradients match the per-vector ones (legacy vmap supported)")
@pytest.mark.parametrize("eq", ["sylv", "clyap", "dlyap", "care", "dare"])
def test_legacy_batched_gradients(eq):
    fn, args = _solver_problem(eq)
    if eq in ("care", "dare"):  # gradcheck perturbs Q and R off the symmetric matrices
        fn = functools.partial(fn, check=False)
    args = tuple(t.detach().clone().requires_grad_(True) for t in args)
    assert torch.autograd.gradcheck(fn, args, check_batched_grad=True)
    rest = tuple(t.detach() for t in args[1:])

    def of_A(a):
        return fn(a, *rest)

    A0 = args[0].detach()
    J = torch.autograd.functional.jacobian(of_A, A0, vectorize=True)
    torch.testing.assert_close(J, torch.autograd.functional.jacobian(of_A, A0))


@pytest.mark.fault("0×0 matrices (and an empty batch) given to every solver and Gramian",
                   "empty solution of the right shape, with gradients, instead of a reshape error")
@pytest.mark.parametrize("eq", ["sylv", "clyap", "dlyap", "care", "dare"])
def test_empty_equations_give_empty_solutions(eq):
    E = torch.zeros(0, 0, dtype=F64)
    args = {
        "sylv": (E, -torch.eye(2, dtype=F64), torch.zeros(0, 2, dtype=F64)),
        "clyap": (E, E),
        "dlyap": (E, E),
        "care": (E, torch.zeros(0, 1, dtype=F64), E, torch.eye(1, dtype=F64)),
        "dare": (E, torch.zeros(0, 1, dtype=F64), E, torch.eye(1, dtype=F64)),
    }[eq]
    fn = _solver_problem(eq)[0]
    args = tuple(t.clone().requires_grad_(True) for t in args)
    X, info = fn(*args, return_info=True)
    assert X.shape == ((0, 2) if eq == "sylv" else (0, 0)) and info.residual == 0.0
    X.sum().backward()
    assert args[0].grad is not None and args[0].grad.shape == args[0].shape
    batch = tuple(torch.zeros(0, *t.shape, dtype=F64) for t in args)  # an empty batch
    assert fn(*batch).shape == (0, *X.shape)
    for T in (None, 1.0):
        assert ctl.controllability_gramian(E, torch.zeros(0, 2, dtype=F64), T).shape == (0, 0)


# ------------------------------------------------------------------------------ C. T range
@pytest.mark.fault("R_max of the normal chain, whose rate still rises as T → 0 (optimum on the "
                   "lower edge of the searched T range)",
                   "T_range is an explicit argument (default [τ_fast/2, 10 τ_slow]); an edge "
                   "optimum gives BoundaryOptimumWarning and result.boundary")
def test_max_rate_T_range_is_explicit_and_edges_are_reported():
    n = 3
    eye = torch.eye(n, dtype=F64)
    A_n, A_nn = comms.chain_pair(n, 5.0, -3.0)
    lam = np.linalg.eigvals(A_n.numpy())
    T_min, T_max = 0.5 / np.abs(lam).max(), 10.0 / np.abs(lam.real.max())
    assert comms.default_T_range(A_n) == pytest.approx((T_min, T_max))
    kw = {"restarts": 2, "max_iter": 30, "refine": False}
    with pytest.warns(comms.BoundaryOptimumWarning, match="lower edge"):
        res = comms.max_rate(A_n, eye, eye, 0.01, **kw)
    assert res.boundary == "lower" and res.T == pytest.approx(T_min)
    assert res.T_range == pytest.approx((T_min, T_max))
    # the maximum depends on the range: a lower T_min gives a higher R_max
    with pytest.warns(comms.BoundaryOptimumWarning):
        wide = comms.max_rate(A_n, eye, eye, 0.01, T_range=(T_min / 10, T_max), **kw)
    assert wide.rate > res.rate and wide.T == pytest.approx(T_min / 10)
    # the non-normal chain at high noise peaks inside the range: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", comms.BoundaryOptimumWarning)
        inner = comms.max_rate(A_nn, eye, eye, 100.0, **kw)
    assert inner.boundary is None and T_min < inner.T < T_max
    # rate_vs_noise passes T_range on; bad ranges are refused by name
    with pytest.warns(comms.BoundaryOptimumWarning):
        out = comms.rate_vs_noise({"n": A_n}, [0.01], T_range=(T_min / 10, T_max), **kw)
    assert out["n"][0] == pytest.approx(wide.rate)
    for bad in ((0.0, 1.0), (2.0, 1.0), (0.1, math.inf), (1.0,)):
        with pytest.raises(ValueError, match="T_range"):
            comms.max_rate(A_n, eye, eye, 0.01, T_range=bad)
    with pytest.raises(ValueError, match="T_grid or T_range"):
        comms.max_rate(A_n, eye, eye, 0.01, T_grid=[1.0], T_range=(0.1, 1.0))
