"""Resume inside a run: a run killed between two checkpoints, rerun, ends with the uninterrupted run's record.

The kill is simulated in-process: after the checkpoint at update 1 the next update raises a ``BaseException``
(as SIGKILL would, it escapes the run: no record, no curves, the checkpoint stays). The rerun resumes from
update 1 and must give the same record (timings aside), the same curves and the same saved agent.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from metabench import runner
from metabench.profiles import PROFILES
from metabench.records import without_timings
from metabench.suites import SUITES

class Killed(BaseException):
    """Stands for SIGKILL: not an ``Exception``, so the run does not turn it into a failed record."""


def _spec(agent: str, task: str):
    profile = PROFILES.get("smoke")
    runs, _ = runner.plan([agent], [SUITES.get(n) for n in SUITES.names()], profile, 1, [task])
    (spec,) = runs
    return spec


def _curves(path):
    with open(path.with_name(path.stem + ".curves.csv")) as f:
        return list(csv.reader(f))


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _kill_at(monkeypatch, call: int) -> None:
    """The ``call``-th update of the next run raises :class:`Killed` (its checkpoint, if due, not written)."""
    original = runner._Checkpointer.__call__
    count = {"n": 0}

    def patched(self):
        count["n"] += 1
        if count["n"] == call:
            raise Killed()
        original(self)

    monkeypatch.setattr(runner._Checkpointer, "__call__", patched)


@pytest.mark.parametrize("agent,task", [
    pytest.param("metods", "harlow", marks=pytest.mark.slow),  # ~1-3 min: the smoke run twice and a half
    pytest.param("rl2", "maze", marks=pytest.mark.slow),
    ("maml", "maze"), ("pearl", "maze"), ("pearl", "impairment_cheetah")])
def test_killed_run_resumes_to_the_uninterrupted_record(tmp_path, monkeypatch, keep_threads, agent, task):
    spec = _spec(agent, task)
    whole = runner.execute_run(spec, tmp_path / "whole", "test", checkpointing=runner.Checkpointing(every_updates=0))
    assert whole["status"] == "ok", whole["error"]
    assert "resumed" not in whole

    every = runner.Checkpointing(every_updates=1)
    ckpt = every.path(spec, tmp_path / "cut")
    with monkeypatch.context() as m:
        _kill_at(m, 2)  # after the checkpoint of update 1, before that of update 2
        with pytest.raises(Killed):
            runner.execute_run(spec, tmp_path / "cut", "test", checkpointing=every)
    assert ckpt.exists() and not spec.path(tmp_path / "cut").exists()
    resumed = runner.execute_run(spec, tmp_path / "cut", "test", checkpointing=every)
    assert resumed["status"] == "ok", resumed["error"]
    assert len(resumed["resumed"]) == 1 and resumed["resumed"][0] > 0  # resumed once, past its start
    assert not ckpt.exists()  # finished: the record supersedes it
    assert without_timings(resumed) == without_timings(whole)
    assert _curves(spec.path(tmp_path / "cut")) == _curves(spec.path(tmp_path / "whole"))
    a = torch.load(spec.path(tmp_path / "whole").with_suffix(".pt"), weights_only=True)
    b = torch.load(spec.path(tmp_path / "cut").with_suffix(".pt"), weights_only=True)
    assert json.dumps(_flatten(a), sort_keys=True) == json.dumps(_flatten(b), sort_keys=True)


def _flatten(state, prefix=""):
    """Nested state dicts as ``{path: list}`` for an exact comparison."""
    out = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(_flatten(v, f"{prefix}/{i}"))
    elif isinstance(state, torch.Tensor):
        out[prefix] = state.tolist()
    else:
        out[prefix] = repr(state)
    return out


def test_a_checkpoint_counts_in_the_plan_as_the_share_of_its_budget_left(tmp_path, monkeypatch, keep_threads):
    """The progress note beside a checkpoint says how far the run got: the sweep's time estimate counts only
    the share of the budget left, without loading the checkpoint; a note of another config, or without its
    checkpoint, counts for nothing; the note goes with the checkpoint once the record is written."""
    spec = _spec("maml", "maze")
    timed = tmp_path / "timed"  # a finished run of the same agent and task: what the estimate goes by
    assert runner.execute_run(spec, timed, "test", checkpointing=runner.Checkpointing(every_updates=0))["status"] == "ok"
    every = runner.Checkpointing(folder=tmp_path / "ckpt", every_updates=1)
    full, *_ = runner.estimate_seconds([spec], timed, every)
    with monkeypatch.context() as m:
        _kill_at(m, 2)  # after the checkpoint of update 1
        with pytest.raises(Killed):
            runner.execute_run(spec, tmp_path / "cut", "test", checkpointing=every)
    ckpt = every.path(spec, tmp_path / "cut")
    note = runner.progress_path(ckpt)
    assert note.name == "seed0.ckpt.progress" and ckpt.exists() and note.exists()
    steps = json.loads(note.read_text())["env_steps"]
    share = runner.checkpoint_progress(spec, timed, every)
    assert 0 < share < 1 and share == steps / spec.config["profile"]["train_env_steps"]
    assert runner.estimate_seconds([spec], timed, every) == (pytest.approx(full * (1 - share)), 0, 0, 1)
    assert runner.checkpoint_progress(spec, timed, runner.Checkpointing(every_updates=0)) == 0.0

    other = json.loads(note.read_text())
    note.write_text(json.dumps({**other, "config": {"other": 1}}))
    assert runner.checkpoint_progress(spec, timed, every) == 0.0
    note.write_text("not json")
    assert runner.checkpoint_progress(spec, timed, every) == 0.0
    note.write_text(json.dumps(other))
    resumed = runner.execute_run(spec, tmp_path / "cut", "test", checkpointing=every)
    assert resumed["status"] == "ok" and resumed["resumed"] == [steps]
    assert not ckpt.exists() and not note.exists()


def test_a_checkpoint_of_another_config_is_set_aside(tmp_path, keep_threads, capsys):
    spec = _spec("rl2", "maze")
    every = runner.Checkpointing(every_updates=1)
    path = every.path(spec, tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"format": runner.CHECKPOINT_FORMAT, "config": {"other": 1}}, path)
    record = runner.execute_run(spec, tmp_path, "test", checkpointing=every)
    assert record["status"] == "ok" and "resumed" not in record
    assert "of another config; starting afresh" in capsys.readouterr().err
    assert not path.exists()


def test_an_unreadable_checkpoint_is_set_aside(tmp_path, keep_threads, capsys):
    spec = _spec("rl2", "maze")
    every = runner.Checkpointing(every_updates=1)
    path = every.path(spec, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    record = runner.execute_run(spec, tmp_path, "test", checkpointing=every)
    assert record["status"] == "ok" and "resumed" not in record
    assert "unreadable" in capsys.readouterr().err


def test_checkpoint_folder_mirrors_the_records_layout(tmp_path):
    spec = _spec("rl2", "maze")
    c = runner.Checkpointing(folder=tmp_path / "ckpt")
    assert c.path(spec, tmp_path) == tmp_path / "ckpt" / "smoke" / "capacity" / "maze" / "rl2" / "seed0.ckpt"
    assert runner.Checkpointing().path(spec, tmp_path) == spec.path(tmp_path).with_suffix(".ckpt")
    assert not runner.Checkpointing(every_updates=0).enabled


@pytest.mark.slow
def test_metabench_run_killed_mid_run_resumes_from_its_checkpoint(tmp_path):
    """The real thing: ``metabench run`` SIGKILLed once its run has checkpointed, then run again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = _spec("rl2", "maze")
    cmd = [sys.executable, "-m", "metabench.cli", "run", "--agents", "rl2", "--suite", "capacity", "--tasks", "maze",
           "--profile", "smoke", "--seeds", "1", "--workers", "1", "--checkpoint-every", "1"]
    whole = subprocess.run([*cmd, "--results", str(tmp_path / "whole"), "--checkpoint-every", "0"],
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    cut = tmp_path / "cut"
    ckpt = runner.Checkpointing().path(spec, cut)
    first = subprocess.Popen([*cmd, "--results", str(cut)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.time() + 300
    while not ckpt.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert ckpt.exists() and not spec.path(cut).exists(), "the run was not caught between two checkpoints"
    second = subprocess.run([*cmd, "--results", str(cut)], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert f"started  {spec.label}  (from its checkpoint)" in second.stdout
    a, b = (json.loads(spec.path(d).read_text()) for d in (tmp_path / "whole", cut))
    assert b["resumed"] and without_timings(a) == without_timings(b)
    assert _curves(spec.path(cut)) == _curves(spec.path(tmp_path / "whole"))
    assert not ckpt.exists()
