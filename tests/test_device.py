"""`--device`: where the torch agents compute.

The CPU half runs everywhere. The CUDA half (``@cuda``) is skipped unless torch sees a GPU: on such a
machine, ``pytest tests/test_device.py``. It checks that an agent moved to the GPU acts and
replays as its CPU copy does, to float rounding, and that a smoke run on ``--device cuda`` is an ``ok`` record
that says so.
"""

from __future__ import annotations

import copy

import pytest
import torch
from typer.testing import CliRunner

from metabench.agents import AGENTS
from metabench.agents.base import AgentInput
from metabench.cli import app
from metabench.envs import make_family
from metabench.envs.base import task_generator
from metabench.profiles import PROFILES
from metabench.protocol import run_trials
from metabench.runner import check_device, on_cpu, plan, resolve_device, run_sweep
from metabench.suites import SUITES

SMOKE = PROFILES.get("smoke")
HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="torch sees no CUDA GPU here")

# (agent, task): every torch agent class, on a discrete and a continuous family where it runs.
AGENT_TASKS = [("metods", "harlow"), ("metods_mlp", "maze"), ("rl2", "maze"), ("maml", "harlow"),
               ("pearl", "harlow"), ("oracle", "impairment_cheetah"), ("metods", "impairment_cheetah"),
               ("maml", "impairment_cheetah"), ("pearl", "impairment_cheetah")]


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(HAS_CUDA, reason="checks the machine without a GPU")
def test_cuda_without_a_gpu_is_one_line_and_writes_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
        check_device("cuda")
    out = CliRunner().invoke(app, ["run", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow",
                                   "--profile", "smoke", "--device", "cuda", "--results", str(tmp_path)])
    assert out.exit_code == 2
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device:") and "no CUDA GPU" in lines[0]
    assert not any(tmp_path.iterdir())


def test_inputs_stay_themselves_on_their_own_device():
    inputs = AgentInput(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64), torch.zeros(2),
                        torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool))
    assert inputs.to("cpu") is inputs
    state = {"a": torch.ones(2), "opt": {"state": {0: {"step": torch.tensor(3.0)}}, "lr": [1e-3]}}
    assert on_cpu(state)["opt"]["state"][0]["step"].device.type == "cpu" and on_cpu(state)["opt"]["lr"] == [1e-3]


def test_a_record_says_its_device(tmp_path):
    runs, _ = plan(["metods"], [SUITES.get("efficiency")], SMOKE, seeds=1, tasks=["harlow"], device="cpu")
    record = run_sweep(runs, tmp_path, workers=1).done[0]
    assert record["status"] == "ok", record["error"]
    assert record["platform"]["device"] == "cpu"
    assert record["platform"]["memory_kernel"] in ("fused", "autograd")
    assert "memory_kernel_reason" not in record["platform"]


def _build(agent: str, task: str):
    family = make_family(task, "smoke")
    entry = AGENTS.get(agent)
    return entry.build(family, entry.config(family, SMOKE), 0), family


@pytest.mark.parametrize("agent, task", [("pearl", "harlow"), ("maml", "impairment_cheetah")])
def test_moving_to_the_cpu_changes_nothing(agent, task):
    """`to("cpu")` (what every run does by default) changes nothing: the same trials, bit for bit. PEARL moves a
    lone parameter of its own; MAML keeps its acting memory on the device."""
    a, family = _build(agent, task)
    b = copy.deepcopy(a).to("cpu")
    tasks = family.sample_tasks(4, "test", task_generator(0, "test"))
    with torch.no_grad():
        ra, rb = run_trials(a, family, tasks), run_trials(b, family, tasks)
    assert torch.equal(ra.rewards, rb.rewards)


@cuda
@pytest.mark.parametrize("agent, task", AGENT_TASKS)
def test_on_the_gpu_an_agent_acts_and_replays_as_on_the_cpu(agent, task):
    """The same weights and action stream on both devices: the same trials (discrete actions drawn from
    probabilities equal to rounding), and for the on-policy agents the same replayed log-probabilities."""
    from metabench.agents.ppo import OnPolicyAgent

    cpu, family = _build(agent, task)
    gpu = copy.deepcopy(cpu).to("cuda")
    assert all(p.device.type == "cuda" for p in gpu.state_dict().get("core", {}).values()
               if isinstance(p, torch.Tensor))
    tasks = family.sample_tasks(8, "test", task_generator(0, "test"))
    with torch.no_grad():
        rc, rg = run_trials(cpu, family, tasks), run_trials(gpu, family, tasks)
    torch.testing.assert_close(rc.rewards, rg.rewards, rtol=1e-3, atol=1e-3)
    if isinstance(cpu, OnPolicyAgent):
        gen = task_generator(1, "train")
        ro = cpu.collect(family, copy.deepcopy(gen))
        ec = cpu.evaluate_actions(ro, differentiable=False)
        eg = gpu.evaluate_actions(ro.to(torch.device("cuda")), differentiable=False)
        torch.testing.assert_close(ec.log_prob, eg.log_prob.cpu(), rtol=1e-3, atol=1e-3)


@cuda
@pytest.mark.parametrize("agent, task", [("metods", "maze"), ("rl2", "harlow"), ("maml", "harlow"),
                                         ("pearl", "impairment_cheetah")])
def test_a_smoke_run_on_the_gpu(tmp_path, agent, task):
    suite = "capacity" if task == "maze" else "generality" if task.startswith("impairment") else "efficiency"
    runs, _ = plan([agent], [SUITES.get(suite)], SMOKE, seeds=1, tasks=[task], device="cuda")
    record = run_sweep(runs, tmp_path, workers=1).done[0]
    assert record["status"] == "ok", record["error"]
    assert record["platform"]["device"].startswith("cuda:0 (")
    if "memory_kernel" in record["platform"]:
        assert record["platform"]["memory_kernel"] == "autograd"
    from metabench.runner import load_agent

    assert load_agent(runs[0].path(tmp_path)).device.type == "cpu"  # a saved GPU agent loads on the CPU
