from __future__ import annotations

import contextlib

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _one_thread():
    """Small batched tensor ops: one intra-op thread is faster and steadier on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordingMonitor:
    """A TrainingMonitor that only keeps what it is told."""

    def __init__(self):
        self.log: list[tuple[int, int, dict[str, float]]] = []

    def update(self, env_steps, episodes, scalars):
        self.log.append((env_steps, episodes, dict(scalars)))
