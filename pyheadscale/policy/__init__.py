"""The policy engine: Tailscale ACL/grant policies (HuJSON) compiled per node.

Server-facing API
=================

Inputs are small value types from :mod:`pyheadscale.policy.types`::

    PolicyUser(id: int, name: str, email: str = "")
    PolicyNode(id: int, hostname: str, user: str | None, user_id: int | None,
               tags: Sequence[str] = (), ipv4: str | None = None, ipv6: str | None = None,
               routable_ips: Sequence[str] = (), approved_routes: Sequence[str] = ())

``user`` is the owner's name and ``None`` for tagged nodes; ``routable_ips``
are advertised routes, ``approved_routes`` the approved ones.

The engine::

    engine = PolicyEngine(policy_text: str | None, users=(), nodes=(), *,
                          server_url="https://unused", owner_id=None, admin_ids=None)

parses and validates the policy against the tailnet and raises
:class:`PolicyError` (a ``ValueError``) when Tailscale would reject it;
``str(error)`` names the entry (``acls[2].dst[0]``) and its ``line:column``.
Pass the current users and nodes here when a policy is submitted: the
policy's ``tests``/``sshTests`` run against the nodes given (skipped when
there are none), as Tailscale runs them when a policy is saved.
``policy_text=None`` means no policy: every node sees every node and the
filter is ``[{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0,
"Last": 65535}}]}]``. ``owner_id``/``admin_ids`` back ``autogroup:owner`` and
``autogroup:admin`` (default: first user / all users).

Tailnet changes (return the ids of nodes whose results may have changed, so
the server pushes map updates to those only; the set never misses a changed
node but may include a few whose results turn out equal)::

    engine.set_nodes(users, nodes) -> None          # full recompile
    engine.add_or_update_node(node) -> set[int]
    engine.remove_node(node_id) -> set[int]

Per-node queries (results are cached until a change affects the node)::

    engine.filter_rules(node_id) -> list[FilterRule] # pyheadscale.tailcfg.filter
    engine.ssh_policy(node_id) -> SSHPolicy | None   # pyheadscale.tailcfg.ssh, None without "ssh"
    engine.peers(node_id) -> dict[int, PeerView]     # PeerView(allowed_ips, primary_routes)
    engine.cap_map(node_id) -> dict                  # tailcfg.NodeCapMap entries from nodeAttrs
    engine.auto_approved_routes(node) -> list[str]   # advertised routes autoApprovers approve

To wire the CLI: ``pyheadscale.policy.cli.register_policy_commands(subparsers)``
adds ``policy check FILE`` and ``policy simulate CASE.json [...]``.
"""

from pyheadscale.policy.engine import PolicyEngine
from pyheadscale.policy.types import PeerView, PolicyError, PolicyNode, PolicyUser

__all__ = ["PeerView", "PolicyEngine", "PolicyError", "PolicyNode", "PolicyUser"]
