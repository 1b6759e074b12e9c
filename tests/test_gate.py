"""The score regression gate: ``metabench check`` against a baseline."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from metabench.cli import app
from metabench.gate import BadBaseline, compare, load_baseline, summarise, tolerance


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
    base = {"scores": summarise([_record(seed=0, score=4.0), _record(seed=1, score=6.0)])}  # mean 5, tol 2
    within = summarise([_record(seed=0, score=3.1), _record(seed=1, score=3.1)])
    assert compare(within, base) == ([], [])
    below = summarise([_record(seed=0, score=2.9), _record(seed=1, score=2.9)])
    regressions, _ = compare(below, base)
    assert [(f.key, f.metric) for f in regressions] == [("harlow/metods", "episode_return")]
    assert "2.9 < baseline 5 - tolerance 2" in regressions[0].message
    better = summarise([_record(seed=0, score=9.0)])
    assert compare(better, base) == ([], [])
    regressions, notes = compare(summarise([_record(agent="rl2")]), base)
    assert "no successful run now" in regressions[0].message and "not in the baseline" in notes[0]


def test_lower_is_better_metrics_regress_upwards():
    def rec(seed, first):
        return {"status": "ok", "task": "maze", "agent": "a", "seed": seed,
                "metrics": {"first_reward_step": first, "first_reward_step_std": 0.0, "test_episodes": 100.0}}
    base = {"scores": summarise([rec(0, 20.0), rec(1, 22.0)])}  # mean 21, tol 2
    assert compare(summarise([rec(0, 18.0), rec(1, 18.0)]), base)[0] == []
    regressions, _ = compare(summarise([rec(0, 24.0), rec(1, 24.0)]), base)
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
    entry["mean"] += tolerance(entry) + 0.5
    baseline.write_text(json.dumps(data))
    out = cli(*args)
    assert out.exit_code == 1
    assert "regression: harlow/random episode_return:" in out.output
    assert "check failed: 1 regressions" in out.output
    # Within tolerance: passes.
    entry["mean"] -= 0.5 + tolerance(entry) / 2
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
