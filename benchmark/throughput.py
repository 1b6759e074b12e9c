"""Training throughput of the recurrent agents: env + forward + BPTT + update, in env-steps/s.

    python -m metabench.throughput                 # the full table (each case in its own process)
    python -m metabench.throughput --quick         # fewer updates per case

Cases: MetODS and RL² on Harlow (their Harlow configs) and on a maze-sized
input (observation 9 + action 4 + reward 1, N = 64, S = 4, B = 256,
100-step episodes; a synthetic family with random observations, since only
the sizes matter here), eager and compiled, A2C (one full-trial update per
batch) and the Harlow PPO setting. Each case runs in a fresh process so that
its peak resident memory (``ru_maxrss``) is its own; the first updates
(compilation, warm-up) are not timed. Not a test: the numbers are quoted,
not asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from metabench.envs.base import ActionSpace, BatchedEnv, FamilyConfig, MetricSpec, Step, TaskBatch, TaskFamily


@dataclass(frozen=True)
class MazeSizedConfig(FamilyConfig):
    obs_dim: int = 9
    actions: int = 4
    steps: int = 100


class MazeSizedEnv(BatchedEnv):
    """Random 3x3-window-sized observations, a reward now and then, fixed-length episodes."""

    def __init__(self, cfg: MazeSizedConfig, n: int):
        self.cfg, self.num_envs, self.t = cfg, n, 0
        self._done = torch.zeros(n, dtype=torch.bool)

    @property
    def done(self):
        return self._done

    def reset(self):
        self.t = 0
        self._done = torch.zeros(self.num_envs, dtype=torch.bool)
        return (torch.rand(self.num_envs, self.cfg.obs_dim) < 0.5).float()

    def step(self, action):
        self.t += 1
        obs = (torch.rand(self.num_envs, self.cfg.obs_dim) < 0.5).float()
        reward = (torch.rand(self.num_envs) < 0.05).float()
        trunc = torch.full((self.num_envs,), self.t >= self.cfg.steps)
        active = ~self._done
        self._done = self._done | trunc
        return Step(obs, reward, torch.zeros_like(trunc), trunc & active, active)

    def episode_metrics(self):
        return {}


class MazeSized(TaskFamily):
    name = "maze_sized"
    Config = MazeSizedConfig
    metrics: tuple[MetricSpec, ...] = ()
    primary_metric = ""

    @property
    def obs_dim(self):
        return self.config.obs_dim

    @property
    def action_space(self):
        return ActionSpace("discrete", self.config.actions)

    @property
    def max_episode_steps(self):
        return self.config.steps

    def sample_tasks(self, n, split, generator):
        return TaskBatch(key=torch.randint(0, 1 << 31, (n,), generator=generator))

    def make_env(self, tasks):
        return MazeSizedEnv(self.config, len(tasks))


CASES = {
    # name: (agent, family, config overrides)
    "metods-harlow-ppo": ("metods", "harlow", {}),
    "rl2-harlow-ppo": ("rl2", "harlow", {}),
    "metods-maze-a2c": ("metods", "maze_sized", {"N": 64, "S": 4, "batch_tasks": 256}),
    "rl2-maze-a2c": ("rl2", "maze_sized", {"batch_tasks": 256}),
}


def measure(case: str, compiled: bool, updates: int, warmup: int) -> dict:
    from metabench.agents import AGENTS
    from metabench.envs import make_family
    from metabench.envs.base import task_generator
    from metabench.profiles import PROFILES

    torch.set_num_threads(os.cpu_count() or 1)
    agent_name, family_name, overrides = CASES[case]
    family = MazeSized() if family_name == "maze_sized" else make_family(family_name)
    entry = AGENTS.get(agent_name)
    cfg = dataclasses.replace(entry.config(family, PROFILES.get("quick")), **overrides, compile=compiled)
    agent = entry.build(family, cfg, seed=0)
    gen = task_generator(0, "train")
    steps = 0
    t_collect = t_update = 0.0
    for i in range(warmup + updates):
        t0 = time.perf_counter()
        ro = agent.collect(family, gen)
        t1 = time.perf_counter()
        agent.update(ro)
        t2 = time.perf_counter()
        if i >= warmup:
            steps += int(ro.active.sum())
            t_collect += t1 - t0
            t_update += t2 - t1
    total = t_collect + t_update
    return {
        "case": case, "compiled": compiled, "env_steps_per_s": steps / total,
        "collect_share": t_collect / total, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "batch_tasks": cfg.batch_tasks, "ppo_epochs": cfg.ppo_epochs, "updates": updates,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer timed updates per case")
    parser.add_argument("--case", help="run one case in this process and print its JSON (internal)")
    parser.add_argument("--compiled", action="store_true")
    args = parser.parse_args()
    updates, warmup = (3, 2) if args.quick else (8, 3)
    if args.case:
        print(json.dumps(measure(args.case, args.compiled, updates, warmup)))
        return
    print("| case | mode | env-steps/s | collect share | peak RSS (GB) | B | PPO epochs |")
    print("|---|---|---|---|---|---|---|")
    for case in CASES:
        for compiled in (False, True):
            cmd = [sys.executable, "-m", "metabench.throughput", "--case", case] + (["--compiled"] if compiled else [])
            cmd += ["--quick"] if args.quick else []
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"| {case} | {'compiled' if compiled else 'eager'} | failed: {out.stderr.strip().splitlines()[-1]} |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {case} | {'compiled' if compiled else 'eager'} | {r['env_steps_per_s']:,.0f} | "
                  f"{r['collect_share']:.0%} | {r['peak_rss_gb']:.2f} | {r['batch_tasks']} | {r['ppo_epochs']} |",
                  flush=True)


if __name__ == "__main__":
    main()
