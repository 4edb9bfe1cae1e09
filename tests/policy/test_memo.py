"""cached_attribute computes once per instance, also on frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from pyheadscale.policy.memo import cached_attribute


@dataclass(frozen=True)
class Point:
    x: int
    calls: list[int]

    @cached_attribute
    def doubled(self) -> int:
        """Twice x."""
        self.calls.append(self.x)
        return 2 * self.x


def test_computed_once_per_instance_and_kept_out_of_equality() -> None:
    calls: list[int] = []
    a, b = Point(3, calls), Point(3, calls)
    assert (a.doubled, a.doubled, b.doubled) == (6, 6, 6)
    assert calls == [3, 3]
    assert a == b and "doubled" in vars(a)
    assert isinstance(Point.doubled, cached_attribute) and Point.doubled.__doc__ == "Twice x."
