"""Registries by decorator, filled from built-in modules and third-party entry points.

A plugin package declares an entry point in group `tsbench.tasks`, `tsbench.runners`,
`tsbench.strategies` or `tsbench.verifiers`; loading it imports the module, whose decorators
register what it defines. Entry points load lazily, the first time a registry is read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from tsbench.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    summary: str
    obj: T


class Registry(Generic[T]):
    """Name -> factory, with a one-line summary for `tsbench list`."""

    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...]) -> None:
        self.kind = kind
        self.group = group
        self._builtin_modules = builtin_modules
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def register(self, name: str, summary: str = "") -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            self._entries[name] = Entry(name, summary or (doc.splitlines()[0] if doc else ""), obj)
            return obj

        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            try:
                ep.load()
            except Exception as exc:  # a broken third-party plugin must not hide the others
                raise UserError(
                    f"{self.kind} plugin entry point '{ep.name} = {ep.value}' (group {self.group}) "
                    f"failed to import: {exc}; fix or uninstall the package that declares it"
                ) from exc

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UserError(
                f"unknown {self.kind} '{name}'; known {self.kind}s: {known} (see `tsbench list {self.kind}s`)"
            )
        return self._entries[name].obj

    def entries(self) -> list[Entry[T]]:
        self._load()
        return [self._entries[k] for k in sorted(self._entries)]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]
