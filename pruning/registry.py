"""One registry type for every extension point: criteria, models, datasets, strategies.

An entry is found by its registered name or, for code outside the package, as
`package.module:attribute`, the way `model.arch` has always been reached. Unknown names
raise one line that names the config key and lists the valid names.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind.

    Args:
        kind: what an entry is, for messages ("dataset").
        key: the config key that names an entry, for messages ("data.dataset").
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind, self.key = kind, key
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if ":" in name:
            raise ValueError(f"{self.kind} name {name!r}: ':' is reserved for module:attr")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda entry: self.add(name, entry)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        """The entry registered as `name`, or the attribute a `module:attr` name points to."""
        if name in self._entries:
            return self._entries[name]
        if ":" in name:
            module, _, attr = name.partition(":")
            try:
                return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"{self.key}: cannot import {name!r} ({exc})") from None
        raise ValueError(f"{self.key}: unknown {self.kind} {name!r}; "
                         f"known: {', '.join(self.names())}")
