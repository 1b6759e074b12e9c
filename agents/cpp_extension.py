"""C++ extensions of the agents (``agents/csrc/``), built on first use and remembered when they cannot be.

Each fused kernel (:mod:`metabench.agents.metods_fused`, :mod:`metabench.agents.gru_fused`) is one C++ source
compiled with ``-O3 -march=native`` by ``torch.utils.cpp_extension.load`` (ninja and g++; about a minute,
once per machine and source) and cached in torch's extension directory under a name that includes a hash of
the CPU's features and one of the source, flags and build paths. Without the source's hash, two checkouts of
different versions on one machine (a sweep running from a frozen worktree beside development) share one build
folder: each rebuilds it over the other, and a process that loads after the other's rebuild gets a module
whose functions take other arguments. Without the paths (the source file's, and the torch whose headers it
compiles against: both are written into torch's ``build.ninja``), two checkouts or two environments of the
same version still share one folder and rebuild it each time the other one loaded it last: a minute or two
at the start of each run, and every Ray worker of a sweep waiting on the same build. :meth:`CppExtension.available` says whether the build worked and remembers
why not, so that a machine without a compiler falls back to the autograd path instead of failing.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from types import ModuleType

CSRC = Path(__file__).with_name("csrc")
CFLAGS = ["-O3", "-march=native", "-ffp-contract=fast"]


def _cpu_tag() -> str:
    """A short hash of this CPU's features: ``-march=native`` builds differ between machines."""
    flags = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), flags)
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


class CppExtension:
    """One C++ source under ``agents/csrc/``, loaded once per process."""

    def __init__(self, name: str, source: str):
        self.name = name
        self.source = CSRC / source
        self._module: ModuleType | None = None
        self._failure: str | None = None

    def _load(self) -> ModuleType:
        from torch.utils import cpp_extension

        try:  # ninja from the pip package, whether or not the venv's bin is on PATH
            import ninja

            if ninja.BIN_DIR not in os.environ.get("PATH", "").split(os.pathsep):
                os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
        return cpp_extension.load(name=self.build_name(), sources=[str(self.source)], extra_cflags=CFLAGS,
                                  verbose=False)

    def build_name(self) -> str:
        """The extension's name in torch's cache: ``<name>_<cpu>_<source>``, so that each CPU, and each version of
        the source and flags at each place and against each torch, has its own build (the module docstring)."""
        import torch

        where = f"{self.source.resolve()}|{Path(torch.__file__).resolve().parent}|{' '.join(CFLAGS)}"
        digest = hashlib.sha1(self.source.read_bytes() + where.encode()).hexdigest()[:8]
        return f"{self.name}_{_cpu_tag()}_{digest}"

    def available(self) -> bool:
        """Whether the extension builds and loads here (tried once per process)."""
        if self._module is None and self._failure is None:
            try:
                self._module = self._load()
            except Exception as e:  # noqa: BLE001 - any build or load failure means: use autograd
                lines = str(e).strip().splitlines()
                errors = [line.strip() for line in lines if "error:" in line]
                said = errors[0] if errors else (lines[-1] if lines else "")  # the compiler's first error
                self._failure = f"{type(e).__name__}: {said}"[:500]
        return self._module is not None

    def unavailable_reason(self) -> str | None:
        """Why :meth:`available` is False (None if it is True or was not tried)."""
        return self._failure

    def module(self) -> ModuleType:
        if not self.available():
            raise RuntimeError(f"the C++ extension {self.name} is unavailable: {self._failure}")
        assert self._module is not None
        return self._module


__all__ = ["CFLAGS", "CSRC", "CppExtension"]
