"""The one table of defaults (agents/defaults.py) and `metabench config`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabench.agents import AGENTS
from metabench.agents.defaults import ANY, TABLE, Row, defaults_for, unknown_settings
from metabench.agents.maml import MAMLConfig
from metabench.agents.ppo import PPOConfig
from metabench.agents.rl2 import RL2Config
from metabench.cli import app
from metabench.profiles import PROFILES
from metabench.records import scan
from metabench.runner import resolve_config, same_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_declared_by_an_agent_the_row_names():
    classes = {e.cls.defaults_key: e.cls.Config for _, e in AGENTS.items() if e.cls.defaults_key}
    assert unknown_settings(classes) == []
    bad = (Row(("rl2",), ANY, ANY, {"adapt_every": 3}, "typo"),)
    assert unknown_settings(classes, bad) == ["row 'typo': no agent it names declares 'adapt_every'"]


def test_rows_apply_in_order_and_only_to_declared_fields():
    table = (Row(ANY, ("maze",), ANY, {"batch_tasks": 8, "adapt_every": 7}, "a"),
             Row(("maml",), ANY, ("smoke",), {"batch_tasks": 4}, "b"))
    assert defaults_for("rl2", RL2Config, "maze", "quick", table) == {"batch_tasks": 8}
    assert defaults_for("maml", MAMLConfig, "maze", "smoke", table) == {"batch_tasks": 4, "adapt_every": 7}
    assert defaults_for("maml", MAMLConfig, "harlow", "quick", table) == {}


def test_random_gets_no_trainer_fields():
    from metabench.envs import make_family

    cfg = AGENTS.get("random").config(make_family("ant_dir"), PROFILES.get("smoke"))
    assert not hasattr(cfg, "batch_tasks")


def test_maml_and_the_recurrent_agents_share_the_trainer_config():
    assert issubclass(MAMLConfig, PPOConfig) and issubclass(RL2Config, PPOConfig)
    assert all(isinstance(r, Row) for r in TABLE)


def test_committed_records_match_what_config_resolves_today():
    """A committed quick record is current: its config is the resolved one (else a rerun would redo it)."""
    found = scan(ROOT / "results" / "quick")
    assert found.records
    stale = [str(p.relative_to(ROOT)) for p, r in found.records
             if r["agent"] in AGENTS and not same_config(
                 r["config"], resolve_config(r["agent"], r["task"], PROFILES.get("quick"), r["seed"]))]
    assert stale == []


def test_cli_config_prints_the_resolved_config():
    res = CliRunner().invoke(app, ["config", "metods", "maze", "--profile", "smoke"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out == resolve_config("metods", "maze", PROFILES.get("smoke"), 0)
    assert out["agent"]["N"] == 64 and out["agent"]["compile"] is False


@pytest.mark.parametrize("args", [["config", "nope", "maze"], ["config", "metods", "nope"],
                                  ["config", "metods", "maze", "--profile", "nope"]])
def test_cli_config_refuses_unknown_names(args):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert "unknown" in res.output
