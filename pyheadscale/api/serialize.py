"""Records to headscale.v1 messages, the one shape the REST gateway, the gRPC server and the CLI all print.

Secrets never leave through here: preauth keys are shown masked (`hskey-auth-<prefix>-***`) unless the caller
passes the full text it has just created, and API keys only ever as their masked prefix.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from pyheadscale.auth import secret_keys
from pyheadscale.grpc.schema import pb
from pyheadscale.state.models import ApiKey, Node, PreAuthKey, User
from pyheadscale.state.store import Store
from pyheadscale.tailkey import DiscoPublic

# Headscale presents tagged nodes as owned by this synthetic user (tags are their identity, not a person).
TAGGED_DEVICES_USER_ID = 2147455555
TAGGED_DEVICES_NAME = "tagged-devices"
TAGGED_DEVICES_DISPLAY_NAME = "Tagged Devices"

# Go's zero time.Time, which Headscale writes where a time was never set (0001-01-01T00:00:00Z).
ZERO_TIME_SECONDS = -62135596800
# The text of an all-zero disco key, which Headscale shows for a node that never sent one.
ZERO_DISCO_KEY = DiscoPublic.zero().text

_REGISTER_METHODS = {
    "authkey": pb.REGISTER_METHOD_AUTH_KEY,
    "oidc": pb.REGISTER_METHOD_OIDC,
    "cli": pb.REGISTER_METHOD_CLI,
}

Message = Any


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp, or None to leave the field unset."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def zero_time() -> Timestamp:
    return Timestamp(seconds=ZERO_TIME_SECONDS)


def user(record: User) -> Message:
    return pb.User(
        id=record.id,
        name=record.name,
        created_at=timestamp(record.created_at),
        display_name=record.display_name,
        email=record.email,
        provider_id=record.provider_id,
        provider=record.provider,
        profile_pic_url=record.profile_pic_url,
    )


def tagged_devices_user() -> Message:
    return pb.User(
        id=TAGGED_DEVICES_USER_ID,
        name=TAGGED_DEVICES_NAME,
        created_at=zero_time(),
        display_name=TAGGED_DEVICES_DISPLAY_NAME,
    )


def preauth_key(store: Store, record: PreAuthKey, full_text: str | None = None) -> Message:
    """A preauth key; `full_text` is given only in the response that creates it."""
    owner = store.users.get(record.user_id) if record.user_id is not None else None
    return pb.PreAuthKey(
        user=user(owner) if owner is not None else None,
        id=record.id,
        key=full_text or secret_keys.masked(secret_keys.PREAUTH_KEY, record.prefix),
        reusable=record.reusable,
        ephemeral=record.ephemeral,
        used=record.used,
        expiration=timestamp(record.expiration),
        created_at=timestamp(record.created_at),
        acl_tags=list(record.tags),
    )


def api_key(record: ApiKey) -> Message:
    return pb.ApiKey(
        id=record.id,
        prefix=secret_keys.masked(secret_keys.API_KEY, record.prefix),
        expiration=timestamp(record.expiration),
        created_at=timestamp(record.created_at),
        last_seen=timestamp(record.last_seen),
    )


def serving_routes(node: Node) -> list[str]:
    """Routes the node both announces and has approved: what it actually serves (exit routes included)."""
    announced = set(node.announced_routes)
    return [route for route in node.approved_routes if route in announced]


def node(store: Store, record: Node, *, listed: bool = False) -> Message:
    """A node. A tagged node has no owner: listings show the synthetic tagged-devices user, single-node
    answers no user at all, as Headscale does."""
    if record.tags:
        owner = tagged_devices_user() if listed else None
    else:
        found = store.users.get(record.user_id) if record.user_id is not None else None
        owner = user(found) if found is not None else None
    key = store.preauth_keys.get(record.auth_key_id) if record.auth_key_id is not None else None
    return pb.Node(
        id=record.id,
        machine_key=record.machine_key,
        node_key=record.node_key,
        disco_key=record.disco_key or ZERO_DISCO_KEY,
        ip_addresses=[address.split("/")[0] for address in record.addresses()],
        name=record.hostname,
        user=owner,
        last_seen=timestamp(record.last_seen),
        expiry=timestamp(record.expiry),
        pre_auth_key=preauth_key(store, key) if key is not None else None,
        created_at=timestamp(record.created_at),
        register_method=_REGISTER_METHODS.get(record.register_method, pb.REGISTER_METHOD_UNSPECIFIED),
        given_name=record.given_name,
        online=store.is_online(record.id),
        approved_routes=list(record.approved_routes),
        available_routes=list(record.announced_routes),
        subnet_routes=serving_routes(record),
        tags=list(record.tags),
    )
