"""The report's figures: per suite and profile, the primary metric, the reward inside the trial and the
held-out score along meta-training per task; the rliable aggregates; the families' sample tasks."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable

from metabench.envs import TaskFamily, make_family

from .aggregates import Aggregates
from .common import Group, agent_order, fmt, paper, suite_of, task_key
from .curves import band_limits, learning_curve, mean_curve
from .tables import retention

PAPER_RANGE = 2.0
"""A paper value is drawn as a marker only within this many times our values' span beyond them; further out
it is written as text at the axis edge, so that it does not flatten our bars (ant_dir: the paper's ~600
against our returns below 0)."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(i: int) -> object:
    """The ``i``-th agent's colour in a figure: matplotlib's ten default colours, then ten of tab20b's (one per
    hue and shade), so that an eleventh agent does not repeat the first one's."""
    if i < 10:
        return f"C{i}"
    import matplotlib

    j = (i - 10) % 10
    return matplotlib.colormaps["tab20b"](4 * (j % 5) + j // 5 * 2)


def _colors(agents: Iterable[str]) -> dict[str, object]:
    """Each agent's colour in a figure, by its place in ``agents``: one colour per agent over the whole figure."""
    return {a: _color(i) for i, a in enumerate(agents)}


def _png(fig, tight: bool = False) -> bytes:
    """The figure as PNG bytes (no software tag: the same figure, the same bytes); ``tight``: cropped to what
    is drawn, legends under the axes included."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None}, **({"bbox_inches": "tight"} if tight else {}))
    plt.close(fig)
    return buf.getvalue()


def _legend(ax, sources=None) -> None:
    """The legend of what has a label (none if nothing has: matplotlib would warn).

    With ``sources`` (axes whose entries share colours), one legend of all their labels, each once, under
    ``ax``: off the curves, however many agents there are."""
    if sources is None:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        return
    entries: dict[str, object] = {}
    for src in sources:
        for handle, label in zip(*src.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        ax.legend(list(entries.values()), list(entries), fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, -0.2), ncol=min(len(entries), 5), frameon=False)


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


def _levels(ax, family: TaskFamily) -> None:
    for j, (label, value) in enumerate(family.reference_levels().items()):
        ax.axhline(value, color="gray", linestyle="--" if j == 0 else ":", linewidth=1, label=label)


def _paper_marks(ax, marks: list[tuple[float, float]], ours: list[float]) -> tuple[int, int]:
    """The paper's values ``(x, value)`` beside our bars: a ◆ where it fits near our values (within
    :data:`PAPER_RANGE` of their span), else written as text at the top or bottom edge with an arrow, in
    room made for it there. Returns (values drawn, values written)."""
    from matplotlib.transforms import blended_transform_factory

    lo, hi = min(ours + [0.0]), max(ours + [0.0])
    reach = PAPER_RANGE * max(hi - lo, 1e-9)
    near = [(x, v) for x, v in marks if lo - reach <= v <= hi + reach]
    far = [(x, v) for x, v in marks if (x, v) not in near]
    for j, (x, v) in enumerate(near):
        ax.plot(x, v, "kD", label="paper" if j == 0 else None)
    if far:
        # the axis keeps our range, with room for the text at its top (or bottom) edge
        bottom, top = ax.get_ylim()
        room = 0.3 * (top - bottom)
        ax.set_ylim(bottom - room * any(v < lo for _, v in far), top + room * any(v > hi for _, v in far))
        edge = blended_transform_factory(ax.transData, ax.transAxes)
        for x, v in far:
            up = v > hi
            ax.text(x, 0.97 if up else 0.03, f"{'↑' if up else '↓'} paper\n{fmt(v)}", transform=edge,
                    ha="center", va="top" if up else "bottom", fontsize=8)
    return len(near), len(far)


def _below_suptitle(fig) -> None:
    """``tight_layout`` with 0.6 inch kept free at the top: left to itself it puts the first row's titles
    over the figure's suptitle."""
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))


def suite_figure(suite_name: str, profile: str, groups: dict[tuple[str, str], Group]) -> bytes:
    plt = _pyplot()
    suite = suite_of(suite_name)
    tasks = sorted({t for p, t in groups if p == profile}, key=lambda t: task_key(suite, t))
    fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 4.6 * len(tasks)), squeeze=False)
    # one colour per agent across the whole figure, not per row (PEARL is PEARL's colour on every task)
    colors = _colors(agent_order(a for t in tasks for a in groups[(profile, t)].ok))
    for row, task in zip(axes, tasks):
        family = make_family(task)
        group = groups[(profile, task)]
        agents = agent_order(group.ok)
        metric = family.primary_metric
        spec = family.metric(metric)
        # 1. the primary metric per agent, with the paper's value beside it
        ax = row[0]
        if family.retention_variants():
            _impairment_bars(ax, task, family, group, colors)
        else:
            ours, marks = [], []
            for i, agent in enumerate(agents):
                vals = [r["metrics"][metric] for _, r in group.ok[agent] if metric in r["metrics"]]
                mean = sum(vals) / len(vals)
                sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
                ax.bar(i, mean, yerr=sd, capsize=4, color=colors[agent])
                ours += [mean - sd, mean + sd]
                if spec.paper and (p := paper(spec.paper, agent)):
                    marks.append((i, p.value / spec.paper[2]))
            _levels(ax, family)
            ours += list(family.reference_levels().values())
            drawn, written = _paper_marks(ax, marks, ours)
            ax.set_xticks(range(len(agents)), agents, rotation=30, ha="right")
            shown = ("; ◆ paper" if drawn else "") + ("; paper off this scale: ↑ text" if written else "")
            ax.set_title(f"{task}: {metric}\n(mean ± std over seeds{shown})")
        # 2. reward at each step inside the trial
        ax = row[1]
        for agent in agents:
            xs, ys = mean_curve(group.ok[agent], "step_reward", "reward")
            if xs:
                ax.plot(xs, ys, color=colors[agent], label=agent)
        ax.set_xlabel("step inside the trial")
        ax.set_ylabel("mean reward of active tasks")
        ax.set_title(f"{task}: reward at each step of the trial\n(held-out tasks, mean over seeds)")
        # 3. held-out score along meta-training (Meta-World: success on the meta-train goals, as the paper)
        ax = row[2]
        log_x = family.curve_xscale == "log"
        curve_metric = family.curve_metric or metric
        for agent in agents:
            xs, mean, half = learning_curve(group.ok[agent], family, curve_metric)
            if log_x and xs:  # step 0 has no place on a log axis
                keep = [j for j, x in enumerate(xs) if x > 0]
                xs, mean, half = [xs[j] for j in keep], mean[keep], half[keep]
            if len(xs) > 1:
                ax.plot(xs, mean, "o-" if len(xs) < 5 else "-", color=colors[agent], label=agent)
                low, high = band_limits(mean, half, family.metric_bounds(curve_metric))
                ax.fill_between(xs, low, high, color=colors[agent], alpha=0.2, linewidth=0)
        if ax.lines:
            _levels(ax, family)
        else:
            ax.text(0.5, 0.5, "no agent meta-trained here", ha="center", va="center", transform=ax.transAxes)
        _training_axis(ax, family)
        _legend(row[1], sources=row[1:])  # agents keep their colour across the row: one legend for both
        ax.set_ylabel(curve_metric)
        what = "held-out" if curve_metric == metric else "evaluated"
        ax.set_title(f"{task}: {what} {curve_metric}\nalong meta-training (mean over seeds, 95% CI band)")
    fig.suptitle(f"metabench {suite_name} suite, profile {profile}")
    _below_suptitle(fig)
    return _png(fig, tight=True)


def _impairment_bars(ax, task: str, family: TaskFamily, group: Group, colors: dict[str, object]) -> None:
    """The paper's Fig. 6 (right): unimpaired and impaired return per agent, normalised by the best unimpaired."""
    ret = retention(family, group)
    drawn = next(iter(family.retention_variants()))
    scale = ret.reference or 1.0
    agents = list(ret.intact)
    for i, agent in enumerate(agents):
        ax.bar(i - 0.2, ret.intact[agent] / scale, 0.4, color=colors[agent], label="unimpaired" if i == 0 else None)
        if (hurt := ret.impaired[agent].get(drawn)) is not None:
            ax.bar(i + 0.2, hurt / scale, 0.4, color=colors[agent], alpha=0.45, hatch="//",
                   label="one actuator frozen" if i == 0 else None)
        for dx, name in ((-0.2, task), (0.2, f"{task}{drawn}")):
            if ret.reference and (p := paper((name, "normalized_return", 1.0), agent)):
                ax.plot(i + dx, p.value, "kD", label="paper" if (i, dx) == (0, -0.2) else None)
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.set_xticks(range(len(agents)), agents, rotation=30, ha="right")
    _legend(ax)
    what = (f"return ÷ {'oracle' if ret.by_oracle else 'best'} unimpaired" if ret.reference
            else "raw return (none positive)")
    ax.set_title(f"{task}: {what}\n(mean over seeds" + ("; ◆ paper)" if ret.reference else ")"))


def aggregates_figure(suite_name: str, profile: str, agg: Aggregates) -> bytes:
    import numpy as np

    from .. import stats

    plt = _pyplot()
    agents = list(agg.scores)
    colors = _colors(agents)
    n = 2 + len(agg.tasks)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.6), squeeze=False)
    axes = axes[0]
    # 1. interval estimates: IQM a filled circle, mean an open square (the title names the same markers)
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
    ax.set_title("IQM (●) and mean (□) with 95% bootstrap CIs")
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
    _legend(ax, sources=[ax])  # the agents' colours in every panel
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
    fig.suptitle(f"metabench {suite_name} suite, profile {profile}: aggregates over seeds (rliable)")
    _below_suptitle(fig)
    return _png(fig, tight=True)


def samples_figure(task: str) -> bytes | None:
    """The family's picture of sample tasks (e.g. mazes), or None if it draws none."""
    plt = _pyplot()
    fig = plt.figure(figsize=(15, 3.6))
    if not make_family(task).draw_samples(fig):
        plt.close(fig)
        return None
    return _png(fig)
