"""The per-task tables: the paper's format (mean ± std over all test episodes, the paper's value beside
ours) and the impairment (retention) tables, all from the group's record frame."""

from __future__ import annotations

from dataclasses import dataclass

from metabench.envs import TaskFamily

from .common import (Group, agent_order, fmt, md_table, paper, pooled, seed_interval, seed_mean, table_columns,
                     values)


def task_table(task: str, family: TaskFamily, group: Group) -> list[str]:
    cols = table_columns(family)
    head = ["agent", "seeds"]
    for name, spec, mapping in cols:
        head.append(f"{name} {'↑' if spec.higher_is_better else '↓'}")
        if mapping:
            head.append("paper")
    head.append(f"{family.primary_metric}: mean over seeds [95 % CI]")
    if family.solved:
        head.append(f"seeds solving ({family.solved[0]} ≥ {family.solved[1]:g}) [Wilson 95 % CI]")
    head += ["env steps / run", "train env-steps/s", "wall time / run"]
    rows, notes = [], []
    for agent in agent_order(group.ok):
        df = group.of(agent)
        note = row_note(agent, family)
        if note:
            notes.append("\\*" * (len(notes) + 1) + f" `{agent}`: {note}")
        row = [f"`{agent}`" + ("\\*" * len(notes) if note else ""), str(len(df))]
        for name, _spec, mapping in cols:
            cell = pooled(df, name)
            row.append("—" if cell is None else f"{fmt(cell.mean)} ± {fmt(cell.std)}")
            if mapping:
                p = paper(mapping, agent)
                if p is None:
                    row.append("—")
                else:
                    spread = f" ± {fmt(p.spread / mapping[2])}" if p.spread is not None else ""
                    row.append(f"{fmt(p.value / mapping[2])}{spread}")
        row.append(seed_interval(df, family.primary_metric))
        if family.solved:
            row.append(solve_rate(df, *family.solved))
        n = len(df)
        steps = sum(df["env_steps"].tolist()) / n
        speed = (sum(df["train_env_steps_per_s"].fillna(0.0).tolist()) / n
                 if "train_env_steps_per_s" in df else 0.0)
        wall = sum(df["wall_time_s"].tolist()) / n
        row += [f"{steps:,.0f}", f"{speed:,.0f}" if speed else "—", f"{wall:.1f} s"]
        rows.append(row)
    return md_table(head, rows) + (["", *[n + "  " for n in notes[:-1]], notes[-1]] if notes else [])


def other_references(family: TaskFamily) -> list[str]:
    """The rows of ``paper_results.csv`` the family names as other references (:meth:`TaskFamily.other_references`),
    as a small table with each row's caveat."""
    from metabench.paper import paper_values

    rows = [[f"`{v.agent}`", v.metric, fmt(v.value), v.note] for name in family.other_references()
            for v in paper_values() if v.task == name]
    if not rows:
        return []
    return ["Other published references (not our runs; different task versions and protocols):", "",
            *md_table(["agent", "metric", "value", "source and caveat"], rows), ""]


def row_note(agent: str, family: TaskFamily) -> str | None:
    """What a row runs that the paper does not (:meth:`~metabench.agents.base.Agent.row_note`), if anything."""
    from metabench.agents import AGENTS

    return AGENTS.get(agent).cls.row_note(family) if agent in AGENTS else None


def solve_rate(df, metric: str, threshold: float) -> str:
    """``4/5 (80 %) [38, 96]``: the seeds whose mean of ``metric`` is at least ``threshold``, with the
    share's Wilson 95 % interval in per cent; "—" if no seed has the metric."""
    from .. import stats

    vals = values(df, metric)
    if not vals:
        return "—"
    k = sum(v >= threshold for v in vals)
    ci = stats.wilson_interval(k, len(vals))
    return f"{k}/{len(vals)} ({100 * ci.point:.0f} %) [{100 * ci.low:.0f}, {100 * ci.high:.0f}]"


@dataclass
class Retention:
    """One task's impairment scores per agent (means over seeds of the primary metric)."""

    intact: dict[str, float]
    impaired: dict[str, dict[str, float]]
    """agent -> variant suffix -> score."""
    top_agent: str | None
    """Whose unimpaired score the others are measured against: the `oracle` where it has records, else the
    best agent (None: no agent has an unimpaired score)."""

    @property
    def top(self) -> float | None:
        """:attr:`top_agent`'s unimpaired score, whatever its sign: what "above random" runs up to."""
        return None if self.top_agent is None else self.intact[self.top_agent]

    @property
    def reference(self) -> float | None:
        """What "normalised" divides by: :attr:`top` where it is positive, else None."""
        return self.top if self.top is not None and self.top > 0 else None

    @property
    def by_oracle(self) -> bool:
        from .aggregates import ORACLE

        return self.top_agent == ORACLE

    @property
    def top_source(self) -> str:
        """Whose unimpaired score :attr:`top` is, for the text."""
        return f"the `{self.top_agent}`'s" if self.by_oracle else "the best agent's"


def retention(family: TaskFamily, group: Group) -> Retention:
    metric = family.primary_metric
    intact, impaired = {}, {}
    for agent in agent_order(group.ok):
        df = group.of(agent)
        if (v := seed_mean(df, metric)) is not None:
            intact[agent] = v
        impaired[agent] = {s: v for s in family.retention_variants()
                           if (v := seed_mean(df, f"{metric}{s}")) is not None}
    from .aggregates import ORACLE

    top = ORACLE if ORACLE in intact else max(intact, key=intact.__getitem__, default=None)
    return Retention(intact, impaired, top)


def retention_table(task: str, family: TaskFamily, group: Group) -> list[str]:
    """The paper's Fig. 6 (right) numbers: normalised returns beside the paper's, retention, per actuator."""
    from .aggregates import random_of

    ret = retention(family, group)
    variants = family.retention_variants()
    drawn = next(iter(variants))
    metric = family.primary_metric
    ref = ret.reference
    # "above random": from the `random` agent's records where it was run (never a simulation here) up to the
    # oracle's unimpaired score (else the best agent's)
    rand = random_of(task, group, simulate=False)
    low = rand[0] if rand else None
    best, whose = ret.top, ret.top_source
    anchored = (family.metric(metric).higher_is_better and low is not None and best is not None
                and best > low)
    out = [f"Impairment (`{task}`): the same trained agents, scored again with {variants[drawn]}. "
           f"Normalised (as the paper's Fig. 6, which divides by its best agent's) = {metric} / {whose} "
           f"unimpaired {metric} "
           + (f"({fmt(ref)}, here)" if ref else "(undefined here: not positive)")
           + "; retention = impaired / unimpaired, per agent (defined for a positive unimpaired return)"
           + (f"; above random = ({metric} − random's unimpaired {fmt(low)}) / ({whose} "
              f"unimpaired {fmt(best)} − random's), defined whatever the sign" if anchored else "")
           + "; means over seeds.", ""]
    head = ["agent", "unimpaired", "impaired", "normalised", "paper", "impaired normalised", "paper",
            "retention"] + (["above random: unimpaired", "above random: impaired"] if anchored else [])

    def norm(v: float | None) -> str:
        return "—" if v is None or ref is None else fmt(v / ref)

    def above(v: float | None) -> list[str]:
        return [] if not anchored else ["—" if v is None else fmt((v - low) / (best - low))]

    def paper_ratio(task_name: str, agent: str) -> str:
        p = paper((task_name, "normalized_return", 1.0), agent)
        return "—" if p is None else fmt(p.value)

    rows = []
    for agent, intact in ret.intact.items():
        hurt = ret.impaired[agent].get(drawn)
        keep = "—" if hurt is None or intact <= 0 else fmt(hurt / intact)
        rows.append([f"`{agent}`", fmt(intact), "—" if hurt is None else fmt(hurt), norm(intact),
                     paper_ratio(task, agent), norm(hurt), paper_ratio(f"{task}{drawn}", agent), keep,
                     *above(intact), *above(hurt)])
    out += md_table(head, rows) + [""]
    per_joint = [s for s in variants if s != drawn]
    if per_joint:
        out += [f"Per frozen actuator (`{task}`; {metric} with that actuator frozen in every test task, mean "
                "over seeds; in brackets the retention, impaired / unimpaired, where the unimpaired return is "
                "positive):", ""]
        rows = []
        for agent, intact in ret.intact.items():
            cells = [f"`{agent}`", fmt(intact)]
            for s in per_joint:
                v = ret.impaired[agent].get(s)
                cells.append("—" if v is None else fmt(v) + (f" ({fmt(v / intact)})" if intact > 0 else ""))
            rows.append(cells)
        out += md_table(["agent", "unimpaired"] + [s.rsplit("_", 1)[1] for s in per_joint], rows)
        out.append("")
    return out
