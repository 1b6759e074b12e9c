"""``metabench analyze``: where a trained agent keeps what it learned inside a trial (the paper's Fig. 3, right).

The saved agent of a record (:func:`metabench.runner.load_agent`) plays ``n`` held-out tasks of its record's
seed through the shared protocol while its memory after every step is recorded: MetODS's synaptic weights
W_t (flattened), RL²'s hidden state h_t. The family labels every step with one of two situations
(:meth:`~metabench.envs.base.TaskFamily.memory_labels`: on Harlow the outcome of the first choice, on the
maze whether the target has been found yet) and the step where the label is decided.

- **PCA** of the memory over every active step of every trial (fit once, on the centred vectors), its
  explained variance, and each trial's trajectory on the first two components, coloured by its label.
- **Separation**: a logistic-regression probe reads the label from the first 10 components; it is fitted on
  the even trials and scored on the odd ones (balanced accuracy), per step relative to the deciding event.
  Before the event nothing in the memory can know it (accuracy ~0.5 on Harlow); after it, a memory that has
  written the lesson down gives it away. Beside it, the distance between the two modes' centroids on
  (PC1, PC2) over the mean spread within a mode.

Writes ``<out>/<task>-<agent>-seed<k>.json`` (the numbers and a subsample of the projected trajectories, small
enough to commit), and from it ``.md``, ``-pca.png`` and ``-separation.png``; ``metabench report`` draws the
committed JSON files of its suite's tasks (:func:`report_section`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .records import write_atomic

COMPONENTS = 10
"""Principal components the separation probe reads."""
KEEP_TRIALS = 24
"""Trajectories kept in the JSON file for the figures (the numbers use every trial)."""
BEFORE, AFTER = 10, 40
"""Steps before and after the deciding event on the separation curve."""


class NotAnalysable(ValueError):
    """The record's agent or task has nothing to analyse here; the message says why, in one line."""


class _Recording:
    """The agent, acting as itself, with its memory after every step appended to :attr:`states`."""

    def __init__(self, agent: Any):
        self._agent, self.states = agent, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._agent, name)

    def act(self, inputs, memory):
        action, memory = self._agent.act(inputs, memory)
        self.states.append(flat_memory(memory))
        return action, memory


def flat_memory(memory: Any) -> torch.Tensor:
    """An agent's per-trial memory as ``[B, D]``: a tensor (MetODS's W ``[B, N, N]``, RL²'s h) or a tuple of them."""
    if isinstance(memory, torch.Tensor):
        return memory.detach().reshape(memory.shape[0], -1).to(torch.float32).clone()
    if isinstance(memory, tuple) and memory and all(isinstance(m, torch.Tensor) for m in memory):
        return torch.cat([flat_memory(m) for m in memory], 1)
    raise NotAnalysable(f"analyze reads a memory that is a tensor (MetODS's W, RL²'s h); this agent's is a "
                        f"{type(memory).__name__}")


@dataclass
class Analysis:
    record: str
    agent: str
    task: str
    seed: int
    tasks: int
    score: dict[str, float]
    """The record's held-out main metrics, for the reader (e.g. Harlow's correct_after_first)."""
    names: tuple[str, str]
    event: str
    label_counts: list[int]
    explained: list[float]
    """Explained variance ratio of the first components."""
    steps: list[int]
    """Steps relative to the deciding event on the separation curve."""
    accuracy: list[float | None]
    """Held-out balanced accuracy of the probe at each of :attr:`steps` (plain where one label only is there;
    None: no held-out trial reaches that step)."""
    centroid_ratio: list[float | None]
    accuracy_after: float
    """Held-out balanced accuracy over every step from the event on."""
    trajectories: list[dict[str, Any]]
    """Up to :data:`KEEP_TRIALS` trials: ``{"label", "decided_at", "pc": [[pc1, pc2], ...]}``."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def analyze(agent: Any, family: Any, seed: int, n_tasks: int, record: str, agent_name: str, task: str,
            score: dict[str, float]) -> Analysis:
    """Play ``n_tasks`` held-out tasks of ``seed`` (the record's test stream) recording the memory; the analysis."""
    from metabench.envs import task_generator
    from metabench.protocol import evaluation_actions, run_trials

    tasks = family.sample_tasks(n_tasks, "test", task_generator(seed, "test"))
    rec = _Recording(agent)
    with torch.no_grad(), agent.acting_with(evaluation_actions(seed)):
        res = run_trials(rec, family, tasks)
    labels = family.memory_labels(res.rewards, res.active)
    if labels is None:
        raise NotAnalysable(f"task {task!r} labels no situations for analyze (TaskFamily.memory_labels)")
    mem = torch.stack(rec.states)  # [T, B, D]: the memory after each step
    t_len, b, _ = mem.shape
    active = res.active[:t_len]
    lab = labels.labels[:t_len]

    x = mem[active]  # PCA over every active step of every trial
    mean = x.mean(0)
    _, s, v = torch.linalg.svd(x - mean, full_matrices=False)
    var = s**2
    explained = (var / var.sum()).tolist()[:COMPONENTS]
    k = min(COMPONENTS, v.shape[0])
    proj = (mem - mean) @ v[:k].T  # [T, B, k]

    # The probe: logistic regression on the standardised components, even trials fit, odd trials scored.
    trial = torch.arange(b).expand(t_len, b)
    rel = torch.arange(t_len).unsqueeze(1) - labels.decided_at.unsqueeze(0)  # steps since the event
    usable = (lab >= 0) & active & (labels.decided_at >= 0).unsqueeze(0)
    train, test = usable & (trial % 2 == 0), usable & (trial % 2 == 1)
    if len(torch.unique(lab[train])) < 2:
        raise NotAnalysable(f"the {n_tasks} trials show one situation only ({labels.names[int(lab[train][0])]}); "
                            "analyze more tasks (--tasks)")
    mu, sd = proj[train].mean(0), proj[train].std(0) + 1e-6
    w = _fit_logistic((proj[train] - mu) / sd, lab[train].to(torch.float32))
    pred = (((proj - mu) / sd) @ w[:-1] + w[-1]) > 0
    steps = list(range(-BEFORE, AFTER + 1))
    accuracy, ratio = [], []
    for r in steps:
        at = test & (rel == r)
        accuracy.append(_balanced_accuracy(pred[at], lab[at]))
        ratio.append(_centroid_ratio(proj[..., :2][usable & (rel == r)], lab[usable & (rel == r)]))
    after = test & (rel >= 0)
    keep = range(min(b, KEEP_TRIALS))
    trajectories = []
    for i in keep:
        steps_i = active[:, i]
        pc = proj[steps_i, i, :2]
        trajectories.append({"label": int(lab[steps_i, i][-1]) if steps_i.any() else -1,
                             "decided_at": int(labels.decided_at[i]),
                             "pc": [[round(float(a), 4), round(float(c), 4)] for a, c in pc]})
    counts = [int(((labels.decided_at >= 0) & (lab.max(0).values == j)).sum()) for j in (0, 1)]
    return Analysis(record, agent_name, task, seed, n_tasks, score, labels.names, labels.event, counts,
                    [round(e, 5) for e in explained], steps, accuracy, ratio,
                    _balanced_accuracy(pred[after], lab[after]) or float("nan"), trajectories)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, steps: int = 500) -> torch.Tensor:
    """Weights (and bias, last) of an L2-regularised logistic regression, by L-BFGS (deterministic)."""
    w = torch.zeros(x.shape[1] + 1, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")
    pos = y.mean().clamp(1e-3, 1 - 1e-3)
    weight = torch.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))  # balanced classes

    def loss():
        opt.zero_grad()
        out = (torch.nn.functional.binary_cross_entropy_with_logits(x @ w[:-1] + w[-1], y, weight=weight)
               + 1e-3 * (w[:-1] ** 2).sum())
        out.backward()
        return out

    with torch.enable_grad():
        opt.step(loss)
    return w.detach()


def _balanced_accuracy(pred: torch.Tensor, y: torch.Tensor) -> float | None:
    """The mean of the two labels' accuracies; the plain accuracy where one label only is present (the maze:
    before its first find every step is "not found yet"); None for no samples."""
    present = [j for j in (0, 1) if bool((y == j).any())]
    if not present:
        return None
    return round(float(sum((pred[y == j] == bool(j)).float().mean() for j in present) / len(present)), 4)


def _centroid_ratio(pc: torch.Tensor, y: torch.Tensor) -> float | None:
    """Distance between the two labels' centroids over the mean within-label spread (RMS distance to centroid)."""
    if len(torch.unique(y)) < 2 or min(int((y == 0).sum()), int((y == 1).sum())) < 2:
        return None
    c = [pc[y == j].mean(0) for j in (0, 1)]
    spread = sum(float(((pc[y == j] - c[j]) ** 2).sum(1).mean().sqrt()) for j in (0, 1)) / 2
    return round(float((c[1] - c[0]).norm()) / max(spread, 1e-9), 4)


# --- Files and figures -------------------------------------------------------------------------------------------
COLOURS = ("#c0392b", "#27ae60")  # label 0, label 1


def stem(data: dict[str, Any]) -> str:
    return f"{data['task']}-{data['agent']}-seed{data['seed']}"


def draw(data: dict[str, Any]) -> dict[str, bytes]:
    """The trajectory and separation figures of one analysis (its JSON data): file name -> PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(fig) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, dpi=90, format="png")
        plt.close(fig)
        return buf.getvalue()

    name = stem(data)
    title = f"{data['agent']} on {data['task']}, seed {data['seed']}"
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for tr in data["trajectories"]:
        if tr["label"] < 0 or not tr["pc"]:
            continue
        pc = torch.tensor(tr["pc"])
        ax.plot(pc[:, 0], pc[:, 1], color=COLOURS[tr["label"]], alpha=0.5, lw=0.9)
        ax.scatter(pc[-1:, 0], pc[-1:, 1], color=COLOURS[tr["label"]], s=12)
        if 0 <= tr["decided_at"] < len(pc):
            d = pc[tr["decided_at"]]
            ax.scatter([d[0]], [d[1]], color="black", marker="x", s=14, lw=0.8)
    ax.scatter([], [], color="black", marker="x", label=data["event"])
    for j in (0, 1):
        ax.plot([], [], color=COLOURS[j], label=data["names"][j])
    ev = data["explained"]
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.0f} % of the variance)")
    ax.set_ylabel(f"PC2 ({100 * ev[1]:.0f} %)" if len(ev) > 1 else "PC2")
    ax.set_title(f"memory trajectories: {title}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    pca = png(fig)

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    steps = data["steps"]
    acc = [math.nan if a is None else a for a in data["accuracy"]]
    ax.plot(steps, acc, color="#2c3e50", label="probe accuracy (held-out trials)")
    ax.axhline(0.5, color="grey", lw=0.7, ls=":")
    ax.axvline(0, color="black", lw=0.7, ls="--")
    ax.set_ylim(0.3, 1.02)
    ax.set_xlabel(f"steps since {data['event']}")
    ax.set_ylabel("balanced accuracy")
    ax2 = ax.twinx()
    ax2.plot(steps, [math.nan if r is None else r for r in data["centroid_ratio"]], color="#8e44ad", lw=0.9,
             ls="-.", label="centroid distance / spread (PC1-2)")
    ax2.set_ylabel("centroid distance / spread", color="#8e44ad", fontsize=8)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="lower right")
    ax.set_title(f"{title}: does the memory tell {data['names'][1]}?", fontsize=8)
    fig.tight_layout()
    return {f"{name}-pca.png": pca, f"{name}-separation.png": png(fig)}


def summary_line(data: dict[str, Any]) -> str:
    """One table row: agent, seed, score, variance of PC1-2, accuracy before/after the event, centroid ratio."""
    steps, acc, ratio = data["steps"], data["accuracy"], data["centroid_ratio"]
    before = [a for s, a in zip(steps, acc) if s < 0 and a is not None]
    late = [r for s, r in zip(steps, ratio) if 5 <= s <= 15 and r is not None]
    score = ", ".join(f"{k} {v:.3g}" for k, v in data["score"].items())
    fmt = lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"  # noqa: E731
    return (f"| `{data['agent']}` | {data['seed']} | {score} | {100 * sum(data['explained'][:2]):.0f} % | "
            f"{fmt(sum(before) / len(before) if before else None)} | {fmt(data['accuracy_after'])} | "
            f"{fmt(sum(late) / len(late) if late else None)} |")


TABLE_HEAD = ("| agent | seed | record | PC1+PC2 variance | probe accuracy before the event | after it | "
              "centroid distance / spread, 5-15 steps after |\n|---|---|---|---|---|---|---|")


def write(analysis: Analysis, out: Path, command: str) -> list[Path]:
    """The analysis's JSON data, its figures and a markdown summary into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data = analysis.as_dict()
    data["command"] = command
    path = out / f"{stem(data)}.json"
    write_atomic(path, json.dumps(data, indent=None, separators=(",", ":")) + "\n")
    figs = []
    for name, png in draw(data).items():
        write_atomic(out / name, png)
        figs.append(out / name)
    md = out / f"{stem(data)}.md"
    write_atomic(md,
        f"# Memory of `{data['agent']}` on `{data['task']}`, seed {data['seed']}\n\n"
        f"Command: `{command}`. {data['tasks']} held-out trials of the record's test stream; "
        f"{sum(data['label_counts'])} reach {data['event']}, and end as {data['label_counts'][1]} "
        f"{data['names'][1]}, {data['label_counts'][0]} {data['names'][0]}.\n\n"
        f"{TABLE_HEAD}\n{summary_line(data)}\n\n"
        f"Explained variance of the first components: {', '.join(f'{100 * e:.1f} %' for e in data['explained'])}.\n\n"
        f"![trajectories]({figs[0].name}) ![separation]({figs[1].name})\n")
    return [path, *figs, md]


def report_section(folder: Path, tasks: tuple[str, ...], figures_rel: str) -> tuple[str, dict[str, bytes]]:
    """The markdown of the committed analyses (``folder/*.json``) of ``tasks`` for ``metabench report``, and their
    figures redrawn (file name -> PNG, linked as ``figures_rel/<name>``). Empty if there are none."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("task") in tasks and {"trajectories", "accuracy"} <= set(data):
            found.append(data)
    if not found:
        return "", {}
    figures: dict[str, bytes] = {}
    lines = ["## Where the agents keep the lesson (`metabench analyze`)", "",
             "Each agent's memory after every step of held-out trials (MetODS: the synaptic weights W_t; RL²: the "
             "hidden state), projected on its principal components and coloured by the situation the trial is in; "
             "a logistic-regression probe on the first 10 components, fitted on half the trials and scored on the "
             "others, reads the situation at each step relative to the event that decides it "
             "(FINDINGS.md, 'Memory analysis'). The command under each table regenerates its files.", ""]
    for task in tasks:
        rows = [d for d in found if d["task"] == task]
        if not rows:
            continue
        lines += [f"### `{task}`: {rows[0]['names'][1]} or {rows[0]['names'][0]}", "", TABLE_HEAD,
                  *[summary_line(d) for d in rows], ""]
        for d in rows:
            figures.update(draw(d))
            lines.append(f"![{stem(d)}]({figures_rel}/{stem(d)}-pca.png) "
                         f"![{stem(d)} separation]({figures_rel}/{stem(d)}-separation.png)")
        lines += ["", "Commands: " + "; ".join(f"`{d['command']}`" for d in rows), ""]
    return "\n".join(lines), figures


__all__ = ["Analysis", "NotAnalysable", "analyze", "draw", "flat_memory", "report_section", "write"]
