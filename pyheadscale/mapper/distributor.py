"""Turning change events into per-node map deltas for the connected map sessions.

Each connected map stream is a MapSession. A change touches only the sessions of nodes that can see the
changed node (asked of the policy), or that were told about it before; those sessions note what is pending
and wake. Each session then builds one MapResponse from everything pending, so a burst of changes coalesces
into one message, and the pending state is a few sets of node ids: memory per session stays bounded however
fast changes arrive.

"Told about it before" is a reverse index (peer id -> sessions whose client knows that peer), kept in step as
each session's known peers change, so routing a change costs O(sessions it reaches), never a scan of them all.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable, Set

from pyheadscale.mapper.builder import MapBuilder, MapMessage
from pyheadscale.mapper.pacing import Pacing
from pyheadscale.state.changes import Change, ChangeKind
from pyheadscale.tailcfg.map_response import MapResponse, PingRequest


class KnownIndex:
    """Which sessions know each peer: the inverse of every session's `known_peers`."""

    def __init__(self) -> None:
        self._by_peer: dict[int, set[MapSession]] = {}

    def add(self, session: MapSession, peer_ids: Iterable[int]) -> None:
        for pid in peer_ids:
            group = self._by_peer.get(pid)
            if group is None:
                self._by_peer[pid] = {session}
            else:
                group.add(session)

    def discard(self, session: MapSession, peer_ids: Iterable[int]) -> None:
        for pid in peer_ids:
            group = self._by_peer.get(pid)
            if group is not None:
                group.discard(session)
                if not group:
                    del self._by_peer[pid]

    def knowing(self, peer_id: int) -> list[MapSession]:
        return list(self._by_peer.get(peer_id, ()))


class MapSession:
    """The delta state of one connected map stream.

    `known_peers` is what the client has been told. It changes only through `_know` and `_forget`, which keep
    `index` (the distributor's, once the session is added) in step.
    """

    def __init__(self, node_id: int, capver: int) -> None:
        self.node_id = node_id
        self.capver = capver
        self.known_peers: set[int] = set()
        self.index = KnownIndex()
        # Counts this session in `pending` while it has something to send (the distributor's, once added).
        self.pacing = Pacing()
        self.wake = asyncio.Event()
        # When the first change now pending was signalled (time.monotonic): pacing judges busy by it.
        self.woken_at = 0.0
        self.closed = False
        self._full = False
        self._policy = False
        # The filter and SSH policy the client holds: a policy delta is sent only when they differ.
        self.sent_policy: MapResponse = {}
        self._changed: set[int] = set()
        self._removed: set[int] = set()
        self._patched: set[int] = set()
        # A tailcfg.PingRequest to deliver with the next response (the latest one wins).
        self._ping: PingRequest | None = None

    def send_ping(self, request: PingRequest) -> None:
        self._ping = request
        self._signal()

    def want_full(self) -> None:
        self._full = True
        self._signal()

    @property
    def full_pending(self) -> bool:
        """Whether the next message is a full map (O(peers) to build, so it waits its turn)."""
        return self._full

    def want_policy(self) -> None:
        self._policy = True
        self._signal()

    def peer_changed(self, peer_id: int) -> None:
        self._removed.discard(peer_id)
        self._changed.add(peer_id)
        self._signal()

    def peer_removed(self, peer_id: int) -> None:
        self._changed.discard(peer_id)
        self._patched.discard(peer_id)
        self._removed.add(peer_id)
        self._signal()

    def peer_patched(self, peer_id: int) -> None:
        self._patched.add(peer_id)
        self._signal()

    def close(self) -> None:
        self.closed = True
        self._signal()

    def _signal(self) -> None:
        if not self.wake.is_set():
            self.woken_at = time.monotonic()
            self.wake.set()
            self.pacing.pending += 1

    def _settle(self) -> None:
        if self.wake.is_set():
            self.wake.clear()
            self.pacing.pending -= 1

    def use_pacing(self, pacing: Pacing) -> None:
        """Count this session in `pacing` from now on, with whatever it has pending."""
        if self.wake.is_set():
            self.pacing.pending -= 1
            pacing.pending += 1
        self.pacing = pacing

    def _know(self, peer_ids: set[int]) -> None:
        new = peer_ids - self.known_peers
        self.known_peers |= new
        self.index.add(self, new)

    def _forget(self, peer_ids: set[int]) -> None:
        gone = peer_ids & self.known_peers
        self.known_peers -= gone
        self.index.discard(self, gone)

    def take_pending(self, builder: MapBuilder) -> MapMessage | None:
        """Build one message from everything pending and clear it; None when nothing is."""
        self._settle()
        store = builder.ctx.store
        node = store.nodes.get(self.node_id)
        if node is None:
            return None
        if not store.may_connect(node):
            # Expired or logged out since the stream opened: one last self-update, and the stream ends.
            self.closed = True
            self._forget(set(self.known_peers))
            return MapMessage("revoked", builder.revoked(node, self.capver))
        if self._full:
            self._full = self._policy = False
            self._changed.clear()
            self._removed.clear()
            self._patched.clear()
            full, peers = builder.full(node, self.capver)
            removed = self.known_peers - peers
            self._forget(removed)
            self._know(peers)
            if removed:
                full["PeersRemoved"] = sorted(removed)
            self.sent_policy = builder.policy_fields(node, self.capver)
            if self._ping is not None:
                full["PingRequest"], self._ping = self._ping, None
            return MapMessage("full", full)
        response: MapResponse = {}
        if self._ping is not None:
            response["PingRequest"], self._ping = self._ping, None
        if self._policy:
            self._policy = False
            fields = builder.policy_fields(node, self.capver)
            if fields != self.sent_policy:
                self.sent_policy = fields
                response.update(fields)
        if self._changed:
            changed, self._changed = self._changed, set()
            delta = builder.peers_changed(node, changed, self.capver)
            visible = {n["ID"] for n in delta["PeersChanged"]}
            self._removed |= (changed - visible) & self.known_peers
            self._know(visible)
            if delta["PeersChanged"]:
                response.update(delta)
        if self._removed:
            removed, self._removed = self._removed & self.known_peers, set()
            self._forget(removed)
            if removed:
                response["PeersRemoved"] = sorted(removed)
        if self._patched:
            patched, self._patched = self._patched & self.known_peers, set()
            patches = [builder.peer_patch(store.nodes[p]) for p in sorted(patched) if p in store.nodes]
            if patches:
                response["PeersChangedPatch"] = patches
        return MapMessage("delta", response) if response else None


class Distributor:
    """Routes the change feed's changes to the map sessions they affect (it only reads the store)."""

    def __init__(self, builder: MapBuilder) -> None:
        self.builder = builder
        self.sessions: dict[int, set[MapSession]] = defaultdict(set)
        self.index = KnownIndex()
        self.pacing = Pacing()

    def add(self, session: MapSession) -> None:
        session.index = self.index
        self.index.add(session, session.known_peers)
        session.use_pacing(self.pacing)
        self.sessions[session.node_id].add(session)

    def remove(self, session: MapSession) -> None:
        group = self.sessions.get(session.node_id)
        if group is not None:
            group.discard(session)
            if not group:
                del self.sessions[session.node_id]
        if session.index is self.index:
            self.index.discard(session, session.known_peers)
            session.index = KnownIndex()
        if session.pacing is self.pacing:
            session.use_pacing(Pacing())

    def _sessions_of(self, node_ids: Set[int]) -> list[MapSession]:
        sessions = self.sessions
        if len(sessions) < len(node_ids):  # a join into a tailnet most of whose nodes have no stream open
            return [s for nid, group in sessions.items() if nid in node_ids for s in group]
        return [s for nid in node_ids for s in sessions.get(nid, ())]

    def _knowing(self, node_id: int) -> list[MapSession]:
        return self.index.knowing(node_id)

    def ping(self, node_id: int, request: PingRequest) -> bool:
        """Put a PingRequest in the node's map streams; False when it has none open."""
        sessions = self.sessions.get(node_id, ())
        for session in sessions:
            session.send_ping(request)
        return bool(sessions)

    def on_change(self, change: Change) -> None:
        kind, node_id = change.kind, change.node_id
        if kind in (ChangeKind.POLICY, ChangeKind.USERS, ChangeKind.DERP, ChangeKind.DNS):
            for group in self.sessions.values():
                for session in group:
                    session.want_full()
            return
        if kind is ChangeKind.POLICY_NODES:
            for session in self._sessions_of(change.node_ids):
                session.want_policy()
            return
        assert node_id is not None
        if kind is ChangeKind.NODE_REMOVED:
            self.builder.forget(node_id)
            for session in self._knowing(node_id):
                session.peer_removed(node_id)
            for session in self.sessions.get(node_id, ()):
                session.close()
            return
        if kind in (ChangeKind.NODE_PATCH, ChangeKind.NODE_ONLINE):
            for session in self._knowing(node_id):
                session.peer_patched(node_id)
            return
        # NODE_ADDED / NODE_UPDATED: whoever sees the node now gets it in full; whoever saw it and no longer
        # does gets it removed; the node itself gets a fresh full map, since its own view may have changed.
        viewers = self.builder.ctx.policy.peer_ids(node_id)
        for session in self._sessions_of(viewers):
            session.peer_changed(node_id)
        for session in self._knowing(node_id):
            if session.node_id not in viewers:
                session.peer_removed(node_id)
        if kind is ChangeKind.NODE_UPDATED:
            for session in self.sessions.get(node_id, ()):
                session.want_full()
