"""Agents (``metabench.agents``): the registry of agent names.

Each name is an :class:`AgentEntry`: a class plus config overrides, so an
ablation (``metods_s1``) is a registered variant of one class. Another installed
package adds agents through the entry-point group ``metabench.agents`` (a callable
that calls :func:`register`; ``examples/metabench-lstm`` is one).
"""

from __future__ import annotations

from metabench.envs.locomotion import LOCOMOTION
from metabench.envs.metaworld import METAWORLD
from metabench.registry import Registry, load_plugins

from .base import Agent, AgentConfig, AgentEntry, AgentInput, TrainingDiverged, TrainingMonitor
from .maml import MAMLAgent
from .memoryless import MemorylessAgent
from .metods import MetODSAgent, UntrainedMetODS
from .pearl import PEARLAgent
from .random_agent import RandomAgent
from .rl2 import RL2Agent
from .scripted import ScriptedAgent

AGENTS: Registry[AgentEntry] = Registry("agent")


ABLATION_TASKS = ("harlow", "maze")
"""Where the paper ablates MetODS (Fig. 3c, Fig. 4c): its ablations run there only, and so does first-order MAML
(a cost ablation: on the MuJoCo tasks second-order MAML scores below random actions, FINDINGS.md, and a run
there costs 15-25 minutes of a core for a row that says nothing more)."""

ABLATION_SEEDS = {"quick": 3}
"""Seeds of an ablation per task on ``quick``: a maze run of one costs 15-65 minutes on a core here, and the
fast-training issue asks for 5 seeds where time allows, else 3. ``--seeds`` gives more (Harlow's S=1 and
no-α rows commit 10)."""

REFERENCE_TASKS = LOCOMOTION
"""Where the memoryless references (``oracle``, ``blind``) run: the continuous-control tasks, whose families
give task features (:meth:`~metabench.envs.base.TaskFamily.task_features`)."""


def register(name: str, cls: type[Agent], summary: str, paper_fallback: str | None = None,
             tasks: tuple[str, ...] | None = None, seeds: dict[str, int] | None = None, **overrides) -> AgentEntry:
    return AGENTS.add(name, AgentEntry(name, cls, summary, overrides, paper_fallback, tasks, seeds or {}))


register("random", RandomAgent, "uniform random actions; calibrates every task")
register("metods", MetODSAgent, "MetODS, linear write, S=4 (the paper's headline)")
register("metods_s1", MetODSAgent, "MetODS ablation: S=1", S=1, tasks=ABLATION_TASKS, seeds=ABLATION_SEEDS)
register("metods_s2", MetODSAgent, "MetODS ablation: S=2", S=2, tasks=ABLATION_TASKS, seeds=ABLATION_SEEDS)
register("metods_no_alpha", MetODSAgent, "MetODS ablation: scalar plasticity instead of the N x N mask α",
         tasks=ABLATION_TASKS, seeds=ABLATION_SEEDS, plasticity="scalar")
register("metods_vanilla", MetODSAgent, "MetODS ablation: vanilla write α⊙(v⊗v)", write="vanilla",
         tasks=ABLATION_TASKS, seeds=ABLATION_SEEDS)
register("metods_mlp", MetODSAgent, "MetODS ablation: MLP write α⊙(v⊗MLP(v))", write="mlp", tasks=ABLATION_TASKS,
         seeds=ABLATION_SEEDS)
register("rl2", RL2Agent, "RL²: GRU memory, same trainer as MetODS")
register("maml", MAMLAgent, "MAML: 3-layer MLP adapted mid-trial by policy-gradient steps, PPO outer loop, second order")
register("maml_fo", MAMLAgent, "MAML ablation: first order (inner gradients are constants of the meta-gradient)",
         tasks=ABLATION_TASKS, first_order=True)
register("pearl", PEARLAgent, "PEARL: SAC on a latent z inferred online from the trial's transitions (product of "
         "Gaussians); discrete SAC on Harlow and the maze (our extension)")
register("oracle", MemorylessAgent, "reference: memoryless policy given the task (direction; frozen actuator)",
         tasks=REFERENCE_TASKS, sees_task=True)
register("blind", MemorylessAgent, "reference: the oracle's policy without the task (can move, not where)",
         tasks=REFERENCE_TASKS, sees_task=False)
register("scripted", ScriptedAgent, "reference: metaworld's scripted policy given the goal (calibrates Meta-World)",
         tasks=METAWORLD)
register("untrained", UntrainedMetODS, "MetODS at its initial weights, never meta-trained (reference row)",
         paper_fallback="random", compile=False)

# Agents of other installed packages (entry-point group ``metabench.agents``), after metabench's own.
load_plugins("metabench.agents", AGENTS)

__all__ = [
    "AGENTS", "Agent", "AgentConfig", "AgentEntry", "AgentInput", "TrainingDiverged", "TrainingMonitor", "register",
]
