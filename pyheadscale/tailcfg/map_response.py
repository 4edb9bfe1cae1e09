"""tailcfg.MapResponse: one message of a map stream, and how a client applies it.

A stream opens with a full map (Node, Peers, DERPMap, DNSConfig, the policy) and continues with deltas that
hold only what changed. Almost every field is "absent means unchanged": a client keeps what the last message
that carried the field said. The exceptions are the peer fields, which a client applies in this order:

1. Peers, when not empty, is the complete peer list: it replaces every peer, and the other peer fields are
   ignored. An empty Peers means no change at all, so a full map also lists the peers a node may no longer
   see in PeersRemoved: when it has no peers left, that is what removes them.
2. PeersRemoved: ids of peers to drop.
3. PeersChanged: peers added or changed, each replacing whatever the client held for its ID.
4. PeersChangedPatch: small changes (PeerChange) to peers the client holds.

Every list of peers is sorted by node ID. The field docstrings below say what absent, empty and null mean
where that differs from "unchanged".
"""

from typing import TypedDict

from pyheadscale.tailcfg.derp_map import DERPMap
from pyheadscale.tailcfg.dns import DNSConfig
from pyheadscale.tailcfg.filter import FilterRule
from pyheadscale.tailcfg.node import Node, PeerChange, UserProfile
from pyheadscale.tailcfg.ssh import SSHPolicy

# Clients from this capability version on understand MapResponse.PacketFilters (named, incremental filters).
CAPVER_PACKET_FILTERS = 81
# The PacketFilters key that, with a null value, clears every named filter the client holds.
CLEAR_FILTERS = "*"


class PingRequest(TypedDict):
    """Asks the client to prove it is alive by requesting URL (a HEAD, outside the Noise channel)."""

    URL: str


class Debug(TypedDict, total=False):
    """Debug settings for the client; absent from a message means no change."""

    DisableLogTail: bool


class MapResponse(TypedDict, total=False):
    KeepAlive: bool
    """True: the message only keeps the stream alive, and a client ignores every other field of it but
    PingRequest and ControlTime."""
    PingRequest: PingRequest
    """May ride on any message, a keep-alive included."""
    Node: Node
    """The recipient itself, whole."""
    DERPMap: DERPMap
    Peers: list[Node]
    PeersChanged: list[Node]
    PeersRemoved: list[int]
    PeersChangedPatch: list[PeerChange]
    DNSConfig: DNSConfig
    Domain: str
    """The tailnet's name; empty means unchanged."""
    CollectServices: bool
    """Whether clients should report their listening services in Hostinfo."""
    PacketFilter: list[FilterRule]
    """The legacy whole filter, for clients before CAPVER_PACKET_FILTERS. Null or absent means unchanged; an
    empty list blocks every incoming packet."""
    PacketFilters: dict[str, list[FilterRule] | None]
    """Named filters the client concatenates: a name with rules sets them, a name with null deletes them,
    and CLEAR_FILTERS with null first deletes every name held. A PacketFilter is the name "base"."""
    UserProfiles: list[UserProfile]
    """Profiles added or changed since the last message; a client never drops one because it is absent."""
    SSHPolicy: SSHPolicy
    ControlTime: str
    """The server's clock when it made the message (Go time)."""
    Debug: Debug


KEEPALIVE: MapResponse = {"KeepAlive": True}
