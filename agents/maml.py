"""MAML for RL (Finn et al. 2017) on ``torch.func``: a memoryless MLP policy adapted mid-trial.

**Policy.** A 3-layer MLP (observation -> ``hidden`` -> ``hidden`` -> action
logits or Gaussian mean, tanh), as the paper's baseline. It sees the
observation only: everything it knows about the task comes from adaptation.

**Adaptation inside the trial (the shared protocol, no special case).** The
trial is cut into segments of ``adapt_every`` steps. The policy acts in the
first segment with the meta-learned parameters θ; at the end of each segment
but the last it takes ``inner_steps`` policy-gradient steps of size
``inner_lr`` on that segment's own steps, and acts in the next segment with
the adapted parameters (chained: each segment adapts from the parameters that
collected it, so every inner gradient is on-policy). This happens inside
:meth:`MAMLAgent.act`, which sees each reward one step later as
``prev_reward``; the per-trial memory holds the segment buffer and the
per-task adapted parameters. Splits (``adapt_every``, per task): the maze adapts
once, at step 50 of its 100; Harlow every 10 steps (a presentation and the
fixation after it take about 10 steps), so it can adapt after its first
choice and again after each later one. Every agent is scored on the whole
trial by the same protocol, so MAML's pre-adaptation steps count as
MetODS's and RL²'s first, exploring steps do.

**Inner loss.** REINFORCE on the segment, ``-mean_t log π(a_t|s_t) A_t``, with
``A_t`` the discounted reward-to-go inside the segment, standardised per task
over the segment (a per-task constant baseline: a segment has tens of steps,
too few to fit MAML's per-task linear feature baseline without it memorising
the returns). A segment without any reward gives A = 0: no adaptation.
The inner gradient is per task: θ is expanded to ``[B, ...]`` and
``torch.autograd.grad`` of the summed per-task losses with respect to the
expanded tensor returns each task's own gradient; the batched forward is
``torch.func.vmap`` over ``torch.func.functional_call``.

**Outer loop: PPO, not TRPO** (the paper's baseline used garage's TRPO). The
PPO clipped surrogate is what the shared trainer of MetODS and RL² uses, so
the comparison differs in the agent, not the optimiser; it needs no
Hessian-vector products on top of MAML's own second-order term (ProMP, Rothfuss
et al. 2019, also meta-trains MAML with a clipped surrogate). For every
minibatch of tasks and every PPO epoch the adaptation is recomputed from the
current θ (second order: ``create_graph=True``, so the meta-gradient flows
through the inner steps; ``first_order=True`` treats the inner gradients as
constants). The outer objective is the return of the whole trial: each
step's log-probability is taken under the parameters that acted at that step
(θ in the first segment, the adapted ones after), with advantages from the
discounted return over the trial minus a linear feature baseline fitted by
least squares over the batch (garage's ``LinearFeatureBaseline`` features:
obs, obs², t, t², t³, 1). The dependence of the pre-update data distribution
on θ is ignored, as in the original MAML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from metabench.envs.base import TaskFamily, task_generator
from metabench.profiles import LOCOMOTION
from torch import nn
from torch.func import functional_call, vmap

from .actor_critic import Rollout, clip_grad_norm, sample_action
from .base import Agent, AgentConfig, AgentInput, GeneratorState, TrainingMonitor, keep_inactive, merged_defaults


@dataclass(frozen=True)
class MAMLConfig(AgentConfig):
    hidden: int = 64
    """Width of the two hidden layers of the 3-layer MLP policy."""
    inner_lr: float = 0.5
    """Step size of the inner policy-gradient steps."""
    inner_steps: int = 1
    """Inner gradient steps at each adaptation point."""
    first_order: bool = False
    """First-order MAML: the inner gradients are constants of the meta-gradient (no second-order term)."""
    adapt_every: int = 50
    """Length of a trial segment in steps; the policy adapts after each segment but the last."""
    batch_tasks: int = 128
    """Trials (one task each) per outer update."""
    lr: float = 1e-3
    """Adam learning rate of the outer loop."""
    gamma: float = 0.99
    """Discount of the outer return over the trial and of the inner reward-to-go."""
    ppo_epochs: int = 4
    """Passes of the outer PPO over each batch of trials."""
    minibatches: int = 4
    """Minibatches of tasks per PPO epoch."""
    ppo_clip: float = 0.2
    """PPO ratio clip of the outer loop."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus of the outer loop."""
    max_grad_norm: float = 1.0
    """Global clip of the outer (meta-)gradient norm."""
    init_log_std: float = -0.5
    """Initial log standard deviation of the Gaussian head (continuous actions)."""


# Ours, per task: where the trial is cut (see the module docstring); then per profile.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "harlow": {"adapt_every": 10, "batch_tasks": 256, "ppo_epochs": 4, "minibatches": 8},
    "maze": {"adapt_every": 50, "batch_tasks": 128, "ppo_epochs": 4, "minibatches": 4, "gamma": 0.95},
    # MuJoCo direction tasks: one adaptation at t = 100 of the 200-step trial (the paper's Ant-dir);
    # inner step 0.1, MAML's own Ant-dir value.
    **dict.fromkeys(LOCOMOTION, {"adapt_every": 100, "inner_lr": 0.1, "batch_tasks": 32, "ppo_epochs": 4,
                                 "minibatches": 4, "gamma": 0.99}),
}
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": {"batch_tasks": 64, "ppo_epochs": 2, "minibatches": 2},
}


class MLPPolicy(nn.Module):
    """observation -> hidden -> hidden -> logits (discrete) or mean (continuous, plus a learned log std)."""

    def __init__(self, obs_dim: int, n_out: int, hidden: int, discrete: bool, init_log_std: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, n_out)
        )
        nn.init.orthogonal_(self.net[-1].weight, gain=0.01)
        nn.init.zeros_(self.net[-1].bias)
        if not discrete:
            self.log_std = nn.Parameter(torch.full((n_out,), init_log_std))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


Params = dict[str, torch.Tensor]
"""Per-task parameters: name -> ``[B, *shape]``."""


@dataclass
class MAMLMemory:
    """Per-trial memory: the adapted parameters of each task and the current segment's steps."""

    params: Params
    t: int = 0
    """Steps of the trial so far."""
    obs: list[torch.Tensor] | None = None
    actions: list[torch.Tensor] | None = None
    active: list[torch.Tensor] | None = None
    rewards: list[torch.Tensor] | None = None


def segment_advantages(rewards: torch.Tensor, active: torch.Tensor, gamma: float) -> torch.Tensor:
    """Inner advantages of a segment ``[B, T]``: reward-to-go inside it, standardised per task over active steps."""
    mask = active.to(rewards.dtype)
    ret = torch.zeros_like(rewards)
    run = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        run = rewards[:, t] * mask[:, t] + gamma * run
        ret[:, t] = run
    n = mask.sum(1, keepdim=True).clamp(min=1)
    mu = (ret * mask).sum(1, keepdim=True) / n
    sd = (((ret - mu) ** 2 * mask).sum(1, keepdim=True) / n).sqrt()
    return torch.where(sd > 1e-6, (ret - mu) / (sd + 1e-8), torch.zeros_like(ret)) * mask


def trial_returns(rewards: torch.Tensor, active: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted return from each step to the end of the trial, ``[T, B]``."""
    ret = torch.zeros_like(rewards)
    run = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        run = torch.where(active[t], rewards[t] + gamma * run, run)
        ret[t] = run
    return ret


def linear_baseline(obs: torch.Tensor, returns: torch.Tensor, active: torch.Tensor, ridge: float = 1e-5):
    """Ridge least-squares fit of the returns on [obs, obs², t, t², t³, 1] over the batch's active steps, ``[T, B]``.

    The ridge term (relative to the mean diagonal) keeps it solvable when features coincide (binary
    observations: obs² = obs).
    """
    t_len = obs.shape[0]
    t = (torch.arange(t_len, dtype=obs.dtype) / 100.0).view(-1, 1, 1).expand(*obs.shape[:2], 1)
    o = obs.clamp(-10, 10)
    feats = torch.cat([o, o * o, t, t * t, t**3, torch.ones_like(t)], dim=2)
    x, y = feats[active].double(), returns[active].double()
    a = x.T @ x
    a = a + ridge * (a.diagonal().mean() + 1.0) * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(a, x.T @ y)
    return feats @ w.to(feats.dtype)


class MAMLAgent(Agent):
    Config = MAMLConfig
    config: MAMLConfig

    @classmethod
    def default_config(cls, family: TaskFamily, profile) -> MAMLConfig:
        return cls.Config(**merged_defaults(family, profile, (TASK_DEFAULTS,), PROFILE_DEFAULTS))

    def __init__(self, family: TaskFamily, config: MAMLConfig, seed: int):
        super().__init__(family, config, seed)
        if config.adapt_every < 1 or config.inner_steps < 0:
            raise ValueError("adapt_every must be >= 1 and inner_steps >= 0")
        torch.manual_seed(seed)
        self.space = family.action_space
        self.policy = MLPPolicy(family.obs_dim, self.space.n, config.hidden, self.space.discrete,
                                config.init_log_std)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self._gen = torch.Generator().manual_seed(seed)
        self._summary: dict[str, float] = {}
        self._forward = vmap(self._forward_one)

    def stateful(self) -> dict[str, Any]:
        return {"policy": self.policy, "optimizer": self.optimizer, "generator": GeneratorState(self._gen)}

    # The policy with per-task parameters -----------------------------------------------------
    def _forward_one(self, params: Params, obs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.policy, params, (obs,))

    def distribution(self, params: Params, obs: torch.Tensor) -> torch.distributions.Distribution:
        """π(·|obs) with per-task ``params`` ([B, ...]) for ``obs`` [B, d] or [B, T, d]."""
        out = self._forward(params, obs)
        if self.space.discrete:
            return torch.distributions.Categorical(logits=out)
        std = params["log_std"].exp()
        if out.dim() == 3:
            std = std.unsqueeze(1)
        return torch.distributions.Independent(torch.distributions.Normal(out, std.expand_as(out)), 1)

    def expand_params(self, batch: int) -> Params:
        """θ as per-task parameters (a view: the gradient to each slice is that task's own)."""
        return {k: v.unsqueeze(0).expand(batch, *v.shape) for k, v in self.policy.named_parameters()}

    def adapt(self, params: Params, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
              active: torch.Tensor, create_graph: bool, first_logp: torch.Tensor | None = None) -> Params:
        """``inner_steps`` policy-gradient steps on one segment (all ``[B, T, ...]``), per task."""
        cfg = self.config
        adv = segment_advantages(rewards, active, cfg.gamma)
        n = active.to(adv.dtype).sum(1).clamp(min=1)
        names = list(params)
        for i in range(cfg.inner_steps):
            logp = first_logp if (i == 0 and first_logp is not None) else \
                self.distribution(params, obs).log_prob(actions)
            loss = -((logp * adv).sum(1) / n).sum()
            # retain_graph: the first segment's log-probabilities also enter the outer loss.
            grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph,
                                        retain_graph=True, allow_unused=True)
            params = {
                k: params[k] if g is None else params[k] - cfg.inner_lr * (g if create_graph else g.detach())
                for k, g in zip(names, grads)
            }
        return params

    # Acting: the shared protocol calls this at every step ------------------------------------
    def initial_memory(self, batch_size: int) -> MAMLMemory:
        params = {k: v.detach() for k, v in self.expand_params(batch_size).items()}
        return MAMLMemory(params, 0, [], [], [], [])

    def act(self, inputs: AgentInput, memory: MAMLMemory) -> tuple[torch.Tensor, MAMLMemory]:
        k = self.config.adapt_every
        if memory.t > 0:  # the reward of the previous step arrives now
            memory.rewards.append(torch.where(memory.active[-1], inputs.prev_reward, 0.0))
        if memory.t > 0 and memory.t % k == 0:
            memory = self._adapt_memory(memory, inputs.active)
        action = sample_action(self.distribution(memory.params, inputs.obs), self._gen)
        memory.obs.append(inputs.obs)
        memory.actions.append(action)
        memory.active.append(inputs.active)
        memory.t += 1
        return action, memory

    def _adapt_memory(self, memory: MAMLMemory, active: torch.Tensor) -> MAMLMemory:
        with torch.enable_grad():
            start = {name: p.detach().requires_grad_() for name, p in memory.params.items()}
            new = self.adapt(start, torch.stack(memory.obs, 1), torch.stack(memory.actions, 1),
                             torch.stack(memory.rewards, 1), torch.stack(memory.active, 1), create_graph=False)
        params = {name: keep_inactive(active, new[name].detach(), memory.params[name]) for name in new}
        return MAMLMemory(params, memory.t, [], [], [], [])

    # Meta-training --------------------------------------------------------------------------
    def collect(self, family: TaskFamily, generator: torch.Generator) -> Rollout:
        """One trial of each of ``batch_tasks`` train tasks; the rollout's ``features`` are the observations."""
        from metabench.protocol import run_trials

        tasks = family.sample_tasks(self.config.batch_tasks, "train", generator)
        obs, actions = [], []

        def record(inputs: AgentInput, action: torch.Tensor) -> None:
            obs.append(inputs.obs)
            actions.append(action)

        with torch.no_grad():
            res = run_trials(self, family, tasks, on_step=record)
        return Rollout(torch.stack(obs), torch.stack(actions), res.rewards, res.active)

    def trial_log_probs(self, obs, actions, rewards, active, create_graph: bool):
        """Log-probabilities and entropies ``[T, B]`` of a recorded trial, each step under the parameters
        that acted there: θ, then θ adapted after each segment (recomputed from the current θ)."""
        b = obs.shape[1]
        params = self.expand_params(b)
        k = self.config.adapt_every
        logps, ents = [], []
        for s in range(0, obs.shape[0], k):
            seg = slice(s, s + k)
            o, a = obs[seg].transpose(0, 1), actions[seg].transpose(0, 1)
            dist = self.distribution(params, o)
            logp = dist.log_prob(a)
            logps.append(logp)
            ents.append(dist.entropy())
            if s + k < obs.shape[0]:
                params = self.adapt(params, o, a, rewards[seg].T, active[seg].T, create_graph, first_logp=logp)
        return torch.cat(logps, 1).T, torch.cat(ents, 1).T

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
            scalars = self.update(ro)
            monitor.update(steps, episodes, scalars)
            self._summary["grad_norm_last"] = scalars["grad_norm"]
            self._summary["grad_norm_max"] = max(self._summary.get("grad_norm_max", -math.inf), scalars["grad_norm"])
        return steps

    def training_summary(self) -> dict[str, float]:
        return dict(self._summary)

    def update(self, ro: Rollout) -> dict[str, float]:
        """PPO epochs over minibatches of tasks, the adaptation recomputed from the current θ each time."""
        cfg = self.config
        obs, actions, rewards, active = ro.features, ro.actions, ro.rewards, ro.active
        mask = active.to(torch.float32)
        ret = trial_returns(rewards, active, cfg.gamma)
        adv = ret - linear_baseline(obs, ret, active)
        mu = adv[active].mean()
        sd = adv[active].std()
        adv = torch.where(active, (adv - mu) / (sd + 1e-8), 0.0)
        old_logp, _ = self.trial_log_probs(obs, actions, rewards, active, create_graph=False)
        old_logp = old_logp.detach()
        second_order = not cfg.first_order
        stats: dict[str, list[float]] = {}
        b = obs.shape[1]
        for _epoch in range(cfg.ppo_epochs):
            for idx in torch.randperm(b, generator=self._gen).chunk(cfg.minibatches):
                logp, ent = self.trial_log_probs(obs[:, idx], actions[:, idx], rewards[:, idx], active[:, idx],
                                                 create_graph=second_order)
                m, a = mask[:, idx], adv[:, idx]
                ratio = (logp - old_logp[:, idx]).exp()
                pg = -torch.minimum(ratio * a, ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip) * a)
                n = m.sum()
                policy_loss = (pg * m).sum() / n
                entropy = (ent * m).sum() / n
                loss = policy_loss - cfg.entropy_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = clip_grad_norm(list(self.policy.parameters()), cfg.max_grad_norm)
                self.optimizer.step()
                for key, v in {"loss": loss, "policy_loss": policy_loss, "entropy": entropy,
                               "grad_norm": grad_norm}.items():
                    stats.setdefault(key, []).append(float(v.detach()))
        out = {key: sum(v) / len(v) for key, v in stats.items()}
        out["train_return"] = float(rewards.sum(0).mean())
        return out


__all__ = ["MAMLAgent", "MAMLConfig", "MLPPolicy", "linear_baseline", "segment_advantages", "trial_returns"]
