"""Every agent's default hyperparameters, in one table keyed by (agent, task, profile).

A :class:`Row` names the agents (by their class's ``defaults_key``), the tasks and
the profiles it applies to (``ANY``: all of them) and the settings it makes.
Rows apply in order, later rows winning, and a row sets only the fields that
the agent's config declares (``batch_tasks`` of a smoke MuJoCo row reaches
MetODS, RL² and MAML, not Random). A registered variant (``metods_s1``) then
applies its own overrides (``metabench.agents``). ``metabench config AGENT TASK
--profile P`` prints the result, as a run of it would record it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metabench.envs.locomotion import LOCOMOTION
from metabench.envs.metaworld import METAWORLD

ANY = "*"


@dataclass(frozen=True)
class Row:
    agents: tuple[str, ...] | str
    """Defaults keys of agent classes (``metods``, ``rl2``, ``maml``), or ``ANY``."""
    tasks: tuple[str, ...] | str
    """Task family names, or ``ANY``."""
    profiles: tuple[str, ...] | str
    """Profile names, or ``ANY``."""
    settings: Mapping[str, Any]
    """Config field -> value."""
    why: str
    """What the row is for, one line."""

    def applies(self, agent: str, task: str, profile: str) -> bool:
        return all(key == ANY or name in key for key, name in
                   ((self.agents, agent), (self.tasks, task), (self.profiles, profile)))


RECURRENT = ("metods", "rl2", "memoryless")
"""The agents that share the recurrent trainer settings: only the memory core differs between them (the
memoryless references, ``oracle`` and ``blind``, have none)."""

TABLE: tuple[Row, ...] = (
    # --- The trainer, per task (recurrent agents: identical settings, so only the memory differs) ---
    Row(RECURRENT, ("harlow",), ANY,
        {"batch_tasks": 256, "ppo_epochs": 4, "minibatches": 8, "gamma": 0.99, "gae_lambda": 0.95},
        "PPO, 4 epochs x 8 minibatches of 32 trials: full-trial A2C updates were too few per env step to "
        "leave chance (FINDINGS.md, Harlow)"),
    Row(RECURRENT, ("maze",), ANY,
        {"batch_tasks": 64, "ppo_epochs": 4, "minibatches": 4, "gamma": 0.95, "gae_lambda": 0.95,
         "reward_scale": 0.1},
        "γ = λ = 0.95 and reward x 0.1 as the prototype; PPO 4 x 4 on 64 trials, more updates per env step "
        "than 256 trials (FINDINGS.md, maze)"),
    Row((*RECURRENT, "maml"), LOCOMOTION, ANY,
        {"obs_norm": True, "reward_norm": True, "batch_tasks": 32, "ppo_epochs": 10, "minibatches": 8},
        "PPO for continuous control: observations and rewards normalised, 32 trials x 10 epochs x 8 minibatches "
        "(20x the gradient steps per env step of 128 x 4 x 4); measured on HalfCheetah and Ant (FINDINGS.md, "
        "'Continuous control: the trainer settings')"),
    Row(RECURRENT, LOCOMOTION, ANY, {"gamma": 0.99, "gae_lambda": 0.95, "lr": 3e-4},
        "lr 3e-4 as CleanRL's MuJoCo PPO (1e-3 diverged for MetODS)"),
    Row((*RECURRENT, "maml"), METAWORLD, ANY,
        {"obs_norm": True, "reward_norm": True, "batch_tasks": 8, "ppo_epochs": 10, "minibatches": 4,
         "gamma": 0.99, "gae_lambda": 0.95},
        "Meta-World: the continuous-control practice; a trial is 5,000 steps, so 8 trials (40 k steps) an update, "
        "10 epochs x 4 minibatches of 2 trials; full BPTT through the trial (MetODS's fused kernel saves W every "
        "~sqrt(T) steps)"),
    Row(RECURRENT, METAWORLD, ANY, {"lr": 3e-4}, "lr 3e-4 as on the MuJoCo tasks"),
    # --- MetODS's core sizes (the paper: Harlow N = 20); the compiled step is several times faster ---
    Row(("metods",), ("harlow",), ANY, {"N": 20, "compile": True}, "the paper's Harlow size"),
    Row(("metods",), ("maze", *LOCOMOTION, *METAWORLD), ANY, {"N": 64, "compile": True},
        "ours: N for the maze, MuJoCo and Meta-World"),
    # --- MAML: where the trial is cut for the inner adaptation (agents/maml.py), and its batches ---
    Row(("maml",), ("harlow",), ANY, {"adapt_every": 10, "batch_tasks": 256, "ppo_epochs": 4, "minibatches": 8},
        "adapts after each presentation and fixation (about 10 steps)"),
    Row(("maml",), ("maze",), ANY, {"adapt_every": 50, "batch_tasks": 128, "ppo_epochs": 4, "minibatches": 4,
                                    "gamma": 0.95},
        "adapts once, at step 50 of 100"),
    Row(("maml",), LOCOMOTION, ANY, {"adapt_every": 100, "inner_lr": 0.1, "gamma": 0.99},
        "adapts once at t = 100 of 200 (the paper's Ant-dir); inner step 0.1, MAML's own Ant-dir value"),
    Row(("maml",), METAWORLD, ANY, {"adapt_every": 500, "inner_lr": 0.1, "gamma": 0.99},
        "adapts after each of the trial's 500-step episodes (Meta-World's MAML adapts between rollouts)"),
    Row(("maml",), (*LOCOMOTION, *METAWORLD), ANY, {"lr": 3e-4, "entropy_coef": 0.0},
        "no entropy bonus, as garage's MAML-TRPO (policy_ent_coeff 0), and lr 3e-4 as the other agents: with "
        "0.01 and 1e-3 the log-std drifted up, trials shortened and the PPO ratio of the recomputed adaptation "
        "overflowed (NaN at 0.7-1.0 M steps on Ant-dir); without, the training return rose (FINDINGS.md, MAML)"),
    # --- PEARL: the authors' settings (the config's defaults) on paper; scaled down on quick (agents/pearl.py) ---
    Row(("pearl",), ("ant_dir",), ("paper",), {"meta_batch": 4, "context_batch": 256, "updates_per_env_step": 0.8},
        "the authors' Ant-dir: 4 tasks per step, 256-transition contexts, twice the gradient steps"),
    Row(("pearl",), ANY, ("quick",), {"hidden": 128, "layers": 2, "encoder_hidden": 128, "encoder_layers": 2,
                                      "meta_batch": 8, "batch": 128},
        "a gradient step of the authors' size took 0.73 s on a core here; 8 tasks x 128 transitions on 2 x 128 "
        "networks ~26 ms (FINDINGS.md, PEARL)"),
    Row(("pearl",), LOCOMOTION, ("quick",), {"updates_per_env_step": 0.02, "collect_trials": 16},
        "40-60 k gradient steps in a 2-3 M-step run: ~20-30 min on one core"),
    Row(("pearl",), ("harlow", "maze"), ("quick",), {"updates_per_env_step": 0.005, "collect_trials": 32},
        "50-60 k gradient steps in a 10-12 M-step run; 32 trials a round, so that acting step by step is cheap"),
    Row(("pearl",), ("maze",), ("quick", "paper"), {"target_entropy_scale": 0.9},
        "with 0.5 x log 4 the policy's entropy fell to its target, the maze score peaked near 2 M steps and fell "
        "back to random's by the end; at 0.9 it held 4.2-4.5 from 4 M steps on 4 of 4 seeds (FINDINGS.md, PEARL)"),
    Row(("pearl",), METAWORLD, ANY, {"posterior_every": 0},
        "Meta-World's 10-episode trials: z redrawn from the posterior at each episode start, as the authors"),
    Row(("pearl",), METAWORLD, ("quick",), {"updates_per_env_step": 0.02, "collect_trials": 4},
        "as on the MuJoCo tasks; 4 trials (20 k steps) a round"),
    # --- Profiles ---
    Row(RECURRENT, ANY, ("smoke",), {"batch_tasks": 64, "compile": False, "ppo_epochs": 2, "minibatches": 2},
        "seconds a run (CI, the regression gate): no compile, small batches"),
    Row(("maml",), ANY, ("smoke",), {"batch_tasks": 64, "ppo_epochs": 2, "minibatches": 2},
        "seconds a run (CI, the regression gate)"),
    Row(("pearl",), ANY, ("smoke",), {"hidden": 32, "layers": 2, "encoder_hidden": 32, "encoder_layers": 1,
                                      "meta_batch": 4, "batch": 32, "context_batch": 16, "train_tasks": 64,
                                      "collect_trials": 4, "updates_per_env_step": 0.01},
        "seconds a run (CI, the regression gate): small networks and batches, 64 replay slots"),
    Row(ANY, LOCOMOTION, ("smoke",), {"batch_tasks": 16},
        "smoke on MuJoCo: one update of 16 trials x 200 steps of a ~5k steps/s simulator"),
    Row(ANY, METAWORLD, ("smoke",), {"batch_tasks": 16, "collect_trials": 4},
        "smoke on Meta-World (trials of 2 x 50 steps there): two updates of 16 trials"),
)


def declared(config_cls: type) -> set[str]:
    """The field names a config class declares."""
    return {f.name for f in dataclasses.fields(config_cls)}


def defaults_for(agent_key: str, config_cls: type, task: str, profile: str,
                 table: tuple[Row, ...] = TABLE) -> dict[str, Any]:
    """The settings of every row that applies to (agent, task, profile), in order, restricted to the fields
    ``config_cls`` declares."""
    fields = declared(config_cls)
    out: dict[str, Any] = {}
    for row in table:
        if row.applies(agent_key, task, profile):
            out.update({k: v for k, v in row.settings.items() if k in fields})
    return out


def unknown_settings(config_classes: Mapping[str, type], table: tuple[Row, ...] = TABLE) -> list[str]:
    """Settings that no config class of the agents a row names declares (a typo would otherwise be dropped
    silently). ``config_classes``: defaults key -> config class of every registered agent."""
    problems = []
    for row in table:
        keys = list(config_classes) if row.agents == ANY else [k for k in row.agents if k in config_classes]
        if not keys:
            problems.append(f"row {row.why!r} names no registered agent")
            continue
        known = set().union(*(declared(config_classes[k]) for k in keys))
        problems += [f"row {row.why!r}: no agent it names declares {name!r}" for name in row.settings
                     if name not in known]
    return problems
