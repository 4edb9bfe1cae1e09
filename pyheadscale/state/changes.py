"""Change values: what a state mutation did, named by kind and node, for everything downstream to act on.

A mutation returns the changes it caused, in causal order (a node first, then the other nodes whose policy
results it changed); the change feed (state/feed.py) delivers them, and nothing that receives one writes state
back. Each kind says what its consumers must re-read from the store, not what to send. The map distributor,
for instance, turns them into these MapResponse fields for the sessions that can see the change:

  NODE_ADDED / NODE_UPDATED  -> PeersChanged (the peer in full) for its viewers, PeersRemoved for those that
                                no longer see it, and a full map for the node itself after NODE_UPDATED
  NODE_REMOVED               -> PeersRemoved, and the node's own streams close
  NODE_PATCH                 -> PeersChangedPatch (endpoints, home DERP, disco key: cheap, frequent)
  NODE_ONLINE                -> PeersChangedPatch with Online (and LastSeen once it is offline): the node
                                came online or went offline, as the store's presence now says
  POLICY / USERS / DERP / DNS -> a full map for every session, since they can change every node's view
  POLICY_NODES               -> PacketFilter and SSHPolicy, for the nodes in `node_ids` only (those a node's
                                join, change or removal may have given new policy results), when they
                                differ from what the session last sent
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
    # POLICY_NODES: the nodes whose policy results (filter, SSH policy) a node change may have changed.
    node_ids: frozenset[int] = frozenset()
