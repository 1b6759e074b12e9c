"""``bandit``: the two-armed Bernoulli bandit of RL² (Duan et al. 2016) as a metabench task family.

A task is a pair of arm probabilities ``p ~ U(0, 1)^2``; a trial is one episode of ``pulls`` pulls. The
observation is a constant: all an agent learns of its task comes from the previous action and reward that
metabench's agents see at every step. Train and test tasks come from the same distribution, with independent
streams. ``regret`` is the expected reward lost against always pulling the better arm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metabench.envs import rng
from metabench.envs.base import ActionSpace, BatchedEnv, FamilyConfig, MetricSpec, Step, TaskBatch, TaskFamily


@dataclass(frozen=True)
class BanditConfig(FamilyConfig):
    pulls: int = 100
    """Pulls per trial."""


@dataclass
class BanditTasks(TaskBatch):
    p: torch.Tensor
    """float ``[n, 2]``: each arm's probability of paying 1."""


class BanditEnv(BatchedEnv):
    def __init__(self, family: "Bandit", tasks: BanditTasks):
        self.tasks, self.pulls = tasks, family.config.pulls
        self.num_envs = len(tasks)
        self.t = 0
        self.ret = torch.zeros(self.num_envs)
        self.expected = torch.zeros(self.num_envs)

    @property
    def done(self) -> torch.Tensor:
        return torch.full((self.num_envs,), self.t >= self.pulls)

    def reset(self) -> torch.Tensor:
        self.t = 0
        self.ret.zero_()
        self.expected.zero_()
        return torch.ones(self.num_envs, 1)

    def step(self, action: torch.Tensor) -> Step:
        active = ~self.done
        arm = action.to(torch.int64).clamp(0, 1)
        p = self.tasks.p.gather(1, arm.unsqueeze(1)).squeeze(1)
        paid = (rng.uniform(self.tasks.key, self.t) < p).to(torch.float32)
        reward = torch.where(active, paid, 0.0)
        self.ret += reward
        self.expected += torch.where(active, p, 0.0)
        self.t += 1
        ended = active & self.done
        return Step(torch.ones(self.num_envs, 1), reward, torch.zeros_like(ended), ended, active)

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        best = self.tasks.p.max(1).values * self.pulls
        return {"episode_return": self.ret.clone(), "regret": best - self.expected}


class Bandit(TaskFamily):
    """Two-armed Bernoulli bandits, one 100-pull episode per trial."""

    name = "bandit"
    Config = BanditConfig
    config: BanditConfig
    primary_metric = "episode_return"
    metrics = (
        MetricSpec("episode_return", True, "arms paid out in the trial"),
        MetricSpec("regret", False, "expected pay-out lost against always pulling the better arm"),
    )

    @property
    def obs_dim(self) -> int:
        return 1

    @property
    def action_space(self) -> ActionSpace:
        return ActionSpace("discrete", 2)

    @property
    def max_episode_steps(self) -> int:
        return self.config.pulls

    def sample_tasks(self, n: int, split, generator: torch.Generator) -> BanditTasks:
        return BanditTasks(key=rng.new_keys(n, generator), p=torch.rand(n, 2, generator=generator))

    def make_env(self, tasks: BanditTasks) -> BanditEnv:
        return BanditEnv(self, tasks)
