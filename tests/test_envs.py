"""Task-family conformance: every family registered in ``metabench.envs.FAMILIES``.

Each test is parametrized over ``FAMILIES.names()``, so a new family is checked
as soon as it is registered. The checks are the :mod:`metabench.envs.base`
contract: shapes and dtypes, seeded determinism, disjoint train/test task
streams, batch-invariant transitions (an environment steps the same inside a
batch as alone), absorbing ``done``, the episode cap, and the declared metrics.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metabench.envs import FAMILIES, ActionSpace, TaskBatch, TaskFamily, make_family, task_generator
from metabench.envs.base import SPLITS

NAMES = FAMILIES.names()
BATCH = 16
EPISODES = 2  # two resets: the second episode of a task must also be reproducible / batch-invariant
ACTION_SEED = 1234


@pytest.fixture(params=NAMES)
def family(request) -> TaskFamily:
    return make_family(request.param, "smoke")  # the smoke profile's config: Meta-World's short trials


# Helpers ------------------------------------------------------------------------


def sample_actions(space: ActionSpace, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Valid random actions: int64 ``[B]`` in [0, n) or float ``[B, n]`` in [low, high]."""
    if space.discrete:
        return torch.randint(0, space.n, (batch,), generator=gen, dtype=torch.int64)
    u = torch.rand(batch, space.n, generator=gen)
    return space.low + (space.high - space.low) * u


def action_plan(family: TaskFamily, batch: int, seed: int = ACTION_SEED, extra_steps: int = 0) -> torch.Tensor:
    """``[episodes, T, B, ...]`` actions from a fixed generator, T = the episode cap (+ extra)."""
    gen = torch.Generator().manual_seed(seed)
    steps = family.max_episode_steps + extra_steps
    return torch.stack([
        torch.stack([sample_actions(family.action_space, batch, gen) for _ in range(steps)])
        for _ in range(EPISODES)
    ])


def tasks_of(family: TaskFamily, n: int, seed: int = 0, split: str = "train") -> TaskBatch:
    return family.sample_tasks(n, split, task_generator(seed, split))


def fields(tasks: TaskBatch) -> dict[str, torch.Tensor]:
    """The batch's tensors (``task_id`` is None for tasks drawn from a stream)."""
    return {f.name: getattr(tasks, f.name) for f in dataclasses.fields(tasks) if getattr(tasks, f.name) is not None}


def rollout(family: TaskFamily, tasks: TaskBatch, actions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Step ``EPISODES`` episodes of fixed length (the plan's T), stacking everything the env returns."""
    env = family.make_env(tasks)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in
                                          ("reset_obs", "obs", "reward", "terminated", "truncated", "active")}
    metrics: list[dict[str, torch.Tensor]] = []
    for ep_actions in actions:
        out["reset_obs"].append(env.reset())
        per = {k: [] for k in ("obs", "reward", "terminated", "truncated", "active")}
        for a in ep_actions:
            s = env.step(a)
            for k in per:
                per[k].append(getattr(s, k))
        for k, v in per.items():
            out[k].append(torch.stack(v))
        metrics.append(env.episode_metrics())
    result = {k: torch.stack(v) for k, v in out.items()}  # [episodes, T, B, ...] / [episodes, B, obs]
    for e, m in enumerate(metrics):
        for k, v in m.items():
            result[f"metric{e}/{k}"] = v
    return result


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), f"{k} differs"


# Declarations ---------------------------------------------------------------------


def test_declarations(family):
    assert family.obs_dim >= 1
    assert family.max_episode_steps >= 1
    assert family.episodes_per_trial >= 1
    space = family.action_space
    assert space.kind in ("discrete", "continuous") and space.n >= 1
    if not space.discrete:
        assert space.low < space.high
    names = [m.name for m in family.metrics]
    assert len(names) == len(set(names)), "duplicate metric names"
    assert family.primary_metric in names
    for m in family.metrics:
        assert family.metric(m.name) is m
    with pytest.raises(KeyError):
        family.metric("no_such_metric")
    with pytest.raises(ValueError):
        task_generator(0, "validation")  # type: ignore[arg-type]


def test_task_batch_fields(family):
    tasks = tasks_of(family, 7)
    assert len(tasks) == 7
    assert tasks.key.dtype == torch.int64 and tasks.key.shape == (7,)
    for name, v in fields(tasks).items():
        assert isinstance(v, torch.Tensor), name
        assert v.shape[0] == 7, name
    one = tasks.index(3)
    assert type(one) is type(tasks) and len(one) == 1
    for name, v in fields(one).items():
        assert torch.equal(v[0], getattr(tasks, name)[3]), name
    sub = tasks.index(slice(2, 5))
    assert len(sub) == 3
    for name, v in fields(sub).items():
        assert torch.equal(v, getattr(tasks, name)[2:5]), name


@pytest.mark.parametrize("split", SPLITS)
def test_task_pool(family, split):
    """A family with a fixed pool draws only its pool's tasks and says which; a stream family sets no id."""
    pool = family.task_pool(split)
    tasks = family.sample_tasks(16, split, task_generator(0, split))
    if pool is None:
        assert tasks.task_id is None
        return
    assert torch.equal(pool.task_id, torch.arange(len(pool)))
    assert tasks.task_id.dtype == torch.int64 and bool(((tasks.task_id >= 0) & (tasks.task_id < len(pool))).all())


# Shapes and dtypes ----------------------------------------------------------------


def test_shapes_and_dtypes(family):
    b = 5
    tasks = tasks_of(family, b)
    env = family.make_env(tasks)
    assert env.num_envs == b
    obs = env.reset()
    assert obs.dtype == torch.float32 and obs.shape == (b, family.obs_dim)
    assert env.done.dtype == torch.bool and env.done.shape == (b,)
    space = family.action_space
    gen = torch.Generator().manual_seed(0)
    zeros = space.zeros(b)
    if space.discrete:
        assert zeros.dtype == torch.int64 and zeros.shape == (b,)
    else:
        assert zeros.is_floating_point() and zeros.shape == (b, space.n)
    for t in range(min(family.max_episode_steps, 20)):
        a = zeros if t == 0 else sample_actions(space, b, gen)  # the placeholder is a valid action too
        if space.discrete:
            assert a.dtype == torch.int64 and a.shape == (b,)
            assert bool(((a >= 0) & (a < space.n)).all())
        else:
            assert a.shape == (b, space.n) and bool(((a >= space.low) & (a <= space.high)).all())
        s = env.step(a)
        assert s.obs.dtype == torch.float32 and s.obs.shape == (b, family.obs_dim)
        assert s.reward.is_floating_point() and s.reward.shape == (b,)
        for flag in (s.terminated, s.truncated, s.active):
            assert flag.dtype == torch.bool and flag.shape == (b,)
        assert bool(torch.isfinite(s.obs).all()) and bool(torch.isfinite(s.reward).all())


# Seeded determinism ---------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_seeded_determinism(family, split):
    t1 = tasks_of(family, BATCH, seed=3, split=split)
    t2 = tasks_of(family, BATCH, seed=3, split=split)
    assert_same(fields(t1), fields(t2))
    # A different seed gives a different stream (the sampler really uses its generator).
    t3 = tasks_of(family, BATCH, seed=4, split=split)
    assert not torch.equal(t1.key, t3.key)
    assert any(not torch.equal(a, b) for a, b in zip(fields(t1).values(), fields(t3).values()))

    actions = action_plan(family, BATCH)
    # The global torch RNG must play no part in the dynamics.
    with torch.random.fork_rng():
        torch.manual_seed(1)
        r1 = rollout(family, t1, actions)
        torch.manual_seed(2)
        r2 = rollout(family, t2, actions.clone())
    assert_same(r1, r2)
    # Different actions do change the transitions (the comparison is not vacuous).
    r3 = rollout(family, t1, action_plan(family, BATCH, seed=ACTION_SEED + 1))
    assert not torch.equal(r1["obs"], r3["obs"])


# Train and test tasks -------------------------------------------------------------


def test_train_and_test_tasks_differ(family):
    n = 256
    train = tasks_of(family, n, seed=0, split="train")
    test = tasks_of(family, n, seed=0, split="test")
    same = torch.ones(n, n, dtype=torch.bool)  # [test, train]: every field equal
    for name, tr in fields(train).items():
        te = getattr(test, name)
        eq = te.reshape(n, 1, -1) == tr.reshape(1, n, -1)
        same &= eq.all(-1)
    assert not bool(same.any()), f"{int(same.sum())} test tasks equal a train task"
    # The task parameters themselves (not only keys) come from different streams; a parameter that
    # is one constant in both splits (e.g. "no frozen actuator" in a training family) carries no task.
    params = [k for k, v in fields(train).items()
              if k != "key" and not (v.unique().numel() == 1 and torch.equal(v, getattr(test, k)))]
    assert not torch.equal(test.key, train.key)
    for k in params:
        assert not torch.equal(getattr(test, k), getattr(train, k)), k
    # And a split's stream does not reappear under another seed of the other split.
    for seed in range(1, 4):
        other = tasks_of(family, n, seed=seed, split="train")
        assert not bool(torch.isin(test.key, other.key).any())


# Batched step == stepping each environment alone ---------------------------------


def test_batched_equals_alone(family):
    tasks = tasks_of(family, BATCH, seed=5, split="test")
    actions = action_plan(family, BATCH)  # [E, T, B, ...]
    batched = rollout(family, tasks, actions)
    for i in range(BATCH):
        alone = rollout(family, tasks.index(i), actions[:, :, i: i + 1])
        for k, v in alone.items():
            if k.startswith("metric"):
                expected = batched[k][i: i + 1]
            elif k == "reset_obs":
                expected = batched[k][:, i: i + 1]
            else:
                expected = batched[k][:, :, i: i + 1]
            assert v.dtype == expected.dtype, k
            assert torch.equal(v, expected), f"env {i}: {k} differs alone vs in the batch"
    # Environments of the batch do not all behave alike (the check above is not vacuous).
    assert not torch.equal(batched["obs"][:, :, 0], batched["obs"][:, :, 1])


# Done is absorbing, episode cap ---------------------------------------------------


def test_done_is_absorbing_and_capped(family):
    tasks = tasks_of(family, BATCH, seed=6)
    env = family.make_env(tasks)
    cap = family.max_episode_steps
    extra = 5
    actions = action_plan(family, BATCH, extra_steps=extra)
    for ep_actions in actions:
        obs = env.reset()
        assert obs.shape == (BATCH, family.obs_dim)
        assert not bool(env.done.any()), "reset must make every environment active"
        active_steps = torch.zeros(BATCH, dtype=torch.int64)
        ends = torch.zeros(BATCH, dtype=torch.int64)
        for t, a in enumerate(ep_actions):
            before = env.done.clone()
            metrics_before = {k: v.clone() for k, v in env.episode_metrics().items()} if bool(before.all()) else None
            s = env.step(a)
            assert torch.equal(s.active, ~before), "active must be 'not done before the step'"
            assert not bool((s.terminated & s.truncated).any()), "terminated and truncated both true"
            assert bool((s.reward[before] == 0).all()), "a done environment must give reward 0"
            assert not bool(s.terminated[before].any() or s.truncated[before].any())
            assert torch.equal(env.done, before | s.terminated | s.truncated)
            active_steps += s.active.to(torch.int64)
            ends += (s.terminated | s.truncated).to(torch.int64)
            if t == cap - 1:
                assert bool(env.done.all()), f"episodes ran past max_episode_steps={cap}"
            if metrics_before is not None:  # stepping a finished batch changes nothing
                for k, v in env.episode_metrics().items():
                    assert torch.equal(v, metrics_before[k]), k
        assert bool((active_steps <= cap).all()) and bool((active_steps >= 1).all())
        assert torch.equal(ends, torch.ones(BATCH, dtype=torch.int64)), "every episode ends exactly once"
        assert bool(env.done.all())


# Declared metrics -----------------------------------------------------------------


def test_episode_metrics(family):
    tasks = tasks_of(family, BATCH, seed=7)
    env = family.make_env(tasks)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(family.max_episode_steps):
        env.step(sample_actions(family.action_space, BATCH, gen))
        if bool(env.done.all()):
            break
    assert bool(env.done.all())
    metrics = env.episode_metrics()
    for spec in family.metrics:
        if spec.last_episode_of is not None:  # the protocol computes it from the trial's last episode
            assert spec.last_episode_of in metrics, spec.name
            continue
        assert spec.name in metrics, f"declared metric {spec.name!r} missing"
        v = metrics[spec.name]
        assert isinstance(v, torch.Tensor) and v.shape == (BATCH,), spec.name
        assert v.is_floating_point(), spec.name
        assert bool(torch.isfinite(v).all()), spec.name
