"""A fused C++ forward and backward of the MetODS core over a whole trial (``agents/csrc/metods_trial.cpp``).

The autograd path (:class:`~metabench.agents.metods.MetODSCore` stepped by
:meth:`~metabench.agents.recurrent.MemoryCore.trial`) records every step's
tensors and replays them through Python; this one runs the trial's
recursions and their backward in one C++ call per direction, with the
encoder (v0 = tanh(f(x)), independent of W) run once over all steps in
PyTorch and κ, β prepared by :meth:`MetODSCore.beta` outside, so that their
gradients flow through PyTorch as usual.

**What is saved.** W only every ``checkpoint`` steps (default ⌈√T⌉): the
backward recomputes each segment's forward from its checkpoint, so the
memory kept between forward and backward grows as √T·B·N² rather than
T·B·N² (the inputs and outputs, ``[T, B, N]``, aside). The backward holds
one segment per thread (its W, the write's outer product and the small
vectors of each step) and, per environment, accumulators of the parameter
gradients, summed in environment order at the end: environments are split
over ``at::parallel_for`` (torch's intra-op threads) and the result does
not depend on how many threads ran.

**What it covers** (:func:`covers`): the vanilla, linear and MLP writes
(the MLP is the core's own ``Linear(N, N), tanh, Linear(N, N)``), both
plasticities (a scalar α is expanded to N x N before the call; autograd sums
its gradient back), S up to 8, N up to 128, every σ, free or convex β, any
encoder and ``tbptt``; float32 and float64 on the CPU.

The extension is compiled on first use (:mod:`metabench.agents.cpp_extension`);
:func:`available` says whether that worked and remembers why not.
"""

from __future__ import annotations

import math

import torch

from .cpp_extension import CppExtension

SIGMA_CODES = {"tanh": 0, "relu": 1, "identity": 2}
MAX_S = 8
"""Recursions per step the kernel supports (compiled-in fast paths for S = 1, 2, 4)."""
MAX_N = 128
"""Neurons the kernel supports on every machine (its generic path holds 32 SIMD vectors per row)."""

_EXTENSION = CppExtension("metabench_metods_trial", "metods_trial.cpp")


def available() -> bool:
    """Whether the extension builds and loads here (tried once per process; :func:`unavailable_reason` says why
    not)."""
    return _EXTENSION.available()


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None if it is True or was not tried)."""
    return _EXTENSION.unavailable_reason()


def extension():
    return _EXTENSION.module()


def covers(cfg) -> str | None:
    """None if the fused kernel computes ``cfg``'s core (a :class:`~metabench.agents.metods.MetODSConfig`),
    else a one-line reason why it does not."""
    if cfg.write not in ("vanilla", "linear", "mlp"):
        return f"write={cfg.write!r} is not in the fused kernel (vanilla, linear and mlp are)"
    if cfg.S > MAX_S:
        return f"S={cfg.S} is above the fused kernel's {MAX_S}"
    if cfg.N > MAX_N:
        return f"N={cfg.N} is above the fused kernel's {MAX_N}"
    if cfg.nonlinearity not in SIGMA_CODES:
        return f"nonlinearity={cfg.nonlinearity!r} is not in the fused kernel"
    return None


def default_checkpoint(steps: int) -> int:
    """Steps between saved states: ⌈√T⌉ (memory ~ √T states and a segment of √T), at least 1."""
    return max(1, math.ceil(math.sqrt(steps)))


class MetODSTrial(torch.autograd.Function):
    """``h [T, B, N], W_T [B, N, N] = MetODSTrial.apply(v0, active, W_init, alpha, L, kappa, beta, sigma,
    checkpoint, tbptt, M1, c1, M2, c2)``: the core over a trial from the encoded inputs (see :func:`trial`)."""

    @staticmethod
    def forward(ctx, v0, active, W_init, alpha, L, kappa, beta, sigma: int, checkpoint: int, tbptt: int,
                M1, c1, M2, c2):
        h, W_T, ckpt = extension().forward(v0, active, W_init, alpha, L, kappa, beta, sigma, checkpoint,
                                           M1, c1, M2, c2)
        ctx.save_for_backward(v0, active, ckpt, alpha, L, kappa, beta, M1, c1, M2, c2)
        ctx.meta = (sigma, checkpoint, tbptt)
        return h, W_T

    @staticmethod
    @torch.autograd.function.once_differentiable  # the C++ backward is not itself differentiable
    def backward(ctx, grad_h, grad_W_T):
        v0, active, ckpt, alpha, L, kappa, beta, M1, c1, M2, c2 = ctx.saved_tensors
        sigma, checkpoint, tbptt = ctx.meta
        g_v0, g_W, g_alpha, g_L, g_kappa, g_beta, g_M1, g_c1, g_M2, g_c2 = extension().backward(
            grad_h, grad_W_T, v0, active, ckpt, alpha, L, kappa, beta, sigma, checkpoint, tbptt, M1, c1, M2, c2)
        return g_v0, None, g_W, g_alpha, g_L, g_kappa, g_beta, None, None, None, g_M1, g_c1, g_M2, g_c2


def trial(v0: torch.Tensor, active: torch.Tensor, W_init: torch.Tensor, alpha: torch.Tensor,
          L: torch.Tensor | None, kappa: torch.Tensor, beta: torch.Tensor, nonlinearity: str = "tanh",
          checkpoint: int | None = None, tbptt: int = 0,
          mlp: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The MetODS recursions over a trial: ``h [T, B, N]`` (V[S] of every step) and ``W_T [B, N, N]``.

    ``v0`` ``[T, B, N]``: the encoded step inputs; ``active`` ``[T, B]``: where False, the step's output is
    still computed but W is kept (:func:`~metabench.agents.base.keep_inactive`); ``alpha``: ``[N, N]`` or a
    0-dim scalar; ``L``: ``[N, N]`` (linear write, w = L v) or None (vanilla, w = v, or the MLP write);
    ``mlp``: ``(M1, c1, M2, c2)``, the MLP write w = M2 tanh(M1 v + c1) + c2 (weights ``[N, N]`` as
    ``nn.Linear`` holds them, biases ``[N]``), or None; ``kappa``, ``beta``:
    ``[S+1, S+1]`` as :class:`~metabench.agents.metods.MetODSCore` holds and builds them. ``checkpoint``:
    steps between saved states (default ⌈√T⌉); ``tbptt``: no gradient from the state entering step t back
    into earlier steps where t % tbptt == 0 (as :meth:`~metabench.agents.recurrent.MemoryCore.trial`).
    """
    n = v0.shape[-1]
    if alpha.dim() == 0:
        alpha = alpha.expand(n, n)
    steps = v0.shape[0]
    k = checkpoint or default_checkpoint(steps)
    sigma = SIGMA_CODES[nonlinearity]
    active = active.to(torch.bool)
    W_init = W_init.contiguous()
    M = tuple(mlp) if mlp is not None else (None,) * 4
    tensors = (v0, W_init, alpha, L, kappa, beta, *M)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return MetODSTrial.apply(v0, active, W_init, alpha, L, kappa, beta, sigma, k, tbptt, *M)
    detach = lambda t: None if t is None else t.detach()  # noqa: E731
    h, W_T, _ = extension().forward(v0.detach(), active, W_init.detach(), alpha.detach(), detach(L),
                                    kappa.detach(), beta.detach(), sigma, 0, *map(detach, M))
    return h, W_T


__all__ = ["MAX_N", "MAX_S", "MetODSTrial", "available", "covers", "default_checkpoint", "extension", "trial",
           "unavailable_reason"]
