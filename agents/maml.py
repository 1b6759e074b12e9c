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
on θ is ignored, as in the original MAML. The loop itself is the shared
on-policy trainer (:mod:`metabench.agents.ppo`): MAML supplies the
log-probabilities (:meth:`MAMLAgent.evaluate_actions`) and the baseline
(:meth:`MAMLAgent.fit_baseline`); ``gae_lambda = 1`` makes the advantage the
return minus the baseline, standardised per minibatch like every agent's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from metabench.envs.base import TaskFamily
from torch import nn
from torch.func import functional_call, vmap

from .base import AgentInput, TrainingDiverged, keep_inactive
from .ppo import Evaluated, OnPolicyAgent, PPOConfig, Rollout, sample_action


@dataclass(frozen=True)
class MAMLConfig(PPOConfig):
    """MAML's own fields; the outer loop's are the shared trainer's (:class:`~metabench.agents.ppo.PPOConfig`)."""

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
    gae_lambda: float = 1.0
    """1: the outer advantage is the discounted return over the trial minus the linear feature baseline."""
    ppo_epochs: int = 4
    """Passes of the outer PPO over each batch of trials."""
    minibatches: int = 4
    """Minibatches of trials per PPO epoch."""

    def __post_init__(self):
        super().__post_init__()
        if self.adapt_every < 1 or self.inner_steps < 0:
            raise ValueError("adapt_every must be >= 1 and inner_steps >= 0")


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


def linear_baseline(obs: torch.Tensor, returns: torch.Tensor, active: torch.Tensor, ridge: float = 1e-5):
    """Ridge least-squares fit of the returns on [obs, obs², t, t², t³, 1] over the batch's active steps, ``[T, B]``.

    The ridge term (relative to the mean diagonal) keeps it solvable when features coincide (binary
    observations: obs² = obs).
    """
    t_len = obs.shape[0]
    t = (torch.arange(t_len, dtype=obs.dtype, device=obs.device) / 100.0).view(-1, 1, 1).expand(*obs.shape[:2], 1)
    o = obs.clamp(-10, 10)
    feats = torch.cat([o, o * o, t, t * t, t**3, torch.ones_like(t)], dim=2)
    x, y = feats[active].double(), returns[active].double()
    a = x.T @ x
    a = a + ridge * (a.diagonal().mean() + 1.0) * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    w = torch.linalg.solve(a, x.T @ y)
    return feats @ w.to(feats.dtype)


class MAMLAgent(OnPolicyAgent):
    Config = MAMLConfig
    config: MAMLConfig
    defaults_key = "maml"

    def __init__(self, family: TaskFamily, config: MAMLConfig, seed: int):
        super().__init__(family, config, seed)
        torch.manual_seed(seed)
        self.space = family.action_space
        self.policy = MLPPolicy(family.obs_dim, self.space.n, config.hidden, self.space.discrete,
                                config.init_log_std)
        self.init_trainer(self.policy.parameters())
        self._forward = vmap(self._forward_one)

    def stateful(self) -> dict[str, Any]:
        return {"policy": self.policy, **super().stateful()}

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
        bad = [k for k, v in params.items() if not bool(torch.isfinite(v).all())]
        if bad:  # the run fails with this one line, not with torch.distributions' dump of a NaN tensor
            raise TrainingDiverged(f"MAML's inner step gave non-finite adapted parameters ({', '.join(bad)}) "
                                   f"from finite θ: {'finite' if bool(torch.isfinite(adv).all()) else 'non-finite'} "
                                   f"inner advantages, rewards in [{float(rewards.min()):.3g}, "
                                   f"{float(rewards.max()):.3g}], θ's log-std in {self._log_std_range()}")
        return params

    def _log_std_range(self) -> str:
        log_std = getattr(self.policy, "log_std", None)
        return "— (discrete)" if log_std is None else f"[{float(log_std.min()):.3g}, {float(log_std.max()):.3g}]"

    # Acting: the shared protocol calls this at every step ------------------------------------
    def initial_memory(self, batch_size: int) -> MAMLMemory:
        params = {k: v.detach() for k, v in self.expand_params(batch_size).items()}
        return MAMLMemory(params, 0, [], [], [], [])

    def act(self, inputs: AgentInput, memory: MAMLMemory) -> tuple[torch.Tensor, MAMLMemory]:
        inputs = self.observe(inputs)
        k = self.config.adapt_every
        if memory.t > 0:  # the reward of the previous step arrives now
            memory.rewards.append(torch.where(memory.active[-1], inputs.prev_reward, 0.0))
        if memory.t > 0 and memory.t % k == 0:
            memory = self._adapt_memory(memory, inputs.active)
        action = sample_action(self.distribution(memory.params, inputs.obs), self.action_generator)
        memory.obs.append(inputs.obs)
        memory.actions.append(action.to(self.device))
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

    # What the shared trainer asks -------------------------------------------------------------
    def step_record(self, inputs: AgentInput) -> torch.Tensor:
        return self.observe(inputs).obs  # the policy sees the observation only

    def evaluate_actions(self, ro: Rollout, differentiable: bool) -> Evaluated:
        """Each step's log-probability under the parameters that acted there, the adaptation recomputed from
        the current θ (second order unless ``first_order``). No value head: see :meth:`fit_baseline`."""
        logp, ent = self.trial_log_probs(ro.features, ro.actions, ro.rewards, ro.active,
                                         create_graph=differentiable and not self.config.first_order)
        if not differentiable:
            logp, ent = logp.detach(), ent.detach()
        return Evaluated(logp, ent, None)

    def fit_baseline(self, ro: Rollout, returns: torch.Tensor) -> torch.Tensor:
        return linear_baseline(ro.features, returns, ro.active)

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


__all__ = ["MAMLAgent", "MAMLConfig", "MLPPolicy", "linear_baseline", "segment_advantages"]
