"""One actor-critic trainer for every recurrent meta-learner (MetODS, RL²).

Only the *memory core* differs between agents: a :class:`MemoryCore` maps the
step features [obs, previous action, previous reward, episode-start flag]
and its state to a hidden vector ``h``; the heads (policy, value) and the
trainer are shared. Subclasses of :class:`RecurrentAgent` supply
:meth:`RecurrentAgent.make_core` and nothing else.

Training (:meth:`RecurrentAgent.meta_train`), per update:

1. sample ``batch_tasks`` train tasks and run one trial of each with the
   shared protocol's :func:`~metabench.protocol.run_trials` under ``no_grad``
   (the core's state is reset at task start only), recording every step;
2. replay the recorded trial through the core *with* gradients, from the
   task-start state: backpropagation through the whole trial, every W update
   and every GRU step (``tbptt`` cuts the graph every k steps if set);
3. advantages by GAE over the trial. Episode boundaries inside a trial are
   not cut (the meta-learner maximises the return of the whole trial, as RL²
   does); the trial's last step ends the return. Loss: policy gradient
   (clipped PPO ratio), value regression, entropy bonus; gradients clipped
   to ``max_grad_norm``.

``ppo_epochs=1, minibatches=1`` is advantage actor-critic (A2C): the ratio is
1 and the gradient is the plain policy gradient. PPO mode (``ppo_epochs>1``)
recomputes the sequences per minibatch of tasks; the old log-probabilities
and values come from one no-grad replay.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
import math
from typing import Any

import torch
from torch import nn

from metabench.envs.base import ActionSpace, TaskFamily, task_generator
from metabench.profiles import LOCOMOTION

from .base import (Agent, AgentConfig, AgentInput, GeneratorState, TrainingMonitor, feature_dim, keep_inactive,
                   merged_defaults)


@dataclass(frozen=True)
class ActorCriticConfig(AgentConfig):
    lr: float = 1e-3
    """Adam learning rate."""
    lr_anneal: bool = False
    """Anneal the learning rate linearly from ``lr`` to 0 over the training budget."""
    batch_tasks: int = 128
    """Trials (one task each) per update."""
    gamma: float = 0.99
    """Discount inside a trial."""
    gae_lambda: float = 0.95
    """GAE λ."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this for learning (not for scores)."""
    ppo_epochs: int = 1
    """Passes over each batch of trials; 1 is A2C, >1 is PPO."""
    minibatches: int = 1
    """Minibatches of tasks per PPO epoch."""
    ppo_clip: float = 0.2
    """PPO ratio clip (inactive when ppo_epochs=1: the ratio is then 1)."""
    normalize_advantages: bool = True
    """Standardise advantages over the batch."""
    tbptt: int = 0
    """Detach the memory state every k steps of the replay (0: full BPTT through the trial)."""
    compile: bool = False
    """``torch.compile`` the core's step (same numbers within float tolerance)."""
    init_log_std: float = -0.5
    """Initial log standard deviation of the Gaussian head (continuous actions)."""


class MemoryCore(nn.Module):
    """A recurrent memory: ``h, state = core(x, state)``; ``state`` is a tensor or a tuple of tensors."""

    hidden_dim: int
    diagnostic_names: tuple[str, ...] = ()
    """Keys of :meth:`diagnostics`, summarised (last, max) in the run's record."""

    @abstractmethod
    def initial_state(self, batch: int) -> Any: ...

    def diagnostics(self, state: Any) -> dict[str, float]:
        """Scalars worth logging about a state (MetODS: ‖W‖)."""
        return {}


def _map_state(fn, *states):
    if isinstance(states[0], tuple):
        return tuple(fn(*parts) for parts in zip(*states))
    return fn(*states)


class Heads(nn.Module):
    """Policy (categorical or diagonal Gaussian) and value heads on the core's output."""

    def __init__(self, hidden: int, space: ActionSpace, init_log_std: float):
        super().__init__()
        self.space = space
        self.policy = nn.Linear(hidden, space.n)
        self.value = nn.Linear(hidden, 1)
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.zeros_(self.policy.bias)
        if not space.discrete:
            self.log_std = nn.Parameter(torch.full((space.n,), init_log_std))

    def distribution(self, h: torch.Tensor) -> torch.distributions.Distribution:
        out = self.policy(h)
        if self.space.discrete:
            return torch.distributions.Categorical(logits=out)
        return torch.distributions.Independent(torch.distributions.Normal(out, self.log_std.exp()), 1)

    def forward(self, h: torch.Tensor):
        return self.distribution(h), self.value(h).squeeze(-1)


@dataclass
class Rollout:
    """One batch of trials, time-major ``[T, B, ...]``."""

    features: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    active: torch.Tensor

    def __len__(self) -> int:
        return self.features.shape[0]

    def tasks(self, idx: torch.Tensor) -> "Rollout":
        """The trials ``idx``, cut after the last step on which any of them is active (the steps after it
        change nothing: an inactive trial's memory is kept and its terms are masked out)."""
        active = self.active[:, idx]
        steps = active.any(1).nonzero()
        t = int(steps[-1]) + 1 if len(steps) else 0
        return Rollout(self.features[:t, idx], self.actions[:t, idx], self.rewards[:t, idx], active[:t])


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


# Trainer settings per task (ours), the same for every memory core; then per profile.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # Harlow: full-trial A2C updates were too few per env step to leave chance (SPEC.md). PPO, 4 epochs
    # x 8 minibatches of 32 trials: RL² reached 5.18 (Bayes-optimal 5.2) in 1.8 M env steps (4 x 4: 5.03 at 3 M).
    "harlow": {"batch_tasks": 256, "ppo_epochs": 4, "minibatches": 8, "gamma": 0.99, "gae_lambda": 0.95},
    # Maze: γ = λ = 0.95, reward x 0.1 as the prototype (SPEC.md), but PPO, 4 epochs x 4 minibatches: with
    # 256 trials per update MetODS reached 21.2 / 83 % success at 1 M env steps, where A2C with 64 trials
    # (the prototype's) was still at 4.4 / 32 % at 4 M; 64 trials per update (4x the updates per env step)
    # learn faster still: at 2 M env steps MetODS 96 % and RL² 93 % success over 5 seeds (the committed quick
    # sweep), against 84 % and 77 % with 256 trials per update (the sweep of 2026-11-26).
    "maze": {"batch_tasks": 64, "ppo_epochs": 4, "minibatches": 4, "gamma": 0.95, "gae_lambda": 0.95,
             "reward_scale": 0.1},
    # MuJoCo direction tasks (200-step trials, Gaussian actions): the PPO mode, as for continuous control
    # generally; per-step rewards of order 1 over 200 steps, scaled by 0.1 like the maze's. 128 trials per
    # update: the BPTT replay is per-step overhead at small minibatches; 32 trials gave MetODS (compiled)
    # 295 env-steps/s and RL² 594 on Ant-dir, 128 gave 642 and 1,314 (throughput script, 2 threads).
    **dict.fromkeys(LOCOMOTION, {"batch_tasks": 128, "ppo_epochs": 4, "minibatches": 4, "gamma": 0.99,
                                 "gae_lambda": 0.95, "reward_scale": 0.1, "lr": 3e-4}),
}
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    # seconds a run (CI, the regression gate): no compile, small batches, 2 PPO epochs x 2 minibatches
    "smoke": {"batch_tasks": 64, "compile": False, "ppo_epochs": 2, "minibatches": 2},
}


class RecurrentAgent(Agent):
    """A memory core + shared heads, trained by the shared actor-critic trainer.

    Subclasses set ``core_defaults`` (per-task settings of their core, e.g.
    MetODS's N) and implement :meth:`make_core`.
    """

    Config = ActorCriticConfig
    config: ActorCriticConfig
    core_defaults: dict[str, dict[str, Any]] = {}

    @classmethod
    def default_config(cls, family: TaskFamily, profile) -> ActorCriticConfig:
        return cls.Config(**merged_defaults(family, profile, (TASK_DEFAULTS, cls.core_defaults), PROFILE_DEFAULTS))

    def __init__(self, family: TaskFamily, config: ActorCriticConfig, seed: int):
        super().__init__(family, config, seed)
        torch.manual_seed(seed)
        self.space = family.action_space
        self.core = self.make_core(family, config)
        self.heads = Heads(self.core.hidden_dim, self.space, config.init_log_std)
        self.params = [p for m in (self.core, self.heads) for p in m.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=config.lr)
        self._step = torch.compile(self._core_step, dynamic=False) if config.compile else self._core_step
        self._gen = torch.Generator().manual_seed(seed)
        self._summary: dict[str, float] = {}

    @abstractmethod
    def make_core(self, family: TaskFamily, config: ActorCriticConfig) -> MemoryCore: ...

    def stateful(self) -> dict[str, Any]:
        return {"core": self.core, "heads": self.heads, "optimizer": self.optimizer,
                "generator": GeneratorState(self._gen)}

    # Acting --------------------------------------------------------------------------------
    def _core_step(self, x: torch.Tensor, state: Any, active: torch.Tensor):
        h, new = self.core(x, state)
        new = _map_state(lambda n, o: keep_inactive(active, n, o), new, state)
        return h, new

    def initial_memory(self, batch_size: int) -> Any:
        return self.core.initial_state(batch_size)

    def act(self, inputs: AgentInput, memory: Any) -> tuple[torch.Tensor, Any]:
        x = inputs.features(self.space)
        h, memory = self._step(x, memory, inputs.active)
        return sample_action(self.heads.distribution(h), self._gen), memory

    # Training ------------------------------------------------------------------------------
    def collect(self, family: TaskFamily, generator: torch.Generator) -> Rollout:
        from metabench.protocol import run_trials

        tasks = family.sample_tasks(self.config.batch_tasks, "train", generator)
        feats, actions = [], []

        def record(inputs: AgentInput, action: torch.Tensor) -> None:
            feats.append(inputs.features(self.space))
            actions.append(action)

        with torch.no_grad():
            res = run_trials(self, family, tasks, on_step=record)
        return Rollout(torch.stack(feats), torch.stack(actions), res.rewards, res.active)

    def replay(self, ro: Rollout):
        """Log-probabilities, entropies and values of the recorded actions, with gradients through the trial.

        Only the memory core runs step by step; the heads run once on all steps' outputs (``[T, B, H]``),
        which costs the same arithmetic and a hundredth of the per-call overhead at T = 100."""
        b = ro.features.shape[1]
        state = self.core.initial_state(b)
        hs = []
        for t in range(len(ro)):
            if self.config.tbptt and t % self.config.tbptt == 0 and t:
                state = _map_state(lambda s: s.detach(), state)
            h, state = self._step(ro.features[t], state, ro.active[t])
            hs.append(h)
        dist, values = self.heads(torch.stack(hs))
        return dist.log_prob(ro.actions), dist.entropy(), values, state

    def meta_train(self, family: TaskFamily, budget_env_steps: int, monitor: TrainingMonitor) -> int:
        gen = task_generator(self.seed, "train")
        steps = episodes = 0
        while True:
            ro = self.collect(family.training_family(steps / max(budget_env_steps, 1)), gen)
            n = int(ro.active.sum())
            if steps + n > budget_env_steps:
                break
            steps += n
            episodes += ro.features.shape[1] * family.episodes_per_trial
            if self.config.lr_anneal:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.config.lr * max(1.0 - steps / max(budget_env_steps, 1), 0.0)
            scalars = self.update(ro)
            monitor.update(steps, episodes, scalars)
            for k in ("grad_norm", *self.core.diagnostic_names):
                if k in scalars:
                    self._summary[f"{k}_last"] = scalars[k]
                    self._summary[f"{k}_max"] = max(self._summary.get(f"{k}_max", -math.inf), scalars[k])
        return steps

    def training_summary(self) -> dict[str, float]:
        return dict(self._summary)

    def update(self, ro: Rollout) -> dict[str, float]:
        cfg = self.config
        b = ro.features.shape[1]
        rewards = ro.rewards * cfg.reward_scale
        old_logp = None
        if cfg.ppo_epochs > 1 or cfg.minibatches > 1:
            with torch.no_grad():
                old_logp, _, values, _ = self.replay(ro)
            adv, ret = gae(rewards, values, ro.active, cfg.gamma, cfg.gae_lambda)
        stats: dict[str, list[float]] = {}
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(b, generator=self._gen)
            for idx in order.chunk(cfg.minibatches):
                mb = ro.tasks(idx)
                t = len(mb)
                logp, ent, values, state = self.replay(mb)
                m = mb.active.to(torch.float32)
                if old_logp is None:  # A2C: advantages from this very pass
                    adv_b, ret_b = gae(rewards[:t, idx], values.detach(), mb.active, cfg.gamma, cfg.gae_lambda)
                    old_b = logp.detach()
                else:
                    adv_b, ret_b, old_b = adv[:t, idx], ret[:t, idx], old_logp[:t, idx]
                if cfg.normalize_advantages:
                    mu = (adv_b * m).sum() / m.sum()
                    sd = (((adv_b - mu) ** 2 * m).sum() / m.sum()).sqrt()
                    adv_b = (adv_b - mu) / (sd + 1e-8)
                ratio = (logp - old_b).exp()
                pg = -torch.minimum(ratio * adv_b, ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip) * adv_b)
                n = m.sum()
                policy_loss = (pg * m).sum() / n
                value_loss = (((values - ret_b) ** 2) * m).sum() / n
                entropy = (ent * m).sum() / n
                loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = clip_grad_norm(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                for k, v in {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss,
                             "entropy": entropy, "grad_norm": grad_norm}.items():
                    stats.setdefault(k, []).append(float(v.detach()))
                for k, v in self.core.diagnostics(state).items():
                    stats.setdefault(k, []).append(v)
        out = {k: sum(v) / len(v) for k, v in stats.items()}
        out["train_return"] = float(ro.rewards.sum(0).mean())
        return out


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
    """One action per row from a categorical or diagonal-Gaussian policy, drawn with ``generator``."""
    if isinstance(dist, torch.distributions.Categorical):
        return torch.multinomial(dist.probs, 1, generator=generator).squeeze(1)
    mean, std = dist.base_dist.loc, dist.base_dist.scale
    return mean + std * torch.randn(mean.shape, generator=generator)


def xavier_linear(i: int, o: int, gain: float = 1.0) -> nn.Linear:
    lin = nn.Linear(i, o)
    nn.init.xavier_uniform_(lin.weight, gain=gain)
    nn.init.zeros_(lin.bias)
    return lin


__all__ = ["ActorCriticConfig", "MemoryCore", "RecurrentAgent", "Rollout", "feature_dim", "gae", "sample_action",
           "xavier_linear"]
