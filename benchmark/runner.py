"""The runner: agents x tasks x seeds of a suite and profile -> one record per run.

:func:`plan` expands a selection into :class:`RunSpec` s with their resolved
configs; :func:`pending` drops runs whose record already exists with the same
config and status ``ok`` (so a killed sweep rerun picks up where it stopped);
:func:`run_sweep` executes the rest, each run in its own process. Each run
(:func:`execute_run`) meta-trains, then is scored on held-out test tasks by
the shared protocol (:mod:`metabench.protocol`) on every evaluation variant
of its family, and writes its curves and record atomically. A run that
raises, or whose process dies, becomes a ``failed`` record with its error, and
the sweep goes on; SIGINT or SIGTERM stops the sweep (:class:`SweepInterrupted`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metabench.agents import AGENTS
from metabench.envs import make_family

from . import __version__
from .profiles import PROFILES, Profile
from .protocol import CurveMonitor, evaluate
from .records import InvalidRecord, SCHEMA, check_record, curves_csv, load_record, record_path, write_atomic, write_record
from .suites import Suite


@dataclass(frozen=True)
class RunSpec:
    profile: str
    suite: str
    task: str
    agent: str
    seed: int
    config: dict[str, Any]
    """The resolved config, JSON-normalised: ``{"agent", "task", "profile", "seed"}``."""
    device: str = "cpu"
    """Where the agent computes (``metabench run --device``): ``cpu`` or ``cuda[:i]``. Not part of the config: a
    record's ``platform.device`` says where it ran, and a run done on one device counts as done on another."""

    def path(self, results: Path) -> Path:
        return record_path(results, self.profile, self.suite, self.task, self.agent, self.seed)

    @property
    def label(self) -> str:
        return f"{self.suite}/{self.task}/{self.agent}/seed{self.seed}"


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def resolve_config(agent: str, task: str, profile: Profile, seed: int) -> dict[str, Any]:
    family = make_family(task, profile.name)
    entry = AGENTS.get(agent)
    return _jsonable({
        "agent": {"name": agent, "class": entry.cls.__name__, **dataclasses.asdict(entry.config(family, profile))},
        "task": {"name": task, **dataclasses.asdict(family.config)},
        "profile": profile.as_dict(task),
        "seed": seed,
    })


def same_config(recorded: Any, now: dict[str, Any]) -> bool:
    """Whether a record's ``config`` is ``now``, what :func:`resolve_config` gives today.

    An agent option added after the record was written is missing from it. An option is added with a
    default that keeps the behaviour it did not have before (e.g. ``lr_anneal=False``), so the record ran
    that default: a missing agent key counts as its class default, and only then are the two compared.
    Any other difference (another value, a removed option, another task or budget) is a different config.
    """
    if not isinstance(recorded, dict) or not isinstance(recorded.get("agent"), dict):
        return recorded == now
    name = now.get("agent", {}).get("name")
    if name not in AGENTS:
        return recorded == now
    defaults = {f.name: f.default for f in dataclasses.fields(AGENTS.get(name).cls.Config)
                if f.default is not dataclasses.MISSING}
    missing = {k: v for k, v in _jsonable(defaults).items() if k not in recorded["agent"] and k in now["agent"]}
    return {**recorded, "agent": {**recorded["agent"], **missing}} == now


def plan(
    agents: list[str], suites: list[Suite], profile: Profile, seeds: int | None, tasks: list[str] | None = None,
    device: str = "cpu",
) -> tuple[list[RunSpec], list[str]]:
    """All runs of the selection, and notes on (agent, task) pairs skipped as unsupported. ``seeds``: per
    (agent, task); None: the profile's for each agent and task (:meth:`Profile.seeds_for`). ``device``: where
    the runs' agents compute (:func:`resolve_device`'s answer)."""
    runs, notes = [], []
    for suite in suites:
        for task in suite.tasks:
            if tasks is not None and task not in tasks:
                continue
            family = make_family(task, profile.name)
            for agent in agents:
                entry = AGENTS.get(agent)
                if not entry.cls.supports(family):
                    notes.append(f"{agent} does not support {task}; skipped")
                    continue
                if entry.tasks is not None and task not in entry.tasks:
                    notes.append(f"{agent} runs on {', '.join(entry.tasks)} only; skipped on {task}")
                    continue
                for seed in range(profile.seeds_for(task, agent) if seeds is None else seeds):
                    runs.append(RunSpec(profile.name, suite.name, task, agent, seed,
                                        resolve_config(agent, task, profile, seed), device))
    return runs, notes


def is_done(spec: RunSpec, results: Path) -> bool:
    """A finished run: an ``ok`` record with the same config."""
    path = spec.path(results)
    if not path.exists():
        return False
    try:
        record = load_record(path)
    except InvalidRecord:
        return False
    return record["status"] == "ok" and same_config(record["config"], spec.config)


def pending(runs: list[RunSpec], results: Path) -> list[RunSpec]:
    return [r for r in runs if not is_done(r, results)]


def estimate_seconds(todo: list[RunSpec], results: Path,
                     checkpointing: Checkpointing | None = None) -> tuple[float, int, int, int]:
    """Seconds the runs of ``todo`` take one after another, from the wall times of the ``ok`` records of
    the same agent, task and profile under ``results`` (any seed or config: a guide, not a promise), each
    scaled by the ratio of the run's meta-training budget to the record's (a record of a 2 M budget counts
    five times for a 10 M run). A run whose agent has no such record borrows the mean of the other registered
    variants of its agent class on the task (``metods_s2`` from ``metods`` and its other ablations, ``maml_fo``
    from ``maml``). A run with a checkpoint of its config counts only for the share of its budget still to
    train (its evaluation, not scaled, is in that share: an underestimate of a nearly finished run).
    Returns the seconds, how many runs had nothing to go by (left out of the sum), how many borrowed a
    variant's time, and how many resume from a checkpoint."""
    from metabench.agents import AGENTS

    means: dict[tuple[Path, int], float | None] = {}

    def mean_of(folder: Path, budget: int) -> float | None:
        if (folder, budget) not in means:
            times = []
            for path in folder.glob("seed*.json"):
                try:
                    record = load_record(path)
                except InvalidRecord:
                    continue
                if record["status"] == "ok":
                    recorded = _budget(record.get("config"))
                    scale = budget / recorded if budget and recorded else 1.0
                    times.append(float(record["wall_time_s"]) * scale)
            means[folder, budget] = sum(times) / len(times) if times else None
        return means[folder, budget]

    def variants(agent: str) -> list[str]:
        cls = AGENTS.get(agent).cls if agent in AGENTS.names() else None
        return [a for a in AGENTS.names() if a != agent and cls is not None and AGENTS.get(a).cls is cls]

    total, unknown, borrowed, resuming = 0.0, 0, 0, 0
    for spec in todo:
        folder, budget = spec.path(results).parent, _budget(spec.config)
        done = checkpoint_progress(spec, results, checkpointing)
        resuming += done > 0
        if (own := mean_of(folder, budget)) is not None:
            total += own * (1.0 - done)
            continue
        others = [m for a in variants(spec.agent) if (m := mean_of(folder.parent / a, budget)) is not None]
        if others:
            total += sum(others) / len(others) * (1.0 - done)
            borrowed += 1
        else:
            unknown += 1
    return total, unknown, borrowed, resuming


def _budget(config: Any) -> int:
    """The meta-training budget a resolved config (a record's or a run's) names; 0 if it names none."""
    try:
        return int(config["profile"]["train_env_steps"])
    except (KeyError, TypeError, ValueError):
        return 0


def code_version() -> str:
    """The git commit of the source tree (``-dirty`` if it has changes), else the package version.

    ``METABENCH_CODE_VERSION`` overrides it, for a copy of the tree without ``.git``.
    """
    if os.environ.get("METABENCH_CODE_VERSION"):
        return os.environ["METABENCH_CODE_VERSION"]
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return f"metabench-{__version__}"


def _new_record(spec: RunSpec, version: str) -> dict[str, Any]:
    """A run's record before it has any result: its keys, config and code version, status ``ok``."""
    return {"schema": SCHEMA, "agent": spec.agent, "task": spec.task, "suite": spec.suite, "seed": spec.seed,
            "profile": spec.profile, "status": "ok", "error": None, "metrics": {}, "env_steps": 0,
            "wall_time_s": 0.0, "config": spec.config, "code_version": version}


@dataclass(frozen=True)
class Checkpointing:
    """When and where an unfinished run saves what it needs to go on (:meth:`Agent.training_checkpoint`, the
    curves so far, the global random states), so that a killed run, rerun, resumes from its last checkpoint
    and ends with the record it would have had (on the CPU; timings aside).

    A checkpoint is written atomically at the end of an update (``monitor.update``), every ``every_updates``
    updates, or, if that is None, at the first update ``every_s`` seconds after the last one; it is deleted
    when the run writes its record. ``every_updates = 0``: never.
    """

    folder: Path | None = None
    """Where checkpoints go, as ``<folder>/<profile>/<suite>/<task>/<agent>/seed<k>.ckpt``; None: beside the
    record (``seed<k>.ckpt``, git-ignored)."""
    every_updates: int | None = None
    every_s: float = 300.0

    def path(self, spec: RunSpec, results: Path) -> Path:
        if self.folder is None:
            return spec.path(results).with_suffix(".ckpt")
        return Path(self.folder) / spec.profile / spec.suite / spec.task / spec.agent / f"seed{spec.seed}.ckpt"

    @property
    def enabled(self) -> bool:
        return self.every_updates != 0


def progress_path(ckpt: Path) -> Path:
    """The small note beside a checkpoint (``seed<k>.ckpt.progress``, JSON): the env steps it holds, the run's
    wall time so far and its config, so that a plan can count what is left of a run without loading the
    checkpoint (a PEARL checkpoint with its replay is hundreds of MB)."""
    return ckpt.with_name(ckpt.name + ".progress")


def checkpoint_progress(spec: RunSpec, results: Path, checkpointing: Checkpointing | None = None) -> float:
    """The share of ``spec``'s meta-training budget its checkpoint holds, in [0, 1]; 0 without a checkpoint,
    without its progress note, or with either of another config."""
    checkpointing = checkpointing or Checkpointing()
    if not checkpointing.enabled:
        return 0.0
    ckpt = checkpointing.path(spec, results)
    try:
        note = json.loads(progress_path(ckpt).read_text())
        if not ckpt.exists() or not same_config(note["config"], spec.config):
            return 0.0
        budget = _budget(spec.config)
        return min(max(int(note["env_steps"]) / budget, 0.0), 1.0) if budget > 0 else 0.0
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


CHECKPOINT_FORMAT = 1


def _global_rng() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_global_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _load_checkpoint(path: Path, spec: RunSpec) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint at ``path`` if it is this run's (same config), else None with why not ("" if none)."""
    if not path.exists():
        return None, ""
    try:
        # our own file (it holds the loop's generators and buffers); tensors load on the CPU, and restoring them
        # into the agent puts them on its device
        ckpt = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - an unreadable checkpoint is set aside, the run starts afresh
        return None, f"unreadable ({type(e).__name__})"
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        return None, "of another format"
    if not same_config(ckpt.get("config"), spec.config):
        return None, "of another config"
    return ckpt, ""


class _Checkpointer:
    """Saves a run's checkpoint when :class:`Checkpointing` says it is due (the monitor's ``after_update``)."""

    def __init__(self, policy: Checkpointing, path: Path, save: Callable[[], dict[str, Any]]):
        self.policy, self.path, self.save = policy, path, save
        self.updates, self.last = 0, time.perf_counter()

    def __call__(self) -> None:
        self.updates += 1
        p = self.policy
        due = (self.updates % p.every_updates == 0) if p.every_updates else time.perf_counter() - self.last >= p.every_s
        if not due:
            return
        state = self.save()
        write_atomic(self.path, lambda f: torch.save(state, f))  # streamed: a PEARL replay runs to gigabytes
        write_atomic(progress_path(self.path), json.dumps(
            {"env_steps": int(state["env_steps"]), "wall_time_s": round(float(state["wall_time_s"]), 3),
             "config": state["config"]}, sort_keys=True))
        self.last = time.perf_counter()


def execute_run(spec: RunSpec, results: Path, version: str, threads: int = 1,
                progress_queue: Any = None, checkpointing: Checkpointing | None = None) -> dict[str, Any]:
    """Train and evaluate one run, write its curves and record; never raises for a failing agent.

    ``progress_queue``: where live progress goes (:class:`metabench.progress.RunReporter`), if anywhere.
    ``checkpointing``: when and where the unfinished run saves itself (default :class:`Checkpointing`: every
    5 minutes, beside the record); a checkpoint of this run's config found at the start is resumed from, and
    the record lists the env steps it resumed at as ``resumed``.
    """
    checkpointing = checkpointing or Checkpointing()
    torch.set_num_threads(max(1, threads))
    started = time.perf_counter()
    record = _new_record(spec, version)
    record["platform"] = {"python": platform.python_version(), "torch": torch.__version__,
                          "machine": platform.machine(), "threads": torch.get_num_threads()}
    rows: list[tuple[str, float, str, float]] = []
    path = spec.path(results)
    weights = state_path(path)
    weights.unlink(missing_ok=True)  # a rerun's record never sits beside an earlier run's weights
    state: dict[str, Any] = {}
    walled_before = 0.0  # a resumed run's wall time before its checkpoint
    try:
        profile = PROFILES.get(spec.profile)
        family = make_family(spec.task, spec.profile)
        entry = AGENTS.get(spec.agent)
        config = entry.config(family, profile)
        if resolve_config(spec.agent, spec.task, profile, spec.seed) != spec.config:
            raise RuntimeError("the config changed between planning and running")
        # One process may execute many runs (workers=1): without a reset, torch.compile's graphs of earlier
        # runs (one per batch shape and config) count against its recompile limit of 8, and later runs fall
        # back to eager. Each run starts afresh.
        torch.compiler.reset()
        torch.manual_seed(spec.seed)
        agent = entry.build(family, config, spec.seed).to(check_device(spec.device))
        record["platform"]["device"] = device_name(agent.device)
        record["platform"].update(agent.run_info())
        budget = profile.budget(spec.task)
        reporter = None
        if progress_queue is not None:
            from .progress import RunReporter

            reporter = RunReporter(progress_queue, spec.label, budget, family.primary_metric)
        monitor = CurveMonitor(agent, family, spec.seed, budget, profile.curve_tasks_for(spec.task),
                               profile.curve_points, reporter=reporter)
        rows = monitor.rows
        ckpt_path = checkpointing.path(spec, results)
        ckpt, why_not = _load_checkpoint(ckpt_path, spec) if checkpointing.enabled else (None, "")
        if why_not:
            print(f"{spec.label}: checkpoint {ckpt_path} {why_not}; starting afresh", file=sys.stderr)
        trained_before, resumed = 0.0, []
        if ckpt is not None:
            agent.resume_training(ckpt["agent"])
            monitor.restore(ckpt["monitor"])
            _set_global_rng(ckpt["rng"])
            trained_before, walled_before = ckpt["train_time_s"], ckpt["wall_time_s"]
            resumed = [*ckpt["resumed"], int(ckpt["env_steps"])]
            record["resumed"] = resumed
        else:
            monitor.evaluate_now(0, 0, 0)
        train_start = time.perf_counter()
        if checkpointing.enabled:
            monitor.after_update = _Checkpointer(checkpointing, ckpt_path, lambda: {
                "format": CHECKPOINT_FORMAT, "config": spec.config, "code_version": version,
                "env_steps": agent.loop.steps if agent.loop is not None else 0,
                "agent": agent.training_checkpoint(), "monitor": monitor.state(), "rng": _global_rng(),
                "train_time_s": trained_before + time.perf_counter() - train_start,
                "wall_time_s": walled_before + time.perf_counter() - started, "resumed": resumed})
        used = int(agent.meta_train(family, budget, monitor))
        train_time = trained_before + time.perf_counter() - train_start
        state = on_cpu(agent.state_dict())  # before the final evaluation draws actions: loaded, it scores the same
        if used > budget:
            raise RuntimeError(f"agent used {used} env steps, over its budget of {budget}")
        record["env_steps"] = used
        metrics: dict[str, float] = {}
        for suffix, variant in family.evaluation_variants().items():
            ev = evaluate(agent, variant, spec.seed, profile.test_tasks_for(spec.task))
            metrics.update({_suffixed(k, suffix): v for k, v in ev.metrics.items()})
            for t, r, a in step_bins(ev.step_reward, ev.step_active):
                rows.append((f"step_reward{suffix}", t, "reward", r))
                rows.append((f"step_reward{suffix}", t, "active_fraction", a))
            if suffix in family.curve_variants() and used > 0:
                monitor.log_eval(budget, used, monitor.episodes, ev.metrics, suffix)
        metrics["train_env_steps_per_s"] = used / train_time if used and train_time > 0 else 0.0
        metrics.update({f"train_{k}": float(v) for k, v in agent.training_summary().items()})
        record["metrics"] = metrics
        problems = check_record(path, record)
        if problems:  # e.g. no main metric: `validate` would reject it, so it is a failed run, said why
            raise RuntimeError(f"the run's record would be invalid: {'; '.join(problems)}")
    except Exception as e:  # noqa: BLE001 - any failure of a run becomes its record
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        record["traceback"] = traceback.format_exc()
        record["metrics"] = {}
    record["wall_time_s"] = round(walled_before + time.perf_counter() - started, 3)
    saved = None
    if state and record["status"] == "ok":
        buf = io.BytesIO()
        torch.save(state, buf)
        saved = buf.getvalue()
    write_run(path, record, curves_csv(rows), saved)
    ckpt_path = checkpointing.path(spec, results)
    ckpt_path.unlink(missing_ok=True)  # finished: its record supersedes it
    progress_path(ckpt_path).unlink(missing_ok=True)
    return record


STEP_POINTS = 500
"""At most this many points of the reward-per-step curve of a trial in a run's curves file."""


def step_bins(reward: Any, active: Any, points: int = STEP_POINTS) -> list[tuple[int, float, float]]:
    """``(first step, mean reward, mean active fraction)`` per bin of ⌈T / points⌉ steps of a trial: every step
    where the trial is short (Harlow, the maze, the MuJoCo tasks), bins on Meta-World's 5,000 steps, so that
    a curves file stays small enough to commit. The reward is averaged over the active tasks of the bin."""
    width = max(1, math.ceil(len(reward) / points))
    out = []
    for start in range(0, len(reward), width):
        r, a = reward[start:start + width], active[start:start + width]
        weight = float(sum(a))
        mean_r = float(sum(x * y for x, y in zip(r, a)) / weight) if weight > 0 else 0.0
        out.append((start, mean_r if width > 1 else float(r[0]), float(sum(a) / len(a))))
    return out


DEVICES = ("cpu", "cuda", "auto")
"""``metabench run --device``: where the torch agents compute (``auto``: ``cuda`` where torch sees a GPU, else
``cpu``). The task families, the protocol and MuJoCo / Meta-World stay on the CPU."""


def resolve_device(name: str) -> str:
    """``--device`` as a run's device: ``auto`` resolved here; ``ValueError`` (one line) for an unknown name."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise ValueError(f"unknown device {name!r}; valid: cpu, cuda, cuda:N, auto")


def check_device(name: str) -> torch.device:
    """``name`` as a ``torch.device`` this process can use, else ``RuntimeError`` saying why (one line)."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise RuntimeError(f"unsupported device {name!r}")
    return device


def device_name(device: torch.device) -> str:
    """What a record says of its device: ``cpu``, or ``cuda:0 (<GPU name>)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def on_cpu(obj: Any) -> Any:
    """``obj`` (nested dicts, lists and tuples of tensors, as a ``state_dict``) with every tensor on the CPU: a
    saved agent loads on any machine."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def write_run(path: Path, record: dict[str, Any], curves: str | bytes | None, weights: bytes | None) -> None:
    """A finished run's files beside its record ``path``, each written atomically, the record last (what marks
    the run done): the curves, the trained agent (or no ``.pt`` at all, so that no earlier run's weights sit
    beside this record) and the record. :func:`execute_run` writes its own run with it, the Ray driver the runs
    its workers return."""
    state_path(path).unlink(missing_ok=True)
    if curves is not None:
        write_atomic(path.with_name(f"{path.stem}.curves.csv"), curves)
    if weights is not None:
        write_atomic(state_path(path), weights)
    write_record(path, record)


def state_path(record: Path) -> Path:
    """Where a run's trained agent is saved: ``seed<N>.pt`` beside its record (git-ignored)."""
    return Path(record).with_suffix(".pt")


def load_agent(record: Path) -> Any:
    """The trained agent of a finished run, rebuilt from its record and ``seed<N>.pt``.

    It is the agent as meta-training left it, before the record's held-out evaluation: evaluating it
    (:func:`metabench.protocol.evaluate`, the record's seed and test-task count) gives the record's
    metrics again. Raises ``ValueError`` with a one-line reason if the record is not an ``ok`` run of
    the config this code runs, or its weights are missing.
    """
    rec = load_record(record)
    if rec["status"] != "ok":
        raise ValueError(f"{record}: the run {rec['status']}; no trained agent")
    profile = PROFILES.get(rec["profile"])
    now = resolve_config(rec["agent"], rec["task"], profile, rec["seed"])
    if not same_config(rec["config"], now):
        raise ValueError(f"{record}: recorded with another config than this code runs; rerun it")
    family = make_family(rec["task"], rec["profile"])
    entry = AGENTS.get(rec["agent"])
    agent = entry.build(family, entry.config(family, profile), rec["seed"])
    if agent.stateful():  # else nothing was learned (Random): the fresh agent is the trained one
        weights = state_path(record)
        if not weights.exists():
            raise ValueError(f"{record}: no saved agent beside it ({weights.name}); rerun it to save one")
        agent.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
    return agent


def _suffixed(metric: str, suffix: str) -> str:
    """``cumulative_reward`` + ``_larger`` -> ``cumulative_reward_larger`` (``_std`` stays last)."""
    if suffix and metric.endswith("_std"):
        return f"{metric[:-4]}{suffix}_std"
    return f"{metric}{suffix}" if metric != "test_episodes" else f"test_episodes{suffix}"


def _exit_with_parent(parent_pid: int) -> None:
    """In a run's process: end it when the sweep's process dies (e.g. ``kill -9``).

    Otherwise an orphaned run trains on for nothing. A run ended mid-way leaves no partial record:
    records are written atomically. (On Linux the process also has a parent-death signal from the moment
    ``metabench`` is imported: see ``metabench/__init__.py``; this thread covers the other systems.)
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_process(spec: RunSpec, results: Path, version: str, threads: int, progress_queue: Any,
                 parent_pid: int, checkpointing: Checkpointing | None = None) -> None:
    """The body of one run's own process (see :class:`SpawnExecutor`)."""
    # Ctrl-C reaches the whole process group: the sweep's process decides what happens to the runs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent_pid)
    execute_run(spec, results, version, threads, progress_queue, checkpointing)


@dataclass
class SweepResult:
    done: list[dict[str, Any]]
    """The records of the runs this sweep finished (``ok`` or ``failed``), in the order they finished."""
    skipped: int
    """Runs already done before the sweep (an ``ok`` record with the same config)."""
    crashed: list[str]
    """Labels of the runs whose process died (each also has a ``failed`` record in :attr:`done`)."""
    by_other: list[str] = dataclasses.field(default_factory=list)
    """Labels of the runs another sweep on the same folder finished while this one waited for them."""


class SweepInterrupted(Exception):
    """The sweep was asked to stop (SIGINT or SIGTERM): runs in flight were stopped, queued ones not started.

    Every finished run has its record; the stopped ones have none (or keep their earlier one), so
    rerunning the same command resumes.
    """

    def __init__(self, result: SweepResult, stopped: list[str], not_started: list[str], signal_name: str):
        self.result, self.stopped, self.not_started, self.signal_name = result, stopped, not_started, signal_name
        super().__init__(f"{signal_name}: {len(result.done)} runs finished, {len(stopped)} stopped in flight, "
                         f"{len(not_started)} not started")


class _Stop(BaseException):
    """Raised in the sweep's main thread by SIGINT or SIGTERM; its argument is the signal's name."""


def _died(spec: RunSpec, results: Path, version: str, how: str, wall_time_s: float) -> dict[str, Any]:
    """The ``failed`` record of a run whose process ended without writing a valid record of its own."""
    record = {**_new_record(spec, version), "status": "failed", "error": f"WorkerDied: the run's process {how}",
              "wall_time_s": round(wall_time_s, 3)}
    write_record(spec.path(results), record)
    return record


@dataclass
class Finished:
    """A run an executor has finished: its record (the run's own, or a ``failed`` one if its process died)."""

    spec: RunSpec
    record: dict[str, Any]
    crashed: bool = False


class Executor:
    """Where runs execute. :func:`run_sweep` owns the schedule (queue, claims, stopping); an executor only
    starts runs and reports them finished, so another backend (a cluster) is one more subclass."""

    slots: int
    """How many runs may be in flight at once."""

    def start(self, spec: RunSpec) -> None:
        """Start one run (it writes its own curves and record)."""
        raise NotImplementedError

    def wait(self, timeout: float) -> list[Finished]:
        """The runs that finished, waiting up to ``timeout`` s for at least one while any is in flight."""
        raise NotImplementedError

    def in_flight(self) -> list[RunSpec]:
        raise NotImplementedError

    def stop(self) -> None:
        """Kill the runs in flight; they write nothing."""


class InProcessExecutor(Executor):
    """One run at a time, in this process (``workers=1``): ``start`` returns when the run has finished."""

    slots = 1

    def __init__(self, results: Path, version: str, threads: int, progress_queue: Any,
                 checkpointing: Checkpointing | None = None):
        self.results, self.version, self.threads, self.progress_queue = results, version, threads, progress_queue
        self.checkpointing = checkpointing
        self.current: RunSpec | None = None
        self.finished: list[Finished] = []

    def start(self, spec: RunSpec) -> None:
        self.current = spec  # in flight until execute_run returns, for a stop that lands inside it
        record = execute_run(spec, self.results, self.version, threads=self.threads,
                             progress_queue=self.progress_queue, checkpointing=self.checkpointing)
        self.current = None
        self.finished.append(Finished(spec, record))

    def wait(self, timeout: float) -> list[Finished]:
        out, self.finished = self.finished, []
        return out

    def in_flight(self) -> list[RunSpec]:
        return [self.current] if self.current is not None else []


class SpawnExecutor(Executor):
    """Each run in its own spawned process, at most ``slots`` at once: a run whose process dies (killed,
    out of memory) is known and recorded ``failed`` with the signal, and the others go on."""

    def __init__(self, results: Path, version: str, threads: int, progress_queue: Any, slots: int,
                 checkpointing: Checkpointing | None = None):
        self.results, self.version, self.threads, self.progress_queue = results, version, threads, progress_queue
        self.slots, self.checkpointing = slots, checkpointing
        self.ctx = multiprocessing.get_context("spawn")
        self.running: dict[Any, tuple[Any, RunSpec, float]] = {}

    def start(self, spec: RunSpec) -> None:
        proc = self.ctx.Process(target=_run_process, name=f"metabench {spec.label}",
                                args=(spec, self.results, self.version, self.threads, self.progress_queue,
                                      os.getpid(), self.checkpointing))
        # Read by metabench/__init__.py in the child: it dies with this process even while still importing.
        os.environ[PARENT_ENV] = str(os.getpid())
        try:
            proc.start()
        finally:
            os.environ.pop(PARENT_ENV, None)
        self.running[proc.sentinel] = (proc, spec, time.perf_counter())

    def wait(self, timeout: float) -> list[Finished]:
        out = []
        for sentinel in multiprocessing.connection.wait(list(self.running), timeout=timeout):
            proc, spec, started = self.running.pop(sentinel)
            proc.join()
            record = None
            if proc.exitcode == 0:
                try:
                    record = load_record(spec.path(self.results))
                    how = ""
                except InvalidRecord as e:
                    how = f"exited without a valid record ({e})"
            elif proc.exitcode is not None and proc.exitcode < 0:
                how = f"was killed by {signal.Signals(-proc.exitcode).name}"
            else:
                how = f"exited with status {proc.exitcode}"
            if record is None:
                record = _died(spec, self.results, self.version, how, time.perf_counter() - started)
            out.append(Finished(spec, record, crashed=bool(how)))
        return out

    def in_flight(self) -> list[RunSpec]:
        return [spec for _proc, spec, _started in self.running.values()]

    def stop(self) -> None:
        for proc, _spec, _started in self.running.values():
            proc.kill()
        for proc, _spec, _started in self.running.values():
            proc.join()
        self.running = {}


EXECUTORS = ("local", "ray")
"""Where a sweep's runs execute (``metabench run --executor``)."""

PARENT_ENV = "METABENCH_SWEEP_PID"
"""Set for a run's spawned process: the pid of the sweep it belongs to."""

POLL_S = 5.0
"""How often a sweep waiting for another sweep's runs looks again."""


def run_sweep(
    runs: list[RunSpec],
    results: Path,
    workers: int | None = None,
    on_done: Callable[[int, int, RunSpec, dict[str, Any]], None] | None = None,
    progress_queue: Any = None,
    threads: int | None = None,
    on_start: Callable[[RunSpec], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    poll_s: float = POLL_S,
    checkpointing: Checkpointing | None = None,
    executor_name: str = "local",
    address: str | None = None,
) -> SweepResult:
    """Execute the pending runs of ``runs``; ``on_start(spec)`` before each, ``on_done(i, n, spec, record)``
    after each, ``on_note(line)`` for what the user should know about the schedule.

    With one worker the runs execute in this process; with more, each run has its own process (spawned,
    at most ``workers`` at once), so a run whose process dies (killed, out of memory) is known: it is
    recorded ``failed`` with the signal, and the sweep goes on with the others.

    Each run is claimed before it starts (:mod:`metabench.claims`): a run another sweep on the same
    folder is running is left to it, and this sweep, once it has nothing else to do, waits for it (a note
    says so); if that sweep ends without an ``ok`` record for it, this one runs it.

    SIGINT (Ctrl-C) or SIGTERM stops the sweep: queued runs are not started, runs in flight are stopped
    (they write nothing), and :class:`SweepInterrupted` says what finished.

    ``threads``: torch intra-op threads per run (default: the cores shared out among the workers).
    ``progress_queue``: a (manager) queue the runs report live progress to (:mod:`metabench.progress`).
    ``checkpointing``: when and where unfinished runs save themselves (:class:`Checkpointing`); a run killed
    mid-way resumes from its checkpoint when a later sweep runs it.
    ``executor_name``: ``local`` (this machine's processes, as above) or ``ray`` (one Ray task per run, on a
    local instance or the cluster at ``address``: :mod:`metabench.ray_executor`).
    """
    from .claims import Claims

    results = Path(results)
    todo = pending(runs, results)
    result = SweepResult([], len(runs) - len(todo), [])
    version = code_version()
    note = on_note or (lambda line: None)
    if executor_name == "ray" and todo:  # slots: --workers, else the cluster's CPUs over the threads of a run
        from .ray_executor import RayExecutor

        threads = max(1, threads or 1)
        executor: Executor = RayExecutor(results, version, threads, progress_queue,
                                         min(workers, max(len(todo), 1)) if workers else None, checkpointing, address)
    elif executor_name in EXECUTORS:
        workers = max(1, min(workers or os.cpu_count() or 1, max(len(todo), 1)))
        threads = max(1, threads or (os.cpu_count() or 1) // workers)
        executor = (InProcessExecutor(results, version, threads, progress_queue, checkpointing) if workers == 1
                    else SpawnExecutor(results, version, threads, progress_queue, workers, checkpointing))
    else:
        raise ValueError(f"unknown executor {executor_name!r}; valid: {', '.join(EXECUTORS)}")
    queue = list(todo)
    waiting: dict[str, RunSpec] = {}  # claimed by another sweep
    claims = Claims()

    def finish(done: Finished) -> None:
        claims.release(done.spec.path(results))
        result.done.append(done.record)
        if done.crashed:
            result.crashed.append(done.spec.label)
        if on_done:
            on_done(len(result.done), len(todo), done.spec, done.record)

    def next_run() -> RunSpec | None:
        """The next queued run, claimed by this sweep; None if there is none it may start now."""
        while queue:
            spec = queue.pop(0)
            owner, took_over = claims.claim(spec.path(results))
            if took_over:
                note(took_over)
            if owner is not None:
                waiting[spec.label] = spec
                note(f"{spec.label} is being run by another sweep ({owner.describe()}); "
                     "waiting for it after this sweep's other runs")
                continue
            if is_done(spec, results):  # another sweep finished it since this one was planned
                claims.release(spec.path(results))
                result.by_other.append(spec.label)
                note(f"{spec.label} was finished by another sweep")
                continue
            return spec
        return None

    def look_again() -> None:
        """Waiting runs that another sweep finished are done; those it no longer holds are queued again."""
        from .claims import live_owner

        for label, spec in list(waiting.items()):
            if live_owner(spec.path(results)) is not None:
                continue
            del waiting[label]
            if is_done(spec, results):
                result.by_other.append(label)
                note(f"{label} was finished by another sweep")
            else:
                queue.append(spec)

    with _stop_on_signals():
        try:
            while queue or waiting or executor.in_flight():
                while len(executor.in_flight()) < executor.slots and (spec := next_run()) is not None:
                    if on_start:
                        on_start(spec)
                    executor.start(spec)
                    for done in executor.wait(0):  # the in-process executor has finished it already
                        finish(done)
                if executor.in_flight():
                    for done in executor.wait(poll_s if waiting else None):
                        finish(done)
                elif waiting and not queue:
                    time.sleep(poll_s)
                look_again()
            return result
        except (KeyboardInterrupt, _Stop) as e:
            for done in executor.wait(0):
                finish(done)
            in_flight = executor.in_flight()
            executor.stop()
            stopped = []
            for spec in in_flight:  # a run that wrote its record before it was stopped has finished
                if is_done(spec, results):
                    finish(Finished(spec, load_record(spec.path(results))))
                else:
                    stopped.append(spec.label)
            not_started = [s.label for s in [*queue, *waiting.values()]]
            raise SweepInterrupted(result, stopped, not_started,
                                   e.args[0] if isinstance(e, _Stop) else "SIGINT") from None
        finally:
            claims.close()


@contextlib.contextmanager
def _stop_on_signals():
    """While the sweep runs in the main thread, SIGINT and SIGTERM stop it. SIGINT is installed too, not
    left to Python: a sweep started in the background (``make run > log &``) inherits SIGINT ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["Checkpointing", "RunSpec", "SweepInterrupted", "SweepResult", "checkpoint_progress", "estimate_seconds", "execute_run", "load_agent", "pending", "plan", "run_sweep",
           "state_path"]
