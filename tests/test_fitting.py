"""fit(): recovery on a small ring, checkpoint/resume, NaN handling, frozen generative model,
float32, unbiased minibatch ELBO, reproducibility."""

import math
import time

import numpy as np
import pyro
import pytest
import torch

from mgplvm.alignment import align
from mgplvm.datasets import head_direction_ring
from mgplvm.fitting import FitResult, _batch_indices, fit, lr_factor, register_optimizer
from mgplvm.model import MGPLVM

pytestmark = pytest.mark.usefixtures("float64_one_thread")


@pytest.fixture(scope="module")
def ring():
    return head_direction_ring(n_neurons=30, n_time=200, seed=3)


def _model(data, **kw):
    # these tests exercise the stochastic variational fit: the per-bin Gaussian posterior (the
    # ring's default grid posterior is fitted by EM, tested in test_em.py), and the uniform
    # prior unless a test asks for another
    kw = {"n_inducing": 12, "seed": 0, "latent_posterior": "relie", "prior": "uniform", **kw}
    return MGPLVM("T1", data.n_neurons, data.n_time, bin_size=data.bin_size, **kw)


def _tiny(n_time=24, **kw):
    data = head_direction_ring(n_neurons=6, n_time=n_time, seed=0)
    return _model(data, n_inducing=6, **kw), data.Y


def test_fit_recovers_small_ring(ring):
    model = _model(ring, prior="brownian")
    t0 = time.perf_counter()
    res = fit(model, ring.Y, n_iter=250, n_mc=2, lr=0.05, burnin=30, progress=False, seed=0)
    elapsed = time.perf_counter() - t0
    assert isinstance(res, FitResult) and res.n_iter == len(res.losses) <= 250
    assert np.all(np.isfinite(res.losses))
    assert res.losses[-10:].mean() < res.losses[:10].mean() - 100
    al = align(model.latent_posterior(n_samples=50).mean, ring.latents, model.manifold)
    assert al.median_error < math.radians(30), al.median_error
    # tuning curves at the true latents (mapped into the model's frame) follow the true rates
    pts = torch.linspace(-math.pi, math.pi, 60)[:, None]
    rate, _ = model.tuning_curves(al.inverse(pts))
    truth = ring.tuning(pts.numpy())
    corr = [np.corrcoef(rate[n].numpy(), truth[n])[0, 1] for n in range(ring.n_neurons)]
    assert np.median(corr) > 0.8
    assert elapsed < 120  # ~20 s on an idle 2-core machine
    assert res.final_elbo == pytest.approx(-res.losses[-20:].mean())


def test_checkpoint_resume_reproduces_uninterrupted_run(tmp_path):
    kw = dict(n_mc=2, batch_size=10, lr=0.05, burnin=5, progress=False, early_stopping=False)
    model_a, Y = _tiny()
    res_a = fit(model_a, Y, n_iter=16, seed=7, **kw)
    model_b, _ = _tiny()
    ck = tmp_path / "run.ckpt"
    res_b1 = fit(model_b, Y, n_iter=9, seed=7, checkpoint=ck, checkpoint_every=4, **kw)
    assert res_b1.n_iter == 9 and ck.exists()
    pyro.set_rng_seed(12345)  # the checkpoint restores the RNG state
    model_c, _ = _tiny()
    res_c = fit(model_c, Y, n_iter=16, resume=ck, **kw)
    assert res_c.n_iter == 16
    np.testing.assert_array_equal(res_c.losses, res_a.losses)
    for (k, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items(),
                              strict=True):
        torch.testing.assert_close(c, a, rtol=0, atol=0, msg=k)
    other, _ = _tiny(n_time=30)
    with pytest.raises(ValueError, match="different model configuration"):
        fit(other, head_direction_ring(n_neurons=6, n_time=30, seed=0).Y, n_iter=16, resume=ck,
            **kw)


def test_same_seed_same_result():
    runs = []
    for _ in range(2):
        model, Y = _tiny()
        res = fit(model, Y, n_iter=6, n_mc=2, batch_size=8, progress=False, seed=11)
        runs.append((res.losses, model.latents.mu.detach().clone()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)


def test_nan_loss_stops_with_last_good_state(monkeypatch):
    model, Y = _tiny()
    lik = model.likelihood
    calls = {"n": 0}
    original = lik.expected_log_prob_moments

    def poisoned(y, mean, var):
        calls["n"] += 1
        out = original(y, mean, var)
        return out * float("nan") if calls["n"] == 6 else out

    monkeypatch.setattr(lik, "expected_log_prob_moments", poisoned)
    states = {}

    def record(it, loss, m):
        states[it] = {k: v.detach().clone() for k, v in m.state_dict().items()}

    with pytest.warns(RuntimeWarning, match="last good parameters restored"):
        res = fit(model, Y, n_iter=20, n_mc=2, progress=False, seed=0, callback=record)
    assert res.reason == "nan" and not res.converged
    assert res.n_iter == 5 and np.all(np.isfinite(res.losses))
    # iteration 5 failed: the parameters are those of iteration 4's (finite) loss, i.e. the
    # state after step 3
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, states[3][k], rtol=0, atol=0, msg=k)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_train_latents_keeps_generative_parameters(ring):
    model = _model(ring)
    fit(model, ring.Y, n_iter=5, n_mc=2, progress=False, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit(model, ring.Y, n_iter=10, n_mc=2, progress=False, seed=1, train="latents")
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"latents.mu", "latents.raw_scale"}
    assert all(p.requires_grad for p in model.parameters())  # unfrozen afterwards


def test_train_latents_on_new_data_decodes_first(ring):
    model = _model(ring)
    fit(model, ring.Y, n_iter=20, n_mc=2, progress=False, seed=0)
    new = model.with_new_latents(ring.n_time)
    gen = {n: p.detach().clone() for n, p in new.named_parameters()}
    fit(new, ring.Y, n_iter=5, n_mc=2, progress=False, seed=0, train="latents")
    assert bool(new.latents_initialized)
    for n, p in new.named_parameters():
        if not n.startswith("latents."):
            torch.testing.assert_close(p.detach(), gen[n], rtol=0, atol=0)


def test_float32_fit():
    model, Y = _tiny(dtype=torch.float32)
    res = fit(model, Y, n_iter=15, n_mc=2, progress=False, seed=0)
    assert res.n_iter == 15 and np.all(np.isfinite(res.losses))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.predict(n_samples=2).dtype == torch.float32


def test_minibatch_elbo_unbiased():
    """At fixed parameters the mean of the minibatch estimates over all (equally likely) windows
    equals the full-batch ELBO within Monte-Carlo error: the time plate rescales the per-bin terms
    by n_time / batch and KL(q(u)) is counted once."""
    T, B = 20, 5
    model, Y = _tiny(n_time=T)
    model.init_from_data(Y)
    Yt = model.validate_data(Y)
    with torch.no_grad():
        full = torch.stack([model.elbo(Yt, n_mc=256) for _ in range(4)])
        windows = [(s + torch.arange(B)) % T for s in range(T)]
        mini = torch.stack([
            torch.stack([model.elbo(Yt, n_mc=256, t_idx=w.sort().values) for w in windows]).mean()
            for _ in range(2)
        ])
        # the per-window estimates differ a lot (the rescaling is not a no-op)
        spread = torch.stack([model.elbo(Yt, n_mc=256, t_idx=w) for w in windows[:4]]).std()
    se = math.sqrt(full.var() / len(full) + mini.var() / len(mini))
    assert abs(float(mini.mean() - full.mean())) < 4 * se, (mini, full)
    assert float(spread) > 10 * se


def test_batch_indices():
    assert _batch_indices(10, None, "window", "cpu") is None
    assert _batch_indices(10, 10, "random", "cpu") is None
    torch.manual_seed(0)
    w = _batch_indices(10, 4, "window", "cpu")
    assert len(w) == 4 and torch.all(w[1:] > w[:-1])
    counts = torch.zeros(10)
    for _ in range(2000):
        counts[_batch_indices(10, 4, "window", "cpu")] += 1
    # every bin is included with probability batch / n_time (what makes the estimate unbiased)
    assert torch.allclose(counts / 2000, torch.full((10,), 0.4), atol=0.05)
    counts = torch.zeros(10)
    for _ in range(2000):
        r = _batch_indices(10, 4, "random", "cpu")
        assert len(r.unique()) == 4
        counts[r] += 1
    assert torch.allclose(counts / 2000, torch.full((10,), 0.4), atol=0.05)


def test_early_stopping_callback_and_errors():
    model, Y = _tiny()
    res = fit(model, Y, n_iter=400, n_mc=1, progress=False, seed=0, burnin=1, patience=5,
              rtol=0.5)
    assert res.converged and res.reason == "converged" and res.n_iter < 400
    res = fit(model, Y, n_iter=50, n_mc=1, progress=False, callback=lambda i, loss, m: i >= 2)
    assert res.reason == "callback" and res.n_iter == 3
    with pytest.raises(ValueError, match="train"):
        fit(model, Y, train="everything")
    with pytest.raises(ValueError, match="batch_mode"):
        fit(model, Y, batch_mode="sliding")
    with pytest.raises(ValueError, match="n_mc"):
        fit(model, Y, n_mc=0)
    with pytest.raises(TypeError, match="MGPLVM"):
        fit(object(), Y)
    with pytest.raises(ValueError, match="non-integer"):
        fit(model, Y + 0.5)


def test_patience_counts_from_the_end_of_the_annealing():
    """Early stopping waits ``patience`` iterations after the KL annealing ends (β > 0.99), not
    from the start: a loose tolerance used to stop at the first iteration it was checked."""
    model, Y = _tiny()
    burnin, patience = 10.0, 15
    res = fit(model, Y, n_iter=400, n_mc=1, progress=False, seed=0, burnin=burnin,
              patience=patience, rtol=0.9)
    anneal_end = math.ceil(burnin * math.log(100)) - 1  # first iteration with β > 0.99
    assert res.reason == "converged"
    # the clock starts at the last annealed iteration (anneal_end − 1): it stops `patience`
    # iterations later, after anneal_end + patience iterations in all
    assert res.n_iter == anneal_end + patience, (res.n_iter, anneal_end)


def test_lr_factor_schedule():
    n = 21
    f = [lr_factor(i, n, 0.01) for i in range(n)]
    assert f[: n // 2 + 1] == [1.0] * (n // 2 + 1)  # constant for the first half
    assert math.isclose(f[-1], 0.01)
    ratios = np.diff(np.log(f[n // 2 :]))
    np.testing.assert_allclose(ratios, ratios[0])  # geometric
    assert all(lr_factor(i, n, 1.0) == 1.0 for i in range(n))
    assert lr_factor(0, 1, 0.1) == 1.0


def test_fit_decays_learning_rate_and_resumes_on_schedule(tmp_path):
    seen = []

    def factory(model, params, lr, lr_manifold, **kw):
        opt = torch.optim.SGD(params, lr=lr)
        step = opt.step

        def logged_step(*a, **k):
            seen.append(opt.param_groups[0]["lr"])
            return step(*a, **k)

        opt.step = logged_step
        return opt

    register_optimizer("test-sgd-lr", factory)
    kw = dict(n_mc=1, progress=False, optimizer="test-sgd-lr", lr=1e-3, lr_final=0.1,
              early_stopping=False, seed=0)
    model, Y = _tiny()
    fit(model, Y, n_iter=11, **kw)
    np.testing.assert_allclose(seen, [1e-3 * lr_factor(i, 11, 0.1) for i in range(11)])
    assert math.isclose(seen[-1], 1e-4)
    # a resumed run continues on the same schedule (not from the checkpoint's decayed step)
    seen.clear()
    model, Y = _tiny()
    fit(model, Y, n_iter=7, checkpoint=tmp_path / "c.ckpt", **kw)
    seen.clear()
    model, Y = _tiny()
    fit(model, Y, n_iter=11, resume=tmp_path / "c.ckpt", **kw)
    np.testing.assert_allclose(seen, [1e-3 * lr_factor(i, 11, 0.1) for i in range(7, 11)])
    with pytest.raises(ValueError, match="lr_final"):
        fit(model, Y, lr_final=0.0)


def test_registered_optimizer_is_used():
    made = {}

    def factory(model, params, lr, lr_manifold, **kw):
        made["n"] = len(params)
        made["kw"] = kw
        return torch.optim.SGD(params, lr=1e-4)

    register_optimizer("test-sgd", factory)
    model, Y = _tiny()
    res = fit(model, Y, n_iter=3, n_mc=1, progress=False, optimizer="test-sgd",
              optimizer_kwargs={"foo": 1})
    assert res.n_iter == 3 and made["n"] == len(list(model.parameters()))
    assert made["kw"] == {"foo": 1}


def test_silent_neuron_warned_once_per_fit():
    """fit validates Y and hands it to init_from_data → init_latents (→ smooth_latents): each
    checks it, but only the first warns (the message used to appear three times per fit)."""
    model, Y = _tiny(prior="brownian")
    Y = torch.as_tensor(Y).clone()
    Y[0, 2] = 0
    with pytest.warns(UserWarning) as rec:
        fit(model, Y, n_iter=2, n_mc=1, progress=False, seed=0)
    assert sum("never fire" in str(w.message) for w in rec) == 1
    fresh, _ = _tiny(prior="brownian", init="smooth")
    with pytest.warns(UserWarning) as rec:
        fresh.init_from_data(Y)  # "smooth" start: init_latents → smooth_latents
    assert sum("never fire" in str(w.message) for w in rec) == 1
    bad = Y.clone()
    bad[0, 0, 0] = float("nan")
    with fresh._validated(), pytest.raises(ValueError, match="NaN"):  # quiet, still checked
        fresh.validate_data(bad)
    assert not fresh._quiet_data_warnings  # restored after the block, even on an error


def test_refit_by_smoothing_rounds(ring, tmp_path):
    """Each round keeps the step s.d. of the largest smoother evidence, fixes the prior there,
    restarts the latents on that smoothed path and refits; the refits improve a short fit."""
    from mgplvm import refit_by_smoothing

    model = _model(ring, prior="brownian")
    fit(model, ring.Y, n_iter=120, n_mc=2, burnin=30, progress=False, seed=0)
    before = align(model.latent_posterior(n_samples=50).mean, ring.latents, model.manifold)
    seen = []
    res = refit_by_smoothing(model, ring.Y, [0.01, 0.05, 0.3], rounds=2, n_particles=300,
                             n_iter=80, n_mc=2, progress=False, seed=4,
                             callback=lambda r, m: seen.append((r, float(m.prior.step_sd[0]))))
    assert len(res.fits) == len(res.evidence) == len(res.step_sds) == 2
    for ev, chosen in zip(res.evidence, res.step_sds, strict=True):
        assert set(ev) == {0.01, 0.05, 0.3} and chosen == max(ev, key=ev.get)
    # the refit kept the chosen step s.d. fixed (it is not learned any more, nor after a reload)
    assert [r for r, _ in seen] == [0, 1]
    assert [s for _, s in seen] == pytest.approx(res.step_sds)
    assert not model.prior.raw_step_sd.requires_grad
    assert model.config()["prior_kwargs"]["learn"] is False
    model.save(tmp_path / "m.pt")
    loaded = MGPLVM.load(tmp_path / "m.pt")
    assert not loaded.prior.raw_step_sd.requires_grad
    assert torch.equal(loaded.prior.step_sd, model.prior.step_sd)
    assert res.final_elbo == res.fits[-1].final_elbo and np.isfinite(res.final_elbo)
    after = align(model.latent_posterior(n_samples=50).mean, ring.latents, model.manifold)
    assert after.median_error < before.median_error, (before.median_error, after.median_error)


def test_refit_by_smoothing_is_the_documented_recipe():
    """Same result as the loop the docstring describes (seeds included)."""
    from mgplvm import refit_by_smoothing

    def fitted():
        model, Y = _tiny(prior="brownian")
        fit(model, Y, n_iter=20, n_mc=1, progress=False, seed=0)
        return model, Y

    model, Y = fitted()
    refit_by_smoothing(model, Y, [0.1, 0.4], rounds=2, n_particles=50, posterior_sd=0.1,
                       seed=7, progress=False, n_iter=10, n_mc=1)
    manual, Y = fitted()
    for r in range(2):
        runs = {s: manual.smooth_latents(Y, s, n_particles=50, seed=7 + 1000 + r)
                for s in (0.1, 0.4)}
        best = max(runs, key=lambda s: float(runs[s].log_evidence.sum()))
        manual.prior.fix_step_sd(best)
        manual.init_latents(Y, runs[best].mean)
        manual.latents.set_sd(0.1)
        fit(manual, Y, seed=7 + 2 + r, progress=False, n_iter=10, n_mc=1, lr_final=0.02,
            burnin=0.0)
    for (name, a), (_, b) in zip(model.state_dict().items(), manual.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_smooth_by_evidence_warns_when_the_grid_edge_wins(monkeypatch):
    """The best step s.d. at an end of a grid of three or more: a warning naming the side (the
    evidence may peak outside the grid); inside the grid, or with two candidates, none."""
    import warnings as _warnings
    from types import SimpleNamespace

    from mgplvm.fitting import smooth_by_evidence

    model, Y = _tiny(prior="brownian")

    def run(peak):
        def fake(Y, s, n_particles, seed):  # log evidence peaks at ``peak``
            return SimpleNamespace(log_evidence=torch.tensor([-(math.log(s / peak)) ** 2]))

        monkeypatch.setattr(model, "smooth_latents", fake)
        return smooth_by_evidence(model, Y, [0.05, 0.1, 0.2])

    with pytest.warns(UserWarning, match="largest candidate step s.d. \\(0.2\\).*upwards"):
        _, best, _ = run(0.6)
    assert best == 0.2
    with pytest.warns(UserWarning, match="smallest candidate step s.d. \\(0.05\\).*downwards"):
        _, best, _ = run(0.01)
    assert best == 0.05
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        _, best, evidence = run(0.11)
        assert best == 0.1 and set(evidence) == {0.05, 0.1, 0.2}
        monkeypatch.setattr(model, "smooth_latents", lambda Y, s, n_particles, seed:
                            SimpleNamespace(log_evidence=torch.tensor([s])))
        assert smooth_by_evidence(model, Y, [0.1, 0.4])[1] == 0.4  # two candidates: no warning


def test_refit_by_smoothing_refuses_bad_input():
    from mgplvm import refit_by_smoothing

    unfitted, Y = _tiny(prior="brownian")
    with pytest.raises(ValueError, match="fit\\(model, Y\\) first"):
        refit_by_smoothing(unfitted, Y, [0.1], progress=False)
    uniform, Y = _tiny(prior="uniform")
    fit(uniform, Y, n_iter=2, n_mc=1, progress=False, seed=0)
    with pytest.raises(ValueError, match="Brownian latent prior"):
        refit_by_smoothing(uniform, Y, [0.1], progress=False)
    model, Y = _tiny(prior="brownian")
    fit(model, Y, n_iter=2, n_mc=1, progress=False, seed=0)
    for steps in ([], [0.0], [float("nan")], [0.1, -1]):
        with pytest.raises(ValueError, match="step_sds"):
            refit_by_smoothing(model, Y, steps, progress=False)
    with pytest.raises(ValueError, match="rounds"):
        refit_by_smoothing(model, Y, [0.1], rounds=0, progress=False)
    with pytest.raises(ValueError, match="posterior_sd"):
        refit_by_smoothing(model, Y, [0.1], posterior_sd=0, progress=False)
    assert model.prior.raw_step_sd.requires_grad  # nothing was changed by the refusals
    silent = torch.as_tensor(Y).clone()
    silent[0, 2] = 0
    with pytest.warns(UserWarning) as rec:
        refit_by_smoothing(model, silent, [0.1], rounds=2, n_particles=20, n_iter=2, n_mc=1,
                           progress=False)
    assert sum("never fire" in str(w.message) for w in rec) == 1  # once, not once per call
