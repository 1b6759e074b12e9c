"""MuJoCo direction tasks (Ant-dir, HalfCheetah-dir) and the frozen-actuator impairment.

The family-level contract (shapes, seeded determinism, batch invariance,
train/test streams) is checked for these families by ``test_envs.py``, which
covers every registered family; here: the reward, the impairment and the
pool of simulators.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from metabench.envs import make_family, task_generator
from metabench.envs.locomotion import ROBOTS, Locomotion, LocomotionConfig, LocomotionTasks, robot_pool
from metabench.envs import rng
from metabench.profiles import PROFILES


def tasks_with(family: Locomotion, theta: list[float], frozen: list[int] | None = None) -> LocomotionTasks:
    n = len(theta)
    return LocomotionTasks(key=rng.new_keys(n, torch.Generator().manual_seed(5)),
                           theta=torch.tensor(theta, dtype=torch.float64),
                           frozen=torch.tensor(frozen if frozen is not None else [-1] * n))


@pytest.mark.parametrize("robot", ["ant", "cheetah"])
def test_reward_along_theta_zero_is_gymnasiums_own(robot):
    """For θ = 0 the task reward is exactly gymnasium's reward (forward velocity + healthy - costs)."""
    family = Locomotion(LocomotionConfig(robot=robot))
    tasks = tasks_with(family, [0.0])
    env = family.make_env(tasks)
    env_id, kwargs = ROBOTS[robot]
    ref = gym.make(env_id, **kwargs).unwrapped
    obs = env.reset()
    ref_obs, _ = ref.reset(seed=int(rng.fold(tasks.key, 0)[0]))
    np.testing.assert_allclose(obs[0].numpy(), ref_obs, rtol=1e-6, atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        a = torch.rand(1, family.action_space.n, generator=gen) * 2 - 1
        step = env.step(a)
        ref_obs, ref_r, ref_term, _, _ = ref.step(a[0].numpy().astype(np.float64))
        assert float(step.reward[0]) == pytest.approx(ref_r, rel=1e-5, abs=1e-5)
        assert bool(step.terminated[0]) == ref_term
        np.testing.assert_allclose(step.obs[0].numpy(), ref_obs, rtol=1e-5, atol=1e-5)
        if ref_term:
            break


@pytest.mark.parametrize("robot, theta", [("ant", 0.0), ("ant", 2.0), ("ant", 4.5), ("cheetah", 0.0),
                                          ("cheetah", math.pi)])
def test_moving_along_theta_is_rewarded_and_against_it_penalised(robot, theta):
    """Push the torso at 1 m/s along u = (cos θ, sin θ): the task θ pays for it, the task θ + π charges it."""
    family = Locomotion(LocomotionConfig(robot=robot))
    env = family.make_env(tasks_with(family, [theta, theta + math.pi]))
    env.reset()
    for sub in env.sims:  # the same state in both: the torso sliding along u
        sub.set_state(sub.init_qpos.copy(), np.zeros(sub.model.nv))
        qvel = np.zeros(sub.model.nv)
        qvel[0] = math.cos(theta)
        if robot == "ant":
            qvel[1] = math.sin(theta)
        sub.set_state(sub.init_qpos.copy(), qvel)
    step = env.step(torch.zeros(2, family.action_space.n))
    healthy = 1.0 if robot == "ant" else 0.0  # Ant-v5's healthy reward; HalfCheetah has none
    along, against = float(step.reward[0]) - healthy, float(step.reward[1]) - healthy
    assert along > 0.5, along
    assert against < -0.5, against
    assert along == pytest.approx(-against, rel=0.05)  # zero action: no control cost, contacts negligible
    diag = env.episode_metrics()  # the diagnostics beside the return: velocity along θ, and speed
    assert float(diag["velocity_along"][0]) == pytest.approx(along, rel=0.05)
    assert float(diag["velocity_along"][1]) == pytest.approx(against, rel=0.05)
    assert float(diag["speed"][0]) == pytest.approx(float(diag["speed"][1]), rel=1e-6)
    assert float(diag["speed"][0]) > 0.5


def test_velocity_across_theta_is_not_rewarded():
    """Moving at right angles to θ earns (almost) nothing beyond the healthy reward."""
    family = Locomotion(LocomotionConfig(robot="ant"))
    env = family.make_env(tasks_with(family, [0.0]))
    env.reset()
    sub = env.sims[0]
    qvel = np.zeros(sub.model.nv)
    qvel[1] = 1.0
    sub.set_state(sub.init_qpos.copy(), qvel)
    step = env.step(torch.zeros(1, 8))
    assert abs(float(step.reward[0]) - 1.0) < 0.1


@pytest.mark.parametrize("robot", ["ant", "cheetah"])
def test_a_frozen_actuator_receives_zero_whatever_the_policy_outputs(robot):
    family = Locomotion(LocomotionConfig(robot=robot))
    n = family.action_space.n
    frozen = [k % n for k in range(n)] + [-1]
    env = family.make_env(tasks_with(family, [0.0] * len(frozen), frozen))
    env.reset()
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        a = torch.randn(len(frozen), n, generator=gen) * 3  # beyond the box too
        a[:, :] = torch.where(a.abs() < 0.2, torch.full_like(a, 0.7), a)
        env.step(a)
        for i, k in enumerate(frozen):
            ctrl = env.sims[i].data.ctrl
            expected = a[i].clamp(-1, 1).numpy().astype(np.float64)
            if k >= 0:
                assert ctrl[k] == 0.0
                expected[k] = 0.0
            np.testing.assert_allclose(ctrl, expected, rtol=1e-6)


def test_impairment_variants_share_the_test_directions():
    family = make_family("impairment_ant")
    variants = family.evaluation_variants()
    assert list(variants) == ["", "_frozen"] + [f"_frozen_j{k}" for k in range(8)]
    base = family.sample_tasks(64, "test", task_generator(3, "test"))
    assert (base.frozen == -1).all()
    drawn = variants["_frozen"].sample_tasks(64, "test", task_generator(3, "test"))
    assert torch.equal(drawn.theta, base.theta) and torch.equal(drawn.key, base.key)
    assert drawn.frozen.min() >= 0 and drawn.frozen.max() < 8 and len(set(drawn.frozen.tolist())) > 4
    fixed = variants["_frozen_j3"].sample_tasks(64, "test", task_generator(3, "test"))
    assert torch.equal(fixed.theta, base.theta) and (fixed.frozen == 3).all()
    assert set(base.theta.tolist()) <= {0.0, math.pi}
    assert list(make_family("ant_dir").evaluation_variants()) == [""]  # training family: no impairment


def test_ant_dir_draws_directions_on_the_whole_circle():
    theta = make_family("ant_dir").sample_tasks(2000, "train", task_generator(0, "train")).theta
    assert 0.0 <= float(theta.min()) < 0.05 and 2 * math.pi - 0.05 < float(theta.max()) < 2 * math.pi
    assert abs(float(theta.mean()) - math.pi) < 0.15


@pytest.mark.parametrize("bad", [{"robot": "hopper"}, {"directions": "up"}, {"frozen": 8}, {"frozen": -1},
                                 {"frozen": "all"}, {"episode_steps": 0}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        LocomotionConfig(**bad)


def test_the_simulator_pool_takes_back_what_an_environment_borrowed():
    family = Locomotion(LocomotionConfig(robot="cheetah"))
    pool = robot_pool("cheetah")
    env = family.make_env(tasks_with(family, [0.0] * 3))
    borrowed = [id(e) for e in env.sims]
    free_while_alive = {id(e) for e in pool.free}
    assert not free_while_alive & set(borrowed)
    other = family.make_env(tasks_with(family, [0.0] * 2))  # a second live env never shares a simulator
    assert not {id(e) for e in other.sims} & set(borrowed)
    del env, other
    assert set(borrowed) <= {id(e) for e in pool.free}


def test_episode_ends_at_200_steps_or_when_the_ant_falls():
    family = make_family("ant_dir")
    env = family.make_env(family.sample_tasks(4, "test", task_generator(0, "test")))
    env.reset()
    gen = torch.Generator().manual_seed(0)
    ended_at = {}
    for t in range(family.max_episode_steps):
        step = env.step(torch.randn(4, 8, generator=gen) * 2)
        for i in torch.nonzero(step.terminated | step.truncated).flatten().tolist():
            ended_at[i] = (t + 1, bool(step.truncated[i]))
    assert bool(env.done.all()) and len(ended_at) == 4
    lengths = env.episode_metrics()["episode_length"]
    for i, (t, truncated) in ended_at.items():
        assert float(lengths[i]) == t
        assert truncated == (t == 200)


# MetODS's smoke run is ~40 s: slow tier (the fast tier keeps Gaussian heads through RL² and MAML).
@pytest.mark.parametrize("agent", ["random", pytest.param("metods", marks=pytest.mark.slow), "rl2", "maml"])
def test_every_agent_runs_ant_dir_end_to_end(tmp_path, agent):
    """Smoke profile: meta-train (PPO mode, Gaussian heads), evaluate, write the record and the per-step reward."""
    from metabench.records import iter_curves
    from metabench.runner import execute_run, plan
    from metabench.suites import SUITES

    (spec,) = plan([agent], [SUITES.get("efficiency")], PROFILES.get("smoke"), 1, tasks=["ant_dir"])[0]
    record = execute_run(spec, tmp_path, "test-version")
    assert record["status"] == "ok", record.get("traceback")
    m = record["metrics"]
    assert math.isfinite(m["episode_return"]) and m["test_episodes"] == 8
    # one update of 16 trials; steps after a fall are not counted
    assert (record["env_steps"] == 0) if agent == "random" else (0 < record["env_steps"] <= 3_200)
    steps = [x for curve, x, metric, _ in iter_curves(spec.path(tmp_path)) if (curve, metric) == ("step_reward", "reward")]
    assert steps and steps == list(range(len(steps))) and len(steps) <= 200


def test_impairment_record_has_every_frozen_actuator(tmp_path):
    from metabench.runner import execute_run, plan
    from metabench.suites import SUITES

    (spec,) = plan(["random"], [SUITES.get("generality")], PROFILES.get("smoke"), 1,
                   tasks=["impairment_cheetah"])[0]
    m = execute_run(spec, tmp_path, "test-version")["metrics"]
    for suffix in ["", "_frozen"] + [f"_frozen_j{k}" for k in range(6)]:
        assert math.isfinite(m[f"episode_return{suffix}"]), suffix


def test_anchor_scores_the_oracle_forward_and_refuses_without_records(tmp_path):
    from metabench import anchor
    from metabench.agents import AGENTS

    family = make_family(anchor.TASK)
    entry = AGENTS.get(anchor.AGENT)
    agent = entry.build(family, entry.config(family, PROFILES.get("smoke")), seed=0)
    per_step, per_trial = anchor.forward_return_per_step(agent, family, seed=0, n_tasks=4)
    # HalfCheetah never ends a trial early: every trial lasts its 200 steps.
    assert math.isfinite(per_step) and per_trial == pytest.approx(per_step * family.max_episode_steps)
    with pytest.raises(SystemExit, match="no oracle records"):
        anchor.main(["--results", str(tmp_path), "--profile", "smoke"])
