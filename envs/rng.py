"""Counter-based random numbers for batched environments.

A batched environment must give each of its B environments the same
transitions whether it is stepped inside a batch of 4,096 or alone, and
whatever the number of worker processes. A shared ``torch.Generator`` cannot
do that (the draws of environment i depend on how many environments came
before it), so dynamics randomness is a pure function of a per-environment
integer key and explicit counters (episode, step, draw), in the spirit of
JAX's keys. Task *sampling* uses ordinary seeded ``torch.Generator`` streams
(see :func:`metabench.envs.base.task_generator`).

All values are int64 tensors holding unsigned 32-bit integers; every product
is of a value below 2**32 and a constant below 2**31, so nothing overflows.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mix(x: torch.Tensor) -> torch.Tensor:
    """An avalanche hash of 32-bit integers (xor-shift-multiply rounds)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x1B873593) & _MASK32
    return x ^ (x >> 16)


def fold(key: torch.Tensor, data: torch.Tensor | int) -> torch.Tensor:
    """A new key from ``key`` and ``data`` (broadcast); distinct data give unrelated keys."""
    data = torch.as_tensor(data, dtype=torch.int64, device=key.device) & _MASK32
    return _mix((_mix(key) * 0x2545F491 + data + _GOLDEN) & _MASK32)


def uniform(key: torch.Tensor, *counters: torch.Tensor | int) -> torch.Tensor:
    """Uniform float32 in [0, 1), one per element of ``key``, a pure function of key and counters."""
    h = key
    for c in counters:
        h = fold(h, c)
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def randint(key: torch.Tensor, high: torch.Tensor | int, *counters: torch.Tensor | int) -> torch.Tensor:
    """Integers uniform in [0, high) (``high`` may differ per element), int64."""
    u = uniform(key, *counters).to(torch.float64)
    high_t = torch.as_tensor(high, device=key.device)
    return torch.minimum((u * high_t).floor().to(torch.int64), high_t.to(torch.int64) - 1)


def new_keys(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` fresh 32-bit keys drawn from a seeded generator."""
    return torch.randint(0, 1 << 32, (n,), generator=generator, dtype=torch.int64)
