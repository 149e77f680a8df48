"""One name -> factory registry for every list of names aekit accepts.

Activations, losses, penalties, layer forms, metrics and preprocessing steps are each a
:class:`Registry`.  A new entry is one ``register`` call in the module that defines it (no
list to edit elsewhere), and every unknown name gets the same error, with a did-you-mean hint::

    >>> from aekit.registry import Registry
    >>> colours = Registry("colour")
    >>> colours.register("red", 0xFF0000, aliases=("crimson",))
    16711680
    >>> colours.get("Crimson") == colours["red"]
    True
    >>> colours.get("rde")
    Traceback (most recent call last):
    ...
    aekit.errors.ConfigurationError: unknown colour 'rde'; did you mean 'red'?
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from .errors import ConfigurationError, unknown_name_error

__all__ = ["Registry"]

T = TypeVar("T")
_MISSING: Any = object()  # register(name) without an entry: used as a decorator (None is a valid entry)


class Registry(Mapping[str, T], Generic[T]):
    """Entries by canonical name, with aliases and a did-you-mean error for unknown names.

    A registry is a read-only mapping of canonical names to entries (``name in registry``,
    ``registry[name]``, iteration in registration order); :meth:`get` also resolves aliases
    and case.

    Parameters
    ----------
    kind : str
        What the names are, for error messages (``"activation"``, ``"loss"``, ...).
    case_sensitive : bool
        When False (default) names are compared in lower case.
    """

    def __init__(self, kind: str, *, case_sensitive: bool = False):
        self.kind = kind
        self.case_sensitive = case_sensitive
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    def _key(self, name: str) -> str:
        return name if self.case_sensitive else name.lower()

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T, *, aliases: Iterable[str] = (), replace: bool = False) -> T: ...

    def register(self, name: str, entry: Any = _MISSING, *, aliases: Iterable[str] = (), replace: bool = False) -> Any:
        """Add ``entry`` under ``name`` (and ``aliases``); used as a decorator when ``entry`` is omitted.

        Raises
        ------
        ConfigurationError
            If the name or an alias is already taken (by another entry, or by this one
            unless ``replace`` is True).
        """
        if entry is _MISSING:
            return lambda value: self.register(name, value, aliases=aliases, replace=replace)
        key = self._key(name)
        if key in self._entries and not replace:
            raise ConfigurationError(f"{self.kind} name {key!r} is already registered")
        for taken in (key, *map(self._key, aliases)):
            if taken in self._aliases or (taken in self._entries and taken != key):
                raise ConfigurationError(f"{self.kind} name {taken!r} is already registered")
        self._entries[key] = entry
        for alias in aliases:
            self._aliases[self._key(alias)] = key
        return entry

    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` or of the alias ``name``.

        Raises
        ------
        ConfigurationError
            Naming the kind, the unknown name and the nearest known one.
        """
        if not isinstance(name, str):
            raise ConfigurationError(f"{self.kind} must be a name, got {name!r}")
        key = self._key(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise unknown_name_error(self.kind, name, self.names())
        return key

    def get(self, name: str, default: Any = None) -> T:
        """The entry registered under ``name`` (an alias or any case works).

        Unlike ``dict.get``, an unknown name raises (the standard did-you-mean error);
        ``default`` exists only for the ``Mapping`` signature and is ignored.
        """
        return self._entries[self.canonical(name)]

    def names(self) -> list[str]:
        """Every accepted name, canonical names and aliases, sorted."""
        return sorted([*self._entries, *self._aliases])

    def __getitem__(self, name: str) -> T:
        return self._entries[self._key(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
