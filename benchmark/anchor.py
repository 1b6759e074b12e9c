"""The continuous-control sanity anchor: the ``oracle`` on HalfCheetah running forward, beside CleanRL's PPO.

At θ = 0 the reward of ``impairment_cheetah`` is gymnasium's own HalfCheetah reward (forward velocity minus
0.1 |a|², tested in tests/test_locomotion.py), so a policy told the direction can be set beside a published
single-task PPO on HalfCheetah. The episodes differ in length (ours 200 steps, theirs 1,000), so both are
given as return *per step*; the budgets differ too, and are printed with them. The oracle is a meta-trained
policy that shares its network between the two directions, so it is expected at or below a single-task
policy at the same budget: the anchor says our trainer is in the right range, not that it matches.

    python -m metabench.anchor [--results results] [--profile quick] [--tasks 128]

It loads every finished ``oracle`` run of ``impairment_cheetah`` under the profile (``seed<N>.pt`` beside
its record, written by the run) and scores it on ``--tasks`` held-out trials, all forward and intact, with
the shared protocol. It prints a markdown table; nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

CLEANRL = {
    "what": "CleanRL `ppo_continuous_action.py` on HalfCheetah-v4 (Open RL Benchmark, tag pr-424; "
            "vwxyzjn/cleanrl docs/rl-algorithms/ppo.md)",
    "return": 1442.64, "std": 46.03, "episode_steps": 1000, "env_steps": 1_000_000,
}
"""CleanRL's published PPO return on HalfCheetah at its default budget, mean ± std over its seeds."""

TASK, AGENT = "impairment_cheetah", "oracle"


def forward_return_per_step(agent, family, seed: int, n_tasks: int) -> tuple[float, float]:
    """Mean return per step, and per trial, of ``agent`` on ``n_tasks`` held-out tasks turned forward (θ = 0)."""
    from metabench.envs.base import task_generator
    from metabench.protocol import evaluation_actions, run_trials

    tasks = family.sample_tasks(n_tasks, "test", task_generator(seed, "test"))
    tasks = dataclasses.replace(tasks, theta=torch.zeros_like(tasks.theta))
    with torch.no_grad(), agent.acting_with(evaluation_actions(seed)):
        res = run_trials(agent, family, tasks)
    rewards, active = res.rewards.to(torch.float64), res.active.to(torch.float64)
    per_trial = rewards.sum(0)
    return float(rewards.sum() / active.sum()), float(per_trial.mean())


def main(argv: list[str] | None = None) -> int:
    from metabench.envs import FAMILIES, make_family
    from metabench.profiles import PROFILES
    from metabench.runner import load_agent

    p = argparse.ArgumentParser(prog="python -m metabench.anchor", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--profile", default="quick")
    p.add_argument("--tasks", type=int, default=128)
    args = p.parse_args(argv)
    profile = PROFILES.get(args.profile)
    folder = args.results / args.profile / FAMILIES.get(TASK).suite / TASK / AGENT
    records = sorted(folder.glob("seed*.json"))
    if not records:
        raise SystemExit(f"no {AGENT} records under {folder}; run `metabench run --agents {AGENT} --tasks {TASK}`")
    family = make_family(TASK)
    budget = profile.budget(TASK)
    steps = family.max_episode_steps
    print("| policy | env steps of training | episode steps | return per step | return per episode |")
    print("|---|---|---|---|---|")
    for record in records:
        try:
            agent = load_agent(record)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        seed = int(record.stem.removeprefix("seed"))
        per_step, per_trial = forward_return_per_step(agent, family, seed, args.tasks)
        print(f"| our `oracle`, seed {seed}, θ = 0 ({args.tasks} held-out trials) | {budget:,} (both directions) "
              f"| {steps} | {per_step:.2f} | {per_trial:.1f} |")
    c = CLEANRL
    print(f"| {c['what']} | {c['env_steps']:,} | {c['episode_steps']} | {c['return'] / c['episode_steps']:.2f} "
          f"| {c['return']:.1f} ± {c['std']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
