"""A fused C++ forward and backward of RL²'s GRU over a whole trial (``agents/csrc/gru_trial.cpp``).

The autograd path steps ``torch.nn.GRUCell`` once per env step and replays
every step's graph through Python in the backward (about thirty autograd
nodes a step). Here the input projection ``gi = x W_ih^T + b_ih`` of all
steps is one PyTorch GEMM (its gradient flows through PyTorch as usual) and
the recurrence and its backward are one C++ call each: a GEMM per step for
``h W_hh^T`` forward and ``dgh W_hh`` backward, plain loops for the gates,
and the gradient of ``W_hh`` as one GEMM over all steps at the end. The same
equations as ``GRUCell`` (``b_hh``'s candidate part inside the reset gate), the
same numbers within float rounding (tested, with ``gradcheck`` in float64).

The forward computes the gates with ATen's vectorised sigmoid and tanh and
keeps them for the backward, which then has no transcendental to evaluate:
the states, the gates r, z, n and the candidate's recurrent part, ``[T, B, H]``,
``[T, B, 3H]`` and ``[T, B, H]`` (5·T·B·H numbers; 164 MB at T = 5,000, B = 16,
H = 128, float32).
"""

from __future__ import annotations

import torch

from .cpp_extension import CppExtension

_EXTENSION = CppExtension("metabench_gru_trial", "gru_trial.cpp")


def available() -> bool:
    """Whether the extension builds and loads here (tried once per process)."""
    return _EXTENSION.available()


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None if it is True or was not tried)."""
    return _EXTENSION.unavailable_reason()


class GRUTrial(torch.autograd.Function):
    """``out [T, B, H], h_T [B, H] = GRUTrial.apply(gi, h0, active, w_hh, b_hh, tbptt)`` (see :func:`trial`)."""

    @staticmethod
    def forward(ctx, gi, h0, active, w_hh, b_hh, tbptt: int):
        out, states, rzn, ghn = _EXTENSION.module().forward(gi, h0, active, w_hh, b_hh)
        ctx.save_for_backward(h0, active, states, rzn, ghn, w_hh)
        ctx.tbptt = tbptt
        return out, states[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable  # the C++ backward is not itself differentiable
    def backward(ctx, d_out, d_last):
        h0, active, states, rzn, ghn, w_hh = ctx.saved_tensors
        dgi, dh0, dw_hh, db_hh = _EXTENSION.module().backward(d_out, d_last, h0, active, states, rzn, ghn, w_hh,
                                                              ctx.tbptt)
        return dgi, dh0, None, dw_hh, db_hh, None


def trial(cell: torch.nn.GRUCell, x: torch.Tensor, active: torch.Tensor, h0: torch.Tensor,
          tbptt: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``cell`` over a trial: ``h [T, B, H]`` (its output at every step) and the final state ``[B, H]``.

    ``x`` ``[T, B, F]``: the step features; ``active`` ``[T, B]``: where False, the step's output is still
    computed but the state is kept (:func:`~metabench.agents.base.keep_inactive`); ``tbptt``: no gradient from
    the state entering step t back into earlier steps where t % tbptt == 0 (as
    :meth:`~metabench.agents.recurrent.MemoryCore.trial`)."""
    gi = torch.nn.functional.linear(x, cell.weight_ih, cell.bias_ih)
    active = active.to(torch.bool)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (gi, h0, cell.weight_hh, cell.bias_hh)):
        return GRUTrial.apply(gi, h0.contiguous(), active, cell.weight_hh, cell.bias_hh, tbptt)
    out, states, _, _ = _EXTENSION.module().forward(gi.detach(), h0.detach().contiguous(), active,
                                                 cell.weight_hh.detach(), cell.bias_hh.detach())
    return out, states[-1]


__all__ = ["GRUTrial", "available", "trial", "unavailable_reason"]
