"""RL² (Duan et al. 2016; Wang et al. 2016): a GRU whose hidden state is the agent's memory of the trial.

Input: [obs, previous action, previous reward, episode-start flag]. The
hidden state is reset at task start only, never at episode boundaries, so
what the GRU learned about the task carries across the episodes of a trial.
Trained by the shared PPO trainer (:mod:`metabench.agents.ppo`); a trial (the
replay, and each acting step as a trial of one step) runs on a fused C++
forward and backward of the GRU (:mod:`metabench.agents.gru_fused`) unless
``kernel="autograd"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metabench.envs.base import TaskFamily

from . import gru_fused
from .recurrent import MemoryCore, RecurrentAgent, RecurrentConfig
from .base import feature_dim


@dataclass(frozen=True)
class RL2Config(RecurrentConfig):
    hidden: int = 128
    """GRU hidden size."""


class GRUCore(MemoryCore):
    """A ``GRUCell``; a trial runs on the fused kernel (:mod:`metabench.agents.gru_fused`) or steps the cell."""

    def __init__(self, in_dim: int, hidden: int, kernel: str = "auto"):
        super().__init__()
        self.hidden_dim = hidden
        self.cell = nn.GRUCell(in_dim, hidden)
        self.use_kernel("RL²", kernel, None, gru_fused)

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.cell.weight_hh.new_zeros(batch, self.hidden_dim)

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        h = self.cell(x, state)
        return h, h

    def trial(self, x: torch.Tensor, active: torch.Tensor, state: torch.Tensor, *, step=None, tbptt: int = 0):
        """The fused kernel where :attr:`kernel_path` is ``fused`` (CPU, float32 or float64), else stepping."""
        if not self.runs_fused(x):
            return super().trial(x, active, state, step=step, tbptt=tbptt)
        return gru_fused.trial(self.cell, x, active, state, tbptt)


class RL2Agent(RecurrentAgent):
    Config = RL2Config
    defaults_key = "rl2"
    config: RL2Config

    def make_core(self, family: TaskFamily, config: RL2Config) -> GRUCore:
        return GRUCore(feature_dim(family), config.hidden, config.kernel)
