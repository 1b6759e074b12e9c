"""The partially observable maze of the capacity suite, batched in torch (the project spec, "Maze").

An L x L area inside a wall border; walls and obstacles come from a
randomized Prim's algorithm, so every free cell is reachable. A task is a
layout plus a hidden target cell. The agent sees only the 3 x 3 window of
walls around itself (1 = wall, 0 = free; the target is invisible), moves up,
down, left or right (into a wall: it stays), earns ``target_reward`` on
entering the target and is then teleported to a random free cell other than
the target. It starts on a random free cell (not the target); an episode
lasts exactly ``episode_steps`` steps (a truncation: there is no terminal
state). Trained on L = 8; the same agent is also scored on L = 10 mazes it
never saw (``cumulative_reward_larger``).

**Generator** (the Prim's variant, ours in its details): start from a random
interior cell; repeatedly carve one wall cell that touches exactly one free
cell (4-neighbourhood), until none is left; the cell carved is the candidate
of highest random priority (priorities drawn once per maze: Prim's algorithm
on random cell weights). Every
carved cell joins the free region through one neighbour, so the free cells
form a tree of one-cell-wide corridors: all reachable, no open rooms. The
uncarved cells are the maze's walls and obstacles. Every maze is a pure
function of its task key (:mod:`metabench.envs.rng`): all mazes of a batch
are generated together, one carve per maze per iteration, in about L^2 / 2
vectorised iterations.

**Oracle** (:func:`oracle_actions`): a shortest-path policy that knows the
target; its score is the ceiling of the table (tests and reports use it).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from . import rng
from .base import ActionSpace, BatchedEnv, FamilyConfig, MemoryLabels, MetricSpec, Split, Step, TaskBatch, TaskFamily, task_generator

# up, down, left, right as (row, column) moves
MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])
_START, _TARGET, _CARVE, _SPAWN = 1, 2, 3, 4  # independent random streams of a task key


@dataclass(frozen=True)
class MazeConfig(FamilyConfig):
    size: int = 8
    """L: side of the area inside the wall border (the paper: 8 for training)."""
    larger_size: int = 10
    """Side of the "larger maze" the trained agent is also scored on (0: none)."""
    episode_steps: int = 100
    """Steps per episode (one episode per trial)."""
    target_reward: float = 10.0
    """Reward for entering the target (then the agent is teleported)."""

    def __post_init__(self):
        if self.size < 2:
            raise ValueError(f"maze size must be >= 2, got {self.size}")
        if self.larger_size and self.larger_size < 2:
            raise ValueError(f"larger_size must be 0 or >= 2, got {self.larger_size}")
        if self.episode_steps < 1:
            raise ValueError("episode_steps must be positive")


@dataclass
class MazeTasks(TaskBatch):
    free: torch.Tensor
    """``[n, L+2, L+2]`` bool: free cells (the border and uncarved cells are walls)."""
    target: torch.Tensor
    """``[n]`` int64: flat index of the target cell in the padded grid."""


def generate_layouts(keys: torch.Tensor, size: int) -> torch.Tensor:
    """Prim's-variant mazes, one per key: ``[n, size+2, size+2]`` bool free cells."""
    n, side = len(keys), size + 2
    interior = torch.zeros(side, side, dtype=torch.bool)
    interior[1:-1, 1:-1] = True
    interior = interior.flatten()
    free = torch.zeros(n, side * side, dtype=torch.bool)
    first = rng.randint(keys, size * size, _START)
    free[torch.arange(n), (first // size + 1) * side + first % size + 1] = True
    # One random priority per cell, drawn once: carving the highest-priority candidate each time is
    # Prim's algorithm on random weights (one draw instead of one per iteration).
    priority = rng.uniform(rng.fold(keys, _CARVE).unsqueeze(1), torch.arange(side * side).unsqueeze(0))
    rows = torch.arange(n)
    for _ in range(size * size):
        grid = free.view(n, side, side).to(torch.int8)
        neighbours = torch.zeros_like(grid)
        neighbours[:, 1:, :] += grid[:, :-1, :]
        neighbours[:, :-1, :] += grid[:, 1:, :]
        neighbours[:, :, 1:] += grid[:, :, :-1]
        neighbours[:, :, :-1] += grid[:, :, 1:]
        candidate = ~free & interior & (neighbours.view(n, -1) == 1)
        some = candidate.any(1)
        if not bool(some.any()):
            break
        pick = torch.where(candidate, priority, -1.0).argmax(1)
        free[rows[some], pick[some]] = True
    return free.view(n, side, side)


def random_cells(keys: torch.Tensor, allowed: torch.Tensor, *counters: torch.Tensor | int) -> torch.Tensor:
    """One allowed cell per row of ``allowed`` ``[n, cells]``, uniformly, as a flat index (pure function of keys)."""
    cells = torch.arange(allowed.shape[1]).unsqueeze(0)
    counters = tuple(c.unsqueeze(1) if isinstance(c, torch.Tensor) and c.dim() == 1 else c for c in counters)
    score = torch.where(allowed, rng.uniform(keys.unsqueeze(1), *counters, cells), -1.0)
    return score.argmax(1)


def distances_to(free: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Shortest-path steps from every cell to the target, ``[n, side, side]`` (walls: a large number)."""
    n, side, _ = free.shape
    big = side * side * 4
    dist = torch.full((n, side, side), big, dtype=torch.int64)
    dist.view(n, -1)[torch.arange(n), target] = 0
    for _ in range(side * side):
        best = dist.clone()
        best[:, 1:, :] = torch.minimum(best[:, 1:, :], dist[:, :-1, :] + 1)
        best[:, :-1, :] = torch.minimum(best[:, :-1, :], dist[:, 1:, :] + 1)
        best[:, :, 1:] = torch.minimum(best[:, :, 1:], dist[:, :, :-1] + 1)
        best[:, :, :-1] = torch.minimum(best[:, :, :-1], dist[:, :, 1:] + 1)
        best = torch.where(free, best, big)
        if torch.equal(best, dist):
            break
        dist = best
    return dist


class MazeEnv(BatchedEnv):
    def __init__(self, family: "Maze", tasks: MazeTasks):
        self.cfg = family.config
        self.tasks = tasks
        self.num_envs = b = len(tasks)
        self.side = tasks.free.shape[-1]
        self.free_flat = tasks.free.reshape(b, -1)
        self.spawnable = self.free_flat.clone()
        self.spawnable[torch.arange(b), tasks.target] = False
        off = torch.tensor([dr * self.side + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1)])
        self._window = off.unsqueeze(0)
        self._moves = MOVES[:, 0] * self.side + MOVES[:, 1]
        self._spawn_key = rng.fold(tasks.key, _SPAWN)
        self._episode = torch.full((b,), -1, dtype=torch.int64)
        self.pos = torch.zeros(b, dtype=torch.int64)
        self.t = 0
        self.hits = torch.zeros(b, dtype=torch.int64)
        self.first_hit = torch.zeros(b, dtype=torch.int64)
        self._done = torch.ones(b, dtype=torch.bool)

    @property
    def done(self) -> torch.Tensor:
        return self._done

    def reset(self) -> torch.Tensor:
        self._episode += 1
        self.pos = random_cells(self._spawn_key, self.spawnable, self._episode, 0)
        self.t = 0
        self.hits.zero_()
        self.first_hit.fill_(self.cfg.episode_steps)
        self._done = torch.zeros(self.num_envs, dtype=torch.bool)
        return self._observe()

    def _observe(self) -> torch.Tensor:
        cells = self.pos.unsqueeze(1) + self._window
        return (~self.free_flat.gather(1, cells)).to(torch.float32)

    def step(self, action: torch.Tensor) -> Step:
        active = ~self._done
        action = action.to(torch.int64)
        if bool(((action < 0) | (action > 3)).any()):
            raise ValueError("maze actions are 0 (up), 1 (down), 2 (left), 3 (right)")
        nxt = self.pos + self._moves[action]
        ok = active & self.free_flat.gather(1, nxt.unsqueeze(1)).squeeze(1)
        pos = torch.where(ok, nxt, self.pos)
        self.t += 1
        hit = ok & (pos == self.tasks.target)
        if bool(hit.any()):
            spawn = random_cells(self._spawn_key, self.spawnable, self._episode, self.t)
            pos = torch.where(hit, spawn, pos)
            self.first_hit = torch.where(hit & (self.hits == 0), torch.full_like(self.first_hit, self.t),
                                         self.first_hit)
            self.hits += hit.to(torch.int64)
        self.pos = pos
        reward = hit.to(torch.float32) * self.cfg.target_reward
        truncated = active & (self.t >= self.cfg.episode_steps)
        self._done = self._done | truncated
        return Step(self._observe(), reward, torch.zeros_like(truncated), truncated, active)

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        return {
            "first_reward_step": self.first_hit.to(torch.float32),
            "success": (self.hits > 0).to(torch.float32),
            "cumulative_reward": self.hits.to(torch.float32) * self.cfg.target_reward,
        }


def oracle_actions(env: MazeEnv, dist: torch.Tensor | None = None) -> torch.Tensor:
    """The shortest-path action towards the target from every agent's cell (ties: first of up/down/left/right)."""
    if dist is None:
        dist = distances_to(env.tasks.free, env.tasks.target)
    flat = dist.view(env.num_envs, -1)
    around = flat.gather(1, env.pos.unsqueeze(1) + env._moves.unsqueeze(0))
    return around.argmin(1)


@functools.cache
def oracle_score(config: MazeConfig, n_tasks: int = 1024, seed: int = 0) -> dict[str, float]:
    """Mean metrics of the shortest-path oracle (knows the target) on held-out mazes: the table's ceiling."""
    family = Maze(config)
    env = family.make_env(family.sample_tasks(n_tasks, "test", task_generator(seed, "test")))
    env.reset()
    dist = distances_to(env.tasks.free, env.tasks.target)
    for _ in range(family.max_episode_steps):
        env.step(oracle_actions(env, dist))
    return {k: float(v.mean()) for k, v in env.episode_metrics().items()}


class Maze(TaskFamily):
    """The maze task family (capacity suite)."""

    name = "maze"
    Config = MazeConfig
    config: MazeConfig
    primary_metric = "cumulative_reward"
    metrics = (
        MetricSpec("first_reward_step", False, "step of the first hit of the target (100 if none)",
                   paper=("maze", "first_reward", 1.0)),
        MetricSpec("success", True, "share of episodes with at least one hit",
                   paper=("maze", "success_pct", 100.0), bounds=(0.0, 1.0)),
        MetricSpec("cumulative_reward", True, "reward of the episode (10 per hit)",
                   paper=("maze", "cumulative_reward", 1.0)),
    )

    def __init__(self, config: MazeConfig | None = None, *, larger: bool = False):
        super().__init__(config)
        if larger:
            # The larger maze is reported by its cumulative reward only (the paper's column).
            self.metrics = (MetricSpec("cumulative_reward", True, "reward of an episode on the larger maze",
                                       paper=("maze_larger", "cumulative_reward", 1.0)),)
        self.larger = larger

    def memory_labels(self, rewards: torch.Tensor, active: torch.Tensor) -> MemoryLabels:
        """Whether the target has been found yet (its first reward) at each step of the trial."""
        hit = active & (rewards > 0)
        found = torch.cumsum(hit.to(torch.int64), 0) > 0
        made = hit.any(0)
        first = torch.where(made, hit.to(torch.int64).argmax(0), torch.full_like(made, -1, dtype=torch.int64))
        labels = torch.where(active, found.to(torch.int64), torch.full_like(found, -1, dtype=torch.int64))
        return MemoryLabels(labels, first, ("target not found yet", "target found"), "the first find")

    def evaluation_variants(self) -> dict[str, TaskFamily]:
        variants: dict[str, TaskFamily] = {"": self}
        if self.config.larger_size and not self.larger:
            cfg = dataclasses.replace(self.config, size=self.config.larger_size, larger_size=0)
            variants["_larger"] = Maze(cfg, larger=True)
        return variants

    @property
    def obs_dim(self) -> int:
        return 9

    @property
    def action_space(self) -> ActionSpace:
        return ActionSpace("discrete", 4)

    @property
    def max_episode_steps(self) -> int:
        return self.config.episode_steps

    curve_xscale = "log"

    def ceiling(self) -> float:
        """Cumulative reward of the shortest-path oracle on 1,024 held-out mazes (seed 0)."""
        return oracle_score(self.config)["cumulative_reward"]

    def draw_samples(self, fig) -> bool:
        """Four held-out L=8 mazes and one L=10 maze: walls, the hidden target, the start and its 3x3 window."""
        from matplotlib.patches import Rectangle

        families = [self] * 4 + [f for k, f in self.evaluation_variants().items() if k]
        axes = fig.subplots(1, len(families))
        for i, (ax, fam) in enumerate(zip(axes, families)):
            tasks = fam.sample_tasks(i + 1, "test", task_generator(0, "test"))
            task = tasks.index(i)
            env = fam.make_env(task)
            env.reset()
            free = task.free[0]
            side = free.shape[0]
            ax.imshow(~free, cmap="Greys", vmin=0, vmax=1.4)
            tr, tc = divmod(int(task.target[0]), side)
            ax.plot(tc, tr, "*", color="gold", markersize=14, markeredgecolor="k")
            ar, ac = divmod(int(env.pos[0]), side)
            ax.plot(ac, ar, "o", color="C0", markersize=8)
            ax.add_patch(Rectangle((ac - 1.5, ar - 1.5), 3, 3, fill=False, edgecolor="C0", linewidth=2))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"L = {fam.config.size}" + (" (larger)" if fam is not self else ""))
        fig.suptitle("Sample held-out mazes: walls (dark), hidden target (★), agent (●) and its 3x3 view")
        return True

    def sample_tasks(self, n: int, split: Split, generator: torch.Generator) -> MazeTasks:
        key = rng.new_keys(n, generator)
        free = generate_layouts(key, self.config.size)
        target = random_cells(rng.fold(key, _TARGET), free.view(n, -1))
        return MazeTasks(key=key, free=free, target=target)

    def make_env(self, tasks: MazeTasks) -> MazeEnv:
        return MazeEnv(self, tasks)
