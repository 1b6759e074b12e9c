"""The ``metabench`` command line: list, run, report, validate, check."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .registry import UnknownName

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # Plain help: typer's rich help prints a type column even for flags (`--help <bool>`).
    rich_markup_mode=None,
    help="metabench: meta-RL agents (MetODS, RL², MAML, PEARL, Random) on the efficiency, "
    "capacity and generality suites (Meta-World tasks are planned). Records go to results/, reports to "
    "reports/.",
)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command("list")
def list_() -> None:
    """List the agents, task families, suites and profiles (with the package that added any from outside)."""
    from metabench.agents import AGENTS
    from metabench.envs import FAMILIES, make_family

    from .registry import BUILTIN

    def origin(registry, name: str) -> str:
        where = registry.origin(name)
        return "" if where == BUILTIN else f" [from {where}]"

    from .profiles import PROFILES
    from .suites import SUITES

    w = max(len(n) for n in [*AGENTS, *FAMILIES, *SUITES, *PROFILES]) + 1
    typer.echo("agents:")
    for name, entry in AGENTS.items():
        only = f" (runs on {', '.join(entry.tasks)})" if entry.tasks else ""
        typer.echo(f"  {name:<{w}} {entry.summary}{only}{origin(AGENTS, name)}")
    typer.echo("tasks:")
    quick = PROFILES.get("quick")
    for name in FAMILIES:
        f = make_family(name)
        budget = f"; quick: {quick.budget_text(name)}" if name in quick.train_env_steps else ""
        typer.echo(f"  {name:<{w}} obs {f.obs_dim}, {f.action_space.kind} actions ({f.action_space.n}), "
                   f"{f.episodes_per_trial} x {f.max_episode_steps}-step episodes per trial{budget}"
                   f"{origin(FAMILIES, name)}")
    typer.echo("suites:")
    for name, suite in SUITES.items():
        typer.echo(f"  {name:<{w}} {', '.join(suite.tasks)}: {suite.summary}{origin(SUITES, name)}")
    typer.echo("profiles:")
    for name, prof in PROFILES.items():
        own = {t: prof.seeds_for(t) for t in FAMILIES if prof.seeds_for(t) != prof.seeds}
        by_count = {n: [t for t, k in own.items() if k == n] for n in sorted(set(own.values()))}
        also = "".join(f" ({n} on {', '.join(ts)})" for n, ts in by_count.items())
        fewer = [a for a in AGENTS if AGENTS.get(a).seeds.get(name, prof.seeds) < prof.seeds]
        also += f" ({', '.join(sorted({str(AGENTS.get(a).seeds[name]) for a in fewer}))} for {', '.join(fewer)})" \
            if fewer else ""
        typer.echo(f"  {name:<{w}} {prof.seeds} seeds{also}; {prof.summary}")


@app.command()
def run(
    agents: Annotated[str, typer.Option(help="Agent names, comma-separated, or 'all'.")] = "all",
    suite: Annotated[str, typer.Option(help="Suite name or 'all'.")] = "all",
    tasks: Annotated[Optional[str], typer.Option(help="Only these tasks of the suite, comma-separated.")] = None,
    profile: Annotated[str, typer.Option(
        help="How much compute a run gets: smoke (seconds a run; CI and the regression gate), quick (the "
        "default; what this repository commits) or paper (the paper's budgets; for a GPU or a cluster).")
    ] = "quick",
    seeds: Annotated[Optional[int], typer.Option(help="Seeds per agent and task (default: the profile's).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel runs (default: the core count).")] = None,
    results: Annotated[Path, typer.Option(
        help="Folder the records are written under, as <results>/<profile>/<suite>/<task>/<agent>/seed<k>.json.")
    ] = Path("results"),
    threads: Annotated[Optional[int], typer.Option(
        help="Torch threads per run (default: the cores shared out among the workers).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan (runs, already done, to do, the estimated time, and the runs to do "
        "by task and agent) and exit without training.")] = False,
    checkpoint_every: Annotated[Optional[int], typer.Option(
        help="Updates between a run's checkpoints (default: one every 5 minutes of a run; 0: none).")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option(
        help="Folder for the checkpoints of unfinished runs, as <dir>/<profile>/<suite>/<task>/<agent>/"
        "seed<k>.ckpt (default: beside each record).")] = None,
    executor: Annotated[str, typer.Option(
        help="Where runs execute: local (this machine's processes) or ray (one Ray task per run; "
        "pip install 'metabench[ray]').")] = "local",
    address: Annotated[Optional[str], typer.Option(
        help="With --executor ray: the cluster, 'auto' or HOST:PORT (default: a local Ray instance).")] = None,
    device: Annotated[str, typer.Option(
        help="Where the torch agents compute: cpu, cuda (or cuda:N) or auto (cuda where torch sees a GPU). "
        "The task families and the simulators stay on the CPU; each record's platform.device says where it "
        "ran.")] = "cpu",
) -> None:
    """Meta-train and score agents x tasks x seeds, one record per run.

    Each run meta-trains within the profile's env-step budget, is scored on held-out test tasks, and
    writes results/<profile>/<suite>/<task>/<agent>/seed<k>.json (with .curves.csv and the trained agent,
    .pt, beside it). A run whose record exists with the same config is skipped, so rerunning a killed
    sweep resumes it; a run killed mid-way resumes from its last checkpoint (seed<k>.ckpt, deleted when
    its record is written).
    """
    from .profiles import PROFILES
    from .runner import plan

    try:
        prof = PROFILES.get(profile)
    except UnknownName as e:
        _fail(str(e), 2)
    agent_names, suites, task_names = _selection(agents, suite, tasks)
    if seeds is not None and seeds < 1:
        _fail("--seeds must be at least 1", 2)
    if workers is not None and workers < 1:
        _fail("--workers must be at least 1", 2)
    if threads is not None and threads < 1:
        _fail("--threads must be at least 1", 2)
    if checkpoint_every is not None and checkpoint_every < 0:
        _fail("--checkpoint-every must be at least 0", 2)
    from .runner import EXECUTORS

    if executor not in EXECUTORS:
        _fail(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}", 2)
    if address is not None and executor != "ray":
        _fail("--address needs --executor ray", 2)
    from .runner import Checkpointing

    checkpointing = Checkpointing(checkpoint_dir, checkpoint_every)
    from .runner import check_device, resolve_device

    try:
        device = resolve_device(device)
        if executor == "local":  # on Ray, the device is the workers': a run that lacks it fails saying so
            check_device(device)
    except (ValueError, RuntimeError) as e:
        _fail(f"--device: {e}", 2)

    runs, notes = plan(agent_names, suites, prof, seeds, task_names, device)
    for note in notes:
        typer.echo(f"note: {note}")
    if not runs:
        _fail("nothing to run for this selection", 2)
    header = f"on profile {prof.name} -> {results}/{prof.name}/"
    if dry_run:
        _print_plan(runs, results, workers, header, checkpointing)
        return
    _check_writable(results)
    if checkpoint_dir is not None:
        _check_writable(checkpoint_dir)
    out = _sweep(runs, results, workers, threads, header=header, checkpointing=checkpointing, executor=executor,
                 address=address)
    failed = [r for r in out.done if r["status"] != "ok"]
    typer.echo(f"done: {len(out.done) - len(failed)} ok, {len(failed)} failed, {out.skipped} already done"
               + (f", {len(out.by_other)} finished by another sweep" if out.by_other else "")
               + (f" ({len(out.crashed)} failed because their process died)" if out.crashed else ""))
    if failed:
        raise typer.Exit(1)


@app.command()
def analyze(
    record: Annotated[Path, typer.Option(help="A record whose saved agent (seed<k>.pt) is beside it.")],
    tasks: Annotated[int, typer.Option(help="Held-out trials to play (the record's test stream).")] = 256,
    out: Annotated[Path, typer.Option(help="Folder for the figures, the summary and the data file.")] = Path(
        "reports/analysis"),
) -> None:
    """Where a trained agent keeps what it learned in a trial: PCA of its memory (MetODS's W, RL²'s h) over
    held-out trials, coloured by the situation (Harlow: the first choice's outcome; the maze: target found
    yet), and a probe of how well the memory tells the two apart, step by step."""
    from metabench.envs import make_family

    from .analyze import NotAnalysable, analyze as run_analysis, write
    from .records import InvalidRecord, load_record
    from .runner import load_agent

    if tasks < 2:
        _fail("--tasks must be at least 2", 2)
    try:
        rec = load_record(record)
        agent = load_agent(record)
    except (InvalidRecord, ValueError, OSError) as e:
        _fail(str(e).splitlines()[0], 2)
    family = make_family(rec["task"], rec["profile"])
    score = {k: rec["metrics"][k] for k in (family.primary_metric, *(family.solved[:1] if family.solved else ()))
             if k in rec["metrics"]}
    try:
        result = run_analysis(agent, family, rec["seed"], tasks, str(record), rec["agent"], rec["task"], score)
    except NotAnalysable as e:
        _fail(str(e), 2)
    command = f"metabench analyze --record {record} --tasks {tasks} --out {out}"
    for path in write(result, out, command):
        typer.echo(f"wrote {path}")


@app.command()
def report(
    results: Annotated[Path, typer.Option(help="Records to read.")] = Path("results"),
    reports: Annotated[Path, typer.Option(help="Where reports are written.")] = Path("reports"),
    readme: Annotated[Optional[Path], typer.Option(
        help="README whose results section (between the results markers) is regenerated; "
        "default: README.md beside the results folder, if there is one; 'none' to skip.")] = None,
) -> None:
    """Write reports/<suite>.md and figures from the records.

    Also regenerates the README's results section; never retrains.
    """
    from .report import write_reports

    if not results.is_dir():
        _fail(f"no results folder at {results}", 2)
    if readme is None:
        beside = results.resolve().parent / "README.md"
        readme = beside if beside.is_file() else None
    elif str(readme) == "none":
        readme = None
    elif not readme.is_file():
        _fail(f"no README at {readme}", 2)
    built = write_reports(results, reports, readme)
    for w in built.warnings:
        typer.echo(f"skipped: {w}", err=True)
    for rel in sorted(built.files):
        typer.echo(f"wrote {reports / rel}")
    if readme is not None and built.readme_section and not any(str(readme) in w for w in built.warnings):
        typer.echo(f"wrote the results section of {readme}")
    if not built.files:
        typer.echo("no records to report")


@app.command()
def config(
    agent: Annotated[str, typer.Argument(help="A registered agent name (metabench list).")],
    task: Annotated[str, typer.Argument(help="A registered task family name.")],
    profile: Annotated[str, typer.Option(help="Profile: smoke, quick or paper.")] = "quick",
    seed: Annotated[int, typer.Option(help="Seed of the run.")] = 0,
) -> None:
    """Print the resolved config of one run as JSON.

    It is what a run of AGENT on TASK under the profile records in its ``config``: the agent's
    hyperparameters from the defaults table (agents/defaults.py) and its variant's overrides, the task
    family's config and the profile's budget.
    """
    import json

    from metabench.agents import AGENTS
    from metabench.envs import FAMILIES

    from .profiles import PROFILES
    from .runner import resolve_config

    try:
        AGENTS.get(agent)
        FAMILIES.get(task)
        prof = PROFILES.get(profile)
    except UnknownName as e:
        _fail(str(e), 2)
    try:
        resolved = resolve_config(agent, task, prof, seed)
    except (KeyError, ValueError) as e:
        _fail(f"cannot resolve {agent} on {task} under {profile}: {e}", 2)
    typer.echo(json.dumps(resolved, indent=2, sort_keys=True))


@app.command()
def validate(
    results: Annotated[Path, typer.Option(help="Records to validate.")] = Path("results"),
) -> None:
    """Validate every record under results/.

    Each record must be a well-formed record at <profile>/<suite>/<task>/<agent>/seed<k>.json with the same
    fields, of a registered agent, task, suite and profile (the task in that suite); an ok record must hold
    its task's main metric, and its curves CSV, if any, must parse. Every problem is named, one line a file,
    and the exit status is 1; reports and the regression gate skip the same files.
    """
    from .records import check_curves, scan

    if not results.is_dir():
        _fail(f"no results folder at {results}", 2)
    found = scan(results)
    for e in found.invalid:
        typer.echo(f"invalid: {e}", err=True)
    bad_curves = [problem for path, _ in found.records for problem in check_curves(path)]
    for problem in bad_curves:
        typer.echo(f"invalid: {problem}", err=True)
    failed = [p for p, r in found.records if r["status"] != "ok"]
    typer.echo(f"{len(found.records)} valid records ({len(failed)} failed runs), {len(found.invalid)} invalid"
               + (f", {len(bad_curves)} corrupt curves files" if bad_curves else ""))
    if found.invalid or bad_curves:
        raise typer.Exit(1)


@app.command()
def check(
    baseline: Annotated[Path, typer.Option(help="The committed baseline scores.")] = Path(
        "results/baselines/smoke.json"),
    update_baseline: Annotated[bool, typer.Option(
        "--update-baseline", help="Rewrite the baseline's entries of the selected agents and suites from this "
                                  "run instead of comparing; other entries are kept.")] = False,
    agents: Annotated[str, typer.Option(help="Agent names, comma-separated, or 'all'.")] = "all",
    suite: Annotated[str, typer.Option(help="Suite name or 'all'.")] = "all",
    tasks: Annotated[Optional[str], typer.Option(help="Only these tasks of the suite, comma-separated.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel runs (default: the core count).")] = None,
    work: Annotated[Optional[Path], typer.Option(
        help="Folder for the smoke records (default: a temporary folder, removed afterwards).")] = None,
) -> None:
    """The regression gate: smoke runs compared with a baseline.

    Runs the smoke profile for every selected agent and task and compares each metric, averaged over
    seeds, with the committed baseline; a regression is named and the exit status is 1.
    """
    import tempfile

    from .gate import BadBaseline, compare, load_baseline, summarise, write_baseline
    from .records import InvalidRecord, load_record
    from .profiles import PROFILES
    from .runner import code_version, plan

    agent_names, suites, task_names = _selection(agents, suite, tasks)
    if workers is not None and workers < 1:
        _fail("--workers must be at least 1", 2)
    base = None
    # The baseline is read and validated before any run: a malformed one is refused in one line (exit 2).
    # --update-baseline keeps the entries it does not rewrite, so it refuses a malformed one too.
    if not update_baseline or baseline.exists():
        try:
            base = load_baseline(baseline)
        except BadBaseline as e:
            _fail(str(e) + ("; fix or delete it, then rerun with --update-baseline" if update_baseline else ""), 2)
    prof = PROFILES.get("smoke")
    runs, _notes = plan(agent_names, suites, prof, None, task_names)
    with tempfile.TemporaryDirectory(prefix="metabench-check-") as tmp:
        folder = work if work is not None else Path(tmp)
        _check_writable(folder)
        typer.echo(f"check: {len(runs)} smoke runs -> {folder}")
        # One torch thread per run whatever the core count: float reductions differ with the thread count,
        # and a MuJoCo rollout amplifies the difference, so the scores would depend on the machine's cores.
        out = _sweep(runs, folder, workers, threads=1, resumable=work is not None)
        records = []
        for spec in runs:
            if spec.path(folder).exists():
                try:  # what `metabench validate` rejects is skipped, one line each
                    records.append(load_record(spec.path(folder)))
                except InvalidRecord as e:
                    typer.echo(f"skipped: {e}")
    failed = [r for r in records if r["status"] != "ok"]
    for r in failed:
        typer.echo(f"failed: {r['task']}/{r['agent']} seed {r['seed']}: {r['error']}")
    current = summarise(records)
    if update_baseline:
        if failed or out.crashed:
            _fail("not writing a baseline from a run with failures", 1)
        kept = {}
        if base is not None:  # a selection updates its own pairs and keeps the others
            selected = {f"{r.task}/{r.agent}" for r in runs}
            kept = {k: v for k, v in base["scores"].items() if k not in selected}
        scores = {**kept, **current}
        write_baseline(baseline, scores, prof.name, code_version())
        typer.echo(f"wrote baseline {baseline} ({sum(len(m) for m in scores.values())} metrics, "
                   f"{len(scores)} agent/task pairs; {len(current)} measured now, {len(kept)} kept)")
        return
    assert base is not None
    selected = {f"{r.task}/{r.agent}" for r in runs}
    base = {**base, "scores": {k: v for k, v in base["scores"].items() if k in selected}}
    findings, notes = compare(current, base)
    for n in notes:
        typer.echo(f"note: {n}")
    for f in findings:
        typer.echo(f"{f.kind}: {f.message}")
    regressions = [f for f in findings if f.kind == "regression"]
    unbaselined = [f for f in findings if f.kind != "regression"]
    checked = sum(len(m) for m in base["scores"].values())
    if findings or failed or out.crashed:
        typer.echo(f"check failed: {len(regressions)} regressions, "
                   + (f"{len(unbaselined)} measured but not in the baseline, " if unbaselined else "")
                   + f"{len(failed)} failed runs ({checked} metrics checked against {baseline})")
        raise typer.Exit(1)
    typer.echo(f"check passed: {checked} metrics of {len(base['scores'])} agent/task pairs within tolerance "
               f"of {baseline}")


def _selection(agents: str, suite: str, tasks: str | None):
    """Agent names, suites and task names (None: every task of the suites) of ``run``/``check``; exits on a bad name."""
    from metabench.agents import AGENTS
    from metabench.envs import FAMILIES

    from .suites import select_suites

    try:
        agent_names = AGENTS.select(agents)
        suites = select_suites(suite)
        if tasks is not None and not tasks.strip():
            _fail("--tasks is empty; name tasks, or leave the option out for every task of the suite", 2)
        task_names = FAMILIES.select(tasks) if tasks else None
    except UnknownName as e:
        _fail(str(e), 2)
    if task_names is not None:
        in_suites = {t for s in suites for t in s.tasks}
        missing = [t for t in task_names if t not in in_suites]
        if missing:
            _fail(f"task {missing[0]!r} is not in suite {suite!r}; valid: {', '.join(sorted(in_suites))}", 2)
    return agent_names, suites, task_names


def _check_writable(results: Path) -> None:
    """Exit 2 with one line, before any run trains, if records cannot be written under ``results``."""
    import tempfile

    if results.exists() and not results.is_dir():
        _fail(f"--results {results} is a file, not a folder", 2)
    try:
        results.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=results, prefix=".metabench-write-test-"):
            pass
    except OSError as e:
        _fail(f"cannot write records under {results}: {e.strerror or e}", 2)


def _plan_line(runs, results: Path, workers: int | None, header: str, checkpointing: Any = None) -> list:
    """Print "N runs <header>: K already done, M to do, about <time> ..."; return the runs to do."""
    from .runner import pending

    todo_runs = pending(runs, results)
    todo = len(todo_runs)
    cores = os.cpu_count() or 1
    typer.echo(f"{len(runs)} runs {header}".rstrip() + f": {len(runs) - todo} already done, {todo} to do"
               + _estimate(todo_runs, results, min(workers or cores, max(todo, 1)), checkpointing))
    return todo_runs


def _print_plan(runs, results: Path, workers: int | None, header: str, checkpointing: Any = None) -> None:
    """``run --dry-run``: the plan line, then the runs to do, one line per (suite, task, agent) with its seeds."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for spec in _plan_line(runs, results, workers, header, checkpointing):
        groups.setdefault((spec.suite, spec.task, spec.agent), []).append(spec.seed)
    for (suite_name, task, agent), seeds in groups.items():
        typer.echo(f"  to do: {suite_name}/{task}/{agent} seeds {', '.join(map(str, seeds))}")


def _sweep(runs, results: Path, workers: int | None, threads: int | None = None, header: str = "",
           resumable: bool = True, checkpointing: Any = None, executor: str = "local", address: str | None = None):
    """run_sweep with a header (planned, already done, to do), one line per started and finished run, and
    live bars when stdout is a terminal."""
    from metabench.envs import make_family

    from .progress import SweepProgress
    from .ray_executor import RayUnavailable
    from .runner import Checkpointing, SweepInterrupted, run_sweep

    checkpointing = checkpointing or Checkpointing()
    todo = len(_plan_line(runs, results, workers, header, checkpointing))
    cores = os.cpu_count() or 1
    if workers is not None and workers > cores:
        typer.echo(f"note: --workers {workers} is more than the {cores} cores of this machine")
    with SweepProgress(todo, enabled=sys.stdout.isatty()) as progress:
        def on_start(spec: Any) -> None:
            if not progress.enabled:
                resuming = checkpointing.enabled and checkpointing.path(spec, results).exists()
                typer.echo(f"started  {spec.label}" + ("  (from its checkpoint)" if resuming else ""))

        def on_done(i: int, n: int, spec: Any, record: dict[str, Any]) -> None:
            metric = make_family(spec.task).primary_metric
            score = record["metrics"].get(metric)
            detail = f"{metric}={score:.3f}" if score is not None else record["error"]
            line = f"[{i}/{n}] {record['status']:<6} {spec.label}  {detail}  ({record['wall_time_s']:.1f} s)"
            if progress.enabled:
                progress.run_done(spec.label, line)
            else:
                typer.echo(line)

        try:
            def on_note(line: str) -> None:
                if progress.enabled:
                    progress.note(f"note: {line}")
                else:
                    typer.echo(f"note: {line}")

            return run_sweep(runs, results, workers or (cores if executor == "local" else None), on_done=on_done,
                             on_start=on_start, on_note=on_note, progress_queue=progress.queue, threads=threads,
                             checkpointing=checkpointing, executor_name=executor, address=address)
        except SweepInterrupted as stop:
            interrupted = stop
        except BrokenPipeError:  # stdout closed (`metabench run | head`): not a records problem
            raise
        except RayUnavailable as e:
            _fail(str(e), 2)
        except OSError as e:  # a record could not be written (disk full, a folder in its place)
            _fail(f"cannot write records under {results}: {e}; the sweep stopped", 1)
    what = (f"{len(interrupted.result.done)} runs finished"
            + (f", {len(interrupted.stopped)} stopped in flight (no record)" if interrupted.stopped else "")
            + (f", {len(interrupted.not_started)} not started" if interrupted.not_started else ""))
    hint = (f"rerun the same command to resume ({' '.join(_resume_command())})" if resumable
            else "its records were in a temporary folder and are gone; pass --work DIR to keep them")
    typer.echo(f"interrupted by {interrupted.signal_name}: {what}; {hint}", err=True)
    raise typer.Exit(130)


def _estimate(todo: list[Any], results: Path, workers: int, checkpointing: Any = None) -> str:
    """``, about 2 h 10 min on 2 workers (...)`` for the header of a sweep, from earlier records' wall times
    and the share of their budgets that unfinished runs' checkpoints hold."""
    from .runner import estimate_seconds

    if not todo:
        return ""
    seconds, unknown, borrowed, resuming = estimate_seconds(todo, results, checkpointing)
    if unknown == len(todo):
        return " (no earlier records to estimate the time from)"
    minutes = round(seconds / workers / 60)
    took = f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"
    notes = ([f"{resuming} resuming from {'their checkpoints' if resuming != 1 else 'its checkpoint'}"]
             if resuming else []) + (
        [f"{borrowed} run{'s' if borrowed != 1 else ''} timed by another variant of the same agent"]
        if borrowed else []) + ([f"{unknown} with none to go by not counted"] if unknown else [])
    return (f", about {took} on {workers} worker{'s' if workers > 1 else ''} from earlier records' wall times"
            + (f" ({'; '.join(notes)})" if notes else ""))


def _resume_command() -> list[str]:
    """The command line this process was started with, as a user would type it again."""
    import shlex

    return ["metabench", *(shlex.quote(a) for a in sys.argv[1:])]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    main()
