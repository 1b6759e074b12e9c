"""The one on-policy trainer: PPO (or A2C) over whole trials, for every on-policy meta-learner.

MetODS, RL² and MAML are meta-trained by this loop, so the comparison differs
only in the agent (the project spec, "Outer loop"). An :class:`OnPolicyAgent` supplies
what differs:

- :meth:`OnPolicyAgent.step_record`: what to keep of each step of a rollout
  (the recurrent agents keep the step features, MAML the observation);
- :meth:`OnPolicyAgent.evaluate_actions`: the log-probabilities, entropies and
  values of the recorded actions of a batch of trials, with or without
  gradients. A recurrent agent replays its memory through the trial
  (backpropagation through the whole trial); MAML recomputes its inner
  adaptation from the current θ. ``values`` is None for an agent without a
  value head;
- :meth:`OnPolicyAgent.fit_baseline`: the value estimate of an agent without a
  value head (MAML: a linear feature baseline fitted on the batch's returns).

Per update (:meth:`OnPolicyAgent.update`):

1. sample ``batch_tasks`` train tasks and run one trial of each through the
   shared protocol's :func:`~metabench.protocol.run_trials` under ``no_grad``,
   recording every step (:meth:`OnPolicyAgent.collect`);
2. one pass without gradients gives the old log-probabilities and values;
   advantages by GAE over the trial (episode boundaries inside a trial are not
   cut: the meta-learner maximises the return of the whole trial; the trial's
   last active step ends the return). With ``gae_lambda = 1`` and a fitted
   baseline this is MAML's return-minus-baseline;
3. ``ppo_epochs`` passes over ``minibatches`` minibatches of trials: clipped
   surrogate, value regression (agents with a value head), entropy bonus,
   advantages standardised per minibatch over its active steps, gradients
   clipped to ``max_grad_norm`` (:func:`clip_grad_norm`).

``ppo_epochs = minibatches = 1`` is advantage actor-critic (A2C): the ratio is
1, the gradient is the plain policy gradient, and the advantages come from
the differentiable pass itself (no separate no-grad pass).
"""

from __future__ import annotations

import dataclasses
import math
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from metabench.envs.base import Step, TaskFamily, task_generator

from .base import Agent, AgentConfig, AgentInput, GeneratorState, TrainingDiverged, TrainingMonitor, TrainLoop


@dataclass(frozen=True)
class PPOConfig(AgentConfig):
    """The trainer's fields, shared by every on-policy agent."""

    lr: float = 1e-3
    """Adam learning rate."""
    lr_anneal: bool = False
    """Anneal the learning rate linearly from ``lr`` to 0 over the training budget."""
    batch_tasks: int = 128
    """Trials (one task each) per update."""
    gamma: float = 0.99
    """Discount inside a trial."""
    gae_lambda: float = 0.95
    """GAE λ (1: the discounted return minus the value estimate)."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value loss (agents with a value head)."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this for learning (not for scores)."""
    ppo_epochs: int = 1
    """Passes over each batch of trials; 1 with ``minibatches = 1`` is A2C."""
    minibatches: int = 1
    """Minibatches of trials per epoch."""
    ppo_clip: float = 0.2
    """PPO ratio clip (inactive in A2C mode: the ratio is then 1)."""
    normalize_advantages: bool = True
    """Standardise the advantages of each minibatch over its active steps."""
    init_log_std: float = -0.5
    """Initial log standard deviation of the Gaussian policy (continuous actions)."""
    obs_norm: bool = False
    """Standardise observations by their running mean and standard deviation, clipped to ±10: statistics
    updated from every training rollout (after it is collected, so a rollout is acted and replayed with the same
    ones), frozen in evaluation, saved with the agent (:class:`RunningMoments`)."""
    reward_norm: bool = False
    """Divide the (scaled) rewards by the running standard deviation of the discounted return from each step,
    updated from every training rollout before its update (learning only, not scores)."""

    def __post_init__(self):
        if self.batch_tasks < 1 or self.ppo_epochs < 1 or self.minibatches < 1:
            raise ValueError("batch_tasks, ppo_epochs and minibatches must be positive")


@dataclass
class Rollout:
    """One batch of trials, time-major ``[T, B, ...]``: what :meth:`OnPolicyAgent.step_record` kept, the actions,
    the rewards and the active mask."""

    features: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    active: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]

    def to(self, device: torch.device) -> "Rollout":
        return Rollout(*(x.to(device) for x in (self.features, self.actions, self.rewards, self.active)))

    def tasks(self, idx: torch.Tensor) -> "Rollout":
        """The trials ``idx``, cut after the last step on which any of them is active (the steps after it
        change nothing: an inactive trial's memory is kept and its terms are masked out)."""
        active = self.active[:, idx]
        steps = active.any(1).nonzero()
        t = int(steps[-1]) + 1 if len(steps) else 0
        return Rollout(self.features[:t, idx], self.actions[:t, idx], self.rewards[:t, idx], active[:t])


@dataclass
class Evaluated:
    """What an agent says about the recorded actions of a batch of trials (``[T, B]`` each)."""

    log_prob: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor | None
    """The value head's estimates, or None (no value head: :meth:`OnPolicyAgent.fit_baseline` is used)."""
    aux: Any = None
    """Passed to :meth:`OnPolicyAgent.diagnostics` after the optimiser step (a recurrent agent's final state)."""


def gae(rewards: torch.Tensor, values: torch.Tensor, active: torch.Tensor, gamma: float, lam: float):
    """Advantages and returns over ``[T, B]`` trials.

    Each active step is followed by the next *active* step of its column
    (inactive gaps between the episodes of a trial are skipped), and the last
    active step ends the return. Inactive steps get advantage 0.
    """
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    next_value = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_value - values[t]
        candidate = delta + gamma * lam * last
        adv[t] = torch.where(active[t], candidate, 0.0)
        last = torch.where(active[t], candidate, last)
        next_value = torch.where(active[t], values[t], next_value)
    return adv, adv + values


def discounted_returns(rewards: torch.Tensor, active: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted return from each step to the end of the trial, ``[T, B]`` (inactive steps skipped)."""
    ret = torch.zeros_like(rewards)
    run = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        run = torch.where(active[t], rewards[t] + gamma * run, run)
        ret[t] = run
    return ret


def masked_standardize(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` standardised by its mean and (population) standard deviation over the entries where ``mask`` is 1."""
    mu = (x * mask).sum() / mask.sum()
    sd = (((x - mu) ** 2 * mask).sum() / mask.sum()).sqrt()
    return (x - mu) / (sd + 1e-8)


class OnPolicyAgent(Agent):
    """An agent meta-trained by the shared PPO loop; subclasses supply the parts listed in the module docstring.

    A subclass builds its modules, then calls :meth:`init_trainer` with its parameters.
    """

    Config = PPOConfig
    config: PPOConfig
    summary_names: tuple[str, ...] = ("grad_norm",)
    """Training scalars summarised (last, max) in the run's record as ``train_<name>_last`` / ``_max``."""

    def init_trainer(self, params: Iterable[torch.nn.Parameter]) -> None:
        """The optimiser over ``params``, the agent's own generator (actions, minibatch order) and the summary."""
        self.params = list(params)
        self.optimizer = torch.optim.Adam(self.params, lr=self.config.lr)
        self.action_generator = torch.Generator().manual_seed(self.seed)
        self.obs_moments = RunningMoments(self.family.obs_dim) if self.config.obs_norm else None
        self.return_moments = RunningMoments(1) if self.config.reward_norm else None

    def observe(self, inputs: AgentInput) -> AgentInput:
        """``inputs`` as the policy sees them: on the agent's :attr:`device`, the observation standardised when
        ``obs_norm`` is on (the subclasses call this first in ``act`` and ``step_record``)."""
        inputs = inputs.to(self.device)
        if self.obs_moments is None:
            return inputs
        return dataclasses.replace(inputs, obs=self.obs_moments.normalize(inputs.obs))

    # What each agent supplies ----------------------------------------------------------------
    @abstractmethod
    def step_record(self, inputs: AgentInput) -> torch.Tensor:
        """What the rollout keeps of one step, ``[B, ...]`` (stacked into :attr:`Rollout.features`)."""

    @abstractmethod
    def evaluate_actions(self, ro: Rollout, differentiable: bool) -> Evaluated:
        """Log-probabilities, entropies and values of ``ro``'s recorded actions under the current parameters."""

    def fit_baseline(self, ro: Rollout, returns: torch.Tensor) -> torch.Tensor:
        """Value estimates ``[T, B]`` for an agent whose :meth:`evaluate_actions` gives no values."""
        raise NotImplementedError(f"{type(self).__name__} has no value head and no baseline")

    def diagnostics(self, aux: Any) -> dict[str, float]:
        """Scalars about the trained model after an optimiser step (MetODS: ‖W‖, the carry-over gain)."""
        return {}

    # The loop ----------------------------------------------------------------------------------
    def stateful(self) -> dict[str, Any]:
        parts = {"optimizer": self.optimizer, "generator": GeneratorState(self.action_generator)}
        moments = {"obs_moments": self.obs_moments, "return_moments": self.return_moments}
        return {**parts, **{k: v for k, v in moments.items() if v is not None}}

    def collect(self, family: TaskFamily, generator: torch.Generator) -> Rollout:
        """One trial of each of ``batch_tasks`` train tasks, every step recorded."""
        from metabench.protocol import run_trials

        tasks = family.sample_tasks(self.config.batch_tasks, "train", generator)
        kept, actions = [], []

        raw: list[torch.Tensor] = []

        def record(inputs: AgentInput, action: torch.Tensor, _step: Step) -> None:
            kept.append(self.step_record(inputs))
            actions.append(action)
            if self.obs_moments is not None:
                raw.append(inputs.obs[inputs.active])

        with torch.no_grad():
            res = run_trials(self, family, tasks, on_step=record)
        if self.obs_moments is not None:
            self.obs_moments.update(torch.cat(raw).to(self.device))
        return Rollout(torch.stack(kept), torch.stack(actions), res.rewards, res.active).to(self.device)

    def meta_train(self, family: TaskFamily, budget_env_steps: int, monitor: TrainingMonitor) -> int:
        if self.loop is None:  # else a checkpoint's: go on from there
            self.loop = TrainLoop(task_generator(self.seed, "train"))
        loop = self.loop
        while True:
            ro = self.collect(family.training_family(loop.steps / max(budget_env_steps, 1)), loop.generator)
            n = int(ro.active.sum())
            if loop.steps + n > budget_env_steps:
                break
            loop.steps += n
            loop.episodes += ro.features.shape[1] * family.episodes_per_trial
            if self.config.lr_anneal:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.config.lr * max(1.0 - loop.steps / max(budget_env_steps, 1), 0.0)
            scalars = self.update(ro)
            for k in self.summary_names:
                if k in scalars:
                    loop.summary[f"{k}_last"] = scalars[k]
                    loop.summary[f"{k}_max"] = max(loop.summary.get(f"{k}_max", -math.inf), scalars[k])
            monitor.update(loop.steps, loop.episodes, scalars)
        return loop.steps

    def advantages(self, ro: Rollout, rewards: torch.Tensor, values: torch.Tensor | None):
        """Advantages and value targets ``[T, B]`` by GAE, with the value head's estimates or the fitted baseline."""
        cfg = self.config
        if values is None:
            values = self.fit_baseline(ro, discounted_returns(rewards, ro.active, cfg.gamma))
        return gae(rewards, values, ro.active, cfg.gamma, cfg.gae_lambda)

    def update(self, ro: Rollout) -> dict[str, float]:
        cfg = self.config
        b = ro.features.shape[1]
        rewards = ro.rewards * cfg.reward_scale
        if self.return_moments is not None:
            returns = discounted_returns(rewards, ro.active, cfg.gamma)
            self.return_moments.update(returns[ro.active].unsqueeze(1))
            rewards = rewards / float(self.return_moments.var.sqrt().clamp(min=1e-4))
        single_pass = cfg.ppo_epochs == 1 and cfg.minibatches == 1
        if not single_pass:
            old = self.evaluate_actions(ro, differentiable=False)
            adv, ret = self.advantages(ro, rewards, old.values)
            old_logp = old.log_prob
        stats: dict[str, list[float]] = {}
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(b, generator=self.action_generator).to(self.device)
            for idx in order.chunk(cfg.minibatches):
                mb = ro.tasks(idx)
                t = len(mb)
                ev = self.evaluate_actions(mb, differentiable=True)
                m = mb.active.to(torch.float32)
                if single_pass:  # A2C: advantages from this very pass
                    values = None if ev.values is None else ev.values.detach()
                    adv_b, ret_b = self.advantages(mb, rewards[:t, idx], values)
                    old_b = ev.log_prob.detach()
                else:
                    adv_b, ret_b, old_b = adv[:t, idx], ret[:t, idx], old_logp[:t, idx]
                if cfg.normalize_advantages:
                    adv_b = masked_standardize(adv_b, m)
                ratio = (ev.log_prob - old_b).exp()
                pg = -torch.minimum(ratio * adv_b, ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip) * adv_b)
                n = m.sum()
                losses = {"policy_loss": (pg * m).sum() / n}
                if ev.values is not None:
                    losses["value_loss"] = (((ev.values - ret_b) ** 2) * m).sum() / n
                losses["entropy"] = (ev.entropy * m).sum() / n
                loss = losses["policy_loss"]
                if "value_loss" in losses:
                    loss = loss + cfg.value_coef * losses["value_loss"]
                loss = loss - cfg.entropy_coef * losses["entropy"]
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = clip_grad_norm(self.params, cfg.max_grad_norm)
                if not torch.isfinite(grad_norm):  # stop before the step writes NaN into the parameters
                    log_ratio = (ev.log_prob - old_b)[mb.active]
                    raise TrainingDiverged(
                        f"non-finite gradient (loss {float(loss.detach()):.4g}; largest log-ratio of new to old "
                        f"action probabilities {float(log_ratio.detach().max()):.4g}, above ~88 the ratio overflows)")
                self.optimizer.step()
                for k, v in {"loss": loss, **losses, "grad_norm": grad_norm}.items():
                    stats.setdefault(k, []).append(float(v.detach()))
                for k, v in self.diagnostics(ev.aux).items():
                    stats.setdefault(k, []).append(v)
        out = {k: sum(v) / len(v) for k, v in stats.items()}
        out["train_return"] = float(ro.rewards.sum(0).mean())
        return out


class RunningMoments(torch.nn.Module):
    """Running mean and variance of a stream of ``[N, dim]`` batches (Chan et al.'s parallel update, float64);
    buffers, so that they are saved with the agent and a rescored agent normalises as its run did."""

    def __init__(self, dim: int, clip: float = 10.0):
        super().__init__()
        self.clip = clip
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    @property
    def var(self) -> torch.Tensor:
        """Population variance so far (ones before any data)."""
        return self.m2 / self.count if self.count > 0 else torch.ones_like(self.m2)

    def update(self, x: torch.Tensor) -> None:
        n = x.shape[0]
        if n == 0:
            return
        x = x.to(torch.float64)
        mean = x.mean(0)
        delta, total = mean - self.mean, self.count + n
        self.m2 += ((x - mean) ** 2).sum(0) + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.count.fill_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` standardised by the statistics so far and clipped to ±``clip`` (unchanged before any data)."""
        if self.count == 0:
            return x
        z = (x.to(torch.float64) - self.mean) / (self.var + 1e-8).sqrt()
        return z.clamp(-self.clip, self.clip).to(x.dtype)


def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``params`` to total norm ≤ ``max_norm``; return the norm before.

    ``torch.nn.utils.clip_grad_norm_`` sums squares in the gradients' dtype:
    float32 entries above ~1e19 (BPTT through a plastic recurrence gets
    there: a maze ablation logged 6.6e15 and another overflowed) give an
    infinite norm although every entry is finite, and the clip then zeroes
    the step. Here the norm is summed in float64, so it is inf or NaN only
    when a gradient entry is, which the training monitor reports as a
    divergence.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float64)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads]))
    if torch.isfinite(norm) and norm > max_norm:
        coef = float(max_norm / (norm + 1e-6))
        for g in grads:
            g.mul_(coef)
    return norm


def sample_action(dist: torch.distributions.Distribution, generator: torch.Generator) -> torch.Tensor:
    """One action per row from a categorical or diagonal-Gaussian policy, drawn with the CPU ``generator``, as a
    CPU tensor whatever device the policy ran on (the environment's; the draw the same on every device)."""
    if isinstance(dist, torch.distributions.Categorical):
        return torch.multinomial(dist.probs.cpu(), 1, generator=generator).squeeze(1)
    mean, std = dist.base_dist.loc.cpu(), dist.base_dist.scale.cpu()
    return mean + std * torch.randn(mean.shape, generator=generator)


__all__ = ["Evaluated", "OnPolicyAgent", "PPOConfig", "Rollout", "RunningMoments", "clip_grad_norm",
           "discounted_returns", "gae",
           "masked_standardize", "sample_action"]
