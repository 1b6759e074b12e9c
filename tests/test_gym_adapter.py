"""The gymnasium adapter (envs/gym_adapter.py) on a tiny fake simulator: what Meta-World will reuse."""

from __future__ import annotations

import numpy as np
import torch

from metabench.envs.base import TaskBatch
from metabench.envs.gym_adapter import GymnasiumEnv, SimulatorPool


class Counter:
    """A gymnasium-like simulator: obs = [steps so far], reward 1 a step, success from step 3, and it
    terminates at step ``end`` (if set) or truncates itself at 6 (Meta-World-style own cap)."""

    def __init__(self):
        self.t, self.end, self.stepped, self.seed = 0, None, 0, None

    def reset(self, seed=None):
        self.t, self.seed = 0, seed
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        self.stepped += 1
        term = self.end is not None and self.t >= self.end
        return (np.array([self.t], dtype=np.float32), float(action[0]), term, self.t >= 6,
                {"success": float(self.t >= 3)})


class CounterEnv(GymnasiumEnv):
    info_signals = ("success",)


def make(b: int, episode_steps: int, ends=()):
    pool = SimulatorPool(Counter)
    env = CounterEnv(pool, TaskBatch(key=torch.arange(b, dtype=torch.int64)), obs_dim=1, episode_steps=episode_steps)
    for sim, end in zip(env.sims, ends):
        sim.end = end
    return env, pool


def test_steps_only_active_simulators_and_reports_info_signals():
    env, _pool = make(3, episode_steps=10, ends=(2, None, 4))
    env.reset()
    steps = [env.step(torch.ones(3, 1)) for _ in range(8)]
    assert [s.stepped for s in env.sims] == [2, 6, 4]  # finished ones are not stepped again
    assert torch.equal(steps[1].terminated, torch.tensor([True, False, False]))
    assert torch.equal(steps[5].truncated, torch.tensor([False, True, False]))  # the simulator's own cap
    assert torch.equal(steps[6].active, torch.tensor([False, False, False]))
    assert torch.equal(steps[2].info["success"], torch.tensor([0.0, 1.0, 1.0]))
    m = env.episode_metrics()
    assert m["success"].tolist() == [0.0, 1.0, 1.0]
    assert m["episode_return"].tolist() == [2.0, 6.0, 4.0] and m["episode_length"].tolist() == [2.0, 6.0, 4.0]
    assert bool(env.done.all())


def test_truncation_at_episode_steps_and_seeding_per_episode():
    env, _pool = make(2, episode_steps=2)
    env.reset()
    first_seeds = [s.seed for s in env.sims]
    env.step(torch.zeros(2, 1))
    last = env.step(torch.zeros(2, 1))
    assert bool(last.truncated.all()) and not bool(last.terminated.any())
    obs = env.reset()
    assert torch.equal(obs, torch.zeros(2, 1)) and not bool(env.done.any())
    assert [s.seed for s in env.sims] != first_seeds  # episode e of a task: seed fold(key, e)


def test_simulators_go_back_to_the_pool():
    env, pool = make(3, episode_steps=2)
    borrowed = {id(s) for s in env.sims}
    assert not borrowed & {id(s) for s in pool.free}
    del env
    assert borrowed <= {id(s) for s in pool.free}
