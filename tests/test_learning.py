"""Learning tests: on a fixed seed and a budget CI affords, each learner beats Random by a clear margin.

Maze: MetODS on the maze as SPEC.md defines it; a few hundred thousand steps
are far below what remembering the target needs, but enough to explore the
maze better than a random walk.

Harlow as SPEC.md defines it, on budgets far below what the association
needs: a learner that beats Random here has at least found the motor routine
(fixate, choose, fixate again: 1.2 in expectation), which Random's walk does
not (about 0.45).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metabench.agents import AGENTS
from metabench.envs import make_family
from metabench.envs.harlow import Harlow, HarlowConfig
from metabench.envs.maze import Maze
from metabench.profiles import PROFILES
from metabench.protocol import evaluate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # minutes a test: above the 900 s default limit

# Pinned to the layout these budgets were calibrated on (before item_dim=8 and the cue curriculum became the
# defaults): with the curriculum's schedule squeezed into a few hundred thousand steps, RL² scored 0.86 and
# MetODS 0.55 against random's 0.37 (2026-12-04).
FAMILY = Harlow(HarlowConfig(item_dim=1, curriculum=None))
MARGIN = 0.5  # return units


class NullMonitor:
    def update(self, env_steps, episodes, scalars):
        assert all(v == v for v in scalars.values()), scalars  # no NaN


def score(name: str, budget: int, family=FAMILY, **overrides) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        entry = AGENTS.get(name)
        cfg = dataclasses.replace(entry.config(family, PROFILES.get("quick")), **overrides)
        agent = entry.build(family, cfg, seed=0)
        agent.meta_train(family, budget, NullMonitor())
        return evaluate(agent, family, seed=123, n_tasks=512).metrics[family.primary_metric]
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def random_score() -> float:
    return score("random", 0)


MAZE_MARGIN = 3.0  # cumulative reward: random walks score about 3


def test_metods_beats_random_on_the_maze():
    maze = Maze()
    random = score("random", 0, family=maze)
    learned = score("metods", MAZE_BUDGET, family=maze, batch_tasks=64)
    assert learned > random + MAZE_MARGIN, f"metods: {learned:.2f} vs random {random:.2f}"


MAZE_BUDGET = 1_000_000
"""With 64 trials per update. 300 k was the edge of learning: 14.4 in the first calibration run, 11-15
at 300 k in the committed quick runs (code 3e47db1); on the machine of 2026-12-04, 3.71 (random: 3.30)
from aa76a39 on (the float64 gradient clip), though CI had passed there on earlier machines: float-level
differences move seed 0 across the edge; 500 k gave 6.19 there (the margin needs 6.30). The committed
runs are at 16-22 by 400 k and 27-28 by 1 M (seeds 0-2)."""


def test_maml_beats_random_on_the_maze():
    """A memoryless MLP gains little on the maze (the paper's MAML: 15 against its random's 4); a clear
    but smaller margin: a reactive policy that walks the corridors instead of dithering."""
    maze = Maze()
    random = score("random", 0, family=maze)
    learned = score("maml", 750_000, family=maze)  # 4.96 against 3.30 when written
    assert learned > random + 1.0, f"maml: {learned:.2f} vs random {random:.2f}"


@pytest.mark.parametrize("name, budget, overrides", [
    ("rl2", 400_000, {"hidden": 64}),
    # MetODS learns the motor routine more slowly: more, smaller minibatches. 600 k was the edge on the fused
    # kernel (2026-12-06, seeds 0-3: fused 0.57, 1.19, 1.17, 0.41; autograd 1.21, 1.19, 0.98, 0.69; random 0.38);
    # 1.2 M: fused 1.06, 1.19, 1.19, 1.19, about 40 s a run.
    ("metods", 1_200_000, {"minibatches": 8}),
])
def test_beats_random_on_harlow(name, budget, overrides, random_score):
    learned = score(name, budget, batch_tasks=256, ppo_epochs=4, **overrides)
    assert learned > random_score + MARGIN, f"{name}: {learned:.2f} vs random {random_score:.2f}"


def test_the_oracle_learns_to_run_and_the_blind_policy_cannot_choose_where():
    """HalfCheetah fwd-back (impairment_cheetah, intact): the policy told the direction runs along it; the same
    policy without it cannot know which way, and gains little over random. The MuJoCo trainer defaults
    (agents/defaults.py) at 300 k: the oracle reached 173.5 when written (2026-12-06; 372 at 1 M, against 55.7
    at 1 M on the settings before them)."""
    cheetah = make_family("impairment_cheetah")
    random = score("random", 0, family=cheetah)
    oracle = score("oracle", 300_000, family=cheetah)
    blind = score("blind", 300_000, family=cheetah)
    assert oracle > random + 100, f"oracle: {oracle:.1f} vs random {random:.1f}"
    assert oracle > blind + 100, f"oracle: {oracle:.1f} vs blind {blind:.1f}"


def test_pearl_learns_to_run_on_the_cheetah():
    """PEARL (SAC on a latent z inferred online) on HalfCheetah fwd-back at 150 k env steps and 10 k gradient
    steps scored 197.3 against random's -40 when written (2026-12-06; 100 k steps and 5 k gradient steps: -29.6,
    not yet moving). On the maze the margin at what CI affords is thin: at 300 k steps (6 k gradient steps)
    2.8-3.9 against 3.0 over five settings; with the maze's entropy target of 0.9 x log 4, at 1.5 M steps
    (7.5 k gradient steps, ~4 min), 4.08 against random's 3.63 on this file's 512 mazes (2026-12-07;
    FINDINGS.md, PEARL). So its learning test is here."""
    cheetah = make_family("impairment_cheetah")
    random = score("random", 0, family=cheetah)
    learned = score("pearl", 150_000, family=cheetah, updates_per_env_step=0.067)
    assert learned > random + 100, f"pearl: {learned:.1f} vs random {random:.1f}"
