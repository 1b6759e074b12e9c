"""Claims on runs (metabench/claims.py) and the sweep around them: two sweeps on one results folder never
train the same run; a claim whose owner is gone is taken over; files get the umask's mode."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from metabench.claims import Claims, Owner, lock_path, read_owner, stale_reason
from metabench.profiles import PROFILES
from metabench.records import load_record, write_atomic
from metabench.runner import execute_run, plan, run_sweep
from metabench.suites import SUITES


def _runs(seeds: int):
    runs, _ = plan(["random"], [SUITES.get("efficiency")], PROFILES.get("smoke"), seeds, ["harlow"])
    return runs


def _write_lock(record, owner: Owner) -> None:
    path = lock_path(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": owner.host, "pid": owner.pid, "start": owner.start, "since": owner.since}))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_claim_is_exclusive_and_released(tmp_path):
    record = tmp_path / "a" / "seed0.json"
    mine, other = Claims(), Claims()
    try:
        assert mine.claim(record) == (None, None)
        assert read_owner(lock_path(record)).pid == os.getpid()
        owner, note = other.claim(record)  # the same pid, alive: held
        assert owner is not None and owner.pid == os.getpid() and note is None
        mine.release(record)
        assert not lock_path(record).exists()
        assert other.claim(record) == (None, None)
    finally:
        mine.close()
        other.close()
    assert not lock_path(record).exists(), "close releases what is held"


@pytest.mark.parametrize("how", ["dead_pid", "reused_pid", "other_host_silent", "unparseable_old"])
def test_a_stale_claim_is_taken_over_with_a_note(tmp_path, how):
    record = tmp_path / "seed0.json"
    me = Owner.me()
    if how == "dead_pid":
        _write_lock(record, Owner(me.host, _dead_pid(), None, time.time()))
    elif how == "reused_pid":  # our pid, but another process's start time: the owner is gone
        _write_lock(record, Owner(me.host, os.getpid(), "1", time.time()))
    elif how == "other_host_silent":
        _write_lock(record, Owner("elsewhere-" + socket.gethostname(), 1, None, time.time()))
        old = time.time() - 3600
        os.utime(lock_path(record), (old, old))
    else:
        lock_path(record).write_text("{not json")
        old = time.time() - 60
        os.utime(lock_path(record), (old, old))
    claims = Claims()
    try:
        owner, note = claims.claim(record)
        assert owner is None and note is not None and "took over the claim on seed0.lock" in note
        assert read_owner(lock_path(record)).pid == os.getpid()
    finally:
        claims.close()


def test_a_fresh_claim_of_another_host_is_respected(tmp_path):
    record = tmp_path / "seed0.json"
    _write_lock(record, Owner("elsewhere-" + socket.gethostname(), 1, None, time.time()))
    assert stale_reason(lock_path(record), read_owner(lock_path(record))) is None
    claims = Claims()
    try:
        owner, _ = claims.claim(record)
        assert owner is not None and owner.host.startswith("elsewhere-")
    finally:
        claims.close()


def test_the_owner_refreshes_its_claims(tmp_path):
    record = tmp_path / "seed0.json"
    claims = Claims(heartbeat_s=0.1)
    try:
        claims.claim(record)
        old = time.time() - 1000
        os.utime(lock_path(record), (old, old))
        time.sleep(0.5)
        assert time.time() - lock_path(record).stat().st_mtime < 5
    finally:
        claims.close()


def test_a_sweep_waits_for_a_run_another_sweep_holds(tmp_path):
    """Before: a second sweep trained every run the first was training (no claim). Now it leaves a claimed
    run to its owner, says so, and counts it once the owner has written its record."""
    runs = _runs(2)
    held = runs[0]
    _write_lock(held.path(tmp_path), Owner.me())  # this process, alive: "another sweep"

    def other_sweep_finishes() -> None:
        execute_run(held, tmp_path, "test")
        lock_path(held.path(tmp_path)).unlink()

    notes: list[str] = []
    timer = threading.Timer(1.0, other_sweep_finishes)
    timer.start()
    try:
        out = run_sweep(runs, tmp_path, workers=1, on_note=notes.append, poll_s=0.1)
    finally:
        timer.join()
    assert [r["seed"] for r in out.done] == [1]
    assert out.by_other == [held.label]
    assert any(n.startswith(f"{held.label} is being run by another sweep (pid {os.getpid()}") for n in notes)
    assert f"{held.label} was finished by another sweep" in notes
    assert not list(tmp_path.glob("**/*.lock"))


def test_a_sweep_runs_a_claimed_run_whose_owner_died(tmp_path):
    runs = _runs(1)
    _write_lock(runs[0].path(tmp_path), Owner(socket.gethostname(), _dead_pid(), None, time.time()))
    notes: list[str] = []
    out = run_sweep(runs, tmp_path, workers=1, on_note=notes.append, poll_s=0.1)
    assert [r["status"] for r in out.done] == ["ok"]
    assert len(notes) == 1 and "is no longer running" in notes[0]
    assert not list(tmp_path.glob("**/*.lock"))


def test_two_sweeps_on_one_folder_train_each_run_once(tmp_path):
    """Before: both sweeps trained every run. Now the runs are shared out: the two sweeps' `ok` counts add
    up to the planned runs, and the second names the runs it left to the first."""
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "metabench.cli", "run", "--agents", "random", "--suite", "efficiency",
           "--profile", "smoke", "--tasks", "harlow", "--seeds", "12", "--workers", "1", "--results", str(results)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = results / "smoke/efficiency/harlow/random"
    deadline = time.time() + 60
    while time.time() < deadline and not list(folder.glob("seed*.lock")):
        time.sleep(0.01)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, err1 + second.stderr
    ok = [int(out.split("done: ")[1].split(" ok")[0]) for out in (out1, second.stdout)]
    already = int(second.stdout.split("runs on profile")[1].split(": ")[1].split(" already")[0])
    assert sum(ok) == 12, (out1, second.stdout)  # each run trained by exactly one of them
    assert "by another sweep" in second.stdout or already == 12
    assert len([p for p in folder.glob("seed*.json")]) == 12 and not list(folder.glob("*.lock"))


def test_records_curves_and_weights_get_the_umask_mode(tmp_path):
    """Before: written 0600 (the temporary file's mode). Now 0666 less the umask, as any new file."""
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "x.json", "{}")
        assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
        os.umask(0o027)
        write_atomic(tmp_path / "y.json", "{}")
        assert stat.S_IMODE((tmp_path / "y.json").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    run = _runs(1)[0]
    execute_run(run, tmp_path, "test")
    assert load_record(run.path(tmp_path))["status"] == "ok"
    for path in run.path(tmp_path).parent.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~old, path
