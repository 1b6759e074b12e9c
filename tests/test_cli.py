"""The command line, end to end, and its bad-input cases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from metabench.cli import app
from metabench.records import scan

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("command", ["list", "run", "report", "validate", "check"])
def test_help_on_every_command(command):
    out = cli(command, "--help")
    assert out.exit_code == 0 and "Usage" in out.output


def test_list_names_everything():
    out = cli("list")
    assert out.exit_code == 0
    for word in ("random", "harlow", "efficiency", "smoke", "quick", "paper"):
        assert word in out.output
    # each task's quick budget, with its share of the paper's; the profiles with their own seeds per task
    assert "10,000,000 meta-training env steps per run (100 % of the paper's 10,000,000)" in out.output
    assert "5 seeds (3 on ant_dir, impairment_ant, impairment_cheetah, mw_ml1_reach, mw_ml1_push, mw_ml10)" in out.output


@pytest.mark.parametrize(
    "args, kind, valid",
    [
        (["--agents", "nope"], "agent", "random"),
        (["--agents", "random,nope"], "agent", "random"),
        (["--suite", "nope"], "suite", "efficiency"),
        (["--profile", "huge"], "profile", "smoke"),
        (["--tasks", "nope"], "task", "harlow"),
    ],
)
def test_unknown_names_exit_2_with_choices(args, kind, valid, tmp_path):
    out = cli("run", *args, "--results", str(tmp_path))
    assert out.exit_code == 2
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: unknown {kind}") and valid in lines[0]
    assert not any(tmp_path.iterdir())  # nothing written


def test_console_script_bad_agent_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "metabench.cli", "run", "--agents", "nope"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown agent 'nope'; valid: " + proc.stderr.split("valid: ")[1].strip()
    assert "Traceback" not in proc.stderr + proc.stdout


def test_smoke_run_report_check(tmp_path):
    results, reports = tmp_path / "results", tmp_path / "reports"
    out = cli("run", "--agents", "random", "--suite", "efficiency", "--profile", "smoke",
              "--workers", "1", "--results", str(results))
    assert out.exit_code == 0, out.output
    assert "4 ok, 0 failed" in out.output  # harlow and ant_dir, 2 seeds each
    record = json.loads((results / "smoke/efficiency/harlow/random/seed0.json").read_text())
    assert json.loads((results / "smoke/efficiency/ant_dir/random/seed1.json").read_text())["status"] == "ok"
    assert record["status"] == "ok" and record["profile"] == "smoke"
    out = cli("report", "--results", str(results), "--reports", str(reports))
    assert out.exit_code == 0, out.output
    md = (reports / "efficiency.md").read_text()
    assert "| `random` | 2 |" in md and "episode_return" in md and "### `ant_dir`" in md
    png = (reports / "figures/efficiency-smoke.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli("validate", "--results", str(results)).exit_code == 0
    # Report is a pure function of results: same bytes twice.
    first = {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()}
    assert cli("report", "--results", str(results), "--reports", str(reports)).exit_code == 0
    assert {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()} == first
    # A second identical run does nothing.
    out = cli("run", "--agents", "random", "--suite", "efficiency", "--profile", "smoke",
              "--workers", "1", "--results", str(results))
    assert "0 ok, 0 failed, 4 already done" in out.output


def test_corrupt_record_named_and_skipped(tmp_path):
    results, reports = tmp_path / "results", tmp_path / "reports"
    assert cli("run", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--profile", "smoke",
               "--seeds", "1", "--workers", "1", "--results", str(results)).exit_code == 0
    bad = results / "smoke/efficiency/harlow/random/seed7.json"
    bad.write_text("{not json")
    out = cli("report", "--results", str(results), "--reports", str(reports))
    assert out.exit_code == 0
    assert f"skipped: {bad}: not valid JSON" in out.output
    assert "| `random` | 1 |" in (reports / "efficiency.md").read_text()
    out = cli("validate", "--results", str(results))
    assert out.exit_code == 1 and str(bad) in out.output


def _pool_workers() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines()[1:] if "multiprocessing.spawn" in line}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_kill_9_mid_sweep_then_resume(tmp_path, workers):
    """A sweep killed with SIGKILL leaves only valid records and no orphan workers; the rerun does not redo them."""
    SEEDS = 12  # killed once 3 are written; the rerun finishes the rest (a run is a fresh process with 2 workers)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "metabench.cli", "run", "--agents", "random", "--suite", "efficiency", "--profile", "smoke",
           "--tasks", "harlow", "--seeds", str(SEEDS), "--workers", workers, "--results", str(results)]
    workers_before = _pool_workers()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = results / "smoke/efficiency/harlow/random"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(folder.glob("seed*.json"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _pool_workers() - workers_before:
        time.sleep(0.1)
    assert not _pool_workers() - workers_before, "pool workers outlived the killed sweep"
    found = scan(results)
    assert found.invalid == []
    finished = {p: p.stat().st_mtime_ns for p, _ in found.records}
    assert 3 <= len(finished) < SEEDS, "the sweep should have been killed mid-way"
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(finished)} already done" in proc.stdout
    assert all(p.stat().st_mtime_ns == m for p, m in finished.items())
    assert len(scan(results).records) == SEEDS


def _run_children(parent: int) -> list[int]:
    """The processes of runs a sweep's process started (spawned, not its resource tracker)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    return [int(f[0]) for f in (line.split(None, 2) for line in out.splitlines()[1:])
            if int(f[1]) == parent and "spawn_main" in f[2]]


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_runs_still_starting_die_with_a_killed_sweep(tmp_path):
    """Before: a sweep killed while its runs' processes were still importing torch left them alive for 5-8 s.
    Now they die with it at once."""
    cmd = [sys.executable, "-m", "metabench.cli", "run", "--agents", "random", "--suite", "efficiency", "--profile",
           "smoke", "--tasks", "harlow", "--seeds", "40", "--workers", "2", "--results", str(tmp_path / "r")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    deadline = time.time() + 60
    while time.time() < deadline and len(children) < 2:
        children = _run_children(proc.pid)
        time.sleep(0.005)
    assert len(children) == 2
    time.sleep(0.2)  # they are importing: without the parent-death signal they lived ~1 s more, idle
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 0.5
    while time.time() < deadline and any(_alive(c) for c in children):
        time.sleep(0.05)
    assert not any(_alive(c) for c in children), "runs outlived the killed sweep"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_sweep_and_says_how_to_resume(tmp_path, sig):
    """SIGINT or SIGTERM: no queued run starts, runs in flight stop, one line says what finished, exit 130.
    The sweep is started with SIGINT ignored, as a background job (`make run > log &`) inherits it."""
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "metabench.cli", "run", "--agents", "random", "--suite", "efficiency", "--profile",
           "smoke", "--tasks", "harlow", "--seeds", "40", "--workers", "2", "--results", str(results)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    folder = results / "smoke/efficiency/harlow/random"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(folder.glob("seed*.json"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"interrupted by {sig.name}: ") and "runs finished" in lines[0]
    assert "rerun the same command to resume (metabench run --agents random" in lines[0]
    assert "Traceback" not in out + err
    n = len(scan(results).records)
    assert 2 <= n < 40
    time.sleep(3)
    assert len(scan(results).records) == n, "runs went on after the sweep stopped"
    assert _run_children(proc.pid) == []


def test_a_run_whose_process_dies_is_recorded_failed_and_the_sweep_goes_on(tmp_path):
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "metabench.cli", "run", "--agents", "rl2", "--suite", "capacity", "--profile",
           "smoke", "--seeds", "4", "--workers", "2", "--results", str(results)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline:
        for pid in _run_children(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
            except ProcessLookupError:
                continue
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, out + err
    assert proc.returncode == 1, err
    records = [r for _p, r in scan(results).records]
    assert len(records) == 4
    died = [r for r in records if r["status"] == "failed"]
    assert len(died) == 1 and died[0]["error"] == "WorkerDied: the run's process was killed by SIGKILL"
    assert "1 failed because their process died" in out and "WorkerDied" in out
    assert "Traceback" not in err


@pytest.mark.slow  # ~1 minute: a smoke run of the untrained MetODS on the maze and its report
def test_capacity_smoke_report_has_paper_rows_and_maze_picture(tmp_path):
    results, reports = tmp_path / "results", tmp_path / "reports"
    out = cli("run", "--agents", "random,untrained", "--suite", "capacity", "--profile", "smoke", "--seeds", "1",
              "--workers", "1", "--results", str(results))
    assert out.exit_code == 0, out.output
    record = json.loads((results / "smoke/capacity/maze/untrained/seed0.json").read_text())
    assert record["env_steps"] == 0  # never meta-trained
    for metric in ("first_reward_step", "success", "cumulative_reward", "cumulative_reward_larger"):
        assert metric in record["metrics"]
    assert cli("report", "--results", str(results), "--reports", str(reports)).exit_code == 0
    md = (reports / "capacity.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("| agent"))
    assert head.split(" | ")[2:10] == ["first_reward_step ↓", "paper", "success ↑", "paper", "cumulative_reward ↑",
                                       "paper", "cumulative_reward_larger ↑", "paper"]
    for agent in ("random", "untrained"):  # both beside the paper's Random row (96.8, 5 %, 3.8, 3.7)
        row = next(line for line in md.splitlines() if line.startswith(f"| `{agent}`"))
        cells = row.split(" | ")
        assert cells[3] == "96.80 ± 0.50" and cells[5] == "0.05" and cells[7] == "3.80 ± 8.90"
    assert "figures/maze-samples.png" in md
    assert (reports / "figures/maze-samples.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("make_bad", ["file", "read_only", "seed_dir"])
def test_an_unwritable_results_folder_is_refused_before_any_run(tmp_path, make_bad):
    """Found before training, in one line, exit 2: no run starts, nothing is written."""
    if make_bad == "file":
        results = tmp_path / "results"
        results.write_text("not a folder")
    elif make_bad == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root writes to read-only folders")
        results = tmp_path / "results"
        results.mkdir()
        results.chmod(0o500)
    else:  # a folder where a record goes is a directory: found when the run writes it (recorded failed)
        results = tmp_path / "results"
        (results / "smoke/efficiency/harlow/random/seed0.json").mkdir(parents=True)
        out = cli("run", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--profile", "smoke",
                  "--seeds", "1", "--workers", "1", "--results", str(results))
        assert out.exit_code == 1
        assert out.output.strip().splitlines()[-1].startswith("error: cannot write records under")
        return
    out = cli("run", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--profile", "smoke",
              "--seeds", "1", "--results", str(results))
    assert out.exit_code == 2
    assert out.output.strip().splitlines()[-1].startswith("error: ")
    assert "started" not in out.output


def test_empty_tasks_is_refused():
    out = cli("run", "--agents", "random", "--suite", "efficiency", "--tasks", "", "--profile", "smoke")
    assert out.exit_code == 2 and "--tasks is empty" in out.output


def test_the_log_says_what_is_planned_and_when_each_run_starts(tmp_path):
    args = ("run", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--profile", "smoke",
            "--seeds", "2", "--workers", "1", "--results", str(tmp_path))
    cli(*args[:-4], "--seeds", "1", "--workers", "1", "--results", str(tmp_path))
    out = cli(*args)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == (f"2 runs on profile smoke -> {tmp_path}/smoke/: 1 already done, 1 to do, about 1 min on 1 "
                        "worker from earlier records' wall times")
    assert lines[1] == "started  efficiency/harlow/random/seed1"
    assert lines[2].startswith("[1/1] ok     efficiency/harlow/random/seed1")


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    base = ("run", "--agents", "random", "--suite", "efficiency", "--tasks", "harlow", "--profile", "smoke",
            "--workers", "1", "--results", str(tmp_path))
    assert cli(*base, "--seeds", "1").exit_code == 0
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = cli(*base, "--seeds", "3", "--dry-run")
    assert out.exit_code == 0, out.output
    assert out.output.splitlines() == [
        f"3 runs on profile smoke -> {tmp_path}/smoke/: 1 already done, 2 to do, about 1 min on 1 worker from "
        "earlier records' wall times",
        "  to do: efficiency/harlow/random seeds 1, 2"]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
