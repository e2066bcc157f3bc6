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
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import model as config_mod
from gateway.proxy.protect import Protection
from gateway.proxy.upstream import Upstreams
from gateway.rollout import guard as guard_mod
from gateway.rollout import steps
from gateway.rollout.guard import Guards
from gateway.routing.table import Route, Table
from gateway.runtime.reload import Reloader, ReloadStatus
from gateway.server.handler import PublicHandler
from gateway.server.wire import public_server
from gateway.shadow.dispatcher import ShadowDispatcher
from gateway.stores.state import StateStore
from gateway.stores.workers import Fleet
from gateway.telemetry.recorder import Telemetry
from gateway.telemetry.stats import StatsRegistry

log = logging.getLogger("strangler.gateway")

TOKEN_ENV = "STRANGLER_ADMIN_TOKEN"
TOKEN_FILE = "admin.token"


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
    def __init__(self, cfg: config_mod.Config, *, listen: tuple[str, int] | None = None,
                 admin_listen: tuple[str, int] | None = None, reuse_port: bool = False,
                 primary: bool = True, serve_admin: bool = True, worker: int | None = None) -> None:
        self.table = Table(cfg, 1)
        self.listen = listen or cfg.listen
        self.admin_listen = admin_listen or cfg.admin_listen
        self.reuse_port = reuse_port
        self.serve_admin = serve_admin
        # With several workers, one of them (the primary) writes shared history entries for reloads.
        self.primary = primary
        self.state = StateStore(cfg.store.dir / "state.db")
        self.upstreams = Upstreams()
        self.protection = Protection()
        self.protection.update(cfg.backends.values())
        self.guards = Guards()
        # With several worker processes, each shares its statistics so the guard judges combined traffic.
        self.fleet = Fleet(cfg.store.dir / "state.db", worker) if worker is not None else None
        self.stats = StatsRegistry()
        self.shadow = ShadowDispatcher(self)
        # Traces, metrics and the access log; ``tracing`` and ``metrics`` are shortcuts for other components.
        self.telemetry = Telemetry(self, cfg)
        self.tracing = self.telemetry.tracing
        self.metrics = self.telemetry.metrics
        self.reloader = Reloader(self, cfg.path)
        self.token = ensure_token(cfg)
        self._runners: list[web.BaseRunner] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.bound: dict[str, tuple[str, int]] = {}
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self.loaded_at = time.time()
        self._clear_stale_pins(cfg, actor="file")

    # -- per request -----------------------------------------------------------------------------------------------

    def weight_for(self, route: Route) -> float | None:
        if route.stage != "canary" or route.spec is None or route.spec.canary is None \
                or not route.spec.canary.steps:
            return None
        return steps.current_weight(self, route)

    def observe(self, route: Route, decision: Any, request: web.BaseRequest, outcome: Any, elapsed: float) -> None:
        stats = self.stats.route(route.name)
        error = outcome.status >= 500 or outcome.error is not None
        side = "legacy" if outcome.fell_back else decision.side
        stats.side(side).request(elapsed, error)
        if side == "extracted" or outcome.fell_back:
            self._judge(route)
        self.telemetry.request_done(route, decision, request, outcome, elapsed)

    def record_attempt(self, route: Route, side: str, error: Exception) -> None:
        """A failed attempt the user did not see (a fallback retried it): it still counts against its side."""
        self.stats.route(route.name).side(side).request(0.0, True)

    def _judge(self, route: Route) -> None:
        spec = route.spec
        if spec is None or spec.guard is None or route.name in self.state.pins:
            return
        stage = route.stage
        if stage == "legacy":
            return
        previous = self.guards.state.get(route.name)
        peers = self.fleet.peers.get(route.name) if self.fleet is not None else None
        judgement = self.guards.evaluate(route.name, spec.guard, self.stats.route(route.name), stage, peers)
        if previous is None or previous.state != judgement.state:
            self._guard_changed(route, judgement)
        if judgement.state == guard_mod.FAILING:
            self.rollback(route, "guard", judgement.reason, {"figures": judgement.figures})

    def rollback(self, route: Route, actor: str, reason: str, detail: dict[str, Any] | None = None) -> None:
        """Pin a route to legacy now; persisted, so it survives restarts and reaches every worker."""
        fingerprint = route.spec.fingerprint if route.spec else ""
        self.state.pin(route.name, fingerprint, actor, reason, {"stage": route.stage, **(detail or {})})
        log.warning("route %s rolled back to legacy by %s: %s", route.name, actor, reason,
                    extra={"event": "rollback", "route": route.name, "actor": actor, "reason": reason})

    def resume(self, route: Route, actor: str, reason: str = "") -> bool:
        resumed = self.state.unpin(route.name, actor, reason or "resumed")
        self.stats.route(route.name).reset_new_side()
        self.guards.forget(route.name)
        if resumed:
            log.info("route %s resumed stage %s by %s", route.name, route.stage, actor,
                     extra={"event": "resume", "route": route.name, "actor": actor})
        return resumed

    def _guard_changed(self, route: Route, judgement: guard_mod.Judgement) -> None:
        log.info("route %s guard: %s (%s)", route.name, judgement.state, judgement.reason,
                 extra={"event": "guard", "route": route.name, "state": judgement.state,
                        "figures": judgement.figures})
        if judgement.state != guard_mod.FAILING:  # a failure is recorded as the rollback it causes
            self.state.record("guard", route.name, "guard", f"{judgement.state}: {judgement.reason}",
                              {"state": judgement.state, "figures": judgement.figures})

    def on_verdict(self, route: Route, verdict: str) -> None:
        """A shadow comparison finished: the guard of a shadowed route judges the shadow's errors and mismatches."""
        self.metrics.verdict(route.name, verdict)
        self._judge(route)

    # -- reloads ---------------------------------------------------------------------------------------------------

    def swap(self, table: Table) -> None:
        self.table = table
        self.loaded_at = time.time()
        self.protection.update(table.config.backends.values())
        self.upstreams.retain(table.config.backends.values())

    def on_reloaded(self, old: config_mod.Config, new: config_mod.Config, changes: list[dict[str, Any]],
                    actor: str) -> None:
        self.metrics.reloaded(True)
        if self.primary:
            self.state.record("reload", None, actor, f"generation {self.table.generation}",
                              {"generation": self.table.generation, "changes": changes})
            for change in changes:
                self.state.record("config", change["route"], actor, change["change"], change)
        for change in changes:
            if change["change"] != "added":
                # A new intent for the route: the guard judges the new spec on fresh evidence.
                self.stats.route(change["route"]).reset_new_side()
                self.guards.forget(change["route"])
        self._clear_stale_pins(new, actor)

    def on_reload_failed(self, status: ReloadStatus) -> None:
        self.metrics.reloaded(False)
        if self.primary:
            self.state.record("reload_failed", None, status.actor, status.error or "")

    def _clear_stale_pins(self, cfg: config_mod.Config, actor: str) -> None:
        """A pin is the answer to one version of a route; a new spec in the file is a new intent and clears it."""
        self.state.refresh()
        for name, pin in list(self.state.pins.items()):
            spec = cfg.route(name)
            if spec is None or spec.fingerprint != pin.fingerprint:
                self.state.unpin(name, actor, "route changed in routes.yaml", kind="resume")

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        from gateway.admin.app import create_admin_app

        public = public_server(PublicHandler(self), lambda: self.table.config.limits)
        runner = web.ServerRunner(public, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.listen[0], self.listen[1], reuse_port=self.reuse_port or None,
                           backlog=1024)
        await site.start()
        self.bound["public"] = _bound_address(runner)

        if self.serve_admin:
            admin = web.AppRunner(create_admin_app(self), handle_signals=False, access_log=None)
            await admin.setup()
            self._runners.append(admin)
            admin_site = web.TCPSite(admin, self.admin_listen[0], self.admin_listen[1])
            await admin_site.start()
            self.bound["admin"] = _bound_address(admin)
        self.telemetry.start_export()

        self._spawn(self.reloader.watch())
        self._spawn(self._follow_state())
        self._spawn(self._advance_steps())
        if self.fleet is not None:
            self._spawn(self.fleet.run(self))
        self.ready.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def probe_backends(self) -> None:
        """Say at start-up which backends cannot be reached, rather than leaving it to the first 502."""
        async def probe(backend: Any) -> str | None:
            try:
                async with asyncio.timeout(max(backend.timeouts.connect, 0.1)):
                    _reader, writer = await asyncio.open_connection(backend.host, backend.port)
                writer.close()
                return None
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
            if self.primary:
                try:
                    steps.advance(self)
                except Exception:  # never let a bookkeeping error stop the loop
                    log.exception("advancing canary steps failed")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in reversed(self._runners):
            await runner.cleanup()
        await self.shadow.drain()
        await self.upstreams.close()
        self.telemetry.close()
        if self.fleet is not None:
            self.fleet.close()
        self.state.close()

    def banner(self) -> str:
        host, port = self.bound["public"]
        lines = [f"strangler: serving generation {self.table.generation} of {self.table.config.path} "
                 f"({len(self.table.routes)} route(s))",
                 f"  gateway:  http://{host}:{port}/"]
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
            (hurry if self.stopping.is_set() else self.stopping).set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_stop)
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reloader.reload("signal")))
        await self.start()
        if on_started is not None:
            on_started()
        try:
            await self.stopping.wait()
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


def _bound_address(runner: web.BaseRunner) -> tuple[str, int]:
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return str(addr[0]), int(addr[1])
    return ("", 0)

