"""Name -> object registries: agents, task families, suites and profiles.

``--agents all`` and ``--suite capacity`` are lookups here; tests parametrize
over them; an unknown name fails with the list of valid ones.
"""

from __future__ import annotations

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

    def add(self, name: str, value: V) -> V:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = value
        return value

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
