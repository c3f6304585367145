"""Registries of plug-ins (attacks, and later defenses) keyed by short lowercase names.

Built-in attacks register through the ``robustness.attacks`` entry-point group in
``pyproject.toml``, exactly as a third-party package would; nothing registers by
import side effect. Duplicate names are an error.

Example::

    from robustness.registry import ATTACKS
    ATTACKS.list("p*")              # ['pgd']
    pgd = ATTACKS.create("pgd", steps=20, norm="l2")
"""

from __future__ import annotations

import fnmatch
import re
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from robustness.errors import InputError

__all__ = ["Registry", "ATTACKS"]

T = TypeVar("T")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


class Registry(Generic[T]):
    """A name -> factory mapping filled from an entry-point group and explicit calls."""

    def __init__(self, group: str, kind: str) -> None:
        self._group = group
        self._kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._origins: dict[str, str] = {}
        self._loaded = False

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        seen: dict[str, str] = {}
        for ep in entry_points(group=self._group):
            # an editable install may list one distribution twice: same target is fine
            if seen.get(ep.name) == ep.value:
                continue
            if ep.name in seen:
                raise InputError(
                    f"two packages register the {self._kind} name {ep.name!r} "
                    f"({seen[ep.name]} and {ep.value}): uninstall one of them"
                )
            seen[ep.name] = ep.value
            self.register(ep.name, _lazy(ep), origin=ep.value)

    def register(self, name: str, factory: Callable[..., T], *, origin: str | None = None) -> None:
        """Register ``factory`` under ``name``; a name already taken raises :class:`InputError`."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise InputError(f"{self._kind} names are short lowercase words, got {name!r}")
        if name in self._factories:
            raise InputError(
                f"the {self._kind} name {name!r} is already registered by "
                f"{self._origins[name]}: choose another name"
            )
        self._factories[name] = factory
        self._origins[name] = origin or getattr(factory, "__qualname__", repr(factory))

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern``."""
        self._load_entry_points()
        return sorted(n for n in self._factories if fnmatch.fnmatchcase(n, pattern))

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``."""
        self._load_entry_points()
        key = name.strip().lower() if isinstance(name, str) else name
        if key not in self._factories:
            known = ", ".join(self.list()) or "none (is the package installed with pip?)"
            raise InputError(f"unknown {self._kind} {name!r}: known {self._kind}s are {known}")
        return self._factories[key]

    def load(self, name: str) -> Callable[..., T]:
        """The class or function behind ``name``, imported if it came from an entry point."""
        factory = self.get(name)
        return factory.load() if isinstance(factory, _lazy) else factory

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the plug-in registered under ``name`` with keyword settings."""
        return self.get(name)(**kwargs)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._factories


class _lazy:
    """Factory that imports its entry point on first use."""

    def __init__(self, ep: Any) -> None:
        self._ep = ep
        self.__qualname__ = ep.value

    def load(self) -> Callable[..., Any]:
        return self._ep.load()

    def __call__(self, **kwargs: Any) -> Any:
        return self.load()(**kwargs)


ATTACKS: Registry[Any] = Registry("robustness.attacks", "attack")
