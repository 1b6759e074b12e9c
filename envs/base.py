"""The task-family interface every metabench environment implements.

Words (the project spec): a *task* is one draw from a task family (a Harlow item pair, a
maze layout and target, an Ant direction); an *episode* is one reset under a
fixed task; a *trial* is the ``episodes_per_trial`` episodes of one task during
which an agent may adapt. Agents never see the task itself.

A :class:`TaskFamily` does three things:

1. **Samples tasks** from seeded streams, separately for the ``train`` and the
   ``test`` split: ``family.sample_tasks(n, split, task_generator(seed, split))``
   returns a :class:`TaskBatch`, a dataclass of tensors with a leading ``[n]``
   dimension (task parameters as tensors, gymnax-style) plus one integer
   ``key`` per task that seeds that task's dynamics randomness (see
   :mod:`metabench.envs.rng`).
2. **Builds a batched environment** over a batch of tasks:
   ``env = family.make_env(tasks)``. :class:`BatchedEnv` steps all B tasks at
   once, every tensor with a leading ``[B]`` dimension; pure-torch families
   (Harlow, maze) hold their state as tensors and never loop over
   environments in Python.
3. **Declares** its observation size, action space, episode cap, episodes per
   trial and the per-episode metrics it reports (:class:`MetricSpec`).

Episodes run in lock-step: ``reset()`` starts a new episode of the same tasks
in every environment; an environment whose episode has ended stays *done*
(absorbing: reward 0, ``active`` False) until the next ``reset()``, so a
batch is a fixed ``[T, B]`` block with a mask, what a BPTT trainer wants.

**Gymnasium-backed families** (the MuJoCo tasks; Meta-World next) use the same
interface through the shared adapter :class:`metabench.envs.gym_adapter.GymnasiumEnv`:
a pool of simulators, only the active ones stepped, numpy <-> torch at the
boundary, ``terminated``/``truncated`` kept apart, and ``info`` signals (e.g.
Meta-World's ``success``) passed on per step and per episode. A family
supplies its action mapping, its reward and its reset. Nothing above the
family changes.

**Fixed task pools.** Where the benchmark defines a finite set of tasks
(Meta-World's 50 goals per class), :meth:`TaskFamily.task_pool` returns it and
``sample_tasks`` draws from it (:func:`draw_from_pool`), setting
``TaskBatch.task_id`` so that a learner can keep per-task data.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

import torch

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


@dataclass(frozen=True)
class ActionSpace:
    """Discrete (``n`` actions, int64 ``[B]``) or continuous (``n`` dims, float ``[B, n]`` in [low, high])."""

    kind: Literal["discrete", "continuous"]
    n: int
    low: float = -1.0
    high: float = 1.0

    @property
    def discrete(self) -> bool:
        return self.kind == "discrete"

    def zeros(self, batch: int) -> torch.Tensor:
        """A batch of "no previous action" placeholders."""
        if self.discrete:
            return torch.zeros(batch, dtype=torch.int64)
        return torch.zeros(batch, self.n)


@dataclass(frozen=True)
class MetricSpec:
    """A per-episode metric a family reports.

    ``paper`` names the row of ``paper_results.csv`` holding the paper's value
    for it, as ``(task, metric, scale)``: our value × scale is comparable.
    """

    name: str
    higher_is_better: bool
    description: str
    paper: tuple[str, str, float] | None = None
    last_episode_of: str | None = None
    """Where set, the metric is the episode metric of that name on the trial's last episode only (Meta-World's
    ``success_last``): :func:`metabench.protocol.evaluate` computes it, the environment does not report it."""
    bounds: tuple[float, float] | None = None
    """The values it can take, where bounded (a share of episodes: ``(0, 1)``); a report's 95 % band of it is
    drawn within them."""

    def covers(self, name: str) -> bool:
        """Whether ``name`` is this metric or one of its variants (``success_train``, ``success_larger``)."""
        return name == self.name or name.startswith(self.name + "_")


T = TypeVar("T", bound="TaskBatch")


@dataclass
class TaskBatch:
    """A batch of tasks: every field a tensor with leading dimension ``[n]``.

    ``key`` seeds each task's dynamics randomness. Subclasses add the task
    parameters (e.g. Harlow's item values and rewarded item).
    """

    key: torch.Tensor
    task_id: torch.Tensor | None = dataclasses.field(default=None, kw_only=True)
    """int64 ``[n]``: each task's index in its family's fixed pool (:meth:`TaskFamily.task_pool`), so that a
    learner can keep per-task data (PEARL's replay buffers); None for tasks drawn from a stream."""

    def __len__(self) -> int:
        return int(self.key.shape[0])

    def index(self: T, idx: slice | torch.Tensor | int) -> T:
        """The sub-batch ``idx`` (an int keeps a batch dimension of 1)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        parts = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return type(self)(**{k: None if v is None else v[idx] for k, v in parts.items()})


def draw_from_pool(pool: TaskBatch, n: int, generator: torch.Generator) -> TaskBatch:
    """``n`` tasks drawn uniformly with replacement from a fixed pool (``task_id`` set), for a family's
    :meth:`TaskFamily.sample_tasks`. Each draw gets a fresh ``key``: the same goal twice is two trials with
    their own dynamics randomness."""
    from . import rng

    ids = torch.randint(0, len(pool), (n,), generator=generator)
    batch = pool.index(ids)
    batch.key = rng.new_keys(n, generator)
    batch.task_id = ids if pool.task_id is None else pool.task_id[ids]
    return batch


@dataclass
class Step:
    """One batched transition.

    ``active``: the environment was inside its episode before this step, so the
    transition is real; ``terminated``/``truncated``: this transition ended the
    episode (never both; bootstrap the value on truncation only). Inactive
    environments return reward 0 and both flags False.
    """

    obs: torch.Tensor
    """The observation after the step (for an episode that just ended: its final observation)."""
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    active: torch.Tensor
    info: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    """Per-step signals ``[B]`` beside the reward (e.g. Meta-World's ``success``); 0 where inactive."""


@dataclass
class MemoryLabels:
    """A binary label of each step of a batch of trials, for the analysis of an agent's memory
    (:mod:`metabench.analyze`): which of two situations the trial is in, and the step where it is decided."""

    labels: torch.Tensor
    """int64 ``[T, B]``: 0 or 1 per active step, -1 where undefined (inactive, or a trial never decided)."""
    decided_at: torch.Tensor
    """int64 ``[B]``: the step where each trial's label is decided (-1: never)."""
    names: tuple[str, str]
    """What labels 0 and 1 mean."""
    event: str
    """What decides it, for axis titles ("the first choice")."""


class BatchedEnv(ABC):
    """B environments, one per task, stepped together."""

    num_envs: int

    @abstractmethod
    def reset(self) -> torch.Tensor:
        """Start a new episode of the same tasks everywhere; returns obs ``[B, obs_dim]``."""

    @abstractmethod
    def step(self, action: torch.Tensor) -> Step:
        """Advance every active environment by one step."""

    @property
    @abstractmethod
    def done(self) -> torch.Tensor:
        """``[B]`` bool: the environment's episode is over."""

    @abstractmethod
    def episode_metrics(self) -> dict[str, torch.Tensor]:
        """Per-environment metrics ``[B]`` of the current (usually just finished) episode."""


@dataclass(frozen=True)
class FamilyConfig:
    """Base of every family's frozen config; fields carry docstrings in subclasses."""


class TaskFamily(ABC):
    """A distribution over tasks plus the batched environment that runs them."""

    name: ClassVar[str]
    Config: ClassVar[type[FamilyConfig]]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    primary_metric: ClassVar[str]
    solved: ClassVar[tuple[str, float] | None] = None
    """``(metric, threshold)``: a run *solves* the task when its held-out mean of ``metric`` is at least
    ``threshold``; the reports give the share of seeds that do, with a Wilson interval (None: no such line)."""

    def __init__(self, config: FamilyConfig | None = None):
        self.config = config if config is not None else self.Config()

    # Declared sizes ---------------------------------------------------------
    @property
    @abstractmethod
    def obs_dim(self) -> int: ...

    @property
    @abstractmethod
    def action_space(self) -> ActionSpace: ...

    @property
    @abstractmethod
    def max_episode_steps(self) -> int:
        """Cap on steps in an episode (reaching it is a truncation)."""

    episodes_per_trial: int = 1

    curve_xscale: ClassVar[str] = "linear"
    """x scale of the learning-curve figure ("log" for the maze, like the paper's Fig. 4b/c)."""
    curve_metric: ClassVar[str | None] = None
    """The metric of the learning-curve figure (None: :attr:`primary_metric`); Meta-World draws meta-train
    success (``success_train``), as the paper's Fig. 6."""
    curve_x: ClassVar[str] = "env_steps"
    """x of the learning-curve figure: "env_steps" (meta-training env steps) or "episodes" (meta-training
    episodes, as the paper draws Harlow in its Fig. 3c; the mean over seeds at each checkpoint)."""

    # Tasks and environments -------------------------------------------------
    @abstractmethod
    def sample_tasks(self, n: int, split: Split, generator: torch.Generator) -> TaskBatch: ...

    @abstractmethod
    def make_env(self, tasks: TaskBatch) -> BatchedEnv: ...

    def task_pool(self, split: Split) -> TaskBatch | None:
        """The fixed, finite set of tasks of ``split`` where the benchmark defines one (Meta-World: 50 goals
        per task class), with ``task_id`` = 0..n-1; ``sample_tasks`` then draws from it
        (:func:`draw_from_pool`). None, the default: tasks come from an unbounded seeded stream (Harlow,
        the maze, the MuJoCo directions)."""
        return None

    @property
    def task_feature_dim(self) -> int | None:
        """Width of :meth:`task_features`, or None where the family gives none (the default)."""
        return None

    def task_features(self, tasks: TaskBatch) -> torch.Tensor:
        """What a task *is*, as float features ``[n, task_feature_dim]``, for reference agents that are given
        the task instead of inferring it (the ``oracle``): never shown to a meta-learner
        (:attr:`metabench.agents.base.Agent.sees_task`)."""
        raise NotImplementedError(f"task family {self.name!r} gives no task features")

    def training_family(self, progress: float) -> "TaskFamily":
        """The family a trainer draws its training trials from at ``progress`` in [0, 1] of its budget.

        A curriculum's hook (Harlow's ``curriculum``); this family itself by default. Held-out
        evaluation always runs the family itself, so a curriculum must keep ``obs_dim`` and
        the action space, and should end on the task as specified.
        """
        return self

    def evaluation_variants(self) -> dict[str, "TaskFamily"]:
        """Families a trained agent is also scored on, by metric-name suffix.

        ``{"": self}`` by default; the maze adds ``{"_larger": L=10 maze}``, the
        impairment tasks add frozen-joint variants. The runner evaluates every
        variant with the same protocol and suffixes its metric names.
        """
        return {"": self}

    def curve_variants(self) -> dict[str, "TaskFamily"]:
        """The evaluation variants followed along training too (the learning curves), by suffix: the family
        itself by default; Meta-World adds its meta-train goals (``_train``)."""
        return {"": self}

    def with_config(self, **changes) -> "TaskFamily":
        """This family with config fields replaced (a task's per-profile overrides, e.g. shorter Meta-World
        trials on ``smoke``): a shallow copy, so a family must derive everything it uses from ``config``."""
        clone = copy.copy(self)
        clone.config = dataclasses.replace(self.config, **changes)
        return clone

    def scored_metrics(self) -> list[tuple[str, str, MetricSpec]]:
        """(record metric name, variant suffix, spec) for the family and each evaluation variant."""
        return [(f"{m.name}{suffix}", suffix, m)
                for suffix, variant in self.evaluation_variants().items() for m in variant.metrics]

    def table_metrics(self) -> list[str]:
        """Record metric names in the report's main table (default: every scored metric)."""
        return [name for name, _suffix, _spec in self.scored_metrics()]

    def retention_variants(self) -> dict[str, str]:
        """Evaluation variants that impair the same trained agent, by suffix -> label (the impairment tasks).

        The report scores each as retention = impaired / unimpaired primary metric, beside the
        return normalised by the best agent's unimpaired one (the paper's Fig. 6 format).
        """
        return {}

    def other_references(self) -> tuple[str, ...]:
        """Task names of ``paper_results.csv`` rows from another source than the paper's figure (Meta-World's own
        table for ML10), printed under the task's table with their caveats; none by default."""
        return ()

    def reference_levels(self) -> dict[str, float]:
        """Named levels of the primary metric drawn on figures (e.g. Harlow's maximum 6.2)."""
        return {}

    def memory_labels(self, rewards: torch.Tensor, active: torch.Tensor) -> "MemoryLabels | None":
        """What ``metabench analyze`` colours an agent's memory by, from a batch of held-out trials' rewards and
        active masks ``[T, B]``; None (the default): the family offers no such label."""
        return None

    def ceiling(self) -> float | None:
        """The documented ceiling of the primary metric (normalised score 1; Random is 0), or None."""
        return None

    def draw_samples(self, fig) -> bool:
        """Draw a few sample tasks on a matplotlib figure for the report; False if the family has no picture."""
        return False

    def metric(self, name: str) -> MetricSpec:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def metric_bounds(self, name: str) -> tuple[float, float] | None:
        """The bounds of metric ``name`` or of the metric it is a variant of (the longest name that prefixes it:
        ``success_last_train`` is ``success_last``'s), None if unbounded or unknown."""
        specs = sorted((m for m in self.metrics if m.covers(name)), key=lambda m: len(m.name), reverse=True)
        return specs[0].bounds if specs else None


def task_generator(seed: int, split: Split) -> torch.Generator:
    """The seeded task stream of one split; train and test streams never coincide."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + (0x5EED if split == "train" else 0x7E57))
    return g
