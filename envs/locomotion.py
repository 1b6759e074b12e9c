"""Direction tasks on gymnasium MuJoCo robots: Ant-dir, HalfCheetah-dir and their frozen-joint impairment.

The project spec, "Ant-dir" and "Impairment". A task is a direction θ the robot must
run along, never observed: ``circle`` draws θ ~ U[0, 2π) (``ant_dir``),
``fwd-back`` draws θ ∈ {0, π} (the HalfCheetah tasks and the impairment
experiments; ``impairment_cheetah`` is HalfCheetah-dir). The reward of a step is the robot's centre-of-mass velocity
projected on (cos θ, sin θ) plus gymnasium's own healthy reward and minus its
own control and contact costs (taken from ``info``), so for θ = 0 it equals
gymnasium's reward exactly (tested). Episodes last ``episode_steps`` = 200
steps (a truncation), or end earlier when gymnasium terminates them (the Ant
falls over: its torso leaves the healthy height range).

**Impairment** is part of the task: ``frozen`` holds the index of an actuator
whose action is forced to 0 for the whole trial (-1: none). The training
families draw no frozen joint; the impairment tasks (``impairment_ant``,
``impairment_cheetah``) train on the intact robot and add evaluation
variants (:meth:`Locomotion.evaluation_variants`) in which the trained agent,
untouched, is scored again on the same test directions with ``_frozen`` (an
actuator drawn per trial) and ``_frozen_j<k>`` (actuator k frozen in every
trial).

**Simulation** is the shared gymnasium adapter (:mod:`metabench.envs.gym_adapter`):
a pool of unwrapped environments per robot, stepped in a Python loop over the
active ones, each episode's reset noise seeded from the task's key and the
episode index. Asynchronous workers were measured against this loop
(``python -m metabench.throughput --simulation``; reports/throughput.md); on this
2-core machine, where a sweep already runs one process per core, they lose.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from . import rng
from .base import ActionSpace, FamilyConfig, MetricSpec, Split, TaskBatch, TaskFamily
from .gym_adapter import GymnasiumEnv, SimulatorPool, simulator_pool

ROBOTS: dict[str, tuple[str, dict]] = {
    # Ant-v5 without the 78 contact-force entries (gymnasium's own option): a 27-dim observation.
    "ant": ("Ant-v5", {"include_cfrc_ext_in_observation": False}),
    "cheetah": ("HalfCheetah-v5", {}),
}
"""Robot -> gymnasium id and keyword arguments."""

ROBOT_SIZES = {"ant": (27, 8), "cheetah": (17, 6)}
"""Robot -> (observation size, actuators), as gymnasium declares them (checked when an environment is built)."""


@dataclass(frozen=True)
class LocomotionConfig(FamilyConfig):
    robot: Literal["ant", "cheetah"] = "ant"
    """Which gymnasium MuJoCo robot: Ant-v5 (8 actuators) or HalfCheetah-v5 (6)."""
    directions: Literal["circle", "fwd-back"] = "circle"
    """Task distribution: θ ~ U[0, 2π) or θ ∈ {0, π} (forward / backward along x)."""
    episode_steps: int = 200
    """Steps of an episode (the trial is one episode); reaching it is a truncation."""
    frozen: Literal["none", "random"] | int = "none"
    """Impairment: no actuator frozen, one drawn per trial, or actuator k in every trial."""
    impairment_variants: bool = False
    """Also score a trained agent with frozen actuators (the impairment tasks; evaluation only)."""

    def __post_init__(self):
        if self.robot not in ROBOTS:
            raise ValueError(f"robot must be one of {sorted(ROBOTS)}, got {self.robot!r}")
        if self.directions not in ("circle", "fwd-back"):
            raise ValueError(f"directions must be 'circle' or 'fwd-back', got {self.directions!r}")
        if self.episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {self.episode_steps}")
        actuators = ROBOT_SIZES[self.robot][1]
        if isinstance(self.frozen, bool) or not (self.frozen in ("none", "random")
                                                 or (isinstance(self.frozen, int) and 0 <= self.frozen < actuators)):
            raise ValueError(f"frozen must be 'none', 'random' or an actuator index in [0, {actuators}), "
                             f"got {self.frozen!r}")


@dataclass
class LocomotionTasks(TaskBatch):
    theta: torch.Tensor
    """``[n]`` float64: the direction to run along, radians."""
    frozen: torch.Tensor
    """``[n]`` int64: the actuator forced to 0 for the whole trial, -1 for none."""


def direction_reward(cos: float, sin: float, info: dict) -> float:
    """Velocity along (cos θ, sin θ) + healthy reward + (negative) control and contact costs, from gymnasium's ``info``."""
    return (cos * info["x_velocity"] + sin * info.get("y_velocity", 0.0)
            + info.get("reward_survive", 0.0) + info["reward_ctrl"] + info.get("reward_contact", 0.0))


def _make_simulator(robot: str):
    """One gymnasium MuJoCo environment of ``robot``, unwrapped (no time limit, no checker wrappers)."""
    import gymnasium as gym

    env_id, kwargs = ROBOTS[robot]
    env = gym.make(env_id, **kwargs).unwrapped
    obs_dim, actuators = ROBOT_SIZES[robot]
    assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (actuators,), \
        f"{env_id}: gymnasium changed its spaces ({env.observation_space.shape}, {env.action_space.shape})"
    return env


def robot_pool(robot: str) -> SimulatorPool:
    """The process-wide pool of idle simulators of ``robot``."""
    return simulator_pool(f"locomotion:{robot}", lambda: _make_simulator(robot))


class LocomotionEnv(GymnasiumEnv):
    """The gymnasium adapter plus the task: the direction's reward and the frozen actuator."""

    def __init__(self, family: "Locomotion", tasks: LocomotionTasks):
        super().__init__(robot_pool(family.config.robot), tasks, family.obs_dim, family.config.episode_steps)
        self.family = family
        space = family.action_space
        self.low, self.high = space.low, space.high
        self.frozen_mask = np.zeros((self.num_envs, space.n), dtype=bool)
        frozen = tasks.frozen.numpy()
        rows = np.flatnonzero(frozen >= 0)
        self.frozen_mask[rows, frozen[rows]] = True
        theta = tasks.theta.to(torch.float64).numpy()
        self.cos, self.sin = np.cos(theta).tolist(), np.sin(theta).tolist()

    def env_action(self, action: torch.Tensor) -> np.ndarray:
        """What the actuators receive: the action clipped to the box, frozen actuators at 0 (float64 ``[B, n]``)."""
        a = np.clip(action.detach().numpy().astype(np.float64), self.low, self.high)
        a[self.frozen_mask] = 0.0
        return a

    def task_reward(self, i: int, reward: float, info: dict) -> float:
        vx, vy = info["x_velocity"], info.get("y_velocity", 0.0)
        self._along[i] += self.cos[i] * vx + self.sin[i] * vy
        self._speed[i] += math.hypot(vx, vy)
        return direction_reward(self.cos[i], self.sin[i], info)

    def reset(self) -> torch.Tensor:
        self._along = np.zeros(self.num_envs)
        self._speed = np.zeros(self.num_envs)
        return super().reset()

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        """The declared metrics, and two diagnostics beside them (in records, not in tables): the mean velocity
        along θ per step of the episode (``velocity_along``, m/s: who walks where the task wants) and the mean
        speed (``speed``): the return mixes walking with survival and costs (FINDINGS.md, Ant-dir)."""
        out = super().episode_metrics()
        steps = np.maximum(self._steps, 1)
        out["velocity_along"] = torch.from_numpy((self._along / steps).astype(np.float32))
        out["speed"] = torch.from_numpy((self._speed / steps).astype(np.float32))
        return out


class Locomotion(TaskFamily):
    """Run along a hidden direction (efficiency: Ant-dir; generality: the impairment tasks)."""

    name = "locomotion"
    Config = LocomotionConfig
    config: LocomotionConfig
    primary_metric = "episode_return"
    metrics = (
        MetricSpec("episode_return", True, "return of the 200-step episode"),
        MetricSpec("episode_length", True, "steps before the episode ended (the Ant may fall)"),
    )

    def __init__(self, config: LocomotionConfig | None = None, *, name: str | None = None):
        super().__init__(config)
        if name is not None:
            self.name = name
        if self.name in PAPER_ROWS:
            task = PAPER_ROWS[self.name]
            self.metrics = (dataclasses.replace(self.metrics[0], paper=(task, "episode_return", 1.0)),
                            *self.metrics[1:])

    @property
    def obs_dim(self) -> int:
        return ROBOT_SIZES[self.config.robot][0]

    @property
    def action_space(self) -> ActionSpace:
        return ActionSpace("continuous", ROBOT_SIZES[self.config.robot][1], -1.0, 1.0)

    @property
    def max_episode_steps(self) -> int:
        return self.config.episode_steps

    def evaluation_variants(self) -> dict[str, TaskFamily]:
        variants: dict[str, TaskFamily] = {"": self}
        if self.config.impairment_variants and self.config.frozen == "none":
            def frozen(value) -> "Locomotion":
                cfg = dataclasses.replace(self.config, frozen=value, impairment_variants=False)
                return Locomotion(cfg, name=self.name)

            variants["_frozen"] = frozen("random")
            for k in range(self.action_space.n):
                variants[f"_frozen_j{k}"] = frozen(k)
        return variants

    def retention_variants(self) -> dict[str, str]:
        return {suffix: ("one actuator frozen, drawn per trial" if suffix == "_frozen"
                         else f"actuator {suffix.rsplit('j', 1)[1]} frozen")
                for suffix in self.evaluation_variants() if suffix}

    def table_metrics(self) -> list[str]:
        """The intact robot, and the frozen actuator drawn per trial; each actuator has its own table."""
        return [name for name, suffix, _spec in self.scored_metrics() if suffix in ("", "_frozen")]

    def sample_tasks(self, n: int, split: Split, generator: torch.Generator) -> LocomotionTasks:
        """θ first, then the frozen actuator: the same seed gives the same directions with or without impairment."""
        keys = rng.new_keys(n, generator)
        if self.config.directions == "circle":
            theta = torch.rand(n, generator=generator, dtype=torch.float64) * (2 * math.pi)
        else:
            theta = torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * math.pi
        frozen_cfg = self.config.frozen
        if frozen_cfg == "random":
            frozen = torch.randint(0, self.action_space.n, (n,), generator=generator)
        else:
            frozen = torch.full((n,), -1 if frozen_cfg == "none" else int(frozen_cfg), dtype=torch.int64)
        return LocomotionTasks(key=keys, theta=theta, frozen=frozen)

    def make_env(self, tasks: LocomotionTasks) -> LocomotionEnv:
        return LocomotionEnv(self, tasks)

    @property
    def impaired(self) -> bool:
        """An impairment family (trained intact, scored with frozen actuators) or one of its frozen variants."""
        return self.config.impairment_variants or self.config.frozen != "none"

    @property
    def task_feature_dim(self) -> int:
        return 2 + (self.action_space.n if self.impaired else 0)

    def task_features(self, tasks: LocomotionTasks) -> torch.Tensor:
        """(cos θ, sin θ), and on the impairment tasks a one-hot of the frozen actuator (all zeros: none frozen,
        as in meta-training)."""
        theta = tasks.theta.to(torch.float64)
        parts = [torch.stack([theta.cos(), theta.sin()], 1)]
        if self.impaired:  # frozen = -1: no actuator frozen, a row of zeros
            frozen = tasks.frozen
            one_hot = torch.nn.functional.one_hot(frozen.clamp(min=0), self.action_space.n) * (frozen >= 0)[:, None]
            parts.append(one_hot.to(torch.float64))
        return torch.cat(parts, 1).to(torch.float32)


LOCOMOTION = ("ant_dir", "impairment_ant", "impairment_cheetah")
"""The registered MuJoCo direction tasks."""

PAPER_ROWS = {"ant_dir": "ant_dir"}
"""Registered task name -> the task column of ``paper_results.csv`` holding its raw return."""


def ant_dir() -> Locomotion:
    return Locomotion(LocomotionConfig(robot="ant", directions="circle"), name="ant_dir")


def impairment_ant() -> Locomotion:
    return Locomotion(LocomotionConfig(robot="ant", directions="fwd-back", impairment_variants=True),
                      name="impairment_ant")


def impairment_cheetah() -> Locomotion:
    return Locomotion(LocomotionConfig(robot="cheetah", directions="fwd-back", impairment_variants=True),
                      name="impairment_cheetah")
