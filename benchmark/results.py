"""The records under ``results/`` as pandas tables, for reports and for anyone's own analysis.

:func:`frame`: one row per record (valid records only, read with :func:`metabench.records.scan`;
invalid files are skipped, as everywhere): its keys, status, budget, wall time and every metric as a
column. :func:`curves`: the curves CSVs beside the records, in long form. Both keep the order
``scan`` finds records in (sorted paths), so what is computed from them is reproducible.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from .records import InvalidCurves, read_curves, scan

KEYS = ("agent", "task", "suite", "profile", "seed")
"""What identifies a run."""
COLUMNS = KEYS + ("status", "env_steps", "wall_time_s", "error", "path")
"""The columns before the metrics: ``error`` is None for an ok record, ``path`` the record's file."""
CURVE_COLUMNS = KEYS + ("curve", "x", "metric", "value")


def to_frame(records: Iterable[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """One row per ``(path, record)``, in the given order: :data:`COLUMNS`, then every metric (sorted by
    name; NaN where a record lacks it). A metric named like one of :data:`COLUMNS` is not a column."""
    rows, metrics = [], set()
    for path, r in records:
        row = {k: r.get(k) for k in COLUMNS if k != "path"}
        row["path"] = str(path)
        for name, value in r.get("metrics", {}).items():
            if name not in row:
                row[name] = value
                metrics.add(name)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*COLUMNS, *sorted(metrics)])


def frame(results: Path | str) -> pd.DataFrame:
    """Every valid record under ``results`` (ok and failed: see ``status``), one row each."""
    return to_frame(scan(Path(results)).records)


def curves_frame(records: Iterable[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """The curves CSV of each ``(path, record)`` in long form (:data:`CURVE_COLUMNS`); records without
    one add no rows, and a CSV that does not parse adds none, with a warning naming it."""
    parts = []
    for path, r in records:
        try:
            rows = read_curves(Path(path))
        except InvalidCurves as e:  # as everywhere, a corrupt curves file loses only its curves
            warnings.warn(f"{e}; its curves skipped", stacklevel=2)
            continue
        if not rows:
            continue
        part = pd.DataFrame(rows, columns=["curve", "x", "metric", "value"])
        for k in reversed(KEYS):
            part.insert(0, k, r.get(k))
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(CURVE_COLUMNS)]


def curves(results: Path | str) -> pd.DataFrame:
    """The curves of every valid record under ``results``: one row per (record, curve, x, metric).

    ``curve`` is ``eval`` (held-out scores at meta-training checkpoints, ``x`` the nominal env step),
    ``train`` (training scalars) or ``step_reward`` (reward at each step of the held-out trial)."""
    return curves_frame(scan(Path(results)).records)


__all__ = ["COLUMNS", "CURVE_COLUMNS", "KEYS", "curves", "curves_frame", "frame", "to_frame"]
