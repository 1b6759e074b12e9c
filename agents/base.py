"""The agent interface every metabench agent implements (Random, MetODS, RL², MAML, PEARL).

An agent does two things, and the runner knows nothing else about it:

1. **Meta-trains** on a task family within an environment-step budget:
   ``agent.meta_train(family, budget_env_steps, monitor)``. The agent owns its
   training loop (rollouts, losses, optimisers) and reports progress through
   the :class:`TrainingMonitor`, which records curves, runs the shared
   held-out evaluation at the intervals the profile sets, and raises
   :class:`TrainingDiverged` on a non-finite scalar. It returns the number of
   environment steps it used. A loop that keeps its own state between updates
   in :attr:`Agent.loop` (a :class:`TrainLoop`) can be checkpointed at any
   ``monitor.update`` and resumed from there (:meth:`Agent.training_checkpoint`,
   :meth:`Agent.resume_training`): the runner does so, so a killed run goes on
   from its last checkpoint and ends with the record it would have had.
2. **Acts** with per-trial memory: ``memory = agent.initial_memory(B)`` at task
   start, then ``action, memory = agent.act(inputs, memory)`` at every step
   of every episode of the trial. Memory is whatever the agent carries
   through a trial (RL²'s hidden state, MetODS's weights W, PEARL's context,
   MAML's step buffer and adapted parameters); the runner only passes it back.
   MAML adapts mid-trial *inside* ``act`` (it sees the rewards as
   ``prev_reward``), so the runner never special-cases it.

Every agent sees, at each step (the project spec, "Words"), an :class:`AgentInput`:
observation, previous action, previous reward, episode-start and task-start
flags, and the ``active`` mask; an agent must leave the memory of inactive
environments unchanged (:func:`keep_inactive`).

Agents are registered as :class:`AgentEntry` objects: a class, plus config
overrides for named variants (``metods_s1`` is ``metods`` with ``S=1``), so an
ablation is data, not a subclass.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from metabench.envs.base import ActionSpace, TaskFamily

if TYPE_CHECKING:
    from metabench.profiles import Profile


class GeneratorState:
    """A ``torch.Generator`` seen as something with ``state_dict`` / ``load_state_dict``."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generator.set_state(state["state"])


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite number; the run is recorded as failed."""


@dataclass
class AgentInput:
    """What every agent sees at one step of a batch of trials (all ``[B, ...]``)."""

    obs: torch.Tensor
    prev_action: torch.Tensor
    """int64 ``[B]`` (discrete) or float ``[B, A]``; zeros at task start."""
    prev_reward: torch.Tensor
    """float ``[B]``; 0 at task start."""
    episode_start: torch.Tensor
    """bool ``[B]``: first step of an episode."""
    task_start: torch.Tensor
    """bool ``[B]``: first step of a trial; memory was just reset."""
    active: torch.Tensor
    """bool ``[B]``: the environment's episode is still running."""
    task: torch.Tensor | None = None
    """float ``[B, K]``: the tasks themselves (:meth:`TaskFamily.task_features`), given only to an agent whose
    :attr:`Agent.sees_task` is True (the ``oracle`` reference row); None for every meta-learner."""

    def to(self, device: torch.device | str) -> "AgentInput":
        """These inputs on ``device`` (itself where every tensor is there already): the protocol and the task
        families work on the CPU, an agent computing elsewhere (``--device cuda``) moves what it sees."""
        device = torch.device(device)  # once: this runs at every step of every trial
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if all(v is None or v.device == device for v in moved.values()):
            return self
        return AgentInput(**{k: None if v is None else v.to(device) for k, v in moved.items()})

    def features(self, action_space: ActionSpace) -> torch.Tensor:
        """[obs, one-hot or raw previous action, previous reward, episode-start flag] as one float tensor."""
        if action_space.discrete:
            a = torch.nn.functional.one_hot(self.prev_action, action_space.n).to(self.obs.dtype)
        else:
            a = self.prev_action.to(self.obs.dtype)
        return torch.cat(
            [self.obs, a, self.prev_reward.unsqueeze(1), self.episode_start.to(self.obs.dtype).unsqueeze(1)], dim=1
        )


REWARD_FEATURE = -2
"""Column of the previous reward in :meth:`AgentInput.features`, counted from the end (the flag follows it)."""


def feature_dim(family: TaskFamily) -> int:
    """Width of :meth:`AgentInput.features` for a family."""
    return family.obs_dim + family.action_space.n + 2


def keep_inactive(active: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where the environment is active, ``old`` elsewhere (broadcast over trailing dims)."""
    mask = active.view(-1, *([1] * (new.dim() - 1)))
    return torch.where(mask, new, old)


@dataclass
class TrainLoop:
    """A meta-training loop's own state between two updates, beyond the agent's :meth:`Agent.stateful` parts.

    A loop keeps everything it carries from one update to the next here (not in local variables), and has
    it up to date whenever it calls ``monitor.update``: then this and :meth:`Agent.state_dict` are all a
    checkpoint needs for the loop to go on exactly as it would have (:meth:`Agent.training_checkpoint`).
    """

    generator: torch.Generator
    """The stream of training tasks."""
    steps: int = 0
    """Env steps used so far."""
    episodes: int = 0
    """Training episodes so far."""
    summary: dict[str, float] = field(default_factory=dict)
    """The scalars :meth:`Agent.training_summary` reports."""
    extra: dict[str, Any] = field(default_factory=dict)
    """The trainer's own (PEARL: its replay and context buffers, its slot counter)."""


class TrainingMonitor(Protocol):
    """What an agent reports to while it meta-trains (implemented by the runner)."""

    def update(self, env_steps: int, episodes: int, scalars: Mapping[str, float]) -> None:
        """After each update: log training scalars; may run the held-out evaluation.

        Raises :class:`TrainingDiverged` if any scalar is not finite.
        """


@dataclass(frozen=True)
class AgentConfig:
    """Base of every agent's frozen config (fields documented in subclasses)."""


class Agent(ABC):
    """A meta-RL agent: meta-trains on a family, then acts with per-trial memory."""

    Config: ClassVar[type[AgentConfig]] = AgentConfig
    defaults_key: ClassVar[str] = ""
    """The name this class's rows carry in the defaults table (:mod:`metabench.agents.defaults`)."""

    action_generator: torch.Generator | None = None
    """The stream :meth:`act` draws its actions from, if it draws any: the agent's own (seeded by its seed,
    saved with it), swapped for another while it is evaluated (:meth:`acting_with`)."""

    device: torch.device = torch.device("cpu")
    """Where the agent's networks and per-trial memory live (:meth:`to`). Whatever it is, :meth:`act` takes the
    protocol's CPU inputs and returns CPU actions, drawn from the CPU :attr:`action_generator`: the task
    families, the protocol and the random streams are the same on every device."""

    def __init__(self, family: TaskFamily, config: AgentConfig, seed: int):
        self.family = family
        self.config = config
        self.seed = seed

    def to(self, device: torch.device | str) -> "Agent":
        """Move the agent's learned parts (the modules among :meth:`stateful`) to ``device``, before it trains or
        loads a state; returns the agent. Modules move in place, so an optimiser built on their parameters
        stays valid."""
        self.device = torch.device(device)
        for obj in self.stateful().values():
            if isinstance(obj, torch.nn.Module):
                obj.to(self.device)
        return self

    @contextmanager
    def acting_with(self, generator: torch.Generator) -> Iterator[None]:
        """Draw actions from ``generator`` inside the block, leaving :attr:`action_generator` where it was.

        The held-out evaluation runs under it (:func:`metabench.protocol.evaluate`), so that evaluating along
        training does not move training's own stream (a run's training is the same whatever its number of
        curve points), and so that a saved agent rescored draws what its record's evaluation drew."""
        own = self.action_generator
        self.action_generator = generator
        try:
            yield
        finally:
            self.action_generator = own

    @property
    def sees_task(self) -> bool:
        """Whether the protocol gives this agent the task itself (:attr:`AgentInput.task`): only reference agents
        that bound what inferring the task is worth (the ``oracle``); False for every meta-learner."""
        return False

    @classmethod
    def supports(cls, family: TaskFamily) -> bool:
        """Whether this agent can run on the family (e.g. its action space)."""
        return True

    @classmethod
    def row_note(cls, family: TaskFamily) -> str | None:
        """A footnote for this agent's rows on ``family`` in the reports, where the row is not what the paper
        ran (PEARL's discrete SAC on Harlow and the maze: our extension); None by default."""
        return None

    @classmethod
    def default_config(cls, family: TaskFamily, profile: "Profile") -> AgentConfig:
        """Hyperparameters for this family and profile: the rows of the defaults table that apply."""
        from .defaults import defaults_for

        return cls.Config(**defaults_for(cls.defaults_key, cls.Config, family.name, profile.name))

    @abstractmethod
    def meta_train(self, family: TaskFamily, budget_env_steps: int, monitor: TrainingMonitor) -> int:
        """Meta-train on ``family``'s train tasks; returns the environment steps used (<= budget)."""

    def training_summary(self) -> dict[str, float]:
        """Scalars about the finished meta-training, saved in the record as ``train_*`` metrics."""
        return dict(self.loop.summary) if self.loop is not None else {}

    loop: TrainLoop | None = None
    """The meta-training loop's state (None before :meth:`meta_train` starts, and for an agent that trains
    nothing): with :meth:`state_dict`, what a checkpoint of an unfinished run holds."""

    def training_checkpoint(self) -> dict[str, Any]:
        """Everything :meth:`meta_train` needs to go on from the last ``monitor.update``: the agent's state and
        its loop's. To be serialised at once (``torch.save``): the loop is not copied."""
        return {"state": self.state_dict(), "loop": self.loop}

    def resume_training(self, checkpoint: Mapping[str, Any]) -> None:
        """Restore :meth:`training_checkpoint` into an agent built with the same config; :meth:`meta_train`
        then goes on from there."""
        self.load_state_dict(checkpoint["state"])
        self.loop = checkpoint["loop"]

    def run_info(self) -> dict[str, str]:
        """How this agent computes, where it has a choice the config does not fix (MetODS: which memory kernel
        runs, fused or autograd); saved in the record's ``platform``. Empty by default."""
        return {}

    def stateful(self) -> dict[str, Any]:
        """What a trained agent is, by name: objects with ``state_dict`` / ``load_state_dict`` (modules,
        optimiser, the action generator as :class:`GeneratorState`). Empty: nothing is learned (Random)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The trained agent's state (copies): the runner saves it beside the record as ``seed<N>.pt``."""
        return {name: copy.deepcopy(obj.state_dict()) for name, obj in self.stateful().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into an agent built with the same config."""
        parts = self.stateful()
        if set(state) != set(parts):
            raise ValueError(f"{type(self).__name__} state has parts {sorted(state)}, expected {sorted(parts)}")
        for name, obj in parts.items():
            obj.load_state_dict(state[name])

    @abstractmethod
    def initial_memory(self, batch_size: int) -> Any:
        """Fresh per-trial memory for ``batch_size`` tasks (called at every task start)."""

    @abstractmethod
    def act(self, inputs: AgentInput, memory: Any) -> tuple[torch.Tensor, Any]:
        """Actions for one step and the updated memory. Called under ``torch.no_grad`` in evaluation."""


@dataclass(frozen=True)
class AgentEntry:
    """A registered agent name: its class and the config overrides that make this variant."""

    name: str
    cls: type[Agent]
    summary: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    paper_fallback: str | None = None
    """Agent of the paper's tables shown beside this one where the paper has no row of its own
    (``untrained`` -> the paper's Random row on the maze)."""
    tasks: tuple[str, ...] | None = None
    """The tasks this name is run on (None: every task the class supports). The MetODS
    ablations are the paper's Harlow and maze experiments, not run on MuJoCo by default."""
    seeds: Mapping[str, int] = field(default_factory=dict)
    """Seeds per task under a profile (name -> count) when ``--seeds`` is not given, where this name runs fewer
    than the profile's: the ablations run 3 on ``quick`` (:meth:`~metabench.profiles.Profile.seeds_for`)."""

    def config(self, family: TaskFamily, profile: "Profile") -> AgentConfig:
        return dataclasses.replace(self.cls.default_config(family, profile), **self.overrides)

    def build(self, family: TaskFamily, config: AgentConfig, seed: int) -> Agent:
        return self.cls(family, config, seed)
