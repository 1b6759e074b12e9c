"""PEARL (agents/pearl.py): the posterior it acts on is the product of Gaussians of the trial's own transitions,
its buffers, its update, and what a saved agent can and cannot do."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from metabench.agents import AGENTS
from metabench.agents.base import AgentInput
from metabench.agents.pearl import PEARLConfig, RingBuffers, product_of_gaussians
from metabench.envs import make_family, task_generator
from metabench.profiles import PROFILES
from metabench.protocol import run_trials

from conftest import RecordingMonitor

SMOKE = PROFILES.get("smoke")


def build(task: str, seed: int = 0, **over):
    family = make_family(task)
    entry = AGENTS.get("pearl")
    return entry.build(family, dataclasses.replace(entry.config(family, SMOKE), **over), seed), family


def test_product_of_gaussians_is_the_closed_form():
    mu = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    var = torch.tensor([[1.0, 4.0], [1.0, 1.0]])
    m, v = product_of_gaussians(mu, var)
    assert torch.allclose(v, torch.tensor([0.5, 0.8]))
    assert torch.allclose(m, torch.tensor([2.0, 0.8 * (-2.0 / 4.0)]))
    m1, v1 = product_of_gaussians(mu, var, mask=torch.tensor([1.0, 0.0]))
    assert torch.allclose(m1, mu[0]) and torch.allclose(v1, var[0])


@pytest.mark.parametrize("task", ["maze", "harlow"])
def test_the_posterior_acted_on_is_the_trials_own_transitions_with_the_prior(task):
    """After a trial, the memory's posterior is N(0, I) times the factors of exactly the (s, a, r) the trial
    produced, in order (not a replay buffer's): recomputed here from the recorded steps."""
    agent, family = build(task)
    tasks = family.sample_tasks(3, "test", task_generator(5, "test"))
    seen: list[tuple[AgentInput, torch.Tensor, torch.Tensor]] = []
    memories = []
    act = agent.act

    def spy(inputs, memory):
        action, new = act(inputs, memory)
        memories.append(new)
        return action, new

    agent.act = spy
    with torch.no_grad():
        run_trials(agent, family, tasks, on_step=lambda i, a, s: seen.append((i, a, s.reward)))
    # transitions completed before the last step, with the environment active when they were taken
    obs = torch.stack([i.obs for i, _, _ in seen[:-1]], 1)
    actions = torch.stack([a for _, a, _ in seen[:-1]], 1)
    rewards = torch.stack([r for _, _, r in seen[:-1]], 1)
    active = torch.stack([i.active for i, _, _ in seen[1:]], 1)  # added at the next step, if that one is active
    with torch.no_grad():
        mu_i, var_i = agent.factors(agent.context_features(obs, actions, rewards))
    mu_i = torch.cat([torch.zeros(3, 1, agent.config.latent), mu_i], 1)  # the prior as a factor
    var_i = torch.cat([torch.ones(3, 1, agent.config.latent), var_i], 1)
    mask = torch.cat([torch.ones(3, 1), active.float()], 1)
    mu, var = product_of_gaussians(mu_i, var_i, mask)
    last = memories[-1]
    assert torch.allclose(1.0 / last.precision, var, rtol=1e-4, atol=1e-6)
    assert torch.allclose(last.weighted_mean / last.precision, mu, rtol=1e-4, atol=1e-5)


def test_z_is_drawn_at_episode_starts_only_when_posterior_every_is_zero():
    agent, family = build("maze", posterior_every=0)
    tasks = family.sample_tasks(2, "test", task_generator(1, "test"))
    zs = []
    act = agent.act
    agent.act = lambda i, m: (lambda out: (zs.append(out[1].z.clone()), out)[1])(act(i, m))
    with torch.no_grad():
        run_trials(agent, family, tasks)
    assert all(torch.equal(z, zs[0]) for z in zs)
    agent2, _ = build("maze", posterior_every=1)
    zs.clear()
    act = agent2.act
    agent2.act = lambda i, m: (lambda out: (zs.append(out[1].z.clone()), out)[1])(act(i, m))
    with torch.no_grad():
        run_trials(agent2, family, tasks)
    assert not torch.equal(zs[0], zs[5])


def test_ring_buffers_overwrite_the_oldest_and_sample_only_what_a_task_holds():
    buf = RingBuffers(tasks=2, capacity=4, obs_dim=1, action_shape=(), discrete=True)
    x = torch.arange(6.0).unsqueeze(1)
    buf.add(0, x, torch.arange(6), torch.arange(6.0), x + 100, torch.zeros(6))
    assert int(buf.size[0]) == 4 and sorted(buf.obs[0, :, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    buf.add(1, x[:1], torch.zeros(1, dtype=torch.int64), torch.zeros(1), x[:1], torch.zeros(1))
    obs, *_ = buf.sample(torch.tensor([1, 1]), 50, torch.Generator().manual_seed(0))
    assert obs.shape == (2, 50, 1) and bool((obs == 0).all())
    buf.clear(0)
    assert int(buf.size[0]) == 0


@pytest.mark.parametrize("task", ["maze", "harlow"])
def test_meta_training_updates_every_network_and_stays_finite(task):
    agent, family = build(task)
    before = {k: v.clone() for k, v in agent.state_dict()["encoder"].items()}
    actor = {k: v.clone() for k, v in agent.state_dict()["actor"].items()}
    monitor = RecordingMonitor()
    used = agent.meta_train(family, 4_000, monitor)
    assert 0 < used <= 4_000
    after = agent.state_dict()
    assert any(not torch.equal(before[k], after["encoder"][k]) for k in before)  # the critic loss trains it
    assert any(not torch.equal(actor[k], after["actor"][k]) for k in actor)
    last = monitor.log[-1][2]
    assert all(torch.isfinite(torch.tensor(v)) for v in last.values())
    assert {"critic_loss", "actor_loss", "kl", "alpha", "train_return"} <= set(last)


def test_a_loaded_agent_acts_as_saved_but_refuses_to_meta_train():
    agent, family = build("maze")
    agent.meta_train(family, 2_000, RecordingMonitor())
    clone, _ = build("maze", seed=3)
    clone.load_state_dict(agent.state_dict())
    tasks = family.sample_tasks(4, "test", task_generator(2, "test"))
    with torch.no_grad():
        a = run_trials(agent, family, tasks).rewards
        b = run_trials(clone, family, tasks).rewards
    assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="no replay buffers"):
        clone.meta_train(family, 2_000, RecordingMonitor())


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        PEARLConfig(latent=0)
    with pytest.raises(ValueError):
        PEARLConfig(updates_per_env_step=0)
    with pytest.raises(ValueError):
        PEARLConfig(posterior_every=-1)


def test_target_entropy_follows_the_action_space():
    agent, _ = build("maze")
    assert agent.target_entropy == pytest.approx(agent.config.target_entropy_scale * torch.log(torch.tensor(4.0)))


def test_soft_targets_on_a_hand_worked_example():
    from metabench.agents.pearl import discrete_soft_value, td_target

    # two actions, π = (0.5, 0.5): V = 0.5 (min(1, 2) + α log 2) + 0.5 (min(3, 0) + α log 2) = 0.5 + α log 2
    logits = torch.zeros(1, 2)
    v = discrete_soft_value(logits, torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 0.0]]), alpha=0.2)
    assert v.item() == pytest.approx(0.5 + 0.2 * math.log(2))
    # a terminal step does not bootstrap; a truncated one (terminal 0) does
    y = td_target(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]), torch.tensor([10.0, 10.0]), 0.9, 5.0)
    assert y.tolist() == pytest.approx([5.0, 5.0 + 9.0])


def test_the_tanh_gaussian_log_probability_is_the_change_of_variables():
    """log π(a) = log N(u; μ, σ) - Σ log(1 - tanh(u)²), computed stably; and actions stay in the bounds."""
    agent, family = build("impairment_cheetah")
    obs, z = torch.randn(5, family.obs_dim), torch.randn(5, agent.config.latent)
    g = torch.Generator().manual_seed(0)
    a, logp = agent.sample(obs, z, g)
    mean, log_std = agent.policy(obs, z)
    u = mean + log_std.exp() * torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)
    assert torch.allclose(a, torch.tanh(u)) and torch.allclose(logp, ref, atol=1e-4)
    assert bool((a.abs() <= 1).all())


def test_the_posterior_narrows_as_the_trials_context_grows():
    """Every transition of the trial is one more factor of the product: the variance of q(z | c) falls at every
    active step (whatever the encoder has learned), and is the prior's at task start."""
    agent, family = build("maze")
    tasks = family.sample_tasks(3, "test", task_generator(4, "test"))
    variances = []
    act = agent.act
    agent.act = lambda i, m: (lambda out: (variances.append(1.0 / out[1].precision), out)[1])(act(i, m))
    with torch.no_grad():
        run_trials(agent, family, tasks)
    assert torch.equal(variances[0], torch.ones_like(variances[0]))
    v = torch.stack(variances)  # [T, B, L]
    assert bool((v[1:] < v[:-1]).all())


@pytest.mark.parametrize("budget, first_round", [(6_000, 6), (1_500, 4)])
def test_a_family_with_a_fixed_pool_gets_a_slot_per_pool_task(monkeypatch, budget, first_round):
    """Meta-World's case: pool tasks get a trial before any update (all of them where a tenth of the budget
    affords it, else a random meta-batch of them: ML10's 500 goals on quick), each pool task keeps its own replay
    buffer (growing) and its context buffer (its latest trials)."""
    agent, family = build("maze")
    assert agent.config.meta_batch == 4
    pool = family.sample_tasks(6, "train", task_generator(9, "train"))
    pool.task_id = torch.arange(6)
    monkeypatch.setattr(family, "task_pool", lambda split: pool if split == "train" else None)
    seen: list[torch.Tensor] = []

    class FirstRound(RecordingMonitor):
        def update(self, env_steps, episodes, scalars):
            seen.append(agent.replay.size.clone())
            super().update(env_steps, episodes, scalars)

    agent.meta_train(family, budget, FirstRound())
    assert agent.replay is not agent.context and len(agent.replay.size) == 6
    assert int(agent.replay.size.sum()) == budget - budget % 100  # every trial of 100 steps kept
    assert sorted(seen[0].tolist()) == [0] * (6 - first_round) + [100] * first_round  # before any update
    assert bool((agent.context.size <= agent.context.capacity).all())


def test_a_stream_gets_a_slot_per_trial():
    agent, family = build("maze", train_tasks=5)
    agent.meta_train(family, 1_500, RecordingMonitor())
    assert agent.replay is agent.context and agent.replay.capacity == family.max_episode_steps
    assert agent.replay.size.tolist() == [100] * 5


def test_ring_buffers_checkpoint_only_what_they_hold():
    """A checkpoint keeps each task's filled rows (a pool of Meta-World goals sized for a run's end would
    otherwise save gigabytes of zeros) and restores the buffers exactly, wrapped tasks included."""
    import io

    buf = RingBuffers(tasks=300, capacity=2_000, obs_dim=39, action_shape=(4,), discrete=False)
    g = torch.Generator().manual_seed(0)
    for task, n in ((0, 5), (7, 2_500), (299, 1_999)):  # task 7 wraps around
        buf.add(task, torch.randn(n, 39, generator=g), torch.randn(n, 4, generator=g), torch.randn(n, generator=g),
                torch.randn(n, 39, generator=g), torch.zeros(n))
    saved = io.BytesIO()
    torch.save(buf, saved)
    held = (5 + 2_000 + 1_999) * (39 + 4 + 1 + 39 + 1) * 4
    assert held < saved.tell() < 1.1 * held + 100_000  # the full buffers are 300 x 2,000 x 84 x 4 B = 200 MB
    saved.seek(0)
    back = torch.load(saved, weights_only=False)
    for name in RingBuffers.FIELDS + ("size", "ptr"):
        assert torch.equal(getattr(back, name), getattr(buf, name)), name
    assert back.capacity == buf.capacity
    back.add(7, torch.ones(1, 39), torch.ones(1, 4), torch.ones(1), torch.ones(1, 39), torch.zeros(1))
    assert int(back.ptr[7]) == int(buf.ptr[7]) + 1 and bool((back.obs[7, int(buf.ptr[7])] == 1).all())
