"""The headscale.v1 message classes and service stubs, compiled at import from our headscale_v1.proto.

grpcio-tools compiles the file in memory; nothing generated is kept in the tree. Everything that speaks this
API (the REST gateway, the gRPC server, the CLI's output) shares these classes, so the three never drift.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import grpc

PROTO_FILE = "pyheadscale/grpc/headscale_v1.proto"
SERVICE_NAME = "headscale.v1.HeadscaleService"

# grpcio-tools finds .proto files on sys.path; an editable install does not put the checkout there.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
if _PACKAGE_ROOT not in sys.path:
    sys.path.append(_PACKAGE_ROOT)

pb: Any
services: Any
pb, services = grpc.protos_and_services(PROTO_FILE)


def method_names() -> list[str]:
    """Every rpc of the service, in the order the definition lists them."""
    return [method.name for method in pb.DESCRIPTOR.services_by_name["HeadscaleService"].methods]
