"""The state's facade: the one owner of users, credentials and nodes, and the mutations that change them.

The state is made of components, each with one job: `Users`, `NodeRegistry` (records and their indexes),
`Credentials` (preauth and API keys), `Presence` (who is online), the expiry and ephemeral timers. The store
holds them and runs the mutations that cross them. A mutation validates, applies the policy's consequences
(state/consequences.py: routes its autoApprovers cover are approved in the same write), writes through to the
database, puts the new frozen records in the components, tells the policy engine, and returns the changes
it caused; the change feed (state/feed.py) delivers them. Reads are lookups in the components; the mappings
handed out are read-only. Mutations run one at a time on the event loop, and each awaits the database
*before* touching memory, so a failed write leaves memory as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pyheadscale import audit
from pyheadscale.audit import AuditLog
from pyheadscale.db.database import Database
from pyheadscale.state.changes import Change, ChangeKind
from pyheadscale.state.consequences import PolicyCandidate, PolicyConsequences, PolicyEffects
from pyheadscale.state.credentials import Credentials
from pyheadscale.state.ephemeral import EphemeralReaper
from pyheadscale.state.errors import AccessRevoked, AuthFailed, Conflict, StateError
from pyheadscale.state.expiry import ExpiryTimers
from pyheadscale.state.hostinfo import keep_netinfo, without_netinfo
from pyheadscale.state.ipalloc import IPAllocator
from pyheadscale.state.models import ApiKey, Node, PreAuthKey, User
from pyheadscale.state.mutations import MutationGuard, Outcome, atomic
from pyheadscale.state.names import dns_label, now, validate_tags
from pyheadscale.state.node_registry import NodeRegistry
from pyheadscale.state.presence import Presence
from pyheadscale.state.users import Users


class Store:
    def __init__(self, db: Database, ips: IPAllocator, audit_log: AuditLog | None = None) -> None:
        self.db = db
        self.ips = ips
        self._audit = audit_log or AuditLog(None)
        self.mutations = MutationGuard()
        self.feed = self.mutations.feed
        self.effects = PolicyEffects(self.audit)
        self.user_records = Users(db, self.mutations, self.audit, self.effects)
        self.registry = NodeRegistry()
        self.credentials = Credentials(db, self.mutations, self.user_records, self.audit)
        self.presence = Presence()
        self._expiry = ExpiryTimers(self._expiry_passed)
        self._ephemeral = EphemeralReaper(self._delete_if_offline, timedelta(minutes=30))
        # Read-only views of the records, by id.
        self.users: Mapping[int, User] = self.user_records.by_id
        self.nodes: Mapping[int, Node] = self.registry.by_id
        self.preauth_keys: Mapping[int, PreAuthKey] = self.credentials.preauth_keys
        self.api_keys: Mapping[int, ApiKey] = self.credentials.api_keys

    @property
    def audit(self) -> AuditLog:
        """Shared by every component, so set once, at construction."""
        return self._audit

    @property
    def ephemeral_timeout(self) -> timedelta:
        return self._ephemeral.timeout

    @ephemeral_timeout.setter
    def ephemeral_timeout(self, timeout: timedelta) -> None:
        self._ephemeral.timeout = timeout

    async def load(self) -> None:
        snapshot = await self.db.load()
        for user in snapshot.users:
            self.user_records.put(user)
        self.credentials.load(snapshot.preauth_keys, await self.db.load_api_keys())
        for node in snapshot.nodes:
            self._put(node)
            self.ips.hold([node.ipv4, node.ipv6])
            if node.ephemeral:
                self._ephemeral.went_offline(node.id)

    async def close(self) -> None:
        """Stop timers and wait for mutations still in flight, so nothing is half-written at shutdown."""
        self._ephemeral.close()
        self._expiry.close()
        await self.wait_for_mutations()

    async def wait_for_mutations(self) -> None:
        await self.mutations.wait_for_mutations()

    # ---- the policy's consequences ----

    def attach_policy(self, policy: PolicyConsequences) -> None:
        """From now on every mutation applies `policy`'s consequences (it was compiled from this store)."""
        self.effects.policy = policy

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
                routes = self.effects.approvals(node, candidate.auto_approved_routes(node))
                if routes is not None:
                    written.append(await self._replace(node, approved_routes=routes))
                    self.effects.audit_approval(written[-1])
        except BaseException:
            self.feed.publish(self.effects.nodes_written(written))
            raise
        candidate.install()
        for node in written:
            self.effects.policy.node_changed(node)
        approved = [Change(ChangeKind.NODE_UPDATED, node.id) for node in written]
        return Outcome.of(None, [Change(ChangeKind.POLICY), *approved])

    # ---- users ----

    def user_by_name(self, name: str) -> User | None:
        return self.user_records.by_name(name)

    def user_by_provider_id(self, provider_id: str) -> User | None:
        return self.user_records.by_provider_id(provider_id)

    def get_user(self, user_id: int) -> User:
        return self.user_records.get(user_id)

    def resolve_user(self, ref: str | int) -> User:
        return self.user_records.resolve(ref)

    async def create_user(
        self,
        name: str,
        display_name: str = "",
        email: str = "",
        *,
        provider: str = "",
        provider_id: str = "",
        profile_pic_url: str = "",
    ) -> User:
        return await self.user_records.create(
            name,
            display_name,
            email,
            provider=provider,
            provider_id=provider_id,
            profile_pic_url=profile_pic_url,
        )

    async def rename_user(self, user_id: int, new_name: str) -> User:
        return await self.user_records.rename(user_id, new_name)

    async def update_user_profile(
        self, user_id: int, *, name: str, display_name: str, email: str, profile_pic_url: str
    ) -> User:
        return await self.user_records.update_profile(
            user_id, name=name, display_name=display_name, email=email, profile_pic_url=profile_pic_url
        )

    @atomic
    async def delete_user(self, user_id: int) -> Outcome[None]:
        """Delete a user and, in the same transaction, its preauth keys: a key never outlives its owner."""
        self.get_user(user_id)
        if any(n.user_id == user_id for n in self.nodes.values()):
            raise Conflict(f"user {user_id} still has nodes; delete or move them first")
        await self.db.delete_user(user_id)
        self.user_records.remove(user_id)
        self.audit.record("user.delete", f"user:{user_id}")
        for key in self.credentials.forget_keys_of(user_id):
            self.audit.record("preauthkey.delete", f"preauthkey:{key.id}", prefix=key.prefix, user_id=user_id)
        return Outcome.of(None, self.effects.users_changed())

    # ---- credentials (state/credentials.py) ----

    async def create_preauth_key(
        self,
        user_id: int | None,
        *,
        reusable: bool = False,
        ephemeral: bool = False,
        tags: Iterable[str] = (),
        expiration: datetime | None = None,
    ) -> tuple[PreAuthKey, str]:
        return await self.credentials.create_preauth_key(
            user_id, reusable=reusable, ephemeral=ephemeral, tags=tags, expiration=expiration
        )

    async def expire_preauth_key(self, key_id: int) -> PreAuthKey:
        return await self.credentials.expire_preauth_key(key_id)

    async def delete_preauth_key(self, key_id: int) -> None:
        await self.credentials.delete_preauth_key(key_id)

    def find_preauth_key(self, text: str) -> PreAuthKey:
        return self.credentials.find_preauth_key(text)

    async def verify_preauth_key(self, text: str) -> PreAuthKey:
        return await self.credentials.verify_preauth_key(text)

    def check_still_usable(self, key: PreAuthKey) -> None:
        self.credentials.check_still_usable(key)

    async def create_api_key(self, expiration: datetime | None) -> tuple[ApiKey, str]:
        return await self.credentials.create_api_key(expiration)

    def get_api_key(self, key_id: int) -> ApiKey:
        return self.credentials.get_api_key(key_id)

    def api_key_by_prefix(self, prefix: str) -> ApiKey:
        return self.credentials.api_key_by_prefix(prefix)

    def authenticate_api_key(self, text: str) -> ApiKey | None:
        return self.credentials.authenticate_api_key(text)

    async def verify_api_key(self, text: str) -> ApiKey | None:
        return await self.credentials.verify_api_key(text)

    async def expire_api_key(self, key_id: int) -> ApiKey:
        return await self.credentials.expire_api_key(key_id)

    async def delete_api_key(self, key_id: int) -> None:
        await self.credentials.delete_api_key(key_id)

    # ---- nodes: lookups ----

    def node_by_node_key(self, node_key: str) -> Node | None:
        return self.registry.by_node_key(node_key)

    def node_by_machine_key(self, machine_key: str) -> Node | None:
        return self.registry.by_machine_key(machine_key)

    def get_node(self, node_id: int) -> Node:
        return self.registry.get(node_id)

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

    # ---- nodes: records ----

    def _put(self, node: Node) -> None:
        self.registry.put(node)
        self._expiry.watch(node.id, node.expiry)

    def _expiry_passed(self, node_id: int, expiry: datetime) -> None:
        """The clock passed a node's expiry: nothing is written, but every viewer must learn of it."""
        node = self.nodes.get(node_id)
        if node is None or node.expiry != expiry:
            return
        audit.actor.set("system")
        self.audit.record("node.key_expired", f"node:{node_id}", expiry=expiry.isoformat())
        self.feed.publish([Change(ChangeKind.NODE_UPDATED, node_id)])

    async def _replace(self, node: Node, **changes: Any) -> Node:
        """Write a node's changed fields through to the database, then swap the record in memory.

        The changes apply to the node as it is now, not to the (possibly older) record the caller looked up
        before waiting its turn: another mutation may have renamed it or rotated its key meanwhile, or deleted
        it. Routes the policy auto-approves are approved in the same write.
        """
        current = self.get_node(node.id)
        changes["updated_at"] = now()
        if current.auth_key_id is not None and current.auth_key_id not in self.preauth_keys:
            changes.setdefault("auth_key_id", None)  # its key was deleted: the database nulled the reference
        requested = replace(current, **changes)
        updated = self.effects.approved(requested)
        await self.db.update_node(updated)
        self._put(updated)
        if updated is not requested:
            self.effects.audit_approval(updated)
        return updated

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
            self.credentials.check_still_usable(key)
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
                await self.credentials.mark_used(key)
            self.audit.record(
                "node.register",
                f"node:{updated.id}",
                method=method,
                preauthkey_id=key_id,
                user_id=user_id,
                hostname=hostname,
                reregistration=True,
            )
            return Outcome.of(updated, self.effects.nodes_written([updated]))
        if self.node_by_node_key(node_key) is not None:
            raise Conflict("node key already registered to another machine")
        ipv4, ipv6 = self.ips.allocate()
        stamp = now()
        node = Node(
            id=0,
            machine_key=machine_key,
            node_key=node_key,
            hostname=hostname,
            given_name=self.registry.unique_given_name(hostname),
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
        approved = self.effects.approved(node)
        auto_approved, node = approved is not node, approved
        single_use = key if key is not None and not key.reusable else None
        try:
            node = replace(node, id=await self.db.register_node(node, single_use))
        except Exception:
            self.ips.release([ipv4, ipv6])
            raise
        if single_use is not None:
            self.credentials.used(single_use)
        self._put(node)
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
        if auto_approved:
            self.effects.audit_approval(node)
        return Outcome.of(node, self.effects.nodes_written([node], ChangeKind.NODE_ADDED))

    @atomic
    async def rotate_node_key(self, node: Node, new_node_key: str, hostinfo: dict[str, Any]) -> Outcome[Node]:
        """OldNodeKey rotation: the machine replaces its node key and keeps everything else."""
        node = self._with_access(node)
        if self.node_by_node_key(new_node_key) not in (None, node):
            raise Conflict("node key already registered to another machine")
        hostinfo = keep_netinfo(hostinfo, node.hostinfo) if hostinfo else node.hostinfo
        updated = await self._replace(node, node_key=new_node_key, hostinfo=hostinfo)
        self.audit.record("node.rotate_key", f"node:{node.id}")
        return Outcome.of(updated, self.effects.nodes_written([updated]))

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
        return Outcome.of(updated, self.effects.nodes_written([updated]))

    @atomic
    async def rename_node(self, node_id: int, new_name: str) -> Outcome[Node]:
        node = self.get_node(node_id)
        label = dns_label(new_name)
        if label != new_name.lower():
            raise StateError(f"invalid node name {new_name!r}: use letters, digits and '-' (at most 63)")
        if self.registry.name_taken(label, node):
            raise Conflict(f"node name {label!r} is already in use")
        updated = await self._replace(node, given_name=label)
        self.audit.record("node.rename", f"node:{node_id}", old=node.given_name, new=label)
        return Outcome.of(updated, self.effects.nodes_written([updated]))

    @atomic
    async def set_tags(self, node_id: int, tags: Iterable[str]) -> Outcome[Node]:
        node = self.get_node(node_id)
        tag_list = validate_tags(tags)
        if not tag_list and node.user_id is None:
            raise StateError("a tagged node keeps at least one tag: it has no user to own it otherwise")
        updated = await self._replace(node, tags=tag_list)
        self.audit.record("node.tag", f"node:{node_id}", tags=updated.tags)
        return Outcome.of(updated, self.effects.nodes_written([updated]))

    @atomic
    async def move_node(self, node_id: int, user_id: int) -> Outcome[Node]:
        node = self.get_node(node_id)
        self.get_user(user_id)
        if node.tags:
            raise StateError("tagged nodes are owned by their tags and cannot be moved to a user")
        updated = await self._replace(node, user_id=user_id)
        self.audit.record("node.move", f"node:{node_id}", from_user=node.user_id, to_user=user_id)
        return Outcome.of(updated, self.effects.nodes_written([updated]))

    @atomic
    async def set_approved_routes(self, node_id: int, routes: list[str]) -> Outcome[Node]:
        """The operator's approval; routes the policy's autoApprovers cover stay approved whatever it says."""
        updated = await self._replace(self.get_node(node_id), approved_routes=sorted(set(routes)))
        self.audit.record("node.approve_routes", f"node:{node_id}", routes=updated.approved_routes)
        return Outcome.of(updated, self.effects.nodes_written([updated]))

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
        return Outcome.of(updated, self.effects.nodes_written([updated], kind))

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
                self.feed.publish(self.effects.nodes_written(written))  # those written stand
                raise
            added = ", ".join(str(a) for a in missing.values())
            done.append(f"node {node.id} ({node.given_name}): added {added}")
            self.audit.record("node.backfill_ips", f"node:{node.id}", added=added)
        return Outcome.of(done, self.effects.nodes_written(written))

    @atomic
    async def delete_node(self, node_id: int) -> Outcome[None]:
        node = self.get_node(node_id)
        await self.db.delete_node(node_id)
        self.registry.remove(node_id)
        self.audit.record("node.delete", f"node:{node_id}", hostname=node.hostname)
        self.ips.release([node.ipv4, node.ipv6])
        self.presence.forget(node_id)
        self._expiry.stop(node_id)
        self._ephemeral.stop(node_id)
        return Outcome.of(None, self.effects.node_removed(node_id))

    # ---- presence ----

    def connected(self, node_id: int) -> None:
        """A map stream for the node opened."""
        self._ephemeral.stop(node_id)
        if self.presence.opened(node_id):
            self.feed.publish(self.effects.presence_changed(node_id))

    @atomic
    async def disconnected(self, node_id: int) -> Outcome[None]:
        """A map stream for the node closed; the last one closing takes the node offline."""
        went_offline = self.presence.closed(node_id)
        node = self.nodes.get(node_id)
        if not went_offline or node is None:
            return Outcome(None)
        stamp = now()
        await self.db.update_node_fields(node_id, last_seen=stamp)
        # A new record, not the old one changed: readers may hold (and cache by) the old one.
        self.registry.put(replace(self.get_node(node_id), last_seen=stamp))
        if node.ephemeral:
            self._ephemeral.went_offline(node_id)
        return Outcome.of(None, self.effects.presence_changed(node_id))

    @atomic
    async def _delete_if_offline(self, node_id: int) -> Outcome[bool]:
        """An ephemeral node's time offline ran out: delete it, unless it came back or is gone already."""
        if node_id not in self.nodes or self.is_online(node_id):
            return Outcome(False)
        await self.delete_node(node_id)
        return Outcome(True)
