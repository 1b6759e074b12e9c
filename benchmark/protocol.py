"""The shared evaluation protocol: every agent is scored by this code.

A *trial* (the project spec) is ``episodes_per_trial`` episodes of one task with the
agent's memory carried through them; memory is reset at task start only.
:func:`run_trials` drives an agent through one trial of each task in a batch;
:func:`evaluate` runs it on held-out ``test`` tasks and reduces the
per-episode metrics to means and standard deviations over episodes.
:class:`CurveMonitor` is the runner's side of :class:`TrainingMonitor`: it
keeps the training curves and calls :func:`evaluate` along training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metabench.agents.base import Agent, AgentInput, TrainingDiverged
from metabench.envs.base import Step, TaskBatch, TaskFamily, task_generator


@dataclass
class TrialResult:
    """What one batch of trials produced."""

    episode_metrics: list[dict[str, torch.Tensor]]
    """One dict per episode of the trial: metric -> ``[B]``."""
    rewards: torch.Tensor
    """``[steps, B]``: reward at each step of the trial (episodes back to back, 0 where inactive)."""
    active: torch.Tensor
    """``[steps, B]`` bool: the step was inside an episode."""
    terminated: torch.Tensor
    """``[steps, B]`` bool: the step ended its episode by termination (no bootstrap)."""
    truncated: torch.Tensor
    """``[steps, B]`` bool: the step ended its episode by truncation (bootstrap from the final observation)."""


StepRecorder = Callable[[AgentInput, torch.Tensor, Step], None]
"""``on_step(inputs, action, step)``: what the agent saw, what it did, and the transition that followed
(``step.obs`` is the next observation, the final one where the step ended the episode; ``step.info`` holds
per-step signals such as a success flag)."""


def run_trials(
    agent: Agent,
    family: TaskFamily,
    tasks: TaskBatch,
    on_step: StepRecorder | None = None,
) -> TrialResult:
    """One trial of each task in ``tasks``, all in one batch, memory reset once at task start.

    ``on_step`` sees every step after the environment took it (trainers record their rollouts with it:
    an on-policy trainer keeps ``inputs`` and ``action``, an off-policy one the whole transition).
    """
    env = family.make_env(tasks)
    b = len(tasks)
    space = family.action_space
    memory = agent.initial_memory(b)
    task = family.task_features(tasks) if agent.sees_task else None
    prev_action = space.zeros(b)
    prev_reward = torch.zeros(b)
    per_episode, rewards, actives, terminated, truncated = [], [], [], [], []
    for episode in range(family.episodes_per_trial):
        obs = env.reset()
        for t in range(family.max_episode_steps):
            inputs = AgentInput(
                obs=obs,
                prev_action=prev_action,
                prev_reward=prev_reward,
                episode_start=torch.full((b,), t == 0),
                task_start=torch.full((b,), t == 0 and episode == 0),
                active=~env.done,
                task=task,
            )
            action, memory = agent.act(inputs, memory)
            step = env.step(action)
            if on_step is not None:
                on_step(inputs, action, step)
            obs = step.obs
            prev_action = torch.where(
                step.active.view(-1, *([1] * (action.dim() - 1))), action, prev_action
            )
            prev_reward = torch.where(step.active, step.reward, prev_reward)
            rewards.append(step.reward)
            actives.append(step.active)
            terminated.append(step.terminated)
            truncated.append(step.truncated)
            if bool(env.done.all()):
                break
        per_episode.append(env.episode_metrics())
    return TrialResult(per_episode, torch.stack(rewards), torch.stack(actives), torch.stack(terminated),
                       torch.stack(truncated))


@dataclass
class Evaluation:
    metrics: dict[str, float]
    """``<metric>`` (mean over test episodes; a ``last_episode_of`` metric: over the trials' last episodes),
    ``<metric>_std`` and ``test_episodes``."""
    step_reward: np.ndarray
    """Mean reward at each step of the trial over the tasks still active there."""
    step_active: np.ndarray
    """Share of tasks still active at each step."""


def evaluate(agent: Agent, family: TaskFamily, seed: int, n_tasks: int, batch_size: int = 1024) -> Evaluation:
    """Score ``agent`` on ``n_tasks`` held-out test tasks (seeded by ``seed``), one trial each.

    The agent acts with an action stream of its own for the evaluation (:func:`evaluation_actions`), the same
    at every evaluation of the run: what it draws here never moves the stream it trains with."""
    gen = task_generator(seed, "test")
    tasks = family.sample_tasks(n_tasks, "test", gen)
    values: dict[str, list[torch.Tensor]] = {}
    reward_sum: torch.Tensor | None = None
    active_sum: torch.Tensor | None = None
    with torch.no_grad(), agent.acting_with(evaluation_actions(seed)):
        for start in range(0, n_tasks, batch_size):
            part = tasks.index(slice(start, min(start + batch_size, n_tasks)))
            res = run_trials(agent, family, part)
            for ep in res.episode_metrics:
                for k, v in ep.items():
                    values.setdefault(k, []).append(v.to(torch.float64))
            for spec in family.metrics:  # e.g. success_last: the trial's last episode only
                if spec.last_episode_of is not None:
                    last = res.episode_metrics[-1][spec.last_episode_of]
                    values.setdefault(spec.name, []).append(last.to(torch.float64))
            r, a = res.rewards.to(torch.float64).sum(1), res.active.to(torch.float64).sum(1)
            reward_sum, active_sum = _add_padded(reward_sum, r), _add_padded(active_sum, a)
    metrics: dict[str, float] = {}
    for k, vs in values.items():
        v = torch.cat(vs)
        metrics[k] = float(v.mean())
        metrics[f"{k}_std"] = float(v.std(unbiased=False))
    metrics["test_episodes"] = float(n_tasks * family.episodes_per_trial)
    assert reward_sum is not None and active_sum is not None
    step_reward = (reward_sum / active_sum.clamp(min=1)).numpy()
    return Evaluation(metrics, step_reward, (active_sum / n_tasks).numpy())


def evaluation_actions(seed: int) -> torch.Generator:
    """The action stream of a held-out evaluation of seed ``seed``: unrelated to the task streams
    (:func:`~metabench.envs.base.task_generator`) and to the agent's own (seeded by ``seed`` alone)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + 0xAC7)


def _add_padded(acc: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if acc is None:
        return x.clone()
    n = max(len(acc), len(x))
    out = torch.zeros(n, dtype=x.dtype)
    out[: len(acc)] += acc
    out[: len(x)] += x
    return out


@dataclass
class CurveMonitor:
    """Collects training curves and runs the held-out evaluation along training.

    Curves are long-format rows ``(curve, x, metric, value)``: ``train``
    (training scalars, averaged between log points, x = env steps) and
    ``eval`` (held-out metrics at nominal checkpoints x = k * budget /
    curve_points, the same for every seed, with the actual ``env_steps`` and
    training ``episodes`` beside them; the final evaluation sits at x = budget).
    Training scalars are logged at most ``log_points`` times over the budget.
    """

    agent: Agent
    family: TaskFamily
    seed: int
    budget: int
    curve_tasks: int
    curve_points: int
    log_points: int = 200
    reporter: Callable[..., None] | None = None
    """Progress hook (:class:`metabench.progress.RunReporter`): ``reporter(env_steps, score=None)``."""
    after_update: Callable[[], None] | None = None
    """Called at the end of every :meth:`update`, its evaluation done (the runner checkpoints there)."""
    rows: list[tuple[str, float, str, float]] = field(default_factory=list)
    episodes: int = 0
    """Training episodes reported so far."""
    _next_eval: int = 0
    _next_log: int = 0
    _acc: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self):
        self._eval_every = max(1, math.ceil(self.budget / max(self.curve_points, 1)))
        self._log_every = max(1, math.ceil(self.budget / self.log_points))
        self._next_eval = self._eval_every
        self._next_log = self._log_every

    def evaluate_now(self, checkpoint: int, env_steps: int, episodes: int) -> Evaluation:
        """Held-out evaluation of every curve variant (:meth:`TaskFamily.curve_variants`), logged at the nominal
        ``checkpoint`` (so seeds line up) with the actual counts; returns the family's own."""
        out = None
        for suffix, variant in self.family.curve_variants().items():
            ev = evaluate(self.agent, variant, self.seed, self.curve_tasks)
            self.log_eval(checkpoint, env_steps, episodes, ev.metrics, suffix)
            if suffix == "":
                out = ev
        assert out is not None, f"{self.family.name}: curve_variants() must include the family itself ('')"
        if self.reporter is not None:
            self.reporter(env_steps, score=out.metrics.get(self.family.primary_metric))
        return out

    def log_eval(self, checkpoint: int, env_steps: int, episodes: int, metrics: Mapping[str, float],
                 suffix: str = "") -> None:
        """One evaluation's metrics (of the variant ``suffix``: metric names suffixed) at ``checkpoint``."""
        if suffix == "":
            self.rows.append(("eval", checkpoint, "env_steps", float(env_steps)))
            self.rows.append(("eval", checkpoint, "episodes", float(episodes)))
        for k, v in metrics.items():
            if not k.endswith("_std") and k != "test_episodes":
                self.rows.append(("eval", checkpoint, f"{k}{suffix}", v))

    def update(self, env_steps: int, episodes: int, scalars: Mapping[str, float]) -> None:
        self.episodes = episodes
        if self.reporter is not None:
            self.reporter(env_steps)
        for k, v in scalars.items():
            v = float(v)
            if not math.isfinite(v):
                raise TrainingDiverged(f"non-finite {k} = {v} at env step {env_steps}")
            self._acc.setdefault(k, []).append(v)
        if env_steps >= self._next_log:
            for k, vs in self._acc.items():
                self.rows.append(("train", env_steps, k, sum(vs) / len(vs)))
            self._acc.clear()
            self._next_log = (env_steps // self._log_every + 1) * self._log_every
        if env_steps >= self._next_eval and self._next_eval < self.budget:
            self.evaluate_now(self._next_eval, env_steps, episodes)
            self._next_eval = (env_steps // self._eval_every + 1) * self._eval_every
        if self.after_update is not None:
            self.after_update()

    def state(self) -> dict[str, Any]:
        """What :meth:`restore` needs to go on as if never stopped: the curves so far and the next log points."""
        return {"rows": list(self.rows), "episodes": self.episodes, "next_eval": self._next_eval,
                "next_log": self._next_log, "acc": {k: list(v) for k, v in self._acc.items()}}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.rows[:] = [tuple(r) for r in state["rows"]]
        self.episodes, self._next_eval, self._next_log = state["episodes"], state["next_eval"], state["next_log"]
        self._acc = {k: list(v) for k, v in state["acc"].items()}
