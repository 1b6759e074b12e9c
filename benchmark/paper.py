"""The paper's reference numbers, shipped as package data (``data/paper_results.csv``).

Copied from the paper's tables and figures (see each row's ``source`` and
``note``); reports print them beside ours. Numbers are facts, not code.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class PaperValue:
    suite: str
    task: str
    agent: str
    metric: str
    value: float
    spread: float | None
    source: str
    note: str


@cache
def paper_values() -> tuple[PaperValue, ...]:
    text = resources.files("metabench").joinpath("data/paper_results.csv").read_text(encoding="utf-8")
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        rows.append(PaperValue(
            suite=r["suite"], task=r["task"], agent=r["agent"], metric=r["metric"], value=float(r["value"]),
            spread=float(r["spread"]) if r["spread"] else None, source=r["source"], note=r["note"],
        ))
    return tuple(rows)


def paper_value(task: str, agent: str, metric: str) -> PaperValue | None:
    for v in paper_values():
        if (v.task, v.agent, v.metric) == (task, agent, metric):
            return v
    return None
