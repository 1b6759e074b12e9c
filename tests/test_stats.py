"""The rliable statistics on score matrices whose answers can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from metabench import stats


def test_iqm_and_mean_by_hand():
    # 8 runs of one task: IQM drops the lowest 2 and highest 2 -> mean(1, 2, 3, 4) = 2.5; mean = 120 / 8 = 15.
    m = np.array([[0.0], [0.0], [1.0], [2.0], [3.0], [4.0], [10.0], [100.0]])
    out = stats.aggregate_intervals({"a": m})
    assert out["IQM"]["a"].point == pytest.approx(2.5)
    assert out["mean"]["a"].point == pytest.approx(15.0)
    iv = out["mean"]["a"]
    assert 0.0 <= iv.low < 15.0 < iv.high <= 100.0


def test_constant_scores_have_a_zero_width_interval():
    out = stats.aggregate_intervals({"a": np.full((5, 2), 0.7)})
    for kind in ("IQM", "mean"):
        iv = out[kind]["a"]
        assert iv.point == pytest.approx(0.7) and iv.low == pytest.approx(0.7) and iv.high == pytest.approx(0.7)


def test_intervals_are_reproducible():
    rng = np.random.default_rng(3)
    scores = {"a": rng.normal(size=(5, 2)), "b": rng.normal(size=(5, 2))}
    assert stats.aggregate_intervals(scores) == stats.aggregate_intervals(scores)
    assert stats.aggregate_intervals({"a": scores["a"]})["IQM"]["a"] == stats.aggregate_intervals(scores)["IQM"]["a"]


def test_probability_of_improvement_by_hand():
    better = np.array([[5.0], [6.0], [7.0]])
    worse = np.array([[1.0], [2.0], [3.0]])
    poi = stats.probability_of_improvement({"metods": better, "rl2": worse, "same": better.copy()}, "metods")
    assert poi["rl2"].point == pytest.approx(1.0)
    assert poi["same"].point == pytest.approx(0.5)
    # half the pairs: x = [1, 3] vs y = [2, 2] -> P(x > y) = (0 + 1 + 0 + 1) / 4 = 0.5; x = [2, 3] vs [1, 4] -> 2/4
    poi = stats.probability_of_improvement({"metods": np.array([[2.0], [3.0]]), "b": np.array([[1.0], [4.0]])},
                                           "metods")
    assert poi["b"].point == pytest.approx(0.5)
    assert "metods" not in poi
    assert stats.probability_of_improvement({"rl2": worse}, "metods") == {}


def test_performance_profile_by_hand():
    m = np.array([[0.1], [0.4], [0.6], [0.9]])
    dists, cis = stats.performance_profiles({"a": m}, np.array([0.0, 0.5, 1.0]))
    assert dists["a"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert cis["a"].shape == (2, 3)


def test_normalise_and_score_matrix():
    assert stats.normalise(5.2, 0.4, 5.2) == pytest.approx(1.0)
    assert stats.normalise(0.4, 0.4, 5.2) == pytest.approx(0.0)
    runs = {"harlow": {0: 1.0, 1: 2.0, 2: 3.0}, "maze": {0: 4.0, 2: 6.0}}
    m = stats.score_matrix(runs, ["harlow", "maze"])
    assert m.tolist() == [[1.0, 4.0], [3.0, 6.0]]  # only the seeds every task has


def test_iqm_curve():
    per_seed = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    iqm, low, high = stats.iqm_curve(per_seed)
    assert iqm.tolist() == [0.0, 1.0] and low.tolist() == [0.0, 1.0] and high.tolist() == [0.0, 1.0]


def test_bounds_random_zero_ceiling_one():
    low, high = stats.bounds("harlow")
    assert high == pytest.approx(5.2)
    assert 0.0 < low < 1.5  # uniform random actions on Harlow
    low, high = stats.bounds("maze")
    assert 1.0 < low < 8.0 and high > 100.0  # random walk vs shortest-path oracle


def test_seed_mean_interval_is_in_raw_units_and_reproducible():
    iv = stats.seed_mean_interval([4.0, 5.0, 6.0, 3.5, 4.5])
    assert iv.point == pytest.approx(4.6)
    assert 3.5 <= iv.low < iv.point < iv.high <= 6.0
    assert stats.seed_mean_interval([4.0, 5.0, 6.0, 3.5, 4.5]) == iv
    assert stats.seed_mean_interval([2.5]) == stats.Interval(2.5, 2.5, 2.5)


@pytest.mark.parametrize("k,n,low,high", [(4, 5, 0.3755, 0.9638), (0, 5, 0.0, 0.4345), (5, 5, 0.5655, 1.0),
                                          (7, 10, 0.3968, 0.8922)])
def test_wilson_interval_matches_the_textbook_values(k, n, low, high):
    ci = stats.wilson_interval(k, n)
    assert ci.point == k / n and ci.low == pytest.approx(low, abs=1e-4) and ci.high == pytest.approx(high, abs=1e-4)


def test_wilson_interval_refuses_impossible_counts():
    with pytest.raises(ValueError):
        stats.wilson_interval(6, 5)
