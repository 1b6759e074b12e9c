"""Training throughput of the learning agents: env + forward + BPTT + update, in env-steps/s.

    python -m metabench.throughput                 # the full table (each case in its own process)
    python -m metabench.throughput --quick         # fewer updates per case
    python -m metabench.throughput --simulation    # MuJoCo tasks: our batched env against raw mj_step
    python -m metabench.throughput --step          # the MetODS core alone: eager, compiled and fused kernels
    python -m metabench.throughput --metaworld     # Meta-World: simulation alone, and training on reach
    python -m metabench.throughput --compare       # training defaults, memory cores before (autograd) and after
    python -m metabench.throughput --device cpu,cuda --only metods-maze-ppo   # one case per device, side by side

Cases: MetODS and RL² on Harlow (their Harlow configs) and on the maze
(observation 9 + action 4 + reward 1, N = 64, S = 4, B = 256, 100-step
episodes), eager and compiled, A2C (one full-trial update per batch) and the
Harlow PPO setting; MAML on Harlow and the maze with its training defaults
(eager: it has no compile option); and the maze environment alone
(generation and stepping); MetODS, RL² and MAML on Ant-dir with their
training defaults. ``--simulation`` measures the MuJoCo direction tasks
alone: raw ``mujoco.mj_step`` (``frame_skip`` substeps per env step) on the
robot's own model and data against :class:`~metabench.envs.locomotion.LocomotionEnv`
and gymnasium's ``SyncVectorEnv`` / ``AsyncVectorEnv`` over the same
environments, with random actions, one thread; and the physics of 16
environments stepped one env step at a time by a Python loop of ``mj_step``
against ``mujoco.rollout`` (:func:`rollout_stepping`). ``--step`` times the MetODS
core alone (N = 64, S = 4, symbolic form), forward and backward over a
T = 100 trial at B = 16 and 80, one thread: the autograd path stepped eagerly
and through ``torch.compile`` (what ``compile=True`` does) against the fused
kernel (:mod:`metabench.agents.metods_fused`); then the memory the fused
backward needs against T (peak RSS of a fresh process, and the bytes the
trial saves for its backward, against the autograd path's). Each case runs in a fresh process so that
its peak resident memory (``ru_maxrss``) is its own; the first updates
(compilation, warm-up) are not timed. Not a test: the numbers are quoted,
not asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time

import torch



CASES = {
    # name: (agent, family, config overrides)
    "metods-harlow-ppo": ("metods", "harlow", {}),
    "rl2-harlow-ppo": ("rl2", "harlow", {}),
    "metods-maze-a2c": ("metods", "maze", {"N": 64, "S": 4, "batch_tasks": 256, "ppo_epochs": 1, "minibatches": 1}),
    "rl2-maze-a2c": ("rl2", "maze", {"batch_tasks": 256, "ppo_epochs": 1, "minibatches": 1}),
    "metods-maze-ppo": ("metods", "maze", {}),  # the maze training default (PPO 4 x 4 minibatches)
    "rl2-maze-ppo": ("rl2", "maze", {}),
    "metods_mlp-maze-ppo": ("metods_mlp", "maze", {}),  # the MLP-write ablation (fused since the MLP write)
    "maml-harlow-ppo": ("maml", "harlow", {}),  # MAML's training defaults (eager only: no compile option)
    "maml-maze-ppo": ("maml", "maze", {}),
    # Meta-World (training defaults: 8 trials of 10 x 500 steps an update); --metaworld only
    "metods-mw_ml1_reach-ppo": ("metods", "mw_ml1_reach", {}),
    "rl2-mw_ml1_reach-ppo": ("rl2", "mw_ml1_reach", {}),
    "maml-mw_ml1_reach-ppo": ("maml", "mw_ml1_reach", {}),
    "metods-ant_dir-ppo": ("metods", "ant_dir", {}),  # the MuJoCo training defaults (PPO 4 x 4, 128 trials; MAML 32)
    "rl2-ant_dir-ppo": ("rl2", "ant_dir", {}),
    "maml-ant_dir-ppo": ("maml", "ant_dir", {}),
}


METAWORLD_CASES = tuple(c for c in CASES if "-mw_" in c)
"""The training cases of ``--metaworld`` (left out of the full table: an update there is tens of seconds)."""


def metaworld_simulation(task: str, batch: int = 8, seconds: float = 10.0, shipped: bool = False) -> float:
    """Env-steps/s of a Meta-World family's batched environment alone, random actions, one thread (the
    simulation a run cannot go faster than). ``shipped``: metaworld as it ships, without the fast paths of
    ``envs.metaworld._install_fast_paths`` (their before)."""
    from metabench.envs import make_family
    from metabench.envs.base import task_generator
    from metabench.envs.metaworld import as_shipped

    if shipped:
        with as_shipped():
            return metaworld_simulation(task, batch, seconds)

    torch.set_num_threads(1)
    family = make_family(task)
    env = family.make_env(family.sample_tasks(batch, "train", task_generator(0, "train")))
    gen = torch.Generator().manual_seed(0)
    env.reset()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if bool(env.done.all()):
            env.reset()
        n += int(env.step(torch.rand(batch, family.action_space.n, generator=gen) * 2 - 1).active.sum())
    return n / (time.perf_counter() - t0)


def locomotion_simulation(robot: str, seconds: float = 3.0) -> dict:
    """Env-steps/s of one robot: raw mj_step, our batched env (B = 1, 16, 64), gymnasium's vector envs (B = 16)."""
    import gymnasium as gym
    import mujoco
    import numpy as np

    from metabench.envs.locomotion import ROBOTS, Locomotion, LocomotionConfig

    torch.set_num_threads(1)
    env_id, kwargs = ROBOTS[robot]
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}

    def timed(step_fn) -> float:
        """Steps per second of ``step_fn()`` (returns how many env steps it made) over ``seconds``."""
        step_fn()  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += step_fn()
        return n / (time.perf_counter() - t0)

    # Raw MuJoCo: the model and data gymnasium builds, frame_skip substeps per env step, no Python env around it.
    raw = gym.make(env_id, **kwargs).unwrapped
    raw.reset(seed=0)
    model, data, skip = raw.model, raw.data, raw.frame_skip
    ctrl = rng.uniform(-0.3, 0.3, size=(1000, model.nu))

    def raw_steps() -> int:
        for c in ctrl[:100]:
            data.ctrl[:] = c
            mujoco.mj_step(model, data, nstep=skip)
        return 100

    out["raw_mj_step"] = timed(raw_steps)
    out.update(rollout_stepping(model, skip, timed))

    family = Locomotion(LocomotionConfig(robot=robot, directions="fwd-back"))
    gen = torch.Generator().manual_seed(0)
    for b in (1, 16, 64):
        env = family.make_env(family.sample_tasks(b, "train", torch.Generator().manual_seed(b)))
        env.reset()
        actions = (torch.rand(64, b, model.nu, generator=gen) - 0.5) * 0.6  # small: the Ant stays up

        def ours() -> int:
            n = 0
            for a in actions:
                if bool(env.done.all()):
                    env.reset()
                n += int(env.step(a).active.sum())
            return n

        out[f"ours_B{b}"] = timed(ours)

    def vector(kind: str, b: int) -> float:
        make = (lambda: gym.make(env_id, **kwargs))
        vec = (gym.vector.SyncVectorEnv if kind == "sync" else gym.vector.AsyncVectorEnv)([make] * b)
        vec.reset(seed=0)
        acts = rng.uniform(-0.3, 0.3, size=(64, b, model.nu))

        def steps() -> int:
            for a in acts:
                vec.step(a)
            return 64 * b

        try:
            return timed(steps)
        finally:
            vec.close()

    out["gym_sync_B16"] = vector("sync", 16)
    out["gym_async_B16"] = vector("async", 16)
    out["gym_async_B2"] = vector("async", 2)
    return out


def rollout_stepping(model, skip: int, timed, batch: int = 16) -> dict:
    """Physics alone for ``batch`` environments, one env step (``skip`` substeps) at a time, as an RL loop must
    step them (the policy acts between env steps): a Python loop of ``mj_step`` over the environments' data
    against ``mujoco.rollout`` called once per env step with ``nstep = skip`` (its C loop over environments on
    1 and 2 threads, the GIL released), states carried from call to call."""
    import mujoco
    import numpy as np
    from mujoco import rollout

    rng = np.random.default_rng(1)
    datas = [mujoco.MjData(model) for _ in range(batch)]
    for d in datas:
        mujoco.mj_forward(model, d)
    ctrl = rng.uniform(-0.3, 0.3, size=(64, batch, model.nu))
    out = {}

    def loop() -> int:
        for c in ctrl:
            for d, a in zip(datas, c):
                d.ctrl[:] = a
                mujoco.mj_step(model, d, nstep=skip)
        return len(ctrl) * batch

    out[f"loop_B{batch}"] = timed(loop)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    nstate = mujoco.mj_stateSize(model, spec)
    for threads in (1, 2):
        state = np.zeros((batch, nstate))
        for i, d in enumerate(datas):
            mujoco.mj_getState(model, d, state[i], spec)
        buf = np.zeros((batch, skip, nstate))
        sens = np.zeros((batch, skip, model.nsensordata))
        pool = [mujoco.MjData(model) for _ in range(threads)]
        models = [model] * batch  # skip_checks: one model per rollout, as rollout's checks would expand it

        def rolled() -> int:
            nonlocal state
            for c in ctrl:
                control = np.repeat(c[:, None, :], skip, axis=1)
                rollout.rollout(models, pool, state, control, nstep=skip, state=buf, sensordata=sens,
                                skip_checks=True, persistent_pool=threads > 1)
                state = buf[:, -1].copy()
            return len(ctrl) * batch

        out[f"rollout_B{batch}_t{threads}"] = timed(rolled)
    rollout.shutdown_persistent_pool()
    return out


def maze_environment(batch: int = 256, mazes: int = 4096) -> dict:
    """Maze generation (mazes/s) and stepping with random actions (env-steps/s), no agent."""
    from metabench.envs import make_family
    from metabench.envs.base import task_generator

    torch.set_num_threads(os.cpu_count() or 1)
    family = make_family("maze")
    gen = task_generator(0, "train")
    family.sample_tasks(64, "train", gen)  # warm-up
    t0 = time.perf_counter()
    family.sample_tasks(mazes, "train", gen)
    gen_s = time.perf_counter() - t0
    env = family.make_env(family.sample_tasks(batch, "train", gen))
    actions = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(4):
        env.reset()
        for _ in range(family.max_episode_steps):
            env.step(torch.randint(0, 4, (batch,), generator=actions))
    step_s = time.perf_counter() - t0
    return {"mazes_per_s": mazes / gen_s, "env_steps_per_s": 4 * batch * family.max_episode_steps / step_s}


def core_step_speed(batch: int, steps: int = 100, n: int = 64, s: int = 4, reps: int = 7) -> dict:
    """Seconds (median of ``reps``) of the MetODS core's forward + backward over one trial, per kernel, one thread.

    The loss is <h, g> for a fixed random g (the heads are not timed); inputs are random step features of the
    maze's width, every environment active. All three kernels run in this process, one after the other, so
    their numbers are comparable."""
    from metabench.agents.base import feature_dim
    from metabench.agents.metods import MetODSConfig, MetODSCore
    from metabench.envs import make_family

    torch.set_num_threads(1)
    in_dim = feature_dim(make_family("maze"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, in_dim, generator=gen)
    active = torch.ones(steps, batch, dtype=torch.bool)
    grad_h = torch.randn(steps, batch, n, generator=gen)
    out = {}
    for mode in ("eager", "compiled", "fused"):
        torch.manual_seed(0)
        core = MetODSCore(in_dim, MetODSConfig(N=n, S=s, kernel="fused" if mode == "fused" else "autograd"))
        step = torch.compile(core.step, dynamic=False) if mode == "compiled" else core.step

        def run() -> None:
            h, _ = core.trial(x, active, core.initial_state(batch), step=step)
            h.backward(grad_h)

        for _ in range(2):  # warm-up (compilation)
            run()
        times = []
        for _ in range(reps):
            core.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        out[mode] = sorted(times)[len(times) // 2]
    return out


def saved_bytes(core, x: torch.Tensor, active: torch.Tensor) -> int:
    """Bytes of the distinct storages the core's trial forward saves for its backward (held until the count is
    done: a freed storage's address could be reused and merged with another's)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        core.trial(x, active, core.initial_state(x.shape[1]))
    return sum(seen.values())


def _rss_kb(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of this process from /proc, in KB (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def core_step_memory(steps: int, kernel: str, batch: int = 16, n: int = 64, s: int = 4) -> dict:
    """In this (fresh) process: the saved bytes of one trial of ``steps`` steps, and for the fused kernel the
    peak resident memory of a forward + backward of it above the resident memory before it: measured on a second
    run (the first large backward of a process maps memory once, for good), the peak reset first through
    /proc/self/clear_refs so that earlier peaks do not hide it. Run with a fixed ``MALLOC_MMAP_THRESHOLD_`` (as
    :func:`step_table` does) so that large buffers are mapped and unmapped, not kept by malloc between runs."""
    from metabench.agents.base import feature_dim
    from metabench.agents.metods import MetODSConfig, MetODSCore
    from metabench.envs import make_family

    torch.set_num_threads(1)
    in_dim = feature_dim(make_family("maze"))
    core = MetODSCore(in_dim, MetODSConfig(N=n, S=s, kernel=kernel))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, in_dim, generator=gen)
    active = torch.ones(steps, batch, dtype=torch.bool)
    out = {"steps": steps, "kernel": kernel, "saved_bytes": saved_bytes(core, x, active)}
    if kernel == "fused":
        h, _ = core.trial(x, active, core.initial_state(batch))  # warm-up
        h.backward(torch.ones_like(h))
        del h
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current resident size
        before = _rss_kb("VmRSS")
        h, _ = core.trial(x, active, core.initial_state(batch))
        h.backward(torch.ones_like(h))
        out["peak_rss_growth_mib"] = (_rss_kb("VmHWM") - before) / 1024
        out["inputs_mib"] = 3 * steps * batch * n * 4 / 2**20  # v0, h and the gradient of h: [T, B, N] each
    return out


def step_table() -> None:
    """Print the ``--step`` tables: speed of the three kernels, then memory against T."""
    print("MetODS core alone, forward + backward over a T = 100 trial, N = 64, S = 4, one thread "
          "(median of 7; all kernels in one process):\n")
    print("| B | kernel | env-steps/s | µs per step (all B envs) | µs per env-step | vs compiled |")
    print("|---|---|---|---|---|---|")
    for b in (16, 80):
        r = core_step_speed(b)
        for mode in ("eager", "compiled", "fused"):
            sec = r[mode]
            print(f"| {b} | {mode} | {100 * b / sec:,.0f} | {sec / 100 * 1e6:,.0f} | {sec / (100 * b) * 1e6:.1f} | "
                  f"{r['compiled'] / sec:.2f}x |", flush=True)
    print("\nMemory against trial length (B = 16; each in a fresh process; saved: the distinct tensors the trial "
          "keeps for its backward, encoder included; the fused kernel keeps W every ⌈√T⌉ steps):\n")
    print("| T | fused saved (MiB) | autograd saved (MiB) | fused peak RSS growth, forward + backward (MiB) | "
          "[T, B, N] inputs and outputs (MiB) |")
    print("|---|---|---|---|---|")

    def cell(r: dict | None, k: str) -> str:
        return "failed" if r is None else f"{r[k] / (2**20 if k == 'saved_bytes' else 1):,.1f}"

    for steps in (100, 1000, 5000):
        rows = {}
        for kernel in ("fused", "autograd"):
            cmd = [sys.executable, "-m", "metabench.throughput", "--step-memory", str(steps), "--kernel", kernel]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                rows[kernel] = None
                continue
            rows[kernel] = json.loads(out.stdout.strip().splitlines()[-1])
        f, a = rows["fused"], rows["autograd"]
        print(f"| {steps} | {cell(f, 'saved_bytes')} | {cell(a, 'saved_bytes')} | {cell(f, 'peak_rss_growth_mib')} | "
              f"{cell(f, 'inputs_mib')} |", flush=True)


def measure(case: str, compiled: bool | None, updates: int, warmup: int, kernel: str | None = None,
            threads: int | None = None, window_s: float = 0.0, sync: bool = False, device: str = "cpu") -> dict:
    """One case's training throughput: ``warmup`` updates untimed, then at least ``updates`` timed updates and
    until ``window_s`` seconds have passed.

    ``sync``: after the warmup, print ``ready`` and wait for a line on stdin before timing, so that processes
    measured side by side (:func:`_run_parallel`) time the same stretch of wall-clock time; with the window
    longer than any one update, each process's timed updates overlap the others' for (nearly) all of it.
    Without that, short timed stretches of processes that start at once fall partly in the others' start-up
    (imports, extension loading, warm-up), and their sum overstates what runs side by side achieve.

    ``device``: where the agent computes, as ``metabench run --device`` puts it (the task family stays on the
    CPU); on a GPU each update ends with a synchronisation, so that its time is spent inside it."""
    from metabench.agents import AGENTS
    from metabench.envs import make_family
    from metabench.envs.base import task_generator
    from metabench.profiles import PROFILES
    from metabench.runner import check_device, device_name

    torch.set_num_threads(threads or os.cpu_count() or 1)
    where = check_device(device)
    agent_name, family_name, overrides = CASES[case]
    family = make_family(family_name)
    entry = AGENTS.get(agent_name)
    cfg = entry.config(family, PROFILES.get("quick"))
    if compiled is not None and hasattr(cfg, "compile"):  # None: the training default's own setting
        overrides = {**overrides, "compile": compiled}
    if kernel is not None and hasattr(cfg, "kernel"):
        overrides = {**overrides, "kernel": kernel}
    cfg = dataclasses.replace(cfg, **overrides)
    agent = entry.build(family, cfg, seed=0).to(where)
    gen = task_generator(0, "train")

    def finish() -> None:  # GPU work is asynchronous: an update is timed once its kernels are done
        if where.type == "cuda":
            torch.cuda.synchronize(where)

    for _ in range(warmup):
        agent.update(agent.collect(family, gen))
    finish()
    if sync:
        print("ready", flush=True)
        sys.stdin.readline()
    steps = timed = 0
    t_collect = t_update = 0.0
    start = time.perf_counter()
    while timed < updates or time.perf_counter() - start < window_s:
        t0 = time.perf_counter()
        ro = agent.collect(family, gen)
        t1 = time.perf_counter()
        agent.update(ro)
        finish()
        t2 = time.perf_counter()
        steps += int(ro.active.sum())
        timed += 1
        t_collect += t1 - t0
        t_update += t2 - t1
    total = t_collect + t_update
    return {
        "case": case, "compiled": bool(getattr(cfg, "compile", False)), "env_steps_per_s": steps / total,
        "collect_share": t_collect / total, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "batch_tasks": cfg.batch_tasks, "ppo_epochs": cfg.ppo_epochs, "updates": timed,
        "threads": torch.get_num_threads(), "device": device_name(agent.device),
        "memory_kernel": agent.run_info().get("memory_kernel", "-"),
    }


COMPARE_CASES = ("metods-maze-ppo", "metods-harlow-ppo", "metods-ant_dir-ppo", "metods_mlp-maze-ppo", "rl2-maze-ppo",
                 "rl2-harlow-ppo", "maml-maze-ppo")
"""The training defaults of ``--compare``: the maze, Harlow and Ant-dir as a sweep trains them."""


def _config_fields(case: str) -> set[str]:
    """The config fields of the case's agent (whether it has ``compile``, ``kernel``)."""
    from metabench.agents import AGENTS

    return {f.name for f in dataclasses.fields(AGENTS.get(CASES[case][0]).cls.Config)}


def _case_command(case: str, quick: bool, kernel: str | None, threads: int, compiled: bool | None,
                  sync: bool = False, device: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "metabench.throughput", "--case", case, "--threads", str(threads)]
    cmd += ["--device", device] if device else []
    cmd += ["--sync"] if sync else []
    cmd += {True: ["--compiled"], False: ["--eager"], None: []}[compiled]
    cmd += ["--quick"] if quick else []
    return cmd + (["--kernel", kernel] if kernel else [])


def _run_parallel(cmds: list[list[str]]) -> list[dict] | str:
    """Start every command at once (one fresh process each) and wait; their JSON results, or why one failed.

    Commands with ``--sync`` report ``ready`` after their warm-up and are released together, once all are ready
    (see :func:`measure`)."""
    procs = [subprocess.Popen(c, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    for p, c in zip(procs, cmds):
        if "--sync" in c and p.stdout.readline().strip() != "ready":
            break  # it failed before its warm-up ended: communicate() below collects why
    for p in procs:
        try:
            p.stdin.write("go\n")
            p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
    outs = [(p, *p.communicate()) for p in procs]
    for p, _, err in outs:
        if p.returncode != 0:
            return "failed: " + (err.strip().splitlines() or ["?"])[-1]
    return [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outs]


def compare_table(quick: bool, cases: tuple[str, ...] = COMPARE_CASES, kernels: tuple[str, ...] = ("autograd", "auto")
                  ) -> None:
    """Before and after, same run: each training default with the memory core on its former training path
    (``kernel="autograd"``; MetODS compiled) and on today's default (``kernel="auto"``: fused where covered), laid
    out as a sweep runs: one process on all cores, and one single-thread process per core at once (what
    ``--workers N --threads 1`` does; their env-steps/s summed)."""
    cores = os.cpu_count() or 1
    print(f"| case | kernel | memory kernel | 1 process x {cores} threads | {cores} processes x 1 thread (sum) | "
          f"peak RSS per process (GB) |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        for kernel in kernels if "kernel" in _config_fields(case) else (None,):
            one = _run_parallel([_case_command(case, quick, kernel, cores, None)])
            many = _run_parallel([_case_command(case, quick, kernel, 1, None, sync=True)] * cores)
            if isinstance(one, str) or isinstance(many, str):
                print(f"| {case} | {kernel or '-'} | | {one if isinstance(one, str) else ''} | "
                      f"{many if isinstance(many, str) else ''} | |", flush=True)
                continue
            rss = max(r["peak_rss_gb"] for r in one + many)
            print(f"| {case} | {kernel or '-'} | {one[0]['memory_kernel']} | {one[0]['env_steps_per_s']:,.0f} | "
                  f"{sum(r['env_steps_per_s'] for r in many):,.0f} | {rss:.2f} |", flush=True)


DEVICE_CASES = ("metods-maze-ppo", "rl2-maze-ppo", "metods-harlow-ppo")
"""The cases of ``--device`` without ``--only``: the torch task families, whose agents a GPU can take."""


def device_table(quick: bool, cases: tuple[str, ...], devices: tuple[str, ...]) -> None:
    """Each case's training default on each device, one fresh process on all cores each, in one run of the
    script (issue 31's CPU-against-GPU comparison: ``--device cpu,cuda``)."""
    cores = os.cpu_count() or 1
    print(f"| case | device | memory kernel | env-steps/s | collect share | peak RSS (GB) |\n|---|---|---|---|---|---|")
    for case in cases:
        for device in devices:
            r = _run_parallel([_case_command(case, quick, None, cores, None, device=device)])
            cells = r if isinstance(r, str) else (f"{r[0]['memory_kernel']} | {r[0]['env_steps_per_s']:,.0f} | "
                                                  f"{r[0]['collect_share']:.0%} | {r[0]['peak_rss_gb']:.2f}")
            print(f"| {case} | {device} | {cells} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer timed updates per case")
    parser.add_argument("--case", help="run one case in this process and print its JSON (internal)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--compiled", dest="compiled", action="store_const", const=True,
                      help="--case: compile the core's step (default for the full table: eager and compiled rows)")
    mode.add_argument("--eager", dest="compiled", action="store_const", const=False, help="--case: do not compile")
    parser.add_argument("--compare", action="store_true",
                        help="before and after: the training defaults with the memory core's former path "
                             "(autograd) and today's default (fused), 1 process x all threads and 1 thread per "
                             "core in parallel")
    parser.add_argument("--only", help="--compare, --device: these cases only, comma-separated (default: "
                                       f"--compare: {', '.join(COMPARE_CASES)}; --device: {', '.join(DEVICE_CASES)})")
    parser.add_argument("--device", help="--case: where the agent computes (cpu, cuda, cuda:N); otherwise a "
                                         "comma-separated list: the cases on each device, side by side")
    parser.add_argument("--after-only", action="store_true",
                        help="--compare: only today's default kernel (auto), not the autograd rows")
    parser.add_argument("--simulation", action="store_true", help="only the MuJoCo simulation-speed table")
    parser.add_argument("--metaworld", action="store_true",
                        help="only Meta-World: simulation alone per task, training of MetODS, RL² and MAML on reach")
    parser.add_argument("--step", action="store_true", help="only the MetODS core's kernels (speed, memory)")
    parser.add_argument("--step-memory", type=int, help="one memory measurement of --step (internal)")
    parser.add_argument("--kernel", choices=("auto", "fused", "autograd"),
                        help="memory kernel of --case (default: the config's) and MetODS's of --step-memory "
                             "(default: fused)")
    parser.add_argument("--threads", type=int, help="intra-op threads of --case (default: all cores)")
    parser.add_argument("--sync", action="store_true",
                        help="--case: after the warm-up, print 'ready' and wait for a line on stdin (internal: "
                             "processes measured side by side time the same stretch)")
    args = parser.parse_args()
    if args.step_memory:
        print(json.dumps(core_step_memory(args.step_memory, args.kernel or "fused")))
        return
    if args.step:
        step_table()
        return
    if args.metaworld:
        from metabench.envs import make_family

        print("| task | simulation alone, B=8, random actions (env-steps/s) | metaworld as shipped (without "
              "the fast paths) |\n|---|---|---|")
        for task in ("mw_ml1_reach", "mw_ml1_push", "mw_ml10"):
            make_family(task)  # builds the benchmark outside the timed stretch
            print(f"| {task} | {metaworld_simulation(task):,.0f} | "
                  f"{metaworld_simulation(task, shipped=True):,.0f} |", flush=True)
        print("\n| case (one thread, training defaults) | env-steps/s | collect share | peak RSS (GB) |\n|---|---|---|---|")
        for case in METAWORLD_CASES:
            r = _run_parallel([_case_command(case, True, None, 1, None)])
            cells = r if isinstance(r, str) else (f"{r[0]['env_steps_per_s']:,.0f} | {r[0]['collect_share']:.0%} | "
                                                  f"{r[0]['peak_rss_gb']:.2f}")
            print(f"| {case} | {cells} |", flush=True)
        return
    if args.simulation:
        print("| robot | raw mj_step | ours B=1 | ours B=16 | ours B=64 | gym Sync B=16 | gym Async B=16 | "
              "gym Async B=2 | ours B=16 / raw | physics B=16: mj_step loop | mujoco.rollout 1 thread | "
              "mujoco.rollout 2 threads |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for robot in ("ant", "cheetah"):
            r = locomotion_simulation(robot)
            cells = " | ".join(f"{r[k]:,.0f}" for k in ("raw_mj_step", "ours_B1", "ours_B16", "ours_B64",
                                                        "gym_sync_B16", "gym_async_B16", "gym_async_B2"))
            physics = " | ".join(f"{r[k]:,.0f}" for k in ("loop_B16", "rollout_B16_t1", "rollout_B16_t2"))
            print(f"| {robot} | {cells} | {r['ours_B16'] / r['raw_mj_step']:.0%} | {physics} |", flush=True)
        return
    updates, warmup, window_s = (3, 2, 10.0) if args.quick else (8, 3, 30.0)
    if args.case:
        print(json.dumps(measure(args.case, args.compiled, updates, warmup, args.kernel, args.threads, window_s,
                                 args.sync, args.device or "cpu")))
        return
    if args.compare or args.device:
        cases = tuple(args.only.split(",")) if args.only else COMPARE_CASES if args.compare else DEVICE_CASES
        unknown = [c for c in cases if c not in CASES]
        if unknown:
            parser.error(f"unknown case {unknown[0]!r}; cases: {', '.join(CASES)}")
        if args.compare:
            compare_table(args.quick, cases, ("auto",) if args.after_only else ("autograd", "auto"))
        else:
            device_table(args.quick, cases, tuple(args.device.split(",")))
        return
    env = maze_environment()
    print(f"Maze environment alone ({os.cpu_count()} threads): generation {env['mazes_per_s']:,.0f} mazes/s "
          f"(4,096 L=8 mazes at once); stepping {env['env_steps_per_s']:,.0f} env-steps/s "
          f"(B=256, random actions).\n")
    print("| case | mode | memory kernel | env-steps/s | collect share | peak RSS (GB) | B | PPO epochs |")
    print("|---|---|---|---|---|---|---|---|")
    for case in (c for c in CASES if c not in METAWORLD_CASES):
        modes = (False, True) if "compile" in _config_fields(case) else (False,)
        for compiled in modes:
            mode = "compiled" if compiled else "eager"
            r = _run_parallel([_case_command(case, args.quick, None, os.cpu_count() or 1, compiled)])
            if isinstance(r, str):
                print(f"| {case} | {mode} | | {r} |")
                continue
            r = r[0]
            print(f"| {case} | {mode} | {r['memory_kernel']} | {r['env_steps_per_s']:,.0f} | "
                  f"{r['collect_share']:.0%} | {r['peak_rss_gb']:.2f} | {r['batch_tasks']} | {r['ppo_epochs']} |",
                  flush=True)


if __name__ == "__main__":
    main()
