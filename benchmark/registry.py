"""Name -> object registries: agents, task families, suites and profiles.

``--agents all`` and ``--suite capacity`` are lookups here; tests parametrize
over them; an unknown name fails with the list of valid ones.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class UnknownName(KeyError):
    """A name that is not registered; its message lists the valid choices."""

    def __init__(self, kind: str, name: str, choices: list[str]):
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(choices)}")

    def __str__(self) -> str:
        return self.args[0]


class Registry(Generic[V]):
    """An ordered mapping from names to values that explains its misses."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, V] = {}
        self._origins: dict[str, str] = {}
        self._adding_from = BUILTIN

    def add(self, name: str, value: V) -> V:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = value
        self._origins[name] = self._adding_from
        return value

    def origin(self, name: str) -> str:
        """Where ``name`` was registered: :data:`BUILTIN`, or the plugin that added it (see :func:`load_plugins`)."""
        self.get(name)
        return self._origins[name]

    @contextlib.contextmanager
    def adding_from(self, origin: str) -> Iterator[None]:
        """Names added inside the block are recorded as coming from ``origin``."""
        before, self._adding_from = self._adding_from, origin
        try:
            yield
        finally:
            self._adding_from = before

    def register(self, name: str) -> Callable[[V], V]:
        """Decorator form of :meth:`add`."""
        return lambda value: self.add(name, value)

    def get(self, name: str) -> V:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return list(self._items)

    def select(self, spec: str, *, all_word: str = "all") -> list[str]:
        """Resolve ``"a,b"`` or ``"all"`` to a list of registered names (validated, order kept)."""
        names = [s.strip() for s in spec.split(",") if s.strip()]
        if not names:
            raise UnknownName(self.kind, spec, self.names() + [all_word])
        if names == [all_word]:
            return self.names()
        for n in names:
            if n not in self._items:
                raise UnknownName(self.kind, n, self.names() + [all_word])
        return list(dict.fromkeys(names))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self):
        return self._items.items()


BUILTIN = "metabench"
"""The origin of the names metabench itself registers."""

PLUGIN_GROUPS = ("metabench.agents", "metabench.tasks")
"""Entry-point groups through which another installed package registers agents and task families: each entry
point names a callable (``"pkg.module:register"``) that calls :func:`metabench.agents.register` or
:func:`metabench.envs.register_task` (and may add a suite to :data:`metabench.suites.SUITES`)."""


def load_plugins(group: str, *registries: Registry) -> list[str]:
    """Call every entry point of ``group``; what they register is recorded as coming from their distribution.

    A plugin that fails (it raises on import or when called, or registers a name twice) is skipped with one
    line on stderr; the others and metabench's own names are unaffected. Returns the loaded entry points'
    origins."""
    from importlib.metadata import entry_points

    loaded = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        origin = f"{ep.dist.name if ep.dist is not None else '?'} (plugin {ep.name})"
        with contextlib.ExitStack() as stack:
            for registry in registries:
                stack.enter_context(registry.adding_from(origin))
            try:
                target = ep.load()
                if callable(target):
                    target()
                loaded.append(origin)
            except Exception as e:  # noqa: BLE001 - a broken plugin must not break metabench
                print(f"metabench: skipped the {group} entry point {ep.name} = {ep.value}: "
                      f"{type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
    return loaded
