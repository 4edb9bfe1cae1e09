"""Tailscale SSH: tailcfg.SSHPolicy (in a MapResponse) and tailcfg.SSHAction (a rule's verdict).

Unlike the rest of tailcfg, these have lower-case JSON names (Go's struct tags). A node's SSH server tries its
rules in order and the first whose principal and user match decides; with no match, the connection is refused.
"""

from typing import TypedDict


class SSHPrincipal(TypedDict, total=False):
    """Who a rule matches: one of a node, a node address, a user's login, or anyone."""

    node: str
    nodeIP: str
    userLogin: str
    any: bool


class SSHAction(TypedDict, total=False):
    """What happens to a matched connection: accepted, rejected, or held while the control server decides.

    With `holdAndDelegate`, the client fetches that URL (its $SRC_NODE_ID, $DST_NODE_ID and $LOCAL_USER
    substituted) over the Noise channel and applies the SSHAction it answers, which may hold again.
    """

    message: str
    """Shown to the user before the verdict (the approval URL, for a check)."""
    reject: bool
    accept: bool
    holdAndDelegate: str
    allowAgentForwarding: bool
    allowLocalPortForwarding: bool
    allowRemotePortForwarding: bool


class _SSHRuleRequired(TypedDict):
    principals: list[SSHPrincipal]
    sshUsers: dict[str, str]
    """Login user the client asked for -> local user to run as; "*" matches any, "=" means the same name."""
    action: SSHAction


class SSHRule(_SSHRuleRequired, total=False):
    acceptEnv: list[str]
    """Environment variables the client may pass (patterns)."""


class SSHPolicy(TypedDict):
    """The whole SSH policy, replacing the last one; no rules means every connection is refused."""

    rules: list[SSHRule]
