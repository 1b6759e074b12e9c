"""What every part of the report shares: record groups, orderings, number format, the one markdown-table
writer and the one suite and profile lookup."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from metabench.agents import AGENTS
from metabench.envs import TaskFamily

from ..paper import PaperValue, paper_value
from ..profiles import PROFILES, Profile
from ..results import to_frame
from ..runner import resolve_config, same_config
from ..suites import SUITES, Suite

FIGURES = "figures"
"""The figures' folder, relative to the reports folder."""


def suite_of(name: str) -> Suite | None:
    """The registered suite ``name``, or None for records of a suite no longer registered."""
    return SUITES.get(name) if name in SUITES else None


def profile_of(name: str) -> Profile | None:
    """The registered profile ``name``, or None."""
    return PROFILES.get(name) if name in PROFILES else None


def md_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table's lines: the header, its rule and one line per row."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(row) + " |" for row in rows)]


def fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1000 or (x != 0 and abs(x) < 0.01) else f"{x:.2f}"


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def agent_order(names: Iterable[str]) -> list[str]:
    """Registered agents in registry order, then any others by name."""
    names = set(names)
    known = [a for a in AGENTS.names() if a in names]
    return known + sorted(names - set(known))


def profile_order(names: Iterable[str]) -> list[str]:
    names = set(names)
    known = [p for p in ("quick", "paper", "smoke") if p in names]
    return known + sorted(names - set(known))


def task_key(suite: Suite | None, task: str):
    """Sort key: the suite's task order, unknown tasks after it by name."""
    return (suite.tasks.index(task) if suite and task in suite.tasks else len(suite.tasks) if suite else 0, task)


def paper(mapping: tuple[str, str, float], agent: str) -> PaperValue | None:
    """The paper's value for ``agent`` (or its registered fallback row) under a metric's paper mapping."""
    task, metric, _ = mapping
    p = paper_value(task, agent, metric)
    if p is None and agent in AGENTS and (fallback := AGENTS.get(agent).paper_fallback):
        p = paper_value(task, fallback, metric)
    return p


def table_columns(family: TaskFamily) -> list[tuple[str, Any, tuple[str, str, float] | None]]:
    """(record metric name, spec, paper mapping) of the family's main table."""
    shown = set(family.table_metrics())
    return [(name, m, m.paper) for name, _suffix, m in family.scored_metrics() if name in shown]


@dataclass
class Group:
    """Records of one (profile, suite, task), by agent."""

    ok: dict[str, list[tuple[Path, dict[str, Any]]]]
    failed: list[tuple[Path, dict[str, Any]]]
    stale: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    """``ok`` records whose config is not what ``metabench run`` would run now (:func:`is_current`):
    listed, never pooled with the current ones."""

    @cached_property
    def frame(self):
        """The ``ok`` records as :func:`metabench.results.to_frame` rows, agents in report order, each
        agent's records in the order found (``agent`` is the key they are grouped under)."""
        rows = [(p, {**r, "agent": agent}) for agent in agent_order(self.ok) for p, r in self.ok[agent]]
        return to_frame(rows)

    def of(self, agent: str):
        """The frame's rows of ``agent``."""
        df = self.frame
        return df[df["agent"] == agent]


def is_current(record: dict[str, Any]) -> bool:
    """Whether the record's config is what the runner resolves today for its agent, task, profile and seed.

    A record of an older default (another task config, budget or agent setting) would otherwise be pooled
    with today's runs under today's header; the runner reruns exactly these (it skips only current records).
    Unknown agents or profiles cannot be judged and count as current.
    """
    if record["agent"] not in AGENTS or record["profile"] not in PROFILES:
        return True
    try:
        now = resolve_config(record["agent"], record["task"], PROFILES.get(record["profile"]), record["seed"])
    except (KeyError, ValueError):
        return True
    return same_config(record.get("config"), now)


def values(df, metric: str) -> list[float]:
    """The metric's values in the frame's order, rows without it left out."""
    return df[metric].dropna().tolist() if metric in df else []


def seed_mean(df, metric: str) -> float | None:
    """The mean over the rows (seeds) of ``metric``, or None if no row has it."""
    vals = values(df, metric)
    return sum(vals) / len(vals) if vals else None


def seed_interval(df, metric: str) -> str:
    """The mean over seeds of ``metric`` with its 95 % bootstrap CI over seeds, formatted; "—" if none."""
    from .. import stats

    vals = values(df, metric)
    return stats.seed_mean_interval(vals).fmt() if vals else "—"


@dataclass
class Cell:
    """A metric over the seeds of one (agent, task): pooled over test episodes."""

    mean: float
    std: float
    seeds: int


def pooled(df, metric: str) -> Cell | None:
    """Mean and std over all test episodes of all rows (each row holds its mean, std and episode count)."""
    if metric not in df:
        return None
    rows = df[df[metric].notna()]
    if rows.empty:
        return None
    means = rows[metric].tolist()
    stds = rows[f"{metric}_std"].fillna(0.0).tolist() if f"{metric}_std" in rows else [0.0] * len(means)
    counts = rows["test_episodes"].fillna(1.0).tolist() if "test_episodes" in rows else [1.0] * len(means)
    # plain sums in row order: the same bytes in the tables whatever pandas' summation does
    n = sum(counts)
    mean = sum(m * c for m, c in zip(means, counts)) / n
    second = sum((s * s + m * m) * c for m, s, c in zip(means, stds, counts)) / n
    return Cell(mean, math.sqrt(max(second - mean * mean, 0.0)), len(means))
