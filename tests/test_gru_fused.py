"""The fused GRU trial kernel (agents/gru_fused.py, agents/csrc/gru_trial.cpp) against the autograd reference:
the GRUCell stepped by MemoryCore.trial."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metabench.agents import AGENTS, gru_fused
from metabench.agents.rl2 import GRUCore, RL2Agent
from metabench.envs import make_family, task_generator
from metabench.profiles import PROFILES

pytestmark = pytest.mark.skipif(not gru_fused.available(),
                                reason=f"fused extension unavailable: {gru_fused.unavailable_reason()}")

F, H = 5, 4


def _cores(dtype=torch.float64, hidden=H):
    """The same GRU on both paths."""
    torch.manual_seed(0)
    fused, ref = GRUCore(F, hidden, "fused").to(dtype), GRUCore(F, hidden, "autograd").to(dtype)
    ref.load_state_dict(fused.state_dict())
    assert fused.kernel_path == "fused" and ref.kernel_path == "autograd"
    return fused, ref


def _inputs(T=9, B=3, dtype=torch.float64, inactive=0.3, hidden=H, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, F, generator=g, dtype=dtype)
    h0 = torch.randn(B, hidden, generator=g, dtype=dtype)
    active = torch.rand(T, B, generator=g) >= inactive
    return x, h0, active


@pytest.mark.parametrize("tbptt", [0, 1, 3])
@pytest.mark.parametrize("inactive", [0.0, 0.4])
def test_forward_and_backward_equal_the_stepped_cell(tbptt, inactive):
    """Outputs, final state and every gradient (inputs, initial state, the four parameters) agree with the
    autograd path to float64 rounding, with inactive steps (state kept, output still computed) and tbptt."""
    fused, ref = _cores()
    x, h0, active = _inputs(inactive=inactive)
    g = torch.Generator().manual_seed(2)
    w_out, w_last = torch.randn(9, 3, H, generator=g, dtype=torch.float64), torch.randn(3, H, generator=g,
                                                                                       dtype=torch.float64)
    grads = []
    for core in (fused, ref):
        xs, h = x.clone().requires_grad_(), h0.clone().requires_grad_()
        out, last = core.trial(xs, active, h, tbptt=tbptt)
        loss = (out * w_out).sum() + (last * w_last).sum()
        grads.append((out, last, *torch.autograd.grad(loss, [xs, h, *core.parameters()])))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), (a - b).abs().max()


def test_gradcheck_float64():
    """Finite differences of the fused function itself (no tbptt: the truncated gradient is not a derivative)."""
    _, _, active = _inputs(T=5, B=2)
    g = torch.Generator().manual_seed(3)

    def make(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    gi, h0, w_hh, b_hh = make(5, 2, 3 * H), make(2, H), make(3 * H, H), make(3 * H)
    assert torch.autograd.gradcheck(lambda *a: gru_fused.GRUTrial.apply(a[0], a[1], active, a[2], a[3], 0),
                                    (gi, h0, w_hh, b_hh))


def test_float32_and_a_no_grad_trial_agree():
    fused, ref = _cores(torch.float32, hidden=128)
    x, h0, active = _inputs(T=50, B=16, dtype=torch.float32, hidden=128)
    with torch.no_grad():
        (a, la), (b, lb) = fused.trial(x, active, h0), ref.trial(x, active, h0)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(la, lb, atol=1e-5)


def test_rl2_trains_on_the_fused_kernel_by_default_and_says_so():
    family = make_family("maze")
    cfg = AGENTS.get("rl2").config(family, PROFILES.get("smoke"))
    assert cfg.kernel == "auto"
    agents = {k: RL2Agent(family, dataclasses.replace(cfg, kernel=k, batch_tasks=8), seed=0)
              for k in ("auto", "autograd")}
    assert agents["auto"].run_info() == {"memory_kernel": "fused"}
    assert agents["autograd"].run_info() == {"memory_kernel": "autograd"}
    ro = agents["autograd"].collect(family, task_generator(0, "train"))
    outs = [agent.evaluate_actions(ro, differentiable=False) for agent in agents.values()]
    assert torch.allclose(outs[0].log_prob, outs[1].log_prob, atol=1e-5)
    assert torch.allclose(outs[0].values, outs[1].values, atol=1e-5)


def test_unbuildable_extension_falls_back_or_raises(monkeypatch):
    monkeypatch.setattr(gru_fused, "available", lambda: False)
    monkeypatch.setattr(gru_fused, "unavailable_reason", lambda: "no compiler")
    core = GRUCore(F, H, "auto")
    assert core.kernel_path == "autograd" and "no compiler" in core.kernel_reason
    with pytest.raises(ValueError, match="RL² kernel='fused' cannot run this config: .*no compiler"):
        GRUCore(F, H, "fused")
