"""Aggregate statistics over seeds with rliable (the project spec, "Reporting").

Scores are *normalised per task* so that tasks can be aggregated: the
primary metric of a run's final evaluation mapped to (score - random) /
(ceiling - random). The report passes both levels in: ``random`` is the mean
of the committed ``random`` records of the task (:func:`random_level`
simulates uniform random actions only where there are none) and ``ceiling``
the family's documented ceiling over the held-out sets the agents were scored
on (the Bayes-optimal 5.2 on Harlow, the shortest-path oracle on the maze).
Random = 0, ceiling = 1.

Per suite and profile, a score matrix ``[runs, tasks]`` per agent (one row
per seed) feeds rliable: IQM and mean with 95 % stratified-bootstrap
confidence intervals, the probability of improvement of MetODS over each
baseline, and performance profiles. Every bootstrap starts from
``RANDOM_STATE`` (its own ``RandomState`` and, because rliable resamples from
the global numpy RNG, a seeded and restored global state), so the same
records always give the same intervals, whatever else the report computes.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

RANDOM_STATE = 0
"""Seed of every bootstrap."""
REPS = 2000
"""Bootstrap replications (rliable's default is 50,000; 2,000 keeps reports to seconds)."""
CONFIDENCE = 0.95


def _rs() -> np.random.RandomState:
    return np.random.RandomState(RANDOM_STATE)


@contextlib.contextmanager
def _seeded():
    """Seed numpy's global RNG for one bootstrap, then restore it.

    rliable 1.2.0's ``StratifiedBootstrap.update_indices`` draws its resamples
    from the *global* ``np.random``, ignoring ``random_state``; without this
    the same records give different intervals on every run.
    """
    state = np.random.get_state()
    np.random.seed(RANDOM_STATE)
    try:
        with warnings.catch_warnings():
            # arch warns that random_state is deprecated; rliable 1.2.0 passes it that way.
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        np.random.set_state(state)


@cache
def random_level(task: str, n_tasks: int = 1024) -> float:
    """Mean primary metric of uniform random actions on ``n_tasks`` held-out tasks of ``task`` (seed 0)."""
    from metabench.agents.random_agent import RandomAgent
    from metabench.envs import make_family

    from .protocol import evaluate

    family = make_family(task)
    return evaluate(RandomAgent(family, None, 0), family, 0, n_tasks).metrics[family.primary_metric]


def bounds(task: str) -> tuple[float, float] | None:
    """(random, ceiling) of the task's primary metric, or None if the family declares no ceiling."""
    from metabench.envs import make_family

    family = make_family(task)
    ceiling = family.ceiling()
    if ceiling is None:
        return None
    low = random_level(task)
    if not family.metric(family.primary_metric).higher_is_better or ceiling <= low:
        return None
    return low, ceiling


def normalise(value: float | np.ndarray, low: float, high: float):
    """Random -> 0, ceiling -> 1."""
    return (value - low) / (high - low)


def score_matrix(runs: Mapping[str, Mapping[int, float]], tasks: Sequence[str]) -> np.ndarray:
    """``[runs, tasks]`` from ``{task: {seed: score}}``: the seeds every task has, in seed order."""
    seeds = sorted(set.intersection(*(set(runs[t]) for t in tasks))) if tasks else []
    return np.array([[runs[t][s] for t in tasks] for s in seeds], dtype=np.float64).reshape(len(seeds), len(tasks))


@dataclass(frozen=True)
class Interval:
    point: float
    low: float
    high: float

    def fmt(self, digits: int = 2) -> str:
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def aggregate_intervals(scores: Mapping[str, np.ndarray],
                        which: Sequence[str] = ("IQM", "mean")) -> dict[str, dict[str, Interval]]:
    """IQM and/or mean of each agent's ``[runs, tasks]`` matrix with stratified-bootstrap CIs."""
    from rliable import library as rly
    from rliable import metrics

    funcs = {"IQM": metrics.aggregate_iqm, "mean": metrics.aggregate_mean}
    out: dict[str, dict[str, Interval]] = {}
    for name in which:
        func = funcs[name]
        out[name] = {}
        for agent, m in scores.items():
            if m.shape[0] < 1:
                continue
            with _seeded():
                points, cis = rly.get_interval_estimates(
                    {agent: m}, lambda x: np.array([func(x)]), reps=REPS, confidence_interval_size=CONFIDENCE,
                    random_state=_rs())
            out[name][agent] = Interval(float(points[agent][0]), float(cis[agent][0, 0]), float(cis[agent][1, 0]))
    return out


def seed_mean_interval(values: Sequence[float]) -> Interval:
    """Mean over seeds of a per-seed score, in the task's own units, with its 95 % bootstrap CI over seeds.

    What a reader quotes as "our number": each value is one seed's mean over its held-out episodes; the
    interval resamples seeds (rliable, the same fixed random state as every other aggregate), so it says
    how much the result moves with the seed, not with the test episodes. One seed gives a point interval.
    """
    m = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    if m.shape[0] == 1:
        v = float(m[0, 0])
        return Interval(v, v, v)
    return aggregate_intervals({"x": m}, which=("mean",))["mean"]["x"]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> Interval:
    """The share ``successes / n`` with its Wilson score interval (95 % by default): unlike the normal
    approximation it stays inside [0, 1] and is not degenerate at 0 of n or n of n."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def probability_of_improvement(scores: Mapping[str, np.ndarray], target: str) -> dict[str, Interval]:
    """P(target > baseline) for each other agent, with stratified-bootstrap CIs (rliable)."""
    from rliable import library as rly
    from rliable import metrics

    out: dict[str, Interval] = {}
    if target not in scores:
        return out
    for agent, m in scores.items():
        if agent == target or m.shape[0] < 1 or scores[target].shape[0] < 1:
            continue
        with _seeded():
            points, cis = rly.get_interval_estimates(
                {agent: (scores[target], m)}, metrics.probability_of_improvement, reps=REPS,
                confidence_interval_size=CONFIDENCE, random_state=_rs())
        lo, hi = np.ravel(cis[agent])
        out[agent] = Interval(float(np.ravel(points[agent])[0]), float(lo), float(hi))
    return out


def performance_profiles(scores: Mapping[str, np.ndarray], taus: np.ndarray):
    """Fraction of runs scoring above each τ, with bootstrap CIs: ``({agent: [len(taus)]}, {agent: [2, len(taus)]})``."""
    from rliable import library as rly

    dists, cis = {}, {}
    for agent, m in scores.items():
        if m.shape[0] < 1:
            continue
        # rly.create_performance_profile takes no random_state: the same computation, seeded.
        with _seeded():
            d, c = rly.get_interval_estimates({agent: m}, lambda s: rly.score_distributions(s, taus), reps=REPS,
                                              confidence_interval_size=CONFIDENCE, random_state=_rs())
        dists[agent], cis[agent] = d[agent], c[agent]
    return dists, cis


def iqm_curve(per_seed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM over seeds at each point of ``[seeds, points]`` (one task) with bootstrap CIs: (iqm, low, high)."""
    points, lows, highs = [], [], []
    for j in range(per_seed.shape[1]):
        iv = aggregate_intervals({"_": per_seed[:, j:j + 1]}, ("IQM",))["IQM"]["_"]
        points.append(iv.point)
        lows.append(iv.low)
        highs.append(iv.high)
    return np.array(points), np.array(lows), np.array(highs)


__all__ = ["Interval", "aggregate_intervals", "bounds", "iqm_curve", "normalise", "performance_profiles",
           "probability_of_improvement", "random_level", "score_matrix"]
