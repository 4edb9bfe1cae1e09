"""What the API's handlers may use: the narrow view of a running server that the REST and gRPC APIs share.

Built once by the composition root (pyheadscale/app.py) after every part it names exists, so no handler
finds a part missing, and the API never imports the server that assembles it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pyheadscale.auth.interactive import PendingLogins
from pyheadscale.control.ssh_action import SSHChecks
from pyheadscale.health import HealthCheck
from pyheadscale.state.policy import PolicyManager
from pyheadscale.state.store import Store


@dataclass(frozen=True, slots=True)
class ApiContext:
    store: Store
    policy: PolicyManager
    logins: PendingLogins
    """Interactive logins waiting for an operator (auth register/approve/reject)."""
    ssh_checks: SSHChecks
    """SSH check-mode approvals waiting for an operator (auth approve/reject)."""
    health: HealthCheck
    login_expiry: Callable[[], datetime | None]
    """Key expiry for a node whose login an operator completes now (the config's node.expiry)."""
