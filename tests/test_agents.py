"""Agent conformance: every agent registered in ``metabench.agents.AGENTS``.

Each test is parametrized over ``AGENTS.names()``, so a new agent (or a new
registered variant of one) is checked as soon as it is registered, as
tests/test_envs.py checks every task family. The checks are the
:mod:`metabench.agents.base` contract:

* ``act`` leaves the memory of inactive environments unchanged;
* ``initial_memory`` is the same fresh memory at every task start (acting on
  one trial's memory does not leak into the next);
* the same seed and config give the same actions (through the shared protocol);
* ``state_dict`` / ``load_state_dict`` carry everything that decides the
  actions (the action generator included);
* ``meta_train`` stays within its environment-step budget;
* the runner skips an (agent, task) pair that ``supports`` refuses, with a note.

Agents run with tiny configs (:func:`tiny`) on Harlow and the maze; the
continuous-action check on ``ant_dir`` (MuJoCo) is in the slow tier.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from metabench.agents import AGENTS, Agent
from metabench.agents.base import AgentInput
from metabench.agents.random_agent import RandomAgent
from metabench.envs import FAMILIES, TaskFamily, make_family, task_generator
from metabench.profiles import PROFILES
from metabench.protocol import run_trials
from metabench.runner import plan
from metabench.suites import SUITES

from conftest import RecordingMonitor

SMOKE = PROFILES.get("smoke")
AGENT_NAMES = AGENTS.names()
FAST_FAMILIES = ("harlow", "maze")
FAMILY_PARAMS = [*FAST_FAMILIES, pytest.param("ant_dir", marks=pytest.mark.slow)]
BATCH = 6
TINY = {"batch_tasks": 8, "compile": False, "ppo_epochs": 1, "minibatches": 1, "hidden": 16}
"""Overrides applied where an agent's config has the field, for a second or so per test: 8 trials per
update, one pass over them. Architecture switches (MetODS's N, S, write rule) are left as registered."""


def tiny(config):
    fields = {f.name for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{k: v for k, v in TINY.items() if k in fields})


def build(name: str, family: TaskFamily, seed: int = 0, config=None) -> Agent:
    entry = AGENTS.get(name)
    if config is None:
        config = tiny(entry.config(family, SMOKE))
    return entry.build(family, config, seed)


def runs_on(name: str, task: str) -> bool:
    entry = AGENTS.get(name)
    return entry.cls.supports(make_family(task)) and (entry.tasks is None or task in entry.tasks)


@pytest.fixture(params=AGENT_NAMES)
def agent_name(request) -> str:
    return request.param


@pytest.fixture(params=FAMILY_PARAMS)
def family(request, agent_name) -> TaskFamily:
    if not runs_on(agent_name, request.param):
        pytest.skip(f"the runner does not run {agent_name} on {request.param}")
    return make_family(request.param)


# Helpers ------------------------------------------------------------------------


def flatten(memory: Any, path: str = "memory") -> dict[str, Any]:
    """Every leaf of a memory by path: tensors (cloned), and plain scalars (a step counter).

    Memory may be None, a tensor, a tuple of tensors, a dict, a dataclass (MAML's ``MAMLMemory``: a
    ``params`` dict of ``[B, ...]`` tensors, a step count and step buffers), or lists (step buffers)."""
    if memory is None:
        return {}
    if isinstance(memory, torch.Tensor):
        return {path: memory.detach().clone()}
    if dataclasses.is_dataclass(memory) and not isinstance(memory, type):
        items = [(f.name, getattr(memory, f.name)) for f in dataclasses.fields(memory)]
    elif isinstance(memory, Mapping):
        items = list(memory.items())
    elif isinstance(memory, tuple):
        items = list(enumerate(memory))
    elif isinstance(memory, list):  # a step buffer: its entries are named [i] (see per_env)
        return {k: v for i, item in enumerate(memory) for k, v in flatten(item, f"{path}[{i}]").items()}
    elif isinstance(memory, (int, float, bool, str)):
        return {path: memory}
    else:
        raise TypeError(f"{path}: cannot flatten a {type(memory).__name__}; teach flatten() about it")
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{path}.{key}"))
    return out


def assert_same_memory(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def per_env(leaves: dict[str, Any], batch: int) -> dict[str, torch.Tensor]:
    """The leaves that carry one row of state per environment (leading dimension ``batch``).

    Entries of step buffers (lists: MAML's segment log of observations, actions, active flags and rewards)
    are left out: a buffer records every step, inactive ones with their own ``active = False`` entry that
    masks them, and is emptied at each adaptation point; what it decides is checked through the state it
    feeds (MAML's adapted ``params``)."""
    return {k: v for k, v in leaves.items()
            if "[" not in k and isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == batch}


def random_inputs(family: TaskFamily, batch: int, t: int, active: torch.Tensor, gen: torch.Generator) -> AgentInput:
    """A synthetic step: random observations, previous actions and rewards (varied, so that MAML's inner
    advantages are not all zero), the start flags at t = 0, and the tasks' features where the family has them
    (only an agent that sees the task reads them)."""
    space = family.action_space
    if space.discrete:
        prev_action = torch.randint(0, space.n, (batch,), generator=gen)
    else:
        prev_action = space.low + (space.high - space.low) * torch.rand(batch, space.n, generator=gen)
    if t == 0:
        prev_action = space.zeros(batch)
    return AgentInput(
        obs=torch.randn(batch, family.obs_dim, generator=gen),
        prev_action=prev_action,
        prev_reward=torch.zeros(batch) if t == 0 else torch.randn(batch, generator=gen),
        episode_start=torch.full((batch,), t == 0),
        task_start=torch.full((batch,), t == 0),
        active=active,
        task=None if family.task_feature_dim is None else family.task_features(
            family.sample_tasks(batch, "test", torch.Generator().manual_seed(t))),
    )


def steps_for(agent: Agent) -> int:
    """Synthetic steps to drive an agent: past two of MAML's adaptation points where it has them."""
    return 2 * getattr(agent.config, "adapt_every", 5) + 3


def trial_actions(agent: Agent, family: TaskFamily, n_tasks: int = BATCH, seed: int = 7) -> list[torch.Tensor]:
    """The actions of one trial of ``n_tasks`` test tasks through the shared protocol."""
    tasks = family.sample_tasks(n_tasks, "test", task_generator(seed, "test"))
    actions: list[torch.Tensor] = []
    with torch.no_grad():
        run_trials(agent, family, tasks, on_step=lambda inputs, action, step: actions.append(action.clone()))
    return actions


def assert_same_actions(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"actions differ at step {t}"


def one_update(agent: Agent, family: TaskFamily) -> int:
    """Environment steps of one update's batch of full trials (an upper bound where episodes end early)."""
    batch = getattr(agent.config, "batch_tasks", BATCH)
    return batch * family.max_episode_steps * family.episodes_per_trial


def assert_same_state(a: Any, b: Any, path: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), path
        for k in a:
            assert_same_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


# The contract -------------------------------------------------------------------


def test_registry_entries_are_well_formed(agent_name):
    entry = AGENTS.get(agent_name)
    assert entry.name == agent_name
    assert issubclass(entry.cls, Agent)
    assert entry.tasks is None or set(entry.tasks) <= set(FAMILIES.names())
    for task in FAST_FAMILIES:
        fam = make_family(task)
        if entry.cls.supports(fam):
            assert isinstance(entry.config(fam, SMOKE), entry.cls.Config)


def test_inactive_memory_is_unchanged_by_act(agent_name, family):
    """Rows whose ``active`` is False keep their memory exactly, at every step (MAML: also across its
    adaptation points), while the memory of active rows does move."""
    agent = build(agent_name, family)
    gen = torch.Generator().manual_seed(0)
    memory = agent.initial_memory(BATCH)
    moved = False
    with torch.no_grad():
        for t in range(steps_for(agent)):
            # Every row inactive on some steps; row 0 always active, row 1 inactive from step 3 on for good.
            active = torch.rand(BATCH, generator=gen) < 0.6
            active[0] = True
            if t >= 3:
                active[1] = False
            before = per_env(flatten(memory), BATCH)
            action, memory = agent.act(random_inputs(family, BATCH, t, active, gen), memory)
            after = per_env(flatten(memory), BATCH)
            assert action.shape[0] == BATCH
            for k in before.keys() & after.keys():
                if before[k].shape != after[k].shape:
                    continue
                idle = ~active
                assert torch.equal(after[k][idle], before[k][idle]), f"step {t}: {k} changed on an inactive row"
                moved = moved or not torch.equal(after[k][active], before[k][active])
    if per_env(flatten(agent.initial_memory(BATCH)), BATCH):
        assert moved, "no active row's memory ever changed: the check above saw nothing"


def test_memory_is_fresh_at_every_task_start(agent_name, family):
    """``initial_memory`` gives the same memory twice, and again after a trial has been acted on it
    (acting must not write into the fresh memory nor into what it was built from)."""
    agent = build(agent_name, family)
    first = flatten(agent.initial_memory(BATCH))
    assert_same_memory(flatten(agent.initial_memory(BATCH)), first)
    gen = torch.Generator().manual_seed(1)
    memory = agent.initial_memory(BATCH)
    with torch.no_grad():
        for t in range(steps_for(agent)):
            _, memory = agent.act(random_inputs(family, BATCH, t, torch.ones(BATCH, dtype=torch.bool), gen), memory)
    trial_actions(agent, family)  # and a trial through the protocol
    assert_same_memory(flatten(agent.initial_memory(BATCH)), first)


def test_same_seed_same_actions(agent_name, family):
    """Two agents built with the same seed and config act the same through :func:`run_trials`, whatever
    the global torch RNG did in between (an agent samples from its own generator)."""
    a = build(agent_name, family, seed=3)
    torch.rand(17)  # move the global RNG between the two builds and the two trials
    b = build(agent_name, family, seed=3)
    first = trial_actions(a, family)
    torch.rand(5)
    assert_same_actions(first, trial_actions(b, family))


def test_state_dict_round_trip(agent_name, family):
    """An agent trained a little, saved as the runner saves it (``torch.save``, loaded with
    ``weights_only=True``) into an agent of another seed: both then act the same on the same tasks."""
    a = build(agent_name, family, seed=0)
    a.meta_train(family, one_update(a, family), RecordingMonitor())
    b = build(agent_name, family, seed=1)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert_same_state(b.state_dict(), a.state_dict())
    assert_same_actions(trial_actions(a, family), trial_actions(b, family))
    # The loaded state is a copy: acting moved both generators alike, and they still agree.
    assert_same_actions(trial_actions(a, family, seed=8), trial_actions(b, family, seed=8))


def test_meta_train_respects_the_budget(agent_name, family):
    """``meta_train`` returns the env steps it used, at most the budget; the monitor never hears of more.
    A budget of 1.5 updates' worth is not rounded up to 2; a budget below one update's batch is not overrun
    (0 steps used)."""
    agent = build(agent_name, family)
    budget = one_update(agent, family) * 3 // 2
    monitor = RecordingMonitor()
    used = agent.meta_train(family, budget, monitor)
    assert isinstance(used, int) and 0 <= used <= budget
    steps = [s for s, _, _ in monitor.log]
    assert steps == sorted(steps)
    if steps:
        assert steps[-1] <= used <= budget
        assert all(s > 0 for s in steps)
        for _, _, scalars in monitor.log:
            assert all(torch.isfinite(torch.tensor(float(v))) for v in scalars.values()), scalars
    small = build(agent_name, family)
    monitor = RecordingMonitor()
    assert small.meta_train(family, 10, monitor) == 0
    assert monitor.log == []


@pytest.mark.parametrize("task", FAMILIES.names())
def test_runner_plan_honours_supports_and_tasks(agent_name, task):
    """The runner plans an (agent, task) pair iff the class ``supports`` the family and the entry's
    ``tasks`` include it; otherwise it skips it with a note."""
    suite = SUITES.get(FAMILIES.get(task).suite)
    runs, notes = plan([agent_name], [suite], SMOKE, seeds=1, tasks=[task])
    entry = AGENTS.get(agent_name)
    fam = make_family(task)
    if not entry.cls.supports(fam):
        assert runs == [] and notes == [f"{agent_name} does not support {task}; skipped"]
    elif entry.tasks is not None and task not in entry.tasks:
        assert runs == [] and len(notes) == 1 and f"skipped on {task}" in notes[0]
    else:
        assert notes == [] and [(r.agent, r.task) for r in runs] == [(agent_name, task)]


class DiscreteOnly(RandomAgent):
    @classmethod
    def supports(cls, family):
        return family.action_space.discrete


def test_plan_skips_an_unsupported_family_with_a_note(temp_agent):
    """Not vacuous when every registered agent supports every family: an agent refusing continuous
    actions is planned on Harlow and the maze and skipped, with a note, on every MuJoCo task."""
    suites = [SUITES.get(n) for n in SUITES.names()]
    with temp_agent("discrete_only", DiscreteOnly):
        runs, notes = plan(["discrete_only"], suites, SMOKE, seeds=1)
    planned = {r.task for r in runs}
    refused = [t for s in suites for t in s.tasks if not make_family(t).action_space.discrete]
    assert planned == {t for s in suites for t in s.tasks} - set(refused)
    assert {"harlow", "maze"} <= planned and refused
    assert notes == [f"discrete_only does not support {t}; skipped" for t in refused]
