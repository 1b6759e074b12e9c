"""The memoryless references (agents/memoryless.py): `oracle` is given the task, `blind` is not; nobody else is."""

from __future__ import annotations

import math

import pytest
import torch

from metabench.agents import AGENTS
from metabench.envs import make_family
from metabench.envs.base import task_generator
from metabench.profiles import PROFILES
from metabench.protocol import run_trials

SMOKE = PROFILES.get("smoke")


def build(name: str, task: str):
    family = make_family(task)
    entry = AGENTS.get(name)
    return entry.build(family, entry.config(family, SMOKE), seed=0), family


def test_task_features_are_the_direction_and_the_frozen_actuator():
    ant = make_family("ant_dir")
    tasks = ant.sample_tasks(5, "test", torch.Generator().manual_seed(0))
    feats = ant.task_features(tasks)
    assert feats.shape == (5, 2) and ant.task_feature_dim == 2
    assert torch.allclose(feats, torch.stack([tasks.theta.cos(), tasks.theta.sin()], 1).float())
    cheetah = make_family("impairment_cheetah")
    n = cheetah.action_space.n
    assert cheetah.task_feature_dim == 2 + n
    intact = cheetah.task_features(cheetah.sample_tasks(4, "test", torch.Generator().manual_seed(0)))
    assert intact[:, 2:].abs().sum() == 0  # meta-training: nothing frozen
    for suffix, variant in cheetah.evaluation_variants().items():
        assert variant.task_feature_dim == cheetah.task_feature_dim, suffix  # the oracle scores every variant
    frozen = cheetah.evaluation_variants()["_frozen_j2"]
    feats = frozen.task_features(frozen.sample_tasks(4, "test", torch.Generator().manual_seed(0)))
    assert torch.equal(feats[:, 2:], torch.nn.functional.one_hot(torch.full((4,), 2), n).float())
    assert {round(abs(float(c)), 6) for c in feats[:, 0]} == {1.0}  # fwd-back: θ in {0, π}
    assert make_family("harlow").task_feature_dim is None
    with pytest.raises(NotImplementedError, match="harlow"):
        make_family("harlow").task_features(None)


@pytest.mark.parametrize("name, sees", [("oracle", True), ("blind", False), ("rl2", False), ("metods", False),
                                        ("maml", False), ("random", False)])
def test_only_the_oracle_is_given_the_task(name, sees):
    """The protocol hands AgentInput.task to an agent that sees the task, and to no meta-learner."""
    agent, family = build(name, "ant_dir")
    assert agent.sees_task is sees
    tasks = family.sample_tasks(3, "test", task_generator(0, "test"))
    seen = []
    tasks.theta = torch.tensor([0.0, math.pi / 2, math.pi], dtype=torch.float64)
    with torch.no_grad():
        run_trials(agent, family, tasks, on_step=lambda inputs, a, s: seen.append(inputs.task))
    if sees:
        want = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        assert all(torch.allclose(t, want, atol=1e-6) for t in seen)
    else:
        assert all(t is None for t in seen)


def test_what_the_policy_reads():
    """oracle: [obs, task features]; blind: [obs]; neither the previous action nor the previous reward."""
    oracle, family = build("oracle", "impairment_ant")
    blind, _ = build("blind", "impairment_ant")
    ro_o = oracle.collect(family, task_generator(0, "train"))
    ro_b = blind.collect(family, task_generator(0, "train"))
    assert ro_o.features.shape[-1] == family.obs_dim + family.task_feature_dim
    assert ro_b.features.shape[-1] == family.obs_dim
    assert oracle.initial_memory(4) is None and blind.initial_memory(4) is None
    assert oracle.config.batch_tasks == AGENTS.get("rl2").config(family, SMOKE).batch_tasks  # the same trainer


def test_the_oracle_needs_a_family_with_task_features():
    family = make_family("harlow")
    entry = AGENTS.get("oracle")
    assert entry.tasks is not None and "harlow" not in entry.tasks
    with pytest.raises(ValueError, match="harlow"):
        entry.build(family, entry.config(family, SMOKE), seed=0)
    blind = AGENTS.get("blind")
    assert blind.build(family, blind.config(family, SMOKE), seed=0).sees_task is False  # blind runs anywhere


@pytest.mark.parametrize("name", ["oracle", "rl2", "metods"])
def test_orthogonal_init_sets_the_core_and_value_head(name):
    import dataclasses

    from torch import nn

    family = make_family("impairment_cheetah")
    entry = AGENTS.get(name)
    plain = entry.config(family, SMOKE)
    agent = entry.build(family, dataclasses.replace(plain, orthogonal_init=True), seed=0)
    linears = [m for m in agent.core.modules() if isinstance(m, nn.Linear)]
    for layer, gain in [(m, 2 ** 0.5) for m in linears] + [(agent.heads.value, 1.0)]:
        w = layer.weight.detach().double()
        small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # orthonormal rows or columns, times gain²
        assert torch.allclose(small, gain ** 2 * torch.eye(small.shape[0], dtype=w.dtype), atol=1e-5)
        assert layer.bias.abs().max() == 0
    default = entry.build(family, plain, seed=0)  # off: nn.Linear's own initialisation, norm ~0.58, not 1
    assert abs(float(default.heads.value.weight.norm()) - 1.0) > 0.1
