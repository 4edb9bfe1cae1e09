"""The subnet routes' primary routers in force (elected by peers.primary_routers), kept both ways."""

from __future__ import annotations

from pyheadscale.policy.netset import IPNetwork


class PrimaryRoutes:
    """Each subnet route's primary router, and each router's primary routes in election order (a peer view
    asks the latter per viewer and peer)."""

    __slots__ = ("_by_router", "by_route")

    def __init__(self, elected: dict[IPNetwork, int]) -> None:
        self.by_route = elected
        by_router: dict[int, list[IPNetwork]] = {}
        for route, router in elected.items():
            by_router.setdefault(router, []).append(route)
        self._by_router = by_router

    def of(self, router_id: int) -> list[IPNetwork]:
        return self._by_router.get(router_id, [])

    def moved(self, elected: dict[IPNetwork, int]) -> set[int]:
        """The routers that gain or lose a primary route if `elected` replaces these."""
        now = self.by_route
        changed = [r for r in set(elected) | set(now) if now.get(r) != elected.get(r)]
        routers = {now.get(r) for r in changed} | {elected.get(r) for r in changed}
        return {i for i in routers if i is not None}
