"""One small generic registry: register by name, look up by name, list with a pattern.

Used for datasets now and for students, teachers, decoders, losses and protocols later. An unknown
name is a `RegistryError` that lists the closest registered names.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from depthkd.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (builders, classes, functions) of one kind.

    Args:
        kind: what the registry holds, used in error messages ("dataset", "student").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under `name`."""

        def add(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """Returns the object registered as `name`, or raises RegistryError naming close matches."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else None
            raise RegistryError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}",
                hint=hint,
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names that match the shell-style `pattern`."""
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items
