"""The score regression gate behind ``metabench check`` (the project spec, "Reporting").

``metabench check`` runs the ``smoke`` profile for every agent on every task
it supports (fresh, in a work folder, so the scores are the current code's),
then compares each metric, averaged over seeds, with a committed baseline
(``results/baselines/smoke.json``). A metric *regresses* when it is worse
than the baseline by more than its tolerance::

    tolerance = max(2 x std over the baseline's seeds,
                    3 x the standard error of the baseline's seed mean over test episodes,
                    5 x the task's seed spread x sqrt(1/n_baseline + 1/n_now),
                    1e-6)

The first two terms give a metric that varies across seeds, or is measured on
few episodes, room to move. The third is there because a smoke score is
reproducible only on the same platform. A float sum's order depends on the
CPU's vector kernels: ``ATEN_CPU_CAPABILITY=default`` against ``avx2`` moves
``ant_dir/blind`` seed 0 from -6.6 to -19.1. A MuJoCo rollout amplifies the
difference until another machine's smoke run is a fresh draw of its seeds. The
task's seed spread (:func:`seed_spreads`) is the median over the task's agents
of each one's sample std over seeds in the baseline: two seeds of one agent say
little about the spread, and at the smoke budget the spread is the task's more
than the agent's.

Two redraws were measured against the same baseline on unchanged code. A CI
machine with another CPU failed 5 of 526 metrics on the first two terms alone;
the largest fall was 0.71 of this tolerance. This machine with ATen's default
kernels failed 1; the largest fall was 0.63 of it. What the gate still catches
on any machine: a failed or missing run, a lost metric, a NaN (the run fails),
and a score that falls by more than five of the task's seed-to-seed spreads.
Smoke budgets train little, so that is a check that the code runs and scores
in its usual range, not a test of learning (``tests/test_learning.py`` is).

Each smoke run gets one torch thread, whatever ``--workers`` and the core count:
a float sum's order depends on the thread count too, and a baseline written on
two threads failed on one.

The baseline is validated when it is read (:func:`load_baseline`), before any
run: every entry needs finite numbers (``mean``; ``seed_std`` and ``episode_se``
at least 0) and a JSON boolean ``higher_is_better``, else the gate refuses it. A
(task, agent) pair or a metric measured now but absent from the baseline fails
the gate (it would otherwise go unchecked) until ``--update-baseline`` adds it.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import write_atomic

BASELINE_SCHEMA = 1
DEFAULT_BASELINE = Path("results/baselines/smoke.json")


class BadBaseline(ValueError):
    """The baseline file is missing, not JSON, or not a baseline."""


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"task/agent": {metric: {mean, seed_std, episode_se, seeds, higher_is_better}}}`` over ok records."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["status"] == "ok":
            by_key.setdefault(f"{r['task']}/{r['agent']}", []).append(r)
    from metabench.envs import make_family

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key in sorted(by_key):
        runs = by_key[key]
        out[key] = {}
        family = make_family(runs[0]["task"], runs[0].get("profile"))
        for metric, suffix, spec in family.scored_metrics():
            episodes = f"test_episodes{suffix}"
            per_trial = family.episodes_per_trial if spec.last_episode_of else 1  # one value per trial
            vals = [r["metrics"][metric] for r in runs if metric in r["metrics"]]
            if not vals:
                continue
            mean = sum(vals) / len(vals)
            seed_std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
            # standard error of the mean of seed means, from each run's per-episode std
            se2 = [r["metrics"].get(f"{metric}_std", 0.0) ** 2
                   / max(r["metrics"].get(episodes, 1.0) / per_trial, 1.0) for r in runs if metric in r["metrics"]]
            episode_se = math.sqrt(sum(se2)) / len(se2)
            out[key][metric] = {"mean": mean, "seed_std": seed_std, "episode_se": episode_se, "seeds": len(vals),
                                "higher_is_better": spec.higher_is_better}
    return out


PLATFORM_Z = 5.0
"""How many of the task's seed spreads (on a difference of two seed means) a score may fall before it regresses."""


def seed_spreads(scores: dict[str, dict[str, dict[str, Any]]]) -> dict[tuple[str, str], float]:
    """``{(task, metric): the median over the task's agents of their sample std over seeds}``.

    An entry holds its population std over ``seeds`` runs; ``x sqrt(seeds / (seeds - 1))`` makes it a sample std.
    Entries of one seed add nothing. The median, not a pooled variance, so that one agent of another scale (the
    scripted policy on push, whose success depends on the goal) does not set every agent's room.
    """
    per: dict[tuple[str, str], list[float]] = {}
    for key, metrics in scores.items():
        task = key.split("/")[0]
        for metric, e in metrics.items():
            n = int(e.get("seeds", 1))
            if n >= 2:
                per.setdefault((task, metric), []).append(e["seed_std"] * math.sqrt(n / (n - 1)))
    return {k: statistics.median(v) for k, v in per.items()}


def tolerance(entry: dict[str, Any], spread: float = 0.0, seeds_now: int | None = None) -> float:
    """How far ``entry``'s metric may fall; ``spread`` is its task's seed spread (:func:`seed_spreads`)."""
    n_base = max(int(entry.get("seeds", 1)), 1)
    n_now = max(seeds_now or n_base, 1)
    platform = PLATFORM_Z * spread * math.sqrt(1.0 / n_base + 1.0 / n_now)
    return max(2.0 * entry["seed_std"], 3.0 * entry["episode_se"], platform, 1e-6)


@dataclass
class Finding:
    key: str
    metric: str
    message: str
    kind: str = "regression"
    """``regression`` (worse than the baseline beyond tolerance, or in the baseline but not measured now) or
    ``not in baseline`` (measured now, unchecked until ``--update-baseline`` adds it); either fails the gate."""


def compare(current: dict[str, dict[str, dict[str, Any]]], baseline: dict[str, Any]) -> tuple[list[Finding], list[str]]:
    """Findings that fail the gate (:class:`Finding`: regressions, entries missing on either side) and notes."""
    regressions, notes = [], []
    base = baseline["scores"]
    spreads = seed_spreads(base)
    for key, metrics in sorted(base.items()):
        if key not in current:
            regressions.append(Finding(key, "*", f"{key}: in the baseline but no successful run now"))
            continue
        for metric, b in sorted(metrics.items()):
            c = current[key].get(metric)
            if c is None:
                regressions.append(Finding(key, metric, f"{key} {metric}: in the baseline but not measured now"))
                continue
            tol = tolerance(b, spreads.get((key.split("/")[0], metric), 0.0), c.get("seeds"))
            if b["higher_is_better"] and c["mean"] < b["mean"] - tol:
                regressions.append(Finding(key, metric, f"{key} {metric}: {c['mean']:.4g} < baseline {b['mean']:.4g} "
                                                        f"- tolerance {tol:.3g}"))
            elif not b["higher_is_better"] and c["mean"] > b["mean"] + tol:
                regressions.append(Finding(key, metric, f"{key} {metric}: {c['mean']:.4g} > baseline {b['mean']:.4g} "
                                                        f"+ tolerance {tol:.3g} (lower is better)"))
    for key, metrics in sorted(current.items()):
        if key not in base:
            regressions.append(Finding(key, "*", f"{key}: measured now but not in the baseline "
                                                 "(run with --update-baseline to add it)", "not in baseline"))
            continue
        for metric in sorted(set(metrics) - set(base[key])):
            regressions.append(Finding(key, metric, f"{key} {metric}: measured now but not in the baseline "
                                                    "(run with --update-baseline to add it)", "not in baseline"))
        for metric in sorted(set(metrics) & set(base[key])):
            if metrics[metric].get("higher_is_better", base[key][metric]["higher_is_better"]) \
                    != base[key][metric]["higher_is_better"]:
                notes.append(f"{key} {metric}: the baseline's higher_is_better is "
                             f"{base[key][metric]['higher_is_better']}, the code's is not; compared as the baseline says")
    return regressions, notes


def load_baseline(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadBaseline(f"no baseline at {path}; create it with `metabench check --update-baseline`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadBaseline(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA or not isinstance(data.get("scores"), dict):
        raise BadBaseline(f"{path}: not a metabench baseline (schema {BASELINE_SCHEMA})")
    problems = baseline_problems(data["scores"])
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BadBaseline(f"{path}: {problems[0]}{more}")
    return data


ENTRY_FIELDS = ("mean", "seed_std", "episode_se", "higher_is_better")


def baseline_problems(scores: dict[str, Any]) -> list[str]:
    """What is wrong with a baseline's ``scores``, one item per malformed entry; empty if nothing."""
    problems = []
    for key, metrics in scores.items():
        if not isinstance(key, str) or len(key.split("/")) != 2 or not all(key.split("/")):
            problems.append(f"entry {key!r} is malformed: not named task/agent")
            continue
        if not isinstance(metrics, dict) or not metrics:
            problems.append(f"entry {key} is malformed: not a non-empty object of metrics")
            continue
        for metric, entry in metrics.items():
            why = _entry_problem(entry)
            if why:
                problems.append(f"entry {key} {metric} is malformed: {why}")
    return problems


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "not an object"
    missing = [k for k in ENTRY_FIELDS if k not in entry]
    if missing:
        return f"missing {', '.join(missing)}"
    for k in ("mean", "seed_std", "episode_se"):
        v = entry[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{k} is {json.dumps(v)}, not a number"
        if not math.isfinite(v):
            return f"{k} is {v}, not a finite number"
        if k != "mean" and v < 0:
            return f"{k} is {v}, below 0"
    if not isinstance(entry["higher_is_better"], bool):
        return f"higher_is_better is {json.dumps(entry['higher_is_better'])}, not true or false"
    if "seeds" in entry and (isinstance(entry["seeds"], bool) or not isinstance(entry["seeds"], int)
                             or entry["seeds"] < 1):
        return f"seeds is {json.dumps(entry['seeds'])}, not a positive integer"
    return None


def write_baseline(path: Path, current: dict[str, dict[str, dict[str, Any]]], profile: str, version: str) -> None:
    data = {"schema": BASELINE_SCHEMA, "profile": profile, "code_version": version,
            "note": "written by `metabench check --update-baseline`; see metabench.gate for the tolerance",
            "scores": current}
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
