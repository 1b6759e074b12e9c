"""Curves of a group of runs read from their curves CSVs: per-seed values at the points every seed has,
and the x of those points in the family's ``curve_x`` units."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from metabench.envs import TaskFamily

from ..records import InvalidCurves, read_curves


def iter_curves(record: Path):
    """The record's curves rows; none if its CSV does not parse (:func:`metabench.report.build_reports`
    names such a file once, as :func:`metabench.records.check_curves` does)."""
    try:
        return read_curves(record)
    except InvalidCurves:
        return []

Runs = list[tuple[Path, dict[str, Any]]]


def per_seed_curve(runs: Runs, curve: str, metric: str):
    """x points every seed has, and ``[seeds][points]`` values (seed order)."""
    per_run = []
    for path, _ in sorted(runs, key=lambda pr: pr[1]["seed"]):
        per_run.append({x: v for c, x, m, v in iter_curves(path) if c == curve and m == metric})
    common = sorted(set.intersection(*(set(r) for r in per_run))) if per_run else []
    return common, [[r[x] for x in common] for r in per_run]


def in_curve_x(runs: Runs, family: TaskFamily, xs: list[float]) -> tuple[list[int], list[float]]:
    """Env-step checkpoints ``xs`` in the family's ``curve_x`` units: (indices kept, their x).

    For ``curve_x="episodes"``: the mean over the seeds of the training episodes at each checkpoint
    (trials end at different steps, so the same env-step checkpoint is a slightly different episode count
    per seed; a checkpoint some seed did not log is dropped)."""
    if family.curve_x == "env_steps" or not xs:
        return list(range(len(xs))), list(xs)
    at, per_seed = per_seed_curve(runs, "eval", family.curve_x)
    where = {x: sum(col) / len(col) for x, col in zip(at, zip(*per_seed))}
    keep = [j for j, x in enumerate(xs) if x in where]
    return keep, [where[xs[j]] for j in keep]


def curve_band(runs: Runs, curve: str, metric: str):
    """x, mean over seeds and the half-width of a normal 95% CI over seeds, at the x every seed has."""
    import numpy as np

    common, per_seed = per_seed_curve(runs, curve, metric)
    if not common:
        return [], np.array([]), np.array([])
    vals = np.array(per_seed)
    mean = vals.mean(0)
    half = 1.96 * vals.std(0, ddof=1) / np.sqrt(len(per_seed)) if len(per_seed) > 1 else np.zeros_like(mean)
    return common, mean, half


def learning_curve(runs: Runs, family: TaskFamily, metric: str):
    """The held-out curve of :func:`curve_band`, its x in the family's ``curve_x`` units (:func:`in_curve_x`)."""
    xs, mean, half = curve_band(runs, "eval", metric)
    keep, x = in_curve_x(runs, family, xs)
    return x, mean[keep], half[keep]


def band_limits(mean, half, bounds: tuple[float, float] | None):
    """``mean ± half``, within the metric's ``bounds`` where it has them: a normal interval over 3 seeds
    reaches below 0 on a success rate that is 0 in two of them."""
    import numpy as np

    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return low, high


def mean_curve(runs: Runs, curve: str, metric: str) -> tuple[list[float], list[float]]:
    """The mean over runs at each x any run has."""
    by_x: dict[float, list[float]] = defaultdict(list)
    for path, _ in runs:
        for c, x, m, v in iter_curves(path):
            if c == curve and m == metric:
                by_x[x].append(v)
    xs = sorted(by_x)
    return xs, [sum(by_x[x]) / len(by_x[x]) for x in xs]
