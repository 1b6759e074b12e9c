"""PEARL (Rakelly et al., ICML 2019): off-policy meta-RL, SAC conditioned on a latent task variable z
inferred by a probabilistic context encoder.

**Model.** A context encoder maps each transition ``(s, a, r)`` of a task to a Gaussian factor
``N(μ_i, σ²_i)`` over z (an MLP with ``2 x latent`` outputs, σ² through a softplus); the posterior is their
product, ``q(z | c) = N(μ, σ²)`` with ``1/σ² = Σ 1/σ²_i`` and ``μ = σ² Σ μ_i/σ²_i``, and the prior is
``N(0, I)``. The next observation is left out of the context, as the authors' default
(``use_next_obs_in_context=False``). The policy ``π(a | s, z)`` and twin critics ``Q(s, a, z)`` (with
Polyak-averaged targets) are SAC's: a tanh-Gaussian actor on continuous actions; on discrete ones (Harlow,
the maze: our extension, the paper has no such row) the discrete SAC of Christodoulou (2019, arXiv
1910.07207): the critics return every action's value, the policy is a categorical, and expectations over the
next action are exact sums. The temperature is learned towards a target entropy (``-|A|`` continuous,
``target_entropy_scale x log |A|`` discrete) unless ``learn_temperature`` is off.

**Acting inside a trial, through** :meth:`PEARLAgent.act` **(the shared protocol, no special case).** The
per-trial memory is the context, kept as the running sums of the product of Gaussians, plus the last
observation and the current z. At task start z is drawn from the prior. Each step adds the transition that
the previous step completed (its observation, the action taken and the reward, which arrives one step later
as ``prev_reward``); every ``posterior_every`` steps (1: online, each step, as later comparisons such as
VariBAD's run PEARL on one-episode tasks; 0: at episode starts only, PEARL's own protocol on multi-episode
trials) z is redrawn from the posterior of the trial's own transitions. The context is never taken from
a replay buffer at test time (garage #1374).

**Meta-training** (:meth:`PEARLAgent.meta_train`). The replay is split in slots, one per task, each
with its replay buffer and its context buffer. Where the family has a fixed pool of training tasks
(Meta-World's 50 goals per class) a slot is a pool task, its context buffer its latest trials (the
authors' setting); where tasks come from an unbounded stream (Harlow, the maze, the MuJoCo directions) a
slot is one trial of a fresh task, the latest ``train_tasks`` trials kept, and its transitions are both
its replay and its context (a fixed pool drawn once from the stream is memorised: FINDINGS.md). Each round
runs ``collect_trials`` trials through the shared protocol with the acting rule above (so the replay data
is what the agent does at test time), then takes ``updates_per_env_step`` gradient steps per environment
step collected; the first round gives every pool task (or a meta-batch of slots) a trial before any update
(a pool larger than a tenth of the budget affords, ML10's 500 goals on quick: a random subset of it).
A gradient step samples ``meta_batch`` slots; for each, a context of ``context_batch`` transitions from its
context buffer and ``batch`` transitions from its replay buffer;
z is drawn from the posterior by reparameterisation; the critic loss trains the encoder through z (the
actor's and the targets' z is detached), plus ``kl_weight x KL(q(z | c) || N(0, I))`` summed over the
meta-batch, as the authors' code.

**Where ours differs from the authors' settings** (``katerakelly/oyster``, ``configs/default.py``), and
why: SAC v2 (twin Q with target critics, learned temperature) instead of v1 (a value network and fixed
temperature with reward scale 5): the issue asks for targets on the critics, and one temperature rule that
works across our tasks' reward scales; the reward scale stays a field. The trials are collected with the
online posterior, not with a prior phase and a posterior phase of a fixed number of steps each, because our
trials are one episode and a test trial infers online. Network widths, batch sizes and updates per
environment step are the authors' on the ``paper`` profile and scaled down on ``quick``
(:mod:`metabench.agents.defaults`): a gradient step of the authors' size (16 tasks x 256 transitions,
3 x 300 networks) costs tenths of a second on a core of the development machine.

**Saving.** The saved agent (``seed<N>.pt``) holds the networks, the optimisers, the temperature and the
generators, not the replay buffers (hundreds of MB). A loaded agent acts and is scored exactly as the run's
record, but refuses to meta-train further (garage #1316: a resume that silently drops the buffers).
A checkpoint of an unfinished run (:meth:`Agent.training_checkpoint`) does hold them, in its
:class:`~metabench.agents.base.TrainLoop`, so a killed run resumes with its buffers as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from metabench.envs import rng
from metabench.envs.base import TaskBatch, TaskFamily, task_generator

from .base import Agent, AgentConfig, AgentInput, GeneratorState, TrainingMonitor, TrainLoop, keep_inactive


@dataclass(frozen=True)
class PEARLConfig(AgentConfig):
    latent: int = 5
    """Size of z."""
    hidden: int = 300
    """Width of the hidden layers of the actor and the critics."""
    layers: int = 3
    """Hidden layers of the actor and the critics."""
    encoder_hidden: int = 200
    """Width of the hidden layers of the context encoder."""
    encoder_layers: int = 3
    """Hidden layers of the context encoder."""
    kl_weight: float = 0.1
    """Weight of KL(q(z | c) || prior), summed over the meta-batch."""
    lr: float = 3e-4
    """Adam learning rate of the actor, the critics with the encoder, and the temperature."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    gamma: float = 0.99
    """Discount."""
    reward_scale: float = 5.0
    """Rewards are multiplied by this in the critics' targets (not in the context, not in scores)."""
    learn_temperature: bool = True
    """Learn the entropy temperature towards the target entropy (SAC v2); else keep ``init_temperature``."""
    init_temperature: float = 1.0
    """The temperature at the start (and throughout if not learned)."""
    target_entropy_scale: float = 0.5
    """Discrete actions: target entropy = this x log |A| (Christodoulou's 0.98 keeps the policy nearly
    uniform on two or four actions; the maze's row in :mod:`metabench.agents.defaults` sets 0.9, where at 0.5
    the held-out score fell back to random's once the entropy reached its target). Continuous actions: -|A|,
    SAC's."""
    batch: int = 256
    """Transitions per task in a gradient step (the RL batch)."""
    context_batch: int = 64
    """Transitions per task in the context of a gradient step."""
    meta_batch: int = 16
    """Tasks per gradient step."""
    train_tasks: int = 2_000
    """Slots of the replay where the family draws its tasks from a stream (Harlow, the maze, the MuJoCo
    directions): the latest ``train_tasks`` trials, each a fresh task with its own buffer, which is also its
    context buffer. A family with a fixed pool (Meta-World) has a slot per pool task instead. A small fixed
    pool drawn once from a stream is memorised (FINDINGS.md, PEARL)."""
    collect_trials: int = 8
    """Trials (one pool task each) per collection round."""
    updates_per_env_step: float = 0.5
    """Gradient steps per environment step collected (the authors': 2,000 per iteration of 5 tasks x 800
    steps; 4,000 per 5 x 1,000 on Ant-dir)."""
    buffer_per_task: int = 20_000
    """Capacity of each pool task's replay buffer (oldest transitions overwritten); a stream's slot holds one
    trial."""
    context_trials: int = 1
    """Trials of a pool task its context buffer keeps (the latest; older ones are dropped when it is collected
    again, and of a task drawn twice in one round the later trial stays)."""
    posterior_every: int = 1
    """Steps between posterior updates (and draws of z) inside an episode; 0: at episode starts only."""

    def __post_init__(self):
        if min(self.latent, self.hidden, self.layers, self.encoder_hidden, self.encoder_layers) < 1:
            raise ValueError("latent, hidden, layers, encoder_hidden and encoder_layers must be positive")
        if min(self.batch, self.context_batch, self.meta_batch, self.train_tasks, self.collect_trials,
               self.buffer_per_task, self.context_trials) < 1:
            raise ValueError("batch sizes, train_tasks, collect_trials and buffer sizes must be positive")
        if self.updates_per_env_step <= 0 or self.posterior_every < 0:
            raise ValueError("updates_per_env_step must be > 0 and posterior_every >= 0")


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(in_dim, hidden), nn.ReLU()]
        in_dim = hidden
    return nn.Sequential(*mods, nn.Linear(in_dim, out_dim))


def product_of_gaussians(mu: torch.Tensor, var: torch.Tensor, mask: torch.Tensor | None = None):
    """Posterior of factors ``[..., C, L]`` (``mask`` ``[..., C]`` drops some): ``(μ, σ²)`` ``[..., L]``.
    Without any factor it is the product's identity, a flat Gaussian; the protocol's memory adds the prior."""
    prec = 1.0 / var
    if mask is not None:
        prec = prec * mask.unsqueeze(-1)
    p = prec.sum(-2)
    return (mu * prec).sum(-2) / p, 1.0 / p


def discrete_soft_value(logits: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor, alpha) -> torch.Tensor:
    """Discrete SAC's soft state value, exact over actions: ``Σ_a π(a|s) (min(Q1, Q2)(s, a) - α log π(a|s))``."""
    logp = F.log_softmax(logits, -1)
    return (logp.exp() * (torch.min(q1, q2) - alpha * logp)).sum(-1)


def td_target(reward: torch.Tensor, terminal: torch.Tensor, v_next: torch.Tensor, gamma: float,
              reward_scale: float) -> torch.Tensor:
    """The critics' target ``scale·r + γ (1 - terminal) V(s')``: a truncated episode still bootstraps."""
    return reward_scale * reward + gamma * (1.0 - terminal) * v_next


@dataclass
class PEARLMemory:
    """Per-trial memory: the context as running sums of the factors' precisions and precision-weighted means
    (the prior's included), the observation at which the last action was taken, and the current z."""

    precision: torch.Tensor
    """``[B, L]``: 1 (the prior) + Σ 1/σ²_i."""
    weighted_mean: torch.Tensor
    """``[B, L]``: Σ μ_i/σ²_i (the prior's mean is 0)."""
    last_obs: torch.Tensor
    z: torch.Tensor
    steps: torch.Tensor
    """int64 ``[B]``: steps of the current episode so far."""


def _zeros(*shape: int, dtype: Any = np.float32) -> torch.Tensor:
    """A zero tensor whose pages the OS maps on first write (numpy's calloc; ``torch.zeros`` writes every
    byte): a replay sized for a run's end costs memory as it fills."""
    return torch.from_numpy(np.zeros(shape, dtype=dtype))


class RingBuffers:
    """One ring buffer of transitions per pool task: tensors ``[K, capacity, ...]``."""

    FIELDS = ("obs", "action", "reward", "next_obs", "terminal")

    def __init__(self, tasks: int, capacity: int, obs_dim: int, action_shape: tuple[int, ...], discrete: bool):
        self.capacity = capacity
        self.obs = _zeros(tasks, capacity, obs_dim)
        self.next_obs = _zeros(tasks, capacity, obs_dim)
        self.action = _zeros(tasks, capacity, *action_shape, dtype=np.int64 if discrete else np.float32)
        self.reward = _zeros(tasks, capacity)
        self.terminal = _zeros(tasks, capacity)
        self.size = torch.zeros(tasks, dtype=torch.int64)
        self.ptr = torch.zeros(tasks, dtype=torch.int64)

    def __getstate__(self) -> dict[str, Any]:
        """What a checkpoint keeps: each task's filled rows only (a task not yet full holds them at
        ``[0, size)``, a full one everywhere), so a pool of 500 Meta-World goals with room for 20,000
        transitions each saves what it collected, not 3 GB of zeros."""
        size = self.size.tolist()
        filled = {name: torch.cat([getattr(self, name)[k, :n] for k, n in enumerate(size)])
                  for name in self.FIELDS}
        return {"capacity": self.capacity, "size": self.size, "ptr": self.ptr, "filled": filled}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.capacity, self.size, self.ptr = state["capacity"], state["size"], state["ptr"]
        size = self.size.tolist()
        for name in self.FIELDS:
            rows = state["filled"][name]
            x = _zeros(len(size), self.capacity, *rows.shape[1:], dtype=rows.numpy().dtype)
            for k, task_rows in enumerate(rows.split(size)):
                x[k, :len(task_rows)] = task_rows
            setattr(self, name, x)

    def clear(self, task: int) -> None:
        self.size[task] = 0
        self.ptr[task] = 0

    def add(self, task: int, obs, action, reward, next_obs, terminal) -> None:
        """Append ``n`` transitions of one task (the oldest overwritten once full)."""
        n = obs.shape[0]
        if n > self.capacity:
            obs, action, reward, next_obs, terminal = (x[-self.capacity:] for x in (obs, action, reward, next_obs,
                                                                                    terminal))
            n = self.capacity
        idx = (int(self.ptr[task]) + torch.arange(n)) % self.capacity
        self.obs[task, idx], self.action[task, idx], self.reward[task, idx] = obs, action, reward
        self.next_obs[task, idx], self.terminal[task, idx] = next_obs, terminal
        self.ptr[task] = (int(self.ptr[task]) + n) % self.capacity
        self.size[task] = min(int(self.size[task]) + n, self.capacity)

    def sample(self, tasks: torch.Tensor, n: int, generator: torch.Generator):
        """``n`` transitions of each task in ``tasks`` ``[M]``, uniformly with replacement: tensors ``[M, n, ...]``."""
        u = torch.rand(len(tasks), n, generator=generator)
        idx = (u * self.size[tasks].unsqueeze(1)).long()
        t = tasks.unsqueeze(1)
        return self.obs[t, idx], self.action[t, idx], self.reward[t, idx], self.next_obs[t, idx], self.terminal[t, idx]


class PEARLAgent(Agent):
    """PEARL behind the shared interface (the module docstring says how it acts and trains)."""

    Config = PEARLConfig
    config: PEARLConfig
    defaults_key = "pearl"

    def __init__(self, family: TaskFamily, config: PEARLConfig, seed: int):
        super().__init__(family, config, seed)
        torch.manual_seed(seed)  # the initial weights
        space = family.action_space
        self.discrete = space.discrete
        self.n_actions = space.n
        o, n, c = family.obs_dim, space.n, config
        self.context_dim = o + n + 1
        self.encoder = mlp(self.context_dim, c.encoder_hidden, c.encoder_layers, 2 * c.latent)
        actor_out = n if self.discrete else 2 * n
        critic_in = o + c.latent + (0 if self.discrete else n)
        critic_out = n if self.discrete else 1
        self.actor = mlp(o + c.latent, c.hidden, c.layers, actor_out)
        self.critics = nn.ModuleList([mlp(critic_in, c.hidden, c.layers, critic_out) for _ in range(2)])
        self.targets = nn.ModuleList([mlp(critic_in, c.hidden, c.layers, critic_out) for _ in range(2)])
        self.targets.load_state_dict(self.critics.state_dict())
        self.targets.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(c.init_temperature)))
        self.target_entropy = c.target_entropy_scale * math.log(n) if self.discrete else -float(n)
        self.critic_opt = torch.optim.Adam([*self.critics.parameters(), *self.encoder.parameters()], lr=c.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.lr)
        self.action_generator = torch.Generator().manual_seed(seed)
        self.update_generator = torch.Generator().manual_seed(seed + 7_919)
        self.scale = (space.high - space.low) / 2
        self.offset = (space.high + space.low) / 2
        self._loaded = False

    @classmethod
    def row_note(cls, family: TaskFamily) -> str | None:
        if family.action_space.discrete:
            return "discrete SAC (Christodoulou 2019): our extension; the paper runs PEARL on continuous control only"
        return None

    # --- Networks -------------------------------------------------------------------------------
    def context_features(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        a = F.one_hot(action, self.n_actions).to(obs.dtype) if self.discrete else action.to(obs.dtype)
        return torch.cat([obs, a, reward.unsqueeze(-1)], dim=-1)

    def factors(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-transition Gaussian factors ``(μ_i, σ²_i)`` of a context ``[..., context_dim]``."""
        out = self.encoder(context)
        mu, raw = out.split(self.config.latent, dim=-1)
        return mu, F.softplus(raw).clamp(min=1e-7)

    def policy(self, obs: torch.Tensor, z: torch.Tensor):
        """Discrete: logits. Continuous: (mean, log_std) of the pre-tanh Gaussian."""
        out = self.actor(torch.cat([obs, z], dim=-1))
        if self.discrete:
            return out
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std.clamp(-20.0, 2.0)

    def sample(self, obs: torch.Tensor, z: torch.Tensor, generator: torch.Generator):
        """Continuous: an action in [-1, 1] (tanh-squashed, before the bounds) and its log-probability."""
        mean, log_std = self.policy(obs, z)
        eps = torch.randn(mean.shape, generator=generator).to(mean.device)
        u = mean + log_std.exp() * eps
        a = torch.tanh(u)
        logp = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
        return a, logp

    def q(self, nets: nn.ModuleList, obs: torch.Tensor, z: torch.Tensor, action: torch.Tensor | None = None):
        x = torch.cat([obs, z] if self.discrete else [obs, z, action], dim=-1)
        return [net(x) if self.discrete else net(x).squeeze(-1) for net in nets]

    # --- Acting -----------------------------------------------------------------------------------
    def initial_memory(self, batch_size: int) -> PEARLMemory:
        L, d = self.config.latent, self.device
        return PEARLMemory(precision=torch.ones(batch_size, L, device=d),
                           weighted_mean=torch.zeros(batch_size, L, device=d),
                           last_obs=torch.zeros(batch_size, self.family.obs_dim, device=d),
                           z=torch.zeros(batch_size, L, device=d),
                           steps=torch.zeros(batch_size, dtype=torch.int64, device=d))

    def draw_z(self, precision: torch.Tensor, weighted_mean: torch.Tensor) -> torch.Tensor:
        var = 1.0 / precision
        eps = torch.randn(precision.shape, generator=self.action_generator).to(precision.device)
        return weighted_mean * var + var.sqrt() * eps

    def act(self, inputs: AgentInput, memory: PEARLMemory) -> tuple[torch.Tensor, PEARLMemory]:
        inputs = inputs.to(self.device)
        fresh = inputs.task_start
        # the transition the previous step completed: (s_{t-1}, a_{t-1}, r_{t-1}), present after the task's first step
        has_prev = ~fresh
        mu_i, var_i = self.factors(self.context_features(memory.last_obs, inputs.prev_action, inputs.prev_reward))
        add = has_prev.to(mu_i.dtype).unsqueeze(1)
        base_p = torch.where(fresh.unsqueeze(1), torch.ones_like(memory.precision), memory.precision)
        base_m = torch.where(fresh.unsqueeze(1), torch.zeros_like(memory.weighted_mean), memory.weighted_mean)
        precision = base_p + add / var_i
        weighted_mean = base_m + add * mu_i / var_i
        steps = torch.where(inputs.episode_start, torch.zeros_like(memory.steps), memory.steps)
        every = self.config.posterior_every
        redraw = fresh | (inputs.episode_start if every == 0 else (steps % every == 0))
        z_new = self.draw_z(precision, weighted_mean)
        z = torch.where(redraw.unsqueeze(1), z_new, memory.z)
        if self.discrete:
            probs = F.softmax(self.policy(inputs.obs, z), dim=-1)
            action = torch.multinomial(probs.cpu(), 1, generator=self.action_generator).squeeze(1)
        else:
            a, _ = self.sample(inputs.obs, z, self.action_generator)
            action = a.cpu() * self.scale + self.offset
        new = PEARLMemory(precision, weighted_mean, inputs.obs, z, steps + 1)
        act = inputs.active
        kept = PEARLMemory(*(keep_inactive(act, getattr(new, f), getattr(memory, f)) for f in
                             ("precision", "weighted_mean", "last_obs", "z", "steps")))
        return action, kept

    # --- Meta-training ----------------------------------------------------------------------------
    def collect(self, family: TaskFamily, tasks: TaskBatch, slots: torch.Tensor, rl: RingBuffers,
                ctx: RingBuffers) -> tuple[int, float]:
        """One trial of each task through the shared protocol; its transitions into its slot's replay buffer,
        and into the slot's context buffer in place of older trials (a stream's slot holds one trial, its
        replay and context buffers are one). Returns the env steps and the trials' mean return."""
        from metabench.protocol import run_trials

        obs, actions, rewards, next_obs, terminal, active = [], [], [], [], [], []

        def record(inputs: AgentInput, action: torch.Tensor, step) -> None:
            obs.append(inputs.obs)
            actions.append(action)
            rewards.append(step.reward)
            next_obs.append(step.obs)
            terminal.append(step.terminated.to(torch.float32))
            active.append(step.active)

        with torch.no_grad():
            run_trials(self, family, tasks, on_step=record)
        cols = [torch.stack(x, 1) for x in (obs, actions, rewards, next_obs, terminal, active)]
        mask = cols.pop()
        for slot in set(slots.tolist()):
            ctx.clear(slot)
        for k, slot in enumerate(slots.tolist()):
            trial = [x[k][mask[k]] for x in cols]
            if rl is not ctx:
                rl.add(slot, *trial)
            ctx.add(slot, *trial)
        return int(mask.sum()), float((cols[2] * mask).sum(1).mean())

    def meta_train(self, family: TaskFamily, budget_env_steps: int, monitor: TrainingMonitor) -> int:
        if self._loaded and self.loop is None:
            raise RuntimeError("a loaded PEARL agent has no replay buffers (they are not saved); it can be "
                               "scored, not meta-trained further")
        c = self.config
        pool = family.task_pool("train")
        shape = () if self.discrete else (self.n_actions,)
        per_trial = family.episodes_per_trial * family.max_episode_steps
        if self.loop is None:  # else a checkpoint's, buffers and all: go on from there
            if pool is not None:  # a slot per pool task: its replay buffer, and a context buffer of its latest trials
                k = len(pool)
                rl = RingBuffers(k, c.buffer_per_task, family.obs_dim, shape, self.discrete)
                ctx = RingBuffers(k, c.context_trials * per_trial, family.obs_dim, shape, self.discrete)
            else:  # a stream: a slot per trial, the latest ``train_tasks`` of them, each trial a fresh task
                k = c.train_tasks
                rl = ctx = RingBuffers(k, per_trial, family.obs_dim, shape, self.discrete)
            self.loop = TrainLoop(task_generator(self.seed, "train"),
                                  extra={"rl": rl, "ctx": ctx, "slots": k, "next_slot": 0, "owed": 0.0, "first": True})
        loop, x = self.loop, self.loop.extra
        gen, rl, ctx, k = loop.generator, x["rl"], x["ctx"], x["slots"]
        self.replay, self.context = rl, ctx  # kept for inspection; saved with a checkpoint, not with the agent
        while True:
            # the first round gives every pool task (or the first meta-batch of slots) a trial before any update;
            # at most a tenth of the budget (ML10's 500 goals would take all of a quick run), then a random subset
            if x["first"]:
                n_trials = (min(k, max(c.meta_batch, budget_env_steps // (10 * per_trial))) if pool is not None
                            else max(c.collect_trials, c.meta_batch))
            else:
                n_trials = c.collect_trials
            n_trials = min(n_trials, (budget_env_steps - loop.steps) // per_trial)
            if n_trials < 1:
                break
            train_family = family.training_family(loop.steps / max(budget_env_steps, 1))
            if pool is not None:
                slots = (torch.randperm(k, generator=gen)[:n_trials] if x["first"]
                         else torch.randint(0, k, (n_trials,), generator=gen))
                tasks = pool.index(slots)
                tasks.key = rng.new_keys(n_trials, gen)
            else:
                tasks = train_family.sample_tasks(n_trials, "train", gen)
                slots = (x["next_slot"] + torch.arange(n_trials)) % k
                x["next_slot"] = (x["next_slot"] + n_trials) % k
            x["first"] = False
            n, trial_return = self.collect(train_family, tasks, slots, rl, ctx)
            loop.steps += n
            loop.episodes += n_trials * family.episodes_per_trial
            x["owed"] += n * c.updates_per_env_step
            scalars: dict[str, float] = {}
            have = torch.nonzero(ctx.size > 0).squeeze(1)
            while x["owed"] >= 1:
                x["owed"] -= 1
                scalars = self.update(rl, ctx, have)
            for name in ("critic_loss", "alpha"):
                if name in scalars:
                    loop.summary[f"{name}_last"] = scalars[name]
            monitor.update(loop.steps, loop.episodes, {**scalars, "train_return": trial_return})
        return loop.steps

    def update(self, rl: RingBuffers, ctx: RingBuffers, have: torch.Tensor) -> dict[str, float]:
        """One gradient step of the critics with the encoder, the actor and the temperature."""
        c, g = self.config, self.update_generator
        tasks = have[torch.randint(0, len(have), (c.meta_batch,), generator=g)]
        co, ca, cr, _, _ = (x.to(self.device) for x in ctx.sample(tasks, c.context_batch, g))
        mu_i, var_i = self.factors(self.context_features(co, ca, cr))
        mu, var = product_of_gaussians(mu_i, var_i)
        z = mu + var.sqrt() * torch.randn(mu.shape, generator=g).to(self.device)
        kl = 0.5 * (var + mu**2 - 1.0 - var.log()).sum(-1).sum()
        obs, action, reward, next_obs, terminal = (x.to(self.device) for x in rl.sample(tasks, c.batch, g))
        obs, next_obs = obs.flatten(0, 1), next_obs.flatten(0, 1)
        action, reward, terminal = action.flatten(0, 1), reward.flatten(0, 1), terminal.flatten(0, 1)
        z_b = z.repeat_interleave(c.batch, dim=0)
        zd = z_b.detach()
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            if self.discrete:
                v_next = discrete_soft_value(self.policy(next_obs, zd), *self.q(self.targets, next_obs, zd), alpha)
            else:
                a2, logp2 = self.sample(next_obs, zd, g)
                v_next = torch.min(*self.q(self.targets, next_obs, zd, a2)) - alpha * logp2
            y = td_target(reward, terminal, v_next, c.gamma, c.reward_scale)
        if self.discrete:
            qs = [q.gather(1, action.unsqueeze(1)).squeeze(1) for q in self.q(self.critics, obs, z_b)]
        else:
            qs = self.q(self.critics, obs, z_b, (action - self.offset) / self.scale)
        critic_loss = sum(F.mse_loss(q, y) for q in qs)
        self.critic_opt.zero_grad()
        (critic_loss + c.kl_weight * kl).backward()
        self.critic_opt.step()
        # actor and temperature, on the critics just updated, z detached
        if self.discrete:
            logp = F.log_softmax(self.policy(obs, zd), -1)
            p = logp.exp()
            with torch.no_grad():
                qmin = torch.min(*self.q(self.critics, obs, zd))
            actor_loss = (p * (alpha * logp - qmin)).sum(-1).mean()
            entropy = -(p * logp).sum(-1).mean().detach()
        else:
            a, logp = self.sample(obs, zd, g)
            self.critics.requires_grad_(False)
            actor_loss = (alpha * logp - torch.min(*self.q(self.critics, obs, zd, a))).mean()
            self.critics.requires_grad_(True)
            entropy = -logp.mean().detach()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        if c.learn_temperature:
            alpha_loss = self.log_alpha * (entropy - self.target_entropy)
            self.alpha_opt.zero_grad()
            alpha_loss.backward()
            self.alpha_opt.step()
        with torch.no_grad():
            for t, s in zip(self.targets.parameters(), self.critics.parameters()):
                t.lerp_(s, c.tau)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "kl": kl.item(),
                "alpha": self.log_alpha.exp().item(), "entropy": entropy.item(), "q": qs[0].mean().item()}

    def to(self, device: torch.device | str) -> "PEARLAgent":
        """The networks, and the temperature (a lone parameter), on ``device``; the replay and context buffers stay
        on the CPU (their samples move at each update)."""
        super().to(device)
        self.log_alpha.data = self.log_alpha.data.to(self.device)
        return self

    # --- Saving -----------------------------------------------------------------------------------
    def stateful(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "actor": self.actor, "critics": self.critics, "targets": self.targets,
                "temperature": _ParameterState(self.log_alpha), "critic_opt": self.critic_opt,
                "actor_opt": self.actor_opt, "alpha_opt": self.alpha_opt,
                "generator": GeneratorState(self.action_generator),
                "update_generator": GeneratorState(self.update_generator)}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self._loaded = True


class _ParameterState:
    """A lone parameter seen as something with ``state_dict`` / ``load_state_dict``."""

    def __init__(self, p: nn.Parameter):
        self.p = p

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"value": self.p.detach().clone()}

    def load_state_dict(self, state) -> None:
        with torch.no_grad():
            self.p.copy_(state["value"])


__all__ = ["PEARLAgent", "PEARLConfig", "PEARLMemory", "RingBuffers", "discrete_soft_value", "product_of_gaussians",
           "td_target"]
