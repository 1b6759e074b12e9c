"""``metabench analyze`` (metabench/analyze.py): the labels, the probe, the files, the report section, the CLI."""

from __future__ import annotations

import json
import pytest
import torch
from typer.testing import CliRunner

from metabench.agents.base import Agent, AgentInput
from metabench.analyze import NotAnalysable, analyze, flat_memory, report_section, write
from metabench.cli import app
from metabench.envs.harlow import Harlow
from metabench.envs.maze import Maze


def test_harlow_labels_are_the_first_choice_outcome_on_every_step():
    h = Harlow()
    cfg = h.config
    f, c, w = cfg.fixation_reward, cfg.correct_reward, cfg.wrong_reward
    rewards = torch.tensor([[f, f, 0.0], [0.0, 0.0, 0.0], [c, w, 0.0], [f, f, 0.0], [w, c, 0.0]])
    active = torch.ones_like(rewards, dtype=torch.bool)
    active[4, 2] = False
    lab = h.memory_labels(rewards, active)
    assert lab.decided_at.tolist() == [2, 2, -1]  # the third trial never chose
    assert lab.labels[:, 0].tolist() == [1] * 5 and lab.labels[:, 1].tolist() == [0] * 5
    assert lab.labels[:, 2].tolist() == [-1] * 5
    assert lab.names == ("wrong first choice", "correct first choice")


def test_maze_labels_say_whether_the_target_was_found_yet():
    rewards = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 0.0], [10.0, 0.0]])
    active = torch.tensor([[True, True], [True, True], [True, True], [True, False]])
    lab = Maze().memory_labels(rewards, active)
    assert lab.decided_at.tolist() == [1, -1]
    assert lab.labels[:, 0].tolist() == [0, 1, 1, 1]
    assert lab.labels[:, 1].tolist() == [0, 0, 0, -1]


def test_flat_memory_takes_tensors_and_refuses_the_rest():
    assert flat_memory(torch.zeros(3, 4, 4)).shape == (3, 16)
    assert flat_memory((torch.zeros(3, 2), torch.ones(3, 5))).shape == (3, 7)
    with pytest.raises(NotAnalysable, match="is a dict"):
        flat_memory({"h": torch.zeros(3, 2)})


class _Lesson(Agent):
    """Acts uniformly at random; its memory is the sum of the ±1 choice rewards seen so far (plus noise
    dimensions): it knows the first choice's outcome exactly from the step after the choice, and nothing before."""

    def __init__(self, family):
        super().__init__(family, None, 0)
        self.action_generator = torch.Generator().manual_seed(0)
        self.noise = torch.Generator().manual_seed(1)

    def meta_train(self, family, budget_env_steps, monitor):
        return 0

    def initial_memory(self, batch_size):
        return torch.zeros(batch_size, 4)

    def act(self, inputs: AgentInput, memory):
        r = inputs.prev_reward
        lesson = memory[:, 0] + torch.where(r.abs() == 1.0, r, torch.zeros_like(r))
        noise = torch.randn(len(r), 3, generator=self.noise) * 0.1
        memory = torch.cat([lesson.unsqueeze(1), noise], 1)
        return torch.randint(0, 2, (len(r),), generator=self.action_generator), memory


def test_the_probe_finds_a_lesson_written_after_the_event_and_not_before(tmp_path):
    family = Harlow()
    a = analyze(_Lesson(family), family, seed=0, n_tasks=128, record="r.json", agent_name="lesson", task="harlow",
                score={"episode_return": 0.0})
    by_step = dict(zip(a.steps, a.accuracy))
    assert by_step[-1] is not None and abs(by_step[-1] - 0.5) < 0.2  # before the choice: nothing to read
    assert by_step[2] > 0.95 and a.accuracy_after > 0.9  # from the step after it: the outcome is in the memory
    assert 0 < len(a.trajectories) <= 24 and sum(a.label_counts) > 64
    assert 0 < sum(a.explained) <= 1.0001 and a.explained == sorted(a.explained, reverse=True)
    paths = write(a, tmp_path, "metabench analyze --record r.json")
    names = sorted(p.name for p in paths)
    assert names == ["harlow-lesson-seed0-pca.png", "harlow-lesson-seed0-separation.png", "harlow-lesson-seed0.json",
                     "harlow-lesson-seed0.md"]
    data = json.loads((tmp_path / "harlow-lesson-seed0.json").read_text())
    assert data["command"] == "metabench analyze --record r.json"
    md, figures = report_section(tmp_path, ("harlow", "maze"), "analysis")
    assert "### `harlow`: correct first choice or wrong first choice" in md and "| `lesson` | 0 |" in md
    assert sorted(figures) == ["harlow-lesson-seed0-pca.png", "harlow-lesson-seed0-separation.png"]
    assert "(analysis/harlow-lesson-seed0-pca.png)" in md
    assert report_section(tmp_path, ("ant_dir",), "analysis") == ("", {})


def test_cli_analyze_refuses_a_record_without_its_saved_agent(tmp_path):
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "results" / "quick" / "efficiency" / "harlow" / "rl2" / "seed0.json"
    dst = tmp_path / "quick" / "efficiency" / "harlow" / "rl2" / "seed0.json"
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    res = CliRunner().invoke(app, ["analyze", "--record", str(dst), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "no saved agent beside it (seed0.pt)" in res.output
    assert not (tmp_path / "out").exists()
