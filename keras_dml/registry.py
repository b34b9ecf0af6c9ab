"""Named things with aliases, one style for every registry of keras_dml.

    BACKBONES = Registry("backbone", {"resnet50": ..., ...}, aliases={"googlenet": "inception_v3"})
    BACKBONES.get("googlenet")        # the entry of "inception_v3"
    BACKBONES.available()             # sorted canonical names (aliases excluded)
    BACKBONES.canonical("googlenet")  # "inception_v3"
    "resnet50" in BACKBONES; BACKBONES["resnet50"]; sorted(BACKBONES)
    BACKBONES.register("my_net", entry, aliases=("mynet",))

Backbones, losses, label distances, preprocessing, data loaders and tasks
are ``Registry`` objects; an unknown name raises ``UnknownNameError`` (a
``ValueError`` and a ``KeyError``) that lists what is available.
"""

from typing import Dict, Generic, Iterable, Iterator, List, Mapping, Optional, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError, KeyError):
    """A name that a registry does not know (the message lists the known ones)."""

    def __str__(self) -> str:          # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Entries by canonical name, plus aliases that resolve to them.

    Args:
      kind: what an entry is, for messages ("backbone", "loss", ...).
      entries: ``{canonical name: entry}``.
      aliases: ``{alias: canonical name}``.
      hint: appended to the unknown-name message (what else is accepted).
    """

    def __init__(self, kind: str, entries: Optional[Mapping[str, T]] = None,
                 aliases: Optional[Mapping[str, str]] = None, hint: str = ""):
        self.kind = kind
        self.hint = hint
        self._entries: Dict[str, T] = {}
        self._aliases: Dict[str, str] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)
        for alias, name in (aliases or {}).items():
            self.add_alias(alias, name)

    def register(self, name: str, entry: T, aliases: Iterable[str] = ()) -> T:
        """Add ``entry`` as ``name`` (and ``aliases``); returns the entry."""
        if name in self._entries or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is registered already.")
        self._entries[name] = entry
        for alias in aliases:
            self.add_alias(alias, name)
        return entry

    def add_alias(self, alias: str, name: str) -> None:
        """Make ``alias`` another name of the registered ``name``."""
        if name not in self._entries:
            raise ValueError(f"alias {alias!r} of unknown {self.kind} {name!r}.")
        if alias in self._entries or alias in self._aliases:
            raise ValueError(f"{self.kind} {alias!r} is registered already.")
        self._aliases[alias] = name

    def available(self) -> List[str]:
        """Sorted canonical names (aliases excluded)."""
        return sorted(self._entries)

    def aliases(self) -> Dict[str, str]:
        """``{alias: canonical name}``."""
        return dict(self._aliases)

    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` (itself, or what the alias names)."""
        if isinstance(name, str):
            if name in self._entries:
                return name
            if name in self._aliases:
                return self._aliases[name]
        aliases = f" (aliases: {', '.join(sorted(self._aliases))})" if self._aliases else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}; available: {', '.join(self.available())}"
            f"{aliases}{self.hint}.")

    def get(self, name: str) -> T:
        """The entry called ``name`` (or an alias of it)."""
        return self._entries[self.canonical(name)]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.available()})"
