"""Named constructors filled by a decorator: the one pattern behind taxotrain's heads, margin heads, metadata
encoders and fusions, signal networks, ROCKET-family models and tasks (as timm's ``register_model``).

    HEADS = Registry("head", choices="model.head takes one of")

    @HEADS.register("linear")
    class LinearHeads(nn.Module): ...

    HEADS.create("linear", in_features, taxonomy, drop_rate=None)   # None keeps the constructor's default
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """What is registered under each name, for one kind of part. ``names()`` is sorted unless ``ordered`` (then in
    registration order, e.g. weakest model first); an unknown name is ``error`` (a one-line message listing the
    names after ``choices``)."""

    def __init__(self, kind: str, *, choices: str = "choose one of", error: type[Exception] = ValueError,
                 ordered: bool = False) -> None:
        self.kind, self.choices, self.error, self.ordered = kind, choices, error, ordered
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name`` (a later entry of the same name replaces it)."""
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers the function or class it decorates as ``name``."""
        return lambda entry: self.add(name, entry)

    def names(self) -> list[str]:
        """The registered names."""
        return list(self._entries) if self.ordered else sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        """What ``name`` registered; ``error`` naming the registered names otherwise."""
        if name not in self._entries:
            raise self.error(f"unknown {self.kind} '{name}'; {self.choices}: {', '.join(self.names())}")
        return self._entries[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call what ``name`` registered with ``args`` and the keyword arguments that are not None (None keeps the
        constructor's own default)."""
        return self.get(name)(*args, **{k: v for k, v in kwargs.items() if v is not None})  # type: ignore[operator]
