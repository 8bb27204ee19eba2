"""Name -> entry registries (datasets, methods), in the style of timm's `register_model`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from align.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named entries with a decorator to fill it and a clear error on a bad name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
