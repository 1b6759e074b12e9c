"""Meta-World families (envs/metaworld.py): metaworld's own splits, 10-episode trials, success per episode,
the traps of metaworld 3.1.1, and the scripted / random calibration."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch

from metabench.agents import AGENTS
from metabench.agents.base import Agent, AgentInput
from metabench.envs import make_family, task_generator
from metabench.envs.metaworld import MetaWorld, MetaWorldConfig, metaworld_benchmark
from metabench.profiles import PROFILES
from metabench.protocol import evaluate, run_trials

warnings.filterwarnings("ignore", module="gymnasium")


def _rand_vecs(tasks) -> list[tuple]:
    return [tuple(np.round(pickle.loads(t.data)["rand_vec"], 6)) for t in tasks]


def test_ml1_train_and_test_goals_differ_and_follow_metaworlds_seed():
    """ML1's test goals come from its own seeding (seed + 1): 50 each, no goal in both; the same seed gives the
    same goals, another seed others."""
    fam = make_family("mw_ml1_reach")
    bench = fam.benchmark
    train, test = _rand_vecs(bench.train_tasks), _rand_vecs(bench.test_tasks)
    assert len(train) == len(test) == 50 and not set(train) & set(test)
    assert train == _rand_vecs(metaworld_benchmark("ML1", "reach-v3", 0).train_tasks)
    other = MetaWorld(MetaWorldConfig(env_name="reach-v3", seed=1))
    assert not set(_rand_vecs(other.benchmark.train_tasks)) & set(train)
    # the family's pools are metaworld's lists, in order
    pool = fam.task_pool("test")
    assert pool.split.tolist() == [1] * 50 and pool.goal.tolist() == list(range(50))


def test_the_global_numpy_rng_is_left_alone():
    """metaworld seeds its goals through the global numpy RNG and restores it: building a benchmark moves nothing."""
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    metaworld_benchmark("ML1", "push-v3", 7)
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.slow  # builds ML10 and steps 2 x 17 simulators under their scripted policies (~20 s)
def test_the_fast_paths_give_metaworlds_own_steps_to_the_bit():
    """The simulators run with :func:`envs.metaworld._install_fast_paths` (scipy's rotation check skipped,
    the contact walk and the observation's stacking rewritten): on every ML10 class and on reach and push,
    driven by metaworld's scripted policy with noise (so grippers close on objects), a fast simulator and one
    stepped :func:`as_shipped` give equal observations, rewards and infos at every step, and the contact
    test agrees with metaworld's own on every state, both pads on the object included."""
    from metaworld.policies import ENV_POLICY_MAP

    from metabench.envs.metaworld import _SHIPPED_METHODS, _make_simulator, as_shipped

    ml10 = metaworld_benchmark("ML10", "", 0)
    classes = {**ml10.train_classes, **ml10.test_classes}
    ml1 = {n: metaworld_benchmark("ML1", n, 0) for n in ("reach-v3", "push-v3")}
    classes.update({n: b.train_classes[n] for n, b in ml1.items()})
    tasks = {t.env_name: t for t in [*ml10.train_tasks, *ml10.test_tasks, *ml1["reach-v3"].train_tasks,
                                      *ml1["push-v3"].train_tasks]}
    rng = np.random.default_rng(0)
    touching = 0
    for name, cls in sorted(classes.items()):
        fast, shipped = _make_simulator(cls), _make_simulator(cls)
        try:
            main_object = fast._get_id_main_object()
        except (AttributeError, KeyError):  # metaworld 3.1.1: some classes call MuJoCo's long-gone ``geom_name2id``
            main_object = None  # or name a geom their model lacks (they never score a grasp by contact)
        policy = ENV_POLICY_MAP[name]()
        for sim in (fast, shipped):
            sim._partially_observable = False  # the scripted policy reads the goal
            sim.set_task(tasks[name])
        obs = fast.reset()[0]
        with as_shipped():
            assert np.array_equal(obs, shipped.reset()[0]), name
        for _ in range(120):
            action = np.clip(policy.get_action(obs) + rng.normal(0, 0.3, 4), -1, 1)
            obs, reward, _, _, info = fast.step(action)
            with as_shipped():
                ref_obs, ref_reward, _, _, ref_info = shipped.step(action)
                assert fast.touching_object.__func__ is _SHIPPED_METHODS["touching_object"]
            assert np.array_equal(obs, ref_obs) and reward == ref_reward and info == ref_info, name
            if main_object is not None:
                contact = fast.touching_object(main_object)
                assert contact == _SHIPPED_METHODS["touching_object"](fast, main_object), name
                touching += bool(contact)
    assert touching >= 20, touching  # the grasping branch ran


@pytest.mark.slow  # ML10 builds 750 goals (~10 s)
def test_ml10_test_classes_are_held_out():
    fam = make_family("mw_ml10")
    train, test = fam.class_names("train"), fam.class_names("test")
    assert len(train) == 10 and len(test) == 5 and not set(train) & set(test)
    assert {t.env_name for t in fam.benchmark.test_tasks} == set(test)
    tasks = fam.sample_tasks(64, "test", task_generator(0, "test"))
    env = fam.make_env(tasks)
    assert {type(s).__name__ for s in env.sims} <= {type(fam.pool(n).borrow(1)[0]).__name__ for n in test}


def test_make_vec_ml1_train_silently_gives_the_test_split():
    """The trap this family avoids by building ML1 itself (upstream PR #573): if it ever fails, metaworld fixed
    its registration and the note in envs/metaworld.py can go."""
    import gymnasium as gym
    import metaworld  # noqa: F401 - registers the Meta-World ids

    envs = gym.make_vec("Meta-World/ML1-train", env_name="reach-v3", seed=0, vector_strategy="sync",
                        meta_batch_size=10)
    try:
        envs.call("sample_tasks")  # before the first reset, as metaworld requires
        envs.reset(seed=0)
        got = {tuple(np.round(v, 6)) for v in envs.get_attr("_last_rand_vec")}
        ours = make_family("mw_ml1_reach").benchmark
        assert len(got) == 10 and got <= set(_rand_vecs(ours.test_tasks))
        assert not got & set(_rand_vecs(ours.train_tasks))
    finally:
        envs.close()


@pytest.mark.parametrize("bad", [{"episode_steps": 501}, {"episode_steps": 0}, {"episodes_per_trial": 0},
                                 {"benchmark": "ML45"}, {"eval_split": "val"}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        MetaWorldConfig(**bad)


class _Counter(Agent):
    """Memory = steps seen since task start; records what the protocol showed it."""

    def __init__(self, family):
        super().__init__(family, None, 0)
        self.seen: list[tuple[bool, bool, torch.Tensor]] = []

    def meta_train(self, family, budget_env_steps, monitor):
        return 0

    def initial_memory(self, batch_size):
        return torch.zeros(batch_size)

    def act(self, inputs: AgentInput, memory):
        self.seen.append((bool(inputs.task_start[0]), bool(inputs.episode_start[0]), memory.clone()))
        return torch.zeros(len(memory), 4), memory + 1


def test_memory_is_carried_across_the_episodes_of_a_trial_and_reset_at_the_next():
    fam = make_family("mw_ml1_reach", "smoke")  # 2 episodes of 50 steps
    agent = _Counter(fam)
    tasks = fam.sample_tasks(3, "train", task_generator(0, "train"))
    for _trial in range(2):
        res = run_trials(agent, fam, tasks)
        assert len(res.episode_metrics) == 2 and res.rewards.shape == (100, 3)
    starts = [(i, ts, es) for i, (ts, es, _m) in enumerate(agent.seen) if ts or es]
    assert starts == [(0, True, True), (50, False, True), (100, True, True), (150, False, True)]
    memory = [float(m[0]) for _ts, _es, m in agent.seen]
    assert memory[:100] == list(range(100)) and memory[100:] == list(range(100))  # reset at the next task only


def test_episodes_reset_before_metaworlds_cap_and_success_counts_once_per_episode():
    """Two full 500-step episodes of the scripted policy: metaworld never raises (every episode starts with a
    reset), and success, reached at many steps of an episode, counts once: each episode's value is 0 or 1."""
    fam = make_family("mw_ml1_reach").with_config(episodes_per_trial=2)
    entry = AGENTS.get("scripted")
    agent = entry.build(fam, entry.config(fam, PROFILES.get("smoke")), 0)
    steps_succeeding = []
    res = run_trials(agent, fam, fam.sample_tasks(2, "train", task_generator(0, "train")),
                     on_step=lambda _i, _a, step: steps_succeeding.append(step.info["success"].clone()))
    assert res.rewards.shape[0] == 1000 and bool(res.truncated[499].all()) and bool(res.truncated[999].all())
    assert not bool(res.terminated.any())
    per_step = torch.stack(steps_succeeding)
    assert float(per_step[:500].sum(0).min()) > 1  # success at many steps of the episode...
    for ep in res.episode_metrics:
        assert ep["success"].tolist() == [1.0, 1.0]  # ...counted once


def test_scripted_policy_succeeds_on_reach_and_random_rarely_does():
    """The calibration rows: metaworld's scripted policy, given the goal, through our family; random actions."""
    fam = make_family("mw_ml1_reach").with_config(episodes_per_trial=1)
    scores = {}
    for name in ("scripted", "random"):
        entry = AGENTS.get(name)
        agent = entry.build(fam, entry.config(fam, PROFILES.get("smoke")), 0)
        scores[name] = evaluate(agent, fam, 0, 4).metrics
    assert scores["scripted"]["success"] == 1.0 and scores["scripted"]["success_last"] == 1.0
    assert scores["random"]["success"] <= 0.25
    assert scores["scripted"]["episode_return"] > 3 * scores["random"]["episode_return"]


def test_success_last_is_the_last_episode_only():
    """success_last averages the trials' last episodes: here the agent acts only in its second episode."""
    fam = make_family("mw_ml1_reach").with_config(episodes_per_trial=2)
    entry = AGENTS.get("scripted")
    scripted = entry.build(fam, entry.config(fam, PROFILES.get("smoke")), 0)

    class SecondEpisodeOnly(Agent):
        sees_task = True

        def meta_train(self, family, budget_env_steps, monitor):
            return 0

        def initial_memory(self, batch_size):
            return torch.zeros(batch_size)

        def act(self, inputs, memory):
            memory = memory + inputs.episode_start.float()
            action, _ = scripted.act(inputs, None)
            return torch.where((memory >= 2)[:, None], action, torch.zeros_like(action)), memory

    m = evaluate(SecondEpisodeOnly(fam, None, 0), fam, 0, 2).metrics
    assert m["success_last"] == 1.0 and m["success"] == 0.5 and m["test_episodes"] == 4


def test_smoke_profile_shortens_the_trial_and_the_record_says_so(tmp_path):
    from metabench.runner import execute_run, plan
    from metabench.suites import SUITES

    (spec,) = plan(["random"], [SUITES.get("generality")], PROFILES.get("smoke"), 1, tasks=["mw_ml1_reach"])[0]
    assert spec.config["task"]["episodes_per_trial"] == 2 and spec.config["task"]["episode_steps"] == 50
    record = execute_run(spec, tmp_path, "test-version")
    assert record["status"] == "ok", record.get("traceback")
    m = record["metrics"]
    for name in ("success", "success_last", "episode_return", "success_train", "success_last_train"):
        assert math.isfinite(m[name]), name
    assert m["test_episodes"] == 16 and m["test_episodes_train"] == 16
    quick = plan(["random"], [SUITES.get("generality")], PROFILES.get("quick"), 1, tasks=["mw_ml1_reach"])[0][0]
    assert quick.config["task"]["episodes_per_trial"] == 10 and quick.config["task"]["episode_steps"] == 500


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["metods", "rl2", "maml", "pearl"])
def test_every_agent_runs_meta_world_end_to_end(tmp_path, agent):
    """Smoke profile: meta-train over 2-episode trials, evaluate on test and train goals, curves of both."""
    from metabench.records import iter_curves
    from metabench.runner import execute_run, plan
    from metabench.suites import SUITES

    (spec,) = plan([agent], [SUITES.get("generality")], PROFILES.get("smoke"), 1, tasks=["mw_ml1_reach"])[0]
    record = execute_run(spec, tmp_path, "test-version")
    assert record["status"] == "ok", record.get("traceback")
    assert 0 < record["env_steps"] <= 3_200
    evals = {metric for curve, _x, metric, _v in iter_curves(spec.path(tmp_path)) if curve == "eval"}
    assert {"success", "success_train", "success_last_train"} <= evals
