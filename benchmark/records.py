"""Run records: one JSON file per run, written atomically, plus a curves CSV beside it.

Layout: ``<results>/<profile>/<suite>/<task>/<agent>/seed<k>.json`` and
``seed<k>.curves.csv`` (long format: ``curve,x,metric,value``). The record
is written last, so a record that exists always has its curves; both are
written to a temporary file in the same folder and renamed into place, so a
killed process leaves either the old file or the new one, never half of one.
Reports and the regression gate read records; they never retrain.

A record is *valid* when it passes :func:`validate` (its fields and their types) and
:func:`check_record` (it lies at the path its fields name, and its agent, task, suite and
profile are registered, the task in that suite; an ``ok`` record holds its task's main
metric). :func:`load_record` and :func:`scan` apply both, so ``metabench validate``,
the reports, the regression gate and the runner's resume (``is_done``) accept and skip
the same files. A curves CSV that does not parse (:func:`check_curves`) loses only the
curves: the record stays.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

SCHEMA = 1

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": int,
    "agent": str,
    "task": str,
    "suite": str,
    "seed": int,
    "profile": str,
    "status": str,
    "error": (str, type(None)),
    "metrics": dict,
    "env_steps": int,
    "wall_time_s": (int, float),
    "config": dict,
    "code_version": str,
}
STATUSES = ("ok", "failed")


class InvalidRecord(ValueError):
    """A results file that is not a valid metabench record; the message says why in one line."""


class InvalidCurves(ValueError):
    """A curves CSV that does not parse; the message names the file and why, in one line."""


def record_path(results: Path, profile: str, suite: str, task: str, agent: str, seed: int) -> Path:
    return Path(results) / profile / suite / task / agent / f"seed{seed}.json"


def curves_path(record: Path) -> Path:
    return record.with_name(record.name.removesuffix(".json") + ".curves.csv")


def _umask() -> int:
    """The process's umask (read without changing it where /proc tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: str | bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (atomic on POSIX). ``data`` may be a
    function that writes into the open file (a checkpoint streamed by ``torch.save``, never held in memory
    as bytes as well).

    The file gets the mode any new file gets (0666 less the umask), not the temporary file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dumps_record(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"


TIMED_FIELDS = ("wall_time_s", "resumed")
TIMED_METRICS = ("train_env_steps_per_s",)


def without_timings(record: dict[str, Any]) -> dict[str, Any]:
    """The record less what differs between two runs of the same config on the same machine: its timings and
    where a resumed run picked up. Two such records of one config should be equal (local against Ray, a run
    against its resumed twin)."""
    out = {k: v for k, v in record.items() if k not in TIMED_FIELDS}
    out["metrics"] = {k: v for k, v in record["metrics"].items() if k not in TIMED_METRICS}
    return out


def write_record(path: Path, record: dict[str, Any]) -> None:
    problems = validate(record)
    if problems:
        raise InvalidRecord(f"refusing to write an invalid record to {path}: {problems[0]}")
    write_atomic(path, dumps_record(record))


def curves_csv(rows: Iterable[tuple[str, float, str, float]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["curve", "x", "metric", "value"])
    for curve, x, metric, value in rows:
        w.writerow([curve, _num(x), metric, _num(value)])
    return buf.getvalue()


def _num(v: float) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.6g}"


def validate(record: Any) -> list[str]:
    """Problems with a record, empty if it is valid."""
    if not isinstance(record, dict):
        return ["not a JSON object"]
    problems = []
    for key, typ in REQUIRED.items():
        if key not in record:
            problems.append(f"missing field {key!r}")
        elif not isinstance(record[key], typ) or isinstance(record[key], bool) and typ is int:
            problems.append(f"field {key!r} has type {type(record[key]).__name__}")
    if problems:
        return problems
    if record["schema"] != SCHEMA:
        problems.append(f"schema {record['schema']} (this metabench reads {SCHEMA})")
    if record["status"] not in STATUSES:
        problems.append(f"status {record['status']!r} not in {STATUSES}")
    if record["status"] == "failed" and not record["error"]:
        problems.append("failed record without an error")
    for name, value in record["metrics"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"metric {name!r} is not a finite number")
    if record["status"] == "ok" and not record["metrics"]:
        problems.append("ok record without metrics")
    return problems


LAYOUT = "<profile>/<suite>/<task>/<agent>/seed<k>.json"


def check_record(path: Path, record: dict[str, Any]) -> list[str]:
    """Problems of a record that passes :func:`validate` against its path and the registries; empty if none.

    ``path`` must end in ``<profile>/<suite>/<task>/<agent>/seed<seed>.json`` with the record's own
    fields (so a results folder and any folder in it, ``results/quick``, are scanned alike; a file a
    folder too deep or too shallow names folders that are not its fields). The agent, task, suite and
    profile must be registered (``metabench list``), the task must belong to the suite and the agent must
    run on it; an ``ok`` record must hold its task's main metric (the family's ``primary_metric``). This is
    what ``metabench validate`` checks, and what reports, the regression gate and the runner's resume skip.
    """
    from metabench.agents import AGENTS
    from metabench.envs import FAMILIES, make_family

    from .profiles import PROFILES
    from .suites import SUITES

    problems = []
    parts = Path(path).parts[-5:]
    if len(parts) != 5:
        problems.append(f"not at {LAYOUT}")
    else:
        for name, folder in zip(("profile", "suite", "task", "agent"), parts):
            if folder != record[name]:
                problems.append(f"{name} {record[name]!r} but its path says {folder!r}")
        if parts[4] != f"seed{record['seed']}.json":
            problems.append(f"seed {record['seed']} but its file is {parts[4]}")
    agent, task, suite, profile = record["agent"], record["task"], record["suite"], record["profile"]
    if agent not in AGENTS:
        problems.append(f"unknown agent {agent!r}")
    if task not in FAMILIES:
        problems.append(f"unknown task {task!r}")
    if suite not in SUITES:
        problems.append(f"unknown suite {suite!r}")
    if profile not in PROFILES:
        problems.append(f"unknown profile {profile!r}")
    if task in FAMILIES:
        entry = FAMILIES.get(task)
        if suite in SUITES and entry.suite != suite:
            problems.append(f"task {task!r} is in suite {entry.suite!r}, not {suite!r}")
        family = make_family(task)
        if agent in AGENTS:
            agent_entry = AGENTS.get(agent)
            if not agent_entry.cls.supports(family) or (agent_entry.tasks is not None
                                                        and task not in agent_entry.tasks):
                problems.append(f"agent {agent!r} does not run on task {task!r}")
        if record["status"] == "ok" and family.primary_metric not in record["metrics"]:
            problems.append(f"ok record without its task's main metric {family.primary_metric!r}")
    return problems


def load_record(path: Path, *, strict: bool = True) -> dict[str, Any]:
    """Read and validate one record; raises :class:`InvalidRecord` naming every problem, in one line.

    ``strict`` (the default) adds :func:`check_record` (its path and the registries), so the runner's
    resume (``is_done``) never counts a record that ``metabench validate`` rejects; ``strict=False`` checks
    the fields only.
    """
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRecord(f"{path}: unreadable ({e.__class__.__name__})") from None
    except json.JSONDecodeError as e:
        raise InvalidRecord(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    problems = validate(record)
    if not problems and strict:
        problems = check_record(Path(path), record)
    if problems:
        raise InvalidRecord(f"{path}: {'; '.join(problems)}")
    return record


@dataclass
class Scan:
    records: list[tuple[Path, dict[str, Any]]]
    invalid: list[InvalidRecord]


def scan(results: Path, strict: bool = True) -> Scan:
    """Every ``seed*.json`` under ``results`` (sorted), split into valid records and invalid files.

    ``strict`` (the default): valid as :func:`load_record` says, so a foreign or inconsistent record is
    invalid; ``strict=False``: the fields only.
    """
    records, invalid = [], []
    for path in sorted(Path(results).glob("**/seed*.json")):
        try:
            records.append((path, load_record(path, strict=strict)))
        except InvalidRecord as e:
            invalid.append(e)
    return Scan(records, invalid)


CURVES_HEADER = ["curve", "x", "metric", "value"]


def read_curves(record: Path) -> list[tuple[str, float, str, float]]:
    """The rows of the record's curves CSV (none if it has no CSV); :class:`InvalidCurves` if it does not parse."""
    path = curves_path(Path(record))
    if not path.exists():
        return []
    rows = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != CURVES_HEADER:
                raise InvalidCurves(f"{path}: header is {header!r}, not {','.join(CURVES_HEADER)}")
            for row in reader:
                where = f"{path}: line {reader.line_num}"
                if len(row) != 4:
                    raise InvalidCurves(f"{where}: {len(row)} fields, not 4")
                try:
                    x, value = float(row[1]), float(row[3])
                except ValueError:
                    raise InvalidCurves(f"{where}: x {row[1]!r} or value {row[3]!r} is not a number") from None
                rows.append((row[0], x, row[2], value))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InvalidCurves(f"{path}: unreadable ({e.__class__.__name__})") from None
    return rows


def check_curves(record: Path) -> list[str]:
    """Problems of the record's curves CSV (one at most: where it stops parsing); empty if none or absent."""
    try:
        read_curves(record)
    except InvalidCurves as e:
        return [str(e)]
    return []


def iter_curves(record: Path) -> Iterator[tuple[str, float, str, float]]:
    """The curves CSV's rows; :class:`InvalidCurves` (before any row) if the file does not parse."""
    yield from read_curves(record)
