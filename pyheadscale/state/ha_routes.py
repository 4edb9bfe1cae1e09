"""HA subnet routers: which routers may be primary, and the health probes that find a silent one.

A route several online routers serve is an HA route. Every `node.routes.ha.probe_interval` the prober pings
each of those routers through its map stream (a PingRequest whose callback is `HEAD
/machine/ping-response`); a router that does not answer within `probe_timeout` is unhealthy, and one that
answers again is healthy. The results of one cycle are applied together, and the primaries are elected again
once (policy/peers.py: primary_routers), so peers never see an intermediate choice.

A router whose map stream is younger than one probe interval is given time: its client may still be applying
the map that made it a router, so silence then does not count. A cycle with such a router decides nothing,
as a partial picture could elect a router whose state is still unknown. A router that goes offline stops
being a candidate at once (no probe needed) and starts afresh when it comes back: a verdict holds for the
online period it was made in (state/presence.py names each period), so nothing has to clear it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pyheadscale.background import stop_task
from pyheadscale.config import HARoutesConfig
from pyheadscale.control.ping import PATH as PING_PATH
from pyheadscale.control.ping import PingTracker
from pyheadscale.mapper.distributor import Distributor
from pyheadscale.policy.netset import IPNetwork
from pyheadscale.state.policy import PolicyManager
from pyheadscale.state.store import Store

log = logging.getLogger(__name__)


class RouterHealthState:
    """The server's answer to the election's questions: online routers are candidates; healthy unless the
    last decided probe cycle of their current online period found them silent."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Router -> the online period (Presence.online_since) in which a probe found it silent.
        self._silent_in: dict[int, float] = {}

    def is_candidate(self, node_id: int) -> bool:
        return self.store.is_online(node_id)

    def is_healthy(self, node_id: int) -> bool:
        period = self._silent_in.get(node_id)
        return period is None or period != self.store.presence.online_since(node_id)

    @property
    def unhealthy(self) -> set[int]:
        return {node_id for node_id in self._silent_in if not self.is_healthy(node_id)}

    def record(self, verdicts: dict[int, bool]) -> None:
        """One decided probe cycle: each router answered (True) or stayed silent (False). Verdicts of online
        periods that have ended are dropped on the way."""
        for node_id in [n for n in self._silent_in if self.is_healthy(n)]:
            del self._silent_in[node_id]
        for node_id, healthy in verdicts.items():
            period = self.store.presence.online_since(node_id)
            if healthy or period is None:
                self._silent_in.pop(node_id, None)
            else:
                self._silent_in[node_id] = period


class HAProber:
    def __init__(
        self,
        config: HARoutesConfig,
        server_url: str,
        store: Store,
        policy: PolicyManager,
        health: RouterHealthState,
        distributor: Distributor,
        pings: PingTracker,
    ) -> None:
        self.interval = config.probe_interval.total_seconds()
        self.timeout = config.probe_timeout.total_seconds()
        self.server_url = server_url.rstrip("/")
        self.store, self.policy, self.health = store, policy, health
        self.distributor, self.pings = distributor, pings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        await stop_task(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.probe_once()
            except Exception:
                log.exception("HA probe cycle failed")

    def ha_routers(self) -> list[int]:
        """Routers serving a route that at least one other online router serves too."""
        by_route: dict[IPNetwork, list[int]] = {}
        for node in self.policy.engine.tailnet.routers():
            if self.store.is_online(node.id):
                for route in node.subnet_routes:
                    by_route.setdefault(route, []).append(node.id)
        return sorted({i for ids in by_route.values() if len(ids) > 1 for i in ids})

    async def probe_once(self) -> None:
        """One cycle: ping every HA router, then apply all results at once (or none, see the module doc)."""
        started = time.monotonic()
        waits: dict[int, tuple[str, asyncio.Future[float]]] = {}
        for node_id in self.ha_routers():
            ping_id, future = self.pings.register(node_id)
            if self.distributor.ping(node_id, {"URL": f"{self.server_url}{PING_PATH}?id={ping_id}"}):
                waits[node_id] = (ping_id, future)
            else:
                self.pings.cancel(ping_id)
        if not waits:
            return
        answered = await asyncio.gather(*(self._answered(f) for _, f in waits.values()))
        results: dict[int, bool] = {}
        for (node_id, (ping_id, _)), ok in zip(waits.items(), answered, strict=True):
            self.pings.cancel(ping_id)
            if ok:
                results[node_id] = True
                continue
            if not self.store.is_online(node_id):
                continue  # offline now: no longer a candidate anyway
            since = self.store.presence.online_since(node_id)
            if since is None or since > started - self.interval:
                log.debug("HA probe: node %d timed out on a fresh session; deciding next cycle", node_id)
                return
            log.warning("HA probe: node %d did not answer within %gs", node_id, self.timeout)
            results[node_id] = False
        before = self.health.unhealthy
        self.health.record(results)
        if self.health.unhealthy != before:
            log.info("HA probe: unhealthy routers now %s", sorted(self.health.unhealthy) or "none")
            self.policy.reelect()

    async def _answered(self, future: asyncio.Future[float]) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            if future.cancelled():  # the tracker gave the ping up (shutting down)
                return False
            raise
        return True
