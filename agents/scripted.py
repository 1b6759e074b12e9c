"""Scripted: metaworld's own hand-written policy for each task class, given the goal (a calibration row).

metaworld ships a scripted policy per task class (``metaworld.policies``) that reads the hand, object and
goal positions from a fully observable observation. Here it is given what a meta-learner must infer: the
goal's target position and the task class, as the Meta-World family's task features
(:meth:`~metabench.envs.metaworld.MetaWorld.task_features`), written into the goal entries that metaworld's
partially observable mode zeroes. It never trains and has no memory. Beside ``random`` it calibrates the
Meta-World tables: what success a policy that knows the goal reaches through our family (reach: nearly every
episode), against what random actions reach (rarely any).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metabench.envs.base import TaskFamily

from .base import Agent, AgentInput, TrainingMonitor


class ScriptedAgent(Agent):
    """metaworld's scripted policy of each goal's task class, the goal written into the observation."""

    defaults_key = "scripted"

    def __init__(self, family: TaskFamily, config, seed: int):
        super().__init__(family, config, seed)
        from metaworld.policies import ENV_POLICY_MAP

        self.classes = family.all_classes  # type: ignore[attr-defined]
        self.policies = [ENV_POLICY_MAP[name]() for name in self.classes]

    @property
    def sees_task(self) -> bool:
        return True

    @classmethod
    def supports(cls, family: TaskFamily) -> bool:
        from metabench.envs.metaworld import MetaWorld

        return isinstance(family, MetaWorld)

    def meta_train(self, family: TaskFamily, budget_env_steps: int, monitor: TrainingMonitor) -> int:
        return 0  # nothing to learn

    def initial_memory(self, batch_size: int) -> Any:
        return None

    def act(self, inputs: AgentInput, memory: Any) -> tuple[torch.Tensor, Any]:
        assert inputs.task is not None, "the protocol gives the scripted policy its task"
        obs = inputs.obs.numpy().astype(np.float64)
        task = inputs.task.numpy().astype(np.float64)
        actions = np.zeros((len(obs), self.family.action_space.n), dtype=np.float32)
        for i in range(len(obs)):
            o = obs[i].copy()
            o[-3:] = task[i, :3]  # the goal metaworld hides in its partially observable mode
            actions[i] = self.policies[int(task[i, 3])].get_action(o)
        return torch.from_numpy(np.clip(actions, -1.0, 1.0)), memory
