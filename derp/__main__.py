"""Standalone DERP server (``python -m derp`` / ``pyheadscale-derper``), with flags modelled on derper."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from derp.config import ConfigError, load_or_create_private_key
from derp.derpmap import DEFAULT_REGION_ID, single_region_derpmap
from derp.http import add_derp_routes
from derp.server import DerpServer
from derp.stun import StunServer, start_stun_server
from pyheadscale.tailkey import DerpMeshKey, InvalidKeyError, NodePrivate

log = logging.getLogger("derper")

DEV_ADDR = "127.0.0.1:3340"
_UNSAFE_HOSTNAME_CHARS = re.compile(r"[^a-zA-Z0-9.-]")
HOME_PAGE = "<html><body><h1>DERP</h1><p>This is a pyheadscale DERP relay server.</p></body></html>\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyheadscale-derper", description="DERP relay and STUN server.")
    p.add_argument("-a", "--addr", default=":443", help="listen address, ':port', 'ip:port' or '[ip]:port'")
    p.add_argument("--dev", action="store_true", help=f"development mode: {DEV_ADDR}, throwaway key, no TLS")
    p.add_argument("-c", "--config", help="JSON file holding the private key; created if missing")
    p.add_argument("--hostname", default="", help="TLS host name; also names the manual-mode cert files")
    p.add_argument("--certmode", choices=["manual"], help="'manual': load <certdir>/<hostname>.crt and .key")
    p.add_argument(
        "--certdir", default="derper-certs", help="directory of certificates for --certmode manual"
    )
    p.add_argument("--tls-cert", help="PEM certificate chain file (enables TLS)")
    p.add_argument("--tls-key", help="PEM private key file for --tls-cert")
    p.add_argument(
        "--http-port",
        type=int,
        default=80,
        help="when serving TLS, also serve plain HTTP on this port (same IP); -1 disables",
    )
    p.add_argument("--stun", action=argparse.BooleanOptionalAction, default=True, help="run a STUN server")
    p.add_argument("--stun-port", type=int, default=3478, help="UDP port for STUN (same IP as --addr)")
    p.add_argument("--mesh-with", default="", help="comma-separated peer hostnames or /derp URLs")
    p.add_argument("--mesh-psk-file", help="file holding the 64-hex-digit mesh pre-shared key")
    p.add_argument("--mesh-ca-file", help="PEM CA bundle to verify mesh peers' certificates")
    p.add_argument(
        "--verify-clients",
        action="store_true",
        help="only admit clients the --verify-client-url approves, refusing all if it is unreachable",
    )
    p.add_argument("--verify-client-url", help="admission URL; POSTed {NodePublic, Source}, answers {Allow}")
    p.add_argument(
        "--verify-client-url-fail-open",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="admit clients when the admission URL is unreachable (ignored with --verify-clients)",
    )
    p.add_argument(
        "--reverify-interval",
        type=float,
        default=60.0,
        help="with --verify-client-url: re-ask about connected clients every this many seconds and close "
        "those refused (a deleted or expired node's relay connection); 0 disables",
    )
    p.add_argument(
        "--print-derpmap", action="store_true", help="print a one-region DERPMap JSON and continue"
    )
    p.add_argument("--region-id", type=int, default=DEFAULT_REGION_ID, help="region ID for --print-derpmap")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop (pip install uvloop)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING...")
    return p


def split_host_port(addr: str) -> tuple[str, int]:
    """Parse derper-style listen addresses: ':443', '127.0.0.1:443', '[::1]:443'."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"invalid listen address {addr!r}: want host:port")
    host = host.removeprefix("[").removesuffix("]")
    return host, int(port)


def mesh_urls(spec: str) -> list[str]:
    urls = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        urls.append(entry if "://" in entry else f"https://{entry}/derp")
    return urls


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.certmode == "manual":
        if not args.hostname:
            raise ValueError("--certmode manual needs --hostname")
        name = _UNSAFE_HOSTNAME_CHARS.sub("", args.hostname)
        cert, key = Path(args.certdir) / f"{name}.crt", Path(args.certdir) / f"{name}.key"
    elif args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        cert, key = Path(args.tls_cert), Path(args.tls_key)
    else:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def read_mesh_key(path: str | None) -> DerpMeshKey | None:
    if not path:
        return None
    return DerpMeshKey.from_text(Path(path).read_text())


def _listen_host(host: str) -> str | None:
    """aiohttp binds every interface for None."""
    return host or None


def _public_url(scheme: str, host: str, port: int) -> str:
    shown = host or "0.0.0.0"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(shown).version == 6:
            shown = f"[{shown}]"
    return f"{scheme}://{shown}:{port}/derp"


async def _home(_: web.Request) -> web.Response:
    return web.Response(text=HOME_PAGE, content_type="text/html")


async def _robots(_: web.Request) -> web.Response:
    return web.Response(text="User-agent: *\nDisallow: /\n")


async def serve(args: argparse.Namespace) -> None:
    host, port = split_host_port(DEV_ADDR if args.dev else args.addr)
    if args.dev:
        private_key = NodePrivate.generate()
    elif args.config:
        private_key = load_or_create_private_key(args.config)
    else:
        raise ValueError("-c <config path> is required (or use --dev)")
    context = None if args.dev else tls_context(args)
    if port == 443 and context is None and not args.dev:
        raise ValueError("port 443 needs TLS: give --tls-cert/--tls-key or --certmode manual")
    mesh_key = read_mesh_key(args.mesh_psk_file)
    peers = mesh_urls(args.mesh_with)
    if peers and not mesh_key:
        raise ValueError("--mesh-with requires --mesh-psk-file")
    if args.verify_clients and not args.verify_client_url:
        raise ValueError("--verify-clients needs --verify-client-url (there is no local tailscaled to ask)")

    server = DerpServer(
        private_key,
        mesh_key=mesh_key,
        verify_client_url=args.verify_client_url,
        verify_client_url_fail_open=args.verify_client_url_fail_open and not args.verify_clients,
        reverify_interval=args.reverify_interval if args.reverify_interval > 0 else None,
    )
    app = web.Application()
    add_derp_routes(app, server)
    app.router.add_get("/", _home)
    app.router.add_get("/robots.txt", _robots)

    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    stun: StunServer | None = None
    try:
        await web.TCPSite(runner, _listen_host(host), port, ssl_context=context).start()
        scheme = "https" if context else "http"
        log.info("serving DERP on %s as %s", _public_url(scheme, host, port), server.public_key.text)
        if context is not None and args.http_port >= 0:
            await web.TCPSite(runner, _listen_host(host), args.http_port).start()
            log.info("serving plain HTTP on port %d", args.http_port)
        if args.stun:
            stun = await start_stun_server(host, args.stun_port)
            log.info("serving STUN on UDP %s:%d", *stun.local_address[:2])
        if args.print_derpmap:
            derpmap = single_region_derpmap(
                args.hostname or host or "127.0.0.1",
                derp_port=port,
                stun_port=stun.local_address[1] if stun is not None else None,
                region_id=args.region_id,
                plain_http=context is None,
            )
            print(json.dumps(derpmap, indent=2), flush=True)
        if peers:
            mesh_ssl: ssl.SSLContext | None = None
            if args.mesh_ca_file:
                mesh_ssl = ssl.create_default_context(cafile=args.mesh_ca_file)
            await server.start_mesh(peers, ssl=mesh_ssl)
            log.info("meshing with %s", ", ".join(peers))

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("shutting down; final stats: %s", json.dumps(server.stats()))
    finally:
        if stun is not None:
            stun.close()
        await runner.cleanup()  # its on_shutdown hook closes the DERP server


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        if args.uvloop:
            import uvloop

            uvloop.run(serve(args))
        else:
            asyncio.run(serve(args))
    except (ValueError, OSError, ConfigError, InvalidKeyError, ssl.SSLError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
