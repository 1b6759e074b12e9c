"""Run records: one JSON file per run, written atomically, plus a curves CSV beside it.

Layout: ``<results>/<profile>/<suite>/<task>/<agent>/seed<k>.json`` and
``seed<k>.curves.csv`` (long format: ``curve,x,metric,value``). The record
is written last, so a record that exists always has its curves; both are
written to a temporary file in the same folder and renamed into place, so a
killed process leaves either the old file or the new one, never half of one.
Reports and the regression gate read records; they never retrain.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def record_path(results: Path, profile: str, suite: str, task: str, agent: str, seed: int) -> Path:
    return Path(results) / profile / suite / task / agent / f"seed{seed}.json"


def curves_path(record: Path) -> Path:
    return record.with_name(record.name.removesuffix(".json") + ".curves.csv")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dumps_record(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"


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


def load_record(path: Path) -> dict[str, Any]:
    """Read and validate one record; raises :class:`InvalidRecord` with a one-line reason."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRecord(f"{path}: unreadable ({e.__class__.__name__})") from None
    except json.JSONDecodeError as e:
        raise InvalidRecord(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    problems = validate(record)
    if problems:
        raise InvalidRecord(f"{path}: {problems[0]}")
    return record


@dataclass
class Scan:
    records: list[tuple[Path, dict[str, Any]]]
    invalid: list[InvalidRecord]


def scan(results: Path) -> Scan:
    """Every ``seed*.json`` under ``results`` (sorted), split into valid records and invalid files."""
    records, invalid = [], []
    for path in sorted(Path(results).glob("**/seed*.json")):
        try:
            records.append((path, load_record(path)))
        except InvalidRecord as e:
            invalid.append(e)
    return Scan(records, invalid)


def iter_curves(record: Path) -> Iterator[tuple[str, float, str, float]]:
    path = curves_path(record)
    if not path.exists():
        return
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            yield row["curve"], float(row["x"]), row["metric"], float(row["value"])
