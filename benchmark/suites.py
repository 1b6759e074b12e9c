"""Suites: named groups of tasks (SPEC.md, "Suites and budgets").

Only tasks that are implemented are listed; a suite appears once it has one.
Planned: ``generality`` gains the Meta-World tasks.
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

SUITES.add("efficiency", Suite("efficiency", "how fast an agent adapts inside one episode", ("harlow", "ant_dir")))
SUITES.add("capacity", Suite("capacity", "how much an agent can memorise inside one episode: "
                             "partially observable mazes (train L=8, also scored on L=10)", ("maze",)))
SUITES.add("generality", Suite("generality", "how well an agent's learning generalises: robots with a frozen "
                               "actuator, scored without retraining", ("impairment_ant", "impairment_cheetah")))


def select_suites(spec: str) -> list[Suite]:
    return [SUITES.get(n) for n in SUITES.select(spec)]
