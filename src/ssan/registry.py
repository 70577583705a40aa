"""Named registries for the pluggable families (dataset formats, backbones, loss terms, ...).

Each family has one :class:`Registry`; the package registers its own entries with the
registry's decorator and user code adds more the same way, without editing the package::

    from ssan.models import register_backbone

    @register_backbone("my-trunk", out_channels=512)
    def my_trunk(config):
        return MyTrunk()

The command line's choices and every "valid: ..." error read the registry, so an entry
added before the CLI or a preset runs is a valid name everywhere.
"""

from __future__ import annotations

from typing import Dict, Generic, Iterator, List, Optional, Type, TypeVar

from ssan.errors import ConfigError, SsanError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry mapping of one family.

    Args:
        family: what the entries are, for messages (``"backbone"``, ``"dataset format"``).
        error: the :class:`ssan.errors.SsanError` subclass raised for an unknown name.
    """

    def __init__(self, family: str, error: Type[SsanError] = ConfigError) -> None:
        self.family = family
        self.error = error
        self._entries: Dict[str, T] = {}

    def register(self, name: str, entry: Optional[T] = None, *, overwrite: bool = False):
        """Add ``entry`` under ``name``; without ``entry``, a decorator that adds what it decorates.

        A name already taken is refused unless ``overwrite`` (so two plug-ins cannot silently
        replace each other's entries).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.family} name must be a non-empty string, got {name!r}")

        def add(value: T) -> T:
            if name in self._entries and not overwrite:
                raise ValueError(f"{self.family} {name!r} is already registered (pass overwrite=True to replace it)")
            self._entries[name] = value
            return value

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (KeyError when absent)."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name raises ``self.error`` listing the valid ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.error(f"unknown {self.family} {name!r}; valid: {', '.join(self.names())}") from None

    def check(self, name: str) -> str:
        """``name`` when registered (else the error of :meth:`get`)."""
        self.get(name)
        return name

    def names(self) -> List[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}: {', '.join(self.names())})"
