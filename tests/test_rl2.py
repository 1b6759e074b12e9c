"""RL² (SPEC.md, "Baselines"): the GRU memory is reset at task start only, and kept while an env is done.

Checked through the shared protocol (:func:`metabench.protocol.run_trials`) on a
Harlow variant with two episodes per trial, by spying on the agent's
``initial_memory`` and ``act`` and on the environment's ``reset``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from metabench.agents.base import AgentInput
from metabench.agents.metods import MetODSAgent, MetODSConfig
from metabench.agents.rl2 import GRUCore, RL2Agent, RL2Config
from metabench.envs import task_generator
from metabench.envs.harlow import Harlow, HarlowConfig
from metabench.protocol import run_trials


class TwoEpisodeHarlow(Harlow):
    """Harlow with two episodes per trial (the real one has one)."""

    episodes_per_trial = 2


# A short Harlow whose episodes end at different steps under a random-ish policy: 3 positions, one
# presentation (fixate, choose, fixate: 3 steps at best), truncated at 10 steps.
SHORT = HarlowConfig(line_length=3, presentations=1, max_steps=10)


@dataclass
class Call:
    inputs: AgentInput
    mem_in: torch.Tensor
    mem_out: torch.Tensor
    action: torch.Tensor


def spy(agent, family):
    """Record every ``act`` call, ``initial_memory`` call and env reset (as the index of the next act call)."""
    calls: list[Call] = []
    initial: list[int] = []
    resets: list[int] = []
    act, initial_memory, make_env = agent.act, agent.initial_memory, family.make_env

    def spy_act(inputs, memory):
        action, new = act(inputs, memory)
        calls.append(Call(inputs, memory.detach().clone(), new.detach().clone(), action.clone()))
        return action, new

    def spy_initial_memory(b):
        initial.append(b)
        return initial_memory(b)

    def spy_make_env(tasks):
        env = make_env(tasks)
        reset = env.reset

        def spy_reset():
            resets.append(len(calls))
            return reset()

        env.reset = spy_reset
        return env

    agent.act, agent.initial_memory, family.make_env = spy_act, spy_initial_memory, spy_make_env
    return calls, initial, resets


def make_agent(name: str, family):
    if name == "rl2":
        return RL2Agent(family, RL2Config(hidden=16, batch_tasks=8), seed=0)
    return MetODSAgent(family, MetODSConfig(N=8, S=2, batch_tasks=8), seed=0)


def test_gru_core_state_is_the_output():
    core = GRUCore(5, 7)
    h0 = core.initial_state(3)
    assert h0.shape == (3, 7) and (h0 == 0).all()
    h, state = core(torch.randn(3, 5), h0)
    assert h is state and h.shape == (3, 7)


def test_memory_reset_at_task_start_only():
    family = TwoEpisodeHarlow(SHORT)
    agent = make_agent("rl2", family)
    calls, initial, resets = spy(agent, family)
    b = 16
    gen = task_generator(0, "test")
    with torch.no_grad():
        run_trials(agent, family, family.sample_tasks(b, "test", gen))
        assert initial == [b]  # once for the whole batch of trials, not per episode
        n_first = len(calls)
        run_trials(agent, family, family.sample_tasks(b, "test", gen))
    assert initial == [b, b]
    calls = calls[:n_first]
    resets = resets[:2]
    assert resets[0] == 0 and 0 < resets[1] < len(calls)

    # Flags: episode_start exactly at each episode's first step, task_start at the very first step only.
    for k, c in enumerate(calls):
        assert c.inputs.episode_start.dtype == torch.bool and c.inputs.task_start.dtype == torch.bool
        assert bool(c.inputs.episode_start.all()) == (k in resets)
        assert not bool(c.inputs.episode_start.any()) or k in resets
        assert bool(c.inputs.task_start.all()) == (k == 0)
        assert not bool(c.inputs.task_start.any()) or k == 0

    # The trial starts from the GRU's zero state, then the memory is passed along unchanged between calls.
    assert (calls[0].mem_in == 0).all()
    for k in range(1, len(calls)):
        assert torch.equal(calls[k].mem_in, calls[k - 1].mem_out), k
    # In particular at the first step of episode 2: the state from the last step of episode 1, not zeros.
    first2 = calls[resets[1]]
    assert torch.equal(first2.mem_in, calls[resets[1] - 1].mem_out)
    assert (first2.mem_in.abs().sum(1) > 0).all()
    # ... and act does not reset it either: its output is the GRU step from that state, not from zeros.
    with torch.no_grad():
        x = first2.inputs.features(family.action_space)
        from_carried = agent.core(x, first2.mem_in)[1]
        from_zeros = agent.core(x, torch.zeros_like(first2.mem_in))[1]
    torch.testing.assert_close(first2.mem_out, from_carried)
    assert not torch.allclose(first2.mem_out, from_zeros)
    # Every env is active again at the start of episode 2.
    assert first2.inputs.active.all()


@pytest.mark.parametrize("name", ["rl2", "metods"])
def test_inactive_envs_keep_their_memory(name):
    family = TwoEpisodeHarlow(SHORT)
    agent = make_agent(name, family)
    calls, _, _ = spy(agent, family)
    with torch.no_grad():
        res = run_trials(agent, family, family.sample_tasks(32, "test", task_generator(1, "test")))
    n_inactive = 0
    for k, c in enumerate(calls):
        active = c.inputs.active
        assert torch.equal(active, res.active[k])
        for e in range(len(active)):
            if active[e]:
                assert not torch.equal(c.mem_out[e], c.mem_in[e]), (k, e)  # an active env's memory moves
            else:
                assert torch.equal(c.mem_out[e], c.mem_in[e]), (k, e)
                n_inactive += 1
    # Episodes ended at different steps: some steps had done envs beside running ones.
    assert n_inactive > 0
    assert any(c.inputs.active.any() and not c.inputs.active.all() for c in calls)
