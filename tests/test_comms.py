"""Tests for mgplvm.comms: rates against a brute-force oracle, invariances, gradients, measures."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.integrate as si
import scipy.linalg as sla
import torch

from mgplvm import comms
from mgplvm.comms import (
    chain,
    effective_rank,
    ei_network,
    erdos_renyi,
    henrici,
    max_amplification,
    max_rate,
    numerical_abscissa,
    optimal_input_covariance,
    random_gaussian,
    smoothed_spectral_abscissa,
    smoothed_spectral_abscissa_grad,
    spectral_abscissa,
    stability_optimised_circuit,
    transient_amplification,
    transmission_rate,
)

F64 = torch.float64


# ------------------------------------------------------------------------------ oracle
def brute_force_rate(A, B, C, Sigma, T, s2):
    """DESIGN §5 formula with every ingredient computed independently of mgplvm.control:
    interference as an explicit sum over past packets, W_o by adaptive quadrature."""
    A, B, C, Sigma = (np.asarray(x, dtype=float) for x in (A, B, C, Sigma))
    n = A.shape[0]
    Ad = sla.expm(A * T)
    S = B @ Sigma @ B.T
    Wc, P = np.zeros((n, n)), np.eye(n)
    for _ in range(100_000):  # Σ_j A_d^j BΣBᵀ A_d^jᵀ over the packets sent j intervals ago
        term = P @ S @ P.T
        Wc += term
        if np.abs(term).max() < 1e-18 * np.abs(Wc).max():
            break
        P = Ad @ P
    Wo, _ = si.quad_vec(
        lambda t: sla.expm(A.T * t) @ C.T @ C @ sla.expm(A * t), 0.0, T, epsrel=1e-13,
        epsabs=0.0,
    )
    eye = np.eye(n)
    num = np.linalg.slogdet(s2 * eye + Wo @ Wc)[1]
    den = np.linalg.slogdet(s2 * eye + Wo @ (Wc - S))[1]
    return (num - den) / (2 * T * np.log(2))


def random_psd(m, rng, rank=None):
    L = rng.standard_normal((m, rank or m))
    S = L @ L.T
    return S / np.trace(S)


def stable_random(n, rng, shift=1.5):
    A = rng.standard_normal((n, n)) / np.sqrt(n)
    return A - (np.linalg.eigvals(A).real.max() + shift) * np.eye(n)


# ------------------------------------------------------------------------------ rate
@pytest.mark.parametrize("T", [0.3, 1.7])
def test_rate_matches_brute_force_rectangular(T):
    rng = np.random.default_rng(0)
    n, m, p = 4, 2, 3
    A = stable_random(n, rng)
    B, C = rng.standard_normal((n, m)), rng.standard_normal((p, n))
    Sigma = random_psd(m, rng)
    r = transmission_rate(A, B, C, Sigma, T, 0.5)
    assert r.dtype == F64
    np.testing.assert_allclose(float(r), brute_force_rate(A, B, C, Sigma, T, 0.5), rtol=1e-8)


@pytest.mark.parametrize("s2,T", [(0.01, 0.2), (1.0, 1.0), (100.0, 8.0)])
def test_rate_matches_brute_force_nonnormal_chain(s2, T):
    # T = 8 on the α = 5 chain: a one-shot Van Loan exponential loses all digits there
    rng = np.random.default_rng(1)
    A = chain(5, 5.0).numpy()
    eye = np.eye(5)
    Sigma = random_psd(5, rng, rank=2)
    r = float(transmission_rate(A, eye, eye, Sigma, T, s2))
    np.testing.assert_allclose(r, brute_force_rate(A, eye, eye, Sigma, T, s2), rtol=1e-7)


def test_rate_batches_over_sigma():
    rng = np.random.default_rng(2)
    A = torch.tensor(stable_random(3, rng))
    eye = torch.eye(3, dtype=F64)
    S = torch.stack([torch.tensor(random_psd(3, rng)) for _ in range(4)])
    r = transmission_rate(A, eye, eye, S, 0.8, 1.0)
    assert r.shape == (4,)
    for k in range(4):
        torch.testing.assert_close(r[k], transmission_rate(A, eye, eye, S[k], 0.8, 1.0))


def test_rate_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    n, m, p = 3, 2, 2
    args = (
        torch.tensor(stable_random(n, rng), requires_grad=True),
        torch.tensor(rng.standard_normal((n, m)), requires_grad=True),
        torch.tensor(rng.standard_normal((p, n)), requires_grad=True),
        torch.tensor(random_psd(m, rng), requires_grad=True),
        torch.tensor(0.9, dtype=F64, requires_grad=True),
        torch.tensor(0.7, dtype=F64, requires_grad=True),
    )
    # check=False: the finite differences perturb Σ off the symmetric matrices
    def rate(*a):
        return transmission_rate(*a, check=False)

    assert torch.autograd.gradcheck(rate, args, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_optimal_sigma_constraints_and_optimality():
    rng = np.random.default_rng(4)
    A = chain(4, 3.0)
    eye = torch.eye(4, dtype=F64)
    S, r = optimal_input_covariance(A, eye, eye, 1.0, 2.0, restarts=4)
    assert torch.allclose(S, S.mT)
    assert abs(float(S.trace()) - 1.0) < 1e-12
    assert float(torch.linalg.eigvalsh(S).min()) > -1e-12
    torch.testing.assert_close(r, transmission_rate(A, eye, eye, S, 1.0, 2.0))
    # at least as good as the isotropic input and random feasible inputs
    assert float(r) >= float(transmission_rate(A, eye, eye, eye / 4, 1.0, 2.0)) - 1e-12
    for _ in range(20):
        Sr = torch.tensor(random_psd(4, rng, rank=int(rng.integers(1, 5))))
        assert float(r) >= float(transmission_rate(A, eye, eye, Sr, 1.0, 2.0)) - 1e-10


@pytest.mark.filterwarnings("ignore::mgplvm.comms.BoundaryOptimumWarning")  # T → 0
def test_normal_network_rate_depends_only_on_spectrum():
    rng = np.random.default_rng(5)
    lam = np.array([-0.7, -1.5, -3.0])
    eye = torch.eye(3, dtype=F64)
    grid = np.geomspace(0.2, 3.0, 5)
    res = []
    for _ in range(2):
        Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        A = torch.tensor(Q @ np.diag(lam) @ Q.T)
        res.append(max_rate(A, eye, eye, 1.0, T_grid=grid, restarts=3))
    assert res[0].rate == pytest.approx(res[1].rate, rel=1e-6)
    assert res[0].T == pytest.approx(res[1].T, rel=1e-2)


@pytest.mark.filterwarnings("ignore::mgplvm.comms.BoundaryOptimumWarning")  # T → 0
def test_nonnormal_chain_beats_normal_at_high_noise():
    eye = torch.eye(4, dtype=F64)
    grid = np.geomspace(0.1, 5.0, 6)
    r_n = max_rate(chain(4, 1.0), eye, eye, 10.0, T_grid=grid, restarts=3, refine=False)
    r_nn = max_rate(chain(4, 5.0), eye, eye, 10.0, T_grid=grid, restarts=3, refine=False)
    assert r_nn.rate > 1.5 * r_n.rate
    assert float(effective_rank(r_nn.Sigma)) < float(effective_rank(r_n.Sigma))


def test_effective_rank():
    assert float(effective_rank(torch.eye(5, dtype=F64) / 5)) == pytest.approx(5.0)
    v = torch.tensor([1.0, 2.0, 0.0], dtype=F64)
    assert float(effective_rank(torch.outer(v, v))) == pytest.approx(1.0)
    S = torch.diag(torch.tensor([0.5, 0.25, 0.25], dtype=F64))
    assert float(effective_rank(S, "participation")) == pytest.approx(1 / 0.375)
    with pytest.raises(ValueError):
        effective_rank(S, "nope")


# ------------------------------------------------------------------------------ measures
def test_chain_spectrum_and_henrici():
    n, a = 6, 5.0
    lam_n = np.sort(np.linalg.eigvals(chain(n, 1.0).numpy()).real)
    lam_nn = np.sort(np.linalg.eigvals(chain(n, a).numpy()).real)
    k = np.arange(1, n + 1)
    np.testing.assert_allclose(lam_n, np.sort(-3 + 2 * np.cos(k * np.pi / (n + 1))), atol=1e-12)
    np.testing.assert_allclose(lam_nn, lam_n, atol=1e-8)
    assert float(henrici(chain(n, 1.0))) < 1e-6
    # ‖A‖²_F − Σλ² = (n − 1)(α − 1/α)² for the chain
    assert float(henrici(chain(n, a))) == pytest.approx(np.sqrt(n - 1) * (a - 1 / a), rel=1e-8)
    A = chain(n, a)
    assert float(numerical_abscissa(A)) > float(spectral_abscissa(A))
    assert float(spectral_abscissa(A)) == pytest.approx(lam_n.max(), abs=1e-8)


def test_smoothed_abscissa_normal_closed_form():
    lam = torch.tensor([-1.0, -0.5, 0.3], dtype=F64)
    eps = 0.1
    s = float(smoothed_spectral_abscissa(torch.diag(lam), eps))
    # f(s) = Σ 1 / (2(s − λᵢ)) = 1/ε
    assert float((1 / (2 * (s - lam))).sum()) == pytest.approx(1 / eps, rel=1e-9)
    assert s > 0.3


def test_smoothed_abscissa_gradient_matches_finite_differences():
    rng = np.random.default_rng(6)
    A = torch.tensor(rng.standard_normal((5, 5)) - 2 * np.eye(5), requires_grad=True)
    eps = torch.tensor(0.05, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(smoothed_spectral_abscissa, (A, eps), eps=1e-6, atol=1e-6)
    # explicit QP / tr(QP) against central differences
    val, G = smoothed_spectral_abscissa_grad(A.detach(), 0.05)
    h = 1e-6
    fd = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            E = torch.zeros(5, 5, dtype=F64)
            E[i, j] = h
            fd[i, j] = (
                float(smoothed_spectral_abscissa(A.detach() + E, 0.05))
                - float(smoothed_spectral_abscissa(A.detach() - E, 0.05))
            ) / (2 * h)
    np.testing.assert_allclose(G.numpy(), fd, atol=1e-7)
    assert float(val) >= float(spectral_abscissa(A.detach()))
    assert float(G.trace()) == pytest.approx(1.0)


def test_smoothed_abscissa_batched():
    A = torch.stack([chain(4, 1.0), chain(4, 3.0)])
    s = smoothed_spectral_abscissa(A, 0.01)
    assert s.shape == (2,)
    assert float(s[1]) > float(s[0]) > float(spectral_abscissa(chain(4, 1.0)))


def test_transient_amplification():
    t, g = transient_amplification(chain(4, 1.0), num=50)
    assert t.shape == g.shape == (50,)
    assert float(g[0]) == pytest.approx(1.0) and bool(torch.all(g[1:] <= 1.0))
    assert max_amplification(chain(4, 1.0))[0] == pytest.approx(1.0)
    # A = [[-1, 0], [k, -1]]: ‖e^{At}‖ = e^{-t} ‖[[1, 0], [kt, 1]]‖, max found on a dense grid
    k = 10.0
    A = torch.tensor([[-1.0, 0.0], [k, -1.0]], dtype=F64)
    tt = np.linspace(0, 5, 200_001)
    x = k * tt
    dense = np.exp(-tt) * (x + np.sqrt(x**2 + 4)) / 2
    gmax, tstar = max_amplification(A)
    assert gmax == pytest.approx(dense.max(), rel=1e-8)
    assert tstar == pytest.approx(tt[dense.argmax()], abs=1e-4)


# ------------------------------------------------------------------------------ networks
def test_random_constructors():
    A = random_gaussian(50, radius=0.5, seed=0)
    assert A.shape == (50, 50) and A.dtype == F64
    assert float(spectral_abscissa(A)) < 0
    torch.testing.assert_close(A, random_gaussian(50, radius=0.5, seed=0))
    E = erdos_renyi(40, p=0.2, seed=1)
    assert bool(torch.all(E.diagonal() == -1.0))
    W = ei_network(40, p=0.3, seed=2, leak=0.0)
    assert bool(torch.all(W[:, :20] >= 0)) and bool(torch.all(W[:, 20:] <= 0))
    assert bool(torch.all(W.diagonal() == 0))


def test_soc_small_keeps_constraints():
    res = stability_optimised_circuit(n=60, radius=5.0, lr=10.0, target=0.3, max_iter=400)
    W, ne = res.W, res.n_exc
    assert res.converged and res.spectral_abscissa < 0.3
    assert res.history["abscissa"][0] > 3.0
    assert bool(torch.all(W[:, :ne] >= 0)) and bool(torch.all(W[:, ne:] <= 0))
    assert bool(torch.all(W.diagonal() == 0))
    ratio = float(W[:ne, ne:].mean() / W[:ne, :ne].mean())
    assert ratio == pytest.approx(-3.0, rel=1e-6)
    torch.testing.assert_close(res.A, res.W - torch.eye(60, dtype=F64))


def test_soc_exact_smoothed_mode_runs():
    res = stability_optimised_circuit(n=30, radius=3.0, eps=0.05, lr=5.0, max_iter=5,
                                      solver="control")
    assert res.smoothed_abscissa >= res.spectral_abscissa
    assert len(res.history["smoothed"]) == 6


def test_soc_fixed_eps_descends_the_exact_smoothed_abscissa_monotonically():
    eps, target = 1e-2, 0.5
    res = stability_optimised_circuit(n=40, radius=4.0, target=target, criterion="smoothed",
                                      eps=eps, max_iter=600)
    assert res.converged
    exact = float(smoothed_spectral_abscissa(res.W, eps))  # independent: mgplvm.control solves
    assert exact == pytest.approx(res.smoothed_abscissa, rel=1e-8) and exact < target
    # phase 2 (exact α̃_ε) starts once α(W) < target; accepted iterates strictly decrease
    h = np.array(res.history["smoothed"])
    start = int(np.argmax(np.array(res.history["abscissa"]) < target))
    ok = np.array(res.history["accepted"] + [True])[start:]  # the final iterate is accepted
    assert len(ok) == len(h[start:]) and ok.sum() >= 3 and not ok.all()  # some backtracking
    assert np.all(np.diff(h[start:][ok]) < 0)
    assert h[-1] == h[start:].min()


@pytest.mark.slow
def test_soc_n200_under_a_minute():
    res = stability_optimised_circuit(n=200, target=0.15, max_seconds=60.0)
    assert res.converged and res.spectral_abscissa < 0.15 and res.seconds < 60.0
    res = stability_optimised_circuit(n=200, target=0.15, criterion="smoothed", eps=1e-4,
                                      max_seconds=60.0)
    assert res.converged and res.seconds < 60.0
    assert float(smoothed_spectral_abscissa(res.W, 1e-4)) < 0.15


def test_design_increases_rate_under_constraint():
    eye = torch.eye(3, dtype=F64)
    torch.manual_seed(0)
    A0 = chain(3, 1.0) + 0.05 * torch.randn(3, 3, dtype=F64)
    c0 = float(smoothed_spectral_abscissa(A0, 0.01))
    S0, r0 = optimal_input_covariance(A0, eye, eye, 1.0, 10.0)
    res = comms.design_network(
        A0, eye, eye, 10.0, 1.0, max_abscissa=c0, Sigma0=S0, steps=40, lr=0.05
    )
    assert res.rate > 1.2 * float(r0)
    assert max(res.history["constraint"]) <= c0 + 1e-6  # every iterate feasible
    assert float(smoothed_spectral_abscissa(res.A, 0.01)) <= c0 + 1e-6
    assert float(henrici(res.A)) > float(henrici(A0))


# ------------------------------------------------------------------------------ plots / misc
def test_plots_return_figures():
    from matplotlib.figure import Figure

    A = {"normal": chain(3, 1.0), "non-normal": chain(3, 4.0)}
    f1 = comms.plot_rate_vs_noise([0.1, 1, 10], {"a": [3, 1, 0.2], "b": [2, 1.5, 0.8]},
                                  ratio=("b", "a"))
    f2 = comms.plot_input_spectrum({k: torch.eye(3, dtype=F64) / 3 for k in A})
    f3 = comms.plot_transient_amplification(A, num=20)
    for f in (f1, f2, f3):
        assert isinstance(f, Figure)
        f.canvas.draw() if hasattr(f.canvas, "draw") else None


def test_import_has_no_side_effects():
    code = "import sys, mgplvm.comms; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unstable_network_is_rejected():
    A = chain(3, 1.0) + 3.5 * torch.eye(3, dtype=F64)
    eye = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match="Hurwitz"):
        transmission_rate(A, eye, eye, eye / 3, 1.0, 1.0)
    with pytest.raises(ValueError, match="Hurwitz"):
        optimal_input_covariance(A, eye, eye, 1.0, 1.0)
