from __future__ import annotations

import contextlib

import pytest

from metabench.agents import AGENTS, AgentEntry


@contextlib.contextmanager
def registered(name: str, cls, summary: str = "test agent", **overrides):
    """Temporarily register an agent (in this process only: use workers=1)."""
    AGENTS.add(name, AgentEntry(name, cls, summary, overrides))
    try:
        yield
    finally:
        del AGENTS._items[name]


@pytest.fixture
def temp_agent():
    return registered
