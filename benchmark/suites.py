"""Suites: named groups of tasks (SPEC.md, "Suites and budgets").

Only tasks that are implemented are listed; a suite appears once it has one.
Planned: efficiency gains ``ant_dir``; ``generality`` (Meta-World,
impairment) arrives with its task families.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class Suite:
    name: str
    """Registered name; the second folder of every record path and the report's file name."""
    summary: str
    """What the suite measures, one line."""
    tasks: tuple[str, ...]
    """Task names (registered task families) in report order."""


SUITES: Registry[Suite] = Registry("suite")

SUITES.add("efficiency", Suite("efficiency", "how fast an agent adapts inside one episode", ("harlow",)))
SUITES.add("capacity", Suite("capacity", "how much an agent can memorise inside one episode: "
                             "partially observable mazes (train L=8, also scored on L=10)", ("maze",)))


def select_suites(spec: str) -> list[Suite]:
    return [SUITES.get(n) for n in SUITES.select(spec)]
