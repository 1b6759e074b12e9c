"""Harlow, exactly as SPEC.md ("Harlow") defines it.

A line of 11 positions, fixation at the centre; an episode is fixation, then
5 x (presentation, fixation); +0.2 per fixation, +1/-1 per choice; max 6.2,
Bayes-optimal expected 5.2; a step cap truncates. Scripted policies check the
numbers: an oracle that knows the rewarded item scores 6.2 on every task, a
policy that guesses once and then remembers scores 5.2 in expectation.
"""

from __future__ import annotations

import math

import pytest
import torch

from metabench.agents import AGENTS
from metabench.envs import FAMILIES, task_generator
from metabench.envs.harlow import CHOOSE, Harlow, HarlowConfig, HarlowEnv

DEFAULT = HarlowConfig()


def make(n: int, seed: int = 0, split: str = "test", **overrides):
    family = Harlow(HarlowConfig(**overrides))
    tasks = family.sample_tasks(n, split, task_generator(seed, split))
    return family, tasks, family.make_env(tasks)


def decode(cfg: HarlowConfig, obs: torch.Tensor):
    """(position, left item values, right item values, phase flag) from an observation."""
    d = cfg.item_dim
    if cfg.position_coding == "scalar":
        pos = torch.round((obs[:, 0] + 1.0) * cfg.centre).to(torch.int64)
        rest = obs[:, 1:]
    else:
        pos = obs[:, : cfg.line_length].argmax(1)
        rest = obs[:, cfg.line_length:]
    return pos, rest[:, :d], rest[:, d: 2 * d], rest[:, 2 * d]


def oracle_action(env: HarlowEnv) -> torch.Tensor:
    """Knows the rewarded item: walk to the centre when fixating, to the rewarded item's end when choosing."""
    toward_centre = (env.pos < env.cfg.centre).to(torch.int64)  # 1 = right
    rewarded_on_left = env.left_item == env.tasks.rewarded
    choose = torch.where(rewarded_on_left, 0, 1)
    return torch.where(env.phase == CHOOSE, choose, toward_centre)


def run(env: HarlowEnv, policy, steps: int | None = None):
    """Reset and step ``policy(env, obs)`` until all done (or ``steps``); returns per-step tensors [T, B]."""
    obs = env.reset()
    start = env.pos.clone()
    log = {k: [] for k in ("obs", "reward", "terminated", "truncated", "active", "action")}
    for _ in range(steps or env.cfg.max_steps):
        a = policy(env, obs)
        s = env.step(a)
        obs = s.obs
        for k in ("obs", "reward", "terminated", "truncated", "active"):
            log[k].append(getattr(s, k))
        log["action"].append(a)
        if steps is None and bool(env.done.all()):
            break
    out = {k: torch.stack(v) for k, v in log.items()}
    out["start"] = start
    return out


def items_of(tasks, which: torch.Tensor) -> torch.Tensor:
    return tasks.items[torch.arange(len(tasks)), which]


# Config numbers ---------------------------------------------------------------------


def test_spec_numbers():
    assert DEFAULT.line_length == 11 and DEFAULT.centre == 5 and DEFAULT.presentations == 5
    assert math.isclose(DEFAULT.max_return, 6.2)
    assert math.isclose(DEFAULT.bayes_optimal_return, 5.2)
    fam = Harlow()
    assert fam.action_space.discrete and fam.action_space.n == 2
    # position, the two items, the phase flag, and the curriculum's selected-item slot (zero in evaluation)
    assert fam.obs_dim == 1 + 3 * DEFAULT.item_dim + 1
    assert fam.episodes_per_trial == 1
    assert "harlow" in FAMILIES.names()


# The oracle scores the maximum ---------------------------------------------------------


@pytest.mark.parametrize("overrides", [
    {},
    {"position_coding": "onehot", "item_dim": 2},
    {"line_length": 3, "presentations": 2, "max_steps": 40},
    {"line_length": 7, "presentations": 3, "item_dim": 3},
])
def test_oracle_scores_max_return(overrides):
    n = 256
    family, tasks, env = make(n, seed=11, **overrides)
    cfg = family.config
    out = run(env, lambda e, o: oracle_action(e))
    m = env.episode_metrics()
    torch.testing.assert_close(m["episode_return"], torch.full((n,), cfg.max_return), atol=1e-5, rtol=0)
    torch.testing.assert_close(m["fraction_of_optimal"], torch.full((n,), cfg.max_return / cfg.bayes_optimal_return),
                               atol=1e-5, rtol=0)
    assert torch.equal(m["correct_after_first"], torch.ones(n))
    assert torch.equal(m["choices"], torch.full((n,), float(cfg.presentations)))
    # Terminated once each, never truncated.
    assert torch.equal(out["terminated"].sum(0), torch.ones(n, dtype=torch.int64))
    assert not bool(out["truncated"].any())
    # Rewards: exactly P+1 fixation rewards and P correct choices, nothing else.
    r = out["reward"]
    assert torch.equal((r == torch.tensor(cfg.fixation_reward)).sum(0), torch.full((n,), cfg.presentations + 1))
    assert torch.equal((r == cfg.correct_reward).sum(0), torch.full((n,), cfg.presentations))
    assert torch.equal((r != 0).sum(0), torch.full((n,), 2 * cfg.presentations + 1))
    # Episode length: reach the centre, then P times centre -> end -> centre.
    steps = out["active"].sum(0)
    expected = (out["start"] - cfg.centre).abs() + cfg.presentations * 2 * cfg.centre
    assert torch.equal(steps, expected)
    # The start is never the centre.
    assert not bool((out["start"] == cfg.centre).any())


# Guess first, then remember: 5.2 in expectation ------------------------------------------


def guess_then_remember(cfg: HarlowConfig, b: int):
    """A policy that sees only the observation and the rewards.

    First presentation: go left (a guess). Afterwards, go to the end showing the
    item that paid (or the other one, if the guess lost). Fixation: go to the centre.
    """
    state = {"known": torch.zeros(b, dtype=torch.bool), "good": torch.zeros(b, cfg.item_dim),
             "first_left": torch.zeros(b, cfg.item_dim), "first_right": torch.zeros(b, cfg.item_dim)}

    def act(env, obs):
        pos, left, right, flag = decode(cfg, obs)
        choosing = flag > 0.5
        toward_centre = (pos < cfg.centre).to(torch.int64)
        first = choosing & ~state["known"]
        state["first_left"] = torch.where(first.unsqueeze(1), left, state["first_left"])
        state["first_right"] = torch.where(first.unsqueeze(1), right, state["first_right"])
        good_on_left = (left == state["good"]).all(1)
        choice = torch.where(state["known"], torch.where(good_on_left, 0, 1), 0)
        return torch.where(choosing, choice, toward_centre)

    def learn(reward):
        chose = (reward.abs() > 0.5) & ~state["known"]  # the first choice just happened (it was on the left)
        good = torch.where((reward > 0).unsqueeze(1), state["first_left"], state["first_right"])
        state["good"] = torch.where(chose.unsqueeze(1), good, state["good"])
        state["known"] = state["known"] | chose

    return act, learn, state


@pytest.mark.parametrize("overrides", [{}, {"position_coding": "onehot", "item_dim": 2}])
def test_guess_then_remember_scores_bayes_optimal(overrides):
    n = 4096
    family, tasks, env = make(n, seed=12, **overrides)
    cfg = family.config
    act, learn, state = guess_then_remember(cfg, n)
    obs = env.reset()
    for _ in range(cfg.max_steps):
        s = env.step(act(env, obs))
        learn(s.reward)
        obs = s.obs
        if bool(env.done.all()):
            break
    m = env.episode_metrics()
    ret = m["episode_return"].to(torch.float64)
    hi, lo = cfg.max_return, cfg.max_return - (cfg.correct_reward - cfg.wrong_reward)  # 6.2, 4.2
    is_hi = (ret - hi).abs() < 1e-4
    is_lo = (ret - lo).abs() < 1e-4
    assert bool((is_hi | is_lo).all()), "every episode must return 6.2 or 4.2"
    # 6.2 exactly when the guess (the left item at the first presentation) was the rewarded item.
    guessed_right = (state["first_left"] == items_of(tasks, tasks.rewarded)).all(1)
    assert torch.equal(is_hi, guessed_right)
    assert torch.equal(m["correct_after_first"], torch.ones(n))
    assert not bool(env.episode_metrics()["choices"].ne(cfg.presentations).any())
    mean, se = float(ret.mean()), float(ret.std()) / math.sqrt(n)
    assert 0.9 < float(ret.std()) < 1.1
    assert abs(mean - cfg.bayes_optimal_return) < 4 * se, (mean, se)


# Rewards and observations, step by step --------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, {"item_dim": 3}, {"position_coding": "onehot", "item_dim": 2}])
def test_rewards_and_observations_step_by_step(overrides):
    """A noisy policy (mostly purposeful, 15 % random moves, random side when choosing).

    Every step is checked against the rules, using only the previous observation:
    the move, the reward (+0.2 on reaching the centre while fixating, +1/-1 on
    reaching an end during a presentation, judged by the item shown at that end),
    the phase flag, zeros during fixation, the items in the env's left/right order
    during a presentation, and termination on the (P+1)-th fixation.
    """
    n = 512
    family, tasks, env = make(n, seed=13, **overrides)
    cfg = family.config
    last = cfg.line_length - 1
    gen = torch.Generator().manual_seed(99)
    obs = env.reset()
    pos, left, right, flag = decode(cfg, obs)
    assert torch.equal(pos, env.pos) and not bool((pos == cfg.centre).any())
    assert bool((flag == 0).all()) and bool((left == 0).all()) and bool((right == 0).all())
    fixations = torch.zeros(n, dtype=torch.int64)
    choices = torch.zeros(n, dtype=torch.int64)
    total = torch.zeros(n)
    counts = {"fix": 0, "win": 0, "loss": 0, "terminated": 0, "present": 0}
    rewarded_values = items_of(tasks, tasks.rewarded)
    for _ in range(cfg.max_steps):
        active = ~env.done
        purposeful = torch.where(flag > 0.5, torch.randint(0, 2, (n,), generator=gen), (pos < cfg.centre).long())
        noise = torch.rand(n, generator=gen) < 0.15
        action = torch.where(noise, torch.randint(0, 2, (n,), generator=gen), purposeful)
        s = env.step(action)
        assert torch.equal(s.active, active)
        new_pos, new_left, new_right, new_flag = decode(cfg, s.obs)
        exp_pos = torch.where(active, (pos + 2 * action - 1).clamp(0, last), pos)
        assert torch.equal(new_pos, exp_pos)
        assert torch.equal(new_pos, env.pos)

        fixating, choosing = active & (flag < 0.5), active & (flag > 0.5)
        fix = fixating & (exp_pos == cfg.centre)
        at_left, at_right = choosing & (exp_pos == 0), choosing & (exp_pos == last)
        chose_rewarded = torch.where(at_left.unsqueeze(1), left, right).eq(rewarded_values).all(1)
        exp_reward = torch.zeros(n)
        exp_reward[fix] = cfg.fixation_reward
        exp_reward[(at_left | at_right) & chose_rewarded] = cfg.correct_reward
        exp_reward[(at_left | at_right) & ~chose_rewarded] = cfg.wrong_reward
        assert torch.equal(s.reward, exp_reward)

        fixations += fix.long()
        exp_term = fix & (fixations == cfg.presentations + 1)
        assert torch.equal(s.terminated, exp_term)
        present = fix & ~exp_term
        exp_flag = torch.where(present, 1.0, torch.where(at_left | at_right, 0.0, flag))
        assert torch.equal(new_flag, exp_flag)
        assert torch.equal(new_flag.long(), env.phase)
        shown = new_flag > 0.5
        # Zeros whenever no presentation is on (fixation, or the episode is over after the last fixation).
        assert bool((new_left[~shown] == 0).all()) and bool((new_right[~shown] == 0).all())
        # During a presentation: the two items, in the order the env says.
        assert torch.equal(new_left[shown], items_of(tasks, env.left_item)[shown])
        assert torch.equal(new_right[shown], items_of(tasks, 1 - env.left_item)[shown])
        # The order stays put within a presentation.
        cont = shown & (flag > 0.5)
        assert torch.equal(new_left[cont], left[cont]) and torch.equal(new_right[cont], right[cont])

        choices += (at_left | at_right).long()
        total += exp_reward
        counts["fix"] += int(fix.sum())
        counts["present"] += int(present.sum())
        counts["win"] += int(((at_left | at_right) & chose_rewarded).sum())
        counts["loss"] += int(((at_left | at_right) & ~chose_rewarded).sum())
        counts["terminated"] += int(exp_term.sum())
        pos, left, right, flag = new_pos, new_left, new_right, new_flag
        if bool(env.done.all()):
            break
    # The walk exercised every rule many times.
    assert counts["win"] > 200 and counts["loss"] > 200 and counts["terminated"] > 20 and counts["present"] > 500
    # Metrics agree with the step-by-step account.
    m = env.episode_metrics()
    assert torch.equal(m["choices"].long(), choices)
    torch.testing.assert_close(m["episode_return"], total, atol=1e-5, rtol=0)


def test_item_order_varies_across_presentations():
    n = 1024
    family, tasks, env = make(n, seed=14)
    cfg = family.config
    out = run(env, lambda e, o: oracle_action(e))
    _, left, _, flag = decode(cfg, out["obs"].flatten(0, 1))
    left, flag = left.view(-1, n, cfg.item_dim), flag.view(-1, n)
    prev_flag = torch.cat([torch.zeros(1, n), flag[:-1]])
    starts = (flag > 0.5) & (prev_flag < 0.5)  # [T, B]: a presentation begins
    assert torch.equal(starts.sum(0), torch.full((n,), cfg.presentations))
    item0_left = (left == tasks.items[:, 0].unsqueeze(0)).all(-1)  # [T, B]
    order = torch.stack([item0_left[:, b][starts[:, b]] for b in range(n)])  # [B, P]: item 0 on the left?
    frac = float(order.float().mean())
    assert 0.46 < frac < 0.54, frac  # 5120 draws, SE ~ 0.007
    all_same = (order == order[:, :1]).all(1).float().mean()
    assert 0.03 < float(all_same) < 0.10, float(all_same)  # expected 2 / 2**5 = 0.0625
    switch = (order[:, 1:] != order[:, :-1]).float().mean()
    assert 0.46 < float(switch) < 0.54, float(switch)
    # The rewarded item is on the left at the first presentation about half the time.
    rew_left = (order[:, 0] == (tasks.rewarded == 0)).float().mean()
    assert 0.45 < float(rew_left) < 0.55


def test_start_positions_uniform_off_centre():
    n = 4000
    family, tasks, env = make(n, seed=15)
    env.reset()
    first = env.pos.clone()
    counts = torch.bincount(first, minlength=DEFAULT.line_length)
    assert counts[DEFAULT.centre] == 0
    off = torch.cat([counts[: DEFAULT.centre], counts[DEFAULT.centre + 1:]]).float() / n
    assert bool(((off > 0.08) & (off < 0.12)).all()), off  # 0.1 each, SE ~ 0.005
    env.reset()  # a second episode of the same tasks draws a fresh start
    assert 0.8 < float((env.pos != first).float().mean()) < 1.0


# The step cap -----------------------------------------------------------------------------


@pytest.mark.parametrize("direction", [0, 1])
def test_constant_direction_is_truncated_at_the_cap(direction):
    """Always left (or right): one fixation at most, one choice at most, truncated at max_steps."""
    n = 512
    family, tasks, env = make(n, seed=16)
    cfg = family.config
    out = run(env, lambda e, o: torch.full((n,), direction, dtype=torch.int64))
    assert out["reward"].shape[0] == cfg.max_steps
    assert not bool(out["terminated"].any())
    assert bool(out["truncated"][cfg.max_steps - 1].all()) and not bool(out["truncated"][:-1].any())
    assert torch.equal(out["active"].sum(0), torch.full((n,), cfg.max_steps))
    # Starting on the far side of the centre: walk through it once (+0.2), then pick the item at that end.
    crosses = out["start"] > cfg.centre if direction == 0 else out["start"] < cfg.centre
    _, left, right, flag = decode(cfg, out["obs"].flatten(0, 1))
    shown = (left if direction == 0 else right).view(-1, n, cfg.item_dim)
    first_shown = shown[(flag.view(-1, n) > 0.5).long().argmax(0), torch.arange(n)]
    won = (first_shown == items_of(tasks, tasks.rewarded)).all(1)
    expected = torch.where(crosses, torch.where(won, 1.2, -0.8), 0.0)
    m = env.episode_metrics()
    torch.testing.assert_close(m["episode_return"], expected, atol=1e-6, rtol=0)
    assert torch.equal(m["choices"], crosses.float())
    assert 0.4 < float(crosses.float().mean()) < 0.6
    assert 0.4 < float(won[crosses].float().mean()) < 0.6


@pytest.mark.parametrize("max_steps", [20, 33, 51])
def test_oracle_under_a_tight_cap(max_steps):
    """The oracle reaches the centre after d = |start - 5| steps, then alternates 5 steps to an end, 5 back.

    Within ``max_steps`` it gets 1 + floor((cap - d) / 10) fixations and floor((cap - d + 5) / 10)
    choices (all right, capped at 6 and 5); it terminates only if it finishes by the cap
    (d + 50 <= cap; at d + 50 == cap termination wins over truncation).
    """
    n = 256
    family, tasks, env = make(n, seed=17, max_steps=max_steps)
    cfg = family.config
    out = run(env, lambda e, o: oracle_action(e))
    d = (out["start"] - cfg.centre).abs()
    fix = torch.clamp(1 + (max_steps - d) // 10, max=cfg.presentations + 1)
    ch = torch.clamp((max_steps - d + 5) // 10, max=cfg.presentations)
    m = env.episode_metrics()
    torch.testing.assert_close(m["episode_return"], 0.2 * fix.float() + ch.float(), atol=1e-5, rtol=0)
    assert torch.equal(m["choices"], ch.float())
    finishes = d + 50 <= max_steps
    assert torch.equal(out["terminated"].any(0), finishes)
    assert torch.equal(out["truncated"].any(0), ~finishes)
    assert torch.equal(out["active"].sum(0), torch.where(finishes, d + 50, torch.full_like(d, max_steps)))
    if max_steps == 51:
        assert bool(finishes.any()) and not bool(finishes.all())  # d == 1 finishes exactly at the cap


def test_done_is_absorbing_after_staggered_ends():
    """Oracle episodes end at different steps; random actions after that change nothing."""
    n = 64
    family, tasks, env = make(n, seed=18)
    gen = torch.Generator().manual_seed(5)
    env.reset()
    final_obs = torch.zeros(n, family.obs_dim)
    end_step = torch.full((n,), -1)
    for t in range(family.max_episode_steps):
        was_done = env.done.clone()
        a = torch.where(was_done, torch.randint(0, 2, (n,), generator=gen), oracle_action(env))
        s = env.step(a)
        assert bool((s.reward[was_done] == 0).all()) and not bool(s.active[was_done].any())
        assert torch.equal(s.obs[was_done], final_obs[was_done]), "a finished env's observation must not move"
        newly = s.terminated | s.truncated
        final_obs[newly] = s.obs[newly]
        end_step[newly] = t
    assert len(set(end_step.tolist())) == 5  # d = 1..5
    torch.testing.assert_close(env.episode_metrics()["episode_return"], torch.full((n,), DEFAULT.max_return), atol=1e-5, rtol=0)
    env.reset()
    assert not bool(env.done.any())
    assert bool(env.step(torch.zeros(n, dtype=torch.int64)).active.all())
    assert bool((env.episode_metrics()["episode_return"] <= 0.2 + 1e-6).all())  # metrics restart with the episode


# Config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"line_length": 10}, {"line_length": 2}, {"line_length": 1}, {"line_length": 0}, {"line_length": -3},
    {"presentations": 0}, {"max_steps": 0}, {"item_dim": 0}, {"position_coding": "binary"},
])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        HarlowConfig(**bad)


def test_smallest_valid_line():
    cfg = HarlowConfig(line_length=3)
    assert cfg.centre == 1


@pytest.mark.parametrize("item_dim", [1, 3])
def test_onehot_position_coding(item_dim):
    family, tasks, env = make(64, seed=19, position_coding="onehot", item_dim=item_dim, curriculum=None)
    assert family.obs_dim == 11 + 2 * item_dim + 1
    obs = env.reset()
    assert obs.shape == (64, family.obs_dim) and obs.dtype == torch.float32
    onehot = obs[:, :11]
    assert torch.equal(onehot.sum(1), torch.ones(64))
    assert torch.equal(onehot.argmax(1), env.pos)
    s = env.step(torch.ones(64, dtype=torch.int64))
    assert torch.equal(s.obs[:, :11].argmax(1), env.pos)
    assert s.obs.shape == (64, family.obs_dim)


@pytest.mark.parametrize("item_dim", [1, 8])
def test_show_selected_shows_the_chosen_item_with_its_outcome(item_dim):
    family, tasks, env = make(128, seed=23, show_selected=True, curriculum=None, item_dim=item_dim)
    assert family.obs_dim == 1 + 3 * item_dim + 1
    g = torch.Generator().manual_seed(5)
    log = run(env, lambda env, obs: torch.randint(0, 2, (128,), generator=g))
    obs, reward, active = log["obs"], log["reward"], log["active"]
    selected = obs[:, :, 2 * item_dim + 2:]
    chosen = (reward.abs() == 1) & active  # the steps that selected an item
    assert bool(chosen.any())
    for t, b in chosen.nonzero().tolist():
        # the observation after the selection holds the selected item: the rewarded one iff the reward is +1
        rewarded = items_of(tasks, tasks.rewarded)[b]
        other = items_of(tasks, 1 - tasks.rewarded)[b]
        assert torch.equal(selected[t, b], rewarded if reward[t, b] > 0 else other)
    assert float(selected[~chosen].abs().sum()) == 0.0  # zeros on every other step
    # the slots before it are the default observation
    plain = make(128, seed=23, item_dim=item_dim, curriculum=None)[2]
    g = torch.Generator().manual_seed(5)
    base = run(plain, lambda env, obs: torch.randint(0, 2, (128,), generator=g))
    assert torch.equal(obs[:, :, : 2 * item_dim + 2], base["obs"])


def _selected_slots(family: Harlow, n: int = 256, seed: int = 29, item_dim: int = 4):
    """The selected-item slot over a random-action trial of ``family``'s env, and the show_selected reference."""
    tasks = family.sample_tasks(n, "train", task_generator(seed, "train"))
    g = torch.Generator().manual_seed(7)
    log = run(family.make_env(tasks), lambda env, obs: torch.randint(0, 2, (n,), generator=g))
    shown = make(n, seed=seed, split="train", show_selected=True, curriculum=None, item_dim=item_dim)[2]
    g = torch.Generator().manual_seed(7)
    ref = run(shown, lambda env, obs: torch.randint(0, 2, (n,), generator=g))
    assert torch.equal(log["obs"][:, :, : 2 * item_dim + 2], ref["obs"][:, :, : 2 * item_dim + 2])
    return log["obs"][:, :, 2 * item_dim + 2:], ref["obs"][:, :, 2 * item_dim + 2:]


def test_curriculum_evaluates_on_the_task_as_specified_and_trains_with_a_fading_cue():
    family = Harlow(HarlowConfig(item_dim=4, curriculum=(0.2, 0.6)))
    assert family.obs_dim == Harlow(HarlowConfig(item_dim=4, show_selected=True, curriculum=None)).obs_dim
    # the task itself (what held-out evaluation runs): the slot is always zero
    slot, ref = _selected_slots(family)
    assert float(ref.abs().sum()) > 0 and float(slot.abs().sum()) == 0.0
    # training: the cue on every trial until 0.2 of the budget, on none from 0.6, on a share in between
    assert family.training_family(0.6).cue_share == 0.0 and family.training_family(1.0).cue_share == 0.0
    for progress in (0.0, 0.2):
        slot, ref = _selected_slots(family.training_family(progress))
        assert torch.equal(slot, ref)
    mid = family.training_family(0.4)
    assert math.isclose(mid.cue_share, 0.5)
    slot, ref = _selected_slots(mid, n=1024)
    cued = slot.abs().sum((0, 2)) > 0
    seen = ref.abs().sum((0, 2)) > 0  # trials that selected an item at all
    assert torch.equal(slot[:, cued], ref[:, cued]) and float(slot[:, ~cued].abs().sum()) == 0.0
    assert 0.4 < float(cued.sum()) / float(seen.sum()) < 0.6


def test_no_curriculum_trains_on_the_family_itself():
    family = Harlow(HarlowConfig(curriculum=None))
    assert family.training_family(0.0) is family and family.training_family(0.7) is family


@pytest.mark.parametrize("bad", [(0.5, 0.5), (-0.1, 0.5), (0.2, 1.5), (0.6, 0.3)])
def test_curriculum_validation(bad):
    with pytest.raises(ValueError, match="curriculum"):
        HarlowConfig(curriculum=bad)
    with pytest.raises(ValueError, match="show_selected"):
        HarlowConfig(curriculum=(0.1, 0.5), show_selected=True)


# Random agent: the record says what the protocol computes -----------------------------------


def test_random_record_matches_independent_evaluation(tmp_path):
    from metabench import profiles, protocol, runner, suites

    profile = profiles.PROFILES.get("smoke")
    runs, notes = runner.plan(["random"], [suites.SUITES.get("efficiency")], profile, 1)
    assert notes == []
    (spec,) = [r for r in runs if r.task == "harlow"]
    threads = torch.get_num_threads()
    try:
        record = runner.execute_run(spec, tmp_path, "test-version")
    finally:
        torch.set_num_threads(threads)
    assert record["status"] == "ok", record.get("error")
    assert spec.path(tmp_path).exists()
    assert record["env_steps"] == 0  # random does not train

    # Reproduce the runner's calls: a fresh agent of the same seed, the curve evaluation at
    # step 0 (curve_tasks), then the final evaluation (test_tasks), both drawing from its generator.
    family = Harlow()
    entry = AGENTS.get("random")
    agent = entry.build(family, entry.config(family, profile), spec.seed)
    protocol.evaluate(agent, family, spec.seed, profile.curve_tasks)
    ev = protocol.evaluate(agent, family, spec.seed, profile.test_tasks)
    for k in ("episode_return", "episode_return_std", "fraction_of_optimal", "correct_after_first", "choices"):
        assert record["metrics"][k] == ev.metrics[k], k
    assert record["metrics"]["test_episodes"] == profile.test_tasks

    ret = record["metrics"]["episode_return"]
    assert -0.5 < ret < 1.5, ret  # a random walk: a fixation or two, coin-flip choices; far below 5.2
    assert ret < DEFAULT.bayes_optimal_return - 3
    assert math.isclose(record["metrics"]["fraction_of_optimal"], ret / DEFAULT.bayes_optimal_return, rel_tol=1e-6)
