"""metabench: a benchmark suite for meta-reinforcement learning.

``metabench`` (this folder, ``benchmark/``) holds the runner, CLI, suites,
profiles, statistics and reports; ``metabench.agents`` the agents and
``metabench.envs`` the task families. Importing it is cheap: heavy modules
load where they are used.
"""

import os as _os

__version__ = "0.1.0"


def _die_with_sweep() -> None:
    """In a run's process spawned by a sweep (``METABENCH_SWEEP_PID`` set): die with the sweep.

    This package is the first thing such a process imports, seconds before torch is loaded and the runner
    can watch its parent, so a sweep killed while its runs start up leaves none behind. Linux only (a
    parent-death signal); elsewhere the runner's watcher thread does it once the run has started.
    """
    parent = _os.environ.pop("METABENCH_SWEEP_PID", None)
    if not parent or not parent.isdigit():
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if _os.getppid() != int(parent):  # the sweep died before the signal was armed
        _os._exit(1)


_die_with_sweep()
