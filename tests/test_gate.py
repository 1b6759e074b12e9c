"""The score regression gate: ``metabench check`` against a baseline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabench.cli import app
from metabench.gate import BadBaseline, compare, load_baseline, seed_spreads, summarise, tolerance


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _record(agent="metods", seed=0, score=5.0, std=1.0, episodes=100.0):
    return {"status": "ok", "task": "harlow", "agent": agent, "seed": seed,
            "metrics": {"episode_return": score, "episode_return_std": std, "test_episodes": episodes}}


def test_summary_and_tolerance_by_hand():
    cur = summarise([_record(seed=0, score=4.0), _record(seed=1, score=6.0)])
    e = cur["harlow/metods"]["episode_return"]
    assert e["mean"] == 5.0 and e["seed_std"] == 1.0 and e["seeds"] == 2
    assert e["episode_se"] == pytest.approx((2 * 1.0 / 100) ** 0.5 / 2)  # se of the mean of two seed means
    assert tolerance(e) == pytest.approx(2.0)  # 2 x seed std dominates


def test_compare_flags_only_drops_beyond_tolerance():
    # mean 5; seeds 4 and 6 have a sample std of sqrt(2), the task's spread here: tol 5 x sqrt(2) x 1 = 7.07
    base = {"scores": summarise([_record(seed=0, score=4.0), _record(seed=1, score=6.0)])}
    within = summarise([_record(seed=0, score=-2.0), _record(seed=1, score=-2.0)])
    assert compare(within, base) == ([], [])
    below = summarise([_record(seed=0, score=-2.1), _record(seed=1, score=-2.1)])
    regressions, _ = compare(below, base)
    assert [(f.key, f.metric) for f in regressions] == [("harlow/metods", "episode_return")]
    assert "-2.1 < baseline 5 - tolerance 7.07" in regressions[0].message
    better = summarise([_record(seed=0, score=9.0)])
    assert compare(better, base) == ([], [])
    regressions, notes = compare(summarise([_record(agent="rl2")]), base)
    assert "no successful run now" in regressions[0].message and "not in the baseline" in regressions[1].message
    assert [f.kind for f in regressions] == ["regression", "not in baseline"] and notes == []


def _entry(mean, seed_std, seeds=2):
    return {"mean": mean, "seed_std": seed_std, "episode_se": 0.0, "seeds": seeds, "higher_is_better": True}


def test_the_task_seed_spread_is_the_median_of_the_agents_sample_stds():
    scores = {"ant_dir/a": {"r": _entry(0.0, 1.0)}, "ant_dir/b": {"r": _entry(0.0, 3.0)},
              "ant_dir/scripted": {"r": _entry(0.0, 100.0)},  # one agent of another scale moves the median little
              "ant_dir/one_seed": {"r": _entry(0.0, 0.0, seeds=1)},  # says nothing about the spread
              "maze/a": {"r": _entry(0.0, 0.5, seeds=4)}}
    spreads = seed_spreads(scores)
    assert spreads[("ant_dir", "r")] == pytest.approx(3.0 * 2 ** 0.5)  # population std x sqrt(n / (n - 1))
    assert spreads[("maze", "r")] == pytest.approx(0.5 * (4 / 3) ** 0.5)
    # 5 spreads on the difference of two 2-seed means: 5 x 3 sqrt(2) x sqrt(1/2 + 1/2) = 21.2
    assert tolerance(scores["ant_dir/a"]["r"], spreads[("ant_dir", "r")], 2) == pytest.approx(15 * 2 ** 0.5)
    assert tolerance(scores["ant_dir/a"]["r"]) == pytest.approx(2.0)  # without the spread: 2 x its own std


def test_another_platforms_redraw_passes_and_a_real_fall_still_fails():
    """An agent whose two seeds happened to agree (its own std 0.5) falls by 10 on another CPU: within the task's
    spread (its agents' sample stds 5.7-8.5), so it passes; a fall beyond 5 spreads fails."""
    base = {"scores": {"ant_dir/blind": {"r": _entry(-11.0, 0.5)}, "ant_dir/metods": {"r": _entry(-23.0, 6.0)},
                       "ant_dir/random": {"r": _entry(-39.0, 4.0)}}}
    now = {k: {"r": dict(e["r"])} for k, e in base["scores"].items()}
    now["ant_dir/blind"]["r"]["mean"] = -21.0
    assert compare(now, base) == ([], [])
    now["ant_dir/blind"]["r"]["mean"] = -11.0 - 5 * 6.0 * 2 ** 0.5 - 0.1
    regressions, _ = compare(now, base)
    assert [(f.key, f.metric) for f in regressions] == [("ant_dir/blind", "r")]


def test_lower_is_better_metrics_regress_upwards():
    def rec(seed, first):
        return {"status": "ok", "task": "maze", "agent": "a", "seed": seed,
                "metrics": {"first_reward_step": first, "first_reward_step_std": 0.0, "test_episodes": 100.0}}
    base = {"scores": summarise([rec(0, 20.0), rec(1, 22.0)])}  # mean 21, tol 5 x sqrt(2) = 7.07
    assert compare(summarise([rec(0, 14.0), rec(1, 14.0)]), base)[0] == []
    assert compare(summarise([rec(0, 28.0), rec(1, 28.0)]), base)[0] == []
    regressions, _ = compare(summarise([rec(0, 28.2), rec(1, 28.2)]), base)
    assert "lower is better" in regressions[0].message


def test_bad_baselines_are_named(tmp_path):
    with pytest.raises(BadBaseline, match="no baseline"):
        load_baseline(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(BadBaseline, match="not valid JSON"):
        load_baseline(bad)
    bad.write_text(json.dumps({"schema": 1, "scores": {"harlow/a": {"m": {"mean": 1}}}}))
    with pytest.raises(BadBaseline, match="malformed"):
        load_baseline(bad)


def test_check_cli_update_pass_then_doctored_fail(tmp_path):
    baseline = tmp_path / "smoke.json"
    args = ["check", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--workers", "1",
            "--baseline", str(baseline)]
    out = cli(*args)
    assert out.exit_code == 2 and "no baseline" in out.output
    out = cli(*args, "--update-baseline")
    assert out.exit_code == 0, out.output
    data = json.loads(baseline.read_text())
    assert set(data["scores"]) == {"harlow/random"}
    out = cli(*args)
    assert out.exit_code == 0, out.output
    assert "check passed" in out.output
    # A baseline that expects more than the code now gives, beyond tolerance: the gate names it.
    entry = data["scores"]["harlow/random"]["episode_return"]
    tol = tolerance(entry, seed_spreads(data["scores"]).get(("harlow", "episode_return"), 0.0), entry["seeds"])
    entry["mean"] += tol + 0.5
    baseline.write_text(json.dumps(data))
    out = cli(*args)
    assert out.exit_code == 1
    assert "regression: harlow/random episode_return:" in out.output
    assert "check failed: 1 regressions" in out.output
    # Within tolerance: passes.
    entry["mean"] -= 0.5 + tol / 2
    baseline.write_text(json.dumps(data))
    assert cli(*args).exit_code == 0
    # Updating for another selection adds its pairs and keeps the others untouched.
    data["scores"]["maze/other"] = {"m": {"mean": 1.0, "seed_std": 0.0, "episode_se": 0.0, "higher_is_better": True}}
    baseline.write_text(json.dumps(data))
    out = cli("check", "--agents", "random", "--suite", "capacity", "--workers", "1", "--baseline", str(baseline),
              "--update-baseline")
    assert out.exit_code == 0, out.output
    updated = json.loads(baseline.read_text())["scores"]
    assert set(updated) == {"harlow/random", "maze/random", "maze/other"}
    assert updated["harlow/random"] == data["scores"]["harlow/random"]


def test_check_with_a_doctored_record_fails(tmp_path):
    """--work keeps the smoke records; a record doctored to a worse score is caught on the next check."""
    baseline, work = tmp_path / "smoke.json", tmp_path / "work"
    args = ["check", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--workers", "1",
            "--baseline", str(baseline),
            "--work", str(work)]
    assert cli(*args, "--update-baseline").exit_code == 0
    path = work / "smoke/efficiency/harlow/random/seed0.json"
    record = json.loads(path.read_text())
    record["metrics"]["episode_return"] -= 5.0
    path.write_text(json.dumps(record))
    out = cli(*args)
    assert out.exit_code == 1
    assert "regression: harlow/random episode_return:" in out.output


# Issue 26, item 6: the baseline is validated, and what it lacks fails the gate. Copies in tmp_path only.

COMMITTED = Path(__file__).resolve().parents[1] / "results/baselines/smoke.json"


def test_the_committed_baseline_is_valid():
    assert load_baseline(COMMITTED)["scores"]


@pytest.mark.parametrize("field, value, why", [
    ("mean", "abc", 'mean is "abc", not a number'),
    ("mean", float("nan"), "mean is nan, not a finite number"),
    ("seed_std", float("inf"), "seed_std is inf, not a finite number"),
    ("episode_se", -1.0, "episode_se is -1.0, below 0"),
    ("mean", True, "mean is true, not a number"),
    ("higher_is_better", "false", 'higher_is_better is "false", not true or false'),
    ("higher_is_better", 0, "higher_is_better is 0, not true or false"),
    ("seeds", 0, "seeds is 0, not a positive integer"),
])
def test_a_malformed_entry_is_refused_before_any_run(tmp_path, field, value, why):
    data = json.loads(COMMITTED.read_text())
    data["scores"]["harlow/random"]["episode_return"][field] = value
    baseline = tmp_path / "smoke.json"
    baseline.write_text(json.dumps(data))  # json writes NaN and Infinity, and json reads them back
    with pytest.raises(BadBaseline) as e:
        load_baseline(baseline)
    assert str(e.value) == f"{baseline}: entry harlow/random episode_return is malformed: {why}"
    for extra in ([], ["--update-baseline"]):
        out = cli("check", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--workers", "1",
                  "--baseline", str(baseline), "--work", str(tmp_path / "work"), *extra)
        assert out.exit_code == 2
        assert out.output.strip().splitlines() == [f"error: {e.value}" + (
            "; fix or delete it, then rerun with --update-baseline" if extra else "")]
        assert not (tmp_path / "work").exists()  # refused before any run
    assert baseline.read_text() == json.dumps(data)  # left as it was


@pytest.mark.parametrize("scores, why", [
    ({"harlow": {"m": {"mean": 1.0, "seed_std": 0.0, "episode_se": 0.0, "higher_is_better": True}}},
     "entry 'harlow' is malformed: not named task/agent"),
    ({"harlow/a": {}}, "entry harlow/a is malformed: not a non-empty object of metrics"),
    ({"harlow/a": {"m": {"mean": 1.0}}}, "entry harlow/a m is malformed: missing seed_std, episode_se, higher_is_better"),
    ({"harlow/a": {"m": {"mean": 1.0, "seed_std": 0.0, "episode_se": 0.0, "higher_is_better": "yes"}},
      "maze/a": {"m": None}}, "(and 1 more)"),
])
def test_malformed_scores_are_named(tmp_path, scores, why):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": 1, "scores": scores}))
    with pytest.raises(BadBaseline, match=re.escape(why)):
        load_baseline(bad)


def test_what_the_baseline_lacks_fails_the_comparison():
    base = {"scores": summarise([_record(seed=0, score=4.0), _record(seed=1, score=6.0)])}
    current = summarise([_record(seed=0, score=5.0), _record(agent="rl2")])
    current["harlow/metods"]["choices"] = dict(current["harlow/metods"]["episode_return"])
    findings, notes = compare(current, base)
    assert [(f.kind, f.key, f.metric) for f in findings] == [
        ("not in baseline", "harlow/metods", "choices"), ("not in baseline", "harlow/rl2", "*")]
    assert all("run with --update-baseline to add it" in f.message for f in findings) and notes == []


def test_check_fails_on_a_deleted_metric_or_pair_until_the_baseline_is_updated(tmp_path):
    """Before: a metric or a (task, agent) pair deleted from the baseline passed with exit 0, unchecked."""
    baseline, work = tmp_path / "smoke.json", tmp_path / "work"
    args = ["check", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--workers", "1",
            "--baseline", str(baseline), "--work", str(work)]
    data = json.loads(COMMITTED.read_text())
    data["scores"]["harlow/random"].pop("episode_return")
    baseline.write_text(json.dumps(data))
    out = cli(*args)
    assert out.exit_code == 1, out.output
    assert ("not in baseline: harlow/random episode_return: measured now but not in the baseline "
            "(run with --update-baseline to add it)") in out.output
    assert "check failed: 0 regressions, 1 measured but not in the baseline, 0 failed runs" in out.output
    data["scores"].pop("harlow/random")
    baseline.write_text(json.dumps(data))
    out = cli(*args)
    assert out.exit_code == 1 and "not in baseline: harlow/random: measured now but not in the baseline" in out.output
    # --update-baseline adds the pair (keeping every other entry of the copy), and then the check passes
    assert cli(*args, "--update-baseline").exit_code == 0
    updated = json.loads(baseline.read_text())["scores"]
    assert "episode_return" in updated["harlow/random"] and set(updated) == set(data["scores"]) | {"harlow/random"}
    out = cli(*args)
    assert out.exit_code == 0 and "check passed" in out.output


def test_check_runs_each_smoke_run_on_one_thread(tmp_path, monkeypatch):
    """The gate's scores must not follow the core count: one torch thread per run, whatever --workers."""
    import torch

    monkeypatch.setattr("os.cpu_count", lambda: 4)  # --workers 1 would otherwise give each run 4 threads
    before = torch.get_num_threads()
    work = tmp_path / "work"
    out = cli("check", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--workers", "1",
              "--baseline", str(tmp_path / "smoke.json"), "--update-baseline", "--work", str(work))
    torch.set_num_threads(before)
    assert out.exit_code == 0, out.output
    records = sorted(work.rglob("seed*.json"))
    assert records and all(json.loads(p.read_text())["platform"]["threads"] == 1 for p in records)
