"""Why the store refused a change; the messages are written for the API, the CLI and clients to show."""

from __future__ import annotations


class StateError(ValueError):
    """A requested change is invalid; the message says why."""


class NotFound(StateError):
    pass


class Conflict(StateError):
    pass


class AuthFailed(StateError):
    """A key or login was refused; the message is safe to send to the client (it never echoes a secret)."""


class AccessRevoked(StateError):
    """The node's key expired or it was logged out: it may do nothing until it registers again."""
