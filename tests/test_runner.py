"""The runner: planning, resume, failed runs, atomic records."""

from __future__ import annotations

import dataclasses

import json
import os

import pytest
import torch

from metabench.agents import Agent
from metabench.profiles import PROFILES
from metabench.records import SCHEMA, InvalidRecord, load_record, scan, write_record
from metabench.runner import estimate_seconds, is_done, pending, plan, run_sweep, state_path
from metabench.suites import SUITES

SMOKE = PROFILES.get("smoke")
EFFICIENCY = SUITES.get("efficiency")


class Exploding(Agent):
    """Raises inside meta-training."""

    def meta_train(self, family, budget_env_steps, monitor):
        raise ValueError("boom in training")

    def initial_memory(self, batch_size):
        return None

    def act(self, inputs, memory):
        return torch.zeros(inputs.obs.shape[0], dtype=torch.int64), memory


class NaNLoss(Exploding):
    """Reports a NaN loss: the monitor must stop it."""

    def meta_train(self, family, budget_env_steps, monitor):
        monitor.update(100, 1, {"loss": 1.0})
        monitor.update(200, 2, {"loss": float("nan")})
        return 200


def test_plan_expands_agents_tasks_seeds():
    runs, notes = plan(["random"], [EFFICIENCY], SMOKE, seeds=3, tasks=["harlow"])
    assert [(r.task, r.agent, r.seed) for r in runs] == [("harlow", "random", s) for s in range(3)]
    assert notes == []
    assert runs[0].config["profile"]["train_env_steps"] == SMOKE.budget("harlow")
    assert runs[0].config["task"]["line_length"] == 11
    assert runs[0].config["seed"] == 0
    json.dumps(runs[0].config)  # JSON-able


def test_plan_takes_each_tasks_own_seeds_unless_told():
    quick = PROFILES.get("quick")
    runs, _ = plan(["random"], [EFFICIENCY], quick, seeds=None)
    per_task = {t: sorted(r.seed for r in runs if r.task == t) for t in EFFICIENCY.tasks}
    assert per_task == {"harlow": list(range(quick.seeds)), "ant_dir": list(range(quick.seeds_for("ant_dir")))}
    assert quick.seeds_for("ant_dir") == 3 < quick.seeds == 5
    runs, _ = plan(["random"], [EFFICIENCY], quick, seeds=2)
    assert sorted({r.seed for r in runs if r.task == "ant_dir"}) == [0, 1]  # --seeds wins


def test_plan_takes_an_agents_own_seeds_where_fewer():
    quick = PROFILES.get("quick")
    runs, _ = plan(["metods", "metods_s1"], [EFFICIENCY], quick, seeds=None, tasks=["harlow"])
    per_agent = {a: sorted(r.seed for r in runs if r.agent == a) for a in ("metods", "metods_s1")}
    assert per_agent == {"metods": list(range(quick.seeds)), "metods_s1": [0, 1, 2]}
    runs, _ = plan(["metods_s1"], [EFFICIENCY], quick, seeds=5, tasks=["harlow"])
    assert len(runs) == 5  # --seeds wins
    assert PROFILES.get("smoke").seeds_for("harlow", "metods_s1") == PROFILES.get("smoke").seeds


def test_resume_skips_finished_runs(tmp_path):
    runs, _ = plan(["random"], [EFFICIENCY], SMOKE, seeds=2, tasks=["harlow"])
    first = run_sweep(runs, tmp_path, workers=1)
    assert len(first.done) == 2 and first.skipped == 0
    mtimes = {r.path(tmp_path): r.path(tmp_path).stat().st_mtime_ns for r in runs}
    second = run_sweep(runs, tmp_path, workers=1)
    assert second.done == [] and second.skipped == 2
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    # A record with another config (e.g. a changed budget) is not "done".
    record = load_record(runs[0].path(tmp_path))
    record["config"]["profile"]["train_env_steps"] += 1
    write_record(runs[0].path(tmp_path), record)
    assert not is_done(runs[0], tmp_path) and is_done(runs[1], tmp_path)
    assert pending(runs, tmp_path) == [runs[0]]


def test_a_record_from_before_an_agent_option_existed_is_still_done(tmp_path):
    runs, _ = plan(["rl2"], [EFFICIENCY], SMOKE, seeds=1, tasks=["harlow"])
    record = {"schema": SCHEMA, "agent": "rl2", "task": "harlow", "suite": "efficiency", "seed": 0, "profile": "smoke",
              "status": "ok", "error": None, "metrics": {"episode_return": 1.0}, "env_steps": 1,
              "wall_time_s": 1.0, "config": json.loads(json.dumps(runs[0].config)), "code_version": "x",
              "platform": {}}
    del record["config"]["agent"]["lr_anneal"]  # the record predates the option; it ran its default
    write_record(runs[0].path(tmp_path), record)
    assert is_done(runs[0], tmp_path)
    record["config"]["agent"]["lr"] = 0.5  # but another value of an option that existed is not
    write_record(runs[0].path(tmp_path), record)
    assert not is_done(runs[0], tmp_path)


def test_failing_agent_gets_failed_record_and_sweep_goes_on(tmp_path, temp_agent):
    with temp_agent("exploding", Exploding), temp_agent("nan_loss", NaNLoss):
        runs, _ = plan(["exploding", "random", "nan_loss"], [EFFICIENCY], SMOKE, seeds=1, tasks=["harlow"])
        stale = state_path(runs[0].path(tmp_path))  # an earlier run's weights, where the failing rerun writes
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"weights of an earlier run")
        out = run_sweep(runs, tmp_path, workers=1)
        # Failed records are valid records (of agents registered now), and are retried on the next sweep.
        found = scan(tmp_path)
        assert len(found.records) == 3 and found.invalid == []
        failed = [r for r in runs if r.agent != "random"]
        assert pending(runs, tmp_path) == failed
    assert not stale.exists()
    by_agent = {r["agent"]: r for r in out.done}
    assert by_agent["random"]["status"] == "ok"
    assert by_agent["exploding"]["status"] == "failed"
    assert by_agent["exploding"]["error"] == "ValueError: boom in training"
    assert by_agent["nan_loss"]["status"] == "failed"
    assert "non-finite loss" in by_agent["nan_loss"]["error"]


def test_interrupted_write_leaves_previous_record(tmp_path, monkeypatch):
    runs, _ = plan(["random"], [EFFICIENCY], SMOKE, seeds=1, tasks=["harlow"])
    run_sweep(runs, tmp_path, workers=1)
    path = runs[0].path(tmp_path)
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process died between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    record = load_record(path)
    record["metrics"]["episode_return"] = 99.0
    with pytest.raises(KeyboardInterrupt):
        write_record(path, record)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    # A stray half-written temporary file is never read as a record.
    (path.parent / ".seed0.json.abc.tmp").write_text('{"agent": "ran')
    assert len(scan(tmp_path).records) == 1


def test_corrupt_record_is_named_and_rerun(tmp_path):
    runs, _ = plan(["random"], [EFFICIENCY], SMOKE, seeds=1, tasks=["harlow"])
    path = runs[0].path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"agent": "random", "metr')
    with pytest.raises(InvalidRecord, match="not valid JSON"):
        load_record(path)
    assert pending(runs, tmp_path) == runs
    run_sweep(runs, tmp_path, workers=1)
    assert load_record(path)["status"] == "ok"


def test_record_fields(tmp_path):
    runs, _ = plan(["random"], [EFFICIENCY], SMOKE, seeds=1, tasks=["harlow"])
    record = run_sweep(runs, tmp_path, workers=1).done[0]
    for key in ("agent", "task", "suite", "seed", "profile", "status", "error", "metrics", "env_steps",
                "wall_time_s", "config", "code_version"):
        assert key in record
    assert record["config"] == runs[0].config
    for metric in ("episode_return", "fraction_of_optimal", "correct_after_first"):
        assert metric in record["metrics"] and f"{metric}_std" in record["metrics"]
    assert record["metrics"]["test_episodes"] == SMOKE.test_tasks
    curves = runs[0].path(tmp_path).with_name("seed0.curves.csv").read_text().splitlines()
    assert curves[0] == "curve,x,metric,value"
    kinds = {line.split(",")[0] for line in curves[1:]}
    assert {"eval", "step_reward"} <= kinds


def test_process_pool_matches_in_process(tmp_path):
    runs, _ = plan(["random"], [EFFICIENCY], SMOKE, seeds=2, tasks=["harlow"])
    serial = {r["seed"]: r["metrics"] for r in run_sweep(runs, tmp_path / "a", workers=1).done}
    pooled = {r["seed"]: r["metrics"] for r in run_sweep(runs, tmp_path / "b", workers=2).done}
    strip = lambda m: {k: v for k, v in m.items() if k != "train_env_steps_per_s"}  # noqa: E731
    assert {s: strip(m) for s, m in serial.items()} == {s: strip(m) for s, m in pooled.items()}


def test_ablations_run_only_on_their_tasks():
    """MetODS ablations are the paper's Harlow/maze experiments: `--agents all` does not run them on MuJoCo."""
    runs, notes = plan(["metods_s1", "metods"], [EFFICIENCY], SMOKE, seeds=1)
    assert [(r.task, r.agent) for r in runs] == [("harlow", "metods_s1"), ("harlow", "metods"), ("ant_dir", "metods")]
    assert notes == ["metods_s1 runs on harlow, maze only; skipped on ant_dir"]


# A whole smoke run each: MetODS and MAML are minutes on a shared machine, so the fast tier keeps Random (the
# save / load / rescore path); every agent's state_dict round trip is in tests/test_agents.py.
@pytest.mark.parametrize("agent", [pytest.param("metods", marks=pytest.mark.slow),
                                   pytest.param("maml", marks=pytest.mark.slow), "random"])
def test_a_saved_agent_scores_its_record_again(tmp_path, agent, capsys):
    """Each run leaves its trained agent beside the record; loaded, it gives the record's held-out metrics."""
    from metabench.envs import make_family
    from metabench.protocol import evaluate
    from metabench.runner import load_agent

    runs, _ = plan([agent], [EFFICIENCY], SMOKE, seeds=1, tasks=["harlow"])
    record = run_sweep(runs, tmp_path, workers=1).done[0]
    assert record["status"] == "ok", record["error"]
    path = runs[0].path(tmp_path)
    assert state_path(path).exists()
    loaded = load_agent(path)
    ev = evaluate(loaded, make_family("harlow"), 0, SMOKE.test_tasks)
    for metric in ("episode_return", "correct_after_first", "choices"):
        assert ev.metrics[metric] == record["metrics"][metric]
    from metabench.rescore import main as rescore_main  # the same through `python -m metabench.rescore`

    assert rescore_main([str(path), "--metrics", "choices"]) == 0
    recorded = f"{record['metrics']['episode_return']:.2f}"
    row = f"| episode_return | {recorded} | {recorded} | {record['metrics']['choices']:.3f} |"
    assert row in capsys.readouterr().out
    state_path(path).unlink()
    with pytest.raises(ValueError, match="no saved agent"):
        load_agent(path)
    record["config"]["profile"]["train_env_steps"] += 1  # a record of another budget than the code runs
    write_record(path, record)
    with pytest.raises(ValueError, match="another config"):
        load_agent(path)


def test_a_task_family_is_its_module_plus_one_registration(tmp_path):
    """register_task alone puts a task in its suite, gives it its budgets and lets a sweep run it."""
    from metabench.envs import FAMILIES, register_task
    from metabench.envs.harlow import Harlow, HarlowConfig
    from metabench.suites import SUITES

    register_task("harlow_short", lambda: Harlow(HarlowConfig(presentations=2)), "efficiency",
                  {"smoke": 2_000, "quick": 100_000})
    try:
        assert SUITES.get("efficiency").tasks == ("harlow", "ant_dir", "harlow_short")
        assert PROFILES.get("smoke").budget("harlow_short") == 2_000
        assert "harlow_short" not in PROFILES.get("paper").train_env_steps
        runs, _ = plan(["random"], [SUITES.get("efficiency")], PROFILES.get("smoke"), 1, tasks=["harlow_short"])
        assert [(r.task, r.config["profile"]["train_env_steps"]) for r in runs] == [("harlow_short", 2_000)]
        done = run_sweep(runs, tmp_path, workers=1).done
        assert [r["status"] for r in done] == ["ok"]
    finally:
        del FAMILIES._items["harlow_short"]


def test_an_interrupt_inside_a_run_stops_the_sweep(tmp_path, temp_agent):
    """In-process (one worker): Ctrl-C during a run stops the sweep; earlier records stay, the run stopped
    in flight writes none, later runs are not started."""
    from metabench.agents.random_agent import RandomAgent
    from metabench.runner import SweepInterrupted

    class Interrupted(RandomAgent):
        def meta_train(self, family, budget_env_steps, monitor):
            if self.seed == 1:
                raise KeyboardInterrupt
            return 0

    with temp_agent("interrupted", Interrupted):
        runs, _ = plan(["interrupted"], [EFFICIENCY], SMOKE, seeds=3, tasks=["harlow"])
        with pytest.raises(SweepInterrupted) as info:
            run_sweep(runs, tmp_path, workers=1)
    stop = info.value
    assert [r["seed"] for r in stop.result.done] == [0]
    assert stop.stopped == [runs[1].label] and stop.not_started == [runs[2].label]
    assert stop.signal_name == "SIGINT"
    assert [p.name for p in sorted((tmp_path / "smoke/efficiency/harlow/interrupted").glob("*.json"))] == ["seed0.json"]


def test_a_run_whose_record_would_be_invalid_is_recorded_failed(tmp_path, monkeypatch):
    """Before: an ``ok`` record without its task's main metric was written, and with workers > 1 the sweep
    then called its run's process dead. Now the run itself records it ``failed``, saying why."""
    import metabench.runner as runner_mod

    real = runner_mod.evaluate

    def without_main_metric(*args, **kwargs):
        ev = real(*args, **kwargs)
        ev.metrics.pop("episode_return")
        return ev

    monkeypatch.setattr(runner_mod, "evaluate", without_main_metric)
    runs, _ = plan(["random"], [EFFICIENCY], SMOKE, seeds=1, tasks=["harlow"])
    record = run_sweep(runs, tmp_path, workers=1).done[0]
    assert record["status"] == "failed"
    assert record["error"] == ("RuntimeError: the run's record would be invalid: ok record without its task's "
                               "main metric 'episode_return'")
    assert load_record(runs[0].path(tmp_path))["status"] == "failed"


def test_the_time_of_a_sweep_is_estimated_from_earlier_records(tmp_path):
    runs, _ = plan(["random"], [EFFICIENCY], SMOKE, seeds=3, tasks=["harlow"])
    assert run_sweep(runs[:1], tmp_path, workers=1).done[0]["status"] == "ok"
    wall = load_record(runs[0].path(tmp_path))["wall_time_s"]
    seconds, unknown, borrowed, resuming = estimate_seconds(runs[1:], tmp_path)
    assert unknown == borrowed == resuming == 0 and seconds == pytest.approx(2 * wall)
    other, _ = plan(["random"], [EFFICIENCY], SMOKE, seeds=1, tasks=["ant_dir"])
    assert estimate_seconds(other, tmp_path) == (0.0, 1, 0, 0)
    # a run of five times the budget is estimated at five times the record's wall time
    budget = runs[1].config["profile"]["train_env_steps"]
    longer = dataclasses.replace(runs[1], config={**runs[1].config, "profile": {
        **runs[1].config["profile"], "train_env_steps": 5 * budget}})
    assert estimate_seconds([longer], tmp_path) == (pytest.approx(5 * wall), 0, 0, 0)


def test_a_variant_without_records_is_timed_by_its_siblings(tmp_path):
    """maml_fo has no record: it borrows maml's time on the same task; rl2 (another class) lends nothing."""
    runs, _ = plan(["maml", "maml_fo"], [EFFICIENCY], SMOKE, seeds=1, tasks=["harlow"])
    assert run_sweep(runs[:1], tmp_path, workers=1).done[0]["status"] == "ok"
    wall = load_record(runs[0].path(tmp_path))["wall_time_s"]
    assert estimate_seconds(runs[1:], tmp_path) == (pytest.approx(wall), 0, 1, 0)
    rl2, _ = plan(["rl2"], [EFFICIENCY], SMOKE, seeds=1, tasks=["harlow"])
    assert estimate_seconds(rl2, tmp_path) == (0.0, 1, 0, 0)


def test_step_bins_keep_short_trials_whole_and_bin_long_ones():
    """The per-step reward curve: every step of a trial of up to 500 steps; Meta-World's 5,000 in bins of 10,
    the reward averaged over the active tasks of the bin."""
    from metabench.runner import step_bins

    short = step_bins([1.0, 2.0, 3.0], [1.0, 1.0, 0.5])
    assert short == [(0, 1.0, 1.0), (1, 2.0, 1.0), (2, 3.0, 0.5)]
    reward = [float(t % 10) for t in range(5000)]
    active = [1.0] * 4995 + [0.0] * 5
    bins = step_bins(reward, active)
    assert len(bins) == 500 and [b[0] for b in bins[:3]] == [0, 10, 20]
    assert bins[0][1:] == (4.5, 1.0)
    assert bins[-1] == (4990, 2.0, 0.5)  # steps 4990-4994 active: rewards 0..4
