"""Tailscale SSH ``check``: `GET /machine/ssh/action/<src>/to/<dst>` inside the Noise channel.

A ``check`` rule in a node's SSHPolicy carries a HoldAndDelegate URL instead of a verdict. When someone
connects, the destination's tailscaled fetches that URL and shows the user the message it gets back; then it
fetches the URL in that answer (now with an ``auth_id``) and waits, for up to 30 minutes, until that request
answers Accept or Reject. The operator decides with `pyheadscale auth approve|reject --auth-id <id>` (the page
at `/auth/<id>` says so). An approval holds for the rule's ``checkPeriod`` for that (src, dst) pair.

Only the destination's own machine may ask about a destination: otherwise anyone with a throwaway machine key
could fetch approvals or record verdicts for pairs not theirs. The pair a pending check was opened for is
bound to its auth id, so a follow-up naming another pair is refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import quote

from pyheadscale.auth.interactive import AUTH_ID_PREFIX
from pyheadscale.control.h2server import InnerRequest
from pyheadscale.policy.ssh_check import ssh_check_period
from pyheadscale.state.errors import NotFound
from pyheadscale.state.policy import PolicyManager
from pyheadscale.state.store import Store
from pyheadscale.tailcfg.ssh import SSHAction
from pyheadscale.tailkey import MachinePublic

log = logging.getLogger(__name__)

PATH_PREFIX = "/machine/ssh/action/"
_PATH = re.compile(r"/machine/ssh/action/(\d{1,19})/to/(\d{1,19})")
#: How long an operator has to decide (Headscale's register cache expiry).
LIFETIME = 15 * 60.0
MAX_PENDING = 10_000
#: One destination cannot crowd out everyone else's checks.
MAX_PENDING_PER_NODE = 64
#: auth ids are the prefix and 24 URL-safe characters, as Headscale's are.
_AUTH_ID = re.compile(re.escape(AUTH_ID_PREFIX) + r"[A-Za-z0-9_-]{24}")
_FORWARDING: SSHAction = {
    "allowAgentForwarding": True,
    "allowLocalPortForwarding": True,
    "allowRemotePortForwarding": True,
}


@dataclass(slots=True)
class PendingCheck:
    auth_id: str
    src_id: int
    dst_id: int
    created: float = field(default_factory=time.monotonic)
    verdict: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def expired(self, now: float) -> bool:
        return now - self.created > LIFETIME


class SSHChecks:
    """Pending SSH checks by auth id, and when each (src, dst) pair was last approved."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingCheck] = {}
        self._per_node: dict[int, int] = {}
        self._last_approval: dict[tuple[int, int], float] = {}

    def open(self, src_id: int, dst_id: int) -> PendingCheck:
        self._prune()
        if len(self._pending) >= MAX_PENDING:
            raise OverflowError("too many SSH checks are waiting for approval; try again later")
        if self._per_node.get(dst_id, 0) >= MAX_PENDING_PER_NODE:
            raise OverflowError(f"too many SSH checks to node {dst_id} are waiting for approval")
        check = PendingCheck(AUTH_ID_PREFIX + secrets.token_urlsafe(18), src_id, dst_id)
        self._pending[check.auth_id] = check
        self._per_node[dst_id] = self._per_node.get(dst_id, 0) + 1
        return check

    def get(self, auth_id: str) -> PendingCheck | None:
        check = self._pending.get(auth_id)
        if check is not None and check.expired(time.monotonic()):
            self._decide(check, False)
            return None
        return check

    def pending(self, auth_id: str) -> PendingCheck:
        check = self.get(auth_id)
        if check is None:
            raise NotFound(f"no SSH check is waiting with auth id {auth_id!r} (it may have expired)")
        return check

    def list(self) -> list[PendingCheck]:
        self._prune()
        return list(self._pending.values())

    def approve(self, check: PendingCheck) -> None:
        self._decide(check, True)

    def reject(self, check: PendingCheck) -> None:
        self._decide(check, False)

    def record_approval(self, src_id: int, dst_id: int) -> None:
        self._last_approval[(src_id, dst_id)] = time.monotonic()

    def approved_within(self, src_id: int, dst_id: int, period: timedelta) -> bool:
        stamp = self._last_approval.get((src_id, dst_id))
        return stamp is not None and time.monotonic() - stamp < period.total_seconds()

    def forget_node(self, node_id: int) -> None:
        """A deleted node's approvals must not carry over to a node that later gets its id."""
        for pair in [p for p in self._last_approval if node_id in p]:
            del self._last_approval[pair]

    def _decide(self, check: PendingCheck, accept: bool) -> None:
        if self._pending.pop(check.auth_id, None) is not None:
            left = self._per_node.pop(check.dst_id, 1) - 1
            if left:
                self._per_node[check.dst_id] = left
        if not check.verdict.done():
            check.verdict.set_result(accept)

    def _prune(self) -> None:
        now = time.monotonic()
        for check in [c for c in self._pending.values() if c.expired(now)]:
            self._decide(check, False)

    def close(self) -> None:
        for check in list(self._pending.values()):
            self._decide(check, False)


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


class SSHActionHandler:
    """Answers the SSH action requests of destination nodes with a tailcfg.SSHAction."""

    def __init__(self, store: Store, policy: PolicyManager, checks: SSHChecks, server_url: str) -> None:
        self.store = store
        self.policy = policy
        self.checks = checks
        self.server_url = server_url.rstrip("/")

    async def handle(self, request: InnerRequest, machine_key: MachinePublic) -> None:
        match = _PATH.fullmatch(request.path)
        if match is None:
            await _text(
                request, 404, "not found: expected /machine/ssh/action/<src node id>/to/<dst node id>"
            )
            return
        if request.method != "GET":
            await _text(request, 405, f"method {request.method} not allowed")
            return
        src_id, dst_id = int(match.group(1)), int(match.group(2))
        dst = self.store.nodes.get(dst_id)
        if dst is None:
            await _text(request, 404, f"dst node {dst_id} not found")
            return
        if dst.machine_key != machine_key.text:
            log.warning("SSH action for dst node %d asked by another machine %s", dst_id, machine_key.short())
            await _text(request, 401, "machine key does not match dst node")
            return
        if not self.store.may_connect(dst):
            await _text(request, 403, "node key expired: log in again")
            return
        src = self.store.nodes.get(src_id)
        if src is None or not self.store.may_connect(src):
            # A source that was deleted or lost access gets no session, approved before or not.
            body = json.dumps({"reject": True, **_FORWARDING}).encode()
            await request.response.respond(200, body, "application/json; charset=utf-8")
            return
        auth_id = (request.query.get("auth_id") or [""])[0]
        local_user = (request.query.get("local_user") or [""])[0]
        try:
            action = await self._action(src_id, dst_id, auth_id, local_user)
        except OverflowError as exc:
            await _text(request, 429, str(exc))
            return
        except _Refused as exc:
            await _text(request, exc.status, exc.text)
            return
        body = json.dumps(action).encode()
        await request.response.respond(200, body, "application/json; charset=utf-8")

    async def _action(self, src_id: int, dst_id: int, auth_id: str, local_user: str) -> SSHAction:
        period = ssh_check_period(self.policy.engine, src_id, dst_id)
        if auth_id:
            if not _AUTH_ID.fullmatch(auth_id):
                raise _Refused(400, f"invalid auth_id: expected {AUTH_ID_PREFIX!r} and 24 characters")
            check = self.checks.get(auth_id)
            if check is None and period is None:
                raise _Refused(400, "invalid auth_id: no SSH check is waiting with it")
            if check is not None and (check.src_id, check.dst_id) != (src_id, dst_id):
                raise _Refused(401, "src/dst pair does not match auth session")
            if check is None:
                # Expired or lost in a restart while the rule still asks for a check: start a new one rather
                # than leave the client polling a dead id until its 30 minutes run out.
                return self._hold(src_id, dst_id, local_user)
            return await self._verdict(check, period)
        if (
            period is not None
            and period > timedelta(0)
            and self.checks.approved_within(src_id, dst_id, period)
        ):
            return {"accept": True, **_FORWARDING}
        return self._hold(src_id, dst_id, local_user)

    def _hold(self, src_id: int, dst_id: int, local_user: str) -> SSHAction:
        check = self.checks.open(src_id, dst_id)
        log.info(
            "SSH check %s: node %d -> node %d as %r waits for approval",
            check.auth_id,
            src_id,
            dst_id,
            local_user,
        )
        # The client substitutes the $ placeholders in the path; the query is encoded as Go's url.Values is.
        hold = (
            f"{self.server_url}{PATH_PREFIX}$SRC_NODE_ID/to/$DST_NODE_ID"
            f"?auth_id={quote(check.auth_id, safe='')}&local_user=%24LOCAL_USER"
        )
        message = (
            "# This SSH connection needs an approval (Tailscale SSH check).\n"
            f"# To approve it, visit: {self.server_url}/auth/{check.auth_id}\n"
            "# The connection proceeds once pyheadscale has approved it.\n"
        )
        return {"message": message, "holdAndDelegate": hold, **_FORWARDING}

    async def _verdict(self, check: PendingCheck, period: timedelta | None) -> SSHAction:
        # Shielded: a client that goes away cancels this request, not the check an operator may still decide.
        accepted = await asyncio.shield(check.verdict)
        if not accepted:
            log.info("SSH check %s rejected", check.auth_id)
            return {"reject": True, **_FORWARDING}
        log.info("SSH check %s approved", check.auth_id)
        if period is not None:
            self.checks.record_approval(check.src_id, check.dst_id)
        return {"accept": True, **_FORWARDING}


async def _text(request: InnerRequest, status: int, text: str) -> None:
    await request.response.respond(status, (text + "\n").encode(), "text/plain; charset=utf-8")
