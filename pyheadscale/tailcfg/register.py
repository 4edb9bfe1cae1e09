"""tailcfg.RegisterResponse: the answer to every RegisterRequest, refusals included (clients read Error)."""

from typing import TypedDict


class User(TypedDict, total=False):
    """The user the node now belongs to (tailcfg.User); empty while registration is pending or refused."""

    ID: int
    DisplayName: str
    ProfilePicURL: str


class Login(TypedDict, total=False):
    """The login the node was registered with (tailcfg.Login)."""

    ID: int
    Provider: str
    LoginName: str
    DisplayName: str
    ProfilePicURL: str


class RegisterResponse(TypedDict):
    User: User
    Login: Login
    NodeKeyExpired: bool
    """The node key expired (or the node logged out): the client must register a new node key."""
    MachineAuthorized: bool
    AuthURL: str
    """Non-empty: registration waits for someone to log in at this URL; the client polls with Followup."""
    Error: str
    """Non-empty: registration was refused, for this reason, and every other field is to be ignored."""


def register_response(
    *,
    user: User | None = None,
    login: Login | None = None,
    authorized: bool = False,
    expired: bool = False,
    auth_url: str = "",
    error: str = "",
) -> RegisterResponse:
    return {
        "User": user or {},
        "Login": login or {},
        "NodeKeyExpired": expired,
        "MachineAuthorized": authorized,
        "AuthURL": auth_url,
        "Error": error,
    }
