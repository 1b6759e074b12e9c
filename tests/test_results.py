"""metabench.results: the records and their curves as pandas tables, on a tiny hand-written results folder."""

from pathlib import Path

import pandas as pd
import pytest

from metabench.records import curves_csv, curves_path, dumps_record, record_path
from metabench.results import COLUMNS, CURVE_COLUMNS, curves, frame


def _write(results: Path, agent: str, task: str, seed: int, metrics: dict, status: str = "ok",
           curve_rows=None) -> Path:
    record = {"schema": 1, "agent": agent, "task": task, "suite": "efficiency", "seed": seed, "profile": "quick",
              "status": status, "error": None if status == "ok" else "boom", "metrics": metrics,
              "env_steps": 1000 * (seed + 1), "wall_time_s": 2.5, "config": {}, "code_version": "test"}
    path = record_path(results, "quick", "efficiency", task, agent, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if curve_rows is not None:
        curves_path(path).write_text(curves_csv(curve_rows))
    path.write_text(dumps_record(record))
    return path


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    _write(root, "rl2", "harlow", 0, {"episode_return": 4.0, "episode_return_std": 1.0, "choices": 5.0},
           curve_rows=[("eval", 0, "episode_return", 0.5), ("eval", 500, "episode_return", 3.5),
                       ("step_reward", 1, "reward", 0.25)])
    _write(root, "rl2", "harlow", 1, {"episode_return": 5.0, "episode_return_std": 0.5, "choices": 5.0},
           curve_rows=[("eval", 0, "episode_return", 0.25)])
    _write(root, "random", "ant_dir", 0, {"episode_return": -30.0, "episode_length": 90.0})  # no curves
    _write(root, "maml", "harlow", 0, {}, status="failed")
    bad = root / "quick/efficiency/harlow/maml/seed1.json"
    bad.write_text("{not json")  # invalid: skipped, as metabench.records.scan does
    return root


def test_frame_has_one_row_per_valid_record_and_every_metric_as_a_column(results):
    df = frame(results)
    assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert sorted(df.columns[len(COLUMNS):]) == ["choices", "episode_length", "episode_return", "episode_return_std"]
    assert len(df) == 4  # the invalid file is skipped
    ok = df[df.status == "ok"]
    assert ok.groupby(["task", "agent"]).episode_return.mean().to_dict() == {
        ("ant_dir", "random"): -30.0, ("harlow", "rl2"): 4.5}
    rl2 = df[(df.agent == "rl2")].set_index("seed")
    assert rl2.loc[1, "env_steps"] == 2000 and rl2.loc[0, "wall_time_s"] == 2.5 and rl2.loc[0, "suite"] == "efficiency"
    assert pd.isna(df[df.agent == "random"].choices.iloc[0])  # a metric a record lacks is NaN
    failed = df[df.status == "failed"].iloc[0]
    assert failed.agent == "maml" and failed.error == "boom" and pd.isna(failed.episode_return)


def test_curves_are_long_form_with_the_record_keys(results):
    c = curves(results)
    assert list(c.columns) == list(CURVE_COLUMNS)
    assert len(c) == 4  # records without a curves file add none
    evals = c[(c.curve == "eval") & (c.agent == "rl2")]
    assert evals.groupby("x").value.mean().to_dict() == {0.0: 0.375, 500.0: 3.5}
    assert set(c.seed) == {0, 1} and set(c.task) == {"harlow"} and set(c.profile) == {"quick"}


def test_an_empty_folder_gives_empty_tables_with_the_columns(tmp_path):
    assert list(frame(tmp_path).columns) == list(COLUMNS) and frame(tmp_path).empty
    assert list(curves(tmp_path).columns) == list(CURVE_COLUMNS) and curves(tmp_path).empty


def test_a_corrupt_curves_file_loses_only_its_curves(results):
    """Before: ``curves`` raised ValueError on a corrupt CSV. Now it skips it with a warning naming it."""
    bad = results / "quick/efficiency/harlow/rl2/seed1.curves.csv"
    bad.write_text("curve,x,metric,value\neval,zero,episode_return,1\n")
    with pytest.warns(UserWarning, match="seed1.curves.csv: line 2"):
        c = curves(results)
    assert len(c) == 3 and set(c.seed) == {0}
