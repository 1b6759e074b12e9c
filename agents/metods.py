"""MetODS: Meta-Optimized Dynamical Synapses (Chalvidal et al., NeurIPS 2022; the project spec, "MetODS").

A network that rewrites its own synaptic weights W (N x N per environment) at
every step. Per step, from the step features x = [obs, a_{t-1}, r_{t-1}, episode start]::

    v0 = tanh(f(x));  V = [v0];  Ws = [W_{t-1}]
    for s in 1..S:
        read  = sigma(Ws[s-1] @ V[s-1])
        write = alpha ⊙ (V[s-1] ⊗ m(V[s-1]))        # m: identity | L | MLP  (write variant)
        V.append(sum_{l<s} kappa[s,l] V[l] + kappa[s,s] read)
        Ws.append(sum_{l<s} beta[s,l] Ws[l] + beta[s,s] write)
    policy, value = g(V[S]);  W_t = Ws[S]

θ = {f, g, α, κ, β, W0, L or the MLP} is meta-learned through the whole trial
by the shared trainer (:mod:`metabench.agents.ppo`); W is the
per-trial memory, reset to W0 at task start.

**Convex β** (default, ours; the project spec, "What a prototype of ours measured"):
β[s, :s] = sigmoid(d_s) · softmax(m_s), so the carry-over gain of W_{t-1}
into W^(S) stays in (0, 1) by construction and W cannot grow geometrically
over a trial; the write coefficient β[s, s] is free. With free β, training
pushed the gain above 1 and W blew up.

**Two forms of the same update.** ``direct`` builds every W^(s) (fast for
small N). ``symbolic`` keeps W^(s) = c_s W_{t-1} + Σ_r a_{s,r} α⊙(u_r w_rᵀ)
and reads through the identity (α⊙(u wᵀ)) v = u ⊙ (α (w ⊙ v)), building
only W_t: far less memory and time at N = 64. ``auto`` picks symbolic from
N >= 32. Both give the same v and W (tested).

**Two kernels for a trial.** The replay of a trial (and each acting step,
as a trial of one step) goes through :meth:`MetODSCore.trial`: either the
fused C++ forward and backward of the whole trial
(:mod:`metabench.agents.metods_fused`, the symbolic form in one call, W
checkpointed every ⌈√T⌉ steps), or the autograd path, which steps
:meth:`MetODSCore.forward` (either form, ``compile`` as set) once per step.
Same numbers within float rounding (tested); ``kernel`` picks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from metabench.envs.base import TaskFamily

from . import metods_fused
from .recurrent import MemoryCore, RecurrentAgent, RecurrentConfig, xavier_linear
from .base import REWARD_FEATURE, feature_dim


@dataclass(frozen=True)
class MetODSConfig(RecurrentConfig):
    N: int = 64
    """Neurons: W is N x N per environment (the task family's default: Harlow 20, else 64)."""
    S: int = 4
    """Recursive read/write steps per environment step."""
    write: Literal["vanilla", "linear", "mlp"] = "linear"
    """Write rule: α⊙(v⊗v), α⊙(v⊗Lv) with learned L (the paper's best), or α⊙(v⊗MLP(v))."""
    plasticity: Literal["elementwise", "scalar"] = "elementwise"
    """α as a learned N x N mask, or one learned scalar (the paper's "no α" ablation)."""
    w0: Literal["learned", "zeros"] = "learned"
    """W at task start: a learned matrix (initialised at 0), or fixed zeros."""
    encoder_hidden: int = 0
    """Width of a hidden tanh layer in the encoder f (0, the default everywhere: f is one linear layer, then
    tanh). The project spec leaves f's depth open; a 64-unit layer did not change how many S = 4 seeds solve
    Harlow (FINDINGS.md), so it is not the default."""
    reward_coding: Literal["scalar", "sign"] = "scalar"
    """How f sees the previous reward: the feature as it is (the default everywhere), or split into two
    channels max(r, 0) and max(-r, 0), so that a loss and a win move different inputs of f rather than one
    input both ways. The sign channels did not change how many S = 4 seeds solve Harlow (FINDINGS.md), so the
    scalar feature stays the default."""
    nonlinearity: Literal["tanh", "relu", "identity"] = "tanh"
    """σ applied to reads."""
    convex_beta: bool = True
    """Parametrise β[s, :s] as sigmoid·softmax so W's carry-over gain stays in (0, 1)."""
    carry_init: float = 0.9
    """Initial carry-over gain of W_{t-1} into W_t, approximately (carry^(1/S) per recursion; the
    softmax over earlier W^(s) puts a little weight off the chain: 0.904 at S = 4)."""
    write_init: float = 0.2
    """Initial write coefficient β[s, s] is write_init / N."""
    form: Literal["auto", "direct", "symbolic"] = "auto"
    """How the update is computed (same numbers): direct below N = 32, symbolic from it, under auto."""

    def __post_init__(self):
        super().__post_init__()
        if self.N < 1 or self.S < 1 or self.encoder_hidden < 0:
            raise ValueError("N and S must be positive, encoder_hidden >= 0")
        for name, allowed in (("write", ("vanilla", "linear", "mlp")), ("plasticity", ("elementwise", "scalar")),
                              ("reward_coding", ("scalar", "sign")), ("w0", ("learned", "zeros")),
                              ("nonlinearity", ("tanh", "relu", "identity")),
                              ("form", ("auto", "direct", "symbolic"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"MetODS {name} must be one of {allowed}, got {getattr(self, name)!r}")


def _tanh_mlp(i: int, h: int, o: int) -> nn.Sequential:
    """Linear ``i -> h``, tanh, linear ``h -> o`` (Xavier-initialised): the MLP write and the two-layer encoder."""
    return nn.Sequential(xavier_linear(i, h), nn.Tanh(), xavier_linear(h, o))


_SIGMA = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda x: x}


class MetODSCore(MemoryCore):
    """The MetODS memory: state W ``[B, N, N]``, output V[S] ``[B, N]``."""

    diagnostic_names = ("w_norm", "w_carry_gain")

    def __init__(self, in_dim: int, cfg: MetODSConfig):
        super().__init__()
        n, s = cfg.N, cfg.S
        self.cfg = cfg
        self.hidden_dim = n
        self.symbolic = cfg.form == "symbolic" or (cfg.form == "auto" and n >= 32)
        self.sigma = _SIGMA[cfg.nonlinearity]
        h = cfg.encoder_hidden
        in_dim += cfg.reward_coding == "sign"
        self.encoder = _tanh_mlp(in_dim, h, n) if h else xavier_linear(in_dim, n)
        # κ: rows s = 1..S, columns l = 0..s (lower triangle used); κ[s,0] = κ[s,s] = 1.
        kappa = torch.zeros(s + 1, s + 1)
        for i in range(1, s + 1):
            kappa[i, 0] = kappa[i, i] = 1.0
        self.kappa = nn.Parameter(kappa)
        # β: carry logits d_s, mixing logits m_s (favour the previous W^(s-1): a chain), write β[s,s].
        carry = cfg.carry_init ** (1.0 / s)
        mix = torch.zeros(s + 1, s + 1)
        for i in range(1, s + 1):
            mix[i, i - 1] = 4.0
        self.beta_mix = nn.Parameter(mix)
        self.beta_carry = nn.Parameter(torch.full((s + 1,), math.log(carry / (1 - carry))))
        self.beta_write = nn.Parameter(torch.full((s + 1,), cfg.write_init / n))
        if not cfg.convex_beta:  # free β, initialised to the same chain
            free = torch.zeros(s + 1, s + 1)
            for i in range(1, s + 1):
                free[i, i - 1] = carry
                free[i, i] = cfg.write_init / n
            self.beta_free = nn.Parameter(free)
        self.alpha = nn.Parameter(torch.ones(n, n) if cfg.plasticity == "elementwise" else torch.ones(()))
        if cfg.write == "linear":
            self.L = nn.Parameter(torch.eye(n))
        elif cfg.write == "mlp":
            self.mlp = _tanh_mlp(n, n, n)
        self.W0 = nn.Parameter(torch.zeros(n, n), requires_grad=cfg.w0 == "learned")
        self.use_kernel("MetODS", cfg.kernel, metods_fused.covers(cfg), metods_fused)

    # Coefficients --------------------------------------------------------------------------
    def beta(self) -> torch.Tensor:
        """β as an ``[S+1, S+1]`` matrix (row s uses columns 0..s)."""
        s = self.cfg.S
        if not self.cfg.convex_beta:
            return self.beta_free
        zeros = self.beta_write.new_zeros
        rows = [zeros(s + 1)]
        for i in range(1, s + 1):
            carry = torch.sigmoid(self.beta_carry[i]) * torch.softmax(self.beta_mix[i, :i], 0)
            rows.append(torch.cat([carry, self.beta_write[i : i + 1], zeros(s - i)]))
        return torch.stack(rows)

    def carry_gain(self) -> torch.Tensor:
        """c_S: the weight of W_{t-1} in W_t."""
        beta = self.beta()
        c = [beta.new_ones(())]
        for i in range(1, self.cfg.S + 1):
            c.append(sum(beta[i, l] * c[l] for l in range(i)))
        return c[-1]

    def write_vector(self, v: torch.Tensor) -> torch.Tensor:
        if self.cfg.write == "linear":
            return v @ self.L.T
        if self.cfg.write == "mlp":
            return self.mlp(v)
        return v

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.W0.expand(batch, -1, -1).clone() if self.W0.requires_grad else self.W0.expand(batch, -1, -1)

    def diagnostics(self, state: torch.Tensor) -> dict[str, float]:
        return {"w_norm": float(state.detach().flatten(1).norm(dim=1).mean()),
                "w_carry_gain": float(self.carry_gain().detach())}

    # The update ----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """v0 = tanh(f(x)) from the step features [obs, a_{t-1}, r_{t-1}, episode start]."""
        if self.cfg.reward_coding == "sign":
            i = REWARD_FEATURE
            r = x[:, i : i + 1]
            x = torch.cat([x[:, :i], r.clamp(min=0), (-r).clamp(min=0), x[:, i + 1 :]], 1)
        return torch.tanh(self.encoder(x))

    def trial(self, x: torch.Tensor, active: torch.Tensor, state: torch.Tensor, *, step=None, tbptt: int = 0):
        """``h [T, B, N], W_T``: the fused kernel when :attr:`kernel_path` is ``fused`` (on CPU tensors of
        float32 or float64), else the step loop of :meth:`MemoryCore.trial`.

        Fused: the encoder runs once over all steps (v0 does not depend on W), κ and β(θ) are prepared here,
        and the C++ call does the S recursions of every step and their backward."""
        if not self.runs_fused(x):
            return super().trial(x, active, state, step=step, tbptt=tbptt)
        t, b, f = x.shape
        v0 = self.encode(x.reshape(t * b, f)).view(t, b, -1)
        L = self.L if self.cfg.write == "linear" else None
        mlp = None
        if self.cfg.write == "mlp":
            m1, m2 = self.mlp[0], self.mlp[2]
            mlp = (m1.weight, m1.bias, m2.weight, m2.bias)
        return metods_fused.trial(v0, active, state, self.alpha, L, self.kappa, self.beta(), self.cfg.nonlinearity,
                                  tbptt=tbptt, mlp=mlp)

    def forward(self, x: torch.Tensor, W: torch.Tensor):
        if self.symbolic:
            return self._symbolic(x, W)
        return self._direct(x, W)

    def _plastic(self, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """α ⊙ (u ⊗ w) for a batch: ``[B, N, N]``."""
        return self.alpha * (u.unsqueeze(2) * w.unsqueeze(1))

    def _direct(self, x: torch.Tensor, W: torch.Tensor):
        kappa, beta, s_max = self.kappa, self.beta(), self.cfg.S
        V = [self.encode(x)]
        Ws = [W]
        for s in range(1, s_max + 1):
            v = V[-1]
            read = self.sigma(torch.bmm(Ws[-1], v.unsqueeze(2)).squeeze(2))
            write = self._plastic(v, self.write_vector(v))
            V.append(sum(kappa[s, l] * V[l] for l in range(s)) + kappa[s, s] * read)
            Ws.append(sum(beta[s, l] * Ws[l] for l in range(s)) + beta[s, s] * write)
        return V[-1], Ws[-1]

    def _symbolic(self, x: torch.Tensor, W: torch.Tensor):
        kappa, beta, s_max = self.kappa, self.beta(), self.cfg.S
        scalar_alpha = self.alpha.dim() == 0
        V = [self.encode(x)]
        c = [torch.ones((), dtype=x.dtype, device=x.device)]  # W^(s) = c[s] W + Σ_r a[s][r] α⊙(us[r] ws[r]ᵀ)
        a: list[list[torch.Tensor]] = [[]]
        us: list[torch.Tensor] = []
        ws: list[torch.Tensor] = []
        for s in range(1, s_max + 1):
            v = V[-1]
            wv = c[-1] * torch.bmm(W, v.unsqueeze(2)).squeeze(2)
            for coef, u, w in zip(a[-1], us, ws):
                wv_r = (w * v).sum(1, keepdim=True) * self.alpha if scalar_alpha else (w * v) @ self.alpha.T
                wv = wv + coef * u * wv_r
            read = self.sigma(wv)
            us.append(v)
            ws.append(self.write_vector(v))
            V.append(sum(kappa[s, l] * V[l] for l in range(s)) + kappa[s, s] * read)
            c.append(sum(beta[s, l] * c[l] for l in range(s)))
            # a[l][r]: weight in W^(l) of the write made at recursion r+1 (exists for r < l).
            a.append([sum(beta[s, l] * a[l][r] for l in range(r + 1, s)) for r in range(s - 1)] + [beta[s, s]])
        U = torch.stack(us, 2) * torch.stack(a[-1]).view(1, 1, -1)  # [B, N, S]
        Wr = torch.stack(ws, 1)  # [B, S, N]
        W_new = c[-1] * W + self.alpha * torch.bmm(U, Wr)
        return V[-1], W_new


class MetODSAgent(RecurrentAgent):
    Config = MetODSConfig
    config: MetODSConfig
    defaults_key = "metods"

    def make_core(self, family: TaskFamily, config: MetODSConfig) -> MetODSCore:
        return MetODSCore(feature_dim(family), config)


class UntrainedMetODS(MetODSAgent):
    """MetODS at its initial weights, never meta-trained: a reference row (the project spec, "Maze").

    The paper's Random row on the maze looks like such a network rather than
    uniform random actions; reporting both lets a reader see which one it matches.
    """

    def meta_train(self, family: TaskFamily, budget_env_steps: int, monitor) -> int:
        return 0
