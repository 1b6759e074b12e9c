"""Profiles: how much compute a run gets (the project spec, "Suites and budgets").

``smoke`` is seconds a run, for CI; ``quick`` is enough for the agents to learn
at most ~50 minutes a run on one core, and is what this repository commits;
``paper`` is the paper's budgets, for a GPU or a cluster. A profile holds what
is the same for every task (seeds, held-out tasks, curve points); each task's
budget under each profile is declared where the task is registered
(:data:`metabench.envs.FAMILIES`), so adding a task touches no table here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class Profile:
    name: str
    """Registered name; also the first folder of every record path."""
    summary: str
    """One line for ``metabench list``."""
    seeds: int
    """Seeds per (agent, task) when ``--seeds`` is not given, unless the task declares its own
    (:meth:`seeds_for`)."""
    test_tasks: int
    """Held-out test tasks (one trial each) in the final evaluation of a run."""
    curve_tasks: int
    """Held-out test tasks at each evaluation along training (the learning curve)."""
    curve_points: int
    """Evaluations along training, evenly spaced in environment steps (plus one at step 0)."""

    @property
    def train_env_steps(self) -> Mapping[str, int]:
        """Meta-training budget in environment steps, per registered task that has one under this profile."""
        from metabench.envs import FAMILIES

        return {name: entry.budgets[self.name] for name, entry in FAMILIES.items() if self.name in entry.budgets}

    def budget(self, task: str) -> int:
        budgets = self.train_env_steps
        if task not in budgets:
            raise KeyError(f"profile {self.name!r} has no budget for task {task!r}")
        return int(budgets[task])

    def paper_steps(self, task: str) -> int | None:
        """The ``paper`` profile's budget for ``task``, to read this one's against; None for the paper profile
        itself or where it has none."""
        if self.name == "paper" or "paper" not in PROFILES:
            return None
        return PROFILES.get("paper").train_env_steps.get(task)

    def budget_text(self, task: str) -> str:
        """``task``'s budget in words, with the share of the ``paper`` profile's budget it is (reports, ``list``):
        "1,000,000 meta-training env steps per run (2 % of the paper's 50,000,000)"."""
        steps, paper = self.budget(task), self.paper_steps(task)
        share = f" ({100 * steps / paper:.3g} % of the paper's {paper:,})" if paper else ""
        return f"{steps:,} meta-training env steps per run{share}"

    def _eval_tasks(self, task: str) -> tuple[int, int]:
        entry = _task_entry(task)
        default = (self.test_tasks, self.curve_tasks)
        return default if entry is None else tuple(entry.eval_tasks.get(self.name, default))

    def seeds_for(self, task: str, agent: str | None = None) -> int:
        """Seeds of ``agent`` (or of any agent) on ``task`` when ``--seeds`` is not given: :attr:`seeds`, or fewer
        where the task or the agent declares its own under this profile (the MuJoCo tasks on ``quick``, whose
        runs cost minutes of simulation; the MetODS ablations); the smallest of them."""
        from metabench.agents import AGENTS

        entry = _task_entry(task)
        counts = [self.seeds, entry.seeds.get(self.name, self.seeds) if entry is not None else self.seeds]
        if agent is not None and agent in AGENTS:
            counts.append(AGENTS.get(agent).seeds.get(self.name, self.seeds))
        return int(min(counts))

    def test_tasks_for(self, task: str) -> int:
        """Held-out test tasks of the final evaluation of a run of ``task``."""
        return self._eval_tasks(task)[0]

    def curve_tasks_for(self, task: str) -> int:
        """Held-out test tasks of each evaluation along training of ``task``."""
        return self._eval_tasks(task)[1]

    def as_dict(self, task: str) -> dict:
        """The part of the profile that shapes a run of ``task`` (saved in its config)."""
        return {
            "name": self.name,
            "train_env_steps": self.budget(task),
            "test_tasks": self.test_tasks_for(task),
            "curve_tasks": self.curve_tasks_for(task),
            "curve_points": self.curve_points,
        }


def _task_entry(task: str):
    """The registered :class:`~metabench.envs.TaskEntry` of ``task``, or None for a name not registered."""
    from metabench.envs import FAMILIES

    return FAMILIES.get(task) if task in FAMILIES else None


PROFILES: Registry[Profile] = Registry("profile")

PROFILES.add("smoke", Profile(name="smoke", summary="seconds a run; CI and the regression gate",
                              seeds=2, test_tasks=128, curve_tasks=32, curve_points=2))
PROFILES.add("quick", Profile(name="quick", summary="at most ~50 minutes a run on one core; what this repository "
                              "commits", seeds=5, test_tasks=1024, curve_tasks=256, curve_points=20))
PROFILES.add("paper", Profile(name="paper", summary="the paper's budgets; for a GPU or a cluster",
                              seeds=5, test_tasks=2048, curve_tasks=512, curve_points=50))

DEFAULT_PROFILE = "quick"
