"""The fused MetODS trial kernel (agents/metods_fused.py, agents/csrc/metods_trial.cpp) against autograd.

The kernel's forward and backward are checked by ``torch.autograd.gradcheck``
in float64 for every covered variant (write, plasticity, S, σ), with inactive
steps, a checkpoint interval shorter than the trial (so that the backward
recomputes segments) and tbptt; against the autograd path of
:class:`MetODSCore` at the production size in float32; against the
per-environment reference of tests/test_metods.py; and at the agent level (the
first PPO update of a fused and an autograd agent on the same rollout).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from metabench.agents import AGENTS, metods_fused
from metabench.agents.metods import MetODSAgent, MetODSConfig, MetODSCore
from metabench.agents.rl2 import RL2Agent
from metabench.envs import make_family, task_generator
from metabench.envs.harlow import Harlow, HarlowConfig
from metabench.profiles import PROFILES
from test_metods import IN_DIM, perturb, reference_params, reference_step

pytestmark = pytest.mark.skipif(not metods_fused.available(),
                                reason=f"fused extension unavailable: {metods_fused.unavailable_reason()}")


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max()) / max(1.0, float(want.abs().max()))


def kernel_inputs(n: int, s: int, write: str, plasticity: str, steps: int, b: int, seed: int,
                  dtype=torch.float64, scale: float = 0.1, w_scale: float = 0.2, v_scale: float = 1.0):
    """Encoded inputs, an active mask with some inactive steps, W_init and the coefficients of a perturbed core."""
    torch.manual_seed(seed)
    core = MetODSCore(IN_DIM, MetODSConfig(N=n, S=s, write=write, plasticity=plasticity))
    perturb(core, seed + 1, scale)
    gen = torch.Generator().manual_seed(seed + 2)
    v0 = v_scale * torch.tanh(torch.randn(steps, b, n, generator=gen, dtype=dtype))
    active = torch.rand(steps, b, generator=gen) > 0.25
    active[0, 0] = False  # an inactive step at the start of a trial, too
    W = w_scale * torch.randn(b, n, n, generator=gen, dtype=dtype)
    d = lambda t: t.detach().to(dtype).clone().requires_grad_()  # noqa: E731
    L = d(core.L) if write == "linear" else None
    mlp = tuple(d(t) for t in (core.mlp[0].weight, core.mlp[0].bias, core.mlp[2].weight, core.mlp[2].bias)) \
        if write == "mlp" else None
    return v0.requires_grad_(), active, W.requires_grad_(), d(core.alpha), L, d(core.kappa), d(core.beta()), mlp


# gradcheck in float64 ------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("S", [1, 2, 4])
@pytest.mark.parametrize("plasticity", ["elementwise", "scalar"])
@pytest.mark.parametrize("write", ["vanilla", "linear", "mlp"])
def test_gradcheck(write, plasticity, S, sigma):
    """Every input's gradient (v0, W_init, alpha, L or the MLP's weights and biases, kappa, beta), T = 5 with
    checkpoints every 2 steps.

    relu: its kink is at z = 0, where no random pre-activation falls within gradcheck's eps. relu and identity
    reads are unbounded (W grows doubly exponentially at S = 4 from inputs of order 1), so their inputs are
    smaller."""
    v0, active, W, alpha, L, kappa, beta, mlp = kernel_inputs(5, S, write, plasticity, steps=5, b=3, seed=S,
                                                              v_scale=1.0 if sigma == "tanh" else 0.3)
    extra = (L,) if L is not None else mlp or ()

    def fn(v, w, a, k, bt, *ex):
        l = ex[0] if write == "linear" else None
        m = ex if write == "mlp" else None
        return metods_fused.trial(v, active, w, a, l, k, bt, sigma, checkpoint=2, mlp=m)

    assert torch.autograd.gradcheck(fn, (v0, W, alpha, kappa, beta, *extra))


@pytest.mark.parametrize("tbptt, checkpoint", [(2, 2), (3, 2), (3, 4), (1, 3), (4, 9)])
def test_tbptt_matches_autograd(tbptt, checkpoint, monkeypatch):
    """tbptt's truncated gradient (not the function's gradient, so not gradcheck's) against the autograd step loop
    in float64, with checkpoint boundaries on and off the cut points."""
    monkeypatch.setattr(metods_fused, "default_checkpoint", lambda steps: checkpoint)
    fused, auto = core_pair(MetODSConfig(N=6, S=3, form="symbolic"), seed=11, scale=0.1, dtype=torch.float64)
    x, active, gh, gW = trial_data(9, 3, 6, seed=12, dtype=torch.float64)
    got = trial_outputs(fused, x, active, gh, gW, tbptt=tbptt)
    ref = trial_outputs(auto, x, active, gh, gW, tbptt=tbptt)
    full = trial_outputs(auto, x, active, gh, gW)
    assert rel_err(ref[2]["W0"], full[2]["W0"]) > 1e-3  # the cut changes the gradient
    for g, r in [(got[0], ref[0]), (got[1], ref[1])] + [(got[2][k], ref[2][k]) for k in ref[2]]:
        assert rel_err(g, r) < 1e-12


# Against the autograd path of MetODSCore -----------------------------------------------------

def core_pair(cfg: MetODSConfig, seed: int, scale: float, dtype=torch.float32):
    """A fused and an autograd core with the same perturbed parameters (and a non-zero W0)."""
    cores = {}
    for kernel in ("fused", "autograd"):
        torch.manual_seed(seed)
        cores[kernel] = MetODSCore(IN_DIM, dataclasses.replace(cfg, kernel=kernel))
    perturb(cores["fused"], seed + 1, scale)
    with torch.no_grad():
        cores["fused"].W0.normal_(0, scale, generator=torch.Generator().manual_seed(seed + 2))
    cores["autograd"].load_state_dict(cores["fused"].state_dict())
    for c in cores.values():
        c.to(dtype)
    assert cores["fused"].kernel_path == "fused" and cores["autograd"].kernel_path == "autograd"
    return cores["fused"], cores["autograd"]


def trial_outputs(core: MetODSCore, x, active, grad_h, grad_W, tbptt: int = 0):
    """h, W_T and the gradient of every trainable parameter for the loss <h, grad_h> + <W_T, grad_W>."""
    core.zero_grad(set_to_none=True)
    h, W = core.trial(x, active, core.initial_state(x.shape[1]), tbptt=tbptt)
    ((h * grad_h).sum() + (W * grad_W).sum()).backward()
    grads = {k: p.grad.clone() for k, p in core.named_parameters() if p.requires_grad}
    return h.detach(), W.detach(), grads


def trial_data(steps: int, b: int, n: int, seed: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, b, IN_DIM, generator=gen).to(dtype)
    active = torch.ones(steps, b, dtype=torch.bool)
    for e in range(b):  # trials end at different steps (the rest inactive), one with a gap
        active[steps - int(torch.randint(0, steps // 4 + 1, (1,), generator=gen)):, e] = False
    active[steps // 3: steps // 3 + 3, 0] = False
    grad_h = torch.randn(steps, b, n, generator=gen).to(dtype)
    grad_W = torch.randn(b, n, n, generator=gen).to(dtype) * 0.1
    return x, active, grad_h, grad_W


@pytest.mark.parametrize("form, write", [("symbolic", "linear"), ("direct", "linear"), ("symbolic", "mlp")])
def test_production_size_matches_autograd(form, write):
    """N = 64, S = 4, T = 100, B = 16 in float32: outputs and every parameter's gradient.

    Both float32 paths are compared with the float64 autograd path (the truth here): 100 steps of BPTT
    through a plastic recurrence amplify float32 rounding (to ~2e-4 of the largest gradient entry seen on
    either path), so the fused kernel must be as close to the truth as autograd's float32 is, and close
    to autograd's float32 itself."""
    cfg = MetODSConfig(N=64, S=4, form=form, write=write)
    fused, auto = core_pair(cfg, seed=3, scale=0.05)
    x, active, gh, gW = trial_data(100, 16, 64, seed=4)
    got = trial_outputs(fused, x, active, gh, gW)
    ref = trial_outputs(auto, x, active, gh, gW)
    auto.double()
    truth = trial_outputs(auto, x.double(), active, gh.double(), gW.double())
    write_params = {"L"} if write == "linear" else {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}
    assert set(got[2]) == set(ref[2]) == {"W0", "alpha", "kappa", "beta_carry", "beta_mix", "beta_write",
                                          "encoder.weight", "encoder.bias"} | write_params
    pairs = [("h", got[0], ref[0], truth[0]), ("W", got[1], ref[1], truth[1])]
    pairs += [(k, got[2][k], ref[2][k], truth[2][k]) for k in got[2]]
    for name, g, r, t in pairs:
        t = t.float()
        assert torch.isfinite(g).all() and float(g.abs().max()) > 0, name
        assert rel_err(g, r) < 1e-3, name
        assert rel_err(g, t) <= 2 * rel_err(r, t) + 1e-5, (name, rel_err(g, t), rel_err(r, t))


@pytest.mark.parametrize("n, S, write, plasticity, sigma", [
    (20, 4, "linear", "elementwise", "tanh"),     # Harlow's size: 2 vectors per row
    (40, 2, "vanilla", "scalar", "relu"),         # 3 vectors per row
    (128, 1, "linear", "elementwise", "tanh"),    # 8 vectors per row
    (80, 3, "linear", "elementwise", "tanh"),     # the generic instantiation (S = 3, 5 vectors per row)
    (20, 4, "mlp", "scalar", "tanh"),             # the MLP write at Harlow's size
    (80, 3, "mlp", "elementwise", "relu"),        # the MLP write, generic instantiation
])
def test_compiled_in_shapes_match_autograd(n, S, write, plasticity, sigma):
    """Each compiled-in (S, row width) instantiation and the generic one, float32 and float64."""
    cfg = MetODSConfig(N=n, S=S, write=write, plasticity=plasticity, nonlinearity=sigma, form="symbolic")
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-4)):
        fused, auto = core_pair(cfg, seed=n, scale=0.05, dtype=dtype)
        x, active, gh, gW = trial_data(12, 3, n, seed=n + 1, dtype=dtype)
        got = trial_outputs(fused, x, active, gh, gW, tbptt=5)
        ref = trial_outputs(auto, x, active, gh, gW, tbptt=5)
        for g, r in [(got[0], ref[0]), (got[1], ref[1])] + [(got[2][k], ref[2][k]) for k in ref[2]]:
            assert rel_err(g, r) < tol, (dtype, rel_err(g, r))


# Against the per-environment reference (tests/test_metods.py) --------------------------------------

def fused_against_reference(cfg: MetODSConfig, seed: int, dtype, steps: int = 5, b: int = 3,
                            scale: float = 0.3) -> float:
    """The fused trial of a perturbed core against SPEC.md's per-environment reference, step by step (h of every
    step; W after every step, from trials of 1..steps steps)."""
    n = cfg.N
    torch.manual_seed(seed)
    core = MetODSCore(IN_DIM, dataclasses.replace(cfg, kernel="fused"))
    perturb(core, seed=seed + 1, scale=scale)
    core.to(dtype)
    gen = torch.Generator().manual_seed(seed + 2)
    xs = torch.randn(steps, b, IN_DIM, generator=gen, dtype=torch.float64)
    W_init = (0.5 * torch.randn(b, n, n, generator=gen, dtype=torch.float64)).to(dtype)
    active = torch.ones(steps, b, dtype=torch.bool)
    p = reference_params(core)
    W_ref = [W_init[e].double() for e in range(b)]
    worst = 0.0
    with torch.no_grad():
        h, _ = core.trial(xs.to(dtype), active, W_init)
        for t in range(steps):
            _, W = core.trial(xs[: t + 1].to(dtype), active[: t + 1], W_init)
            for e in range(b):
                v_ref, W_ref[e] = reference_step(p, cfg, xs[t, e], W_ref[e])
                for got, want in ((h[t, e], v_ref), (W[e], W_ref[e])):
                    worst = max(worst, float((got.double() - want).abs().max()) / max(1.0, float(want.abs().max())))
    assert float((W - W_init).abs().max()) > 1e-2
    return worst


@pytest.mark.parametrize("plasticity", ["elementwise", "scalar"])
@pytest.mark.parametrize("S", [1, 2, 4])
@pytest.mark.parametrize("write", ["vanilla", "linear", "mlp"])
def test_fused_matches_per_environment_reference(write, S, plasticity):
    """tests/test_metods.py's reference test, run through the fused trial."""
    cfg = MetODSConfig(N=5, S=S, write=write, plasticity=plasticity)
    assert fused_against_reference(cfg, 0, torch.float64) < 1e-12
    assert fused_against_reference(cfg, 0, torch.float32) < 1e-5


@pytest.mark.parametrize("overrides", [{"convex_beta": False}, {"nonlinearity": "relu"},
                                       {"nonlinearity": "identity", "write": "vanilla"}, {"w0": "zeros"},
                                       {"encoder_hidden": 6}, {"reward_coding": "sign"}])
def test_fused_matches_reference_other_options(overrides):
    cfg = MetODSConfig(N=4, S=3, **overrides)
    assert fused_against_reference(cfg, 10, torch.float64, scale=0.1) < 1e-12
    tol32 = 1e-4 if cfg.nonlinearity == "identity" else 1e-5
    assert fused_against_reference(cfg, 10, torch.float32, scale=0.1) < tol32


# Acting = replaying, determinism ----------------------------------------------------------------

def test_one_step_trials_equal_one_trial():
    """Acting (a trial of one step, state carried) computes bit for bit what the replay of the trial does."""
    fused, _ = core_pair(MetODSConfig(N=20, S=4), seed=1, scale=0.1)
    x, active, _, _ = trial_data(15, 4, 20, seed=2)
    with torch.no_grad():
        h, W = fused.trial(x, active, fused.initial_state(4))
        state, hs = fused.initial_state(4), []
        for t in range(15):
            ht, state = fused.trial(x[t: t + 1], active[t: t + 1], state)
            hs.append(ht[0])
    assert torch.equal(torch.stack(hs), h) and torch.equal(state, W)


@pytest.mark.parametrize("agent_cls, name", [(RL2Agent, "rl2"), (MetODSAgent, "metods")])
def test_autograd_trial_is_the_step_loop(agent_cls, name):
    """MemoryCore.trial's default (RL², MetODS under kernel="autograd") is the replay's former loop, bit for bit:
    the agent's step once per env step, the state detached every tbptt steps."""
    family = Harlow(HarlowConfig(max_steps=12))
    cfg = dataclasses.replace(AGENTS.get(name).config(family, PROFILES.get("smoke")), batch_tasks=4, tbptt=5,
                              kernel="autograd")
    agent = agent_cls(family, cfg, seed=0)
    ro = agent.collect(family, task_generator(0, "train"))
    outs = []
    for way in ("trial", "loop"):
        agent.core.zero_grad(set_to_none=True)
        state = agent.core.initial_state(4)
        if way == "trial":
            hs, state = agent.core.trial(ro.features, ro.active, state, step=agent._step, tbptt=5)
        else:
            hs = []
            for t in range(len(ro)):
                if t % 5 == 0 and t:
                    state = state.detach()
                h, state = agent._core_step(ro.features[t], state, ro.active[t])
                hs.append(h)
            hs = torch.stack(hs)
        (hs.square().sum() + state.sum()).backward()
        grads = [p.grad.clone() for p in agent.core.parameters() if p.grad is not None]
        outs.append([hs.detach(), state.detach(), *grads])
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_gradients_do_not_depend_on_the_thread_count():
    """Parameter gradients are summed per environment, in environment order: the same bits on 1 and 2 threads."""
    fused, _ = core_pair(MetODSConfig(N=24, S=2), seed=5, scale=0.1)
    x, active, gh, gW = trial_data(20, 6, 24, seed=6)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(trial_outputs(fused, x, active, gh, gW))
    torch.set_num_threads(1)
    (h1, W1, g1), (h2, W2, g2) = outs
    assert torch.equal(h1, h2) and torch.equal(W1, W2)
    assert all(torch.equal(g1[k], g2[k]) for k in g1)


# Coverage and fallback ----------------------------------------------------------------------------

def test_uncovered_config_falls_back_under_auto_and_says_why():
    big_s = metods_fused.MAX_S + 1
    core = MetODSCore(IN_DIM, MetODSConfig(N=6, S=big_s, kernel="auto"))
    assert metods_fused.covers(core.cfg) is not None
    assert core.kernel_path == "autograd" and f"S={big_s}" in core.kernel_reason
    family = Harlow(HarlowConfig(max_steps=10))
    uncovered = dataclasses.replace(AGENTS.get("metods").config(family, PROFILES.get("smoke")), S=big_s,
                                    kernel="auto")
    assert MetODSAgent(family, uncovered, seed=0).run_info() == {"memory_kernel": "autograd"}
    for name in ("metods", "metods_mlp", "metods_vanilla", "metods_no_alpha", "metods_s1", "metods_s2"):
        cfg = dataclasses.replace(AGENTS.get(name).config(family, PROFILES.get("smoke")), kernel="auto")
        assert MetODSAgent(family, cfg, seed=0).run_info() == {"memory_kernel": "fused"}, name
    assert AGENTS.get("metods").config(family, PROFILES.get("smoke")).kernel == "auto"  # the default
    assert RL2Agent(family, AGENTS.get("rl2").config(family, PROFILES.get("smoke")),
                    seed=0).run_info() == {"memory_kernel": "fused"}  # RL²'s own fused GRU (test_gru_fused.py)


def test_fused_kernel_where_it_cannot_run_raises():
    big_n = metods_fused.MAX_N + 1
    with pytest.raises(ValueError, match=f"N={big_n}"):
        MetODSCore(IN_DIM, MetODSConfig(N=big_n, S=2, kernel="fused"))
    family = Harlow(HarlowConfig(max_steps=10))
    cfg = dataclasses.replace(AGENTS.get("metods").config(family, PROFILES.get("smoke")), S=metods_fused.MAX_S + 1,
                              kernel="fused")
    with pytest.raises(ValueError, match="kernel='fused'"):
        MetODSAgent(family, cfg, seed=0)


def test_unbuildable_extension_falls_back(monkeypatch):
    monkeypatch.setattr(metods_fused, "available", lambda: False)
    monkeypatch.setattr(metods_fused, "unavailable_reason", lambda: "no compiler")
    core = MetODSCore(IN_DIM, MetODSConfig(N=6, S=2, kernel="auto"))
    assert core.kernel_path == "autograd" and "no compiler" in core.kernel_reason
    with pytest.raises(ValueError, match="no compiler"):
        MetODSCore(IN_DIM, MetODSConfig(N=6, S=2, kernel="fused"))


def test_kernel_validation_and_autograd_choice():
    with pytest.raises(ValueError, match="kernel"):
        MetODSConfig(kernel="cuda")
    core = MetODSCore(IN_DIM, MetODSConfig(N=6, S=2, kernel="autograd"))
    assert core.kernel_path == "autograd" and core.kernel_reason is None
    covered = MetODSConfig(N=6, S=2, write="vanilla", plasticity="scalar", nonlinearity="relu", convex_beta=False)
    assert metods_fused.covers(covered) is None
    assert metods_fused.covers(MetODSConfig(N=6, S=metods_fused.MAX_S + 1)) is not None
    assert metods_fused.covers(MetODSConfig(N=metods_fused.MAX_N + 1, S=2)) is not None


# Agent level ---------------------------------------------------------------------------------------

def test_first_update_agrees_with_autograd():
    """A fused and an autograd MetODS agent, same seed, same rollout: the first update's loss and gradient norm
    agree (one full-trial update, so both are computed from the same parameters)."""
    family = Harlow(HarlowConfig(max_steps=20))
    base = dataclasses.replace(AGENTS.get("metods").config(family, PROFILES.get("smoke")), batch_tasks=8,
                               ppo_epochs=1, minibatches=1, compile=False)
    agents = {k: MetODSAgent(family, dataclasses.replace(base, kernel=k), seed=0) for k in ("fused", "autograd")}
    assert agents["fused"].run_info() == {"memory_kernel": "fused"}
    assert agents["autograd"].run_info() == {"memory_kernel": "autograd"}
    ro = agents["autograd"].collect(family, task_generator(0, "train"))
    # Acting through the fused kernel gives the same action distributions as autograd's on the same inputs.
    with torch.no_grad():
        h_f, _ = agents["fused"].core.trial(ro.features, ro.active, agents["fused"].core.initial_state(8))
        h_a, _ = agents["autograd"].core.trial(ro.features, ro.active, agents["autograd"].core.initial_state(8))
    assert rel_err(h_f, h_a) < 1e-6
    outs = {k: a.update(ro) for k, a in agents.items()}
    for key in ("loss", "policy_loss", "value_loss", "entropy", "grad_norm", "w_norm", "w_carry_gain"):
        f, a = outs["fused"][key], outs["autograd"][key]
        # Relative, with a floor: A2C's policy loss is the mean of standardised advantages, ~0 up to rounding.
        assert math.isfinite(f) and abs(f - a) <= 1e-5 * max(abs(a), 0.1), (key, f, a)


def test_ppo_first_epoch_ratio_is_one():
    """The no-gradient pass (old log-probabilities) and the differentiable replay run the same fused kernel: the
    first epoch's ratio is exactly 1."""
    family = Harlow(HarlowConfig(max_steps=20))
    cfg = dataclasses.replace(AGENTS.get("metods").config(family, PROFILES.get("smoke")), batch_tasks=6)
    agent = MetODSAgent(family, cfg, seed=0)
    ro = agent.collect(family, task_generator(0, "train"))
    old = agent.evaluate_actions(ro, differentiable=False)
    new = agent.evaluate_actions(ro, differentiable=True)
    assert torch.equal(old.log_prob, new.log_prob.detach()) and torch.equal(old.values, new.values.detach())


def test_fused_agent_trains_on_the_maze_family_shape():
    """The maze's MetODS (N = 64, compile on) under kernel="auto" runs the fused kernel; compile does not apply."""
    family = make_family("maze")
    cfg = dataclasses.replace(AGENTS.get("metods").config(family, PROFILES.get("quick")), batch_tasks=4,
                              ppo_epochs=1, minibatches=1, kernel="auto")
    assert cfg.compile and cfg.N == 64
    agent = MetODSAgent(family, cfg, seed=0)
    assert agent.core.kernel_path == "fused" and agent._step == agent._core_step  # nothing compiled
    out = agent.update(agent.collect(family, task_generator(0, "train")))
    assert MetODSAgent(family, dataclasses.replace(cfg, kernel="autograd"), seed=0)._step != agent._core_step
    assert all(math.isfinite(out[k]) for k in ("loss", "grad_norm", "w_norm"))
