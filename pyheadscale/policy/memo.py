"""Attributes computed on first use and kept on the instance.

``functools.cached_property`` does the same, but on Python 3.11 it takes a lock on every first access (3.12
dropped it): with a dozen such attributes on each of ten thousand nodes and on every filter destination, that
lock was a measurable part of compiling a policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class cached_attribute(Generic[T]):
    """Like ``functools.cached_property`` (a non-data descriptor whose value lands in the instance's
    ``__dict__``, frozen dataclasses included), without a lock."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_attribute[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | cached_attribute[T]:
        if instance is None:
            return self
        value = self.compute(instance)
        instance.__dict__[self.name] = value
        return value
