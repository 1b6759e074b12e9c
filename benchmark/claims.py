"""Claims on runs: one lock file per run in progress, so that two sweeps on one results folder never train
the same run.

A sweep claims a run before starting it by creating ``seed<k>.lock`` beside the run's record, exclusively
(``O_CREAT | O_EXCL``), holding its owner: host, pid, the process's start time and when it claimed. It
releases the claim once the run's record is written, or when the run is stopped. A second sweep that finds
the lock waits for the run (see :func:`metabench.runner.run_sweep`) and says so.

A claim whose owner is gone is *stale* and is taken over, with a note:

- on the same host, when the owner's pid is not running, or runs another process (a different start time:
  the pid was reused);
- on another host (a shared file system), when the lock has not been refreshed for :data:`STALE_AFTER_S`:
  the owner touches its locks every :data:`HEARTBEAT_S` while it holds them.

Two sweeps taking over the same stale lock in the same instant could both run it; the record is written
atomically either way, so the cost is duplicated work, never a corrupt record.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_S = 30.0
"""How often the owner touches the locks it holds."""
STALE_AFTER_S = 300.0
"""A lock from another host not touched for this long is stale."""
UNREADABLE_GRACE_S = 10.0
"""A lock that does not parse (its owner may be writing it) is stale after this long."""


def lock_path(record: Path) -> Path:
    """The claim beside a run's record: ``seed<k>.json`` -> ``seed<k>.lock``."""
    return Path(record).with_suffix(".lock")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc/<pid>/stat``), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the parenthesised command name


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user has this pid
        return start is None
    return start is None or _start_time(pid) in (None, start)


@dataclass(frozen=True)
class Owner:
    """Who holds a claim."""

    host: str
    pid: int
    start: str | None
    """The owner process's start time (Linux), to tell a reused pid from the owner."""
    since: float
    """When the run was claimed (Unix time)."""

    @classmethod
    def me(cls) -> "Owner":
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()), time.time())

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, since {time.strftime('%H:%M:%S', time.localtime(self.since))}"


def read_owner(path: Path) -> Owner | None:
    """The owner written in a lock file, None if it does not parse."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return Owner(str(data["host"]), int(data["pid"]), data.get("start"), float(data["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stale_reason(path: Path, owner: Owner | None) -> str | None:
    """Why the lock at ``path`` is stale (one phrase), or None if its owner may still be running the run."""
    try:
        age = time.time() - Path(path).stat().st_mtime
    except OSError:
        return "it is gone"
    if owner is None:
        return "it does not parse" if age > UNREADABLE_GRACE_S else None
    if owner.host == socket.gethostname():
        return None if _alive(owner.pid, owner.start) else f"its owner ({owner.describe()}) is no longer running"
    if age > STALE_AFTER_S:
        return f"its owner ({owner.describe()}) has not refreshed it for {age:.0f} s"
    return None


def live_owner(record: Path) -> Owner | None:
    """Who holds the claim on the run whose record is ``record``, or None if nobody does (no lock, or a stale
    one). A lock that does not parse yet is held by an unknown owner (pid 0)."""
    path = lock_path(record)
    if not path.exists():
        return None
    owner = read_owner(path)
    if stale_reason(path, owner) is not None:
        return None
    return owner or Owner("?", 0, None, time.time())


class Claims:
    """The claims this process holds; a daemon thread refreshes them every :data:`HEARTBEAT_S`."""

    def __init__(self, heartbeat_s: float = HEARTBEAT_S):
        self.held: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name="metabench claims")
        self._thread.start()

    def claim(self, record: Path) -> tuple[Owner | None, str | None]:
        """Claim the run whose record is ``record``.

        Returns ``(None, note)`` when this process now holds it (``note``: a stale claim it took over, or
        None), else ``(owner, None)`` with the owner that holds it (``owner`` may be unreadable: then an
        :class:`Owner` with pid 0). Raises ``OSError`` if the lock cannot be written.
        """
        path = lock_path(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        note = None
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                owner = read_owner(path)
                reason = stale_reason(path, owner)
                if reason is None:
                    return owner or Owner("?", 0, None, time.time()), None
                note = f"took over the claim on {path.name} in {path.parent}: {reason}"
                path.unlink(missing_ok=True)
                continue
            me = Owner.me()
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"host": me.host, "pid": me.pid, "start": me.start, "since": me.since}, f)
            with self._lock:
                self.held.add(path)
            return None, note
        raise OSError(f"could not claim {path}: it keeps reappearing")

    def release(self, record: Path) -> None:
        path = lock_path(record)
        with self._lock:
            self.held.discard(path)
        path.unlink(missing_ok=True)

    def close(self) -> None:
        """Release every claim and stop the heartbeat."""
        self._stop.set()
        with self._lock:
            held, self.held = self.held, set()
        for path in held:
            path.unlink(missing_ok=True)

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._lock:
                held = list(self.held)
            for path in held:
                try:
                    os.utime(path)
                except OSError:
                    pass


__all__ = ["Claims", "HEARTBEAT_S", "Owner", "STALE_AFTER_S", "live_owner", "lock_path", "read_owner",
           "stale_reason"]
