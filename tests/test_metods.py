"""MetODS (SPEC.md, "MetODS"): the update rule, β's parametrisation, numerical life, ablations, ‖W‖ logging.

The update rule is checked against a slow per-environment reference written
here from SPEC.md's pseudo-code (one environment at a time, every W^(s) built
as a single N x N matrix), in float64, for every write variant, S, plasticity
and both forms of the batched implementation.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from metabench.agents import AGENTS
from metabench.agents.ppo import Rollout
from metabench.agents.base import REWARD_FEATURE, AgentInput, feature_dim
from metabench.agents.metods import MetODSAgent, MetODSConfig, MetODSCore
from metabench.envs import make_family, task_generator
from metabench.envs.harlow import Harlow, HarlowConfig
from metabench.profiles import PROFILES
from conftest import RecordingMonitor as Monitor

IN_DIM = 7


def perturb(core: MetODSCore, seed: int, scale: float = 0.3) -> None:
    """Move every trainable parameter away from its initial value (the test is not at init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in core.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=gen))


# The reference: SPEC.md's pseudo-code, one environment at a time ----------------------------

def reference_params(core: MetODSCore) -> dict[str, torch.Tensor]:
    """The core's parameters as float64 tensors (β through ``core.beta()``)."""
    d = lambda t: t.detach().to(torch.float64).clone()  # noqa: E731
    p = {
        "enc": [(d(m.weight), d(m.bias)) for m in core.encoder.modules() if isinstance(m, torch.nn.Linear)],
        "kappa": d(core.kappa), "beta": d(core.beta()), "alpha": d(core.alpha),
    }
    if core.cfg.write == "linear":
        p["L"] = d(core.L)
    if core.cfg.write == "mlp":
        p["m1_w"], p["m1_b"] = d(core.mlp[0].weight), d(core.mlp[0].bias)
        p["m2_w"], p["m2_b"] = d(core.mlp[2].weight), d(core.mlp[2].bias)
    return p


def reference_step(p, cfg: MetODSConfig, x: torch.Tensor, W: torch.Tensor):
    """One environment step for ONE environment: x ``[in]``, W ``[N, N]`` -> (V[S] ``[N]``, W_t ``[N, N]``).

    v0 = f(x); V = [v0]; Ws = [W_{t-1}]
    for s in 1..S:
        read  = sigma(Ws[s-1] @ V[s-1])
        write = alpha ⊙ outer(V[s-1], m(V[s-1]))      # m: identity | L | MLP
        V.append(sum_{l<s} kappa[s][l] V[l] + kappa[s][s] read)
        Ws.append(sum_{l<s} beta[s][l] Ws[l] + beta[s][s] write)
    """
    sigma = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z}[cfg.nonlinearity]
    kappa, beta, alpha = p["kappa"], p["beta"], p["alpha"]
    n = W.shape[0]
    h = x  # f: linear layers, tanh between them and after the last
    if cfg.reward_coding == "sign":  # x = [obs, a, r, start]: r as two channels, its positive and negative parts
        r = float(x[-2])
        h = torch.cat([x[:-2], torch.tensor([max(r, 0.0), max(-r, 0.0)], dtype=x.dtype), x[-1:]])
    for w, b in p["enc"]:
        h = torch.tanh(w @ h + b)
    V = [h]
    Ws = [W]
    for s in range(1, cfg.S + 1):
        v = V[s - 1]
        read = sigma(Ws[s - 1] @ v)
        if cfg.write == "vanilla":
            m = v
        elif cfg.write == "linear":
            m = p["L"] @ v
        else:
            m = p["m2_w"] @ torch.tanh(p["m1_w"] @ v + p["m1_b"]) + p["m2_b"]
        write = torch.empty(n, n, dtype=W.dtype)
        for i in range(n):
            for j in range(n):
                a = alpha if alpha.dim() == 0 else alpha[i, j]
                write[i, j] = a * v[i] * m[j]
        v_new = kappa[s, s] * read
        W_new = beta[s, s] * write
        for l in range(s):
            v_new = v_new + kappa[s, l] * V[l]
            W_new = W_new + beta[s, l] * Ws[l]
        V.append(v_new)
        Ws.append(W_new)
    return V[cfg.S], Ws[cfg.S]


def run_against_reference(cfg: MetODSConfig, seed: int, dtype: torch.dtype, steps: int = 5, b: int = 3,
                          scale: float = 0.3) -> float:
    """Step a perturbed core and the reference side by side; returns the largest error relative to scale."""
    n = cfg.N
    torch.manual_seed(seed)
    core = MetODSCore(IN_DIM, cfg)
    assert core.symbolic == (cfg.form == "symbolic")
    perturb(core, seed=seed + 1, scale=scale)
    core.to(dtype)
    gen = torch.Generator().manual_seed(seed + 2)
    xs = torch.randn(steps, b, IN_DIM, generator=gen, dtype=torch.float64)
    W = W_init = (0.5 * torch.randn(b, n, n, generator=gen, dtype=torch.float64)).to(dtype)
    W_ref = [W[e].double() for e in range(b)]
    p = reference_params(core)
    worst = 0.0
    with torch.no_grad():
        for t in range(steps):
            v, W = core(xs[t].to(dtype), W)
            assert v.dtype == W.dtype == dtype and v.shape == (b, n) and W.shape == (b, n, n)
            for e in range(b):
                v_ref, W_ref[e] = reference_step(p, cfg, xs[t, e], W_ref[e])
                for got, want in ((v[e], v_ref), (W[e], W_ref[e])):
                    err = float((got.double() - want).abs().max()) / max(1.0, float(want.abs().max()))
                    worst = max(worst, err)
    assert all(torch.isfinite(w).all() for w in W_ref) and torch.isfinite(W).all()
    assert float((W - W_init).abs().max()) > 1e-2  # the update did something
    return worst


@pytest.mark.parametrize("form", ["direct", "symbolic"])
@pytest.mark.parametrize("plasticity", ["elementwise", "scalar"])
@pytest.mark.parametrize("S", [1, 2, 4])
@pytest.mark.parametrize("write", ["vanilla", "linear", "mlp"])
def test_update_matches_per_environment_reference(write, S, plasticity, form):
    cfg = MetODSConfig(N=5, S=S, write=write, plasticity=plasticity, form=form)
    # Errors relative to max(1, largest entry of v or W). float64: the same arithmetic up to rounding
    # (<= 5e-15 seen); float32, the production dtype: within float tolerance (<= 9e-7 seen).
    assert run_against_reference(cfg, 0, torch.float64) < 1e-12
    assert run_against_reference(cfg, 0, torch.float32) < 1e-5


@pytest.mark.parametrize("overrides", [{"convex_beta": False}, {"nonlinearity": "relu"},
                                       {"nonlinearity": "identity", "write": "vanilla"}, {"w0": "zeros"},
                                       {"encoder_hidden": 6}, {"reward_coding": "sign"}])
@pytest.mark.parametrize("form", ["direct", "symbolic"])
def test_update_matches_reference_other_options(overrides, form):
    """Free β, the other σ, a fixed W0, a two-layer encoder and the reward's sign channels follow the same rule."""
    cfg = MetODSConfig(N=4, S=3, form=form, **overrides)
    assert run_against_reference(cfg, 10, torch.float64, scale=0.1) < 1e-12
    # Identity reads let v and W grow step after step, which amplifies float32 rounding (1.4e-5 seen).
    tol32 = 1e-4 if cfg.nonlinearity == "identity" else 1e-5
    assert run_against_reference(cfg, 10, torch.float32, scale=0.1) < tol32


def test_sign_coding_splits_the_reward_column_of_the_features():
    """The sign channels read r_{t-1} from the column where AgentInput.features puts it."""
    family = make_family("harlow")
    b = 3
    inputs = AgentInput(obs=torch.zeros(b, family.obs_dim), prev_action=torch.zeros(b, dtype=torch.int64),
                        prev_reward=torch.tensor([1.0, -1.0, 0.2]), episode_start=torch.ones(b, dtype=torch.bool),
                        task_start=torch.zeros(b, dtype=torch.bool), active=torch.ones(b, dtype=torch.bool))
    x = inputs.features(family.action_space)
    assert x.shape[1] == feature_dim(family)
    assert torch.equal(x[:, REWARD_FEATURE], inputs.prev_reward)


def direct_and_symbolic(write: str, plasticity: str, dtype: torch.dtype, n: int = 40, b: int = 3, steps: int = 4):
    """Outputs and parameter gradients of the two forms, from the same perturbed parameters and inputs."""
    cores = {}
    for form in ("direct", "symbolic"):
        torch.manual_seed(0)
        cores[form] = MetODSCore(IN_DIM, MetODSConfig(N=n, S=4, write=write, plasticity=plasticity, form=form))
    perturb(cores["direct"], seed=5, scale=0.1)
    with torch.no_grad():
        cores["direct"].W0.normal_(0, 0.1, generator=torch.Generator().manual_seed(6))
    cores["symbolic"].load_state_dict(cores["direct"].state_dict())
    gen = torch.Generator().manual_seed(7)
    xs = torch.randn(steps, b, IN_DIM, generator=gen).to(dtype)
    rv = torch.randn(steps, b, n, generator=gen).to(dtype)
    rw = torch.randn(steps, b, n, n, generator=gen).to(dtype)
    outs = {}
    for form, core in cores.items():
        core.to(dtype)
        W = core.initial_state(b)
        loss = 0.0
        vs, Ws = [], []
        for t in range(steps):
            v, W = core(xs[t], W)
            vs.append(v)
            Ws.append(W)
            loss = loss + (v * rv[t]).sum() + (W * rw[t]).sum()
        loss.backward()
        outs[form] = (torch.stack(vs).detach(), torch.stack(Ws).detach(),
                      {k: p.grad.clone() for k, p in core.named_parameters() if p.requires_grad})
    return outs["direct"], outs["symbolic"]


@pytest.mark.parametrize("plasticity", ["elementwise", "scalar"])
@pytest.mark.parametrize("write", ["vanilla", "linear", "mlp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_direct_equals_symbolic_with_gradients(write, plasticity, dtype):
    (vd, Wd, gd), (vs, Ws, gs) = direct_and_symbolic(write, plasticity, dtype)
    # Errors relative to the largest entry. float64: equal up to rounding. float32 (the two forms sum
    # in different orders over N = 40 and 4 recursions): up to ~1.6e-5 seen, so 5e-5.
    tol = 1e-12 if dtype == torch.float64 else 5e-5
    assert rel_err(vs, vd) < tol and rel_err(Ws, Wd) < tol
    assert gd.keys() == gs.keys()
    assert {"W0", "alpha", "kappa", "beta_carry", "beta_mix", "beta_write", "encoder.weight"} <= gd.keys()
    for k in gd:
        assert torch.isfinite(gd[k]).all() and float(gd[k].abs().max()) > 0, k
        assert rel_err(gs[k], gd[k]) < tol, k


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max()) / max(1.0, float(want.abs().max()))


def test_auto_form_threshold():
    assert not MetODSCore(IN_DIM, MetODSConfig(N=31)).symbolic
    assert MetODSCore(IN_DIM, MetODSConfig(N=32)).symbolic


# Convex β ----------------------------------------------------------------------------------

@pytest.mark.parametrize("S", [1, 2, 4])
def test_convex_beta_gain_in_unit_interval(S):
    core = MetODSCore(IN_DIM, MetODSConfig(N=8, S=S))
    gen = torch.Generator().manual_seed(S)
    for trial in range(60):
        # Raw values of a few units; beyond |logit| ~ 17, float32's sigmoid rounds to exactly 0 or 1.
        scale = [0.5, 1.5, 3.0][trial % 3]
        with torch.no_grad():
            core.beta_carry.copy_(scale * torch.randn(S + 1, generator=gen))
            core.beta_mix.copy_(scale * torch.randn(S + 1, S + 1, generator=gen))
            core.beta_write.copy_(scale * torch.randn(S + 1, generator=gen))
        gain = float(core.carry_gain().detach())
        assert 0.0 < gain < 1.0, (trial, gain)
        assert float(core.carry_gain().detach()) <= float(torch.sigmoid(core.beta_carry[S]).detach()) + 1e-7  # under the last gate
        # β itself: row s is sigmoid(d_s) * softmax(m_s[:s]) on 0..s-1, the free write β[s,s] on s.
        beta = core.beta().detach()
        assert beta.shape == (S + 1, S + 1)
        for s in range(1, S + 1):
            carry = torch.sigmoid(core.beta_carry[s]) * torch.softmax(core.beta_mix[s, :s], 0)
            torch.testing.assert_close(beta[s, :s], carry.detach())
            assert float(beta[s, s]) == float(core.beta_write[s].detach())
            assert (beta[s, s + 1:] == 0).all()
            assert 0 < float(beta[s, :s].sum()) < 1
        # The gain is the weight of W_{t-1} in W_t: feed W_{t-1} with zero writes (alpha = 0).
        with torch.no_grad():
            core.alpha.zero_()
            W = torch.randn(1, 8, 8, generator=gen)
            _, W_new = core._direct(torch.randn(1, IN_DIM, generator=gen), W)
            core.alpha.fill_(1.0)
        torch.testing.assert_close(W_new, gain * W, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("S", [1, 2, 4])
def test_beta_at_init(S):
    n = 20
    core = MetODSCore(IN_DIM, MetODSConfig(N=n, S=S))
    # The initial carry-over gain is carry_init = 0.9 up to the small leak of the mixing softmax
    # (logits 4 on the previous W^(s-1), 0 elsewhere): 0.9000 for S=1, 0.9009 for S=2, 0.9042 for S=4.
    gain = float(core.carry_gain().detach())
    assert gain == pytest.approx(0.9, abs=0.01)
    if S == 1:
        assert gain == pytest.approx(0.9, abs=1e-6)
    beta = core.beta().detach()
    for s in range(1, S + 1):
        assert float(beta[s, s]) == pytest.approx(0.2 / n)
        assert int(beta[s, :s].argmax()) == s - 1  # a chain: mostly the previous W^(s-1)
    assert (core.W0 == 0).all()
    assert (core.initial_state(3) == 0).all()
    kappa = core.kappa.detach()
    for s in range(1, S + 1):
        assert kappa[s, 0] == 1 and kappa[s, s] == 1
        assert (kappa[s, 1:s] == 0).all()


def test_free_beta_is_used_without_convexity():
    core = MetODSCore(IN_DIM, MetODSConfig(N=6, S=3, convex_beta=False))
    assert hasattr(core, "beta_free")
    assert core.beta() is core.beta_free
    with torch.no_grad():
        core.beta_free.fill_(0.0)
        core.beta_free[1, 0] = 1.5
        core.beta_free[2, 1] = 1.2
        core.beta_free[3, 2] = 1.1
    # Free β: the gain is not confined to (0, 1).
    assert float(core.carry_gain().detach()) == pytest.approx(1.5 * 1.2 * 1.1)
    # Changing the convex parameters changes nothing.
    W = torch.randn(2, 6, 6)
    x = torch.randn(2, IN_DIM)
    with torch.no_grad():
        v1, W1 = core(x, W)
        core.beta_carry.add_(1.0)
        core.beta_mix.add_(torch.randn(4, 4))
        core.beta_write.add_(1.0)
        v2, W2 = core(x, W)
    assert torch.equal(v1, v2) and torch.equal(W1, W2)
    # Free β at init is the same chain as the convex default.
    free = MetODSCore(IN_DIM, MetODSConfig(N=6, S=1, convex_beta=False))
    assert float(free.carry_gain().detach()) == pytest.approx(0.9)


# Numerical life ----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [64, 20])
def test_fresh_core_stays_alive_for_5000_steps(n):
    """SPEC.md: 5,000 steps of random inputs: no NaN, no decay of W to zero, no blow-up."""
    torch.manual_seed(0)
    in_dim = feature_dim(make_family("harlow"))
    core = MetODSCore(in_dim, MetODSConfig(N=n, S=4, form="direct"))  # direct is faster without autograd
    gen = torch.Generator().manual_seed(1)
    b = 8
    W = core.initial_state(b)
    norms = []
    with torch.no_grad():
        for t in range(5000):
            _, W = core(torch.randn(b, in_dim, generator=gen), W)
            if t % 50 == 49:
                assert torch.isfinite(W).all(), t
                norms.append(W.flatten(1).norm(dim=1))
    norms = torch.stack(norms)  # [checkpoints, B]
    # Observed: ‖W‖ settles within ~100 steps around 5-8 per environment and stays there.
    assert float(norms.min()) > 1e-1, "W decayed towards zero"
    assert float(norms.max()) < 1e2, "W blew up"
    late, early = norms[-20:].mean(), norms[2:22].mean()
    assert 0.5 < float(late / early) < 2.0  # stationary, neither drifting up nor down


# Configuration ------------------------------------------------------------------------------

def test_w0_zeros_is_fixed_and_learned_gets_a_gradient():
    x = torch.randn(3, IN_DIM)
    zeros = MetODSCore(IN_DIM, MetODSConfig(N=6, S=2, w0="zeros"))
    assert not zeros.W0.requires_grad and (zeros.W0 == 0).all()
    v, W = zeros(x, zeros.initial_state(3))
    (v.sum() + W.sum()).backward()
    assert zeros.W0.grad is None
    learned = MetODSCore(IN_DIM, MetODSConfig(N=6, S=2, w0="learned"))
    assert learned.W0.requires_grad and (learned.W0 == 0).all()
    state = learned.initial_state(3)
    v, W = learned(x, state)
    (v.sum() + W.sum()).backward()
    assert learned.W0.grad is not None and float(learned.W0.grad.abs().sum()) > 0
    # The state is a per-environment copy: writing into it leaves W0 alone.
    state = learned.initial_state(2)
    with torch.no_grad():
        state += 1
    assert (learned.W0 == 0).all()


def test_w0_zeros_stays_zero_through_an_update():
    family = Harlow(HarlowConfig(max_steps=15))
    cfg = dataclasses.replace(AGENTS.get("metods").config(family, PROFILES.get("smoke")),
                              batch_tasks=4, ppo_epochs=1, minibatches=1, w0="zeros")
    agent = MetODSAgent(family, cfg, seed=0)
    ro = agent.collect(family, task_generator(0, "train"))
    before = {k: v.clone() for k, v in agent.core.state_dict().items()}
    agent.update(ro)
    after = agent.core.state_dict()
    assert (after["W0"] == 0).all()
    assert not torch.equal(after["kappa"], before["kappa"])  # the rest did train


@pytest.mark.parametrize("field, value", [("write", "quadratic"), ("plasticity", "none"), ("form", "fast"),
                                          ("w0", "random"), ("nonlinearity", "sigmoid"), ("N", 0), ("S", 0),
                                          ("encoder_hidden", -1), ("reward_coding", "onehot")])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field if field not in ("N", "S") else "positive"):
        MetODSConfig(**{field: value})


# Registered ablations -------------------------------------------------------------------------

ABLATIONS = {
    "metods": dict(S=4, write="linear", plasticity="elementwise"),
    "metods_s1": dict(S=1, write="linear", plasticity="elementwise"),
    "metods_s2": dict(S=2, write="linear", plasticity="elementwise"),
    "metods_no_alpha": dict(S=4, write="linear", plasticity="scalar"),
    "metods_vanilla": dict(S=4, write="vanilla", plasticity="elementwise"),
    "metods_mlp": dict(S=4, write="mlp", plasticity="elementwise"),
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_registered_ablations(name):
    family = make_family("harlow")
    entry = AGENTS.get(name)
    assert entry.cls is MetODSAgent
    cfg = entry.config(family, PROFILES.get("quick"))
    assert isinstance(cfg, MetODSConfig)
    assert cfg.N == 20  # SPEC.md: Harlow N = 20
    for k, v in ABLATIONS[name].items():
        assert getattr(cfg, k) == v, k
    assert cfg.convex_beta and cfg.w0 == "learned"
    agent = entry.build(family, dataclasses.replace(cfg, compile=False), seed=0)
    core = agent.core
    assert core.W0.shape == (20, 20)
    assert core.alpha.shape == ((20, 20) if cfg.plasticity == "elementwise" else ())
    assert hasattr(core, "L") == (cfg.write == "linear")
    assert hasattr(core, "mlp") == (cfg.write == "mlp")
    assert core.kappa.shape == (cfg.S + 1, cfg.S + 1)


# ‖W‖ logging and boundedness while training ---------------------------------------------------

def test_update_logs_w_norm_and_grad_norm():
    family = Harlow(HarlowConfig(max_steps=20))
    cfg = dataclasses.replace(AGENTS.get("metods").config(family, PROFILES.get("smoke")),
                              batch_tasks=4, ppo_epochs=2, minibatches=2)
    agent = MetODSAgent(family, cfg, seed=0)
    ro = agent.collect(family, task_generator(0, "train"))
    out = agent.update(ro)
    for k in ("w_norm", "grad_norm", "w_carry_gain", "loss"):
        assert k in out and math.isfinite(out[k]), k
    assert out["w_norm"] > 0
    assert 0 < out["w_carry_gain"] < 1


def _train_smoke(budget: int):
    """A tiny eager MetODS meta-training on Harlow (smoke config, A2C so that it takes seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        family = make_family("harlow")
        cfg = AGENTS.get("metods").config(family, PROFILES.get("smoke"))
        assert not cfg.compile and cfg.N == 20 and cfg.S == 4
        # Smoke's PPO (4 epochs x 4 minibatches) costs ~8 s an update here; A2C on 16 trials gives
        # ten parameter updates in a few seconds.
        cfg = dataclasses.replace(cfg, batch_tasks=16, ppo_epochs=1, minibatches=1)
        agent = MetODSAgent(family, cfg, seed=0)
        monitor = Monitor()
        steps = agent.meta_train(family, budget, monitor)
        return agent, monitor, steps
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    return _train_smoke(16_000)


def test_training_summary_has_w_norm_and_grad_norm(trained):
    agent, monitor, steps = trained
    assert 0 < steps <= 16_000 and monitor.log
    summary = agent.training_summary()
    for k in ("w_norm_max", "w_norm_last", "grad_norm_max", "grad_norm_last", "w_carry_gain_max"):
        assert k in summary and math.isfinite(summary[k]), k
    logged = [s for _, _, s in monitor.log]
    assert summary["w_norm_max"] == max(s["w_norm"] for s in logged)
    assert summary["grad_norm_max"] == max(s["grad_norm"] for s in logged)
    assert summary["w_norm_last"] == logged[-1]["w_norm"]


def test_w_stays_bounded_while_training(trained):
    agent, monitor, _ = trained
    w = [s["w_norm"] for _, _, s in monitor.log]
    gains = [s["w_carry_gain"] for _, _, s in monitor.log]
    assert len(w) >= 8
    assert all(math.isfinite(x) for x in w)
    # Observed here: ‖W‖ (at the end of the trial, mean over trials) 6.6-9.2 over the ten updates.
    # The prototype with free β saw 1e6-1e14 (SPEC.md) and with convex β 7-60 for a whole run, so
    # 100 is a bound a healthy run keeps with a wide margin and a geometric blow-up crosses within
    # a few dozen steps of one trial.
    assert max(w) < 100
    assert min(w) > 0.1  # W is used, not dead
    assert all(0 < g < 1 for g in gains)  # the convex β keeps the carry-over gain below 1
    assert all(torch.isfinite(p).all() for p in agent.params)


# torch.compile ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_compiled_step_matches_eager():
    """``compile=True`` wraps the step with torch.compile: same numbers, same gradients (the autograd kernel: the
    fused one never calls the step)."""
    family = make_family("harlow")
    base = AGENTS.get("metods").config(family, PROFILES.get("quick"))
    assert base.compile  # Harlow's default
    base = dataclasses.replace(base, batch_tasks=4, kernel="autograd")
    eager = MetODSAgent(family, dataclasses.replace(base, compile=False), seed=0)
    compiled = MetODSAgent(family, dataclasses.replace(base, compile=True), seed=1)
    assert compiled._step is not compiled._core_step and eager._step == eager._core_step
    perturb(eager.core, seed=2, scale=0.05)
    compiled.core.load_state_dict(eager.core.state_dict())
    compiled.heads.load_state_dict(eager.heads.state_dict())
    ro = eager.collect(family, task_generator(0, "train"))
    ro = Rollout(ro.features[:10], ro.actions[:10], ro.rewards[:10], ro.active[:10])
    outs = []
    for agent in (eager, compiled):
        logp, ent, values, state = agent.replay(ro)
        loss = logp.sum() + ent.sum() + values.pow(2).sum() + state.pow(2).sum()
        loss.backward()
        grads = {k: p.grad.clone() for k, p in
                 [*agent.core.named_parameters(), *(("h." + k, p) for k, p in agent.heads.named_parameters())]
                 if p.requires_grad}
        outs.append((logp.detach(), ent.detach(), values.detach(), state.detach(), grads))
    for a, b_ in zip(outs[0][:4], outs[1][:4]):
        torch.testing.assert_close(b_, a, rtol=1e-5, atol=1e-5)
    ge, gc = outs[0][4], outs[1][4]
    assert ge.keys() == gc.keys()
    for k in ge:
        torch.testing.assert_close(gc[k], ge[k], rtol=1e-4, atol=1e-5 * max(1.0, float(ge[k].abs().max())),
                                   msg=f"grad of {k}")
