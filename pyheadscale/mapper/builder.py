"""Building MapResponses for one node: the full map and the deltas that follow it.

The shapes are pyheadscale.tailcfg's; what a client does with each field of a delta is documented there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple, cast
from urllib.parse import urlsplit

from pyheadscale.config import Config
from pyheadscale.mapper.policy_view import NetworkPolicy
from pyheadscale.policy.types import PeerView
from pyheadscale.state.models import Node
from pyheadscale.state.store import Store
from pyheadscale.tailcfg import node as tailnode
from pyheadscale.tailcfg.derp_map import DERPMap
from pyheadscale.tailcfg.dns import DNSConfig, DNSRecord, Resolver
from pyheadscale.tailcfg.frame import SharedEntry
from pyheadscale.tailcfg.gotime import go_time
from pyheadscale.tailcfg.map_response import CAPVER_PACKET_FILTERS, CLEAR_FILTERS, MapResponse
from pyheadscale.tailcfg.node import CAPVER_HOME_DERP, NodeCapMap, PeerChange, UserProfile

BASELINE_CAPS = ("https://tailscale.com/cap/is-admin", "https://tailscale.com/cap/ssh")
DEFAULT_AUTO_UPDATE_CAP = "default-auto-update"
# Taildrop: a client offers and accepts files only when its own node carries this (taildrop.enabled).
FILE_SHARING_CAP = "https://tailscale.com/cap/file-sharing"

MessageKind = Literal["full", "delta", "revoked", "keepalive"]
"""What a message is, as metrics count it: a full map, a delta, the last message to a node that lost access,
or a keep-alive."""


class MapMessage(NamedTuple):
    """A MapResponse ready to send, and which kind of message it is."""

    kind: MessageKind
    response: MapResponse


@dataclass(slots=True)
class MapContext:
    """Everything a map is made from, besides the node itself."""

    config: Config
    store: Store
    policy: NetworkPolicy
    derp_map: DERPMap
    """As pyheadscale.derpmap merges it."""


def _dns_config(config: Config, extra_records: list[dict[str, str]] | None = None) -> DNSConfig:
    """The DNSConfig every node gets; `extra_records` (from dns.extra_records_path) replace the config's."""
    dns = config.dns
    resolvers = [Resolver(Addr=a) for a in dns.nameservers.global_]
    out: DNSConfig = {"Proxied": dns.magic_dns}
    if dns.override_local_dns:
        out["Resolvers"] = resolvers
    elif resolvers:
        out["FallbackResolvers"] = resolvers
    if dns.nameservers.split:
        out["Routes"] = {d: [Resolver(Addr=a) for a in addrs] for d, addrs in dns.nameservers.split.items()}
    domains = ([dns.base_domain] if dns.base_domain else []) + list(dns.search_domains)
    if domains:
        out["Domains"] = domains
    records = dns.extra_records if extra_records is None else extra_records
    if records:
        # tailcfg.DNSRecord objects as the operator wrote them (extra_records.py checks the file's).
        out["ExtraRecords"] = cast(list[DNSRecord], records)
    return out


@dataclass(slots=True)
class _PeerRendering:
    """One peer record at one capability version: the fields every recipient shares, the last entry, and
    the view and presence it was made for."""

    base: tailnode.Node
    entry: tailnode.Node | None = None
    view: PeerView | None = None
    online: bool = False
    expired: bool = False


class MapBuilder:
    def __init__(self, ctx: MapContext) -> None:
        self.ctx = ctx
        self._dns = _dns_config(ctx.config)
        # node id -> (the record the entries were built from, capver -> that peer's rendering)
        self._peer_bases: dict[int, tuple[Node, dict[int, _PeerRendering]]] = {}
        # node id -> (the record and presence its patch was made from, the patch)
        self._patches: dict[int, tuple[Node, bool, PeerChange]] = {}

    def set_extra_records(self, records: list[dict[str, str]]) -> None:
        """New records from dns.extra_records_path: later maps carry them (push with a DNS change)."""
        self._dns = _dns_config(self.ctx.config, records)

    def fqdn(self, node: Node) -> str:
        base = self.ctx.config.base_domain
        return f"{node.given_name}.{base}." if base else f"{node.given_name}."

    def user_profile(self, node: Node) -> UserProfile:
        if node.tags or node.user_id is None:
            return tailnode.user_profile(tailnode.TAGGED_DEVICES_USER_ID, "tagged-devices", "Tagged Devices")
        user = self.ctx.store.users.get(node.user_id)
        if user is None:
            return tailnode.user_profile(node.user_id, str(node.user_id), str(node.user_id))
        login = user.email or user.name
        return tailnode.user_profile(user.id, login, user.display_name or login, user.profile_pic_url)

    def forget(self, node_id: int) -> None:
        """Drop what is cached for a removed node."""
        self._peer_bases.pop(node_id, None)
        self._patches.pop(node_id, None)

    def _peer_rendering(self, node: Node, capver: int) -> _PeerRendering:
        """`node`'s rendering as a peer: its recipient-independent fields, and the last entry made from them.

        A full map holds every peer and a join reaches every peer, so each node is rendered for many
        recipients; rendering it once per record and capability version keeps a full map at a dict copy per
        peer. The store replaces a node's record on every change, so an entry is current while it was built
        from the record the store holds now.
        """
        entry = self._peer_bases.get(node.id)
        if entry is None or entry[0] is not node:
            entry = self._peer_bases[node.id] = (node, {})
        rendering = entry[1].get(capver)
        if rendering is None:
            rendering = entry[1][capver] = _PeerRendering(self._render(node, capver, self_view=False))
        return rendering

    def tail_node(
        self, node: Node, peer: PeerView | None, capver: int, *, self_view: bool = False
    ) -> tailnode.Node:
        """A node as tailcfg.Node, as seen by a peer (`peer` gives its routes) or by itself.

        A peer's entry is shared by every recipient with the same view of it (routes, presence, expiry): in
        a restart storm each full map would otherwise copy and fill one dict per peer, N times per peer. It
        is read-only for callers; anything that differs makes a new one.
        """
        if self_view:
            return self._render(node, capver, self_view=True)
        assert peer is not None
        store = self.ctx.store
        rendering = self._peer_rendering(node, capver)
        expired = store.is_expired(node)
        online = store.presence.is_online(node.id)
        last = rendering.entry
        if last is not None and rendering.online is online and rendering.expired is expired:
            # The policy engine shares a view between the recipients that see a peer alike.
            if rendering.view is peer:
                return last
            if last["AllowedIPs"] == peer.allowed_ips and last["PrimaryRoutes"] == peer.primary_routes:
                rendering.view = peer
                return last
        # Encoded once, however many messages carry it (tailcfg.frame).
        out = cast(tailnode.Node, SharedEntry(rendering.base))
        out["AllowedIPs"] = peer.allowed_ips
        out["PrimaryRoutes"] = peer.primary_routes
        out["Online"] = online
        out["MachineAuthorized"] = not expired
        out["Expired"] = expired
        out["CapMap"] = {}
        if not online and node.last_seen is not None:
            out["LastSeen"] = go_time(node.last_seen)
        rendering.entry, rendering.view, rendering.online, rendering.expired = out, peer, online, expired
        return out

    def _render(self, node: Node, capver: int, *, self_view: bool) -> tailnode.Node:
        """Every field of tailcfg.Node; for peers, `tail_node` sets the per-recipient and presence ones."""
        store = self.ctx.store
        expired = store.is_expired(node)
        online = store.is_online(node.id)
        addresses = node.addresses()
        allowed = addresses if self_view else []
        cap_map: NodeCapMap = {cap: [] for cap in BASELINE_CAPS} if self_view else {}
        if self_view and self.ctx.config.taildrop.enabled:
            cap_map[FILE_SHARING_CAP] = []
        if self_view:
            # auto_update.enabled: the tailnet's default for clients' auto-update, always sent (a JSON bool).
            cap_map[DEFAULT_AUTO_UPDATE_CAP] = [self.ctx.config.auto_update.enabled]
            cap_map.update(self.ctx.policy.cap_map(node.id))
        out: tailnode.Node = {
            "ID": node.id,
            "StableID": str(node.id),
            "Name": self.fqdn(node),
            "User": self.user_profile(node)["ID"],
            "Key": node.node_key,
            "KeyExpiry": go_time(node.expiry),
            "Machine": node.machine_key,
            "DiscoKey": node.disco_key or tailnode.ZERO_DISCO_KEY,
            "Addresses": addresses,
            "AllowedIPs": allowed,
            "Endpoints": node.endpoints,
            "HomeDERP": node.home_derp,
            "Hostinfo": node.hostinfo,
            "Created": go_time(node.created_at),
            "Cap": capver,
            "Tags": node.tags,
            "PrimaryRoutes": [],
            "Online": online,
            "MachineAuthorized": not expired,
            "Expired": expired,
            "CapMap": cap_map,
        }
        if capver < CAPVER_HOME_DERP and node.home_derp:
            out["DERP"] = f"127.3.3.40:{node.home_derp}"
        return out

    def policy_fields(self, node: Node, capver: int) -> MapResponse:
        """The node's packet filter and SSH policy, as a full map carries them and a delta may."""
        rules = self.ctx.policy.filter_rules(node.id)
        fields: MapResponse = (
            {"PacketFilters": {"base": rules}} if capver >= CAPVER_PACKET_FILTERS else {"PacketFilter": rules}
        )
        fields["SSHPolicy"] = self.ctx.policy.ssh_policy(node.id) or {"rules": []}
        return fields

    def full(self, node: Node, capver: int) -> tuple[MapResponse, set[int]]:
        """The full map for `node`, and the peer ids it contains."""
        nodes = self.ctx.store.nodes
        peers = self.ctx.policy.peers(node.id)
        own = self.user_profile(node)
        profiles = {own["ID"]: own}
        # The peers' owners: one profile per user, however many of the peers each owns.
        owners: set[int | None] = {None if node.tags else node.user_id}
        peer_nodes = []
        for pid in sorted(peers):
            peer = nodes.get(pid)
            if peer is None:
                continue
            peer_nodes.append(self.tail_node(peer, peers[pid], capver))
            owner = None if peer.tags else peer.user_id
            if owner not in owners:
                owners.add(owner)
                profile = self.user_profile(peer)
                profiles.setdefault(profile["ID"], profile)
        response: MapResponse = {
            "KeepAlive": False,
            "Node": self.tail_node(node, None, capver, self_view=True),
            "DERPMap": self.ctx.derp_map,
            "Peers": peer_nodes,
            "DNSConfig": self._dns,
            "Domain": self.domain,
            "CollectServices": False,
            "UserProfiles": [profiles[k] for k in sorted(profiles)],
            "ControlTime": go_time(datetime.now(UTC)),
            "Debug": {"DisableLogTail": True},
        }
        response.update(self.policy_fields(node, capver))
        return response, set(peers)

    @property
    def domain(self) -> str:
        return urlsplit(self.ctx.config.server_url).hostname or self.ctx.config.base_domain

    def peers_changed(self, node: Node, peer_ids: Iterable[int], capver: int) -> MapResponse:
        """The changed peers `node` may still see, in full. Costs O(changed peers), not O(node's peers)."""
        store, policy = self.ctx.store, self.ctx.policy
        changed = []
        for pid in sorted(peer_ids):
            view = policy.peer_view(node.id, pid) if pid in store.nodes else None
            if view is not None:
                changed.append(self.tail_node(store.nodes[pid], view, capver))
        profiles = {}
        for pid in peer_ids:
            if pid in store.nodes:
                profile = self.user_profile(store.nodes[pid])
                profiles[profile["ID"]] = profile
        return {"PeersChanged": changed, "UserProfiles": list(profiles.values())}

    def peer_patch(self, peer: Node) -> PeerChange:
        """Cheap changes of a peer: endpoints, home DERP, disco key, presence.

        The same for every recipient, and a reconnect sends it to every peer: made and encoded once per
        record and presence (the store replaces a node's record on every change).
        """
        online = self.ctx.store.is_online(peer.id)
        last = self._patches.get(peer.id)
        if last is not None and last[0] is peer and last[1] is online:
            return last[2]
        patch = cast(PeerChange, SharedEntry(self._patch(peer, online)))
        self._patches[peer.id] = (peer, online, patch)
        return patch

    @staticmethod
    def _patch(peer: Node, online: bool) -> PeerChange:
        patch: PeerChange = {
            "NodeID": peer.id,
            "DERPRegion": peer.home_derp,
            "Endpoints": peer.endpoints,
            "Online": online,
        }
        if peer.disco_key:
            patch["DiscoKey"] = peer.disco_key
        if not online and peer.last_seen is not None:
            patch["LastSeen"] = go_time(peer.last_seen)
        return patch

    def revoked(self, node: Node, capver: int) -> MapResponse:
        """All a node that lost access gets: itself (Expired), no peers, a filter admitting nothing.

        Nothing about anyone else (peers, DNS, the DERP map, user profiles but its own) is in it.
        """
        profile = self.user_profile(node)
        itself = self.tail_node(node, None, capver, self_view=True)
        # Expired, or owned by nobody (left so by an older version): either way it must log in again.
        itself["Expired"], itself["MachineAuthorized"] = True, False
        response: MapResponse = {
            "KeepAlive": False,
            "Node": itself,
            "Peers": [],
            "UserProfiles": [profile],
            "ControlTime": go_time(datetime.now(UTC)),
            "Debug": {"DisableLogTail": True},
            "SSHPolicy": {"rules": []},
        }
        if capver >= CAPVER_PACKET_FILTERS:
            response["PacketFilters"] = {CLEAR_FILTERS: None}
        else:
            response["PacketFilter"] = []
        return response
