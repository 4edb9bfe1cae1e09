"""The in-memory store: the one owner of users, preauth keys and nodes.

Handlers ask the store to change state; the store validates, applies the policy's consequences (routes its
autoApprovers cover are approved in the same write), writes through to the database, updates its indexes and
the policy engine, and returns the changes it caused, which the change feed (state/feed.py) delivers. Reads
are plain dictionary lookups. Everything runs on the event loop, mutations one at a time, and each awaits the
database *before* touching memory, so a failed write leaves memory as it was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pyheadscale import audit
from pyheadscale.audit import AuditLog
from pyheadscale.db.database import Database
from pyheadscale.state.changes import Change, ChangeKind
from pyheadscale.state.consequences import NoPolicy, PolicyCandidate, PolicyConsequences
from pyheadscale.state.credentials import Credentials
from pyheadscale.state.errors import AccessRevoked, AuthFailed, Conflict, NotFound, StateError
from pyheadscale.state.expiry import ExpiryTimers
from pyheadscale.state.hostinfo import keep_netinfo, without_netinfo
from pyheadscale.state.ipalloc import IPAllocator
from pyheadscale.state.models import ApiKey, Node, PreAuthKey, User
from pyheadscale.state.mutations import Outcome, atomic
from pyheadscale.state.names import check_user_name, dns_label, now, validate_tags
from pyheadscale.state.presence import Presence

log = logging.getLogger(__name__)


class Store(Credentials):
    def __init__(self, db: Database, ips: IPAllocator) -> None:
        super().__init__()
        self.db = db
        self.ips = ips
        self.users: dict[int, User] = {}
        self.preauth_keys: dict[int, PreAuthKey] = {}
        self.nodes: dict[int, Node] = {}
        self.api_keys: dict[int, ApiKey] = {}
        self._by_node_key: dict[str, int] = {}
        self._by_machine_key: dict[str, int] = {}
        self._given_names: set[str] = set()
        self.presence = Presence()
        self.policy: PolicyConsequences = NoPolicy()
        self._ephemeral_timers: dict[int, asyncio.TimerHandle] = {}
        self._expiry = ExpiryTimers(self._expiry_passed)
        self.ephemeral_timeout = timedelta(minutes=30)
        self.audit = AuditLog(None)

    async def load(self) -> None:
        snapshot = await self.db.load()
        self.users = {u.id: u for u in snapshot.users}
        self.preauth_keys = {k.id: k for k in snapshot.preauth_keys}
        self.api_keys = {k.id: k for k in await self.db.load_api_keys()}
        for node in snapshot.nodes:
            self._index(node)
            self.ips.hold([node.ipv4, node.ipv6])
            if node.ephemeral:
                # It was offline when we went down, or it will reconnect before the timer fires.
                self._schedule_ephemeral_cleanup(node.id)

    def attach_policy(self, policy: PolicyConsequences) -> None:
        """From now on every mutation applies `policy`'s consequences (it was compiled from this store)."""
        self.policy = policy

    @atomic
    async def change_policy(self, compile_policy: Callable[[], PolicyCandidate]) -> Outcome[None]:
        """Put a new policy in force, approving the announced routes its autoApprovers cover, as one mutation.

        `compile_policy` compiles against the tailnet as it is under the mutation lock (a PolicyError leaves
        everything as it was). The approvals are written before the policy goes in force, so no reader sees
        the new policy with a route it approves still unapproved; should a write fail, the approvals already
        written stand (under the old policy) and are published, and the old policy stays in force.
        """
        candidate = compile_policy()
        written: list[Node] = []
        try:
            for node in sorted(self.nodes.values(), key=lambda n: n.id):
                routes = self._approvals(node, candidate.auto_approved_routes(node))
                if routes is not None:
                    written.append(await self._replace(node, approved_routes=routes))
                    self._audit_approval(written[-1])
        except BaseException:
            self.feed.publish(self._nodes_written(written))
            raise
        candidate.install()
        for node in written:
            self.policy.node_changed(node)
        approved = [Change(ChangeKind.NODE_UPDATED, node.id) for node in written]
        return Outcome.of(None, [Change(ChangeKind.POLICY), *approved])

    def _approvals(self, node: Node, auto_approved: Iterable[str]) -> list[str] | None:
        """The node's approved routes with `auto_approved` added; None when they add nothing."""
        missing = set(auto_approved) - set(node.approved_routes)
        return sorted(missing | set(node.approved_routes)) if missing else None

    def _audit_approval(self, node: Node) -> None:
        self.audit.record("node.approve_routes", f"node:{node.id}", routes=node.approved_routes)

    def _nodes_written(
        self, nodes: Sequence[Node], kind: ChangeKind = ChangeKind.NODE_UPDATED
    ) -> list[Change]:
        """Tell the policy engine about nodes just written; returns the changes they cause in causal order:
        each node, then the nodes whose policy results it changed."""
        changes: list[Change] = []
        for node in nodes:
            changes.append(Change(kind, node.id))
            affected = self.policy.node_changed(node)
            if affected:
                changes.append(Change(ChangeKind.POLICY_NODES, node_ids=frozenset(affected)))
        return changes

    def _users_changed(self) -> list[Change]:
        self.policy.users_changed()
        return [Change(ChangeKind.USERS)]

    # ---- users ----

    def user_by_name(self, name: str) -> User | None:
        return next((u for u in self.users.values() if u.name == name), None)

    def user_by_provider_id(self, provider_id: str) -> User | None:
        """The user an identity provider knows by this identifier (OIDC: issuer/subject)."""
        return next((u for u in self.users.values() if provider_id and u.provider_id == provider_id), None)

    def get_user(self, user_id: int) -> User:
        user = self.users.get(user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return user

    def resolve_user(self, ref: str | int) -> User:
        """A user by numeric id or by name, as the CLI accepts either."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            user = self.users.get(int(ref))
            if user is not None:
                return user
        user = self.user_by_name(str(ref))
        if user is None:
            raise NotFound(f"user {ref!r} not found")
        return user

    @atomic
    async def create_user(
        self,
        name: str,
        display_name: str = "",
        email: str = "",
        *,
        provider: str = "",
        provider_id: str = "",
        profile_pic_url: str = "",
    ) -> Outcome[User]:
        check_user_name(name)
        if self.user_by_name(name) is not None:
            raise Conflict(f"user {name!r} already exists")
        user = User(0, name, display_name, email, provider, provider_id, profile_pic_url, now())
        user.id = await self.db.insert_user(user)
        self.users[user.id] = user
        self.audit.record("user.create", f"user:{user.id}", name=name)
        return Outcome.of(user, self._users_changed())

    @atomic
    async def rename_user(self, user_id: int, new_name: str) -> Outcome[User]:
        user = self.get_user(user_id)
        check_user_name(new_name)
        if self.user_by_name(new_name) not in (None, user):
            raise Conflict(f"user {new_name!r} already exists")
        updated = replace(user, name=new_name)
        await self.db.update_user(updated)
        self.users[user_id] = updated
        self.audit.record("user.rename", f"user:{user_id}", old=user.name, new=new_name)
        return Outcome.of(updated, self._users_changed())

    @atomic
    async def update_user_profile(
        self, user_id: int, *, name: str, display_name: str, email: str, profile_pic_url: str
    ) -> Outcome[User]:
        """Refresh what an identity provider says about a user at each login: names change there."""
        user = self.get_user(user_id)
        check_user_name(name)
        if self.user_by_name(name) not in (None, user):
            raise Conflict(f"user {name!r} already exists")
        profile: dict[str, Any] = {
            "name": name,
            "display_name": display_name,
            "email": email,
            "profile_pic_url": profile_pic_url,
        }
        changed = {k: v for k, v in profile.items() if getattr(user, k) != v}
        if not changed:
            return Outcome(user)
        updated = replace(user, **changed)
        await self.db.update_user(updated)
        self.users[user_id] = updated
        self.audit.record("user.update", f"user:{user_id}", **changed)
        return Outcome.of(updated, self._users_changed())

    @atomic
    async def delete_user(self, user_id: int) -> Outcome[None]:
        """Delete a user and, in the same transaction, its preauth keys: a key never outlives its owner."""
        self.get_user(user_id)
        if any(n.user_id == user_id for n in self.nodes.values()):
            raise Conflict(f"user {user_id} still has nodes; delete or move them first")
        await self.db.delete_user(user_id)
        del self.users[user_id]
        self.audit.record("user.delete", f"user:{user_id}")
        for key in [k for k in self.preauth_keys.values() if k.user_id == user_id]:
            del self.preauth_keys[key.id]
            self.audit.record("preauthkey.delete", f"preauthkey:{key.id}", prefix=key.prefix, user_id=user_id)
        return Outcome.of(None, self._users_changed())

    # ---- nodes: lookups ----

    def node_by_node_key(self, node_key: str) -> Node | None:
        node_id = self._by_node_key.get(node_key)
        return None if node_id is None else self.nodes.get(node_id)

    def node_by_machine_key(self, machine_key: str) -> Node | None:
        node_id = self._by_machine_key.get(machine_key)
        return None if node_id is None else self.nodes.get(node_id)

    def get_node(self, node_id: int) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise NotFound(f"node {node_id} not found")
        return node

    def is_online(self, node_id: int) -> bool:
        return self.presence.is_online(node_id)

    @staticmethod
    def is_expired(node: Node) -> bool:
        return node.expiry is not None and node.expiry <= now()

    def may_connect(self, node: Node) -> bool:
        """Whether the node may get maps, send updates and use DERP: its key is current (not expired or logged
        out) and it has an owner, a tag or a user (old versions let deleted users' keys make ownerless nodes).
        """
        return not self.is_expired(node) and (bool(node.tags) or node.user_id in self.users)

    def _with_access(self, node: Node) -> Node:
        """The node's record as it is now; AccessRevoked if it lost access while the caller waited."""
        current = self.get_node(node.id)
        if not self.may_connect(current):
            raise AccessRevoked("node key expired: log in again")
        return current

    def _index(self, node: Node) -> None:
        self.nodes[node.id] = node
        self._by_node_key[node.node_key] = node.id
        self._by_machine_key[node.machine_key] = node.id
        self._given_names.add(node.given_name)
        self._expiry.watch(node.id, node.expiry)

    def _expiry_passed(self, node_id: int, expiry: datetime) -> None:
        """The clock passed a node's expiry: nothing is written, but every viewer must learn of it."""
        node = self.nodes.get(node_id)
        if node is None or node.expiry != expiry:
            return
        audit.actor.set("system")
        self.audit.record("node.key_expired", f"node:{node_id}", expiry=expiry.isoformat())
        self.feed.publish([Change(ChangeKind.NODE_UPDATED, node_id)])

    def _unindex(self, node: Node) -> None:
        self.nodes.pop(node.id, None)
        if self._by_node_key.get(node.node_key) == node.id:
            del self._by_node_key[node.node_key]
        if self._by_machine_key.get(node.machine_key) == node.id:
            del self._by_machine_key[node.machine_key]
        self._given_names.discard(node.given_name)

    def _unique_given_name(self, hostname: str, exclude: Node | None = None) -> str:
        base = dns_label(hostname)
        taken = self._given_names - ({exclude.given_name} if exclude else set())
        if base not in taken:
            return base
        n = 1
        while f"{base[:58]}-{n}" in taken:
            n += 1
        return f"{base[:58]}-{n}"

    async def _replace(self, node: Node, **changes: Any) -> Node:
        """Write a node's changed fields through to the database, then swap the record in memory.

        The changes apply to the node as it is now, not to the (possibly older) record the caller looked up
        before waiting its turn: another mutation may have renamed it or rotated its key meanwhile, or deleted
        it.
        """
        current = self.nodes.get(node.id)
        if current is None:
            raise NotFound(f"node {node.id} not found")
        changes["updated_at"] = now()
        if current.auth_key_id is not None and current.auth_key_id not in self.preauth_keys:
            changes.setdefault("auth_key_id", None)  # its key was deleted: the database nulled the reference
        requested = replace(current, **changes)
        updated = self._approved_by_policy(requested)
        await self.db.update_node(updated)
        self._unindex(current)
        self._index(updated)
        if updated is not requested:
            self._audit_approval(updated)
        return updated

    def _approved_by_policy(self, node: Node) -> Node:
        """The record with the announced routes the policy's autoApprovers cover approved too."""
        routes = self._approvals(node, self.policy.auto_approved_routes(node))
        return node if routes is None else replace(node, approved_routes=routes)

    # ---- nodes: registration ----

    async def register_with_key(
        self,
        key: PreAuthKey,
        *,
        machine_key: str,
        node_key: str,
        hostinfo: dict[str, Any],
        expiry: datetime | None,
    ) -> Node:
        """Register (or re-register) the machine under a validated preauth key (its tags make it tagged)."""
        tags = list(key.tags)
        if not tags and (key.user_id is None or key.user_id not in self.users):
            # Left by an older version that kept a deleted user's keys: it names no owner any more.
            raise AuthFailed("authkey is no longer valid: its user was deleted")
        return await self.register(
            machine_key=machine_key,
            node_key=node_key,
            hostinfo=hostinfo,
            user_id=None if tags else key.user_id,
            tags=tags,
            method="authkey",
            ephemeral=key.ephemeral,
            expiry=expiry,
            key=key,
        )

    @atomic
    async def register(
        self,
        *,
        machine_key: str,
        node_key: str,
        hostinfo: dict[str, Any],
        user_id: int | None,
        tags: list[str],
        method: str,
        ephemeral: bool,
        expiry: datetime | None,
        key: PreAuthKey | None = None,
    ) -> Outcome[Node]:
        """Register a machine as a node, or log a known machine in again keeping its id and addresses.

        Every node has an owner: a user, or its tags. Tagged nodes never expire by `node.expiry` (as in
        Headscale); an operator can still expire one explicitly.
        """
        if user_id is not None:
            self.get_user(user_id)
        elif not tags:
            raise StateError("a node needs an owner: a user or at least one tag")
        expiry = None if tags else expiry
        hostname = str(hostinfo.get("Hostname") or "node")[:255]
        key_id = key.id if key is not None else None
        if key is not None:
            self.check_still_usable(key)
        existing = self.node_by_machine_key(machine_key)
        if existing is not None:
            if self.node_by_node_key(node_key) not in (None, existing):
                raise Conflict("node key already registered to another machine")
            updated = await self._replace(
                existing,
                node_key=node_key,
                hostinfo=keep_netinfo(hostinfo, existing.hostinfo),
                hostname=hostname,
                user_id=user_id,
                tags=tags,
                auth_key_id=key_id,
                ephemeral=ephemeral,
                expiry=expiry,
                register_method=method,
            )
            if key is not None:
                await self._mark_key_used(key)
            self.audit.record(
                "node.register",
                f"node:{updated.id}",
                method=method,
                preauthkey_id=key_id,
                user_id=user_id,
                hostname=hostname,
                reregistration=True,
            )
            return Outcome.of(updated, self._nodes_written([updated]))
        if self.node_by_node_key(node_key) is not None:
            raise Conflict("node key already registered to another machine")
        ipv4, ipv6 = self.ips.allocate()
        stamp = now()
        node = Node(
            id=0,
            machine_key=machine_key,
            node_key=node_key,
            hostname=hostname,
            given_name=self._unique_given_name(hostname),
            user_id=user_id,
            tags=tags,
            ipv4=ipv4,
            ipv6=ipv6,
            hostinfo=hostinfo,
            register_method=method,
            auth_key_id=key_id,
            ephemeral=ephemeral,
            expiry=expiry,
            created_at=stamp,
            updated_at=stamp,
            last_seen=stamp,
        )
        requested, node = node, self._approved_by_policy(node)
        single_use = key if key is not None and not key.reusable else None
        try:
            node.id = await self.db.register_node(node, single_use)
        except Exception:
            self.ips.release([ipv4, ipv6])
            raise
        if single_use is not None:
            self.preauth_keys[single_use.id] = replace(single_use, used=True)
        self._index(node)
        self.audit.record(
            "node.register",
            f"node:{node.id}",
            method=method,
            preauthkey_id=key_id,
            user_id=user_id,
            hostname=hostname,
            ipv4=str(ipv4) if ipv4 else None,
            ipv6=str(ipv6) if ipv6 else None,
        )
        if node is not requested:
            self._audit_approval(node)
        return Outcome.of(node, self._nodes_written([node], ChangeKind.NODE_ADDED))

    async def _mark_key_used(self, key: PreAuthKey) -> None:
        if not key.reusable and not key.used:
            updated = replace(key, used=True)
            await self.db.update_preauth_key(updated)
            self.preauth_keys[key.id] = updated

    @atomic
    async def rotate_node_key(self, node: Node, new_node_key: str, hostinfo: dict[str, Any]) -> Outcome[Node]:
        """OldNodeKey rotation: the machine replaces its node key and keeps everything else."""
        node = self._with_access(node)
        if self.node_by_node_key(new_node_key) not in (None, node):
            raise Conflict("node key already registered to another machine")
        hostinfo = keep_netinfo(hostinfo, node.hostinfo) if hostinfo else node.hostinfo
        updated = await self._replace(node, node_key=new_node_key, hostinfo=hostinfo)
        self.audit.record("node.rotate_key", f"node:{node.id}")
        return Outcome.of(updated, self._nodes_written([updated]))

    @atomic
    async def logout(self, node: Node) -> Outcome[Node | None]:
        """A client logging out: ephemeral nodes are deleted, others expire now. Returns what remains."""
        if node.ephemeral:
            await self.delete_node(node.id)
            return Outcome(None)
        return Outcome(await self.set_expiry(node.id, now()))

    # ---- nodes: updates ----

    @atomic
    async def set_expiry(self, node_id: int, expiry: datetime | None) -> Outcome[Node]:
        updated = await self._replace(self.get_node(node_id), expiry=expiry)
        self.audit.record("node.expire", f"node:{node_id}", expiry=expiry.isoformat() if expiry else None)
        return Outcome.of(updated, self._nodes_written([updated]))

    @atomic
    async def rename_node(self, node_id: int, new_name: str) -> Outcome[Node]:
        node = self.get_node(node_id)
        label = dns_label(new_name)
        if label != new_name.lower():
            raise StateError(f"invalid node name {new_name!r}: use letters, digits and '-' (at most 63)")
        if label in self._given_names and label != node.given_name:
            raise Conflict(f"node name {label!r} is already in use")
        updated = await self._replace(node, given_name=label)
        self.audit.record("node.rename", f"node:{node_id}", old=node.given_name, new=label)
        return Outcome.of(updated, self._nodes_written([updated]))

    @atomic
    async def set_tags(self, node_id: int, tags: Iterable[str]) -> Outcome[Node]:
        node = self.get_node(node_id)
        tag_list = validate_tags(tags)
        if not tag_list and node.user_id is None:
            raise StateError("a tagged node keeps at least one tag: it has no user to own it otherwise")
        updated = await self._replace(node, tags=tag_list)
        self.audit.record("node.tag", f"node:{node_id}", tags=updated.tags)
        return Outcome.of(updated, self._nodes_written([updated]))

    @atomic
    async def move_node(self, node_id: int, user_id: int) -> Outcome[Node]:
        node = self.get_node(node_id)
        self.get_user(user_id)
        if node.tags:
            raise StateError("tagged nodes are owned by their tags and cannot be moved to a user")
        updated = await self._replace(node, user_id=user_id)
        self.audit.record("node.move", f"node:{node_id}", from_user=node.user_id, to_user=user_id)
        return Outcome.of(updated, self._nodes_written([updated]))

    @atomic
    async def set_approved_routes(self, node_id: int, routes: list[str]) -> Outcome[Node]:
        """The operator's approval; routes the policy's autoApprovers cover stay approved whatever it says."""
        updated = await self._replace(self.get_node(node_id), approved_routes=sorted(set(routes)))
        self.audit.record("node.approve_routes", f"node:{node_id}", routes=updated.approved_routes)
        return Outcome.of(updated, self._nodes_written([updated]))

    @atomic
    async def update_from_map_request(
        self,
        node: Node,
        *,
        disco_key: str | None,
        endpoints: list[str] | None,
        hostinfo: dict[str, Any] | None,
    ) -> Outcome[Node]:
        """Apply what a MapRequest reports: endpoint, DERP and disco changes are patches, Hostinfo is not.

        Refused (AccessRevoked) for a node that has lost access, judged on its record as it is now: it may
        have expired while this request waited its turn.
        """
        node = self._with_access(node)
        changes: dict[str, Any] = {}
        if disco_key and disco_key != node.disco_key:
            changes["disco_key"] = disco_key
        if endpoints is not None and endpoints != node.endpoints:
            changes["endpoints"] = endpoints
        full = False
        if hostinfo:
            hostinfo = keep_netinfo(hostinfo, node.hostinfo)
        if hostinfo and hostinfo != node.hostinfo:
            changes["hostinfo"] = hostinfo
            # A change confined to NetInfo (home DERP, latencies) is a patch; anything else peers see in full.
            full = without_netinfo(hostinfo) != without_netinfo(node.hostinfo)
            hostname = str(hostinfo.get("Hostname") or node.hostname)[:255]
            if hostname != node.hostname:
                changes["hostname"] = hostname
        if not changes:
            return Outcome(node)
        updated = await self._replace(node, **changes)
        kind = ChangeKind.NODE_UPDATED if full else ChangeKind.NODE_PATCH
        return Outcome.of(updated, self._nodes_written([updated], kind))

    @atomic
    async def backfill_ips(self) -> Outcome[list[str]]:
        """Give every node an address in each configured family it lacks; returns what was done, per node."""
        done: list[str] = []
        written: list[Node] = []
        for node in sorted(self.nodes.values(), key=lambda n: n.id):
            missing: dict[str, Any] = {}
            if node.ipv4 is None and self.ips.v4 is not None:
                missing["ipv4"] = self.ips.v4.allocate()
            if node.ipv6 is None and self.ips.v6 is not None:
                missing["ipv6"] = self.ips.v6.allocate()
            if not missing:
                continue
            try:
                written.append(await self._replace(node, **missing))
            except Exception:
                self.ips.release(missing.values())
                self.feed.publish(self._nodes_written(written))  # those written stand
                raise
            added = ", ".join(str(a) for a in missing.values())
            done.append(f"node {node.id} ({node.given_name}): added {added}")
            self.audit.record("node.backfill_ips", f"node:{node.id}", added=added)
        return Outcome.of(done, self._nodes_written(written))

    @atomic
    async def delete_node(self, node_id: int) -> Outcome[None]:
        node = self.get_node(node_id)
        await self.db.delete_node(node_id)
        self._unindex(node)
        self.audit.record("node.delete", f"node:{node_id}", hostname=node.hostname)
        self.ips.release([node.ipv4, node.ipv6])
        self.presence.forget(node_id)
        self._expiry.stop(node_id)
        timer = self._ephemeral_timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        changes = [Change(ChangeKind.NODE_REMOVED, node_id)]
        affected = self.policy.node_removed(node_id)
        if affected:
            changes.append(Change(ChangeKind.POLICY_NODES, node_ids=frozenset(affected)))
        return Outcome.of(None, changes)

    # ---- presence ----

    def connected(self, node_id: int) -> None:
        """A map stream for the node opened."""
        came_online = self.presence.opened(node_id)
        timer = self._ephemeral_timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        if came_online:
            self.feed.publish(self._presence_changed(node_id, online=True))

    def _presence_changed(self, node_id: int, *, online: bool) -> list[Change]:
        """The node came online or went offline; then the routers whose primary routes that moved."""
        moved = self.policy.presence_changed(node_id)
        return [Change(ChangeKind.NODE_ONLINE, node_id, online=online)] + [
            Change(ChangeKind.NODE_UPDATED, router_id) for router_id in sorted(moved)
        ]

    @atomic
    async def disconnected(self, node_id: int) -> Outcome[None]:
        """A map stream for the node closed; the last one closing takes the node offline."""
        went_offline = self.presence.closed(node_id)
        node = self.nodes.get(node_id)
        if not went_offline or node is None:
            return Outcome(None)
        stamp = now()
        await self.db.update_node_fields(node_id, last_seen=stamp)
        node.last_seen = stamp
        if node.ephemeral:
            self._schedule_ephemeral_cleanup(node_id)
        return Outcome.of(None, self._presence_changed(node_id, online=False))

    def _schedule_ephemeral_cleanup(self, node_id: int) -> None:
        loop = asyncio.get_running_loop()
        delay = self.ephemeral_timeout.total_seconds()
        self._ephemeral_timers[node_id] = loop.call_later(
            delay, lambda: loop.create_task(self._ephemeral_expired(node_id))
        )

    async def _ephemeral_expired(self, node_id: int) -> None:
        audit.actor.set("system")
        self._ephemeral_timers.pop(node_id, None)
        if node_id in self.nodes and not self.is_online(node_id):
            log.info("deleting ephemeral node %d after %s offline", node_id, self.ephemeral_timeout)
            await self.delete_node(node_id)

    async def close(self) -> None:
        """Stop timers and wait for mutations still in flight, so nothing is half-written at shutdown."""
        for timer in self._ephemeral_timers.values():
            timer.cancel()
        self._ephemeral_timers.clear()
        self._expiry.close()
        await self.wait_for_mutations()
