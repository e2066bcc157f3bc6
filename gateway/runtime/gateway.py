"""The running gateway: owns the current table, the pools, the state store, the shadow dispatcher, the stats, and
the two listeners (public and admin). ``strangler up`` builds one ``Gateway`` per worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.admin.admission import AdmissionAPI, AdmissionGauges
from gateway.admin.app import API, create_admin_app
from gateway.admin.diffs import DiffsAPI
from gateway.admin.fleet import FleetAPI, StoreGauges, gateway_version
from gateway.admin.gauges import MetricsAPI, StateGauges
from gateway.admin.hosts import admin_access
from gateway.admin.routes import RoutesAPI
from gateway.admin.status import Lifecycle, StatusAPI
from gateway.admin.sync import SyncAPI, SyncGauges
from gateway.admin.tls_gauges import TLSGauges
from gateway.admin.traces import TraceAPI
from gateway.admission.room import Rooms
from gateway.config import model as config_mod
from gateway.proxy.protect import Protection
from gateway.proxy.tls import handshake_error
from gateway.proxy.upstream import Upstreams
from gateway.rollout.controller import Rollout
from gateway.routing.reload import Reloader, ReloadStatus
from gateway.routing.table import Table, TableRef
from gateway.server.handler import PublicHandler
from gateway.server.tls import ListenerCertificates
from gateway.server.wire import public_server
from gateway.shadow.dispatcher import ShadowDispatcher
from gateway.stores.open import open_stores
from gateway.stores.workers import Fleet
from gateway.sync.capture import Mirror
from gateway.sync.deliver import Deliverer
from gateway.sync.verify import Verifier
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.recorder import Recorder
from gateway.telemetry.stats import StatsRegistry
from gateway.telemetry.tracing import GatewayTracer
from observability.logging import AccessLog

log = logging.getLogger("strangler.gateway")

TOKEN_ENV = "STRANGLER_ADMIN_TOKEN"
TOKEN_FILE = "admin.token"


def instance_name(worker: int | None) -> str:
    """This process's name among the gateways sharing a store: host, process id, worker index."""
    return f"{socket.gethostname()}:{os.getpid()}" + (f":w{worker}" if worker is not None else "")


def token_path(cfg: config_mod.Config) -> Path:
    return cfg.store.dir / TOKEN_FILE


def ensure_token(cfg: config_mod.Config) -> str:
    """The admin token: from the environment, else the token file beside routes.yaml (created 0600 if missing)."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    path = token_path(cfg)
    try:
        existing = path.read_text().strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


class Gateway:
    """The composition root of one gateway process: builds every collaborator once, hands each what it needs,
    starts the listeners and background tasks, and stops them in reverse order. Nothing receives the gateway
    itself; its attributes are there for the CLI, the demo and tests to look at."""

    def __init__(self, cfg: config_mod.Config, *, listen: tuple[str, int] | None = None,
                 admin_listen: tuple[str, int] | None = None, reuse_port: bool = False,
                 primary: bool = True, serve_admin: bool = True, worker: int | None = None) -> None:
        self.tables = TableRef(Table(cfg, 1))
        self.listen = listen or cfg.listen
        self.admin_listen = admin_listen or cfg.admin_listen
        self.reuse_port = reuse_port
        self.serve_admin = serve_admin
        self.lifecycle = Lifecycle()
        self.instance = instance_name(worker)
        self.started = time.time()
        self.stores = open_stores(cfg, instance=self.instance, worker=worker)
        self.state = self.stores.state
        self.stats = StatsRegistry()
        # With several worker processes, or a fleet sharing a store, each process shares its statistics so the
        # guard judges their combined traffic.
        self.fleet = (Fleet(self.stores.peers, self.stats, self._judge_guarded)
                      if self.stores.peers is not None else None)
        self.rollout = Rollout(self.state, self.stats, primary=primary,
                               peers=self.fleet.peer_stats if self.fleet is not None else None,
                               forget_peers=self.fleet.forget if self.fleet is not None else None)
        self.upstreams = Upstreams()
        self.protection = Protection()
        self.protection.update(cfg.backends.values())
        self.tracing = GatewayTracer(self.stores.traces)
        self.metrics = Metrics()
        self.access = AccessLog()
        self.recorder = Recorder(self.tracing, self.metrics, self.access, self.stats)
        self.shadow = ShadowDispatcher(self.stores.comparisons, self.upstreams, self.stats, self.recorder,
                                       self.rollout.observed)
        self.metrics.sources.append(StateGauges(
            self.tables, self.rollout, self.protection, self.stats, self.shadow,
            {"comparisons": self.stores.comparisons, "traces": self.stores.traces, "access_log": self.access}))
        self.metrics.sources.append(StoreGauges(self.stores.members))
        self.rooms = Rooms(self.stores.admission, self.state.record, primary=primary)
        self.rooms.reloaded(None, cfg, "file")
        self.metrics.sources.append(AdmissionGauges(self.rooms))
        self.metrics.sources.append(TLSGauges(self.upstreams))
        self.reloader = Reloader(cfg.path, self.tables, self._swapped, self._reload_failed)
        # HTTPS on the public listener: fixed at start (like the address); the certificate follows the files.
        self.certificates = ListenerCertificates(cfg.tls) if cfg.tls is not None else None
        # Mirrored writes: every worker journals; the primary delivers (in order per route, one deliverer).
        journal = self.stores.journal
        assert journal is not None
        self.verifier = Verifier(journal, self.tables, lambda route: self.shadow.noise.get(route, frozenset()))
        self.deliverer = Deliverer(journal, self.tables, self.upstreams, self.verifier)
        self.mirror = Mirror(journal, self.deliverer.committed)
        self.metrics.sources.append(SyncGauges(self.deliverer))
        self.primary = primary
        self.token = ensure_token(cfg)
        self._runners: list[web.BaseRunner] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.rollout.clear_stale_pins(cfg, actor="file")

    # -- what tests, the CLI and the demo look at ------------------------------------------------------------------

    @property
    def table(self) -> Table:
        return self.tables.current

    @property
    def bound(self) -> dict[str, tuple[str, int]]:
        return self.lifecycle.bound

    # -- reloads ---------------------------------------------------------------------------------------------------

    def _swapped(self, old: Table, new: Table, changes: list[dict[str, Any]], actor: str) -> None:
        self.protection.update(new.config.backends.values())
        self.upstreams.retain(new.config.backends.values())
        self.metrics.reloaded(True)
        self.rollout.reloaded(new.config, changes, actor, new.generation)
        self.rooms.reloaded(old.config, new.config, actor)
        self._announce()

    def _judge_guarded(self) -> None:
        for route in self.table.routes:
            self.rollout.observed(route)

    def _reload_failed(self, status: ReloadStatus) -> None:
        self.metrics.reloaded(False)
        self.rollout.reload_failed(status.actor, status.error or "")

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def _admin_apis(self) -> list[API]:
        routes = RoutesAPI(self.tables, self.rollout, self.stats, self.rooms.view)
        configured = {"public": self.listen, "admin": self.admin_listen}
        return [StatusAPI(self.lifecycle, self.tables, self.reloader, self.state, configured), routes,
                DiffsAPI(self.tables, self.stores.comparisons, self.shadow, self.stats, routes),
                TraceAPI(self.stores.traces, self.tracing.instance, self.tables,
                         self.stores.comparisons), MetricsAPI(self.metrics),
                AdmissionAPI(self.tables, self.rooms),
                SyncAPI(self.tables, self.rollout, self.deliverer.journal, self.deliverer, self.stores.comparisons),
                FleetAPI(self.stores.members, self.instance)]

    def _announce(self) -> None:
        """Tell the other instances sharing the store who this one is and what it serves."""
        if self.stores.members is None or "public" not in self.bound:
            return
        table = self.table
        admin = self.bound.get("admin")
        self.stores.members.announce({
            "id": self.instance, "address": _hostport(self.bound["public"]),
            "admin": _hostport(admin) if admin else "", "version": gateway_version(),
            "generation": table.generation, "digest": table.config.digest, "started": self.started})

    async def start(self) -> None:
        handler = PublicHandler(self.tables, self.rollout, self.shadow, self.recorder, self.upstreams,
                                self.protection, self.rooms, self.mirror)
        public = public_server(handler, lambda: self.table.config.limits)
        runner = web.ServerRunner(public, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.listen[0], self.listen[1], reuse_port=self.reuse_port or None,
                           backlog=1024,
                           ssl_context=self.certificates.context if self.certificates is not None else None)
        await site.start()
        self.bound["public"] = _bound_address(runner)

        if self.serve_admin:
            access = admin_access(self.tables, lambda: self.bound.get("admin", self.admin_listen), self.token)
            admin = web.AppRunner(create_admin_app(self.token, self._admin_apis(), access), handle_signals=False,
                                  access_log=None)
            await admin.setup()
            self._runners.append(admin)
            admin_site = web.TCPSite(admin, self.admin_listen[0], self.admin_listen[1])
            await admin_site.start()
            self.bound["admin"] = _bound_address(admin)
        self.recorder.start_export()
        self._announce()

        self._spawn(self.reloader.watch())
        self._spawn(self._follow_state())
        self._spawn(self._advance_steps())
        if self.fleet is not None:
            self._spawn(self.fleet.run())
        self._spawn(self._keep_rooms())
        if self.certificates is not None:
            self._spawn(self.certificates.watch(lambda: self.tables.current.config.tls))
        if self.primary:
            self._spawn(self.deliverer.run())
        self.lifecycle.ready.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def probe_backends(self) -> None:
        """Say at start-up which backends cannot be reached, rather than leaving it to the first 502."""
        async def probe(backend: Any) -> str | None:
            tls = self.upstreams.tls(backend)   # an https:// backend is probed with a verified handshake
            try:
                async with asyncio.timeout(max(backend.timeouts.connect, 0.1)):
                    _reader, writer = await asyncio.open_connection(
                        backend.host, backend.port, **(tls.connect_args() if tls is not None else {}))
                writer.close()
                return None
            except ssl.SSLError as exc:
                return f"backend {handshake_error(exc, backend).detail}"
            except (OSError, TimeoutError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                return f"backend {backend.name} at {backend.host}:{backend.port} is not reachable ({reason})"

        backends = list(self.table.config.backends.values())
        for failure in await asyncio.gather(*(probe(b) for b in backends)):
            if failure:
                log.warning("%s; requests routed to it get 502 until it comes up", failure,
                            extra={"event": "backend_unreachable"})

    async def _follow_state(self) -> None:
        """Pick up rollbacks made by other worker processes (or the CLI against another worker)."""
        while True:
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                self.state.refresh()

    async def _advance_steps(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.rollout.advance_steps(self.table.routes)
            except Exception:  # never let a bookkeeping error stop the loop
                log.exception("advancing canary steps failed")

    async def _keep_rooms(self) -> None:
        """Sweep out waiting visitors who stopped polling and write the lines behind, about once a second."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.stores.admission.maintain()
            except Exception:  # never let a bookkeeping error stop the loop
                log.exception("waiting-room upkeep failed")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in reversed(self._runners):
            await runner.cleanup()
        with contextlib.suppress(Exception):
            await self.stores.admission.flush()
        await self.shadow.drain()
        await self.verifier.close()
        await self.upstreams.close()
        self.recorder.close()
        if self.fleet is not None:
            await self.fleet.publish_rest()
        self.stores.close()

    def banner(self) -> str:
        host, port = self.bound["public"]
        lines = [f"strangler: serving generation {self.table.generation} of {self.table.config.path} "
                 f"({len(self.table.routes)} route(s))",
                 f"  gateway:  {'https' if self.certificates is not None else 'http'}://{host}:{port}/"]
        if "admin" in self.bound:
            ahost, aport = self.bound["admin"]
            lines.append(f"  console:  http://{ahost}:{aport}/   (admin API under /api/)")
            if not os.environ.get(TOKEN_ENV):
                lines.append(f"  admin token: {token_path(self.table.config)}")
        for name, pin in sorted(self.state.pins.items()):
            lines.append(f"  route {name} is rolled back (by {pin.actor}: {pin.reason}); "
                         f"`strangler resume {name}` undoes it")
        return "\n".join(lines)

    async def run_with_banner(self) -> None:
        def started() -> None:
            print(self.banner(), file=sys.stderr, flush=True)
            self._spawn(self.probe_backends())

        await self.run(on_started=started)

    async def run(self, on_started: Any = None) -> None:
        """Serve until SIGINT/SIGTERM (after ``limits.drain``; a second signal cuts the drain short); SIGHUP
        reloads."""
        loop = asyncio.get_running_loop()
        hurry = asyncio.Event()

        def on_stop() -> None:
            (hurry if self.lifecycle.stopping.is_set() else self.lifecycle.stopping).set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_stop)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reloader.reload("signal")))
        await self.start()
        if on_started is not None:
            on_started()
        try:
            await self.lifecycle.stopping.wait()
            await self._drain(hurry)
        finally:
            await self.stop()

    async def _drain(self, hurry: asyncio.Event) -> None:
        """Keep serving for ``limits.drain`` seconds after the stop signal: /readyz already answers 503, so a load
        balancer's health check takes this gateway out of rotation while it still answers whatever arrives."""
        drain = self.table.config.limits.drain
        if drain <= 0:
            return
        log.info("stopping: /readyz answers 503; serving for %gs more (signal again to stop now)", drain)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), drain)


def _hostport(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


def _bound_address(runner: web.BaseRunner) -> tuple[str, int]:
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return str(addr[0]), int(addr[1])
    return ("", 0)

