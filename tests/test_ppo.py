"""The shared actor-critic trainer (MetODS and RL²): GAE, A2C mode, determinism, rollout accounting."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from metabench.agents import AGENTS
from metabench.agents.ppo import Rollout, gae
from metabench.envs import task_generator
from metabench.envs.harlow import Harlow, HarlowConfig
from metabench.profiles import PROFILES
from conftest import RecordingMonitor as Monitor


# GAE -------------------------------------------------------------------------------------------

def reference_gae(rewards, values, lengths, gamma, lam):
    """Per environment, plain Python: the episode is steps 0..len-1; nothing is bootstrapped after it."""
    t_max, b = rewards.shape
    adv = [[0.0] * b for _ in range(t_max)]
    ret = [[0.0] * b for _ in range(t_max)]
    for e in range(b):
        n = lengths[e]
        running = 0.0
        for t in reversed(range(n)):
            next_value = float(values[t + 1, e]) if t + 1 < n else 0.0
            delta = float(rewards[t, e]) + gamma * next_value - float(values[t, e])
            running = delta + gamma * lam * running
            adv[t][e] = running
            ret[t][e] = running + float(values[t, e])
    return torch.tensor(adv, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)


def test_gae_hand_computed():
    # T = 3, B = 1, gamma = 0.5, lambda = 1; rewards (1, 2, 4), values (0.5, 1, 2), all active.
    #   delta_2 = 4 + 0       - 2   = 2     A_2 = 2
    #   delta_1 = 2 + 0.5 * 2 - 1   = 2     A_1 = 2 + 0.5 * 2 = 3
    #   delta_0 = 1 + 0.5 * 1 - 0.5 = 1     A_0 = 1 + 0.5 * 3 = 2.5
    # Returns A + V = (3, 4, 4): with lambda = 1, the discounted Monte-Carlo returns
    #   G_2 = 4, G_1 = 2 + 0.5 * 4 = 4, G_0 = 1 + 0.5 * 4 = 3.
    rewards = torch.tensor([[1.0], [2.0], [4.0]])
    values = torch.tensor([[0.5], [1.0], [2.0]])
    active = torch.ones(3, 1, dtype=torch.bool)
    adv, ret = gae(rewards, values, active, gamma=0.5, lam=1.0)
    assert adv.flatten().tolist() == [2.5, 3.0, 2.0]
    assert ret.flatten().tolist() == [3.0, 4.0, 4.0]
    # lambda = 0: one-step TD errors.
    adv0, _ = gae(rewards, values, active, gamma=0.5, lam=0.0)
    assert adv0.flatten().tolist() == [1.0, 2.0, 2.0]
    # The same column ending after step 1 (step 2 inactive): A_1 = 2 - 1 = 1, A_0 = 1 + 0.5 * 1 = 1.5.
    active2 = torch.tensor([[True], [True], [False]])
    adv2, ret2 = gae(rewards, values, active2, gamma=0.5, lam=1.0)
    assert adv2.flatten().tolist() == [1.5, 1.0, 0.0]
    assert ret2[:2].flatten().tolist() == [2.0, 2.0]


@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_per_environment_loop(gamma, lam):
    gen = torch.Generator().manual_seed(0)
    t_max, b = 40, 9
    rewards = torch.randn(t_max, b, generator=gen, dtype=torch.float64)
    values = torch.randn(t_max, b, generator=gen, dtype=torch.float64)
    lengths = [40, 1, 17, 39, 5, 23, 40, 2, 31]  # ragged episode ends, including the full length and 1 step
    active = torch.zeros(t_max, b, dtype=torch.bool)
    for e, n in enumerate(lengths):
        active[:n, e] = True
    rewards = torch.where(active, rewards, 0.0)  # what the environments give after the end
    adv, ret = gae(rewards, values, active, gamma, lam)
    adv_ref, ret_ref = reference_gae(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(adv, adv_ref, rtol=1e-12, atol=1e-12)
    assert (adv[~active] == 0).all()
    # Returns are used only on active steps (the loss masks the rest).
    torch.testing.assert_close(ret[active], ret_ref[active], rtol=1e-12, atol=1e-12)
    # Values beyond an episode's end never leak into it.
    values2 = torch.where(active, values, 1e6)
    adv2, ret2 = gae(rewards, values2, active, gamma, lam)
    torch.testing.assert_close(adv2, adv_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret2[active], ret_ref[active], rtol=1e-12, atol=1e-12)


def test_gae_crosses_a_gap_between_episodes_of_a_trial():
    """With K > 1 episodes per trial, an env whose episode 1 ends early is inactive until episode 2 starts.

    The docstrings say "a step is followed by the next active one or by the end" and "episode
    boundaries inside a trial are not cut", so the step before the gap should see episode 2's value.
    """
    rewards = torch.tensor([[1.0], [0.0], [4.0]])
    values = torch.tensor([[0.5], [9.0], [2.0]])
    active = torch.tensor([[True], [False], [True]])
    adv, _ = gae(rewards, values, active, gamma=0.5, lam=1.0)
    # Step 0 is followed by step 2: A_2 = 4 - 2 = 2; delta_0 = 1 + 0.5 * 2 - 0.5 = 1.5, A_0 = 1.5 + 0.5 * 2 = 2.5.
    assert adv.flatten().tolist() == [2.5, 0.0, 2.0]


# The trainer ------------------------------------------------------------------------------------

def short_harlow(**overrides) -> Harlow:
    """Harlow with short episodes, so that trainer tests take a fraction of a second."""
    return Harlow(HarlowConfig(**{"max_steps": 20, **overrides}))


def smoke_config(name: str, family, **overrides):
    cfg = AGENTS.get(name).config(family, PROFILES.get("smoke"))
    assert not cfg.compile
    if name == "rl2":
        overrides = {"hidden": 32, **overrides}
    else:
        overrides = {"N": 12, **overrides}
    return dataclasses.replace(cfg, **overrides)


def flat_params(agent):
    return [p.detach().clone() for p in agent.params]


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("name", ["rl2", "metods"])
def test_a2c_is_the_vanilla_policy_gradient(name, normalize):
    """ppo_epochs = minibatches = 1: the ratio is 1 and the gradient is that of -logp * A (+ value, entropy)."""
    family = short_harlow(line_length=5, presentations=2)
    cfg = smoke_config(name, family, batch_tasks=6, ppo_epochs=1, minibatches=1, max_grad_norm=1e9,
                       normalize_advantages=normalize, reward_scale=0.5, gamma=0.9, gae_lambda=0.8)
    agent = AGENTS.get(name).build(family, cfg, seed=0)
    ro = agent.collect(family, task_generator(0, "train"))
    assert not ro.active.all()  # some trials ended early: the masks matter

    # The reference: one replay, GAE from its values, the plain policy-gradient loss.
    logp, ent, values, _ = agent.replay(ro)
    lengths = ro.active.sum(0).tolist()
    assert all(bool(ro.active[:n, e].all()) for e, n in enumerate(lengths))  # K = 1: active is a prefix
    adv, ret = reference_gae((ro.rewards * cfg.reward_scale).double(), values.detach().double(), lengths,
                             cfg.gamma, cfg.gae_lambda)
    adv, ret = adv.float(), ret.float()
    m = ro.active.float()
    n = m.sum()
    if normalize:
        mu = (adv * m).sum() / n
        sd = (((adv - mu) ** 2 * m).sum() / n).sqrt()
        adv = (adv - mu) / (sd + 1e-8)
    policy_loss = -(logp * adv * m).sum() / n
    value_loss = (((values - ret) ** 2) * m).sum() / n
    entropy = (ent * m).sum() / n
    loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
    agent.optimizer.zero_grad()
    loss.backward()
    ref_grads = [p.grad.clone() for p in agent.params if p.grad is not None]
    agent.optimizer.zero_grad()

    out = agent.update(ro)
    grads = [p.grad.clone() for p in agent.params if p.grad is not None]
    assert len(grads) == len(ref_grads) > 0
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6 * max(1.0, float(r.abs().max())))
    # The ratio is exactly 1: the reported surrogate is -mean(A) over active steps.
    assert out["policy_loss"] == pytest.approx(float(-(adv * m).sum() / n), abs=1e-5)
    assert out["value_loss"] == pytest.approx(float(value_loss.detach()), rel=1e-5)
    assert out["entropy"] == pytest.approx(float(entropy.detach()), rel=1e-5)
    assert out["train_return"] == pytest.approx(float(ro.rewards.sum(0).mean()), rel=1e-6)


@pytest.mark.parametrize("name", ["rl2", "metods"])
def test_same_seed_same_parameters(name):
    family = short_harlow(max_steps=25)
    # PPO mode (2 epochs x 2 minibatches) so that the minibatch shuffles are part of what must repeat.
    cfg = smoke_config(name, family, batch_tasks=8, ppo_epochs=2, minibatches=2)
    runs = []
    for _ in range(2):
        agent = AGENTS.get(name).build(family, cfg, seed=3)
        init = flat_params(agent)
        monitor = Monitor()
        steps = agent.meta_train(family, 400, monitor)  # 200 env steps an update: two updates
        runs.append((init, flat_params(agent), steps, monitor.log))
    (init_a, end_a, steps_a, log_a), (init_b, end_b, steps_b, log_b) = runs
    assert steps_a == steps_b > 0 and len(log_a) >= 2
    assert log_a == log_b
    assert all(torch.equal(a, b) for a, b in zip(init_a, init_b))
    assert len(end_a) == len(end_b) and all(torch.equal(a, b) for a, b in zip(end_a, end_b))
    assert not all(torch.equal(a, b) for a, b in zip(init_a, end_a))  # training moved the parameters
    # Another seed starts elsewhere.
    other = AGENTS.get(name).build(family, cfg, seed=4)
    assert not all(torch.equal(a, b) for a, b in zip(init_a, flat_params(other)))


def test_collect_counts_the_env_steps_meta_train_reports():
    family = short_harlow(line_length=3, presentations=1, max_steps=10, curriculum=None)  # episodes of 3-10 steps
    name = "rl2"
    cfg = smoke_config(name, family, batch_tasks=12, ppo_epochs=1, minibatches=1)
    agent = AGENTS.get(name).build(family, cfg, seed=0)
    rollouts: list[Rollout] = []
    envs = []
    collect, make_env = agent.collect, family.make_env

    def spy_collect(fam, gen):
        ro = collect(fam, gen)
        rollouts.append(ro)
        return ro

    def spy_make_env(tasks):
        envs.append(make_env(tasks))
        return envs[-1]

    agent.collect, family.make_env = spy_collect, spy_make_env
    monitor = Monitor()
    budget = 500
    steps = agent.meta_train(family, budget, monitor)
    assert len(rollouts) == len(envs) == len(monitor.log) + 1  # the last collect would pass the budget
    for ro, env in zip(rollouts, envs):
        t_max, b = ro.active.shape
        assert ro.features.shape[:2] == (t_max, b) and ro.actions.shape == (t_max, b) and b == cfg.batch_tasks
        # Independent count: the steps each environment took in its episode.
        assert int(ro.active.sum()) == int(env.t.sum())
        assert int(ro.active.sum()) < t_max * b  # ragged ends, so the mask matters
        assert (ro.rewards[~ro.active] == 0).all()
    counted = [int(ro.active.sum()) for ro in rollouts]
    assert steps == sum(counted[:-1]) <= budget < sum(counted)
    assert [e for e, _, _ in monitor.log] == [sum(counted[: i + 1]) for i in range(len(monitor.log))]
    assert [ep for _, ep, _ in monitor.log] == [cfg.batch_tasks * (i + 1) for i in range(len(monitor.log))]


def test_clip_grad_norm_survives_float32_overflow_of_the_norm():
    """Entries of 1e20 are finite in float32, their squares are not: the norm must still be finite."""
    from metabench.agents.ppo import clip_grad_norm

    p, q = torch.nn.Parameter(torch.zeros(1000)), torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.full((1000,), 1e20)
    q.grad = torch.tensor([3e20, 0.0, -4e20])
    assert not torch.isfinite(torch.linalg.vector_norm(p.grad))  # what torch's own clip would see
    norm = clip_grad_norm([p, q], 1.0)
    expected = math.sqrt(1000 * 1e40 + 25e40)
    assert math.isclose(float(norm), expected, rel_tol=1e-6)
    clipped = math.sqrt(float((p.grad.double() ** 2).sum() + (q.grad.double() ** 2).sum()))
    assert math.isclose(clipped, 1.0, rel_tol=1e-4)
    assert float(q.grad[2]) / float(q.grad[0]) == pytest.approx(-4 / 3)
    # a small gradient is left alone; a NaN entry gives a non-finite norm (the monitor's divergence signal)
    p.grad = torch.full((1000,), 1e-3)
    q.grad = torch.zeros(3)
    assert math.isclose(float(clip_grad_norm([p, q], 1.0)), math.sqrt(1000) * 1e-3, rel_tol=1e-5)
    assert float(p.grad[0]) == pytest.approx(1e-3)
    q.grad = torch.tensor([float("nan"), 0.0, 0.0])
    assert not math.isfinite(float(clip_grad_norm([p, q], 1.0)))


class _CurriculumSpy(Harlow):
    """Harlow that records the progress each training batch is drawn at."""

    def __init__(self, config=None, cue_share: float = 0.0):
        super().__init__(config, cue_share)
        self.asked: list[float] = []

    def training_family(self, progress: float) -> Harlow:
        self.asked.append(progress)
        return super().training_family(progress)


@pytest.mark.parametrize("name", ["rl2", "maml"])
def test_trainers_draw_training_trials_from_the_curriculum(name):
    family = _CurriculumSpy(HarlowConfig(curriculum=(0.0, 0.5)))
    entry = AGENTS.get(name)
    agent = entry.build(family, entry.config(family, PROFILES.get("smoke")), seed=0)
    steps = agent.meta_train(family, 20_000, Monitor())
    asked = family.asked
    assert len(asked) >= 3 and asked[0] == 0.0
    assert all(b > a for a, b in zip(asked, asked[1:])) and asked[-1] <= 1.0
    assert steps > 0


def test_lr_anneal_falls_linearly_to_zero_over_the_budget():
    family = short_harlow(max_steps=25)
    cfg = smoke_config("rl2", family, batch_tasks=8, lr=1e-2, lr_anneal=True)
    agent = AGENTS.get("rl2").build(family, cfg, seed=0)
    seen: list[float] = []
    update = agent.update

    def spy_update(ro):
        seen.append(agent.optimizer.param_groups[0]["lr"])
        return update(ro)

    agent.update = spy_update
    monitor = Monitor()
    budget = 1_000
    agent.meta_train(family, budget, monitor)
    assert len(seen) >= 3
    # Each update's rate is lr * (1 - steps/budget), with steps counted after its rollout.
    after = [e for e, _, _ in monitor.log]
    assert seen == pytest.approx([1e-2 * (1 - s / budget) for s in after])
    assert all(b < a for a, b in zip(seen, seen[1:])) and seen[-1] >= 0
    # Off by default: the rate stays put.
    plain = AGENTS.get("rl2").build(family, smoke_config("rl2", family, batch_tasks=8, lr=1e-2), seed=0)
    plain.meta_train(family, budget, Monitor())
    assert plain.optimizer.param_groups[0]["lr"] == 1e-2


# Observation and reward normalisation ----------------------------------------------------------------

def test_running_moments_match_the_statistics_of_everything_seen():
    from metabench.agents.ppo import RunningMoments

    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, generator=g) * 5 + 2 for n in (1, 7, 40, 0, 13)]
    moments = RunningMoments(3)
    for b in batches:
        moments.update(b)
    seen = torch.cat(batches).double()
    assert int(moments.count) == len(seen)
    assert torch.allclose(moments.mean, seen.mean(0)) and torch.allclose(moments.var, seen.var(0, unbiased=False))
    z = moments.normalize(torch.full((2, 3), 1e6))
    assert z.dtype == torch.float32 and bool((z == 10.0).all())  # clipped


@pytest.mark.parametrize("name", ["rl2", "maml"])
def test_obs_norm_learns_from_training_only_and_is_saved_with_the_agent(name):
    """Statistics move with each training rollout (acted and recorded with the statistics before it), stay put
    through a held-out evaluation, and come back with a saved agent, which then acts as the original."""
    from metabench.envs import make_family
    from metabench.protocol import evaluate

    family = make_family("maze")
    entry = AGENTS.get(name)
    cfg = dataclasses.replace(entry.config(family, PROFILES.get("smoke")), obs_norm=True, batch_tasks=4)
    agent = entry.build(family, cfg, seed=0)
    assert int(agent.obs_moments.count) == 0
    ro = agent.collect(family, task_generator(0, "train"))
    assert int(agent.obs_moments.count) == int(ro.active.sum())
    before = agent.obs_moments.state_dict()
    evaluate(agent, family, seed=1, n_tasks=8)
    assert all(torch.equal(before[k], v) for k, v in agent.obs_moments.state_dict().items())
    ro = agent.collect(family, task_generator(1, "train"))  # recorded with the statistics of the first rollout
    obs = ro.features[0, :, :family.obs_dim]
    assert not torch.allclose(obs, obs.round())  # the maze's observations are 0/1; normalised, they are not
    clone = entry.build(family, cfg, seed=5)
    clone.load_state_dict(agent.state_dict())
    assert evaluate(clone, family, seed=1, n_tasks=8).metrics == evaluate(agent, family, seed=1, n_tasks=8).metrics


def test_reward_norm_makes_an_update_independent_of_the_reward_scale():
    """Rewards x 1000 give the same first update as rewards x 1 once divided by the returns' running spread."""
    family = Harlow(HarlowConfig(max_steps=12))
    entry = AGENTS.get("rl2")
    cfg = dataclasses.replace(entry.config(family, PROFILES.get("smoke")), reward_norm=True, batch_tasks=8)
    agents = [entry.build(family, cfg, seed=0) for _ in range(2)]
    ro = agents[0].collect(family, task_generator(0, "train"))
    agents[1].collect(family, task_generator(0, "train"))  # the same draws, so both agents stand alike
    big = dataclasses.replace(ro, rewards=ro.rewards * 1000)
    agents[0].update(ro)
    agents[1].update(big)
    assert agents[1].return_moments.var.item() == pytest.approx(agents[0].return_moments.var.item() * 1e6)
    for p, q in zip(agents[0].params, agents[1].params):
        assert torch.allclose(p, q, atol=1e-5)


def test_a_non_finite_gradient_stops_training_before_the_step(monkeypatch):
    """The update raises TrainingDiverged naming the log-ratio, and leaves the parameters as they were (a NaN
    step would otherwise surface later and elsewhere, as MAML's non-finite adapted parameters did)."""
    from metabench.agents import ppo
    from metabench.agents.base import TrainingDiverged

    family = short_harlow(max_steps=25)
    agent = AGENTS.get("rl2").build(family, smoke_config("rl2", family, batch_tasks=8, ppo_epochs=2,
                                                         minibatches=2), seed=0)
    before = flat_params(agent)
    monkeypatch.setattr(ppo, "clip_grad_norm", lambda params, max_norm: torch.tensor(float("nan")))
    with pytest.raises(TrainingDiverged, match=r"non-finite gradient .*largest log-ratio"):
        agent.meta_train(family, 400, Monitor())
    assert all(torch.equal(a, b) for a, b in zip(before, flat_params(agent)))
