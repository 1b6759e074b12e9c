"""Agents and task families from outside the repository: the entry-point groups ``metabench.agents`` and
``metabench.tasks`` (metabench/registry.py, ``load_plugins``).

Each check runs in a fresh interpreter (the registries are filled once, at import), with a folder on
``PYTHONPATH`` that holds the plugin: a hand-written ``*.dist-info`` for the fast checks, and the example
package under ``examples/`` really installed (``pip install --target``) for the slow one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "metabench-example-plugin"


def _fake_dist(site: Path, name: str, entry_points: str, module: str, source: str) -> None:
    """A distribution ``name`` on ``site`` as importlib.metadata finds one: its module and a dist-info."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def _python(site: Path, code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_a_plugin_registers_an_agent_and_a_task_with_its_origin(tmp_path):
    _fake_dist(tmp_path, "my-plugin", """
        [metabench.agents]
        coin = my_plugin:agents
        [metabench.tasks]
        tiny = my_plugin:tasks
        """, "my_plugin", """
        def agents():
            from metabench.agents import register
            from metabench.agents.random_agent import RandomAgent
            register("coin", RandomAgent, "a plugin's agent")

        def tasks():
            from metabench.envs import register_task
            from metabench.envs.harlow import Harlow
            register_task("tiny_harlow", Harlow, "efficiency", {"smoke": 100})
        """)
    out = _python(tmp_path, """
        from metabench.agents import AGENTS
        from metabench.envs import FAMILIES
        from metabench.suites import SUITES
        print(AGENTS.origin("coin"), "|", AGENTS.origin("rl2"), "|", FAMILIES.origin("tiny_harlow"))
        print("tiny_harlow" in SUITES.get("efficiency").tasks)
        """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "my-plugin (plugin coin) | metabench | my-plugin (plugin tiny)"
    assert lines[1] == "True"


def test_a_broken_plugin_is_skipped_with_one_line(tmp_path):
    _fake_dist(tmp_path, "broken-plugin", """
        [metabench.agents]
        bad = broken_plugin:agents
        twice = broken_plugin:twice
        """, "broken_plugin", """
        def agents():
            raise RuntimeError("cannot build")

        def twice():
            from metabench.agents import register
            from metabench.agents.random_agent import RandomAgent
            register("rl2", RandomAgent, "a name metabench has")
        """)
    out = _python(tmp_path, """
        from metabench.agents import AGENTS
        print(AGENTS.get("rl2").cls.__name__, len(AGENTS.names()) > 5)
        """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "RL2Agent True"  # metabench's own names are untouched
    errors = out.stderr.strip().splitlines()
    assert errors == [
        "metabench: skipped the metabench.agents entry point bad = broken_plugin:agents: RuntimeError: cannot build",
        "metabench: skipped the metabench.agents entry point twice = broken_plugin:twice: ValueError: "
        "agent 'rl2' registered twice",
    ]


@pytest.mark.slow
def test_the_example_plugin_installs_lists_runs_and_is_reported(tmp_path):
    """``pip install`` of examples/metabench-example-plugin, then list, run (smoke) and report through the CLI."""
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          "--no-deps", "--target", str(site), str(EXAMPLE)], capture_output=True, text=True,
                         timeout=600)
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    cli = [sys.executable, "-m", "metabench.cli"]

    listing = subprocess.run([*cli, "list"], capture_output=True, text=True, env=env, timeout=300)
    assert listing.returncode == 0, listing.stderr
    assert "[from metabench-example-plugin (plugin lstm)]" in listing.stdout
    assert "[from metabench-example-plugin (plugin bandit)]" in listing.stdout

    results, reports = tmp_path / "results", tmp_path / "reports"
    run = subprocess.run([*cli, "run", "--agents", "lstm,random", "--suite", "examples", "--profile", "smoke",
                          "--seeds", "1", "--workers", "1", "--results", str(results)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "done: 2 ok, 0 failed" in run.stdout
    report = subprocess.run([*cli, "report", "--results", str(results), "--reports", str(reports)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert report.returncode == 0, report.stderr
    table = (reports / "examples.md").read_text()
    assert "| `lstm` | 1 |" in table and "| `random` | 1 |" in table
