"""The shared protocol's rollout contract (benchmark/protocol.py) and fixed task pools (envs/base.py)."""

from __future__ import annotations

import torch

from metabench.agents import AGENTS
from metabench.envs import make_family, task_generator
from metabench.envs.base import TaskBatch, draw_from_pool
from metabench.envs.harlow import Harlow
from metabench.profiles import PROFILES
from metabench.protocol import run_trials


def _random(family):
    entry = AGENTS.get("random")
    return entry.build(family, entry.config(family, PROFILES.get("smoke")), seed=0)


def test_on_step_sees_the_whole_transition():
    """The recorder gets (inputs, action, step) after the env stepped: next obs, done flags, reward; the
    transitions chain (next obs = the next step's obs) and the result keeps terminated/truncated."""
    family = make_family("maze")
    tasks = family.sample_tasks(6, "test", task_generator(0, "test"))
    seen = []
    res = run_trials(_random(family), family, tasks, on_step=lambda i, a, s: seen.append((i, a, s)))
    assert len(seen) == res.rewards.shape[0] == family.max_episode_steps
    for (_i, _a, step), (nxt, _a2, _s2) in zip(seen, seen[1:]):
        assert torch.equal(step.obs, nxt.obs)
    for t, (_i, _a, step) in enumerate(seen):
        assert torch.equal(step.reward, res.rewards[t]) and torch.equal(step.active, res.active[t])
        assert torch.equal(step.terminated, res.terminated[t]) and torch.equal(step.truncated, res.truncated[t])
    assert bool(res.truncated[-1].all()) and not bool(res.terminated.any())  # the maze ends on its step cap


class PooledHarlow(Harlow):
    """Harlow with a fixed pool of 5 training item pairs: a family that defines its training tasks."""

    def task_pool(self, split):
        if split != "train":
            return None
        pool = super().sample_tasks(5, "train", torch.Generator().manual_seed(123))
        pool.task_id = torch.arange(5)
        return pool

    def sample_tasks(self, n, split, generator) -> TaskBatch:
        pool = self.task_pool(split)
        return super().sample_tasks(n, split, generator) if pool is None else draw_from_pool(pool, n, generator)


def test_a_pool_family_draws_its_own_tasks_with_ids():
    family = PooledHarlow()
    pool = family.task_pool("train")
    tasks = family.sample_tasks(64, "train", task_generator(0, "train"))
    assert tasks.task_id.shape == (64,) and set(tasks.task_id.tolist()) == set(range(5))
    assert torch.equal(tasks.items, pool.items[tasks.task_id])
    assert torch.equal(tasks.rewarded, pool.rewarded[tasks.task_id])
    assert len(set(tasks.key.tolist())) == 64  # each draw has its own dynamics randomness
    assert torch.equal(tasks.index(slice(3, 7)).task_id, tasks.task_id[3:7])
    assert family.sample_tasks(4, "test", task_generator(0, "test")).task_id is None
    res = run_trials(_random(family), family, tasks)  # a pool batch runs like any other
    assert res.rewards.shape[1] == 64


def _smoke_agent(name: str, family):
    entry = AGENTS.get(name)
    return entry.build(family, entry.config(family, PROFILES.get("smoke")), seed=3)


def test_evaluation_acts_with_its_own_stream():
    """A held-out evaluation neither reads nor moves the agent's own action stream: it gives the same numbers
    twice, whatever the agent drew before, and leaves the stream where it found it."""
    from metabench.protocol import evaluate

    family = make_family("maze")
    agent = _smoke_agent("random", family)
    before = agent.action_generator.get_state()
    first = evaluate(agent, family, seed=3, n_tasks=16).metrics
    assert torch.equal(agent.action_generator.get_state(), before)
    torch.rand(100, generator=agent.action_generator)  # the agent's stream moves on (as training moves it)
    assert evaluate(agent, family, seed=3, n_tasks=16).metrics == first
    assert evaluate(agent, family, seed=4, n_tasks=16).metrics != first


def test_training_does_not_depend_on_how_often_it_is_evaluated():
    """The same seed meta-trained with 1 and with 3 held-out evaluations along the way ends with the same
    parameters: the curve points are an observation of training, not part of it."""
    from metabench.protocol import CurveMonitor

    family = make_family("maze")
    params = []
    for points in (1, 3):
        agent = _smoke_agent("rl2", family)
        monitor = CurveMonitor(agent, family, 3, 20_000, curve_tasks=8, curve_points=points)
        agent.meta_train(family, 20_000, monitor)
        assert len({row[1] for row in monitor.rows if row[0] == "eval"}) == points - 1  # the last is the run's
        params.append(torch.cat([p.detach().flatten() for p in agent.params]))
    assert torch.equal(params[0], params[1])
