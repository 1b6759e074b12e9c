"""Foreign and inconsistent records: ``metabench validate`` names them, ``report`` and ``check`` skip them,
and the runner's resume does not count them as done (issue 26, item 5).

Each case copies one committed record (quick, capacity, maze, random, seed 0) into a small results folder
in tmp_path and alters it; the committed records are only read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabench.cli import app
from metabench.profiles import PROFILES
from metabench.records import (InvalidRecord, check_curves, check_record, curves_path, load_record, record_path,
                               scan)
from metabench.runner import pending, plan, resolve_config
from metabench.suites import SUITES

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "results/quick/capacity/maze/random/seed0.json"


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def output(result) -> str:
    """stdout and stderr together (this CliRunner mixes them)."""
    return result.output


def _template() -> dict:
    return json.loads(TEMPLATE.read_text())


def put(results: Path, rel: str | None = None, curves: bool = True, **changes) -> Path:
    """A copy of the template record under ``results`` (at ``rel``, default: where its fields say), its config
    resolved for today so the report does not call it stale, with its curves CSV beside it."""
    record = _template()
    record.update(changes)
    if (record["agent"], record["task"]) == ("random", "maze") and record["profile"] in PROFILES:
        record["config"] = resolve_config("random", "maze", PROFILES.get(record["profile"]), record["seed"])
    path = results / rel if rel else record_path(results, record["profile"], record["suite"], record["task"],
                                                   record["agent"], record["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    if curves:
        shutil.copy(curves_path(TEMPLATE), curves_path(path))
    return path


def random_row(md: str) -> str:
    return next(line for line in md.splitlines() if line.startswith("| `random` | "))


CASES = {
    # name: (how the bad record is written, a phrase its one line must hold)
    "ghost": (dict(agent="ghost"), "unknown agent 'ghost'"),
    "profile": (dict(profile="huge"), "unknown profile 'huge'"),
    "suite": (dict(suite="nosuite"), "unknown suite 'nosuite'"),
    "wrong_suite": (dict(suite="efficiency"), "task 'maze' is in suite 'capacity', not 'efficiency'"),
    "seed7": (dict(rel="quick/capacity/maze/random/seed7.json"), "seed 0 but its file is seed7.json"),
    "moved": (dict(rel="quick/capacity/maze/rl2/seed1.json", seed=1), "agent 'random' but its path says 'rl2'"),
    "no_main_metric": (dict(seed=1, drop="cumulative_reward"), "without its task's main metric 'cumulative_reward'"),
}


def _write_case(results: Path, name: str) -> Path:
    changes = dict(CASES[name][0])
    drop = changes.pop("drop", None)
    if drop:
        metrics = _template()["metrics"]
        del metrics[drop]
        changes["metrics"] = metrics
    return put(results, **changes)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_foreign_or_inconsistent_record_is_named_by_validate_and_skipped_by_report(tmp_path, name):
    results, reports = tmp_path / "results", tmp_path / "reports"
    put(results)  # one good record: quick/capacity/maze/random/seed0
    bad = _write_case(results, name)
    phrase = CASES[name][1]

    out = cli("validate", "--results", str(results))
    assert out.exit_code == 1
    lines = [line for line in output(out).splitlines() if line.startswith("invalid: ")]
    assert lines == [f"invalid: {bad}: " + lines[0].split(": ", 2)[2]] and phrase in lines[0]
    assert "1 valid records (0 failed runs), 1 invalid" in output(out)

    out = cli("report", "--results", str(results), "--reports", str(reports), "--readme", "none")
    assert out.exit_code == 0, output(out)
    skipped = [line for line in output(out).splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 1 and str(bad) in skipped[0] and phrase in skipped[0]
    # only the good record is reported: one report, one seed, no file of the foreign profile or suite
    assert sorted(p.name for p in reports.iterdir() if p.is_file()) == ["capacity.md", "summary.md"]
    assert not any("huge" in p.name or "nosuite" in p.name or "efficiency" in p.name for p in reports.rglob("*"))
    md = (reports / "capacity.md").read_text()
    assert random_row(md).startswith("| `random` | 1 |")
    assert "ghost" not in md and "rl2" not in md


def test_every_problem_of_a_record_is_named_in_its_one_line(tmp_path):
    results = tmp_path / "results"
    bad = put(results, rel="quick/capacity/maze/random/seed7.json", agent="ghost", profile="huge")
    out = cli("validate", "--results", str(results))
    assert out.exit_code == 1
    (line,) = [line for line in output(out).splitlines() if line.startswith("invalid: ")]
    for phrase in ("unknown agent 'ghost'", "unknown profile 'huge'", "profile 'huge' but its path says 'quick'",
                   "agent 'ghost' but its path says 'random'", "seed 0 but its file is seed7.json"):
        assert phrase in line
    with pytest.raises(InvalidRecord) as e:
        load_record(bad)
    assert str(e.value) == line.removeprefix("invalid: ")
    # the fields alone are fine: strict=False reads it
    assert load_record(bad, strict=False)["agent"] == "ghost"
    assert scan(results, strict=False).invalid == [] and len(scan(results).invalid) == 1


def test_check_record_is_the_one_definition(tmp_path):
    record = _template()
    path = record_path(tmp_path, "quick", "capacity", "maze", "random", 0)
    assert check_record(path, record) == []
    assert check_record(Path("seed0.json"), record) == ["not at <profile>/<suite>/<task>/<agent>/seed<k>.json"]
    too_deep = check_record(path.parent / "old" / "seed0.json", record)
    assert "agent 'random' but its path says 'old'" in too_deep
    failed = {**record, "status": "failed", "error": "boom", "metrics": {}}
    assert check_record(path, failed) == []  # a failed record need not hold the main metric
    only = {**record, "agent": "metods_mlp", "task": "ant_dir", "suite": "efficiency"}
    assert "agent 'metods_mlp' does not run on task 'ant_dir'" in check_record(
        record_path(tmp_path, "quick", "efficiency", "ant_dir", "metods_mlp", 0), only)
    # a folder inside a results folder scans alike
    put(tmp_path / "results")
    assert len(scan(tmp_path / "results" / "quick").records) == 1


def test_a_record_without_its_main_metric_does_not_count_as_a_seed(tmp_path):
    """Before: validate passed it and the table said 2 seeds while the mean was over 1."""
    results, reports = tmp_path / "results", tmp_path / "reports"
    put(results)
    _write_case(results, "no_main_metric")
    assert cli("report", "--results", str(results), "--reports", str(reports), "--readme", "none").exit_code == 0
    assert random_row((reports / "capacity.md").read_text()).startswith("| `random` | 1 |")


def test_a_corrupt_curves_csv_loses_its_curves_and_the_report_is_written(tmp_path):
    """Before: ValueError out of the whole report."""
    results, reports = tmp_path / "results", tmp_path / "reports"
    put(results)
    bad = put(results, seed=1)
    curves_path(bad).write_text("curve,x,metric,value\neval,abc,env_steps,zz\n")
    assert check_curves(bad) == [f"{curves_path(bad)}: line 2: x 'abc' or value 'zz' is not a number"]

    out = cli("validate", "--results", str(results))
    assert out.exit_code == 1 and f"invalid: {curves_path(bad)}: line 2" in output(out)
    assert "2 valid records (0 failed runs), 0 invalid, 1 corrupt curves files" in output(out)

    out = cli("report", "--results", str(results), "--reports", str(reports), "--readme", "none")
    assert out.exit_code == 0, output(out)
    skipped = [line for line in output(out).splitlines() if line.startswith("skipped: ")]
    assert skipped == [f"skipped: {curves_path(bad)}: line 2: x 'abc' or value 'zz' is not a number; "
                       "its curves skipped"]
    assert random_row((reports / "capacity.md").read_text()).startswith("| `random` | 2 |")  # the record stays
    assert (reports / "figures/capacity-quick.png").read_bytes()[:4] == b"\x89PNG"

    for text in ("", "a,b\n1,2\n", "curve,x,metric,value\neval,1,m\n"):
        curves_path(bad).write_text(text)
        assert len(check_curves(bad)) == 1


def test_a_foreign_record_at_a_run_path_is_not_done(tmp_path):
    """Before: a record with an unknown task under a Harlow path counted as done for `run`."""
    smoke = PROFILES.get("smoke")
    runs, _ = plan(["random"], [SUITES.get("efficiency")], smoke, 1, ["harlow"])
    (spec,) = runs
    record = {**_template(), "agent": "random", "task": "nope", "suite": "efficiency", "profile": "smoke",
              "seed": 0, "config": spec.config}
    spec.path(tmp_path).parent.mkdir(parents=True)
    spec.path(tmp_path).write_text(json.dumps(record))
    assert pending(runs, tmp_path) == runs
    with pytest.raises(InvalidRecord, match="unknown task 'nope'"):
        load_record(spec.path(tmp_path))


def test_check_reruns_a_foreign_record_in_its_work_folder(tmp_path):
    """Before: `check` crashed with a traceback (UnknownName) on it."""
    baseline, work = tmp_path / "smoke.json", tmp_path / "work"
    args = ["check", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--workers", "1",
            "--baseline", str(baseline), "--work", str(work)]
    assert cli(*args, "--update-baseline").exit_code == 0
    path = work / "smoke/efficiency/harlow/random/seed0.json"
    record = json.loads(path.read_text())
    record["task"] = "nope"
    path.write_text(json.dumps(record))
    out = cli(*args)
    assert out.exit_code == 0, output(out)
    assert "[1/1] ok     efficiency/harlow/random/seed0" in output(out) and "check passed" in output(out)
    assert json.loads(path.read_text())["task"] == "harlow"


def test_the_committed_records_are_valid():
    found = scan(ROOT / "results")  # as `metabench validate` checks them
    assert found.records and [str(e) for e in found.invalid] == []
    assert [p for path, _ in found.records for p in check_curves(path)] == []
