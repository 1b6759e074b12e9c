"""Memoryless reference agents on the recurrent trainer: ``oracle`` (given the task) and ``blind`` (not).

They bound what a meta-learner's memory is worth on a task family, as the
VariBAD and PEARL papers do with a policy that is told the task:

- ``oracle``: a feed-forward policy on [observation, task features]
  (:meth:`~metabench.envs.base.TaskFamily.task_features`: the direction as
  (cos θ, sin θ), on the impairment tasks also which actuator is frozen). It
  is the ceiling a meta-learner approaches once it has inferred the task.
- ``blind``: the same policy on the observation alone. It can learn to move,
  not where: what is left once the task is unknown and nothing is remembered.

Both see neither the previous action nor the previous reward (a memoryless
policy that saw the last reward could still infer a little of the task), and
carry no memory through a trial. Everything else is the recurrent agents'
trainer and heads (:class:`~metabench.agents.recurrent.RecurrentAgent`), with
their settings (:mod:`metabench.agents.defaults`), so that only what the
policy is told differs from MetODS and RL².
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metabench.envs.base import TaskFamily

from .base import AgentInput
from .recurrent import MemoryCore, RecurrentAgent, RecurrentConfig, xavier_linear


@dataclass(frozen=True)
class MemorylessConfig(RecurrentConfig):
    hidden: int = 64
    """Width of each hidden layer of the tanh MLP between the input and the heads."""
    layers: int = 2
    """Hidden layers of that MLP."""
    sees_task: bool = False
    """Given the task's features (``oracle``) or not (``blind``)."""

    def __post_init__(self):
        super().__post_init__()
        if self.hidden < 1 or self.layers < 1:
            raise ValueError(f"hidden and layers must be positive, got hidden={self.hidden}, layers={self.layers}")


class FeedForwardCore(MemoryCore):
    """A tanh MLP with no state: ``h = mlp(x)``; its state is None (nothing is carried)."""

    def __init__(self, in_dim: int, hidden: int, layers: int):
        super().__init__()
        mods: list[nn.Module] = []
        for _ in range(layers):
            mods += [xavier_linear(in_dim, hidden), nn.Tanh()]
            in_dim = hidden
        self.mlp = nn.Sequential(*mods)
        self.hidden_dim = in_dim

    def initial_state(self, batch: int) -> None:
        return None

    def forward(self, x: torch.Tensor, state: None):
        return self.mlp(x), state

    def step(self, x: torch.Tensor, state: None, active: torch.Tensor):
        """No state to keep for inactive rows."""
        return self(x, state)

    def trial(self, x: torch.Tensor, active: torch.Tensor, state: None, *, step=None, tbptt: int = 0):
        """Every step at once: nothing is carried from one step to the next."""
        return self(x, state)


class MemorylessAgent(RecurrentAgent):
    """A feed-forward policy on the shared PPO trainer: ``oracle`` (told the task) or ``blind``."""

    Config = MemorylessConfig
    config: MemorylessConfig
    defaults_key = "memoryless"

    def __init__(self, family: TaskFamily, config: MemorylessConfig, seed: int):
        if config.sees_task and family.task_feature_dim is None:
            raise ValueError(f"the oracle needs the task's features, and task family {family.name!r} gives none")
        super().__init__(family, config, seed)

    @property
    def sees_task(self) -> bool:
        return self.config.sees_task

    def make_core(self, family: TaskFamily, config: MemorylessConfig) -> FeedForwardCore:
        width = family.obs_dim + (family.task_feature_dim if config.sees_task else 0)
        return FeedForwardCore(width, config.hidden, config.layers)

    def features(self, inputs: AgentInput) -> torch.Tensor:
        """[obs] (``blind``) or [obs, task features] (``oracle``), the observation standardised if ``obs_norm``."""
        inputs = self.observe(inputs)
        obs = inputs.obs
        if not self.config.sees_task:
            return obs
        if inputs.task is None:
            raise RuntimeError("the oracle was not given the task (AgentInput.task is None)")
        return torch.cat([obs, inputs.task.to(obs.dtype)], 1)


__all__ = ["FeedForwardCore", "MemorylessAgent", "MemorylessConfig"]
