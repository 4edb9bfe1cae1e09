"""`POST /machine/register`: preauth-key registration, re-registration, node-key rotation and logout.

Every outcome is a RegisterResponse with HTTP 200 (clients read `Error` for refusals), except a body that does
not parse, which is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import datetime

from pyheadscale import audit
from pyheadscale.auth.interactive import LoginRejected, PendingLogins, auth_id_from_followup, tags_refusal
from pyheadscale.config import Config
from pyheadscale.control.decode import decode
from pyheadscale.control.h2server import InnerRequest
from pyheadscale.metrics import Metrics
from pyheadscale.ratelimit import RateLimiter, retry_after_header, source_of
from pyheadscale.state.errors import AuthFailed, StateError
from pyheadscale.state.ipalloc import AddressExhausted
from pyheadscale.state.models import Node
from pyheadscale.state.names import now
from pyheadscale.state.store import Store
from pyheadscale.tailcfg.node import TAGGED_DEVICES_USER_ID
from pyheadscale.tailcfg.register import RegisterResponse, register_response
from pyheadscale.tailcfg.requests import RegisterRequest
from pyheadscale.tailkey import MachinePublic

log = logging.getLogger(__name__)

# Registrations with a preauth key in flight at once (each waits its turn to write the database): past this
# many a new one is answered 429 with a Retry-After of about the time the queue ahead takes, rather than
# queued without bound. tailscaled 1.98 and later wait out Retry-After (5-10 s when it is missing) before
# retrying; older ones take the 429 as any failed register request and retry with their backoff (n² x 10 ms,
# at most 30 s).
MAX_REGISTRATIONS_IN_FLIGHT = 256


class Busy(Exception):
    """Too many registrations in flight; retry after `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"busy for {seconds:.1f}s")
        self.seconds = seconds


class RegisterHandler:
    def __init__(
        self,
        store: Store,
        config: Config,
        metrics: Metrics,
        logins: PendingLogins,
        *,
        max_in_flight: int = MAX_REGISTRATIONS_IN_FLIGHT,
    ) -> None:
        self.logins = logins
        self.store = store
        self.config = config
        self.metrics = metrics
        rate = config.limits.rate.registrations
        self.rate = RateLimiter(
            rate.per_second, rate.burst, on_limited=metrics.rate_limited.labels("registrations").inc
        )
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        # How long a registration takes now, its wait in the queue included (smoothed): about what a refused
        # one would have waited.
        self._latency = 0.01

    async def handle(self, request: InnerRequest, machine_key: MachinePublic) -> None:
        machine = machine_key.text  # how the node table and pending logins hold it
        source = source_of(request.source)
        wait = self.rate.retry_after(source)
        if wait:
            # tailscaled reads a non-200 register answer as an error and retries with backoff.
            await request.response.start(429, {"retry-after": retry_after_header(wait)})
            await request.response.send(b"too many registrations from your address; retry later\n", end=True)
            return
        req = await decode(request, RegisterRequest)
        if req is None:
            return
        audit.actor.set(f"machine:{machine[5:17]}")
        try:
            response = await self._register(req, machine, source)
            self.metrics.registrations.labels("ok").inc()
        except Busy as exc:
            self.metrics.registrations.labels("busy").inc()
            # Spread over twice the wait, so the refused do not all come back in the same second.
            retry_after = retry_after_header(exc.seconds * random.uniform(1, 2))
            await request.response.start(429, {"retry-after": retry_after})
            await request.response.send(
                b"the server is busy registering other nodes; retry later\n", end=True
            )
            return
        except AuthFailed as exc:
            log.warning("registration refused for machine %s: %s", machine[:13], audit.clip(str(exc), 200))
            self.metrics.registrations.labels("refused").inc()
            self.metrics.auth_failures.labels("authkey").inc()
            self.store.audit.record_refusal(
                request.source,
                "node.register",
                f"machine:{machine[5:17]}",
                reason=str(exc),
                hostname=(req.Hostinfo or {}).get("Hostname"),
            )
            response = register_response(error=str(exc))
        except (StateError, OverflowError, AddressExhausted) as exc:
            self.metrics.registrations.labels("error").inc()
            response = register_response(error=str(exc))
        body = json.dumps(response).encode()
        await request.response.respond(200, body, "application/json; charset=utf-8")

    def _response_for(self, node: Node) -> RegisterResponse:
        user = self.store.users.get(node.user_id) if node.user_id is not None and not node.tags else None
        if user is None:
            uid, login_name, display = TAGGED_DEVICES_USER_ID, "tagged-devices", "Tagged Devices"
            provider = picture = ""
        else:
            uid, login_name, display = (
                user.id,
                user.email or user.name,
                user.display_name or user.email or user.name,
            )
            provider, picture = user.provider, user.profile_pic_url
        return register_response(
            user={"ID": uid, "DisplayName": display, "ProfilePicURL": picture},
            login={
                "ID": uid,
                "Provider": provider,
                "LoginName": login_name,
                "DisplayName": display,
                "ProfilePicURL": picture,
            },
            authorized=True,
            expired=not self.store.may_connect(node),
        )

    def default_expiry(self, *, tagged: bool = False, requested: datetime | None = None) -> datetime | None:
        """Key expiry for a node registering now (a login approved for a user: not tagged, nothing asked)."""
        return self.config.node.expiry_for(tagged=tagged, requested=requested, at=now())

    async def _register(self, req: RegisterRequest, machine_key: str, source: str) -> RegisterResponse:
        expiry = req.expiry
        existing = self.store.node_by_node_key(req.NodeKey)
        if existing is not None and existing.machine_key != machine_key:
            raise AuthFailed("node key belongs to another machine")

        # A past expiry is a logout, whatever else the request carries.
        if expiry is not None and expiry <= now():
            if existing is None:
                return register_response(expired=True)
            remaining = await self.store.logout(existing)
            if remaining is None:
                return register_response(expired=True)
            return self._response_for(remaining)

        # Node-key rotation: the machine proves it owns the old key by its machine key.
        if req.OldNodeKey and req.OldNodeKey != req.NodeKey:
            old = self.store.node_by_node_key(req.OldNodeKey)
            if old is not None and old.machine_key == machine_key and self.store.may_connect(old):
                node = await self.store.rotate_node_key(old, req.NodeKey, req.Hostinfo or {})
                return self._response_for(node)

        auth_key = req.Auth.AuthKey if req.Auth else ""
        if auth_key:
            if self.in_flight >= self.max_in_flight:
                raise Busy(self._latency)
            self.in_flight += 1
            started = time.monotonic()
            try:
                return await self._register_with_key(req, auth_key, machine_key, expiry)
            finally:
                self.in_flight -= 1
                self._latency += 0.1 * (time.monotonic() - started - self._latency)

        if existing is not None:
            # A restarting client re-checks its registration; an expired node must log in again.
            if not self.store.may_connect(existing):
                return register_response(expired=True)
            return self._response_for(existing)

        if req.Followup:
            return await self._follow_up(req, machine_key, source)
        login = self.logins.start(machine_key, req.NodeKey, req.Hostinfo or {}, source=source, expiry=expiry)
        log.info(
            "login %s waiting for approval (machine %s, hostname %r)",
            login.auth_id,
            machine_key[:13],
            audit.clip(login.hostname, 64),
        )
        return register_response(auth_url=f"{self.config.server_url}/register/{login.auth_id}")

    async def _register_with_key(
        self, req: RegisterRequest, auth_key: str, machine_key: str, expiry: datetime | None
    ) -> RegisterResponse:
        key = await self.store.verify_preauth_key(auth_key)
        requested = (req.Hostinfo or {}).get("RequestTags") or []
        if requested and self.store.node_by_machine_key(machine_key) is None:
            # As Headscale: a new node joining with a preauth key takes its tags from the key alone.
            raise AuthFailed(
                f"{tags_refusal([str(t) for t in requested])}: a node joining with a preauth key gets the"
                " key's tags only (drop --advertise-tags)"
            )
        node = await self.store.register_with_key(
            key,
            machine_key=machine_key,
            node_key=req.NodeKey,
            hostinfo=req.Hostinfo or {},
            expiry=self.default_expiry(tagged=bool(key.tags), requested=expiry),
        )
        log.info("registered node %d (%s) with preauth key %d", node.id, node.given_name, key.id)
        return self._response_for(node)

    async def _follow_up(self, req: RegisterRequest, machine_key: str, source: str) -> RegisterResponse:
        """Wait for the operator's verdict; an unknown or expired login starts over with a new URL."""
        login = self.logins.get(auth_id_from_followup(req.Followup))
        if login is None or login.machine_key != machine_key:
            fresh = self.logins.start(machine_key, req.NodeKey, req.Hostinfo or {}, source=source)
            return register_response(auth_url=f"{self.config.server_url}/register/{fresh.auth_id}")
        try:
            node = await asyncio.shield(login.outcome)
        except LoginRejected as exc:
            raise AuthFailed(str(exc)) from None
        if node is None:
            # Replaced by a newer login of the same machine (then point there), or expired.
            fresh = self.logins.for_machine(machine_key) or self.logins.start(
                machine_key, req.NodeKey, req.Hostinfo or {}, source=source
            )
            return register_response(auth_url=f"{self.config.server_url}/register/{fresh.auth_id}")
        return self._response_for(node)
