"""The maze task family (SPEC.md, "Maze"): generator, dynamics, metrics, oracle."""

from __future__ import annotations

from collections import deque

import pytest
import torch

from metabench.envs import task_generator
from metabench.envs.maze import MOVES, Maze, MazeConfig, distances_to, oracle_actions


def bfs_reachable(free: torch.Tensor, start: tuple[int, int]) -> set[tuple[int, int]]:
    """Plain BFS over 4-neighbours, independent of the code under test."""
    seen, queue = {start}, deque([start])
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            n = (r + dr, c + dc)
            if bool(free[n]) and n not in seen:
                seen.add(n)
                queue.append(n)
    return seen


@pytest.mark.parametrize("size", [8, 10])
def test_every_free_cell_reachable_over_1000_mazes(size):
    fam = Maze(MazeConfig(size=size))
    tasks = fam.sample_tasks(1000, "train", task_generator(0, "train"))
    assert tasks.free.shape == (1000, size + 2, size + 2)
    for free in tasks.free:
        assert not free[0].any() and not free[-1].any() and not free[:, 0].any() and not free[:, -1].any()
        cells = {tuple(int(i) for i in rc) for rc in free.nonzero()}
        assert len(cells) >= size  # a maze, not a wall
        assert bfs_reachable(free, next(iter(cells))) == cells


def test_mazes_have_walls_and_corridors():
    tasks = Maze().sample_tasks(500, "train", task_generator(1, "train"))
    share = tasks.free[:, 1:-1, 1:-1].float().mean(dim=(1, 2))
    assert 0.4 < float(share.mean()) < 0.85
    # no 2x2 open room: the free cells form one-cell-wide corridors
    f = tasks.free
    rooms = f[:, :-1, :-1] & f[:, 1:, :-1] & f[:, :-1, 1:] & f[:, 1:, 1:]
    assert not bool(rooms.any())


def test_train_and_test_layouts_differ_and_are_seeded():
    fam = Maze()
    a = fam.sample_tasks(64, "train", task_generator(0, "train"))
    b = fam.sample_tasks(64, "train", task_generator(0, "train"))
    t = fam.sample_tasks(64, "test", task_generator(0, "test"))
    assert torch.equal(a.free, b.free) and torch.equal(a.target, b.target)
    train = {bytes(x.flatten().tolist()) for x in a.free}
    test = {bytes(x.flatten().tolist()) for x in t.free}
    assert not train & test


def test_target_is_a_free_cell():
    tasks = Maze().sample_tasks(256, "test", task_generator(3, "test"))
    assert bool(tasks.free.view(256, -1).gather(1, tasks.target.unsqueeze(1)).all())


def _env(n=64, seed=0, size=8):
    fam = Maze(MazeConfig(size=size))
    return fam, fam.make_env(fam.sample_tasks(n, "train", task_generator(seed, "train")))


def test_observation_is_the_3x3_window_of_the_layout():
    fam, env = _env()
    obs = env.reset()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        side = env.side
        for i in range(env.num_envs):
            r, c = divmod(int(env.pos[i]), side)
            window = ~env.tasks.free[i, r - 1:r + 2, c - 1:c + 2]
            assert torch.equal(obs[i].view(3, 3), window.to(torch.float32))
            assert obs[i, 4] == 0  # the agent stands on a free cell
        obs = env.step(torch.randint(0, 4, (env.num_envs,), generator=g)).obs


def test_walls_block_and_free_cells_admit():
    fam, env = _env(n=128)
    env.reset()
    side = env.side
    for action in range(4):
        before = env.pos.clone()
        target_hit = before + int(MOVES[action, 0]) * side + int(MOVES[action, 1]) == env.tasks.target
        step = env.step(torch.full((env.num_envs,), action))
        dest = before + int(MOVES[action, 0]) * side + int(MOVES[action, 1])
        open_ = env.tasks.free.view(env.num_envs, -1).gather(1, dest.unsqueeze(1)).squeeze(1)
        moved = open_ & ~target_hit
        assert torch.equal(env.pos[~open_], before[~open_])  # a wall: stay
        assert torch.equal(env.pos[moved], dest[moved])
        assert torch.equal(step.reward > 0, open_ & target_hit)


def test_teleport_after_the_target_lands_on_another_free_cell():
    fam, env = _env(n=256, seed=4)
    env.reset()
    dist = distances_to(env.tasks.free, env.tasks.target)
    hits = 0
    for _ in range(100):
        step = env.step(oracle_actions(env, dist))
        hit = step.reward > 0
        hits += int(hit.sum())
        free = env.tasks.free.view(env.num_envs, -1).gather(1, env.pos.unsqueeze(1)).squeeze(1)
        assert bool(free.all())
        assert not bool((env.pos == env.tasks.target).any())  # never left standing on the target
        assert torch.equal(step.reward[hit], torch.full((int(hit.sum()),), 10.0))
    assert hits > 256  # the oracle hits the target many times per episode


def test_episodes_last_exactly_100_steps():
    fam, env = _env(n=32)
    env.reset()
    g = torch.Generator().manual_seed(1)
    for t in range(100):
        assert not bool(env.done.any())
        step = env.step(torch.randint(0, 4, (32,), generator=g))
        assert bool(step.active.all())
        assert not bool(step.terminated.any())
        assert bool(step.truncated.all()) == (t == 99)
    assert bool(env.done.all())
    step = env.step(torch.zeros(32, dtype=torch.int64))
    assert not bool(step.active.any()) and float(step.reward.abs().sum()) == 0


def test_metrics_follow_the_hits():
    fam, env = _env(n=256, seed=2)
    env.reset()
    g = torch.Generator().manual_seed(2)
    first = torch.full((256,), 100.0)
    total = torch.zeros(256)
    for t in range(1, 101):
        step = env.step(torch.randint(0, 4, (256,), generator=g))
        hit = step.reward > 0
        first = torch.where(hit & (total == 0), torch.full_like(first, float(t)), first)
        total += step.reward
    m = env.episode_metrics()
    assert torch.equal(m["cumulative_reward"], total)
    assert torch.equal(m["success"], (total > 0).float())
    assert torch.equal(m["first_reward_step"], first)


def _score(family: Maze, policy, n=512, seed=0) -> dict[str, float]:
    env = family.make_env(family.sample_tasks(n, "test", task_generator(seed, "test")))
    env.reset()
    for _ in range(family.max_episode_steps):
        env.step(policy(env))
    return {k: float(v.mean()) for k, v in env.episode_metrics().items()}


def test_oracle_is_far_above_random_and_the_paper():
    fam = Maze()
    g = torch.Generator().manual_seed(0)
    random = _score(fam, lambda env: torch.randint(0, 4, (env.num_envs,), generator=g))
    oracle = _score(fam, oracle_actions)
    assert oracle["success"] == 1.0
    assert oracle["first_reward_step"] < 15
    # a ceiling for the table: above every learner of the paper (MetODS 86.5) and far above random
    assert oracle["cumulative_reward"] > 100
    assert oracle["cumulative_reward"] > 10 * random["cumulative_reward"]
    # a uniform random walk (SPEC.md's own simulation: ~34 % success, first reward ~78, cumulative ~4.6)
    assert 0.15 < random["success"] < 0.5
    assert 70 < random["first_reward_step"] < 95


def test_larger_maze_variant():
    fam = Maze()
    variants = fam.evaluation_variants()
    assert set(variants) == {"", "_larger"}
    larger = variants["_larger"]
    assert larger.config.size == 10
    assert [m.name for m in larger.metrics] == ["cumulative_reward"]
    assert larger.metrics[0].paper[0] == "maze_larger"
    assert larger.evaluation_variants() == {"": larger}
    tasks = larger.sample_tasks(8, "test", task_generator(0, "test"))
    assert tasks.free.shape == (8, 12, 12)
    assert larger.obs_dim == fam.obs_dim and larger.action_space == fam.action_space


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        MazeConfig(size=1)
    with pytest.raises(ValueError):
        MazeConfig(episode_steps=0)
