"""Learning tests: on a fixed seed and a budget CI affords, each learner beats Random by a clear margin.

Harlow here is the task family with a shorter line (5 positions) and a 40-step
cap, so that the motor routine (fixate, choose, fixate again) is found within a
CI budget; the full task is what the committed runs use.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metabench.agents import AGENTS
from metabench.envs.harlow import Harlow, HarlowConfig
from metabench.profiles import PROFILES
from metabench.protocol import evaluate

pytestmark = pytest.mark.slow

FAMILY = Harlow(HarlowConfig(line_length=5, max_steps=40))
BUDGET = 200_000
MARGIN = 1.0  # return units; Random scores about 0.5 here, the motor routine alone 1.2


class NullMonitor:
    def update(self, env_steps, episodes, scalars):
        assert all(v == v for v in scalars.values()), scalars  # no NaN


def score(name: str, budget: int, **overrides) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        entry = AGENTS.get(name)
        cfg = dataclasses.replace(entry.config(FAMILY, PROFILES.get("smoke")), **overrides)
        agent = entry.build(FAMILY, cfg, seed=0)
        agent.meta_train(FAMILY, budget, NullMonitor())
        return evaluate(agent, FAMILY, seed=123, n_tasks=512).metrics["episode_return"]
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def random_score() -> float:
    return score("random", 0)


@pytest.mark.parametrize("name, overrides", [
    ("rl2", {"hidden": 64}),
    ("metods", {}),
])
def test_beats_random_on_harlow(name, overrides, random_score):
    learned = score(name, BUDGET, batch_tasks=64, ppo_epochs=4, minibatches=2, **overrides)
    assert learned > random_score + MARGIN, f"{name}: {learned:.2f} vs random {random_score:.2f}"
