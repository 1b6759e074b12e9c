"""Rescore saved agents: reload each run's trained agent and evaluate it again on its record's held-out tasks.

    python -m metabench.rescore results/quick/efficiency/ant_dir/*/seed*.json
    python -m metabench.rescore RECORD... --metrics velocity_along,speed --tasks 64

For each record (an ``ok`` run whose ``seed<N>.pt`` is beside it, see :func:`metabench.runner.load_agent`)
it runs the shared evaluation on the record's own held-out test tasks (its seed; by default as many as the
record was scored on, so the task's main metric must come out as recorded: the table says whether it does),
and prints the main metric as recorded and as rescored, and every other metric asked for. Its use: metrics
an environment reports beside the declared ones, added after a record was written (the MuJoCo tasks'
``velocity_along`` and ``speed``), read off the committed runs without retraining. Nothing is written.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch


def rescore(record: Path, tasks: int | None = None) -> tuple[dict, dict[str, float]]:
    """(the record, the metrics of a fresh evaluation of its saved agent on its held-out test tasks)."""
    from metabench.envs import make_family
    from metabench.profiles import PROFILES
    from metabench.protocol import evaluate
    from metabench.records import load_record
    from metabench.runner import load_agent

    rec = load_record(record)
    agent = load_agent(record)
    family = make_family(rec["task"], rec["profile"])
    n = tasks or PROFILES.get(rec["profile"]).test_tasks_for(rec["task"])
    return rec, evaluate(agent, family, rec["seed"], n).metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metabench.rescore", description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", type=Path, help="seed<N>.json records with their saved agents")
    parser.add_argument("--metrics", default="", help="other metrics to print, comma-separated")
    parser.add_argument("--tasks", type=int, help="held-out tasks (default: as many as the record was scored on)")
    args = parser.parse_args(argv)
    from metabench.envs import make_family

    torch.set_num_threads(1)
    extra = [m for m in args.metrics.split(",") if m]
    print("| record | main metric | recorded | rescored | " + " | ".join(extra) + " |")
    print("|---|---|---|---|" + "---|" * len(extra))
    failed = 0
    for path in args.records:
        try:
            rec, metrics = rescore(path, args.tasks)
        except (ValueError, OSError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(msg if str(path) in msg else f"{path}: {msg}", file=sys.stderr)
            failed += 1
            continue
        main_metric = make_family(rec["task"]).primary_metric
        recorded, now = rec["metrics"].get(main_metric, math.nan), metrics.get(main_metric, math.nan)
        cells = " | ".join(f"{metrics[m]:.3f}" if m in metrics else "—" for m in extra)
        print(f"| `{rec['task']}/{rec['agent']}/seed{rec['seed']}` | {main_metric} | {recorded:.2f} | {now:.2f} | "
              f"{cells} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
