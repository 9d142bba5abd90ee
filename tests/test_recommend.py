"""The manifold recommendation: the containment relation and the one-standard-error rule on
hand-made fold scores."""

from __future__ import annotations

import numpy as np
import pytest

from mgplvm.crossval import CVResult
from mgplvm.recommend import nested_in, recommend


@pytest.mark.parametrize("a,b", [
    ("R1", "T1"), ("R1", "R2"), ("T1", "R2"), ("T1", "S2"), ("T2", "S3"), ("T2", "SO3"),
    ("SO3", "S3"), ("R2", "T2"), ("R2", "S2"), ("S2", "S3"), ("S2", "R3"), ("T1", "T2"),
    ("T1", "T1xR1"), ("R1", "T1xR1"), ("T1xR1", "T1xR2"), ("T1xR1", "R2xT1"),
])
def test_contained(a, b):
    assert nested_in(a, b)
    assert not nested_in(b, a)


@pytest.mark.parametrize("a,b", [
    ("T1", "R1"), ("T2", "S2"), ("S2", "T2"), ("S3", "SO3"), ("T2", "R3"), ("T1", "T1"),
    ("S2", "SO3"), ("T1xR1", "R1xT1"),
])
def test_not_contained(a, b):
    assert not nested_in(a, b)


def test_unreadable_name():
    with pytest.raises(ValueError, match="Q7"):
        nested_in("Q7", "T1")


def _result(scores: dict[str, list[float]]) -> CVResult:
    n = len(next(iter(scores.values())))
    records = [{"manifold": m, "fold": k, "status": "ok" if np.isfinite(v) else "failed",
                "ll_per_datum": v}
               for m, vals in scores.items() for k, v in enumerate(vals)]
    return CVResult(records=records, manifolds=list(scores), n_splits=n)


RNG = np.random.default_rng(0)
BASE = -0.3 + 0.02 * RNG.standard_normal(8)  # fold-to-fold variation shared by the candidates


def _noise(scale=1e-3):
    """Zero-mean fold-to-fold scatter of a difference (s.e. of its mean ≈ scale / 2.8)."""
    return scale * np.array([1.0, -1.0, 0.5, -0.5, 1.5, -1.5, 0.8, -0.8])


def test_clear_winner_is_recommended():
    res = _result({"T1": BASE, "R1": BASE - 0.02 + _noise(), "R2": BASE - 0.01 + _noise()})
    rec = res.recommend()
    assert rec.choice == "T1" and rec.not_worse == ["T1"] and not rec.undecided


def test_a_containing_candidate_that_ties_or_wins_by_a_hair_yields_the_simpler():
    # S3 ahead of T2 by far less than the fold noise of the difference: T2, which S3 contains
    res = _result({"T2": BASE, "S3": BASE + 2e-4 + _noise(2e-3), "R2": BASE - 0.05})
    rec = res.recommend()
    assert rec.best == "S3" and rec.choice == "T2" and set(rec.not_worse) == {"T2", "S3"}
    assert "simpler" in rec.reason


def test_flat_data_are_not_called_a_ring():
    res = _result({"T1": BASE + 1e-4 + _noise(2e-3), "R1": BASE})
    assert res.recommend().choice == "R1"


def test_so3_and_its_double_cover_tied_give_so3():
    res = _result({"SO3": BASE, "S3": BASE + 1e-4 + _noise(2e-3)})
    assert res.recommend().choice == "SO3"


def test_tied_candidates_that_do_not_nest_are_undecided():
    res = _result({"T2": BASE, "S2": BASE + 1e-4 + _noise(2e-3), "R1": BASE - 0.1})
    rec = res.recommend()
    assert rec.undecided and rec.choice is None and set(rec.simplest) == {"T2", "S2"}
    assert "cannot decide" in rec.headline()


def test_larger_model_better_by_more_than_the_noise_wins():
    res = _result({"T1": BASE, "R2": BASE + 0.01 + _noise(1e-3)})
    assert res.recommend().choice == "R2"


def test_the_margin_counts_standard_errors():
    diff = 0.002 + _noise(2e-3)  # R2 better on average, by about 3 of its s.e.
    res = _result({"T1": BASE, "R2": BASE + diff})
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    n = diff.mean() / se
    assert res.recommend(n_se=0.5 * n).choice == "R2"
    assert res.recommend(n_se=2.0 * n).choice == "T1"


def test_failed_folds_and_too_few_folds():
    res = _result({"T1": [-0.3], "R1": [-0.4]})
    rec = res.recommend()
    assert rec.undecided and "fewer than two folds" in rec.reason
    res = _result({"T1": [-0.3, np.nan, -0.31, -0.29], "R1": [-0.4, -0.41, -0.39, -0.42]})
    rec = recommend(res)
    assert rec.choice == "T1" and rec.n_folds == 3
    with pytest.raises(RuntimeError, match="every fold failed"):
        _result({"T1": [np.nan, np.nan]}).recommend()
    with pytest.raises(ValueError, match="n_se"):
        res.recommend(n_se=-1)


def test_lower_is_better_metrics():
    res = _result({"T1": BASE, "R1": BASE})
    for r in res.records:
        r["mse"] = 1.0 if r["manifold"] == "T1" else 2.0 + 0.01 * r["fold"]
    assert recommend(res, "mse").choice == "T1"


def test_the_table_states_the_recommendation():
    res = _result({"T1": BASE, "R1": BASE - 0.02 + _noise()})
    assert "recommendation: T1:" in res.table()
