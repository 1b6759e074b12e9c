"""Task families (``metabench.envs``): the registry and the interface.

MuJoCo families import gymnasium only when their first environment is
built, so ``import metabench.envs`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

from metabench.registry import Registry

from .base import ActionSpace, BatchedEnv, MetricSpec, Step, TaskBatch, TaskFamily, task_generator
from .harlow import Harlow
from .locomotion import ant_dir, impairment_ant, impairment_cheetah
from .maze import Maze

FAMILIES: Registry[Callable[[], TaskFamily]] = Registry("task")
"""Task name -> factory of the family with that task's default config."""

FAMILIES.add("harlow", Harlow)
FAMILIES.add("maze", Maze)
FAMILIES.add("ant_dir", ant_dir)
FAMILIES.add("impairment_ant", impairment_ant)
FAMILIES.add("impairment_cheetah", impairment_cheetah)


def make_family(name: str) -> TaskFamily:
    return FAMILIES.get(name)()


__all__ = [
    "ActionSpace", "BatchedEnv", "FAMILIES", "MetricSpec", "Step", "TaskBatch", "TaskFamily",
    "make_family", "task_generator",
]
