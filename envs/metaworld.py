"""Meta-World (generality): ML1 reach, ML1 push and ML10, on metaworld 3.x's v3 tasks.

The project spec, "Meta-World". A *task* is one of metaworld's own goals: ML1
has 50 training and 50 test goals of one task class (reach-v3, push-v3), the
test goals from metaworld's own seeding (``ML1(name, seed)`` draws the test
goals with ``seed + 1``); ML10 has 50 goals of each of 10 training classes and
of 5 held-out test classes. The goals come from ``metaworld.ML1`` /
``metaworld.ML10`` directly, seeded with :attr:`MetaWorldConfig.seed` (metaworld
reseeds the global numpy RNG for that and restores it); never from the
gymnasium registrations, whose traps are guarded by tests:

- ``gym.make_vec("Meta-World/ML1-train")`` captures ``split`` by reference and
  silently builds the *test* split (upstream PR #573); ``gym.make`` of ML1
  fails (#541); ``make_vec`` asserts unless the meta-batch divides 50.
- Stepping past the 500-step cap raises: an episode here lasts at most
  ``episode_steps`` <= 500 steps (a truncation) and every episode starts with a
  reset. ``terminated`` stays False (no auto-terminate wrapper).
- ``set_task`` must come before a reset: every reset here sets the task first.

A *trial* is ``episodes_per_trial`` = 10 episodes x 500 steps of one goal, the
agent's memory carried across its episodes (the shared protocol), the goal
never observed (metaworld's partially observable mode zeroes its entries).
With a task set, metaworld's reset is deterministic (the goal's ``rand_vec``
fixes object and target positions), so an episode needs no seed of its own.

**Metrics.** An episode succeeds if ``info["success"]`` is 1 at any step
(metaworld's ``evaluation.py``): ``success`` per episode, ``success_last`` on
the trial's last episode only (what the trial's adaptation reached), and the
return. Held-out scores are on the test goals (ML10: the 5 test classes); the
evaluation variant ``_train`` scores the same trained agent on the meta-train
goals (``success_train``: the paper's Fig. 6 "meta-training success"), and
the learning curves follow both.

**Simulation** is the shared gymnasium adapter: one pool of simulators per
task class, each environment borrowing one of its task's class.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import numpy as np
import torch

from .base import ActionSpace, FamilyConfig, MetricSpec, Split, TaskBatch, TaskFamily, draw_from_pool
from .gym_adapter import GymnasiumEnv, SimulatorPool, simulator_pool

MAX_PATH_LENGTH = 500
"""metaworld's cap on an episode (stepping past it raises)."""
OBS_DIM, ACTION_DIM = 39, 4
"""metaworld v3's observation and action sizes (checked when a simulator is built)."""


@dataclass(frozen=True)
class MetaWorldConfig(FamilyConfig):
    benchmark: Literal["ML1", "ML10"] = "ML1"
    """metaworld's meta-learning benchmark: ML1 (goals of one class) or ML10 (10 train, 5 test classes)."""
    env_name: str = "reach-v3"
    """ML1's task class (a metaworld v3 name); ignored by ML10."""
    seed: int = 0
    """metaworld's benchmark seed: which 50 goals per class (the same for every run, as in metaworld's tables)."""
    episodes_per_trial: int = 10
    """Episodes of one goal in a trial (memory carried across them)."""
    episode_steps: int = MAX_PATH_LENGTH
    """Steps of an episode, at most metaworld's 500 (reaching it is a truncation)."""
    eval_split: Literal["test", "train"] = "test"
    """Where held-out evaluation draws its goals: metaworld's test split, or its train split (the ``_train``
    evaluation variant: meta-train success)."""

    def __post_init__(self):
        if self.benchmark not in ("ML1", "ML10"):
            raise ValueError(f"benchmark must be 'ML1' or 'ML10', got {self.benchmark!r}")
        if self.episodes_per_trial < 1:
            raise ValueError(f"episodes_per_trial must be >= 1, got {self.episodes_per_trial}")
        if not 1 <= self.episode_steps <= MAX_PATH_LENGTH:
            raise ValueError(f"episode_steps must be in [1, {MAX_PATH_LENGTH}] (metaworld raises past its cap), "
                             f"got {self.episode_steps}")
        if self.eval_split not in ("test", "train"):
            raise ValueError(f"eval_split must be 'test' or 'train', got {self.eval_split!r}")


@functools.lru_cache(maxsize=8)
def metaworld_benchmark(benchmark: str, env_name: str, seed: int) -> Any:
    """The ``metaworld.ML1`` / ``metaworld.ML10`` object (its goals), built once per process (ML10: ~10 s)."""
    import metaworld

    if benchmark == "ML1":
        if env_name not in metaworld.ML1.ENV_NAMES:
            raise ValueError(f"{env_name!r} is not a metaworld v3 task class")
        return metaworld.ML1(env_name, seed=seed)
    return metaworld.ML10(seed=seed)


@dataclass
class MetaWorldTasks(TaskBatch):
    split: torch.Tensor
    """``[n]`` int64: 0 = metaworld's train goals, 1 = its test goals."""
    goal: torch.Tensor
    """``[n]`` int64: index into that split's list of metaworld tasks."""


class _UncheckedRotation:
    """Stands in for scipy's ``Rotation`` in a metaworld task module: ``from_matrix`` with ``assume_valid=True``.

    Every v3 task computes its object's quaternion from MuJoCo's rotation matrix with
    ``Rotation.from_matrix(xmat).as_quat()`` at every step, and scipy's check that the matrix is a rotation
    (a determinant and an ``isclose`` per call) costs ~6x the conversion itself.
    MuJoCo's ``xmat`` is built from a unit quaternion, so it is a rotation to rounding, scipy's check passes
    and changes nothing: the quaternion is the same to the bit.
    """

    @staticmethod
    def from_matrix(matrix: Any) -> Any:
        from scipy.spatial.transform import Rotation

        return Rotation.from_matrix(matrix, assume_valid=True)


def _touching_object(self: Any, object_geom_id: int) -> bool:
    """``SawyerXYZEnv.touching_object`` on MuJoCo's contact arrays: both pads push on the object.

    metaworld's own walks ``data.contact`` in a Python list comprehension, twice, building a contact wrapper
    per element; in every class that scores a grasp (push, pick-place, sweep, shelf-place, ...) that walk
    cost more than the physics. Same contacts, same order, same float sum per pad, so the same answer."""
    data = self.data
    if data.ncon == 0:
        return False
    contact = data.contact
    g1, g2 = contact.geom1, contact.geom2
    on_object = (g1 == object_geom_id) | (g2 == object_geom_id)
    if not on_object.any():
        return False
    force, address = data.efc_force, contact.efc_address
    pad_forces = []
    for pad in ("leftpad_geom", "rightpad_geom"):
        pad_id = data.geom(pad).id
        pad_forces.append(sum(force[a] for a in address[on_object & ((g1 == pad_id) | (g2 == pad_id))]))
    return 0 < pad_forces[0] and 0 < pad_forces[1]


def _obs_without_goal(self: Any) -> np.ndarray:
    """``SawyerXYZEnv._get_curr_obs_combined_no_goal`` with slices for its splits and stacks: hand position,
    gripper opening, then (position, quaternion) per object, zero-padded. The same numbers copied into the
    same float64 slots."""
    pos_hand = self.get_endeff_pos()
    data = self.data
    gripper = np.clip(np.linalg.norm(data.body("rightclaw").xpos - data.body("leftclaw").xpos) / 0.1, 0.0, 1.0)
    obj_pos, obj_quat = self._get_pos_objects(), self._get_quat_objects()
    n = len(obj_pos) // 3
    assert len(obj_pos) == 3 * n and len(obj_quat) == 4 * n, (len(obj_pos), len(obj_quat))
    obs = np.zeros(4 + self._obs_obj_max_len)
    obs[:3] = pos_hand
    obs[3] = gripper
    for k in range(n):
        obs[4 + 7 * k:7 + 7 * k] = obj_pos[3 * k:3 * k + 3]
        obs[7 + 7 * k:11 + 7 * k] = obj_quat[4 * k:4 * k + 4]
    return obs


_FAST_METHODS = {"touching_object": _touching_object, "_get_curr_obs_combined_no_goal": _obs_without_goal}
"""``SawyerXYZEnv`` methods replaced, process-wide, once a simulator is built (no task class overrides them)."""
_SHIPPED_METHODS: dict[str, Any] = {}
_FAST_MODULES: list[Any] = []
"""The task modules given :class:`_UncheckedRotation`."""
_as_shipped = False
"""True inside :func:`as_shipped`, where a simulator built is left as metaworld ships it."""


def _install_fast_paths(cls: type) -> None:
    """The fast paths for simulators of ``cls``: :class:`_UncheckedRotation` in the module that defines it
    (metaworld's own task modules only) and :data:`_FAST_METHODS` on ``SawyerXYZEnv``.

    Each gives metaworld's own step to the bit (``tests/test_metaworld.py`` steps every ML10 class and reach
    and push both ways and compares observations, rewards and infos); together they make the simulation of
    push ~2.3x faster, of reach and ML10 ~1.4x (``python -m metabench.throughput --metaworld``)."""
    if _as_shipped:
        return
    from metaworld.sawyer_xyz_env import SawyerXYZEnv
    from scipy.spatial.transform import Rotation

    module = sys.modules[cls.__module__]
    if module.__name__.startswith("metaworld.") and getattr(module, "Rotation", None) is Rotation:
        module.Rotation = _UncheckedRotation
        _FAST_MODULES.append(module)
    if not _SHIPPED_METHODS:
        _SHIPPED_METHODS.update({name: SawyerXYZEnv.__dict__[name] for name in _FAST_METHODS})
        for name, method in _FAST_METHODS.items():
            setattr(SawyerXYZEnv, name, method)


@contextlib.contextmanager
def as_shipped() -> Iterator[None]:
    """Within it, metaworld runs as it ships: scipy's checked ``Rotation`` in the task modules and
    ``SawyerXYZEnv``'s own methods (the before of a measurement, the reference of the bit-exactness test)."""
    from metaworld.sawyer_xyz_env import SawyerXYZEnv
    from scipy.spatial.transform import Rotation

    global _as_shipped
    modules, methods = list(_FAST_MODULES), dict(_SHIPPED_METHODS)
    for m in modules:
        m.Rotation = Rotation
    for name, method in methods.items():
        setattr(SawyerXYZEnv, name, method)
    _as_shipped = True
    try:
        yield
    finally:
        _as_shipped = False
        for m in modules:
            m.Rotation = _UncheckedRotation
        for name in methods:
            setattr(SawyerXYZEnv, name, _FAST_METHODS[name])


def _make_simulator(cls: type) -> Any:
    _install_fast_paths(cls)
    env = cls()
    assert env.observation_space.shape == (OBS_DIM,) and env.action_space.shape == (ACTION_DIM,), \
        f"{cls.__name__}: metaworld changed its spaces ({env.observation_space.shape}, {env.action_space.shape})"
    return env


def class_pool(name: str, cls: type) -> SimulatorPool:
    """The process-wide pool of idle simulators of task class ``name``."""
    return simulator_pool(f"metaworld:{name}", functools.partial(_make_simulator, cls))


class MetaWorldEnv(GymnasiumEnv):
    """The gymnasium adapter over metaworld simulators: each environment borrows one of its goal's class, sets
    the goal before every reset and reports ``success``."""

    info_signals = ("success",)

    def __init__(self, family: "MetaWorld", tasks: MetaWorldTasks):
        self.metaworld_tasks = [family.metaworld_task(int(s), int(g))
                                for s, g in zip(tasks.split.tolist(), tasks.goal.tolist())]
        pools = [family.pool(t.env_name) for t in self.metaworld_tasks]
        super().__init__(pools, tasks, OBS_DIM, family.config.episode_steps)

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        return np.clip(action.detach().numpy().astype(np.float64), -1.0, 1.0)

    def reset_sim(self, i: int, sim: Any, seed: int) -> np.ndarray:
        sim.set_task(self.metaworld_tasks[i])  # before every reset (metaworld requires it; a borrowed sim is stale)
        return sim.reset()[0]


@functools.lru_cache(maxsize=4096)
def _target(benchmark: str, env_name: str, seed: int, split: int, goal: int) -> tuple[tuple[float, ...], str]:
    """(target position, class name) of one metaworld goal: read off a simulator reset on it (the goal's
    ``rand_vec`` layout differs between classes), once per process."""
    config = MetaWorldConfig(benchmark=benchmark, env_name=env_name or "reach-v3", seed=seed)  # type: ignore[arg-type]
    family = MetaWorld(config)
    task = family.metaworld_task(split, goal)
    sims = family.pool(task.env_name).borrow(1)
    try:
        sims[0].set_task(task)
        sims[0].reset()
        return tuple(float(x) for x in sims[0]._target_pos), task.env_name
    finally:
        family.pool(task.env_name).give_back(sims)


class MetaWorld(TaskFamily):
    """Reach, push or any of ML10's classes, goal hidden, 10 episodes a trial (generality)."""

    name = "metaworld"
    Config = MetaWorldConfig
    config: MetaWorldConfig
    primary_metric = "success"
    curve_metric = "success_train"
    metrics = (
        MetricSpec("success", True, "share of episodes in which info['success'] reached 1 at some step",
                   bounds=(0.0, 1.0)),
        MetricSpec("success_last", True, "success on the trial's last episode (after the trial's adaptation)",
                   last_episode_of="success", bounds=(0.0, 1.0)),
        MetricSpec("episode_return", True, "return of an episode (metaworld's shaped reward, 0-10 a step)"),
    )

    def __init__(self, config: MetaWorldConfig | None = None, *, name: str | None = None):
        super().__init__(config)
        if name is not None:
            self.name = name
        paper_task = PAPER_ROWS.get(self.name)
        if paper_task is not None and self.config.eval_split == "train":
            self.metrics = (dataclasses.replace(self.metrics[0], paper=(paper_task, "meta_train_success", 1.0)),
                            *self.metrics[1:])

    # Sizes ------------------------------------------------------------------------------------
    @property
    def obs_dim(self) -> int:
        return OBS_DIM

    @property
    def action_space(self) -> ActionSpace:
        return ActionSpace("continuous", ACTION_DIM, -1.0, 1.0)

    @property
    def max_episode_steps(self) -> int:
        return self.config.episode_steps

    @property
    def episodes_per_trial(self) -> int:  # type: ignore[override]
        return self.config.episodes_per_trial

    # metaworld's benchmark -------------------------------------------------------------------
    @property
    def goal_set(self) -> tuple[str, str, int]:
        """What fixes the goals: (benchmark, ML1's class or "" for ML10, metaworld's seed)."""
        c = self.config
        return c.benchmark, c.env_name if c.benchmark == "ML1" else "", c.seed

    @property
    def benchmark(self) -> Any:
        return metaworld_benchmark(*self.goal_set)

    def class_names(self, split: Split) -> list[str]:
        """The task classes of ``split`` (ML1: the same one class in both)."""
        bench = self.benchmark
        return list((bench.train_classes if split == "train" else bench.test_classes).keys())

    def metaworld_task(self, split: int, goal: int) -> Any:
        bench = self.benchmark
        return (bench.train_tasks if split == 0 else bench.test_tasks)[goal]

    def pool(self, class_name: str) -> SimulatorPool:
        bench = self.benchmark
        classes = {**bench.train_classes, **bench.test_classes}
        return class_pool(class_name, classes[class_name])

    # Tasks ------------------------------------------------------------------------------------
    def task_pool(self, split: Split) -> MetaWorldTasks:
        """metaworld's goals of ``split`` (50 per class), in its order."""
        bench = self.benchmark
        n = len(bench.train_tasks if split == "train" else bench.test_tasks)
        ids = torch.arange(n)
        return MetaWorldTasks(key=torch.zeros(n, dtype=torch.int64), split=torch.full((n,), int(split == "test")),
                              goal=ids, task_id=ids)

    def sample_tasks(self, n: int, split: Split, generator: torch.Generator) -> MetaWorldTasks:
        """``n`` goals drawn uniformly with replacement from ``split``'s pool; held-out evaluation (the test
        split) draws from :attr:`MetaWorldConfig.eval_split`'s."""
        source = self.config.eval_split if split == "test" else split
        return draw_from_pool(self.task_pool(source), n, generator)

    def make_env(self, tasks: MetaWorldTasks) -> MetaWorldEnv:
        return MetaWorldEnv(self, tasks)

    @property
    def all_classes(self) -> list[str]:
        """Every task class of the benchmark, train classes first (the class index of :meth:`task_features`)."""
        return list(dict.fromkeys(self.class_names("train") + self.class_names("test")))

    @property
    def task_feature_dim(self) -> int:
        return 4

    def task_features(self, tasks: MetaWorldTasks) -> torch.Tensor:
        """The goal's target position (x, y, z, as metaworld sets it at reset) and the index of its task class in
        :attr:`all_classes`: what metaworld's scripted policies need (the ``scripted`` calibration row)."""
        rows = []
        for s, g in zip(tasks.split.tolist(), tasks.goal.tolist()):
            target, name = self._goal(int(s), int(g))
            rows.append([*target, float(self.all_classes.index(name))])
        return torch.tensor(rows, dtype=torch.float32)

    def _goal(self, split: int, goal: int) -> tuple[tuple[float, float, float], str]:
        return _target(*self.goal_set, split, goal)

    def evaluation_variants(self) -> dict[str, TaskFamily]:
        variants: dict[str, TaskFamily] = {"": self}
        if self.config.eval_split == "test":
            variants["_train"] = MetaWorld(dataclasses.replace(self.config, eval_split="train"), name=self.name)
        return variants

    def ceiling(self) -> float:
        """Success is a share of episodes: 1 is every episode solved (the scripted policy's level on reach)."""
        return 1.0

    def other_references(self) -> tuple[str, ...]:
        """ML10: the Meta-World paper's own table (garage, v1/v2 tasks), beside the MetODS paper's Fig. 6."""
        return ("metaworld_ml10_garage",) if self.config.benchmark == "ML10" else ()

    def curve_variants(self) -> dict[str, TaskFamily]:
        """Held-out and meta-train success along training (the paper's Fig. 6 draws meta-training success)."""
        return self.evaluation_variants()


PAPER_ROWS = {"mw_ml1_reach": "metaworld_ml1_reach", "mw_ml1_push": "metaworld_ml1_push", "mw_ml10": "metaworld_ml10"}
"""Registered task name -> the task column of ``paper_results.csv`` holding the paper's Fig. 6 readings."""

METAWORLD = tuple(PAPER_ROWS)
"""The registered Meta-World tasks."""


def mw_ml1_reach() -> MetaWorld:
    return MetaWorld(MetaWorldConfig(benchmark="ML1", env_name="reach-v3"), name="mw_ml1_reach")


def mw_ml1_push() -> MetaWorld:
    return MetaWorld(MetaWorldConfig(benchmark="ML1", env_name="push-v3"), name="mw_ml1_push")


def mw_ml10() -> MetaWorld:
    return MetaWorld(MetaWorldConfig(benchmark="ML10", env_name=""), name="mw_ml10")
