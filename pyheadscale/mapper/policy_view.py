"""What the mapper needs from the policy in force, per node.

The mapper never evaluates policy itself: it asks for a node's peers (with the addresses to route to each), or
what it sees of one peer, its packet filter, its SSH policy and its capabilities.
`pyheadscale.state.policy.PolicyManager` answers.
"""

from __future__ import annotations

from typing import Any, Protocol

from pyheadscale.policy.types import PeerView
from pyheadscale.tailcfg.filter import FilterRule
from pyheadscale.tailcfg.ssh import SSHPolicy


class NetworkPolicy(Protocol):
    def peers(self, node_id: int) -> dict[int, PeerView]: ...

    def peer_ids(self, node_id: int) -> set[int]: ...

    def peer_view(self, node_id: int, peer_id: int) -> PeerView | None: ...

    def filter_rules(self, node_id: int) -> list[FilterRule]: ...

    def ssh_policy(self, node_id: int) -> SSHPolicy | None: ...

    def cap_map(self, node_id: int) -> dict[str, Any]: ...
