"""Runs on Ray (``metabench run --executor ray``): one Ray task per run, records written by the driver.

The sweep itself (its queue, claims, stopping, the one line per run) is :func:`metabench.runner.run_sweep`'s, as
under the local executor; this module only starts runs and collects them (:class:`RayExecutor`).

- **One task per run**, declaring ``threads`` CPUs, and one GPU for a run on ``--device cuda`` (Ray gives the
  task its GPU as ``cuda``; none for ``cpu``). A task runs
  :func:`~metabench.runner.execute_run` into a scratch folder of its worker and returns the record, the curves
  and the trained agent as values; the driver writes them under its own results folder, atomically, so the
  workers need no shared file system for records.
- **A worker that dies** (killed, out of memory, its node lost) is retried by Ray (``max_retries``); a run
  that fails all its tries is recorded ``failed`` as a run whose process died is locally. A run that raises
  is not retried: its record says ``failed`` with the error, as everywhere.
- **Checkpoints** of unfinished runs go to ``--checkpoint-dir`` (give a folder every node sees, so that a retry
  on another node resumes) or, without it, to a folder of the worker's node, where a retry on the same node
  resumes.
- **Progress** travels from the tasks through a Ray queue to the driver's live display.

``ray`` is an optional dependency (``pip install 'metabench[ray]'``).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from .runner import Checkpointing, Executor, Finished, RunSpec, _died, execute_run, state_path, write_run

MAX_RETRIES = 2
"""Tries of a run whose worker died, after the first."""


class RayUnavailable(RuntimeError):
    """``--executor ray`` without ray installed, or a cluster that cannot be reached; the message says which."""


def run_remote(spec: RunSpec, version: str, threads: int, checkpointing: Checkpointing | None,
               progress_queue: Any) -> dict[str, Any]:
    """The body of a run's Ray task: the run into a scratch folder, returned as values (see the module)."""
    if checkpointing is None or checkpointing.folder is None:
        checkpointing = dataclasses.replace(checkpointing or Checkpointing(),
                                            folder=Path(tempfile.gettempdir()) / "metabench-checkpoints")
    with tempfile.TemporaryDirectory(prefix="metabench-ray-") as tmp:
        scratch = Path(tmp)
        record = execute_run(spec, scratch, version, threads, progress_queue, checkpointing)
        path = spec.path(scratch)
        curves = path.with_name(f"seed{spec.seed}.curves.csv")
        weights = state_path(path)
        return {"record": record, "curves": curves.read_bytes() if curves.exists() else None,
                "weights": weights.read_bytes() if weights.exists() else None}


class RayExecutor(Executor):
    """Runs as Ray tasks on a local instance (``address=None``) or a cluster (``"auto"``, ``"HOST:PORT"``)."""

    def __init__(self, results: Path, version: str, threads: int, progress_queue: Any, slots: int | None,
                 checkpointing: Checkpointing | None = None, address: str | None = None,
                 max_retries: int | None = None, task: Any = None):
        try:
            import ray
        except ImportError:
            raise RayUnavailable("--executor ray needs ray: pip install 'metabench[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            try:
                if address is None:  # a local instance of this machine's cores, on loopback
                    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError) as e:
                raise RayUnavailable(f"cannot start or reach Ray at {address or 'a local instance'}: "
                                     f"{str(e).splitlines()[0]}") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = slots or max(1, cpus // max(threads, 1))
        self.results, self.version, self.threads = Path(results), version, threads
        self.checkpointing = checkpointing
        self.local_progress = progress_queue
        self.progress = None
        if progress_queue is not None:
            from ray.util.queue import Queue

            self.progress = Queue(maxsize=1000)
        self.max_retries = MAX_RETRIES if max_retries is None else max_retries
        body = ray.remote(task or run_remote)
        self.remote = {gpus: body.options(num_cpus=threads, num_gpus=gpus, max_retries=self.max_retries,
                                          retry_exceptions=False) for gpus in (0, 1)}
        self.running: dict[Any, tuple[RunSpec, float]] = {}

    def start(self, spec: RunSpec) -> None:
        remote = self.remote[0 if spec.device == "cpu" else 1]
        ref = remote.remote(spec, self.version, self.threads, self.checkpointing, self.progress)
        self.running[ref] = (spec, time.perf_counter())

    def _forward_progress(self) -> None:
        if self.progress is None:
            return
        while not self.progress.empty():
            try:
                self.local_progress.put_nowait(self.progress.get_nowait())
            except Exception:  # noqa: BLE001 - progress must never break a sweep
                return

    def wait(self, timeout: float | None) -> list[Finished]:
        if not self.running:
            return []
        ray = self.ray
        deadline = None if timeout is None else time.perf_counter() + timeout
        while True:  # in short waits, so that the live display keeps moving
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready, _ = ray.wait(list(self.running), num_returns=1, timeout=0.5 if left is None else min(0.5, left))
            self._forward_progress()
            if ready or (left is not None and left <= 0):
                break
        ready, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
        out = []
        for ref in ready:
            spec, started = self.running.pop(ref)
            try:
                out.append(Finished(spec, self._write(spec, ray.get(ref))))
            except ray.exceptions.RayError as e:  # its worker died on every try
                why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                out.append(Finished(spec, _died(spec, self.results, self.version,
                                                f"died on each of its {1 + self.max_retries} tries on Ray ({why})",
                                                time.perf_counter() - started), crashed=True))
        return out

    def _write(self, spec: RunSpec, out: dict[str, Any]) -> dict[str, Any]:
        """The driver's copy of a finished run: curves, trained agent and record, each written atomically."""
        write_run(spec.path(self.results), out["record"], out["curves"], out["weights"])
        return out["record"]

    def in_flight(self) -> list[RunSpec]:
        return [spec for spec, _started in self.running.values()]

    def stop(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        self.running = {}


__all__ = ["MAX_RETRIES", "RayExecutor", "RayUnavailable", "run_remote"]
