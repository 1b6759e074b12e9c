"""RL² (Duan et al. 2016; Wang et al. 2016): a GRU whose hidden state is the agent's memory of the trial.

Input: [obs, previous action, previous reward, episode-start flag]. The
hidden state is reset at task start only, never at episode boundaries, so
what the GRU learned about the task carries across the episodes of a trial.
Trained by the shared PPO trainer (:mod:`metabench.agents.ppo`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metabench.envs.base import TaskFamily

from .recurrent import MemoryCore, RecurrentAgent, RecurrentConfig
from .base import feature_dim


@dataclass(frozen=True)
class RL2Config(RecurrentConfig):
    hidden: int = 128
    """GRU hidden size."""


class GRUCore(MemoryCore):
    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.hidden_dim = hidden
        self.cell = nn.GRUCell(in_dim, hidden)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.hidden_dim)

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        h = self.cell(x, state)
        return h, h


class RL2Agent(RecurrentAgent):
    Config = RL2Config
    defaults_key = "rl2"
    config: RL2Config

    def make_core(self, family: TaskFamily, config: RL2Config) -> GRUCore:
        return GRUCore(feature_dim(family), config.hidden)
