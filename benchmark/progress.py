"""Live progress of a sweep on a terminal (rich): runs done and left, and per running run its env
steps, env-steps/s and latest held-out score. Quiet when stdout is not a terminal (CI logs keep
one line per finished run).

Runs report from their worker processes through a queue: :class:`RunReporter` is what a run
holds (it throttles to one message every ``every_s`` seconds, plus every evaluation);
:class:`SweepProgress` drains the queue in a thread and draws.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any


class RunReporter:
    """Sends ``(label, env_steps, budget, steps_per_s, metric, score)`` of one run to a queue, throttled."""

    def __init__(self, q: Any, label: str, budget: int, metric: str, every_s: float = 1.0):
        self.q, self.label, self.budget, self.metric, self.every_s = q, label, budget, metric, every_s
        self._start = time.perf_counter()
        self._last = 0.0
        self.score: float | None = None

    def __call__(self, env_steps: int, score: float | None = None) -> None:
        now = time.perf_counter()
        if score is not None:
            self.score = score
        elif now - self._last < self.every_s:
            return
        self._last = now
        rate = env_steps / (now - self._start) if now > self._start else 0.0
        try:
            self.q.put_nowait((self.label, env_steps, self.budget, rate, self.metric, self.score))
        except Exception:  # noqa: BLE001 - progress must never break a run
            pass


class SweepProgress:
    """A rich live display of a sweep (a no-op when ``enabled`` is False)."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        self.total = total
        self.queue: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "SweepProgress":
        if not self.enabled:
            return self
        import multiprocessing

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._manager = multiprocessing.get_context("spawn").Manager()
        self.queue = self._manager.Queue()
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=False)
        self.progress.start()
        self._overall = self.progress.add_task("runs", total=self.total, info="")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()
        return self

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                label, steps, budget, rate, metric, score = self.queue.get(timeout=0.2)
            except (queue.Empty, EOFError, OSError):
                continue
            if label not in self._tasks:
                self._tasks[label] = self.progress.add_task(label, total=max(budget, 1), info="")
            info = f"{rate:,.0f} env-steps/s" + (f"  {metric}={score:.3f}" if score is not None else "")
            self.progress.update(self._tasks[label], completed=steps, info=info)

    def run_done(self, label: str, line: str) -> None:
        """A run finished: advance the overall bar, drop its row, print its line above the bars."""
        if not self.enabled:
            return
        self.progress.advance(self._overall)
        if label in self._tasks:
            self.progress.remove_task(self._tasks.pop(label))
        self.progress.console.print(line, highlight=False)

    def note(self, line: str) -> None:
        """A line above the bars that is not a finished run."""
        if self.enabled:
            self.progress.console.print(line, highlight=False)

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        self._stop.set()
        self._thread.join(timeout=2)
        self.progress.stop()
        self._manager.shutdown()
