"""Profiles: how much compute a run gets (SPEC.md, "Suites and budgets").

``smoke`` is seconds a run, for CI; ``quick`` is at most ~20 minutes a run on
2 CPU cores and is what this repository commits; ``paper`` is the paper's
budgets, for a GPU or a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class Profile:
    name: str
    """Registered name; also the first folder of every record path."""
    summary: str
    """One line for ``metabench list``."""
    seeds: int
    """Seeds per (agent, task) when ``--seeds`` is not given."""
    train_env_steps: Mapping[str, int]
    """Meta-training budget in environment steps, per task."""
    test_tasks: int
    """Held-out test tasks (one trial each) in the final evaluation of a run."""
    curve_tasks: int
    """Held-out test tasks at each evaluation along training (the learning curve)."""
    curve_points: int
    """Evaluations along training, evenly spaced in environment steps (plus one at step 0)."""

    def budget(self, task: str) -> int:
        if task not in self.train_env_steps:
            raise KeyError(f"profile {self.name!r} has no budget for task {task!r}")
        return int(self.train_env_steps[task])

    def as_dict(self, task: str) -> dict:
        """The part of the profile that shapes a run of ``task`` (saved in its config)."""
        return {
            "name": self.name,
            "train_env_steps": self.budget(task),
            "test_tasks": self.test_tasks,
            "curve_tasks": self.curve_tasks,
            "curve_points": self.curve_points,
        }


PROFILES: Registry[Profile] = Registry("profile")

PROFILES.add("smoke", Profile(
    name="smoke", summary="seconds a run; CI and the regression gate",
    seeds=2, train_env_steps={"harlow": 20_000, "maze": 20_000},
    test_tasks=128, curve_tasks=32, curve_points=2,
))
PROFILES.add("quick", Profile(
    name="quick", summary="at most ~20 minutes a run on 2 CPU cores; what this repository commits",
    seeds=5, train_env_steps={"harlow": 3_000_000, "maze": 2_000_000},
    test_tasks=1024, curve_tasks=256, curve_points=20,
))
PROFILES.add("paper", Profile(
    name="paper", summary="the paper's budgets; for a GPU or a cluster",
    seeds=5, train_env_steps={"harlow": 50_000_000, "maze": 10_000_000},
    test_tasks=2048, curve_tasks=512, curve_points=50,
))

DEFAULT_PROFILE = "quick"
