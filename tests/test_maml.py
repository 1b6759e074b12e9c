"""MAML (agents/maml.py): the inner step, the second-order meta-gradient, no leaks between tasks or trials."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import RecordingMonitor
from metabench.agents import AGENTS
from metabench.agents.maml import MAMLAgent, MAMLConfig, segment_advantages
from metabench.envs.base import task_generator
from metabench.envs.harlow import Harlow
from metabench.envs.maze import Maze
from metabench.profiles import PROFILES
from metabench.protocol import run_trials


def tiny_agent(family=None, **overrides) -> MAMLAgent:
    family = family or Maze()
    cfg = dataclasses.replace(MAMLConfig(hidden=5, inner_lr=0.3, adapt_every=4), **overrides)
    agent = MAMLAgent(family, cfg, seed=0)
    agent.policy.double()
    with torch.no_grad():  # a non-trivial last layer (it starts near zero)
        agent.policy.net[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return agent


def segment(b: int, t: int, obs_dim: int, n_actions: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(b, t, obs_dim, generator=g, dtype=torch.float64)
    actions = torch.randint(0, n_actions, (b, t), generator=g)
    rewards = torch.randn(b, t, generator=g, dtype=torch.float64)
    active = torch.ones(b, t, dtype=torch.bool)
    return obs, actions, rewards, active


def test_one_inner_step_is_the_hand_computed_policy_gradient_step():
    agent = tiny_agent()
    b, t = 3, 6
    obs, actions, rewards, active = segment(b, t, agent.family.obs_dim, 4)
    theta = agent.expand_params(b)
    adapted = agent.adapt(theta, obs, actions, rewards, active, create_graph=False)
    adv = segment_advantages(rewards, active, agent.config.gamma)
    net = agent.policy.net
    for i in range(b):
        # The last layer by hand: d/dz of -mean_t log softmax(z_t)[a_t] A_t is -(onehot(a_t) - softmax(z_t)) A_t / T.
        with torch.no_grad():
            h = net[:-1](obs[i])
            probs = torch.softmax(net[-1](h), -1)
            dz = -(torch.nn.functional.one_hot(actions[i], 4) - probs) * adv[i].unsqueeze(1) / t
            grad_w, grad_b = dz.T @ h, dz.sum(0)
        lr = agent.config.inner_lr
        torch.testing.assert_close(adapted["net.4.bias"][i], net[-1].bias - lr * grad_b)
        torch.testing.assert_close(adapted["net.4.weight"][i], net[-1].weight - lr * grad_w)
        # Every parameter, against plain autograd on this task alone.
        logp = torch.distributions.Categorical(logits=agent.policy(obs[i])).log_prob(actions[i])
        grads = torch.autograd.grad(-(logp * adv[i]).mean(), list(agent.policy.parameters()))
        for (name, p), g in zip(agent.policy.named_parameters(), grads):
            torch.testing.assert_close(adapted[name][i], (p - lr * g).detach())


def test_segment_advantages_standardise_per_task_and_vanish_without_reward():
    rewards = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    adv = segment_advantages(rewards, torch.ones(2, 4, dtype=torch.bool), gamma=1.0)
    ret = torch.tensor([3.0, 3.0, 2.0, 2.0])
    torch.testing.assert_close(adv[0], (ret - ret.mean()) / ret.std(unbiased=False))
    assert torch.equal(adv[1], torch.zeros(4))


def meta_objective(agent: MAMLAgent, pre, post, create_graph: bool) -> torch.Tensor:
    """A post-adaptation policy-gradient loss, as a function of θ through one inner step."""
    params = agent.adapt(agent.expand_params(pre[0].shape[0]), *pre, create_graph=create_graph)
    obs, actions, rewards, _ = post
    return -(agent.distribution(params, obs).log_prob(actions) * rewards).mean()


def test_second_order_meta_gradient_matches_finite_differences_and_differs_from_first_order():
    agent = tiny_agent(inner_lr=1.0)
    pre, post = segment(2, 5, agent.family.obs_dim, 4, seed=1), segment(2, 5, agent.family.obs_dim, 4, seed=2)
    params = list(agent.policy.parameters())
    second = torch.autograd.grad(meta_objective(agent, pre, post, True), params)
    first = torch.autograd.grad(meta_objective(agent, pre, post, False), params)
    eps = 1e-6
    checked = 0
    for p, g2, g1 in zip(params, second, first):
        flat, g2f = p.data.view(-1), g2.reshape(-1)
        for j in range(0, flat.numel(), max(1, flat.numel() // 4)):
            old = flat[j].item()
            flat[j] = old + eps
            up = meta_objective(agent, pre, post, False).item()
            flat[j] = old - eps
            down = meta_objective(agent, pre, post, False).item()
            flat[j] = old
            assert abs((up - down) / (2 * eps) - g2f[j].item()) < 1e-6 * max(1.0, abs(g2f[j].item()))
            checked += 1
    assert checked >= 16
    diff = sum(float((g2 - g1).abs().sum()) for g2, g1 in zip(second, first))
    assert diff > 1e-3, "the first-order meta-gradient should drop a non-zero second-order term"


def test_adaptation_is_per_task_in_a_batch():
    agent = tiny_agent()
    obs, actions, rewards, active = segment(4, 6, agent.family.obs_dim, 4, seed=3)
    together = agent.adapt(agent.expand_params(4), obs, actions, rewards, active, create_graph=False)
    for i in range(4):
        alone = agent.adapt(agent.expand_params(1), obs[i:i + 1], actions[i:i + 1], rewards[i:i + 1],
                            active[i:i + 1], create_graph=False)
        for name in together:
            torch.testing.assert_close(together[name][i], alone[name][0])


@pytest.mark.parametrize("family", [Maze(), Harlow()], ids=["maze", "harlow"])
def test_acting_adapts_mid_trial_like_the_training_replay_and_leaks_nothing(family):
    cfg = AGENTS.get("maml").config(family, PROFILES.get("smoke"))
    agent = MAMLAgent(family, cfg, seed=0)
    with torch.no_grad():
        agent.policy.net[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    theta = {k: v.detach().clone() for k, v in agent.policy.named_parameters()}
    tasks = family.sample_tasks(16, "train", task_generator(0, "train"))
    seen: list = []
    act = agent.act

    def spying_act(inputs, memory):
        action, memory = act(inputs, memory)
        seen.append({k: v.clone() for k, v in memory.params.items()})
        return action, memory

    agent.act = spying_act
    obs, actions = [], []
    with torch.no_grad():
        res = run_trials(agent, family, tasks, on_step=lambda i, a, _s: (obs.append(i.obs), actions.append(a)))
    k = cfg.adapt_every
    assert len(seen) > k, "the trial must be longer than one segment for this test"
    # Before the first adaptation every task acts with θ; after it, the tasks' parameters differ.
    for name, p in theta.items():
        assert torch.equal(seen[k - 1][name], p.expand_as(seen[k - 1][name]))
    bias = seen[k]["net.4.bias"]
    changed = ~torch.isclose(bias, theta["net.4.bias"]).all(1)
    assert changed.any() and len({tuple(row.tolist()) for row in bias[changed]}) == int(changed.sum())
    # The adaptation done while acting is the one the trainer replays.
    obs_t, act_t = torch.stack(obs[:k], 1), torch.stack(actions[:k], 1)
    replayed = agent.adapt(agent.expand_params(16), obs_t, act_t, res.rewards[:k].T, res.active[:k].T,
                           create_graph=False)
    for name in theta:
        expect = torch.where(res.active[k].view(-1, *[1] * theta[name].dim()), replayed[name].detach(),
                             seen[k - 1][name])
        torch.testing.assert_close(seen[k][name], expect)
    # Nothing leaks into θ or into the next trial.
    for name, p in agent.policy.named_parameters():
        assert torch.equal(p, theta[name])
    fresh = agent.initial_memory(16)
    for name, p in theta.items():
        assert torch.equal(fresh.params[name], p.expand_as(fresh.params[name]))


@pytest.mark.parametrize("name", ["maml", "maml_fo"])
def test_meta_training_updates_theta_and_reports_finite_scalars(name):
    family = Maze()
    cfg = dataclasses.replace(AGENTS.get(name).config(family, PROFILES.get("smoke")), batch_tasks=8)
    agent = AGENTS.get(name).build(family, cfg, seed=0)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    monitor = RecordingMonitor()
    used = agent.meta_train(family, 2_000, monitor)
    assert used == 1_600 and len(monitor.log) == 2
    assert all(math.isfinite(v) for _, _, scalars in monitor.log for v in scalars.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.policy.parameters()))
    assert cfg.first_order == (name == "maml_fo")


def test_a_non_finite_inner_step_fails_the_run_with_one_clear_line():
    """An inner step that leaves the finite numbers (here forced by an infinite inner step size) stops training
    with TrainingDiverged naming MAML's adapted parameters, not with torch.distributions' dump of a NaN tensor in
    the next segment (as two Ant-dir runs failed)."""
    from metabench.agents.base import TrainingDiverged
    from metabench.envs import make_family
    from metabench.profiles import PROFILES

    fam = make_family("maze")
    entry = AGENTS.get("maml")
    config = dataclasses.replace(entry.config(fam, PROFILES.get("smoke")), inner_lr=float("inf"))
    agent = entry.build(fam, config, 0)
    b, t = 2, 5
    obs = torch.randn(b, t, fam.obs_dim, generator=torch.Generator().manual_seed(0))
    actions = torch.tensor([[0, 1, 2, 3, 0]] * b)
    rewards = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0]] * b)
    with pytest.raises(TrainingDiverged, match="non-finite adapted parameters"):
        agent.adapt(agent.expand_params(b), obs, actions, rewards, torch.ones(b, t, dtype=torch.bool),
                    create_graph=False)
