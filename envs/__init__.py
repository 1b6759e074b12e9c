"""Task families (``metabench.envs``): the registry and the interface.

A task is registered once, here, with everything the benchmark needs to run
it: the factory of its family (with that task's config), the suite it belongs
to and its meta-training budget under each profile (plus, where simulation is
costly, fewer held-out tasks). Adding a task family is its own module plus one
:func:`register_task` line; suites, profiles and the runner read it from here.
Another installed package adds task families through the entry-point group
``metabench.tasks`` (a callable that calls :func:`register_task`).

MuJoCo families import gymnasium only when their first environment is
built, so ``import metabench.envs`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metabench.registry import Registry, load_plugins

from .base import ActionSpace, BatchedEnv, MetricSpec, Step, TaskBatch, TaskFamily, task_generator
from .harlow import Harlow
from .locomotion import ant_dir, impairment_ant, impairment_cheetah
from .maze import Maze
from .metaworld import mw_ml1_push, mw_ml1_reach, mw_ml10


@dataclass(frozen=True)
class TaskEntry:
    """A registered task. Calling it builds the family (``FAMILIES.get(name)()``)."""

    name: str
    factory: Callable[[], TaskFamily]
    suite: str
    """The suite the task belongs to (``metabench.suites``); suites list their tasks in registration order."""
    budgets: Mapping[str, int]
    """Profile name -> meta-training budget in environment steps."""
    eval_tasks: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Profile name -> ``(test_tasks, curve_tasks)`` where they replace the profile's (costly simulation)."""
    seeds: Mapping[str, int] = field(default_factory=dict)
    """Profile name -> seeds per agent when ``--seeds`` is not given, where they replace the profile's."""
    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Profile name -> family config fields replaced under it (Meta-World's smoke trials: 2 episodes of 50
    steps, so that CI runs it in seconds); recorded in each run's config like any field."""

    def __call__(self, profile: str | None = None) -> TaskFamily:
        family = self.factory()
        changes = self.config.get(profile, {}) if profile is not None else {}
        return family.with_config(**changes) if changes else family


FAMILIES: Registry[TaskEntry] = Registry("task")
"""Task name -> :class:`TaskEntry`."""


def register_task(name: str, factory: Callable[[], TaskFamily], suite: str, budgets: Mapping[str, int],
                  eval_tasks: Mapping[str, tuple[int, int]] | None = None,
                  seeds: Mapping[str, int] | None = None,
                  config: Mapping[str, Mapping[str, Any]] | None = None) -> TaskEntry:
    return FAMILIES.add(name, TaskEntry(name, factory, suite, dict(budgets), dict(eval_tasks or {}),
                                        dict(seeds or {}), {k: dict(v) for k, v in (config or {}).items()}))


# Harlow 12 M on quick: the cue curriculum ends at 3 M and MetODS needs several million more steps on the task
# as specified (FINDINGS.md, "Trainer defaults and budgets").
register_task("harlow", Harlow, "efficiency", {"smoke": 20_000, "quick": 12_000_000, "paper": 50_000_000})
# The maze at the paper's 10 M on quick too: ~13 min a MetODS run on one core with the fused kernel.
register_task("maze", Maze, "capacity", {"smoke": 20_000, "quick": 10_000_000, "paper": 10_000_000})
# MuJoCo: ~5k simulated steps/s a core against millions for the torch tasks, hence smaller budgets and fewer
# held-out tasks. Quick budgets: what fits ~15-25 minutes of the slowest learner (RL², MetODS) on one core under
# the MuJoCo trainer settings (agents/defaults.py): Ant 2 M; HalfCheetah 3 M, because it simulates ~5x faster and
# never ends a trial early (MetODS there: 122.6 and 257.0 at 1 M, 381.6 and 431.4 at 3 M; FINDINGS.md).
# 128 test tasks per impairment variant: θ is forward or backward, and every actuator is scored frozen in turn.
# Three seeds on quick (the least the continuous-control issue accepts): a learning run there costs tens of
# minutes of simulation on one core, against minutes on the torch tasks.
_MUJOCO_EVAL = {"smoke": (8, 4), "paper": (1024, 128)}
_MUJOCO_SEEDS = {"quick": 3}
register_task("ant_dir", ant_dir, "efficiency", {"smoke": 3_200, "quick": 2_000_000, "paper": 50_000_000},
              {**_MUJOCO_EVAL, "quick": (256, 64)}, _MUJOCO_SEEDS)
register_task("impairment_ant", impairment_ant, "generality",
              {"smoke": 3_200, "quick": 2_000_000, "paper": 50_000_000}, {**_MUJOCO_EVAL, "quick": (128, 64)},
              _MUJOCO_SEEDS)
register_task("impairment_cheetah", impairment_cheetah, "generality",
              {"smoke": 3_200, "quick": 3_000_000, "paper": 50_000_000}, {**_MUJOCO_EVAL, "quick": (128, 64)},
              _MUJOCO_SEEDS)

# Meta-World: trials of 10 x 500 steps. Simulation alone ran ~3.1k steps/s (reach) and ~1.6k (push) on one idle
# core as metaworld ships (random actions), training ~2k and ~1.2k env-steps/s; the fast paths of
# envs/metaworld.py since made the simulation ~1.4x (reach, ML10) and ~2.3x (push) faster, and the budgets stayed
# (`python -m metabench.throughput --metaworld`). The quick budgets are what fitted ~30-45 minutes of a run
# with its evaluations, 30 % (reach), 15 % (push) and 20 % (ML10) of the paper's 1e7 (Fig. 6). Held-out: 30
# trials (300 episodes) per split at the end, 3 per split at each curve point. Smoke shortens the trial to
# 2 episodes of 50 steps, so that CI runs it in seconds.
_MW_EVAL = {"smoke": (8, 4), "quick": (30, 3), "paper": (250, 20)}
_MW_SMOKE = {"smoke": {"episodes_per_trial": 2, "episode_steps": 50}}
register_task("mw_ml1_reach", mw_ml1_reach, "generality", {"smoke": 3_200, "quick": 3_000_000, "paper": 10_000_000},
              _MW_EVAL, _MUJOCO_SEEDS, _MW_SMOKE)
register_task("mw_ml1_push", mw_ml1_push, "generality", {"smoke": 3_200, "quick": 1_500_000, "paper": 10_000_000},
              _MW_EVAL, _MUJOCO_SEEDS, _MW_SMOKE)
register_task("mw_ml10", mw_ml10, "generality", {"smoke": 3_200, "quick": 2_000_000, "paper": 10_000_000},
              _MW_EVAL, _MUJOCO_SEEDS, _MW_SMOKE)


# Task families of other installed packages (entry-point group ``metabench.tasks``), after metabench's own; such
# a plugin may add its own suite to ``metabench.suites.SUITES``.
def _load_task_plugins() -> None:
    from metabench.suites import SUITES

    load_plugins("metabench.tasks", FAMILIES, SUITES)


_load_task_plugins()


def make_family(name: str, profile: str | None = None) -> TaskFamily:
    """The family of task ``name``; under ``profile``, with that profile's config overrides (what a run of it
    trains and is scored on). Without a profile: the task as specified (metric names, reports)."""
    return FAMILIES.get(name)(profile)


__all__ = [
    "ActionSpace", "BatchedEnv", "FAMILIES", "MetricSpec", "Step", "TaskBatch", "TaskEntry", "TaskFamily",
    "make_family", "register_task", "task_generator",
]
