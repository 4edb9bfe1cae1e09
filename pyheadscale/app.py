"""The composition root: assembling and running the server (keys, database, state, maps, DERP, the listeners).

`Server.start()` builds every part once and hands each exactly what it uses (the API gets its narrow context,
the control server its handlers); none of the parts imports this module back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from derp.http import add_derp_routes
from derp.server import DerpServer
from derp.stun import start_stun_server
from pyheadscale import private_files
from pyheadscale.api import meta
from pyheadscale.api.app import api_application
from pyheadscale.api.auth import ApiKeyGuard
from pyheadscale.api.context import ApiContext
from pyheadscale.api.service import HeadscaleService
from pyheadscale.audit import AuditLog
from pyheadscale.auth.interactive import PendingLogins
from pyheadscale.auth.oidc_login import OIDCLogin, start_oidc
from pyheadscale.auth.register_page import register_page_handler
from pyheadscale.auth.ssh_check_page import ssh_check_page_handler
from pyheadscale.bootstrap_dns import BootstrapDNS
from pyheadscale.config import Config
from pyheadscale.control import unimplemented
from pyheadscale.control.ping import PATH as PING_PATH
from pyheadscale.control.ping import PingTracker
from pyheadscale.control.poll import KEEPALIVE_SECONDS, MapHandler
from pyheadscale.control.register import RegisterHandler
from pyheadscale.control.ssh_action import PATH_PREFIX as SSH_ACTION_PREFIX
from pyheadscale.control.ssh_action import SSHActionHandler, SSHChecks
from pyheadscale.control.ts2021 import ControlServer
from pyheadscale.control.verify import DerpAccess, verify_handler
from pyheadscale.db.database import Database
from pyheadscale.derpmap import DERPMapSource
from pyheadscale.extra_records import ExtraRecordsFile
from pyheadscale.grpc.local import start_local_socket
from pyheadscale.grpc.server import start_grpc
from pyheadscale.health import HealthCheck
from pyheadscale.listener import LISTEN_BACKLOG, GuardedAppRunner, request_deadline
from pyheadscale.mapper.builder import MapBuilder, MapContext
from pyheadscale.mapper.distributor import Distributor
from pyheadscale.metrics import Metrics
from pyheadscale.policy.tag_owners import tags_not_owned
from pyheadscale.state.changes import Change, ChangeKind
from pyheadscale.state.ha_routes import HAProber, RouterHealthState
from pyheadscale.state.ipalloc import IPAllocator
from pyheadscale.state.names import now
from pyheadscale.state.policy import PolicyManager
from pyheadscale.state.store import Store
from pyheadscale.tailcfg.derp_map import DERPMap
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from pyheadscale.tls.acme_manager import ACMECertificates
from pyheadscale.tls.certfiles import context_from_files
from pyheadscale.tls.site import TLSSite

log = logging.getLogger(__name__)


PrivateT = TypeVar("PrivateT", MachinePrivate, NodePrivate)


def _read_or_create_key(path: Path, kind: type[PrivateT]) -> PrivateT:
    """Load a `privkey:` key file (the Noise machine key or the DERP node key), creating it (mode 0600) on
    first start."""
    if path.exists():
        return kind.from_text(path.read_text().strip())  # the file ends in a newline
    path.parent.mkdir(parents=True, exist_ok=True)
    key = kind.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.to_text() + "\n")
    return key


Closer = Callable[[], Any]
"""Takes one started part down; may return an awaitable."""


@dataclass(frozen=True, slots=True)
class Components:
    """The parts of a started server, each built once by `Server.start()`.

    None only where the config switches a feature off: the embedded DERP relay, OIDC logins, ACME.
    """

    metrics: Metrics
    db: Database
    store: Store
    audit: AuditLog
    router_health: RouterHealthState
    policy: PolicyManager
    logins: PendingLogins
    ssh_checks: SSHChecks
    pings: PingTracker
    control: ControlServer
    service: HeadscaleService
    derp: DerpServer | None
    oidc: OIDCLogin | None
    acme: ACMECertificates | None


class Server:
    """One pyheadscale server, the composition root: `start()` builds every part and brings every
    listener up, handing each part exactly what it uses; `stop()` takes them down, newest first."""

    def __init__(self, config: Config, *, keepalive: float = KEEPALIVE_SECONDS) -> None:
        self.config = config
        self.keepalive = keepalive
        self.ready = asyncio.Event()
        self._components: Components | None = None
        self._closers: list[Closer] = []

    @property
    def components(self) -> Components:
        if self._components is None:
            raise RuntimeError("the server is not started: await start() first")
        return self._components

    # The parts tools and tests reach most often, by name.
    @property
    def store(self) -> Store:
        return self.components.store

    @property
    def policy(self) -> PolicyManager:
        return self.components.policy

    @property
    def metrics(self) -> Metrics:
        return self.components.metrics

    @property
    def audit(self) -> AuditLog:
        return self.components.audit

    @property
    def logins(self) -> PendingLogins:
        return self.components.logins

    @property
    def ssh_checks(self) -> SSHChecks:
        return self.components.ssh_checks

    @property
    def pings(self) -> PingTracker:
        return self.components.pings

    @property
    def router_health(self) -> RouterHealthState:
        return self.components.router_health

    @property
    def derp(self) -> DerpServer | None:
        return self.components.derp

    @property
    def oidc(self) -> OIDCLogin | None:
        return self.components.oidc

    async def start(self) -> None:
        """Bring the server up; on any failure, take down whatever had started and re-raise."""
        try:
            self._components = await self._start()
        except BaseException:
            await self.stop()
            raise
        self.ready.set()

    async def _start(self) -> Components:
        config = self.config
        closers = self._closers
        metrics = Metrics()
        await asyncio.to_thread(private_files.make_private_dir, Path(config.data_dir))
        acme, tls_context = await self._tls_context()
        noise_key = await asyncio.to_thread(
            _read_or_create_key, config.path(config.noise.private_key_path), MachinePrivate
        )

        if config.database.type != "postgres":
            await asyncio.to_thread(
                private_files.ensure_private_file, config.path(config.database.sqlite.path)
            )
        if config.audit_log:
            await asyncio.to_thread(private_files.ensure_private_file, config.path(config.audit_log))
        db = await Database.open(config)
        closers.append(db.close)
        ips = IPAllocator(config.prefixes.v4, config.prefixes.v6, config.prefixes.allocation)
        audit = AuditLog(
            config.path(config.audit_log) if config.audit_log else None,
            config.limits.audit,
            config.limits.rate.audit_refusals,
            on_suppressed=metrics.audit_suppressed.inc,
        )
        store = Store(db, ips, audit)
        closers.append(store.close)
        store.ephemeral_timeout = config.ephemeral_inactivity_timeout
        await audit.start()
        closers.append(audit.close)
        await store.load()

        router_health = RouterHealthState(store)
        policy = PolicyManager(config, store, router_health)
        await policy.start()
        store.attach_policy(policy)
        closers.append(policy.close)
        logins = PendingLogins(
            config.limits.logins.max_pending,
            config.limits.logins.max_pending_per_source,
            tags_not_owned=lambda user_id, tags: tags_not_owned(policy.engine, user_id, tags),
        )
        ssh_checks = SSHChecks()
        pings = PingTracker()
        derp_source = DERPMapSource(config)
        await derp_source.start()
        ctx = MapContext(config, store, policy, derp_source.current)
        builder = MapBuilder(ctx)
        distributor = Distributor(builder)
        prober = HAProber(
            config.node.routes.ha, config.server_url, store, policy, router_health, distributor, pings
        )
        store.feed.subscribe(distributor.on_change)

        def derp_changed() -> None:
            ctx.derp_map = derp_source.current
            store.feed.publish([Change(ChangeKind.DERP)])

        derp_source.on_change = derp_changed
        closers.append(derp_source.close)
        await self._start_extra_records(builder, store)

        register = RegisterHandler(store, config, metrics, logins)
        maps = MapHandler(store, builder, distributor, metrics, keepalive=self.keepalive)
        closers.append(maps.close)
        metrics.bind_store(store, lambda: maps.streams)
        ssh_action = SSHActionHandler(store, policy, ssh_checks, config.server_url)
        store.feed.subscribe(functools.partial(_forget_ssh_approvals, ssh_checks))
        control = ControlServer(
            noise_key,
            {
                ("POST", "/machine/register"): register.handle,
                ("POST", "/machine/map"): maps.handle,
            }
            | dict.fromkeys(unimplemented.ROUTES, unimplemented.not_implemented),
            {SSH_ACTION_PREFIX: ssh_action.handle},
            config.limits,
            on_rate_limited=metrics.rate_limited.labels("handshakes").inc,
        )
        health = HealthCheck(db, self.ready)
        service = HeadscaleService(
            ApiContext(
                store,
                policy,
                logins,
                ssh_checks,
                health,
                login_expiry=lambda: config.node.expiry_for(tagged=False, requested=None, at=now()),
            )
        )

        limits = config.limits.connections
        app = web.Application(
            client_max_size=1 << 20, middlewares=[metrics.middleware, request_deadline(limits)]
        )
        control.add_routes(app)
        app.router.add_get("/health", health.handle)
        meta.add_routes(app)
        derp_access = DerpAccess(store)
        app.router.add_post("/verify", verify_handler(derp_access))
        oidc = await start_oidc(config, store, logins, ssh_checks)
        if oidc is not None:
            closers.append(oidc.provider.close)
            oidc.add_routes(app)
        app.router.add_get("/register/{auth_id}", register_page_handler(logins, oidc))
        app.router.add_get("/auth/{auth_id}", ssh_check_page_handler(ssh_checks, store, oidc))

        async def derp_map(_request: web.Request) -> web.Response:
            return web.json_response(ctx.derp_map)

        app.router.add_get("/derpmap/default", derp_map)
        app.router.add_route("*", PING_PATH, pings.handle)
        derp = await self._start_derp(app, store, derp_access, lambda: ctx.derp_map)
        rate = config.limits.rate.api_auth_failures
        app.add_subapp("/api/v1", api_application(service, ApiKeyGuard(store, rate, metrics)))

        refused = metrics.connections_refused
        runner = GuardedAppRunner(app, limits, lambda reason: refused.labels(reason).inc(), access_log=None)
        await runner.setup()
        closers.append(runner.cleanup)
        # Before the listener: the sessions it holds (TS2021 streams, waiting logins, checks, pings).
        closers.extend([control.close, pings.close, ssh_checks.close, logins.close])
        host, port = config.listen
        if tls_context is None:
            await web.TCPSite(runner, host, port, reuse_address=True, backlog=LISTEN_BACKLOG).start()
        else:
            handshake = limits.header_timeout.total_seconds()
            site = TLSSite(
                runner,
                host,
                port,
                ssl_context=tls_context,
                handshake_timeout=handshake,
                reuse_address=True,
                backlog=LISTEN_BACKLOG,
            )
            await site.start()
        scheme = "https" if tls_context is not None else "http"
        if acme is not None:
            acme.begin()  # TLS-ALPN-01 is answered on this listener, so only now
        log.info(
            "pyheadscale listening on %s://%s (server_url %s)", scheme, config.listen_addr, config.server_url
        )
        await self._start_unix_socket(service)
        await self._start_metrics(metrics)
        # Its own guard: failed attempts over gRPC and over REST are limited apart, as two listeners.
        grpc_server = await start_grpc(config, service, ApiKeyGuard(store, rate, metrics))
        if grpc_server is not None:
            closers.append(lambda: grpc_server.stop(grace=1.0))

        prober.start()
        closers.append(prober.close)
        return Components(
            metrics=metrics,
            db=db,
            store=store,
            audit=audit,
            router_health=router_health,
            policy=policy,
            logins=logins,
            ssh_checks=ssh_checks,
            pings=pings,
            control=control,
            service=service,
            derp=derp,
            oidc=oidc,
            acme=acme,
        )

    async def _start_extra_records(self, builder: MapBuilder, store: Store) -> None:
        """dns.extra_records_path: its records in every map, pushed to every node when the file changes."""
        if not self.config.dns.extra_records_path:
            return

        def changed(records: list[dict[str, str]]) -> None:
            builder.set_extra_records(records)
            store.feed.publish([Change(ChangeKind.DNS)])

        records = ExtraRecordsFile(self.config.path(self.config.dns.extra_records_path), changed)
        self._closers.append(records.close)
        await records.start()
        builder.set_extra_records(records.records)

    async def _start_derp(
        self,
        app: web.Application,
        store: Store,
        access: DerpAccess,
        derp_map: Callable[[], DERPMap],
    ) -> DerpServer | None:
        """The embedded DERP relay and STUN, when derp.server.enabled."""
        server_cfg = self.config.derp.server
        if not server_cfg.enabled:
            return None
        derp_key = await asyncio.to_thread(
            _read_or_create_key, self.config.path(server_cfg.private_key_path), NodePrivate
        )
        verify = access.admits_key if server_cfg.verify_clients else None
        derp = DerpServer(derp_key, verify_client=verify)
        if verify is not None:
            store.feed.subscribe(access.revoke_into(derp.close_client))
        add_derp_routes(app, derp)
        app.router.add_get("/bootstrap-dns", BootstrapDNS(derp_map).handle)
        host, _, port = server_cfg.stun_listen_addr.rpartition(":")
        stun = await start_stun_server(host.strip("[]") or "0.0.0.0", int(port))
        self._closers.append(stun.close)
        return derp

    async def _start_unix_socket(self, service: HeadscaleService) -> None:
        """The local API for the CLI: trusted by the socket's file permissions, so no API key is needed."""
        if not self.config.unix_socket:
            return
        path = self.config.path(self.config.unix_socket)
        mode = int(self.config.unix_socket_permission, 8)
        sock = await asyncio.to_thread(private_files.bind_unix_socket, path, mode)
        local = web.Application()
        local.add_subapp("/api/v1", api_application(service, None))
        runner = web.AppRunner(local, access_log=None)
        await runner.setup()
        self._closers.append(runner.cleanup)
        # Shared with Headscale's CLI, which speaks gRPC here: see grpc/local.py.
        self._closers.append(await start_local_socket(service, sock, runner))

    async def _tls_context(self) -> tuple[ACMECertificates | None, ssl.SSLContext | None]:
        """TLS for listen_addr: from tls_cert_path/tls_key_path (a bad file stops the start), or from ACME
        (whose manager is returned too)."""
        config = self.config
        if config.tls_letsencrypt_hostname:
            acme = ACMECertificates(config)
            self._closers.append(acme.close)
            await acme.start()
            return acme, acme.context
        if not config.tls_cert_path:
            return None, None
        cert, key = config.path(config.tls_cert_path), config.path(config.tls_key_path)
        return None, await asyncio.to_thread(context_from_files, cert, key)

    async def _start_metrics(self, metrics: Metrics) -> None:
        listen = self.config.metrics_listen
        if listen is None:
            return
        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", metrics.handle)
        # Unauthenticated like the main listener, so held to the same connection limits.
        refused = metrics.connections_refused
        runner = GuardedAppRunner(
            metrics_app, self.config.limits.connections, lambda r: refused.labels(r).inc(), access_log=None
        )
        await runner.setup()
        self._closers.append(runner.cleanup)
        await web.TCPSite(runner, listen[0], listen[1], reuse_address=True).start()

    async def stop(self) -> None:
        """Take down whatever started, newest first; a part failing to close does not keep the rest up."""
        while self._closers:
            close = self._closers.pop()
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    await result


def _forget_ssh_approvals(checks: SSHChecks, change: Change) -> None:
    if change.kind is ChangeKind.NODE_REMOVED and change.node_id is not None:
        checks.forget_node(change.node_id)


#: The cyclic garbage collector's thresholds while the server runs: the young generation is collected every
#: 20,000 allocations (Python's default is 700), the older ones as by default.
COLLECTOR_THRESHOLDS = (20_000, 10, 10)


def prepare_collector() -> None:
    """What the server does with the cyclic garbage collector before it starts: what is imported by then
    lives as long as the process, so it is frozen out of later collections, and the server's thresholds
    apply from here on. Start-up loads the tailnet and compiles the policy: at 10,000 nodes, with the
    default thresholds, three full collections over the imported modules cost a third of the compile.
    benchmarks/policy_compile.py does the same at the same point, so that it measures what the server does.
    """
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def settle_collector() -> None:
    """What the server does with the cyclic garbage collector once it is up (and the benchmark after its
    start-up compile): what exists by then (the loaded state) lives as long as the process; frozen, it is no
    longer rescanned by every full collection, which otherwise grow with it (about a tenth of a
    registration's CPU went to collections before)."""
    gc.collect()
    gc.freeze()


async def serve_forever(config: Config, *, keepalive: float = KEEPALIVE_SECONDS) -> None:
    """`serve` until SIGINT or SIGTERM; `keepalive` shortened only by benchmarks, to measure keep-alives."""
    prepare_collector()
    server = Server(config, keepalive=keepalive)
    await server.start()
    settle_collector()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    policy = server.policy
    reloads: set[asyncio.Task[bool]] = set()

    def reload_policy() -> None:
        log.info("SIGHUP: re-reading the policy file")
        task = loop.create_task(policy.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_policy)
    try:
        await stop.wait()
    finally:
        await server.stop()
