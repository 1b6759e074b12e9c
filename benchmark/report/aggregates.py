"""rliable aggregates of one (suite, profile) on normalised scores, and their markdown.

One random level and one ceiling per task, whatever uses them (the suite's aggregates, the README's
per-task IQM, the impairment table's "above random"):

- random: the mean over seeds of the `random` agent's records on the task (scored on the same held-out
  test sets as every agent); only where there are none, :func:`metabench.stats.random_level` (a
  simulation of uniform random actions on 1,024 held-out tasks of seed 0);
- ceiling: the family's documented ceiling (:meth:`TaskFamily.ceiling`); where it depends on the test set
  (the maze's shortest-path oracle), it is computed over the very test sets the runs were scored on, the
  mean over their seeds. A task without a documented ceiling is normalised by the `oracle` agent's mean over
  seeds where it has records (a memoryless policy given the task: what a meta-learner approaches once it has
  inferred the task), else by the best agent's mean over seeds (the paper's Fig. 6 convention).

The text says which applies to each task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metabench.envs import TaskFamily, make_family

from .common import Group, agent_order, fmt, md_table, seed_mean, suite_of, task_key
from .curves import in_curve_x, per_seed_curve

ORACLE = "oracle"
"""The reference agent whose mean is a task's ceiling where the family documents none."""

DEFAULT_TARGET = "metods"
"""The agent compared against the others where the suite is not registered (a registered suite names its
own: :attr:`metabench.suites.Suite.target`)."""


@dataclass
class Levels:
    """What one task's primary metric is normalised by: random -> 0, high -> 1, and where each comes from."""

    random: float
    random_source: str
    high: float
    high_source: str
    best_agent: bool
    """``high`` is the best agent's mean here (no documented ceiling), not a ceiling."""


def random_of(task: str, group: Group, simulate: bool = True) -> tuple[float, str] | None:
    """(random's level of the task's primary metric, where it comes from): the `random` agent's records,
    else (with ``simulate``) :func:`metabench.stats.random_level`, else None."""
    from .. import stats

    metric = make_family(task).primary_metric
    runs = group.of("random")
    if (low := seed_mean(runs, metric)) is not None:
        n = int(runs[metric].notna().sum())
        return low, f"the `random` agent's records, {n} seed{'s' if n != 1 else ''}"
    if not simulate:
        return None
    return (stats.random_level(task),
            "no `random` records: simulated uniform random actions, 1,024 held-out tasks of seed 0")


def _test_sets(family: TaskFamily, group: Group) -> list[tuple[int, int]]:
    """(seed, test tasks) of every held-out test set the group's runs were scored on."""
    df = group.frame
    if "test_episodes" not in df:
        return []
    rows = df[df["test_episodes"].notna()]
    return sorted({(int(s), int(round(n / family.episodes_per_trial)))
                   for s, n in zip(rows["seed"].tolist(), rows["test_episodes"].tolist())})


def ceiling_of(family: TaskFamily, group: Group) -> tuple[float, str] | None:
    """(the task's ceiling, what it is), or None if the family documents none.

    The maze's ceiling, the shortest-path oracle, depends on the mazes: it is computed over the test sets
    the group's runs were scored on (each seed's, at the size it was scored at), the mean over seeds.
    Any other documented ceiling is a number of the task (Harlow's Bayes-optimal expected return)."""
    from metabench.envs.maze import Maze, oracle_score

    documented = family.ceiling()
    if documented is None:
        return None
    sets = _test_sets(family, group)
    if isinstance(family, Maze) and sets:
        vals = [oracle_score(family.config, n, seed)[family.primary_metric] for seed, n in sets]
        sizes = sorted({n for _, n in sets})
        seeds = ", ".join(str(s) for s in sorted({s for s, _ in sets}))
        return (sum(vals) / len(vals), f"the shortest-path oracle on the held-out test sets of seeds {seeds}, "
                f"{' or '.join(f'{n:,}' for n in sizes)} mazes each: the sets the runs were scored on")
    return documented, "documented, the same for every test set"


def task_levels(task: str, group: Group, simulate_random: bool = True) -> Levels | None:
    """The task's :class:`Levels`; None where lower is better, random's level is unknown (no records and
    no ``simulate_random``) or nothing scores above random."""
    family = make_family(task)
    metric = family.primary_metric
    if not family.metric(metric).higher_is_better:
        return None
    if (rand := random_of(task, group, simulate_random)) is None:
        return None
    low, low_source = rand
    if (ceiling := ceiling_of(family, group)) is not None and ceiling[0] > low:
        return Levels(low, low_source, ceiling[0], ceiling[1], False)
    oracle = group.of(ORACLE)
    if (high := seed_mean(oracle, metric)) is not None and high > low:
        n = int(oracle[metric].notna().sum())
        return Levels(low, low_source, high, f"the `{ORACLE}` agent's records, {n} seed{'s' if n != 1 else ''}: "
                      "a memoryless policy given the task", False)
    means = [v for agent in group.ok if (v := seed_mean(group.of(agent), metric)) is not None]
    high = max(means, default=low)
    if high <= low:
        return None
    return Levels(low, low_source, high, "the best agent's mean here (no documented ceiling)", True)


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
    target: str = DEFAULT_TARGET
    """The agent whose probability of improvement over each other agent is reported."""
    levels: dict[str, Levels] = field(default_factory=dict)
    """task -> its levels, with where each comes from."""
    left_out_agents: dict[str, list[str]] = field(default_factory=dict)
    """Agents not run on every task, left out: agent -> the tasks it was run on."""
    left_out_seeds: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """agent -> task -> seeds left out (not every task has them: a score matrix is runs x tasks)."""


def aggregates(suite_name: str, profile: str, groups: dict[tuple[str, str], Group],
               target: str | None = None) -> Aggregates | None:
    """Normalised scores and their rliable statistics, or None if no task can be normalised.

    ``target``: the agent compared against the others (default: the suite's)."""
    import numpy as np

    from .. import stats

    suite = suite_of(suite_name)
    target = target or (suite.target if suite else DEFAULT_TARGET)
    tasks, levels = [], {}
    for task in sorted({t for p, t in groups if p == profile}, key=lambda t: task_key(suite, t)):
        if groups[(profile, task)].ok and (lv := task_levels(task, groups[(profile, task)])) is not None:
            tasks.append(task)
            levels[task] = lv
    if not tasks:
        return None
    bounds = {t: (lv.random, lv.high) for t, lv in levels.items()}
    ran = {a: [t for t in tasks if groups[(profile, t)].ok.get(a)] for t in tasks for a in groups[(profile, t)].ok}
    agents = [a for a in agent_order(ran) if len(ran[a]) == len(tasks)]
    left_out = {a: ran[a] for a in agent_order(ran) if a not in agents}
    scores, curves, dropped = {}, {}, {}
    for agent in agents:
        runs = {}
        for t in tasks:
            metric = make_family(t).primary_metric
            runs[t] = {r["seed"]: stats.normalise(r["metrics"][metric], *bounds[t])
                       for _, r in groups[(profile, t)].ok[agent] if metric in r["metrics"]}
        scores[agent] = stats.score_matrix(runs, tasks)
        kept = set.intersection(*(set(runs[t]) for t in tasks))
        if gone := {t: sorted(set(runs[t]) - kept) for t in tasks if set(runs[t]) - kept}:
            dropped[agent] = gone
    for t in tasks:
        family = make_family(t)
        curves[t] = {}
        for agent in agents:
            runs = groups[(profile, t)].ok[agent]
            xs, per_seed = per_seed_curve(runs, "eval", family.primary_metric)
            if len(xs) > 1:
                iqm, low, high = stats.iqm_curve(stats.normalise(np.array(per_seed), *bounds[t]))
                keep, x = in_curve_x(runs, family, xs)
                curves[t][agent] = (x, iqm[keep], low[keep], high[keep])
    return Aggregates(tasks, bounds, scores, stats.aggregate_intervals(scores),
                      stats.probability_of_improvement(scores, target), curves,
                      {t for t, lv in levels.items() if lv.best_agent}, target, levels, left_out, dropped)


def _agents(names: list[str]) -> str:
    return ", ".join(f"`{a}`" for a in names)


def _seeds(seeds: list[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(str(s) for s in seeds)}"


def aggregates_markdown(agg: Aggregates) -> list[str]:
    from .. import stats

    out = ["#### Aggregates over seeds (rliable)", ""]
    parts = []
    for t in agg.tasks:
        low, high = agg.bounds[t]
        metric = make_family(t).primary_metric
        if (lv := agg.levels.get(t)) is not None:
            top = ("the best agent's mean here (no documented ceiling)" if lv.best_agent
                   else f"ceiling {fmt(high)} ({lv.high_source})")
            parts.append(f"`{t}` {metric}: random {fmt(low)} ({lv.random_source}), "
                         + (f"{top} {fmt(high)}" if lv.best_agent else top))
        else:
            top = "the best agent's mean here (no documented ceiling)" if t in agg.best_agent_high else "ceiling"
            parts.append(f"`{t}` {metric}: random {fmt(low)}, {top} {fmt(high)}")
    text = ("Normalised score per task: (score − random) / (ceiling − random), so random actions score 0 and "
            "the ceiling 1. Random: the mean over seeds of the `random` agent's records on the task, scored on "
            "the same held-out test sets as every agent (only without such records, a simulation of uniform "
            "random actions on 1,024 held-out tasks of seed 0). Ceiling: the task's documented ceiling, computed "
            "over the held-out test sets the runs were scored on where it depends on them; a task without one is "
            "normalised by the `oracle` agent's mean (a memoryless policy given the task) where it has records, "
            "else by the best agent's mean score, as the paper's Fig. 6 does. "
            "Per task: " + "; ".join(parts) + ". Only agents run on every task enter")
    if agg.left_out_agents:
        text += " (left out: " + "; ".join(f"`{a}`, run on {_agents(ts)} only"
                                           for a, ts in agg.left_out_agents.items()) + ")"
    text += ", and of each agent only the seeds every task has (rliable's score matrix is runs × tasks)"
    if agg.left_out_seeds:
        by_runs: dict[tuple[str, tuple[int, ...]], list[str]] = {}
        for agent, per_task in agg.left_out_seeds.items():
            for t, seeds in per_task.items():
                by_runs.setdefault((t, tuple(seeds)), []).append(agent)
        text += ("; runs left out: " + "; ".join(f"`{t}` {_seeds(list(s))} of {_agents(a)}"
                                                  for (t, s), a in by_runs.items()))
    text += (f". IQM and mean over runs × tasks with 95 % stratified-bootstrap CIs ({stats.REPS:,} resamples, "
             f"random state {stats.RANDOM_STATE}); P({agg.target} > agent): probability of improvement, with its CI.")
    out += [text, ""]
    rows = []
    for agent, m in agg.scores.items():
        iqm, mean = agg.intervals["IQM"].get(agent), agg.intervals["mean"].get(agent)
        poi = agg.improvement.get(agent)
        rows.append([f"`{agent}`", str(m.shape[0]), iqm.fmt() if iqm else "—", mean.fmt() if mean else "—",
                     poi.fmt() if poi else "—"])
    out += md_table(["agent", "runs", "IQM [95 % CI]", "mean [95 % CI]", f"P({agg.target} > agent) [95 % CI]"], rows)
    return out + [""]
