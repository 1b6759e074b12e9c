"""Agents (``metabench.agents``): the registry of agent names.

Each name is an :class:`AgentEntry`: a class plus config overrides, so an
ablation (``metods_s1``) is a registered variant of one class.
"""

from __future__ import annotations

from metabench.registry import Registry

from .base import Agent, AgentConfig, AgentEntry, AgentInput, TrainingDiverged, TrainingMonitor
from .random_agent import RandomAgent

AGENTS: Registry[AgentEntry] = Registry("agent")


def register(name: str, cls: type[Agent], summary: str, **overrides) -> AgentEntry:
    return AGENTS.add(name, AgentEntry(name, cls, summary, overrides))


register("random", RandomAgent, "uniform random actions; calibrates every task")

__all__ = [
    "AGENTS", "Agent", "AgentConfig", "AgentEntry", "AgentInput", "TrainingDiverged", "TrainingMonitor", "register",
]
