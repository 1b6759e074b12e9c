"""Profiles: how much compute a run gets (SPEC.md, "Suites and budgets").

``smoke`` is seconds a run, for CI; ``quick`` is at most ~50 minutes a run on
2 CPU cores (most take 5-20; MetODS on Harlow ~12) and is what this repository commits;
``paper`` is the paper's budgets, for a GPU or a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
    eval_tasks: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Per task, ``(test_tasks, curve_tasks)`` replacing the two above where simulation is
    costly (MuJoCo: ~5k steps/s a core against millions for the torch tasks)."""

    def budget(self, task: str) -> int:
        if task not in self.train_env_steps:
            raise KeyError(f"profile {self.name!r} has no budget for task {task!r}")
        return int(self.train_env_steps[task])

    def test_tasks_for(self, task: str) -> int:
        """Held-out test tasks of the final evaluation of a run of ``task``."""
        return self.eval_tasks.get(task, (self.test_tasks, self.curve_tasks))[0]

    def curve_tasks_for(self, task: str) -> int:
        """Held-out test tasks of each evaluation along training of ``task``."""
        return self.eval_tasks.get(task, (self.test_tasks, self.curve_tasks))[1]

    def as_dict(self, task: str) -> dict:
        """The part of the profile that shapes a run of ``task`` (saved in its config)."""
        return {
            "name": self.name,
            "train_env_steps": self.budget(task),
            "test_tasks": self.test_tasks_for(task),
            "curve_tasks": self.curve_tasks_for(task),
            "curve_points": self.curve_points,
        }


LOCOMOTION = ("ant_dir", "impairment_ant", "impairment_cheetah")
"""The MuJoCo direction tasks (:mod:`metabench.envs.locomotion`)."""

PROFILES: Registry[Profile] = Registry("profile")

PROFILES.add("smoke", Profile(
    name="smoke", summary="seconds a run; CI and the regression gate",
    seeds=2, train_env_steps={"harlow": 20_000, "maze": 20_000, **dict.fromkeys(LOCOMOTION, 3_200)},
    test_tasks=128, curve_tasks=32, curve_points=2, eval_tasks=dict.fromkeys(LOCOMOTION, (8, 4)),
))
PROFILES.add("quick", Profile(
    name="quick", summary="at most ~50 minutes a run on 2 CPU cores (most take 5-20); what this repository commits",
    # Harlow 12M env steps: the cue curriculum (HarlowConfig.curriculum, (0.125, 0.25)) is gone from 3M; MetODS
    # S=4 took 1-3M more steps on the task as specified to rise from chance and was still rising at 6M (a
    # MetODS S=4 run 21-25 min here, one thread, beside another run).
    # MuJoCo: ant_dir 500k env steps (a MetODS run ~14 min here); impairment_ant 300k (~10 min) and
    # impairment_cheetah 1M: HalfCheetah never ends a trial early and simulates 4.5x faster, so its MetODS
    # run at 300k took 3 min (and learned nothing: ~12 updates). 128 test tasks per variant (θ is forward
    # or backward; every actuator is scored frozen in turn).
    seeds=5, train_env_steps={"harlow": 12_000_000, "maze": 2_000_000, "ant_dir": 500_000,
                              "impairment_ant": 300_000, "impairment_cheetah": 1_000_000},
    test_tasks=1024, curve_tasks=256, curve_points=20,
    eval_tasks={"ant_dir": (256, 64), "impairment_ant": (128, 64), "impairment_cheetah": (128, 64)},
))
PROFILES.add("paper", Profile(
    name="paper", summary="the paper's budgets; for a GPU or a cluster",
    seeds=5, train_env_steps={"harlow": 50_000_000, "maze": 10_000_000, **dict.fromkeys(LOCOMOTION, 50_000_000)},
    test_tasks=2048, curve_tasks=512, curve_points=50, eval_tasks=dict.fromkeys(LOCOMOTION, (1024, 128)),
))

DEFAULT_PROFILE = "quick"
