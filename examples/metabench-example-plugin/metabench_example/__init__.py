"""An example metabench plugin: an agent (``lstm``) and a task family (``bandit``, in the suite ``examples``).

metabench calls these two functions through the entry points of this package's ``pyproject.toml`` (groups
``metabench.agents`` and ``metabench.tasks``); ``metabench list`` then shows the names with this package as
their origin, and every metabench command (``run``, ``check``, ``report``) treats them as its own.
"""

from __future__ import annotations


def register_agents() -> None:
    from metabench.agents import register

    from .agent import LSTMAgent

    register("lstm", LSTMAgent, "example plugin: RL² with an LSTM instead of the GRU (RL²'s trainer settings)")


def register_tasks() -> None:
    from metabench.envs import register_task
    from metabench.suites import SUITES, Suite

    from .bandit import Bandit

    SUITES.add("examples", Suite("examples", "tasks of the example plugin: a two-armed Bernoulli bandit",
                                 target="lstm"))
    register_task("bandit", Bandit, "examples", {"smoke": 6_400, "quick": 500_000, "paper": 2_000_000})
