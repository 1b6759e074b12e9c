"""``lstm``: RL² with an LSTM cell as its memory, built on metabench's recurrent agent and shared PPO trainer.

Everything but the core is metabench's: the input features, the policy and value heads, the trainer, and the
trainer settings of RL² on every task (``defaults_key = "rl2"``: the defaults table's RL² rows apply).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metabench.agents.base import feature_dim
from metabench.agents.recurrent import MemoryCore, RecurrentAgent, RecurrentConfig
from metabench.envs.base import TaskFamily


@dataclass(frozen=True)
class LSTMConfig(RecurrentConfig):
    hidden: int = 128
    """LSTM hidden size (the cell state has the same size)."""


class LSTMCore(MemoryCore):
    """An ``LSTMCell``; its state is ``[h, c]`` concatenated, ``[B, 2 * hidden]``, and it outputs ``h``."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.hidden_dim = hidden
        self.cell = nn.LSTMCell(in_dim, hidden)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 2 * self.hidden_dim)

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        h, c = self.cell(x, tuple(state.chunk(2, dim=-1)))
        return h, torch.cat([h, c], dim=-1)


class LSTMAgent(RecurrentAgent):
    Config = LSTMConfig
    config: LSTMConfig
    defaults_key = "rl2"

    def make_core(self, family: TaskFamily, config: LSTMConfig) -> LSTMCore:
        return LSTMCore(feature_dim(family), config.hidden)
