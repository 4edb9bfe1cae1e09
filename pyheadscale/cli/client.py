"""How the management verbs reach the server: its REST API over the unix socket, or remotely with an API key.

Local use needs no key: the socket's file permissions are the access control. `--address`/`--api-key` (or
HEADSCALE_CLI_ADDRESS/HEADSCALE_CLI_API_KEY, as Headscale's CLI reads them) select a remote server instead:
an http(s):// URL reaches its REST API, a bare `host:port` its gRPC API as Headscale's CLI does (TLS;
HEADSCALE_CLI_INSECURE=true to accept any certificate).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from pyheadscale.api.errors import ApiError
from pyheadscale.api.gateway import BINDINGS
from pyheadscale.api.protojson import from_json
from pyheadscale.cli.grpc_client import GrpcError, GrpcTransport
from pyheadscale.cli.output import emit_error
from pyheadscale.config import ConfigError, load_config
from pyheadscale.grpc.schema import pb

API_PREFIX = "/api/v1"
TIMEOUT_SECONDS = 30.0


BINDINGS_BY_RPC = {binding.rpc: binding for binding in BINDINGS}


class CliError(Exception):
    """A failure to report on stderr as one line, without a traceback."""


def _response_message(rpc: str, body: dict[str, Any]) -> Any:
    method = pb.DESCRIPTOR.services_by_name["HeadscaleService"].methods_by_name[rpc]
    try:
        return from_json(body, getattr(pb, method.output_type.name))
    except ApiError as exc:
        raise CliError(f"the server's answer to {rpc} does not read as headscale.v1: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class Target:
    """Where the API is: a unix socket path, or a base URL with an API key."""

    base_url: str
    socket_path: str | None = None
    api_key: str | None = None
    grpc_address: str | None = None
    # cli.timeout and cli.insecure (skip certificate checks of a remote https:// or gRPC address).
    timeout: float = TIMEOUT_SECONDS
    insecure: bool = False

    def describe(self) -> str:
        if self.grpc_address:
            return f"gRPC {self.grpc_address}"
        return f"unix socket {self.socket_path}" if self.socket_path else self.base_url


def resolve_target(args: argparse.Namespace) -> Target:
    """Flags win over the environment; with neither, the unix socket named by the configuration."""
    address = getattr(args, "address", None) or os.environ.get("HEADSCALE_CLI_ADDRESS", "")
    if address:
        api_key = getattr(args, "api_key", None) or os.environ.get("HEADSCALE_CLI_API_KEY", "")
        if not api_key:
            raise CliError("a remote --address needs an API key: pass --api-key or set HEADSCALE_CLI_API_KEY")
        timeout = getattr(args, "cli_timeout", None) or TIMEOUT_SECONDS
        insecure = bool(getattr(args, "cli_insecure", False)) or os.environ.get(
            "HEADSCALE_CLI_INSECURE", ""
        ).strip().lower() in ("1", "true", "yes")
        if "://" not in address:
            return Target("", api_key=api_key, grpc_address=address, timeout=timeout, insecure=insecure)
        return Target(address.rstrip("/"), api_key=api_key, timeout=timeout, insecure=insecure)
    try:
        config, _source = load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if not config.unix_socket:
        raise CliError("unix_socket is not configured: use --address and --api-key to reach the server")
    return Target("http://localhost", socket_path=str(config.path(config.unix_socket)))


def _error_message(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return f"server answered HTTP {status}"


class ApiClient:
    """One session against the API; `call` returns the decoded JSON object or raises CliError."""

    def __init__(self, target: Target) -> None:
        self.target = target
        connector: aiohttp.BaseConnector | None = None
        if target.socket_path:
            connector = aiohttp.UnixConnector(path=target.socket_path)
        elif target.insecure:
            connector = aiohttp.TCPConnector(ssl=False)
        headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
        self.session = aiohttp.ClientSession(
            connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=target.timeout)
        )
        self.grpc = (
            GrpcTransport(target.grpc_address, target.api_key or "", insecure=target.insecure)
            if target.grpc_address
            else None
        )

    async def close(self) -> None:
        await self.session.close()
        if self.grpc is not None:
            await self.grpc.close()

    async def call(self, method: str, path: str, *, json: Any = None, params: Any = None) -> dict[str, Any]:
        if self.grpc is not None:
            raise CliError(
                f"this verb uses pyheadscale's REST API ({method} {path}), which gRPC does not carry: "
                "give --address as the server's http(s):// URL"
            )
        url = f"{self.target.base_url}{API_PREFIX}{path}"
        try:
            async with self.session.request(method, url, json=json, params=params) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                if resp.status != 200:
                    raise CliError(_error_message(resp.status, body))
        except aiohttp.ClientError as exc:
            raise CliError(
                f"cannot reach pyheadscale at {self.target.describe()}: is it running? ({exc})"
            ) from None
        except TimeoutError:
            raise CliError(
                f"no answer from pyheadscale at {self.target.describe()} within {self.target.timeout:g}s"
            ) from None
        if not isinstance(body, dict):
            raise CliError("the server's answer was not a JSON object")
        return body

    async def rpc(self, rpc_name: str, /, **fields: Any) -> Any:
        """Call headscale.v1 rpc `rpc_name` through its REST binding; its response message.

        Path fields fill the template, the rest go in the JSON body or the query string as the binding says.
        """
        if self.grpc is not None:
            try:
                return await self.grpc.call(rpc_name, fields)
            except GrpcError as exc:
                raise CliError(str(exc)) from None
        binding = BINDINGS_BY_RPC[rpc_name]
        path = binding.path
        for key in re.findall(r"{(\w+)}", path):
            path = path.replace("{" + key + "}", quote(str(fields.pop(key)), safe=""))
        if binding.body:
            body = await self.call(binding.method, path, json=fields)
        else:
            params: list[tuple[str, str]] = []
            for key, value in fields.items():
                for item in value if isinstance(value, list) else [value]:
                    params.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
            body = await self.call(binding.method, path, params=params)
        return _response_message(rpc_name, body)

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.call("GET", path, params=params)

    async def post(self, path: str, json: Any = None, params: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.call("POST", path, json=json if json is not None else {}, params=params)

    async def delete(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.call("DELETE", path, params=params)


Command = Callable[[ApiClient, argparse.Namespace], Awaitable[int | None]]


def api_command(command: Command) -> Callable[[argparse.Namespace], int]:
    """Adapt an async API verb to argparse: connect, run, and turn any CliError into a message and exit 1."""

    def run(args: argparse.Namespace) -> int:
        async def session() -> int | None:
            client = ApiClient(resolve_target(args))
            try:
                return await command(client, args)
            finally:
                await client.close()

        try:
            return int(asyncio.run(session()) or 0)
        except CliError as exc:
            emit_error(args, str(exc))
            return 1

    return run
