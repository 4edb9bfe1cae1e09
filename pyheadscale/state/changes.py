"""Change events: what the store tells the map distributor after each state change.

A change names what happened to which node; the distributor turns it into per-node map deltas for exactly the
nodes that can see it. Kinds map onto MapResponse fields:

  NODE_ADDED / NODE_UPDATED  -> PeersChanged (the full peer node)
  NODE_REMOVED               -> PeersRemoved
  NODE_PATCH                 -> PeersChangedPatch (endpoints, home DERP, disco key: cheap, frequent)
  NODE_ONLINE                -> OnlineChange (+ PeerSeenChange when going offline)
  POLICY / USERS / DERP / DNS -> recomputed full maps, since they can change every node's view
  POLICY_NODES               -> PacketFilters and SSHPolicy for the nodes a join, change or removal touched
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ChangeKind(enum.Enum):
    NODE_ADDED = "node_added"
    NODE_UPDATED = "node_updated"
    NODE_REMOVED = "node_removed"
    NODE_PATCH = "node_patch"
    NODE_ONLINE = "node_online"
    POLICY = "policy"
    POLICY_NODES = "policy_nodes"
    USERS = "users"
    DERP = "derp"
    DNS = "dns"


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    node_id: int | None = None
    online: bool | None = None
    # POLICY_NODES: the nodes whose policy results (filter, SSH policy) a node change may have changed.
    node_ids: frozenset[int] = frozenset()
