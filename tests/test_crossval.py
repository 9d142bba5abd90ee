"""Cross-validation protocol: index bookkeeping, reproducibility, executors, resume, failures."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import mgplvm.fitting as fit_module
from mgplvm.crossval import CVResult, crossvalidate, make_splits

N_NEURONS, N_TIME = 6, 40


def unique_counts() -> np.ndarray:
    """Y[0, n, t] = 1000 n + t: every entry names its own (neuron, bin)."""
    n = np.arange(N_NEURONS)[:, None]
    t = np.arange(N_TIME)[None, :]
    return (1000 * n + t)[None].astype(np.float64)


@dataclass
class _FakeResult:
    final_elbo: float = -1.0
    n_iter: int = 0


class RecordingFit:
    """Stands in for ``mgplvm.fitting.fit``: decodes which (neuron, bin) entries each call got."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[dict] = []
        self.fail_on = fail_on

    def __call__(self, model, Y, train="all", **kwargs):
        Y = np.asarray(Y)
        neurons = np.unique(Y[0] // 1000).astype(int)
        bins = np.unique(Y[0] % 1000).astype(int)
        self.calls.append({"manifold": model.manifold.name, "train": train, "neurons": neurons,
                           "bins": bins, "shape": Y.shape})
        if self.fail_on is not None and model.manifold.name == self.fail_on:
            raise np.linalg.LinAlgError("Cholesky failed (injected)")
        return _FakeResult()


def test_splits_are_disjoint_halves_and_seeded():
    s1 = make_splits(7, 50, 3, seed=4)
    s2 = make_splits(7, 50, 3, seed=4)
    for a, b in zip(s1, s2, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        assert set(a["train_t"]).isdisjoint(a["test_t"])
        assert sorted([*a["train_t"], *a["test_t"]]) == list(range(50))
        assert set(a["neurons_a"]).isdisjoint(a["neurons_b"])
        assert sorted([*a["neurons_a"], *a["neurons_b"]]) == list(range(7))
    assert not np.array_equal(s1[0]["test_t"], s1[1]["test_t"])
    blocks = make_splits(4, 40, 1, seed=0, block=5)[0]["test_t"]
    assert len(blocks) == 20 and all(np.all(np.diff(blocks[i:i + 5]) == 1)
                                     for i in range(0, 20, 5))


@pytest.mark.parametrize("bad", [dict(n_neurons=1, n_time=10, n_splits=1),
                                 dict(n_neurons=4, n_time=3, n_splits=1),
                                 dict(n_neurons=4, n_time=10, n_splits=0)])
def test_split_validation(bad):
    with pytest.raises(ValueError):
        make_splits(**bad)


def test_held_out_data_never_reach_a_fit(monkeypatch):
    fake = RecordingFit()
    monkeypatch.setattr(fit_module, "fit", fake)
    Y = unique_counts()
    res = crossvalidate(Y, ["T1", "R1"], n_splits=2, seed=3, n_workers=1, progress=False,
                        n_eval_samples=2)
    splits = make_splits(N_NEURONS, N_TIME, 2, seed=3)
    assert len(fake.calls) == 2 * 2 * 3  # manifolds x folds x (train + two test directions)
    calls = iter(fake.calls)
    for split in splits:
        for _ in ("T1", "R1"):
            train = next(calls)
            assert train["train"] == "all"
            np.testing.assert_array_equal(train["bins"], split["train_t"])
            np.testing.assert_array_equal(train["neurons"], np.arange(N_NEURONS))
            for inp in (split["neurons_a"], split["neurons_b"]):
                test = next(calls)
                assert test["train"] == "latents"
                np.testing.assert_array_equal(test["bins"], split["test_t"])
                np.testing.assert_array_equal(test["neurons"], inp)
    # scores are per datum: every (trial, held-out neuron, test bin) is predicted exactly once
    assert all(r["status"] == "ok" for r in res.records)
    assert res.config["shape"] == [1, N_NEURONS, N_TIME]
    for r in res.records:
        assert np.isfinite(r["ll_per_datum"]) and np.isfinite(r["mse"])
        # the log predictive density uses the same latent samples and is ≥ the bound (Jensen)
        assert r["pred_ll_per_datum"] > r["ll_per_datum"]


@pytest.mark.parametrize("time_gaps", [True, False])
def test_each_half_is_modelled_at_its_bins_times(monkeypatch, time_gaps):
    """With ``time_gaps`` the training model and the test-bin models get the recording times
    of their bins (a Brownian step between two training bins spans the test bins between
    them); without, consecutive bins as before."""
    times = []

    def fake(model, Y, train="all", **kwargs):
        times.append(None if model.bin_times is None else model.bin_times.long().numpy())
        return _FakeResult()

    monkeypatch.setattr(fit_module, "fit", fake)
    res = crossvalidate(unique_counts(), ["T1"], n_splits=1, seed=3, n_workers=1,
                        progress=False, n_eval_samples=2, model_kwargs={"prior": "brownian"},
                        time_gaps=time_gaps)
    assert res.config["time_gaps"] is time_gaps
    split = make_splits(N_NEURONS, N_TIME, 1, seed=3)[0]
    assert len(times) == 3  # the training fit, then the two test directions
    if not time_gaps:
        assert all(t is None for t in times)
        return
    np.testing.assert_array_equal(times[0], split["train_t"])
    for t in times[1:]:
        np.testing.assert_array_equal(t, split["test_t"])


@pytest.mark.parametrize("test_init", ["smooth", "decode"])
def test_test_start_sees_only_the_input_half_at_test_bins(monkeypatch, test_init):
    """The test-bin latents start from the particle-smoothed (``test_init="smooth"``) or the
    decoded path of the input half's test-bin counts (held-out neurons never reach it), then the
    latent-only fit; the two directions' decodings share one cache (candidates, transitions)."""
    from mgplvm.model import MGPLVM

    fake, starts = RecordingFit(), []
    original = MGPLVM.init_latents

    def spy(model, Y, method="pca", **kwargs):
        Yn = np.asarray(Y)
        starts.append({"method": method, "neurons": np.unique(Yn[0] // 1000).astype(int),
                       "bins": np.unique(Yn[0] % 1000).astype(int),
                       "cache": id(kwargs.get("decode_cache"))})
        return original(model, Y, method, **kwargs)

    monkeypatch.setattr(fit_module, "fit", fake)
    monkeypatch.setattr(MGPLVM, "init_latents", spy)
    res = crossvalidate(unique_counts(), ["T1", "R1"], n_splits=1, seed=3, n_workers=1,
                        progress=False, n_eval_samples=2, test_init=test_init,
                        model_kwargs={"prior": "brownian", "latent_posterior": "relie"})
    assert all(r["status"] == "ok" for r in res.records), res.failed
    assert res.config.get("test_init", "decode") == test_init
    split = make_splits(N_NEURONS, N_TIME, 1, seed=3)[0]
    assert len(starts) == 2 * 2  # manifolds x test directions
    for start, inp in zip(starts, [split["neurons_a"], split["neurons_b"]] * 2, strict=True):
        assert start["method"] == test_init
        np.testing.assert_array_equal(start["neurons"], inp)
        np.testing.assert_array_equal(start["bins"], split["test_t"])
    # one cache per (manifold, fold) task, shared by its two directions
    assert starts[0]["cache"] == starts[1]["cache"] and starts[2]["cache"] == starts[3]["cache"]
    with pytest.raises(ValueError, match="Brownian latent prior"):
        crossvalidate(unique_counts(), ["T1"], n_splits=1, progress=False, test_init="smooth",
                      model_kwargs={"prior": "uniform"})
    with pytest.raises(ValueError, match="test_init"):
        crossvalidate(unique_counts(), ["T1"], n_splits=1, progress=False, test_init="viterbi")


def test_smoothed_posterior_sees_only_the_input_half_and_runs_no_test_fit(monkeypatch):
    """``test_posterior="smoothed"``: the held-out half is scored under the particle smoother's
    marginals computed from the input half's test-bin counts; no latent-only fit runs."""
    from mgplvm.model import MGPLVM

    fake, smoothed = RecordingFit(), []
    original = MGPLVM.smooth_latents

    def spy(model, Y, *args, **kwargs):
        Yn = np.asarray(Y)
        smoothed.append({"neurons": np.unique(Yn[0] // 1000).astype(int),
                         "bins": np.unique(Yn[0] % 1000).astype(int),
                         "n_particles": kwargs["n_particles"]})
        return original(model, Y, *args, **kwargs)

    monkeypatch.setattr(fit_module, "fit", fake)
    monkeypatch.setattr(MGPLVM, "smooth_latents", spy)
    res = crossvalidate(unique_counts(), ["T1", "R1"], n_splits=1, seed=3, n_workers=1,
                        progress=False, test_posterior="smoothed", n_particles=50,
                        model_kwargs={"prior": "brownian", "latent_posterior": "relie"})
    assert all(r["status"] == "ok" for r in res.records), res.failed
    assert res.config["test_posterior"] == "smoothed" and res.config["n_particles"] == 50
    assert [c["train"] for c in fake.calls] == ["all", "all"]  # training fits only
    split = make_splits(N_NEURONS, N_TIME, 1, seed=3)[0]
    assert len(smoothed) == 2 * 2  # manifolds x test directions
    for call, inp in zip(smoothed, [split["neurons_a"], split["neurons_b"]] * 2, strict=True):
        np.testing.assert_array_equal(call["neurons"], inp)
        np.testing.assert_array_equal(call["bins"], split["test_t"])
        assert call["n_particles"] == 50
    for r in res.records:
        assert np.isfinite(r["ll_per_datum"]) and np.isfinite(r["mse"])
        assert r["pred_ll_per_datum"] > r["ll_per_datum"]
    with pytest.raises(ValueError, match="Brownian latent prior"):
        crossvalidate(unique_counts(), ["T1"], n_splits=1, progress=False,
                      test_posterior="smoothed", model_kwargs={"prior": "uniform"})
    with pytest.raises(ValueError, match="test_posterior"):
        crossvalidate(unique_counts(), ["T1"], n_splits=1, progress=False,
                      test_posterior="particles")
    with pytest.raises(ValueError, match="n_particles"):
        crossvalidate(unique_counts(), ["T1"], n_splits=1, progress=False, n_particles=1,
                      test_posterior="smoothed",
                      model_kwargs={"prior": "brownian", "latent_posterior": "relie"})


def test_smoothing_refit_sees_only_training_bins_and_its_elbo_is_recorded(monkeypatch):
    """``refit_kwargs``: the training fit is refined by ``refit_by_smoothing`` on all neurons x
    training bins (never a test bin), with the given arguments; the refit's ELBO is the
    record's ``train_elbo``."""
    fake, refits = RecordingFit(), []

    def fake_refit(model, Y, seed, progress, **kwargs):
        Yn = np.asarray(Y)
        refits.append({"neurons": np.unique(Yn[0] // 1000).astype(int),
                       "bins": np.unique(Yn[0] % 1000).astype(int), "kwargs": kwargs})
        return fit_module.SmoothingRefitResult([0.1], [{0.1: 0.0}], [_FakeResult(-7.0)])

    monkeypatch.setattr(fit_module, "fit", fake)
    monkeypatch.setattr(fit_module, "refit_by_smoothing", fake_refit)
    opts = {"step_sds": [0.05, 0.1], "rounds": 2, "n_iter": 3}
    res = crossvalidate(unique_counts(), ["T1", "R1"], n_splits=1, seed=3, n_workers=1,
                        progress=False, refit_kwargs=opts,
                        model_kwargs={"prior": "brownian", "latent_posterior": "relie"})
    assert all(r["status"] == "ok" for r in res.records), res.failed
    split = make_splits(N_NEURONS, N_TIME, 1, seed=3)[0]
    assert len(refits) == 2
    for call in refits:
        np.testing.assert_array_equal(call["neurons"], np.arange(N_NEURONS))
        np.testing.assert_array_equal(call["bins"], split["train_t"])
        assert call["kwargs"] == opts
    assert all(r["train_elbo"] == -7.0 for r in res.records)
    # the records keep the step s.d. each refit round chose and the prior's before the refits
    assert all(r["refit_step_sds"] == [0.1] for r in res.records)
    assert all(len(r["step_sd"]) == 1 and r["step_sd"][0] > 0 for r in res.records)
    assert res.config["refit_kwargs"] == opts
    plain = crossvalidate(unique_counts(), ["T1"], n_splits=1, seed=3, n_workers=1,
                          progress=False, model_kwargs={"prior": "uniform"})
    assert "refit_kwargs" not in plain.config and len(refits) == 2
    # the uniform prior has no step s.d.
    assert plain.records[0]["refit_step_sds"] is None and plain.records[0]["step_sd"] is None
    # the ring's default grid posterior is exact: no smoothing refit for it
    grid = crossvalidate(unique_counts(), ["T1"], n_splits=1, seed=3, n_workers=1,
                         progress=False, refit_kwargs=opts)
    assert len(refits) == 2 and grid.records[0]["refit_step_sds"] is None
    with pytest.raises(ValueError, match="step_sds"):
        crossvalidate(unique_counts(), ["T1"], n_splits=1, progress=False,
                      refit_kwargs={"rounds": 2},
                      model_kwargs={"prior": "brownian", "latent_posterior": "relie"})
    with pytest.raises(ValueError, match="Brownian latent prior"):
        crossvalidate(unique_counts(), ["T1"], n_splits=1, progress=False, refit_kwargs=opts,
                      model_kwargs={"prior": "uniform"})


def test_particle_scores_equal_the_sampled_scores_on_equal_weights():
    """Equally weighted particles that are the draws of q(g) give the sampled estimator's scores,
    computed here directly, (and its predictive mean); ``_held_out_ll`` is that estimator."""
    from mgplvm.crossval import _held_out_ll, _held_out_ll_particles
    from mgplvm.model import MGPLVM

    rng = np.random.default_rng(0)
    Y = rng.poisson(2.0, size=(2, 5, 12)).astype(float)
    model = MGPLVM("T1", 5, 12, 2, bin_size=1.0, seed=0)
    model.init_from_data(Y)
    model.latents.set_sd(0.3)
    out = np.array([1, 3, 4])
    y_out = torch.as_tensor(Y[:, out])
    torch.manual_seed(5)
    ll, pred_ll, mean_s = _held_out_ll(model, y_out, out, n_samples=16, batch=16)
    torch.manual_seed(5)
    g = model._latent_samples(16)  # the same draws: (k, trials, time, ambient)
    lw = torch.full(g.shape[:-1], -math.log(16), dtype=g.dtype).movedim(0, -1)
    ll_p, pred_p, mean_y = _held_out_ll_particles(model, y_out, out, g.movedim(0, 2), lw,
                                                  batch=5)
    mean, var = model.f_moments(g)
    lik = model.likelihood_subset(torch.as_tensor(out))
    m, v = mean[..., out, :].detach(), var[..., out, :].detach()
    direct = [float((torch.logsumexp(w.sum(-2), 0) - math.log(16)).sum()) for w in (
        lik.expected_log_prob_moments(y_out, m, v), lik.log_predictive_moments(y_out, m, v))]
    assert ll == pytest.approx(direct[0], rel=1e-10) and pred_ll == pytest.approx(direct[1],
                                                                                 rel=1e-10)
    assert ll_p == pytest.approx(ll, rel=1e-10) and pred_p == pytest.approx(pred_ll, rel=1e-10)
    expected = model.likelihood.predictive_mean(mean, var)[..., out, :].mean(0)
    torch.testing.assert_close(mean_y, expected.detach())
    torch.testing.assert_close(mean_s, expected.detach())
    # unequal weights: particles (a, a, b) with weights (1/4, 1/4, 1/2) score as (a, b) with
    # (1/2, 1/2), per bin
    two = g[:2].movedim(0, 2)  # (trials, time, 2, ambient)
    three = torch.cat([two[..., :1, :], two], 2)
    lw2 = torch.full(two.shape[:-1], math.log(0.5), dtype=g.dtype)
    lw3 = torch.log(torch.tensor([0.25, 0.25, 0.5], dtype=g.dtype)).expand(*two.shape[:2], 3)
    a, b = _held_out_ll_particles(model, y_out, out, two, lw2), _held_out_ll_particles(
        model, y_out, out, three, lw3, batch=2)
    assert a[0] == pytest.approx(b[0], rel=1e-12) and a[1] == pytest.approx(b[1], rel=1e-12)
    torch.testing.assert_close(a[2], b[2])


def test_scores_are_per_datum(monkeypatch):
    """Doubling the data (two identical trials) leaves the per-datum score unchanged."""
    monkeypatch.setattr(fit_module, "fit", RecordingFit())
    rng = np.random.default_rng(0)
    Y1 = rng.poisson(2.0, size=(1, N_NEURONS, N_TIME)).astype(float)
    kw = dict(n_splits=1, seed=1, n_workers=1, progress=False, n_eval_samples=2,
              likelihood="gaussian")
    r1 = crossvalidate(Y1, ["R1"], **kw).records[0]
    r2 = crossvalidate(np.concatenate([Y1, Y1]), ["R1"], **kw).records[0]
    # untrained models with the same seed: identical per-datum scores up to the latents' init
    assert r1["ll_per_datum"] == pytest.approx(r2["ll_per_datum"], rel=0.2)
    assert abs(r1["ll_per_datum"]) < 50  # per datum, not a total over ~120 data


def test_a_failing_fold_is_recorded_not_dropped(monkeypatch):
    monkeypatch.setattr(fit_module, "fit", RecordingFit(fail_on="R1"))
    res = crossvalidate(unique_counts(), ["T1", "R1"], n_splits=2, seed=0, n_workers=1,
                        progress=False, n_eval_samples=2)
    assert len(res.records) == 4
    failed = res.failed
    assert [r["manifold"] for r in failed] == ["R1", "R1"]
    assert all("Cholesky failed (injected)" in r["error"] for r in failed)
    assert all("Traceback" in r["traceback"] for r in failed)
    assert np.isnan(res.scores()["R1"]).all() and np.isfinite(res.scores()["T1"]).all()
    assert res.winner() == "T1"
    assert "failed" in res.table()


def test_resume_skips_saved_folds_and_recomputes_other_configs(monkeypatch, tmp_path):
    fake = RecordingFit()
    monkeypatch.setattr(fit_module, "fit", fake)
    kw = dict(n_splits=2, seed=0, n_workers=1, progress=False, n_eval_samples=2,
              results_dir=tmp_path)
    first = crossvalidate(unique_counts(), ["T1", "R1"], **kw)
    assert len(list(tmp_path.glob("fold_*.json"))) == 4
    # an interrupted run: one fold's file is missing and is the only one recomputed
    (tmp_path / "fold_R1_001.json").unlink()
    n_before = len(fake.calls)
    again = crossvalidate(unique_counts(), ["T1", "R1"], **kw)
    assert len(fake.calls) - n_before == 3  # one train + two test fits
    for a, b in zip(first.records, again.records, strict=True):
        assert a["manifold"] == b["manifold"] and a["fold"] == b["fold"]
        if (a["manifold"], a["fold"]) != ("R1", 1):
            assert a == b
    n_before = len(fake.calls)
    with pytest.warns(UserWarning, match="recomputed"):
        crossvalidate(unique_counts(), ["T1", "R1"], **{**kw, "seed": 5})
    assert len(fake.calls) - n_before == 12  # every fold again: 4 × (train + two test fits)


def test_input_validation():
    Y = unique_counts()
    with pytest.raises(ValueError, match="unknown manifold"):
        crossvalidate(Y, ["T1", "Q9"], n_splits=1, progress=False)
    with pytest.raises(ValueError, match="duplicate"):
        crossvalidate(Y, ["T1", "T1"], n_splits=1, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        crossvalidate(np.full((1, 4, 10), np.nan), ["T1"], n_splits=1, progress=False)
    with pytest.raises(ValueError, match="n_eval_samples"):
        crossvalidate(Y, ["T1"], n_splits=1, progress=False, n_eval_samples=0)
    with pytest.raises(ValueError, match="trials, neurons, time"):
        crossvalidate(np.zeros((1, 1, 4, 10)), ["T1"], n_splits=1, progress=False)


# ----------------------------------------------------------------------------- real (tiny) fits
def _tiny_ring(n_neurons=8, n_time=60, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    theta = np.cumsum(rng.normal(0, 0.3, n_time))
    pref = np.linspace(-math.pi, math.pi, n_neurons, endpoint=False)
    rate = 0.2 + 3.0 * np.exp(2.0 * (np.cos(theta[None] - pref[:, None]) - 1))
    return rng.poisson(rate)[None].astype(float)


TINY = dict(n_splits=2, seed=7, progress=False, n_eval_samples=4, bin_size=1.0,
            fit_kwargs={"n_iter": 6, "n_mc": 2}, test_fit_kwargs={"n_iter": 4, "n_mc": 2})


def _scores(res: CVResult) -> list[tuple]:
    return [(r["manifold"], r["fold"], r["status"], r["ll_per_datum"], r["mse"])
            for r in res.records]


@pytest.fixture(scope="module")
def sequential_result():
    torch.manual_seed(0)
    return crossvalidate(_tiny_ring(), ["T1", "R1"], n_workers=1, **TINY)


def test_real_fits_are_reproducible_by_seed(sequential_result):
    assert all(r["status"] == "ok" for r in sequential_result.records), sequential_result.failed
    torch.manual_seed(123)  # the global RNG state must not matter
    again = crossvalidate(_tiny_ring(), ["T1", "R1"], n_workers=1, **TINY)
    assert _scores(again) == _scores(sequential_result)


def test_scores_do_not_depend_on_the_other_candidates(sequential_result):
    """A manifold's folds and seeds are its own: R1 alone, or listed first, scores as in the
    T1-and-R1 comparison (benchmarks/cv_topology.py shares fits between comparisons on this)."""
    r1 = [s for s in _scores(sequential_result) if s[0] == "R1"]
    alone = crossvalidate(_tiny_ring(), ["R1"], n_workers=1, **TINY)
    assert _scores(alone) == r1
    reordered = crossvalidate(_tiny_ring(), ["R1", "T1"], n_workers=1, **TINY)
    assert sorted(_scores(reordered)) == sorted(_scores(sequential_result))


def test_process_pool_gives_identical_results(sequential_result):
    """The default executor (a spawn process pool) reproduces the in-process run exactly."""
    pooled = crossvalidate(_tiny_ring(), ["T1", "R1"], n_workers=2, **TINY)
    assert _scores(pooled) == _scores(sequential_result)


def test_dask_local_cluster_gives_identical_results(sequential_result):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        res = crossvalidate(_tiny_ring(), ["T1", "R1"], executor=client.get_executor(), **TINY)
    assert _scores(res) == _scores(sequential_result)


def test_result_export_round_trip(sequential_result, tmp_path):
    res = sequential_result
    path = tmp_path / "cv.h5"
    res.save(path)
    back = CVResult.load(path)
    assert _scores(back) == _scores(res)
    assert back.manifolds == res.manifolds and back.n_splits == res.n_splits
    assert back.winner() == res.winner()
    summ = res.summary()
    assert set(summ) == {"T1", "R1"} and all(v["n"] == 2 for v in summ.values())
    diffs = res.paired_differences()
    assert diffs[res.winner()]["mean"] == 0.0
    cols = res.to_dataframe()
    n_rows = len(cols) if hasattr(cols, "iloc") else len(cols["manifold"])
    assert n_rows == 4
    assert sum(res.win_counts().values()) == 2
    fig = res.plot()
    assert len(fig.axes[0].lines) >= 2  # one line per fold
    json.dumps(res.records, default=float)


def _result_from_scores(scores: dict[str, list[float]]) -> CVResult:
    n = len(next(iter(scores.values())))
    recs = [{"manifold": m, "fold": f, "status": "ok", "error": None, "ll_per_datum": v}
            for m, vals in scores.items() for f, v in enumerate(vals)]
    return CVResult(recs, list(scores), n)


def test_table_names_the_candidates_within_noise_of_the_winner():
    """A consistent paired difference is significant even when it is small against the spread
    across folds; a difference that changes sign from fold to fold is not (exact sign-flip
    test, checked against scipy's paired t-test's verdicts); too few folds are said so."""
    from mgplvm.crossval import sign_flip_pvalue

    base = np.array([-0.30, -0.25, -0.28, -0.32, -0.27, -0.29, -0.26, -0.31])
    tie = np.array([0.002, -0.001, 0.001, -0.002, -0.0015, 0.0012, -0.0008, 0.0005])
    res = _result_from_scores({
        "T2": list(base),
        "S3": list(base + tie),
        "SO3": list(base - 0.004 + 0.001 * np.array([0, 1, -1, 0.5, -0.5, 0.2, -0.2, 0.1])),
    })
    from scipy import stats
    assert res.winner() == "T2"
    p_tie = sign_flip_pvalue(tie)
    assert p_tie > 0.5 and stats.ttest_rel(base + tie, base).pvalue > 0.5
    assert res.paired_differences()["SO3"]["signflip_pvalue"] == pytest.approx(2 / 2**8)
    assert res.within_noise() == ["S3"]
    assert "not distinguishable from T2 (sign-flip test p >= 0.05): S3" in res.table()
    assert res.within_noise(alpha=(1 + p_tie) / 2) == []
    with pytest.raises(ValueError, match="alpha"):
        res.within_noise(alpha=1.5)
    separated = _result_from_scores({"T2": list(base), "R2": list(base - 0.01 + tie)})
    assert separated.within_noise() == [] and "not distinguishable" not in separated.table()
    one = _result_from_scores({"T2": [-0.3], "R2": [-0.31]})
    assert one.within_noise() == [] and "no paired test" in one.table()
    two = _result_from_scores({"T2": [-0.3, -0.2], "R2": [-0.31, -0.21]})
    assert "too few for any test" in two.table()
    assert two.paired_differences()["R2"]["signflip_pvalue"] == 0.5


def test_unguarded_script_gets_a_hint_not_a_silent_failure(tmp_path):
    """A script without ``if __name__ == "__main__":`` kills its spawned workers; every failed
    record must say why and what to do."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "import numpy as np\n"
        "from mgplvm.crossval import crossvalidate\n"
        "Y = np.random.default_rng(0).poisson(2.0, (1, 4, 12)).astype(float)\n"
        "cv = crossvalidate(Y, ['R1'], n_splits=2, n_workers=2, progress=False,\n"
        "                   fit_kwargs={'n_iter': 2}, test_fit_kwargs={'n_iter': 2})\n"
        "print('ERRORS', [r['error'] for r in cv.failed])\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    line = next(x for x in out.stdout.splitlines() if x.startswith("ERRORS"))
    assert line.count("BrokenProcessPool") == 2
    assert line.count("if __name__") == 2 and "n_workers=1" in line


def test_silent_neuron_warned_once_per_fit_with_the_smoothed_start():
    """With ``test_init="smooth"`` the start checks the input half and warns about a silent
    neuron; the latent-only fit that follows checks again but stays quiet (it used to warn
    twice): one warning for the training fit, one for the test direction whose input half holds
    the neuron."""
    from mgplvm.datasets import head_direction_ring

    data = head_direction_ring(n_neurons=8, n_time=40, seed=0)
    Y = np.asarray(data.Y).copy()
    Y[0, 3] = 0
    with pytest.warns(UserWarning) as rec:
        res = crossvalidate(Y, ["T1"], n_splits=1, n_workers=1, progress=False,
                            bin_size=data.bin_size, n_eval_samples=2, test_init="smooth",
                            model_kwargs={"prior": "brownian", "n_inducing": 6,
                                          "latent_posterior": "relie"},
                            fit_kwargs={"n_iter": 3, "n_mc": 1},
                            test_fit_kwargs={"n_iter": 2, "n_mc": 1})
    assert res.records[0]["status"] == "ok", res.failed
    assert sum("never fire" in str(w.message) for w in rec) == 2
