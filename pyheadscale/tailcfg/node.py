"""tailcfg.Node (a node as the map describes it), tailcfg.PeerChange (a patch to one) and tailcfg.UserProfile.

These are TypedDicts: the map path builds one per peer per recipient, and a dict is both the cheapest thing to
build and what the JSON encoder takes as is, while mypy still checks every key and value. The wire names are
Go's field names; the docstrings say how a client applies each field.
"""

from typing import Any, NotRequired, TypedDict

from pyheadscale.tailcfg.hostinfo import Hostinfo
from pyheadscale.tailkey import DiscoPublic

# The UserID and profile every tagged node is shown under (tailscale's and Headscale's value).
TAGGED_DEVICES_USER_ID = 2147455555
# Clients from this capability version on read Node.HomeDERP; older ones want the legacy "127.3.3.40:N"
# string in Node.DERP.
CAPVER_HOME_DERP = 111
# A node without a disco key yet (it has not sent one) is sent with the zero key, which a client accepts.
ZERO_DISCO_KEY = DiscoPublic.zero().text

NodeCapMap = dict[str, list[Any]]
"""Capability name -> its values (JSON); an empty list is a capability with no values."""


class Node(TypedDict):
    """One node: the recipient itself (MapResponse.Node) or a peer (Peers, PeersChanged).

    A Node is always sent whole: a client replaces what it held for that ID with it, never merges. To change a
    few fields of a peer cheaply there is PeerChange.
    """

    ID: int
    StableID: str
    Name: str
    """The MagicDNS FQDN, with its trailing dot."""
    User: int
    """The UserProfile.ID it belongs to (TAGGED_DEVICES_USER_ID for tagged nodes)."""
    Key: str
    KeyExpiry: str
    """Go time; the zero time when the key does not expire."""
    Machine: str
    DiscoKey: str
    Addresses: list[str]
    """The node's own addresses, as /32 and /128 prefixes."""
    AllowedIPs: list[str]
    """What the recipient routes to this node: its addresses and the routes it serves the recipient."""
    Endpoints: list[str]
    HomeDERP: int
    """Home DERP region id; 0 while the node has not chosen one."""
    Hostinfo: Hostinfo
    Created: str
    Cap: int
    """The node's capability version; 0 when unknown."""
    Tags: list[str]
    PrimaryRoutes: list[str]
    """The subnet routes this node is the primary router for."""
    Online: bool
    """Whether the node has a map stream open; absent would mean unknown, we always know."""
    MachineAuthorized: bool
    Expired: bool
    """The node's key expired: peers stop talking to it, the node itself must log in again."""
    CapMap: NodeCapMap
    DERP: NotRequired[str]
    """The legacy form of HomeDERP ("127.3.3.40:<region>"), sent only to clients before CAPVER_HOME_DERP."""
    LastSeen: NotRequired[str]
    """When an offline node was last connected; absent means unknown, and is what online peers get."""


class PeerChange(TypedDict):
    """A patch to one peer the client already holds (MapResponse.PeersChangedPatch).

    Every field but NodeID is "absent means unchanged": only what is present replaces the peer's field. A
    patch for a NodeID the client does not hold is ignored, so it cannot add a peer.
    """

    NodeID: int
    DERPRegion: int
    """The new home DERP region; 0 means unchanged, so a node that loses its home region cannot say so."""
    Endpoints: list[str]
    """The new endpoints; an empty list means unchanged (Go's omitempty), not "no endpoints"."""
    Online: bool
    DiscoKey: NotRequired[str]
    LastSeen: NotRequired[str]


class UserProfile(TypedDict):
    """A user as clients show it. MapResponse.UserProfiles adds or replaces them by ID, never removes one."""

    ID: int
    LoginName: str
    DisplayName: str
    ProfilePicURL: NotRequired[str]


def user_profile(user_id: int, login_name: str, display_name: str, picture: str = "") -> UserProfile:
    profile: UserProfile = {"ID": user_id, "LoginName": login_name, "DisplayName": display_name}
    if picture:
        profile["ProfilePicURL"] = picture
    return profile
