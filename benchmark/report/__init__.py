"""Reports: a pure function of ``results/`` -> ``reports/<suite>.md`` and figures.

:func:`build_reports` reads the records and returns every file it would write
(path -> bytes), so the same records always give the same bytes;
:func:`write_reports` writes them. Tables follow the paper's format: per task,
agent rows, mean ± std of each per-episode metric over all held-out test
episodes of all seeds (the paper's tables take std over episodes), with the
paper's value beside ours where the paper has one.

Modules: :mod:`.common` (record groups, orderings, the markdown-table writer, suite lookup),
:mod:`.tables` (per-task and impairment tables), :mod:`.aggregates` (normalisation levels and rliable
statistics), :mod:`.curves` (curves read from the curves CSVs), :mod:`.figures` and :mod:`.markdown`
(the suite reports, ``summary.md`` and the README's results section). Tables are computed from the records as
:func:`metabench.results.to_frame` rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from metabench.envs import FAMILIES

from ..records import check_curves, scan, write_atomic
from ..analyze import report_section
from .aggregates import DEFAULT_TARGET, Aggregates, Levels, aggregates, aggregates_markdown, task_levels
from .common import FIGURES, Cell, Group, is_current, md_table, pooled, suite_of, task_key
from .curves import learning_curve
from .figures import aggregates_figure, samples_figure, suite_figure
from .markdown import (README_END, README_START, SUMMARY, readme_overview, replace_readme_section, suite_markdown,
                       summary_markdown)
from .tables import Retention, retention, retention_table, task_table

_learning_curve = learning_curve  # the name tests have used


@dataclass
class Built:
    files: dict[str, bytes]
    warnings: list[str]
    readme_section: str = ""
    """The README's results section (between the markers), from the same records."""


def group_records(records) -> tuple[dict[str, dict[tuple[str, str], Group]], list[str]]:
    """``(path, record)`` pairs by suite and (profile, task): ok (current), stale and failed; and warnings."""
    warnings = []
    by_suite: dict[str, dict[tuple[str, str], Group]] = defaultdict(dict)
    for path, r in records:
        if r["task"] not in FAMILIES:
            warnings.append(f"{path}: unknown task {r['task']!r}; skipped")
            continue
        group = by_suite[r["suite"]].setdefault((r["profile"], r["task"]), Group(defaultdict(list), []))
        if r["status"] == "ok" and not is_current(r):
            group.stale.append((path, r))
            warnings.append(f"{path}: stale (its config is not what `metabench run` runs now); left out")
        elif r["status"] == "ok":
            group.ok[r["agent"]].append((path, r))
        else:
            group.failed.append((path, r))
    return by_suite, warnings


def build_reports(results: Path, analyses: Path | None = None) -> Built:
    """Every report file (relative path -> bytes) for the records under ``results``; with ``analyses``, each suite's
    report ends with the memory analyses of its tasks found there (``metabench analyze``'s JSON files)."""
    found = scan(Path(results))  # strict: a corrupt, foreign or inconsistent record is named and skipped
    by_suite, skipped = group_records(found.records)
    # a curves CSV that does not parse: named once, and the report reads that record as having no curves
    bad_curves = [f"{problem}; its curves skipped" for path, _ in found.records for problem in check_curves(path)]
    warnings = [str(e) for e in found.invalid] + skipped + bad_curves
    files: dict[str, bytes] = {}
    task_aggs: dict[tuple[str, str, str], Aggregates] = {}
    for suite_name, groups in sorted(by_suite.items()):
        suite = suite_of(suite_name)
        pictured = []
        for task in sorted({t for _, t in groups}, key=lambda t: task_key(suite, t)):
            if (png := samples_figure(task)) is not None:
                files[f"{FIGURES}/{task}-samples.png"] = png
                pictured.append(task)
        aggs = {}
        for profile in sorted({p for p, _ in groups}):
            if any(g.ok for (p, _), g in groups.items() if p == profile):
                files[f"{FIGURES}/{suite_name}-{profile}.png"] = suite_figure(suite_name, profile, groups)
                if (agg := aggregates(suite_name, profile, groups)) is not None and agg.scores:
                    aggs[profile] = agg
                    files[f"{FIGURES}/{suite_name}-{profile}-stats.png"] = aggregates_figure(suite_name, profile, agg)
        md = suite_markdown(suite_name, groups, tuple(pictured), aggs)
        if analyses is not None:
            section, figures = report_section(analyses, suite.tasks, ANALYSIS)
            if section:
                md = md.rstrip("\n") + "\n\n" + section
                files.update({f"{ANALYSIS}/{name}": png for name, png in figures.items()})
        files[f"{suite_name}.md"] = md.encode()
        for (p, task), group in groups.items():
            if (agg := aggs.get(p)) is not None and agg.tasks == [task]:
                task_aggs[(suite_name, p, task)] = agg  # the suite's aggregate is this task's alone
            elif group.ok and (agg := aggregates(suite_name, p, {(p, task): group})) is not None and agg.scores:
                task_aggs[(suite_name, p, task)] = agg
    if by_suite:
        files[SUMMARY] = summary_markdown(by_suite, task_aggs).encode()
    return Built(files, warnings, readme_overview(by_suite) if by_suite else "")


ANALYSIS = "analysis"
"""The folder of ``metabench analyze``'s default output under the reports folder, read back by the report."""


def write_reports(results: Path, reports: Path, readme: Path | None = None) -> Built:
    """Write every report file; with ``readme``, also its results section (a warning if it has no markers)."""
    built = build_reports(results, Path(reports) / ANALYSIS)
    for rel, data in built.files.items():
        write_atomic(Path(reports) / rel, data)
    if readme is not None and built.readme_section:
        new = replace_readme_section(readme.read_text(encoding="utf-8"), built.readme_section)
        if new is None:
            built.warnings.append(f"{readme}: no {README_START} ... {README_END} markers; results section not written")
        else:
            write_atomic(readme, new)
    return built


__all__ = ["Aggregates", "Built", "Cell", "DEFAULT_TARGET", "FIGURES", "Group", "Levels", "README_END",
           "README_START", "Retention", "aggregates", "aggregates_figure", "aggregates_markdown", "build_reports",
           "group_records", "is_current", "md_table", "pooled", "readme_overview", "replace_readme_section",
           "retention", "retention_table", "samples_figure", "suite_figure", "suite_markdown", "summary_markdown",
           "task_levels", "task_table", "write_reports"]
