"""What every gymnasium-backed task family needs: a pool of simulators and a batched environment over them.

A family built on gymnasium (the MuJoCo direction tasks; Meta-World next)
subclasses :class:`GymnasiumEnv` and supplies only what is its own: how a task
turns the agent's action into the simulator's (:meth:`GymnasiumEnv.env_action`),
the reward of a step (:meth:`GymnasiumEnv.task_reward`, gymnasium's own by
default) and how a simulator starts an episode of its task
(:meth:`GymnasiumEnv.reset_sim`). The adapter does the rest:

- **Simulators from a pool.** Building a MuJoCo environment costs ~12 ms, so
  simulators of one kind are kept in a :class:`SimulatorPool` and a batched
  environment borrows B of them for its lifetime (given back when it is
  garbage-collected), from one pool or one pool per environment.
- **Stepping only the active ones**, in a Python loop, like a
  ``SyncVectorEnv`` whose finished members are skipped; an environment whose
  episode ended stays done (reward 0, inactive) until the next ``reset``.
- **numpy <-> torch** at the boundary: actions arrive as torch, observations,
  rewards and flags leave as torch.
- **Episodes and their metrics.** A step is a truncation when it reaches
  ``episode_steps`` or gymnasium truncates it, a termination when gymnasium
  terminates it. ``episode_return`` and ``episode_length`` are kept, and every
  name in :attr:`GymnasiumEnv.info_signals` is read from ``info`` at each
  step, passed on in :attr:`Step.info` and reported per episode as its
  maximum (Meta-World's ``success``: reached at any step).
- **Seeding.** Episode ``e`` of a task resets with the seed
  ``rng.fold(task key, e)``, so a task runs the same alone or inside any batch.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from . import rng
from .base import BatchedEnv, Step, TaskBatch


class SimulatorPool:
    """Idle simulators of one kind, lent to live batched environments."""

    def __init__(self, make: Callable[[], Any]):
        self.make = make
        self.free: list = []

    def borrow(self, n: int) -> list:
        while len(self.free) < n:
            self.free.append(self.make())
        out, self.free = self.free[:n], self.free[n:]
        return out

    def give_back(self, sims: list) -> None:
        self.free.extend(sims)


_POOLS: dict[str, SimulatorPool] = {}


def simulator_pool(kind: str, make: Callable[[], Any]) -> SimulatorPool:
    """The process-wide pool of simulators of ``kind`` (built with ``make`` when the pool runs short)."""
    if kind not in _POOLS:
        _POOLS[kind] = SimulatorPool(make)
    return _POOLS[kind]


class GymnasiumEnv(BatchedEnv):
    """B gymnasium simulators, one per task, stepped together (see the module docstring)."""

    info_signals: tuple[str, ...] = ()
    """``info`` keys read at every step (0 where inactive) and reported per episode as their maximum."""

    def __init__(self, pool: SimulatorPool | Sequence[SimulatorPool], tasks: TaskBatch, obs_dim: int,
                 episode_steps: int):
        """``pool``: where the simulators come from, one pool for all B or one per environment (Meta-World's
        ML10 mixes task classes in a batch)."""
        self.tasks = tasks
        self.num_envs = b = len(tasks)
        self.episode_steps = episode_steps
        pools = [pool] * b if isinstance(pool, SimulatorPool) else list(pool)
        if len(pools) != b:
            raise ValueError(f"{len(pools)} simulator pools for {b} environments")
        self.sims: list = [None] * b
        for p in {id(p): p for p in pools}.values():
            rows = [i for i, q in enumerate(pools) if q is p]
            borrowed = p.borrow(len(rows))
            for i, sim in zip(rows, borrowed):
                self.sims[i] = sim
            weakref.finalize(self, p.give_back, borrowed)
        self.episode = -1
        self.t = 0
        self._done = np.ones(b, dtype=bool)
        self._obs = np.zeros((b, obs_dim), dtype=np.float32)
        self._return = np.zeros(b)
        self._steps = np.zeros(b, dtype=np.int64)
        self._signals = {name: np.zeros(b) for name in self.info_signals}

    # What a family supplies ----------------------------------------------------------------------
    def env_action(self, action: torch.Tensor) -> np.ndarray:
        """The simulators' actions ``[B, ...]`` from the agent's (default: as they are, float64)."""
        return action.detach().numpy().astype(np.float64)

    def task_reward(self, i: int, reward: float, info: dict) -> float:
        """The task's reward for environment ``i``'s step (default: gymnasium's own)."""
        return reward

    def reset_sim(self, i: int, sim: Any, seed: int) -> np.ndarray:
        """Start an episode of task ``i`` on ``sim``; returns its first observation."""
        return sim.reset(seed=seed)[0]

    # The batched environment -----------------------------------------------------------------
    @property
    def done(self) -> torch.Tensor:
        return torch.from_numpy(self._done.copy())

    def reset(self) -> torch.Tensor:
        self.episode += 1
        seeds = rng.fold(self.tasks.key, self.episode).tolist()
        for i, (sim, s) in enumerate(zip(self.sims, seeds)):
            self._obs[i] = self.reset_sim(i, sim, int(s))
        self.t = 0
        self._done[:] = False
        self._return[:] = 0.0
        self._steps[:] = 0
        for v in self._signals.values():
            v[:] = 0.0
        return torch.from_numpy(self._obs.copy())

    def step(self, action: torch.Tensor) -> Step:
        active = ~self._done
        a = self.env_action(action)
        b = self.num_envs
        reward = np.zeros(b)
        terminated = np.zeros(b, dtype=bool)
        gym_truncated = np.zeros(b, dtype=bool)
        signals = {name: np.zeros(b) for name in self.info_signals}
        for i in np.flatnonzero(active).tolist():
            obs, r, term, trunc, info = self.sims[i].step(a[i])
            self._obs[i] = obs
            terminated[i] = term
            gym_truncated[i] = trunc
            reward[i] = self.task_reward(i, r, info)
            for name, v in signals.items():
                v[i] = float(info.get(name, 0.0))
        self.t += 1
        truncated = active & ~terminated & (gym_truncated | (self.t >= self.episode_steps))
        self._return += reward
        self._steps += active
        for name, v in signals.items():
            np.maximum(self._signals[name], v, out=self._signals[name])
        self._done |= terminated | truncated
        return Step(obs=torch.from_numpy(self._obs.copy()), reward=torch.from_numpy(reward.astype(np.float32)),
                    terminated=torch.from_numpy(terminated), truncated=torch.from_numpy(truncated),
                    active=torch.from_numpy(active),
                    info={name: torch.from_numpy(v.astype(np.float32)) for name, v in signals.items()})

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        out = {"episode_return": torch.from_numpy(self._return.astype(np.float32)),
               "episode_length": torch.from_numpy(self._steps.astype(np.float32))}
        out.update({name: torch.from_numpy(v.astype(np.float32)) for name, v in self._signals.items()})
        return out


__all__ = ["GymnasiumEnv", "SimulatorPool", "simulator_pool"]
