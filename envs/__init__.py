"""Task families (``metabench.envs``): the registry and the interface.

Heavy families (MuJoCo, Meta-World) register a factory that imports lazily,
so ``import metabench.envs`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

from metabench.registry import Registry

from .base import ActionSpace, BatchedEnv, MetricSpec, Step, TaskBatch, TaskFamily, task_generator
from .harlow import Harlow
from .maze import Maze

FAMILIES: Registry[Callable[[], TaskFamily]] = Registry("task")
"""Task name -> factory of the family with that task's default config."""

FAMILIES.add("harlow", Harlow)
FAMILIES.add("maze", Maze)


def make_family(name: str) -> TaskFamily:
    return FAMILIES.get(name)()


__all__ = [
    "ActionSpace", "BatchedEnv", "FAMILIES", "MetricSpec", "Step", "TaskBatch", "TaskFamily",
    "make_family", "task_generator",
]
