"""Recurrent meta-learners (MetODS, RL²): a memory core and shared heads, trained by the shared PPO trainer.

Only the *memory core* differs between these agents: a :class:`MemoryCore`
maps the step features [obs, previous action, previous reward, episode-start
flag] and its state to a hidden vector ``h``; the heads (policy, value) are
shared, and so is the trainer (:mod:`metabench.agents.ppo`). Subclasses of
:class:`RecurrentAgent` supply :meth:`RecurrentAgent.make_core` and nothing else.

The core's state is reset at task start only. To score a batch of recorded
trials the agent replays them through the core *with* gradients from the
task-start state: backpropagation through the whole trial, every W update and
every GRU step (``tbptt`` cuts the graph every k steps if set).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from metabench.envs.base import ActionSpace, TaskFamily

from .base import AgentInput, keep_inactive
from .ppo import Evaluated, OnPolicyAgent, PPOConfig, Rollout, sample_action


@dataclass(frozen=True)
class RecurrentConfig(PPOConfig):
    tbptt: int = 0
    """Detach the memory state every k steps of the replay (0: full BPTT through the trial)."""
    orthogonal_init: bool = False
    """Initialise every ``nn.Linear`` of the core orthogonally with gain √2 and the value head with gain 1, biases
    0, as CleanRL's PPO does (off: Xavier, the core's own initialisation). The policy head is orthogonal with gain
    0.01 either way, so the initial policy is near its mean."""
    compile: bool = False
    """``torch.compile`` the core's step (same numbers within float tolerance)."""
    kernel: Literal["auto", "fused", "autograd"] = "auto"
    """What runs a trial (replay and acting): ``fused``, the core's C++ forward and backward of the whole trial
    (MetODS: :mod:`~metabench.agents.metods_fused`; RL²: :mod:`~metabench.agents.gru_fused`; ``compile`` then
    does not apply to the core); ``autograd``, the step stepped once per env step (``compile`` applies);
    ``auto``, fused where the core's kernel covers the config and its extension builds, else autograd. The same
    numbers within float rounding. ``fused`` where it cannot run raises at construction. The kernel is not part
    of what a run *is*: records trained on either path are runs of the same config (float rounding makes them
    different runs, as another machine would); each record's ``platform.memory_kernel`` says which path ran."""

    def __post_init__(self):
        super().__post_init__()
        if self.kernel not in ("auto", "fused", "autograd"):
            raise ValueError(f"kernel must be one of ('auto', 'fused', 'autograd'), got {self.kernel!r}")


class MemoryCore(nn.Module):
    """A recurrent memory: ``h, state = core(x, state)``; ``state`` is a tensor or a tuple of tensors."""

    hidden_dim: int
    diagnostic_names: tuple[str, ...] = ()
    """Keys of :meth:`diagnostics`, summarised (last, max) in the run's record."""
    kernel_path: str = "autograd"
    """What :meth:`trial` runs: ``autograd`` (the step, once per env step) or a core's own fused kernel."""
    kernel_reason: str | None = None
    """Why :attr:`kernel_path` is not ``fused`` under ``kernel="auto"`` (e.g. MetODS's MLP write); None otherwise
    (:meth:`use_kernel` sets both)."""

    @abstractmethod
    def initial_state(self, batch: int) -> Any: ...

    def use_kernel(self, name: str, requested: str, not_covered: str | None, fused: Any) -> None:
        """Set :attr:`kernel_path` and :attr:`kernel_reason` for a core whose fused kernel is the module ``fused``
        (with ``available()`` and ``unavailable_reason()``): ``requested`` is the config's ``kernel``,
        ``not_covered`` why that kernel does not compute this config (None: it does). The reason stays None when
        the path is ``fused`` and under ``kernel="autograd"``; ``kernel="fused"`` that cannot run raises, naming
        the agent (``name``)."""
        self.kernel_path, self.kernel_reason = "autograd", None
        if requested == "autograd":
            return
        reason = not_covered
        if reason is None and not fused.available():
            reason = f"the fused extension did not build: {fused.unavailable_reason()}"
        if reason is None:
            self.kernel_path = "fused"
        elif requested == "fused":
            raise ValueError(f"{name} kernel='fused' cannot run this config: {reason}")
        else:
            self.kernel_reason = reason

    def runs_fused(self, x: torch.Tensor) -> bool:
        """Whether :meth:`trial` on inputs ``x`` takes the core's fused kernel: its path is ``fused`` and ``x`` is
        a CPU tensor of float32 or float64 (anything else steps the autograd path)."""
        return self.kernel_path == "fused" and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)

    def diagnostics(self, state: Any) -> dict[str, float]:
        """Scalars worth logging about a state (MetODS: ‖W‖)."""
        return {}

    def step(self, x: torch.Tensor, state: Any, active: torch.Tensor):
        """One environment step, ``h, new_state``; the state is kept where ``active`` is False
        (:func:`~metabench.agents.base.keep_inactive`)."""
        h, new = self(x, state)
        new = _map_state(lambda n, o: keep_inactive(active, n, o), new, state)
        return h, new

    def trial(self, x: torch.Tensor, active: torch.Tensor, state: Any, *, step=None, tbptt: int = 0):
        """The core over a trial: ``h [T, B, H], final_state`` from step features ``x [T, B, F]``, the active
        mask ``[T, B]`` and the state at its start.

        This default calls ``step`` (:meth:`step` if None; the agent passes its own, possibly
        ``torch.compile``-d, step) once per step, detaching the state before step t where ``t % tbptt == 0``
        and t > 0 (``tbptt`` 0: never). A core may compute the same numbers another way (MetODS: a fused
        kernel, :mod:`metabench.agents.metods_fused`)."""
        step = step or self.step
        hs = []
        for t in range(x.shape[0]):
            if tbptt and t % tbptt == 0 and t:
                state = _map_state(lambda s: s.detach(), state)
            h, state = step(x[t], state, active[t])
            hs.append(h)
        return torch.stack(hs), state


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


class RecurrentAgent(OnPolicyAgent):
    """A memory core + shared heads, trained by the shared PPO trainer; subclasses implement :meth:`make_core`."""

    Config = RecurrentConfig
    config: RecurrentConfig

    def __init__(self, family: TaskFamily, config: RecurrentConfig, seed: int):
        super().__init__(family, config, seed)
        torch.manual_seed(seed)
        self.space = family.action_space
        self.core = self.make_core(family, config)
        self.heads = Heads(self.core.hidden_dim, self.space, config.init_log_std)
        if config.orthogonal_init:
            orthogonal_init(self.core, self.heads)
        self.summary_names = ("grad_norm", *self.core.diagnostic_names)
        self.init_trainer(p for m in (self.core, self.heads) for p in m.parameters())
        self._set_step()

    def _set_step(self) -> None:
        # compile applies to the step the autograd path runs; a core with its own kernel never calls it.
        compiled = self.config.compile and self.core.kernel_path == "autograd"
        self._step = torch.compile(self._core_step, dynamic=False) if compiled else self._core_step

    def to(self, device: torch.device | str) -> "RecurrentAgent":
        """On a device other than the CPU the core steps its autograd path (compiled where ``compile`` is on):
        the fused kernels are CPU code. ``kernel="fused"`` there raises; ``auto`` says why in the record."""
        super().to(device)
        if self.device.type != "cpu" and self.core.kernel_path == "fused":
            if self.config.kernel == "fused":
                raise ValueError(f"kernel='fused' runs on the CPU only, not on {self.device}")
            self.core.kernel_path = "autograd"
            self.core.kernel_reason = f"the fused kernel runs on the CPU only (device {self.device})"
            self._set_step()
        return self

    @abstractmethod
    def make_core(self, family: TaskFamily, config: RecurrentConfig) -> MemoryCore: ...

    def stateful(self) -> dict[str, Any]:
        return {"core": self.core, "heads": self.heads, **super().stateful()}

    # Acting --------------------------------------------------------------------------------
    def _core_step(self, x: torch.Tensor, state: Any, active: torch.Tensor):
        return self.core.step(x, state, active)

    def initial_memory(self, batch_size: int) -> Any:
        return self.core.initial_state(batch_size)

    def act(self, inputs: AgentInput, memory: Any) -> tuple[torch.Tensor, Any]:
        # One step through the same trial entry as the replay (T = 1), so that acting and replaying compute
        # the same numbers whichever kernel the core runs.
        inputs = inputs.to(self.device)
        x = self.features(inputs)
        h, memory = self.core.trial(x[None], inputs.active[None], memory, step=self._step)
        return sample_action(self.heads.distribution(h[0]), self.action_generator), memory

    def run_info(self) -> dict[str, str]:
        """How this agent computes, for the run's record: ``memory_kernel``, the path of the core's trial
        (``fused`` or ``autograd``; see :attr:`MemoryCore.kernel_path`)."""
        info = {"memory_kernel": self.core.kernel_path}
        if self.device.type != "cpu" and self.core.kernel_reason:  # set only where the path is autograd
            info["memory_kernel_reason"] = self.core.kernel_reason
        return info

    def features(self, inputs: AgentInput) -> torch.Tensor:
        """The core's input at one step, ``[B, F]``: [obs, previous action, previous reward, episode-start flag]
        (:meth:`AgentInput.features`), the observation standardised if ``obs_norm`` is on."""
        return self.observe(inputs).features(self.space)

    # What the trainer asks -------------------------------------------------------------------
    def step_record(self, inputs: AgentInput) -> torch.Tensor:
        return self.features(inputs)

    def evaluate_actions(self, ro: Rollout, differentiable: bool) -> Evaluated:
        with torch.set_grad_enabled(differentiable):
            logp, ent, values, state = self.replay(ro)
        return Evaluated(logp, ent, values, aux=state)

    def diagnostics(self, aux: Any) -> dict[str, float]:
        return self.core.diagnostics(aux)

    def replay(self, ro: Rollout):
        """Log-probabilities, entropies and values of the recorded actions, with gradients through the trial.

        Only the memory core runs step by step (:meth:`MemoryCore.trial`); the heads run once on all steps'
        outputs (``[T, B, H]``), which costs the same arithmetic and a hundredth of the per-call overhead at
        T = 100."""
        b = ro.features.shape[1]
        state = self.core.initial_state(b)
        hs, state = self.core.trial(ro.features, ro.active, state, step=self._step, tbptt=self.config.tbptt)
        dist, values = self.heads(hs)
        return dist.log_prob(ro.actions), dist.entropy(), values, state


def orthogonal_init(core: nn.Module, heads: Heads) -> None:
    """``orthogonal_init``: the core's ``nn.Linear`` layers with gain √2, the value head with gain 1, biases 0."""
    layers = [(m, 2 ** 0.5) for m in core.modules() if isinstance(m, nn.Linear)] + [(heads.value, 1.0)]
    for layer, gain in layers:
        nn.init.orthogonal_(layer.weight, gain=gain)
        nn.init.zeros_(layer.bias)


def xavier_linear(i: int, o: int, gain: float = 1.0) -> nn.Linear:
    lin = nn.Linear(i, o)
    nn.init.xavier_uniform_(lin.weight, gain=gain)
    nn.init.zeros_(lin.bias)
    return lin


__all__ = ["Heads", "MemoryCore", "RecurrentAgent", "RecurrentConfig", "xavier_linear"]
