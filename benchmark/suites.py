"""Suites: named groups of tasks (the project spec, "Suites and budgets").

A task names its suite where it is registered (:func:`metabench.envs.register_task`);
a suite lists its tasks in registration order, which is the report's order.
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
    target: str = "metods"
    """The agent the report compares every other against (its probability of improvement)."""

    @property
    def tasks(self) -> tuple[str, ...]:
        """The registered tasks of this suite, in registration (report) order."""
        from metabench.envs import FAMILIES

        return tuple(name for name, entry in FAMILIES.items() if entry.suite == self.name)


SUITES: Registry[Suite] = Registry("suite")

SUITES.add("efficiency", Suite("efficiency", "how fast an agent adapts inside one episode"))
SUITES.add("capacity", Suite("capacity", "how much an agent can memorise inside one episode: "
                             "partially observable mazes (train L=8, also scored on L=10)"))
SUITES.add("generality", Suite("generality", "how well an agent's learning generalises: robots with a frozen "
                               "actuator, scored without retraining; Meta-World goals and task classes held out"))


def select_suites(spec: str) -> list[Suite]:
    return [SUITES.get(n) for n in SUITES.select(spec)]
