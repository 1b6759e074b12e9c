"""Random: uniform actions, no training, no memory. Calibrates every task (score 0 after normalisation)."""

from __future__ import annotations

from typing import Any

import torch

from metabench.envs.base import TaskFamily

from .base import Agent, AgentInput, GeneratorState, TrainingMonitor


class RandomAgent(Agent):
    """Uniform over the discrete actions, or uniform in [low, high] per action dimension."""

    def __init__(self, family: TaskFamily, config, seed: int):
        super().__init__(family, config, seed)
        self.action_generator = torch.Generator().manual_seed(seed)

    def meta_train(self, family: TaskFamily, budget_env_steps: int, monitor: TrainingMonitor) -> int:
        return 0  # nothing to learn

    def stateful(self) -> dict[str, Any]:
        # nothing learned, but where its action stream stands
        return {"generator": GeneratorState(self.action_generator)}

    def initial_memory(self, batch_size: int) -> Any:
        return None

    def act(self, inputs: AgentInput, memory: Any) -> tuple[torch.Tensor, Any]:
        space = self.family.action_space
        b = inputs.obs.shape[0]
        if space.discrete:
            return torch.randint(0, space.n, (b,), generator=self.action_generator), memory
        u = torch.rand(b, space.n, generator=self.action_generator)
        return space.low + (space.high - space.low) * u, memory
