"""Reports: a pure function of ``results/`` -> ``reports/<suite>.md`` and figures.

:func:`build_reports` reads the records and returns every file it would write
(path -> bytes), so the same records always give the same bytes;
:func:`write_reports` writes them. Tables follow the paper's format: per task,
agent rows, mean ± std of each per-episode metric over all held-out test
episodes of all seeds (the paper's tables take std over episodes), with the
paper's value beside ours where the paper has one.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metabench.agents import AGENTS
from metabench.envs import FAMILIES, TaskFamily, make_family

from .paper import paper_value
from .profiles import PROFILES
from .records import iter_curves, scan, write_atomic
from .runner import resolve_config, same_config
from .suites import SUITES

FIGURES = "figures"


@dataclass
class Cell:
    """A metric over the seeds of one (agent, task): pooled over test episodes."""

    mean: float
    std: float
    seeds: int


def pooled(records: list[dict[str, Any]], metric: str) -> Cell | None:
    """Mean and std over all test episodes of all records (each record holds its mean, std and count)."""
    parts = [(r["metrics"][metric], r["metrics"].get(f"{metric}_std", 0.0), r["metrics"].get("test_episodes", 1.0))
             for r in records if metric in r["metrics"]]
    if not parts:
        return None
    n = sum(c for _, _, c in parts)
    mean = sum(m * c for m, _, c in parts) / n
    second = sum((s * s + m * m) * c for m, s, c in parts) / n
    return Cell(mean, math.sqrt(max(second - mean * mean, 0.0)), len(parts))


def _paper(mapping: tuple[str, str, float], agent: str):
    """The paper's value for ``agent`` (or its registered fallback row) under a metric's paper mapping."""
    task, metric, _ = mapping
    p = paper_value(task, agent, metric)
    if p is None and agent in AGENTS and (fallback := AGENTS.get(agent).paper_fallback):
        p = paper_value(task, fallback, metric)
    return p


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1000 or (x != 0 and abs(x) < 0.01) else f"{x:.2f}"


def _agent_order(names: set[str]) -> list[str]:
    known = [a for a in AGENTS.names() if a in names]
    return known + sorted(names - set(known))


def _profile_order(names: set[str]) -> list[str]:
    known = [p for p in ("quick", "paper", "smoke") if p in names]
    return known + sorted(names - set(known))


@dataclass
class Group:
    """Records of one (profile, suite, task), by agent."""

    ok: dict[str, list[tuple[Path, dict[str, Any]]]]
    failed: list[tuple[Path, dict[str, Any]]]
    stale: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    """``ok`` records whose config is not what ``metabench run`` would run now (:func:`is_current`):
    listed, never pooled with the current ones."""


def is_current(record: dict[str, Any]) -> bool:
    """Whether the record's config is what the runner resolves today for its agent, task, profile and seed.

    A record of an older default (another task config, budget or agent setting) would otherwise be pooled
    with today's runs under today's header; the runner reruns exactly these (it skips only current records).
    Unknown agents or profiles cannot be judged and count as current.
    """
    if record["agent"] not in AGENTS or record["profile"] not in PROFILES:
        return True
    try:
        now = resolve_config(record["agent"], record["task"], PROFILES.get(record["profile"]), record["seed"])
    except (KeyError, ValueError):
        return True
    return same_config(record.get("config"), now)


def _columns(family: TaskFamily) -> list[tuple[str, Any, tuple[str, str, float] | None]]:
    """(record metric name, spec, paper mapping) of the family's main table."""
    shown = set(family.table_metrics())
    return [(name, m, m.paper) for name, _suffix, m in family.scored_metrics() if name in shown]


def _seed_mean(records: list[dict[str, Any]], metric: str) -> float | None:
    vals = [r["metrics"][metric] for r in records if metric in r["metrics"]]
    return sum(vals) / len(vals) if vals else None


def _seed_interval(records: list[dict[str, Any]], metric: str) -> str:
    """The mean over seeds of ``metric`` with its 95 % bootstrap CI over seeds, formatted; "—" if none."""
    from . import stats

    vals = [r["metrics"][metric] for r in records if metric in r["metrics"]]
    return stats.seed_mean_interval(vals).fmt() if vals else "—"


@dataclass
class Retention:
    """One task's impairment scores per agent (means over seeds of the primary metric)."""

    reference: float | None
    """The best agent's unimpaired score: what "normalised" divides by (None if not positive)."""
    intact: dict[str, float]
    impaired: dict[str, dict[str, float]]
    """agent -> variant suffix -> score."""


def retention(family: TaskFamily, group: Group) -> Retention:
    metric = family.primary_metric
    intact, impaired = {}, {}
    for agent in _agent_order(set(group.ok)):
        records = [r for _, r in group.ok[agent]]
        if (v := _seed_mean(records, metric)) is not None:
            intact[agent] = v
        impaired[agent] = {s: v for s in family.retention_variants()
                           if (v := _seed_mean(records, f"{metric}{s}")) is not None}
    best = max(intact.values(), default=None)
    return Retention(best if best is not None and best > 0 else None, intact, impaired)


def retention_table(task: str, family: TaskFamily, group: Group) -> list[str]:
    """The paper's Fig. 6 (right) numbers: normalised returns beside the paper's, retention, per actuator."""
    ret = retention(family, group)
    variants = family.retention_variants()
    drawn = next(iter(variants))
    metric = family.primary_metric
    ref = ret.reference
    # the rliable normalisation of tasks with no ceiling, where the `random` agent was run
    anchors = _best_agent_bounds(task, group, simulate_random=False)
    anchored = anchors is not None
    low, best = anchors if anchors else (None, None)
    out = [f"Impairment (`{task}`): the same trained agents, scored again with {variants[drawn]}. "
           f"Normalised (the paper's Fig. 6) = {metric} / the best agent's unimpaired {metric} "
           + (f"({_fmt(ref)}, here)" if ref else "(undefined here: no agent's unimpaired return is positive)")
           + "; retention = impaired / unimpaired, per agent (defined for a positive unimpaired return)"
           + (f"; above random = ({metric} − random's unimpaired {_fmt(low)}) / (the best agent's "
              f"unimpaired {_fmt(best)} − random's), defined whatever the sign" if anchored else "")
           + "; means over seeds.", ""]
    head = ["agent", "unimpaired", "impaired", "normalised", "paper", "impaired normalised", "paper",
            "retention"] + (["above random: unimpaired", "above random: impaired"] if anchored else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def norm(v: float | None) -> str:
        return "—" if v is None or ref is None else _fmt(v / ref)

    def above(v: float | None) -> list[str]:
        return [] if not anchored else ["—" if v is None else _fmt((v - low) / (best - low))]

    def paper(task_name: str, agent: str) -> str:
        p = _paper((task_name, "normalized_return", 1.0), agent)
        return "—" if p is None else _fmt(p.value)

    for agent, intact in ret.intact.items():
        hurt = ret.impaired[agent].get(drawn)
        keep = "—" if hurt is None or intact <= 0 else _fmt(hurt / intact)
        cells = [f"`{agent}`", _fmt(intact), "—" if hurt is None else _fmt(hurt), norm(intact), paper(task, agent),
                 norm(hurt), paper(f"{task}{drawn}", agent), keep, *above(intact), *above(hurt)]
        lines.append("| " + " | ".join(cells) + " |")
    out += lines + [""]
    per_joint = [s for s in variants if s != drawn]
    if per_joint:
        out += [f"Per frozen actuator (`{task}`; {metric} with that actuator frozen in every test task, mean "
                "over seeds; in brackets the retention, impaired / unimpaired, where the unimpaired return is "
                "positive):", ""]
        head = ["agent", "unimpaired"] + [s.rsplit("_", 1)[1] for s in per_joint]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for agent, intact in ret.intact.items():
            cells = [_fmt(intact)]
            for s in per_joint:
                v = ret.impaired[agent].get(s)
                cells.append("—" if v is None else _fmt(v) + (f" ({_fmt(v / intact)})" if intact > 0 else ""))
            out.append(f"| `{agent}` | " + " | ".join(cells) + " |")
        out.append("")
    return out


def task_table(task: str, family: TaskFamily, group: Group) -> list[str]:
    cols = _columns(family)
    head = ["agent", "seeds"]
    for name, spec, paper in cols:
        arrow = "↑" if spec.higher_is_better else "↓"
        head.append(f"{name} {arrow}")
        if paper:
            head.append("paper")
    head += [f"{family.primary_metric}: mean over seeds [95 % CI]", "env steps / run", "train env-steps/s",
             "wall time / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for agent in _agent_order(set(group.ok)):
        records = [r for _, r in group.ok[agent]]
        row = [f"`{agent}`", str(len(records))]
        for name, _spec, paper in cols:
            cell = pooled(records, name)
            row.append("—" if cell is None else f"{_fmt(cell.mean)} ± {_fmt(cell.std)}")
            if paper:
                p = _paper(paper, agent)
                if p is None:
                    row.append("—")
                else:
                    spread = f" ± {_fmt(p.spread / paper[2])}" if p.spread is not None else ""
                    row.append(f"{_fmt(p.value / paper[2])}{spread}")
        row.append(_seed_interval(records, family.primary_metric))
        steps = sum(r["env_steps"] for r in records) / len(records)
        speed = sum(r["metrics"].get("train_env_steps_per_s", 0.0) for r in records) / len(records)
        wall = sum(r["wall_time_s"] for r in records) / len(records)
        row += [f"{steps:,.0f}", f"{speed:,.0f}" if speed else "—", f"{wall:.1f} s"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def suite_markdown(suite_name: str, groups: dict[tuple[str, str], Group], pictured: tuple[str, ...] = (),
                   aggs: dict[str, Aggregates] | None = None) -> str:
    """The suite's report; ``pictured``: tasks whose sample picture is written beside it; ``aggs``: per profile."""
    from . import stats

    suite = SUITES.get(suite_name) if suite_name in SUITES else None
    title = _sentence(suite_name)
    out = [f"# {title} suite", "",
           "<!-- Generated by `metabench report` from the records under results/; do not edit by hand. -->", ""]
    if suite:
        out += [f"{_sentence(suite.summary)}. Tasks: {', '.join(f'`{t}`' for t in suite.tasks)}.", ""]
    out += ["Each cell: mean ± std over all held-out test episodes of all seeds (the paper's table format). "
            "`paper`: the paper's value for the same agent, in our units (`—`: the paper has none). "
            "`mean over seeds [95 % CI]`: the mean of the seeds' own means, with a bootstrap CI over seeds "
            f"(rliable, random state {stats.RANDOM_STATE}): how far the result moves with the seed. "
            "Regenerate with `metabench report`.", ""]
    for profile in _profile_order({p for p, _ in groups}):
        prof = PROFILES.get(profile) if profile in PROFILES else None
        out += [f"## Profile `{profile}`", ""]
        if prof:
            out += [f"{_sentence(prof.summary)}.", ""]
        for (p, task), group in sorted(groups.items(), key=lambda kv: _task_key(suite, kv[0][1])):
            if p != profile:
                continue
            family = make_family(task)
            budget = prof.budget(task) if prof and task in prof.train_env_steps else None
            out += [f"### `{task}`" + (f" — meta-training budget {budget:,} env steps, "
                                       f"{prof.test_tasks_for(task):,} held-out test tasks per run"
                                       if budget and prof else ""), ""]
            out += task_table(task, family, group)
            out.append("")
            out.append(f"Command: `metabench run --suite {suite_name} --tasks {task} --profile {profile} "
                       f"--agents {','.join(_agent_order(set(group.ok))) or 'all'}`, then `metabench report`.")
            out.append("")
            if family.retention_variants() and group.ok:
                out += retention_table(task, family, group)
            if group.failed:
                out += ["Failed runs (rerun the command to retry them):", ""]
                out += [f"- `{path.parent.name}/{path.name}`: {r['error']}" for path, r in group.failed]
                out.append("")
            if group.stale:
                stale = defaultdict(list)
                for _, r in group.stale:
                    stale[r["agent"]].append(str(r["seed"]))
                out += ["Stale records, left out of this table and its figures: their config (task, budget or agent "
                        "settings) is not what `metabench run` runs now, which reruns and replaces them: "
                        + "; ".join(f"`{a}` seeds {', '.join(sorted(stale[a], key=int))}" for a in _agent_order(set(stale)))
                        + ".", ""]
        out += [f"![{suite_name} ({profile})]({FIGURES}/{suite_name}-{profile}.png)", ""]
        if aggs and profile in aggs:
            out += aggregates_markdown(aggs[profile])
            out += [f"![{suite_name} ({profile}) aggregates]({FIGURES}/{suite_name}-{profile}-stats.png)", ""]
    for task in pictured:
        out += [f"![sample `{task}` tasks]({FIGURES}/{task}-samples.png)", ""]
    return "\n".join(out)


@dataclass
class Aggregates:
    """rliable statistics of one (suite, profile) on normalised scores."""

    tasks: list[str]
    bounds: dict[str, tuple[float, float]]
    """task -> (random, high): the scores normalised to 0 and 1."""
    scores: dict[str, Any]
    """agent -> ``[runs, tasks]`` normalised final scores."""
    intervals: dict[str, dict[str, Any]]
    improvement: dict[str, Any]
    curves: dict[str, dict[str, tuple[list[float], Any, Any, Any]]]
    """task -> agent -> (x in the family's ``curve_x`` units, IQM, low, high) of the normalised held-out score
    along meta-training."""
    best_agent_high: set[str] = field(default_factory=set)
    """Tasks without a documented ceiling, whose 1 is the best agent's mean score here (the paper's Fig. 6
    convention) rather than a ceiling."""


TARGET = "metods"
"""The agent whose probability of improvement over each baseline is reported."""


def aggregates(suite_name: str, profile: str, groups: dict[tuple[str, str], Group]) -> Aggregates | None:
    """Normalised scores and their rliable statistics, or None if no task of the suite has a ceiling."""
    import numpy as np

    from . import stats

    suite = SUITES.get(suite_name) if suite_name in SUITES else None
    tasks, bounds, best_high = [], {}, set()
    for task in sorted({t for p, t in groups if p == profile}, key=lambda t: _task_key(suite, t)):
        if not groups[(profile, task)].ok:
            continue
        if (b := stats.bounds(task)) is None and (b := _best_agent_bounds(task, groups[(profile, task)])):
            best_high.add(task)
        if b is not None:
            tasks.append(task)
            bounds[task] = b
    if not tasks:
        return None
    agents = [a for a in _agent_order({a for t in tasks for a in groups[(profile, t)].ok})
              if all(groups[(profile, t)].ok.get(a) for t in tasks)]
    scores, curves = {}, {}
    for agent in agents:
        runs = {}
        for t in tasks:
            metric = make_family(t).primary_metric
            runs[t] = {r["seed"]: stats.normalise(r["metrics"][metric], *bounds[t])
                       for _, r in groups[(profile, t)].ok[agent] if metric in r["metrics"]}
        scores[agent] = stats.score_matrix(runs, tasks)
    for t in tasks:
        family = make_family(t)
        curves[t] = {}
        for agent in agents:
            runs = groups[(profile, t)].ok[agent]
            xs, per_seed = _per_seed_curve(runs, "eval", family.primary_metric)
            if len(xs) > 1:
                iqm, low, high = stats.iqm_curve(stats.normalise(np.array(per_seed), *bounds[t]))
                keep, x = _in_curve_x(runs, family, xs)
                curves[t][agent] = (x, iqm[keep], low[keep], high[keep])
    return Aggregates(tasks, bounds, scores, stats.aggregate_intervals(scores),
                      stats.probability_of_improvement(scores, TARGET), curves, best_high)


def _best_agent_bounds(task: str, group: Group, simulate_random: bool = True) -> tuple[float, float] | None:
    """(random, the best agent's mean over seeds) for a task with no documented ceiling; None if no agent
    beats random actions there, or lower is better. Random's level is the `random` agent's own records
    (the same held-out tasks) where there are some, else :func:`stats.random_level` (with
    ``simulate_random``; without it, None)."""
    from . import stats

    family = make_family(task)
    metric = family.primary_metric
    if not family.metric(metric).higher_is_better:
        return None
    means = [v for runs in group.ok.values() if (v := _seed_mean([r for _, r in runs], metric)) is not None]
    low = _seed_mean([r for _, r in group.ok.get("random", [])], metric)
    if low is None:
        if not simulate_random:
            return None
        low = stats.random_level(task)
    high = max(means, default=low)
    return (low, high) if high > low else None


def aggregates_markdown(agg: Aggregates) -> list[str]:
    from . import stats

    out = ["#### Aggregates over seeds (rliable)", ""]
    parts = []
    for t in agg.tasks:
        low, high = agg.bounds[t]
        family = make_family(t)
        top = "the best agent's mean here (no documented ceiling)" if t in agg.best_agent_high else "ceiling"
        parts.append(f"`{t}` {family.primary_metric}: random {_fmt(low)}, {top} {_fmt(high)}")
    out += ["Normalised score per task: (score − random) / (ceiling − random), so uniform random actions score 0 "
            "and the task's documented ceiling 1; a task without a ceiling is normalised by the best agent's "
            "mean score instead, as the paper's Fig. 6 does (" + "; ".join(parts) + "). Only agents run on every "
            "task enter. IQM and mean over runs × tasks with "
            f"95 % stratified-bootstrap CIs ({stats.REPS:,} resamples, random state {stats.RANDOM_STATE}); "
            f"P({TARGET} > agent): probability of improvement, with its CI.", ""]
    head = ["agent", "runs", "IQM [95 % CI]", "mean [95 % CI]", f"P({TARGET} > agent) [95 % CI]"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for agent, m in agg.scores.items():
        iqm, mean = agg.intervals["IQM"].get(agent), agg.intervals["mean"].get(agent)
        poi = agg.improvement.get(agent)
        out.append(f"| `{agent}` | {m.shape[0]} | {iqm.fmt() if iqm else '—'} | {mean.fmt() if mean else '—'} | "
                   f"{poi.fmt() if poi else '—'} |")
    return out + [""]


def aggregates_figure(suite_name: str, profile: str, agg: Aggregates) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from . import stats

    agents = list(agg.scores)
    colors = {a: f"C{i}" for i, a in enumerate(agents)}
    n = 2 + len(agg.tasks)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
    axes = axes[0]
    # 1. interval estimates
    ax = axes[0]
    for j, kind in enumerate(("IQM", "mean")):
        for i, agent in enumerate(agents):
            iv = agg.intervals[kind].get(agent)
            if iv is None:
                continue
            y = i + (0.18 if j == 0 else -0.18)
            ax.errorbar(iv.point, y, xerr=[[iv.point - iv.low], [iv.high - iv.point]], fmt="o" if j == 0 else "s",
                        color=colors[agent], capsize=3, label=kind if i == 0 else None,
                        markerfacecolor=colors[agent] if j == 0 else "white")
    ax.set_yticks(range(len(agents)), agents)
    ax.axvline(0, color="gray", linewidth=1, linestyle=":")
    ax.axvline(1, color="gray", linewidth=1, linestyle="--")
    ax.set_xlabel("normalised score (random 0, ceiling 1)")
    ax.set_title("IQM (●) and mean (○) with 95% bootstrap CIs")
    # 2. performance profile
    ax = axes[1]
    top = max([1.0] + [float(m.max()) for m in agg.scores.values() if m.size])
    taus = np.linspace(min([0.0] + [float(m.min()) for m in agg.scores.values() if m.size]), top, 101)
    dists, cis = stats.performance_profiles(agg.scores, taus)
    for agent in agents:
        if agent in dists:
            ax.plot(taus, dists[agent], color=colors[agent], label=agent)
            ax.fill_between(taus, cis[agent][0], cis[agent][1], color=colors[agent], alpha=0.15, linewidth=0)
    ax.set_xlabel("normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_title("Performance profile (95% CI bands)")
    ax.legend(fontsize=8)
    # 3. sample efficiency, one panel per task
    for ax, t in zip(axes[2:], agg.tasks):
        family = make_family(t)
        log_x = family.curve_xscale == "log"
        for agent, (xs, iqm, low, high) in agg.curves[t].items():
            x = np.array(xs, dtype=float)
            keep = x > 0 if log_x else np.ones_like(x, dtype=bool)
            ax.plot(x[keep], iqm[keep], color=colors[agent], label=agent)
            ax.fill_between(x[keep], low[keep], high[keep], color=colors[agent], alpha=0.2, linewidth=0)
        _training_axis(ax, family)
        ax.axhline(1, color="gray", linewidth=1, linestyle="--")
        ax.axhline(0, color="gray", linewidth=1, linestyle=":")
        ax.set_ylabel("normalised held-out score (IQM over seeds)")
        ax.set_title(f"{t}: sample efficiency (95% CI bands)")
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"metabench {suite_name} suite, profile {profile}: aggregates over seeds (rliable)")
    fig.tight_layout()
    return _png(fig)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def samples_figure(task: str) -> bytes | None:
    """The family's picture of sample tasks (e.g. mazes), or None if it draws none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 3.6))
    if not make_family(task).draw_samples(fig):
        plt.close(fig)
        return None
    return _png(fig)


def _task_key(suite, task: str):
    return (suite.tasks.index(task) if suite and task in suite.tasks else len(suite.tasks) if suite else 0, task)


def _training_axis(ax, family: TaskFamily) -> None:
    """The x axis of a meta-training curve, once its lines are drawn: its unit, log (the family's
    ``curve_xscale``, where there are lines) or linear, ticks in engineering units (50k, 2M)."""
    from matplotlib.ticker import EngFormatter

    log_x = family.curve_xscale == "log" and bool(ax.lines)
    if log_x:
        ax.set_xscale("log")
    elif ax.lines:  # long plain numbers (75000100000...) run into each other
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel(f"meta-training {family.curve_x.replace('_', ' ')}" + (" (log scale)" if log_x else ""))


def suite_figure(suite_name: str, profile: str, groups: dict[tuple[str, str], Group]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suite = SUITES.get(suite_name) if suite_name in SUITES else None
    tasks = sorted({t for p, t in groups if p == profile}, key=lambda t: _task_key(suite, t))
    fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 4 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        family = make_family(task)
        group = groups[(profile, task)]
        agents = _agent_order(set(group.ok))
        metric = family.primary_metric
        spec = family.metric(metric)
        # 1. the primary metric per agent, with the paper's value as a marker
        ax = row[0]
        if family.retention_variants():
            _impairment_bars(ax, task, family, group)
        for i, agent in enumerate(agents if not family.retention_variants() else []):
            vals = [r["metrics"][metric] for _, r in group.ok[agent] if metric in r["metrics"]]
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
            ax.bar(i, mean, yerr=sd, capsize=4, color=f"C{i}")
            if spec.paper and (p := _paper(spec.paper, agent)):
                ax.plot(i, p.value / spec.paper[2], "kD", label="paper" if i == 0 else None)
        if not family.retention_variants():
            ax.set_xticks(range(len(agents)), agents, rotation=30, ha="right")
            _levels(ax, family)
            ax.set_title(f"{task}: {metric}\n(mean ± std over seeds; ◆ paper)")
        # 2. reward at each step inside the trial
        ax = row[1]
        for i, agent in enumerate(agents):
            xs, ys = _mean_curve(group.ok[agent], "step_reward", "reward")
            if xs:
                ax.plot(xs, ys, color=f"C{i}", label=agent)
        ax.set_xlabel("step inside the trial")
        ax.set_ylabel("mean reward of active tasks")
        ax.set_title(f"{task}: reward at each step of the trial\n(held-out tasks, mean over seeds)")
        ax.legend(fontsize=8)
        # 3. held-out score along meta-training
        ax = row[2]
        log_x = family.curve_xscale == "log"
        for i, agent in enumerate(agents):
            xs, mean, half = _learning_curve(group.ok[agent], family, metric)
            if log_x and xs:  # step 0 has no place on a log axis
                keep = [j for j, x in enumerate(xs) if x > 0]
                xs, mean, half = [xs[j] for j in keep], mean[keep], half[keep]
            if len(xs) > 1:
                ax.plot(xs, mean, "o-" if len(xs) < 5 else "-", color=f"C{i}", label=agent)
                ax.fill_between(xs, mean - half, mean + half, color=f"C{i}", alpha=0.2, linewidth=0)
        if ax.lines:
            _levels(ax, family)
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no agent meta-trained here", ha="center", va="center", transform=ax.transAxes)
        _training_axis(ax, family)
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: held-out {metric}\nalong meta-training (mean over seeds, 95% CI band)")
    fig.suptitle(f"metabench {suite_name} suite, profile {profile}")
    fig.tight_layout()
    return _png(fig)


def _impairment_bars(ax, task: str, family: TaskFamily, group: Group) -> None:
    """The paper's Fig. 6 (right): unimpaired and impaired return per agent, normalised by the best unimpaired."""
    ret = retention(family, group)
    drawn = next(iter(family.retention_variants()))
    scale = ret.reference or 1.0
    agents = list(ret.intact)
    for i, agent in enumerate(agents):
        ax.bar(i - 0.2, ret.intact[agent] / scale, 0.4, color=f"C{i}", label="unimpaired" if i == 0 else None)
        if (hurt := ret.impaired[agent].get(drawn)) is not None:
            ax.bar(i + 0.2, hurt / scale, 0.4, color=f"C{i}", alpha=0.45, hatch="//",
                   label="one actuator frozen" if i == 0 else None)
        for dx, name in ((-0.2, task), (0.2, f"{task}{drawn}")):
            if ret.reference and (p := _paper((name, "normalized_return", 1.0), agent)):
                ax.plot(i + dx, p.value, "kD", label="paper" if (i, dx) == (0, -0.2) else None)
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.set_xticks(range(len(agents)), agents, rotation=30, ha="right")
    ax.legend(fontsize=8)
    what = "return ÷ best unimpaired" if ret.reference else "raw return (none positive)"
    ax.set_title(f"{task}: {what}\n(mean over seeds" + ("; ◆ paper)" if ret.reference else ")"))


def _levels(ax, family: TaskFamily) -> None:
    for j, (label, value) in enumerate(family.reference_levels().items()):
        ax.axhline(value, color="gray", linestyle="--" if j == 0 else ":", linewidth=1, label=label)


def _curve_band(runs: list[tuple[Path, dict[str, Any]]], curve: str, metric: str):
    """x, mean over seeds and the half-width of a normal 95% CI over seeds, at the x every seed has."""
    import numpy as np

    common, per_seed = _per_seed_curve(runs, curve, metric)
    if not common:
        return [], np.array([]), np.array([])
    vals = np.array(per_seed)
    mean = vals.mean(0)
    half = 1.96 * vals.std(0, ddof=1) / np.sqrt(len(per_seed)) if len(per_seed) > 1 else np.zeros_like(mean)
    return common, mean, half


def _learning_curve(runs: list[tuple[Path, dict[str, Any]]], family: TaskFamily, metric: str):
    """The held-out curve of :func:`_curve_band`, its x in the family's ``curve_x`` units.

    For ``curve_x="episodes"`` each checkpoint sits at its mean number of training episodes over the seeds
    (trials end at different steps, so the same env-step checkpoint is a slightly different episode count
    per seed).
    """
    xs, mean, half = _curve_band(runs, "eval", metric)
    keep, x = _in_curve_x(runs, family, xs)
    return x, mean[keep], half[keep]


def _in_curve_x(runs: list[tuple[Path, dict[str, Any]]], family: TaskFamily,
                xs: list[float]) -> tuple[list[int], list[float]]:
    """Env-step checkpoints ``xs`` in the family's ``curve_x`` units: (indices kept, their x).

    For ``curve_x="episodes"``: the mean over the seeds of the training episodes at each checkpoint
    (a checkpoint some seed did not log is dropped)."""
    if family.curve_x == "env_steps" or not xs:
        return list(range(len(xs))), list(xs)
    at, per_seed = _per_seed_curve(runs, "eval", family.curve_x)
    where = {x: sum(col) / len(col) for x, col in zip(at, zip(*per_seed))}
    keep = [j for j, x in enumerate(xs) if x in where]
    return keep, [where[xs[j]] for j in keep]


def _per_seed_curve(runs: list[tuple[Path, dict[str, Any]]], curve: str, metric: str):
    """x points every seed has, and ``[seeds][points]`` values (seed order)."""
    per_run = []
    for path, _ in sorted(runs, key=lambda pr: pr[1]["seed"]):
        per_run.append({x: v for c, x, m, v in iter_curves(path) if c == curve and m == metric})
    common = sorted(set.intersection(*(set(r) for r in per_run))) if per_run else []
    return common, [[r[x] for x in common] for r in per_run]


def _mean_curve(runs: list[tuple[Path, dict[str, Any]]], curve: str, metric: str) -> tuple[list[float], list[float]]:
    by_x: dict[float, list[float]] = defaultdict(list)
    for path, _ in runs:
        for c, x, m, v in iter_curves(path):
            if c == curve and m == metric:
                by_x[x].append(v)
    xs = sorted(by_x)
    return xs, [sum(by_x[x]) / len(by_x[x]) for x in xs]


@dataclass
class Built:
    files: dict[str, bytes]
    warnings: list[str]
    readme_section: str = ""
    """The README's results section (between the markers), from the same records."""


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def readme_summary(by_suite: dict[str, dict[tuple[str, str], Group]],
                   aggs: dict[tuple[str, str, str], Aggregates]) -> str:
    """One compact table per (suite, profile, task): the primary metric, per-seed means and normalised IQM
    (``aggs``: the aggregates of each (suite, profile, task) alone)."""
    out = ["<!-- Generated by `metabench report` from results/; edits here are overwritten. -->", ""]
    for suite_name, groups in sorted(by_suite.items()):
        suite = SUITES.get(suite_name) if suite_name in SUITES else None
        for profile in _profile_order({p for p, _ in groups}):
            prof = PROFILES.get(profile) if profile in PROFILES else None
            for (p, task), group in sorted(groups.items(), key=lambda kv: _task_key(suite, kv[0][1])):
                if p != profile or not group.ok:
                    continue
                family = make_family(task)
                metric = family.primary_metric
                budget = f"{prof.budget(task):,} meta-training env steps per run, " if prof and task in \
                    prof.train_env_steps else ""
                tests = f"{prof.test_tasks_for(task):,} held-out test tasks per seed" if prof else "held-out test tasks"
                agents = _agent_order(set(group.ok))
                out += [f"**{suite_name} / `{task}`, profile `{profile}`** ({budget}{tests}; "
                        f"`metabench run --suite {suite_name} --tasks {task} --profile {profile} "
                        f"--agents {','.join(agents)}`; full table: [`reports/{suite_name}.md`]"
                        f"(reports/{suite_name}.md))", ""]
                agg = aggs.get((suite_name, profile, task))
                head = ["agent", "seeds", f"{metric} (mean ± std over test episodes)", "per-seed means",
                        "mean over seeds [95 % CI]"]
                if agg:
                    head.append("normalised IQM [95 % CI]")
                out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                for agent in agents:
                    records = sorted((r for _, r in group.ok[agent]), key=lambda r: r["seed"])
                    cell = pooled(records, metric)
                    seeds = ", ".join(_fmt(r["metrics"][metric]) for r in records if metric in r["metrics"])
                    row = [f"`{agent}`", str(len(records)), f"{_fmt(cell.mean)} ± {_fmt(cell.std)}" if cell else "—",
                           seeds or "—", _seed_interval(records, metric)]
                    if agg:
                        iv = agg.intervals["IQM"].get(agent)
                        row.append(iv.fmt() if iv else "—")
                    out.append("| " + " | ".join(row) + " |")
                out.append("")
    return "\n".join(out).rstrip() + "\n"


def replace_readme_section(text: str, section: str) -> str | None:
    """``text`` with the part between the results markers replaced, or None if the markers are missing."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return None
    return text[: start + len(README_START)] + "\n" + section + text[end:]


def build_reports(results: Path) -> Built:
    """Every report file (relative path -> bytes) for the records under ``results``."""
    found = scan(Path(results))
    warnings = [str(e) for e in found.invalid]
    by_suite: dict[str, dict[tuple[str, str], Group]] = defaultdict(dict)
    for path, r in found.records:
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
    files: dict[str, bytes] = {}
    task_aggs: dict[tuple[str, str, str], Aggregates] = {}
    for suite_name, groups in sorted(by_suite.items()):
        suite = SUITES.get(suite_name) if suite_name in SUITES else None
        pictured = []
        for task in sorted({t for _, t in groups}, key=lambda t: _task_key(suite, t)):
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
        files[f"{suite_name}.md"] = suite_markdown(suite_name, groups, tuple(pictured), aggs).encode()
        for (p, task), group in groups.items():
            if (agg := aggs.get(p)) is not None and agg.tasks == [task]:
                task_aggs[(suite_name, p, task)] = agg  # the suite's aggregate is this task's alone
            elif group.ok and (agg := aggregates(suite_name, p, {(p, task): group})) is not None and agg.scores:
                task_aggs[(suite_name, p, task)] = agg
    return Built(files, warnings, readme_summary(by_suite, task_aggs) if by_suite else "")


def write_reports(results: Path, reports: Path, readme: Path | None = None) -> Built:
    """Write every report file; with ``readme``, also its results section (a warning if it has no markers)."""
    built = build_reports(results)
    for rel, data in built.files.items():
        write_atomic(Path(reports) / rel, data)
    if readme is not None and built.readme_section:
        new = replace_readme_section(readme.read_text(encoding="utf-8"), built.readme_section)
        if new is None:
            built.warnings.append(f"{readme}: no {README_START} ... {README_END} markers; results section not written")
        else:
            write_atomic(readme, new)
    return built
