"""Sweeps on Ray (metabench/ray_executor.py): a real local Ray instance on loopback, smoke runs through it.

- the same smoke sweep through ``local`` and ``ray`` writes the same records and curves (timings aside);
- a worker killed mid-run is retried by Ray, and the sweep ends with one valid record per run;
- a run whose worker dies on every try is recorded ``failed``, and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import pytest

ray = pytest.importorskip("ray")

from metabench import ray_executor, runner  # noqa: E402
from metabench.profiles import PROFILES  # noqa: E402
from metabench.records import check_record, load_record, without_timings  # noqa: E402
from metabench.suites import SUITES  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray instance takes ~10-20 s to start


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    # the task wrappers below are pickled by value: Ray's workers cannot import this test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def _runs(agents: list[str], seeds: int):
    runs, _ = runner.plan(agents, [SUITES.get("capacity")], PROFILES.get("smoke"), seeds, ["maze"])
    return runs


def _records(folder, runs):
    return {spec.label: json.loads(spec.path(folder).read_text()) for spec in runs}


def test_ray_and_local_write_the_same_records(tmp_path, local_ray):
    runs = _runs(["random", "maml"], 2)
    local = runner.run_sweep(runs, tmp_path / "local", workers=1, threads=1)
    on_ray = runner.run_sweep(runs, tmp_path / "ray", threads=1, executor_name="ray")
    assert len(local.done) == len(on_ray.done) == len(runs) and not on_ray.crashed
    a, b = _records(tmp_path / "local", runs), _records(tmp_path / "ray", runs)
    assert {k: without_timings(v) for k, v in a.items()} == {k: without_timings(v) for k, v in b.items()}
    for spec in runs:
        curves = [spec.path(d).with_name(f"seed{spec.seed}.curves.csv").read_text()
                  for d in (tmp_path / "local", tmp_path / "ray")]
        assert curves[0] == curves[1]
        weights = [spec.path(d).with_suffix(".pt") for d in (tmp_path / "local", tmp_path / "ray")]
        assert weights[1].exists() == weights[0].exists()
        if weights[0].exists():
            assert weights[0].read_bytes() == weights[1].read_bytes()


def _dies_on_first_try(marker_dir):
    """A run task whose worker is SIGKILLed half a second into its first try (a marker file per run says
    which try it is), then runs normally."""

    def task(spec, *args):
        marker = marker_dir / f"{spec.agent}-{spec.seed}"
        if not marker.exists():
            marker.touch()
            threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
        return ray_executor.run_remote(spec, *args)

    return task


def test_a_killed_worker_is_retried_and_each_run_has_one_record(tmp_path, local_ray, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setattr(ray_executor, "run_remote", _dies_on_first_try(markers))
    runs = _runs(["maml"], 2)
    out = runner.run_sweep(runs, tmp_path / "r", threads=1, executor_name="ray")
    assert sorted(p.name for p in markers.iterdir()) == ["maml-0", "maml-1"]  # every run was killed once
    assert [r["status"] for r in out.done] == ["ok", "ok"] and not out.crashed
    records = sorted((tmp_path / "r").rglob("*.json"))
    assert [p.name for p in records] == ["seed0.json", "seed1.json"]  # none duplicated
    assert not list((tmp_path / "r").rglob("*.tmp"))
    assert all(not check_record(p, load_record(p)) for p in records)


def test_a_run_whose_worker_always_dies_is_recorded_failed(tmp_path, local_ray, monkeypatch):
    def always_dies(spec, *args):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(ray_executor, "run_remote", always_dies)
    monkeypatch.setattr(ray_executor, "MAX_RETRIES", 1)
    runs = _runs(["random"], 1)
    out = runner.run_sweep(runs, tmp_path / "r", threads=1, executor_name="ray")
    (record,) = out.done
    assert record["status"] == "failed" and out.crashed == [runs[0].label]
    assert record["error"].startswith("WorkerDied: the run's process died on each of its 2 tries on Ray")
    assert json.loads(runs[0].path(tmp_path / "r").read_text())["status"] == "failed"
