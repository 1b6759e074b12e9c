"""Harlow's one-shot learning task on a line, batched in torch (the project spec, "Harlow").

A line of ``line_length`` positions with fixation at the centre. An episode
is: fixation, then ``presentations`` x (presentation, fixation). Reaching the
centre while fixating pays ``fixation_reward`` and makes the two items of the
episode appear at the two ends, in an order drawn afresh at each presentation.
Reaching an end selects the item shown there: ``correct_reward`` for the item
that pays this episode, ``wrong_reward`` for the other; the items vanish and
the agent must fixate again. The episode terminates on the last fixation, or
is truncated at ``max_steps``. Actions: 0 = left, 1 = right.

Maximum return: (P + 1) * 0.2 + P * 1 = 6.2 for P = 5 (the paper's dashed
line). The first choice is a coin flip, so the best *expected* return is
(P + 1) * 0.2 + 0 + (P - 1) * 1 = 5.2, the Bayes-optimal value that
``fraction_of_optimal`` divides by.

Ours (not fixed by the paper): the start position is uniform over the
non-centre positions; the observation is [position, values of the item at
the left end, values of the item at the right end, phase flag], items shown
only during a presentation (zeros otherwise; with ``show_selected``, one more
slot holds the item just selected, on the step right after the selection); item values are uniform in [-1, 1)^item_dim, drawn per episode (= per task, one
episode per trial).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from . import rng
from .base import ActionSpace, BatchedEnv, FamilyConfig, MemoryLabels, MetricSpec, Split, Step, TaskBatch, TaskFamily

FIXATE, CHOOSE = 0, 1


@dataclass(frozen=True)
class HarlowConfig(FamilyConfig):
    line_length: int = 11
    """Number of positions on the line (odd, so there is a centre)."""
    presentations: int = 5
    """Presentations of the item pair per episode."""
    max_steps: int = 100
    """Step cap of an episode; reaching it is a truncation (ours)."""
    fixation_reward: float = 0.2
    """Reward for reaching the centre while fixating."""
    correct_reward: float = 1.0
    """Reward for selecting the item that pays this episode."""
    wrong_reward: float = -1.0
    """Reward for selecting the other item."""
    item_dim: int = 8
    """Values per item (item coding, ours): each item is uniform in [-1, 1)^item_dim. The paper
    shows images; 8 numbers per item let a Hebbian memory tell a pair apart, where 1 did not
    (FINDINGS.md, Harlow)."""
    position_coding: Literal["scalar", "onehot"] = "scalar"
    """How the agent's position is observed: one number in [-1, 1], or one-hot."""
    show_selected: bool = False
    """Ours, off by default: on the step that follows a selection (the step whose input
    carries its +1/-1), also observe the item just selected, in its own ``item_dim`` slot
    (zeros otherwise). It adds no information (the agent saw that item at the end it moved
    to one step before), but it puts item and outcome in one observation, which a memory
    rewritten from the current input (MetODS's Hebbian write) needs to bind them (FINDINGS.md,
    Harlow)."""
    curriculum: tuple[float, float] | None = (0.125, 0.25)
    """A training curriculum on the selected-item cue (ours; None: none). With ``(a, b)``,
    0 <= a < b <= 1, the observation carries the slot of ``show_selected``; the task itself,
    which held-out evaluation runs, leaves it at zero (the task as specified, plus one
    constant input), while training trials (:meth:`Harlow.training_family`) fill it for a
    share of them that is 1 until fraction ``a`` of the training budget and falls linearly to
    0 at fraction ``b``: the rest of training runs on the task as specified. The default
    (0.125, 0.25) is on for every agent: on the quick budget (12 M steps) the cue is on every
    training trial until 1.5 M steps and gone from 3 M. Without it, MetODS did not leave chance
    on Harlow (FINDINGS.md, Harlow)."""

    def __post_init__(self):
        if self.line_length < 3 or self.line_length % 2 == 0:
            raise ValueError(f"line_length must be odd and >= 3, got {self.line_length}")
        if self.presentations < 1 or self.max_steps < 1 or self.item_dim < 1:
            raise ValueError("presentations, max_steps and item_dim must be positive")
        if self.bayes_optimal_return <= 0:
            raise ValueError("the rewards give a Bayes-optimal return <= 0; fraction_of_optimal would be meaningless")
        if self.curriculum is not None:
            a, b = self.curriculum
            if not 0 <= a < b <= 1:
                raise ValueError(f"curriculum must be (a, b) with 0 <= a < b <= 1, got {self.curriculum!r}")
            if self.show_selected:
                raise ValueError("curriculum fades the show_selected cue out; do not also set show_selected")
        if self.position_coding not in ("scalar", "onehot"):
            raise ValueError(f"position_coding must be 'scalar' or 'onehot', got {self.position_coding!r}")

    @property
    def selected_slot(self) -> bool:
        """Whether the observation has the selected-item slot (``show_selected`` or a curriculum)."""
        return self.show_selected or self.curriculum is not None

    @property
    def centre(self) -> int:
        return self.line_length // 2

    @property
    def max_return(self) -> float:
        """Every fixation and every choice right: 6.2 with the defaults."""
        return (self.presentations + 1) * self.fixation_reward + self.presentations * self.correct_reward

    @property
    def bayes_optimal_return(self) -> float:
        """Best expected return: the first choice is a coin flip, the rest are right (5.2)."""
        first = 0.5 * (self.correct_reward + self.wrong_reward)
        return (
            (self.presentations + 1) * self.fixation_reward
            + first
            + (self.presentations - 1) * self.correct_reward
        )


@dataclass
class HarlowTasks(TaskBatch):
    items: torch.Tensor
    """``[n, 2, item_dim]`` float: the values of the two items."""
    rewarded: torch.Tensor
    """``[n]`` int64 in {0, 1}: which item pays."""


class HarlowEnv(BatchedEnv):
    def __init__(self, family: "Harlow", tasks: HarlowTasks):
        self.cfg = family.config
        self.tasks = tasks
        self.num_envs = len(tasks)
        b = self.num_envs
        self._episode = torch.full((b,), -1, dtype=torch.int64)
        self._done = torch.ones(b, dtype=torch.bool)
        self.pos = torch.zeros(b, dtype=torch.int64)
        self.phase = torch.zeros(b, dtype=torch.int64)
        self.left_item = torch.zeros(b, dtype=torch.int64)  # which item (0/1) sits at the left end
        self.selected = torch.full((b,), -1, dtype=torch.int64)  # item selected on the last step, -1 if none
        self.fixations = torch.zeros(b, dtype=torch.int64)
        self.choices = torch.zeros(b, dtype=torch.int64)
        self.correct_after_first = torch.zeros(b, dtype=torch.int64)
        self.t = torch.zeros(b, dtype=torch.int64)
        self.ret = torch.zeros(b)
        # Trials whose selected-item slot is filled: all with show_selected, a drawn share under a curriculum.
        share = 1.0 if self.cfg.show_selected else family.cue_share
        self.cue = (rng.uniform(tasks.key, 0x5E1EC7) < share).to(torch.float32).unsqueeze(1)

    @property
    def done(self) -> torch.Tensor:
        return self._done

    def reset(self) -> torch.Tensor:
        cfg = self.cfg
        self._episode += 1
        # Start uniformly on a non-centre position.
        p = rng.randint(self.tasks.key, cfg.line_length - 1, self._episode, 0)
        self.pos = torch.where(p >= cfg.centre, p + 1, p)
        self.phase.zero_()
        self.selected.fill_(-1)
        self.fixations.zero_()
        self.choices.zero_()
        self.correct_after_first.zero_()
        self.t.zero_()
        self.ret.zero_()
        self._done = torch.zeros(self.num_envs, dtype=torch.bool)
        return self._observe()

    def _observe(self) -> torch.Tensor:
        cfg = self.cfg
        b = self.num_envs
        if cfg.position_coding == "scalar":
            pos = (self.pos.to(torch.float32) / cfg.centre - 1.0).unsqueeze(1)
        else:
            pos = torch.nn.functional.one_hot(self.pos, cfg.line_length).to(torch.float32)
        idx = torch.arange(b)
        shown = (self.phase == CHOOSE).to(torch.float32).unsqueeze(1)
        left = self.tasks.items[idx, self.left_item] * shown
        right = self.tasks.items[idx, 1 - self.left_item] * shown
        parts = [pos, left, right, shown]
        if cfg.selected_slot:
            was = (self.selected >= 0).to(torch.float32).unsqueeze(1) * self.cue
            parts.append(self.tasks.items[idx, self.selected.clamp(min=0)] * was)
        return torch.cat(parts, dim=1)

    def step(self, action: torch.Tensor) -> Step:
        cfg = self.cfg
        active = ~self._done
        action = action.to(torch.int64)
        if bool(((action < 0) | (action > 1)).any()):
            raise ValueError("Harlow actions are 0 (left) or 1 (right)")
        move = action * 2 - 1
        pos = torch.where(active, (self.pos + move).clamp(0, cfg.line_length - 1), self.pos)
        reward = torch.zeros(self.num_envs)

        fixating = active & (self.phase == FIXATE)
        chose_centre = fixating & (pos == cfg.centre)
        reward = torch.where(chose_centre, reward + cfg.fixation_reward, reward)
        self.fixations += chose_centre.to(torch.int64)
        terminated = chose_centre & (self.fixations > cfg.presentations)
        present = chose_centre & ~terminated
        # Draw the order of the items for this presentation (per env, counter-based).
        order = rng.randint(self.tasks.key, 2, self._episode, 1 + self.choices)
        self.left_item = torch.where(present, order, self.left_item)

        choosing = active & (self.phase == CHOOSE)
        at_end = choosing & ((pos == 0) | (pos == cfg.line_length - 1))
        chosen = torch.where(pos == 0, self.left_item, 1 - self.left_item)
        correct = chosen == self.tasks.rewarded
        reward = torch.where(at_end, torch.where(correct, cfg.correct_reward, cfg.wrong_reward), reward)
        self.correct_after_first += (at_end & correct & (self.choices > 0)).to(torch.int64)
        self.choices += at_end.to(torch.int64)
        self.selected = torch.where(at_end, chosen, torch.full_like(chosen, -1))

        self.phase = torch.where(present, CHOOSE, torch.where(at_end, FIXATE, self.phase))
        self.pos = pos
        self.t += active.to(torch.int64)
        truncated = active & ~terminated & (self.t >= cfg.max_steps)
        self._done = self._done | terminated | truncated
        self.ret += reward
        return Step(self._observe(), reward, terminated, truncated, active)

    def episode_metrics(self) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        later = max(cfg.presentations - 1, 1)
        return {
            "episode_return": self.ret.clone(),
            "fraction_of_optimal": self.ret / cfg.bayes_optimal_return,
            "correct_after_first": self.correct_after_first.to(torch.float32) / later,
            "choices": self.choices.to(torch.float32),
        }


class Harlow(TaskFamily):
    """The Harlow task family (efficiency suite)."""

    name = "harlow"
    Config = HarlowConfig
    config: HarlowConfig
    primary_metric = "episode_return"
    curve_x = "episodes"  # the paper's Fig. 3c: return against training episodes
    solved = ("correct_after_first", 0.9)  # it chooses the rewarded item after one look: the one-shot lesson
    metrics = (
        MetricSpec("episode_return", True, "return of the episode (max 6.2, Bayes-optimal 5.2)",
                   paper=("harlow", "episode_return", 1.0)),
        MetricSpec("fraction_of_optimal", True, "episode return / Bayes-optimal expected return 5.2"),
        MetricSpec("correct_after_first", True,
                   "correct choices in presentations 2..P / (P - 1); a presentation never reached counts as wrong"),
        MetricSpec("choices", True, "presentations answered in the episode (of P)"),
    )

    def __init__(self, config: HarlowConfig | None = None, cue_share: float = 0.0):
        super().__init__(config)
        self.cue_share = float(cue_share)
        """Share of trials whose selected-item slot is filled under a curriculum (0 for the task itself)."""

    def training_family(self, progress: float) -> "Harlow":
        """Under ``curriculum=(a, b)``: this task with the cue on a share 1 until a, falling to 0 at b."""
        if self.config.curriculum is None:
            return self
        a, b = self.config.curriculum
        return Harlow(self.config, cue_share=min(1.0, max(0.0, (b - progress) / (b - a))))

    def reference_levels(self) -> dict[str, float]:
        cfg = self.config
        return {f"maximum {cfg.max_return:.1f}": cfg.max_return,
                f"Bayes-optimal {cfg.bayes_optimal_return:.1f}": cfg.bayes_optimal_return}

    def memory_labels(self, rewards: torch.Tensor, active: torch.Tensor) -> MemoryLabels:
        """The outcome of the first choice (the one-shot lesson), on every step of the trial: before the choice
        no memory can know it, after it a memory that learned from it does (the paper's Fig. 3)."""
        cfg = self.config
        choice = active & ((rewards == cfg.correct_reward) | (rewards == cfg.wrong_reward))
        made = choice.any(0)
        first = torch.where(made, choice.to(torch.int64).argmax(0), torch.full_like(made, -1, dtype=torch.int64))
        outcome = (rewards.gather(0, first.clamp(min=0).unsqueeze(0))[0] == cfg.correct_reward).to(torch.int64)
        labels = torch.where(active & made, outcome.expand_as(rewards), torch.full_like(first, -1).expand_as(rewards))
        return MemoryLabels(labels, first, ("wrong first choice", "correct first choice"), "the first choice")

    def ceiling(self) -> float:
        """The Bayes-optimal expected return (5.2): no agent can expect more."""
        return self.config.bayes_optimal_return

    @property
    def obs_dim(self) -> int:
        cfg = self.config
        pos = 1 if cfg.position_coding == "scalar" else cfg.line_length
        return pos + (3 if cfg.selected_slot else 2) * cfg.item_dim + 1

    @property
    def action_space(self) -> ActionSpace:
        return ActionSpace("discrete", 2)

    @property
    def max_episode_steps(self) -> int:
        return self.config.max_steps

    def sample_tasks(self, n: int, split: Split, generator: torch.Generator) -> HarlowTasks:
        key = rng.new_keys(n, generator)
        items = torch.rand(n, 2, self.config.item_dim, generator=generator) * 2 - 1
        rewarded = torch.randint(0, 2, (n,), generator=generator)
        return HarlowTasks(key=key, items=items, rewarded=rewarded)

    def make_env(self, tasks: HarlowTasks) -> HarlowEnv:
        return HarlowEnv(self, tasks)
