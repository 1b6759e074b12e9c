"""The impairment report (the paper's Fig. 6 right) from hand-made records: normalisation, paper values, retention."""

from pathlib import Path

import pytest

from metabench.envs import FAMILIES
from metabench.report import Group, retention_table


def _record(agent: str, intact: float, frozen: float, per_joint: dict[int, float]) -> tuple[Path, dict]:
    metrics = {"episode_return": intact, "episode_return_frozen": frozen,
               **{f"episode_return_frozen_j{k}": v for k, v in per_joint.items()}}
    return Path(f"{agent}.json"), {"agent": agent, "seed": 0, "metrics": metrics}


def _cells(lines: list[str], agent: str) -> list[str]:
    row = next(line for line in lines if line.startswith(f"| `{agent}` |"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_retention_table_normalises_by_the_best_unimpaired_agent_beside_the_paper():
    family = FAMILIES.get("impairment_cheetah")()
    group = Group(ok={"metods": [_record("metods", 200.0, 100.0, {0: 50.0})],
                      "rl2": [_record("rl2", 100.0, 80.0, {0: 100.0})]}, failed=[])
    lines = retention_table("impairment_cheetah", family, group)
    # agent, unimpaired, impaired, normalised, paper, impaired normalised, paper, retention
    assert _cells(lines, "metods") == ["`metods`", "200.00", "100.00", "1.00", "1.00", "0.50", "0.80", "0.50"]
    assert _cells(lines, "rl2") == ["`rl2`", "100.00", "80.00", "0.50", "0.97", "0.40", "0.59", "0.80"]
    per_joint = lines[lines.index(next(x for x in lines if x.startswith("Per frozen actuator"))):]
    assert _cells(per_joint, "metods")[1:4] == ["200.00", "50.00 (0.25)", "—"]
    assert _cells(per_joint, "rl2")[2] == "100.00 (1.00)"
    assert not any("above random" in line for line in lines)  # no random agent: no anchor


def test_retention_table_anchors_negative_returns_on_random():
    family = FAMILIES.get("impairment_ant")()
    group = Group(ok={"random": [_record("random", -30.0, -20.0, {0: -25.0})],
                      "rl2": [_record("rl2", -10.0, 0.0, {0: -5.0})]}, failed=[])
    lines = retention_table("impairment_ant", family, group)
    assert any("undefined here" in line for line in lines)
    # the paper's ratios are undefined; above random: (x + 30) / (-10 + 30)
    assert _cells(lines, "rl2") == ["`rl2`", "-10.00", "0.00", "—", "0.75", "—", "0.28", "—", "1.00", "1.50"]
    assert _cells(lines, "random")[-2:] == ["0.00", "0.50"]
    per_joint = lines[lines.index(next(x for x in lines if x.startswith("Per frozen actuator"))):]
    assert _cells(per_joint, "rl2")[1:3] == ["-10.00", "-5.00"]


def test_summary_puts_an_iqm_only_under_the_task_it_was_computed_on():
    from metabench.report import Aggregates, summary_markdown
    from metabench.stats import Interval

    def group(agent: str, value: float) -> Group:
        return Group(ok={agent: [(Path("r.json"), {"agent": agent, "seed": 0,
                                                   "metrics": {"episode_return": value}})]}, failed=[])

    groups = {("quick", "harlow"): group("rl2", 4.5), ("quick", "ant_dir"): group("rl2", -7.0)}
    agg = Aggregates(tasks=["harlow"], bounds={}, scores={}, intervals={"IQM": {"rl2": Interval(0.9, 0.8, 1.0)}},
                     improvement={}, curves={})
    text = summary_markdown({"efficiency": groups}, {("efficiency", "quick", "harlow"): agg})
    harlow, ant = text.split("**efficiency / `ant_dir`")[0], text.split("**efficiency / `ant_dir`")[1]
    assert "0.90 [0.80, 1.00]" in harlow and "normalised IQM" in harlow
    assert "0.90" not in ant and "normalised IQM" not in ant
    assert "(efficiency.md)" in harlow  # links relative to reports/, where the summary is written


def test_the_readme_overview_is_one_row_per_task_with_the_headline_agents_and_the_papers_metods():
    from metabench.report import readme_overview
    from metabench.report.markdown import HEADLINE_AGENTS

    def group(runs: dict[str, tuple[float, ...]]) -> Group:
        return Group(ok={a: [(Path(f"{a}{i}.json"), {"agent": a, "seed": i, "metrics": {"episode_return": v}})
                             for i, v in enumerate(vals)] for a, vals in runs.items()}, failed=[])

    groups = {("quick", "harlow"): group({"random": (0.4, 0.4), "metods": (5.0, 4.0), "blind": (1.0,)}),
              ("quick", "ant_dir"): group({"rl2": (100.0,)})}
    text = readme_overview({"efficiency": groups})
    rows = [line for line in text.splitlines() if line.startswith("| efficiency")]
    assert len(rows) == 2 and "harlow" in rows[0] and "ant_dir" in rows[1]
    harlow = [c.strip() for c in rows[0].strip("|").split("|")]
    head = [c.strip() for c in text.splitlines()[text.splitlines().index(next(
        line for line in text.splitlines() if line.startswith("| suite")))].strip("|").split("|")]
    col = {name: harlow[head.index(f"`{name}`")] for name in HEADLINE_AGENTS}
    assert col["metods"].startswith("4.50 [") and col["metods"].endswith("] (2)") and col["random"].startswith("0.40")
    assert col["rl2"] == "—" and "blind" not in text  # only the headline agents; summary.md has the rest
    ant = [c.strip() for c in rows[1].strip("|").split("|")]
    assert ant[head.index("`rl2`")] == "100.00 (1)"  # one seed: no interval
    assert harlow[-1] != "—"  # the paper has MetODS on Harlow
    from metabench.profiles import PROFILES
    quick, paper = PROFILES.get("quick").budget("harlow"), PROFILES.get("paper").budget("harlow")
    assert harlow[3] == f"{quick / 1e6:.3g} M ({100 * quick / paper:.3g} %)"  # the budget, its share of the paper's


def test_a_task_without_a_ceiling_is_normalised_by_the_best_agent(monkeypatch):
    from metabench import stats
    from metabench.report import aggregates, aggregates_markdown

    def group_of(runs: dict[str, tuple[float, ...]]) -> Group:
        return Group(ok={a: [(Path(f"{a}{i}.json"), {"agent": a, "seed": i, "metrics": {"episode_return": v}})
                             for i, v in enumerate(vals)] for a, vals in runs.items()}, failed=[])

    def no_simulation(task, n_tasks=1024):
        raise AssertionError("random's level comes from its records")

    # random's level: the `random` agent's records on the same test tasks
    monkeypatch.setattr(stats, "random_level", no_simulation)
    group = group_of({"random": (-31.0, -29.0), "metods": (-12.0, -8.0), "rl2": (-8.0, -6.0)})
    agg = aggregates("efficiency", "quick", {("quick", "ant_dir"): group})
    assert agg.tasks == ["ant_dir"] and agg.best_agent_high == {"ant_dir"}
    assert agg.bounds["ant_dir"] == (-30.0, -7.0)
    assert sorted(agg.scores["rl2"].ravel().tolist()) == pytest.approx([22 / 23, 24 / 23])
    assert "best agent's mean here" in "\n".join(aggregates_markdown(agg))
    # without random's records, random's level is simulated; no agent above it: nothing to normalise by
    monkeypatch.setattr(stats, "random_level", lambda task, n_tasks=1024: -30.0)
    assert aggregates("efficiency", "quick", {("quick", "ant_dir"): group_of({"rl2": (-7.0, -7.0)})}).bounds == {
        "ant_dir": (-30.0, -7.0)}
    assert aggregates("efficiency", "quick", {("quick", "ant_dir"): group_of({"maml": (-40.0, -41.0)})}) is None


def test_records_of_an_older_config_are_listed_as_stale_and_left_out():
    import copy

    from metabench.profiles import PROFILES
    from metabench.report import is_current, suite_markdown
    from metabench.runner import resolve_config

    def record(agent: str, seed: int, value: float) -> dict:
        return {"agent": agent, "task": "harlow", "profile": "smoke", "suite": "efficiency", "seed": seed,
                "status": "ok", "metrics": {"episode_return": value}, "env_steps": 100, "wall_time_s": 1.0,
                "config": resolve_config(agent, "harlow", PROFILES.get("smoke"), seed)}

    current = record("rl2", 0, 4.0)
    older = record("rl2", 1, 99.0)
    older["config"] = copy.deepcopy(older["config"])
    older["config"]["task"]["item_dim"] = 1  # a record of an earlier default
    assert is_current(current) and not is_current(older)
    budget = record("rl2", 2, 99.0)
    budget["config"]["profile"]["train_env_steps"] = 1
    assert not is_current(budget)
    # An agent option added after the record was written (here lr_anneal): the record ran its default.
    before_option = record("rl2", 3, 4.0)
    del before_option["config"]["agent"]["lr_anneal"]
    assert is_current(before_option)
    other_value = record("rl2", 3, 4.0)
    other_value["config"]["agent"]["lr_anneal"] = True
    assert not is_current(other_value)
    removed_option = record("rl2", 3, 4.0)
    removed_option["config"]["agent"]["no_such_option"] = 1
    assert not is_current(removed_option)

    group = Group(ok={"rl2": [(Path("rl2/seed0.json"), current)]}, failed=[],
                  stale=[(Path("rl2/seed1.json"), older), (Path("rl2/seed2.json"), budget)])
    text = suite_markdown("efficiency", {("smoke", "harlow"): group})
    assert "Stale records" in text and "`rl2` seeds 1, 2" in text
    assert "99.00" not in text and "4.00" in text


def test_the_harlow_curve_is_drawn_against_training_episodes(tmp_path):
    from metabench.records import curves_csv, curves_path
    from metabench.report import _learning_curve, aggregates

    runs = []
    for seed, (episodes, scores) in enumerate([((0, 900, 2000), (0.4, 2.0, 5.0)), ((0, 1100, 2200), (0.4, 3.0, 4.0))]):
        path = tmp_path / f"seed{seed}.json"
        rows = [row for x, e, v in zip((0, 500, 1000), episodes, scores)
                for row in (("eval", x, "env_steps", x), ("eval", x, "episodes", e), ("eval", x, "episode_return", v))]
        curves_path(path).write_text(curves_csv(rows))
        runs.append((path, {"seed": seed}))
    xs, mean, half = _learning_curve(runs, FAMILIES.get("harlow")(), "episode_return")
    assert xs == [0, 1000, 2100]  # each checkpoint at its mean training-episode count over the seeds
    assert mean.tolist() == pytest.approx([0.4, 2.5, 4.5]) and half[0] == 0 and half[1] > 0
    xs, _, _ = _learning_curve(runs, FAMILIES.get("maze")(), "episode_return")
    assert xs == [0, 500, 1000]  # the maze keeps env steps
    # the rliable sample-efficiency curve of the same runs: the same x, in the same units as its axis label
    for seed, (path, _) in enumerate(runs):
        runs[seed] = (path, {"agent": "metods", "seed": seed, "metrics": {"episode_return": 4.5}})
    random = [(tmp_path / "r.json", {"agent": "random", "seed": 0, "metrics": {"episode_return": 0.4}})]
    agg = aggregates("efficiency", "quick", {("quick", "harlow"): Group(ok={"metods": runs, "random": random},
                                                                        failed=[])})
    xs, iqm, _, _ = agg.curves["harlow"]["metods"]
    assert xs == [0, 1000, 2100] and len(iqm) == 3


def _runs(agent: str, values: dict[int, float], metric: str = "episode_return", **metrics) -> list[tuple[Path, dict]]:
    return [(Path(f"{agent}/seed{s}.json"), {"agent": agent, "seed": s, "metrics": {metric: v, **metrics}})
            for s, v in values.items()]


def test_one_markdown_table_writer():
    from metabench.report import md_table

    assert md_table(["a", "b"], [["1", "2"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]


def test_random_level_comes_from_the_random_records_also_under_a_ceiling(monkeypatch):
    from metabench import stats
    from metabench.report import task_levels

    monkeypatch.setattr(stats, "random_level", lambda task, n_tasks=1024: 0.38)
    group = Group(ok={"random": _runs("random", {0: 0.3, 1: 0.5}), "rl2": _runs("rl2", {0: 5.0})}, failed=[])
    levels = task_levels("harlow", group)
    assert (levels.random, levels.high, levels.best_agent) == (pytest.approx(0.4), 5.2, False)
    assert "`random` agent's records, 2 seeds" in levels.random_source and "documented" in levels.high_source
    # without random's records, the simulation, and the text says so
    levels = task_levels("harlow", Group(ok={"rl2": _runs("rl2", {0: 5.0})}, failed=[]))
    assert levels.random == 0.38 and "simulated" in levels.random_source


def test_the_maze_ceiling_is_the_oracle_on_the_test_sets_the_runs_were_scored_on():
    from metabench.envs.maze import MazeConfig, oracle_score
    from metabench.report import task_levels

    group = Group(ok={"random": _runs("random", {0: 3.0, 1: 4.0}, "cumulative_reward", test_episodes=16.0),
                      "rl2": _runs("rl2", {1: 30.0, 2: 20.0}, "cumulative_reward", test_episodes=16.0)}, failed=[])
    levels = task_levels("maze", group)
    oracle = [oracle_score(MazeConfig(), 16, s)["cumulative_reward"] for s in (0, 1, 2)]
    assert levels.random == 3.5 and levels.high == pytest.approx(sum(oracle) / 3)
    assert "seeds 0, 1, 2, 16 mazes each" in levels.high_source


def test_aggregates_name_the_runs_and_agents_they_leave_out():
    from metabench.report import aggregates, aggregates_markdown

    groups = {("quick", "harlow"): Group(ok={"random": _runs("random", {0: 0.4, 1: 0.4, 2: 0.4}),
                                             "rl2": _runs("rl2", {0: 5.0, 1: 4.0, 2: 4.5}),
                                             "metods_s1": _runs("metods_s1", {0: 3.0})}, failed=[]),
              ("quick", "ant_dir"): Group(ok={"random": _runs("random", {0: -30.0, 1: -31.0}),
                                              "rl2": _runs("rl2", {0: -7.0, 1: -6.0})}, failed=[])}
    agg = aggregates("efficiency", "quick", groups)
    assert agg.target == "metods"  # the suite's
    assert agg.left_out_agents == {"metods_s1": ["harlow"]}
    assert agg.left_out_seeds == {"random": {"harlow": [2]}, "rl2": {"harlow": [2]}}
    text = "\n".join(aggregates_markdown(agg))
    assert "`metods_s1`, run on `harlow` only" in text
    assert "runs left out: `harlow` seed 2 of `random`, `rl2`" in text
    assert aggregates("efficiency", "quick", groups, target="rl2").target == "rl2"
    assert "P(rl2 > agent)" in "\n".join(aggregates_markdown(aggregates("efficiency", "quick", groups, target="rl2")))


def test_paper_values_far_off_our_scale_are_written_not_drawn():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metabench.report.figures import _paper_marks

    fig, ax = plt.subplots()
    ax.bar([0, 1], [-10.0, -7.0])
    assert _paper_marks(ax, [(0, 600.0), (1, -8.0)], [-10.0, -7.0]) == (1, 1)
    assert ax.get_ylim()[1] < 100 and len(ax.lines) == 1 and any("600" in t.get_text() for t in ax.texts)
    plt.close(fig)


def test_figures_of_runs_without_curves_warn_nothing(recwarn):
    from metabench.report import aggregates, aggregates_figure, suite_figure

    groups = {("quick", "harlow"): Group(ok={"random": _runs("random", {0: 0.4}), "rl2": _runs("rl2", {0: 5.0})},
                                         failed=[])}
    assert suite_figure("efficiency", "quick", groups)[:4] == b"\x89PNG"
    assert aggregates_figure("efficiency", "quick", aggregates("efficiency", "quick", groups))[:4] == b"\x89PNG"
    assert not [w for w in recwarn if "No artists with labels" in str(w.message)]


def test_solve_rate_counts_seeds_at_or_above_the_threshold():
    import pandas as pd

    from metabench.report.tables import solve_rate

    df = pd.DataFrame({"correct_after_first": [0.95, 0.9, 0.5, 0.89, 1.0]})
    assert solve_rate(df, "correct_after_first", 0.9) == "3/5 (60 %) [23, 88]"
    assert solve_rate(df, "missing", 0.9) == "—"


def test_the_oracle_is_the_ceiling_of_a_task_without_one():
    """ant_dir documents no ceiling: the `oracle`'s mean over seeds normalises it (not the best agent's), in the
    aggregates and the impairment table alike."""
    from metabench.report import task_levels

    group = Group(ok={"random": _runs("random", {0: -30.0, 1: -30.0}), "oracle": _runs("oracle", {0: 90.0, 1: 110.0}),
                      "metods": _runs("metods", {0: 120.0})}, failed=[])
    levels = task_levels("ant_dir", group)
    assert (levels.random, levels.high, levels.best_agent) == (-30.0, 100.0, False)
    assert "`oracle` agent's records, 2 seeds" in levels.high_source
    # an oracle below random normalises nothing: the best agent's mean instead
    group = Group(ok={"random": _runs("random", {0: -30.0}), "oracle": _runs("oracle", {0: -40.0}),
                      "metods": _runs("metods", {0: 120.0})}, failed=[])
    assert task_levels("ant_dir", group).best_agent
    # the impairment table divides by the oracle's unimpaired return
    family = FAMILIES.get("impairment_cheetah")()
    group = Group(ok={"oracle": [_record("oracle", 400.0, 100.0, {0: 50.0})],
                      "metods": [_record("metods", 200.0, 100.0, {0: 50.0})]}, failed=[])
    lines = retention_table("impairment_cheetah", family, group)
    assert _cells(lines, "metods")[3] == "0.50" and _cells(lines, "oracle")[3] == "1.00"
    assert any("the `oracle`'s unimpaired" in line for line in lines)


def test_rows_the_paper_did_not_run_carry_a_footnote():
    """PEARL's discrete SAC on the maze is our extension: its row is marked and the note follows the table;
    on a continuous task, and for every other agent, there is no note."""
    from metabench.envs import make_family
    from metabench.report.tables import row_note, task_table

    maze = make_family("maze")
    assert "our extension" in row_note("pearl", maze)
    assert row_note("pearl", make_family("impairment_cheetah")) is None
    assert row_note("metods", maze) is None and row_note("not_an_agent", maze) is None
    runs = {a: [(p, {**r, "env_steps": 100, "wall_time_s": 1.0}) for p, r in
                _runs(a, {0: 3.0, 1: 4.0}, "cumulative_reward")] for a in ("pearl", "rl2")}
    lines = task_table("maze", maze, Group(ok=runs, failed=[]))
    assert any(line.startswith("| `pearl`\\* | 2 |") for line in lines)
    assert _cells(lines, "rl2")[0] == "`rl2`"
    assert lines[-1].startswith("\\* `pearl`: discrete SAC")


def test_ml10_prints_the_meta_world_papers_table_under_its_own():
    """Other references (TaskFamily.other_references): the Meta-World paper's ML10 rows, train and test, with
    their caveat; none for ML1 reach."""
    from metabench.envs import make_family
    from metabench.report.tables import other_references

    lines = "\n".join(other_references(make_family("mw_ml10")))
    assert "| `rl2` | meta_train_success | 0.87 |" in lines and "| `maml` | meta_test_success | 0.32 |" in lines
    assert "not our runs" in lines
    assert other_references(make_family("mw_ml1_reach")) == []


def test_a_success_rates_band_stays_within_0_and_1():
    """The learning curve's band is a normal interval over seeds: over 3 seeds with success 0, 0 and 0.1 it
    reaches below 0; a bounded metric's band is drawn within its bounds, its variants' too."""
    import numpy as np

    from metabench.envs import make_family
    from metabench.report.curves import band_limits

    mw = make_family("mw_ml1_reach")
    for name in ("success", "success_train", "success_last", "success_last_train"):
        assert mw.metric_bounds(name) == (0.0, 1.0), name
    assert mw.metric_bounds("episode_return") is None and mw.metric_bounds("episode_return_train") is None
    assert mw.metric_bounds("successes") is None  # a prefix of the name, not a variant of it
    assert make_family("maze").metric_bounds("success_larger") == (0.0, 1.0)
    assert make_family("maze").metric_bounds("cumulative_reward") is None

    vals = np.array([[0.0, 0.9], [0.0, 1.0], [0.1, 1.0]])
    mean, half = vals.mean(0), 1.96 * vals.std(0, ddof=1) / np.sqrt(3)
    assert (mean - half)[0] < 0 and (mean + half)[1] > 1
    low, high = band_limits(mean, half, (0.0, 1.0))
    assert low[0] == 0.0 and high[1] == 1.0 and low[1] == pytest.approx((mean - half)[1])
    same = band_limits(mean, half, None)
    assert same[0][0] == pytest.approx((mean - half)[0])
