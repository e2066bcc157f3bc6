"""``strangler demo``: the whole migration on one machine.

Seeds the monolith's database, migrates the extracted services' data from it, starts ``legacy_app`` and each
extracted service named in routes.yaml as child processes on the ports routes.yaml gives them (and your own
services, listed in ``services.yaml`` beside routes.yaml: ``demo_services``), then runs the gateway in this process, with a gentle stream of shop traffic so that the report and console have something to
show. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.cli.demo_services import ServicesError, load_services, services_path
from gateway.cli.demo_services import start as start_service
from gateway.config.model import Config
from gateway.config.parse import ConfigError, load

# Backend name in routes.yaml -> the module that serves it, and the migration that seeds its database.
SERVICES = {
    "legacy": ("legacy_app", None),
    "reviews": ("extracted.reviews", "extracted.reviews"),
    "likes": ("extracted.likes", "extracted.likes"),
}


def _prepare_databases(cfg: Config, data_dir: Path) -> dict[str, Path]:
    from legacy_app.db import ensure_database

    data_dir.mkdir(parents=True, exist_ok=True)
    legacy_db = data_dir / "legacy.db"
    ensure_database(legacy_db)
    dbs = {"legacy": legacy_db}
    for name, (_module, migration) in SERVICES.items():
        if migration is None or name not in cfg.backends:
            continue
        import importlib

        db = data_dir / f"{name}.db"
        importlib.import_module(migration).migrate(legacy_db, db)
        dbs[name] = db
    return dbs


def _service_env(admin: tuple[str, int]) -> dict[str, str]:
    """What every service the demo starts is given: where to export its spans (the admin listener)."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{admin[0]}:{admin[1]}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "STRANGLER_LOG_FORMAT": "json"}


def _start_services(cfg: Config, dbs: dict[str, Path], admin: tuple[str, int]) -> list[subprocess.Popen]:
    procs = []
    env = {**os.environ, **_service_env(admin)}
    for name, db in dbs.items():
        backend = cfg.backends[name]
        module = SERVICES[name][0]
        log_file = open(db.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child, closed at exit
        procs.append(subprocess.Popen(
            [sys.executable, "-m", module, "--host", backend.host, "--port", str(backend.port), "--db", str(db)],
            stdout=log_file, stderr=subprocess.STDOUT, env={**env, "OTEL_SERVICE_NAME": name}))
    return procs


def _busy_ports(cfg: Config, own: Sequence[str] = ()) -> list[str]:
    """Addresses the demo needs (the gateway's two listeners and every service it starts, ``own`` included) that
    something else already holds: checked first, so the demo never talks to another one's services by mistake."""
    wanted = [cfg.listen, cfg.admin_listen] + [(cfg.backends[n].host, cfg.backends[n].port)
                                                for n in [*SERVICES, *own] if n in cfg.backends]
    busy = []
    for host, port in wanted:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(f"{host}:{port}")
    return busy


def _wait_healthy(cfg: Config, names: list[str], timeout: float = 20.0,
                  health: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    for name in names:
        url = cfg.backends[name].origin + (health or {}).get(name, "/healthz")
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become healthy at {url}")
            time.sleep(0.1)


async def _traffic(base: str, stop: asyncio.Event, rate: float = 4.0) -> None:
    """A few shop requests per second: products, reviews, likes, search (loopback only; stops with the demo)."""
    import aiohttp

    rng = random.Random(7)
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            pid = rng.randint(1, 60)
            user = f"user-{rng.randint(1, 200):04d}"
            choice = rng.random()
            if choice < 0.35:
                req = session.get(f"{base}/api/products/{pid}/reviews")
            elif choice < 0.6:
                req = session.get(f"{base}/api/likes/{pid}", headers={"X-User-Id": user})
            elif choice < 0.7:
                req = session.post(f"{base}/api/likes/{pid}", json={"user": user}, headers={"X-User-Id": user})
            elif choice < 0.85:
                req = session.get(f"{base}/api/products/{pid}")
            else:
                req = session.get(f"{base}/api/search", params={"q": rng.choice(["lamp", "mug", "desk", "tea"])})
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with req as resp:
                    await resp.read()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0 / rate)


async def _spike(base: str, visitors: int, stop: asyncio.Event) -> None:
    """``--burst N``: after a moment (so the console is open), N visitors arrive at once on /api/events."""
    from gateway.cli.burst import burst

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=3.0)
    if stop.is_set():
        return
    print(f"strangler demo: {visitors} visitors arrive at once on /api/events; watch the waiting room fill and "
          "drain in the console (or `strangler routes`)", file=sys.stderr, flush=True)
    let_in, gave_up = await burst(base, visitors, stop)
    if not stop.is_set():
        print(f"strangler demo: the burst is through: {let_in} let in, {gave_up} gave up", file=sys.stderr,
              flush=True)


def _log_to_file(path: Path, setup_logging: Any) -> None:
    """The demo's traffic would flood the terminal with access lines: the gateway's log goes to a file (JSON
    lines), and only warnings and errors (a failed reload, a rollback) also show in the terminal."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    setup_logging("gateway", json_lines=True, stream=open(path, "a", buffering=1))  # noqa: SIM115
    terminal = logging.StreamHandler(sys.stderr)
    terminal.addFilter(_worth_saying)
    terminal.setFormatter(logging.Formatter("strangler: %(levelname)s %(message)s"))
    logging.getLogger().addHandler(terminal)


# Besides warnings and errors, the terminal says when something the user did took effect.
TERMINAL_EVENTS = frozenset({"reloaded", "reload_recovered", "reload_unchanged", "resume", "canary_step"})


def _worth_saying(record: Any) -> bool:
    return bool(record.levelno >= 30 or getattr(record, "event", None) in TERMINAL_EVENTS)


def run_demo(config_path: str, traffic: bool = True, burst: int = 0) -> int:
    from gateway.runtime.launch import _use_uvloop
    from observability.logging import setup_logging

    if not Path(config_path).exists():
        print(f"strangler demo: no {config_path} here. Run it from the Strangler checkout (which ships the demo "
              f"routes.yaml), or point at one with -c FILE.", file=sys.stderr)
        return 1
    try:
        cfg = load(config_path)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    try:
        own = load_services(services_path(config_path), cfg, set(SERVICES))
    except ServicesError as exc:
        print(f"strangler demo: {exc}", file=sys.stderr)
        return 1
    busy = _busy_ports(cfg, [s.name for s in own])
    if busy:
        print("strangler demo: these ports are already in use (another demo still running?): "
              + ", ".join(busy) + ". Stop what holds them, or change the ports in routes.yaml.", file=sys.stderr)
        return 1
    data_dir = cfg.store.dir / "demo"
    _log_to_file(data_dir / "gateway.log", setup_logging)
    print(f"strangler demo: preparing databases in {data_dir} ...", file=sys.stderr, flush=True)
    dbs = _prepare_databases(cfg, data_dir)
    procs = _start_services(cfg, dbs, cfg.admin_listen)
    try:
        for service in own:
            procs.append(start_service(service, cfg, data_dir, _service_env(cfg.admin_listen)))
        _wait_healthy(cfg, [*dbs, *(s.name for s in own)], health={s.name: s.health for s in own})
        if own:
            print(f"strangler demo: started from {services_path(config_path)}: "
                  + ", ".join(s.name for s in own), file=sys.stderr, flush=True)
        print("strangler demo: services up: " + ", ".join(f"{n} on {cfg.backends[n].origin}"
                                                         for n in [*dbs, *(s.name for s in own)])
              + f" (their logs and the gateway's are in {data_dir})", file=sys.stderr, flush=True)
        _use_uvloop()
        asyncio.run(_run(cfg, traffic, burst))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"strangler demo: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except (RuntimeError, ServicesError) as exc:
        print(f"strangler demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


async def _run(cfg: Config, traffic: bool, burst: int = 0) -> None:
    from gateway.runtime.gateway import Gateway

    gw = Gateway(cfg)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def started() -> None:
        print(gw.banner(), file=sys.stderr, flush=True)
        host, port = gw.bound["public"]
        ahost, aport = gw.bound["admin"]
        base = f"http://{host}:{port}"
        print(f"""
Try:
  http://{ahost}:{aport}/  (in a browser: the web console with routes, differences, traces)
  curl -i {base}/api/products/3/reviews   # legacy answers, reviews gets a copy
  strangler report                          # what the shadow comparison found, per route
  strangler diffs reviews --mismatches      # then: strangler diff ID
  strangler trace TRACE_ID                  # X-Trace-Id of a response: gateway, legacy and the shadow call
  strangler routes                          # stages, weights, rollbacks, latencies
  strangler rollback likes --reason "try"   # and: strangler resume likes
""" + ("(a little demo traffic is flowing so there is something to see)\n" if traffic else ""),
              file=sys.stderr, flush=True)
        if traffic:
            tasks.append(asyncio.get_running_loop().create_task(_traffic(base, stop)))
        if burst:
            tasks.append(asyncio.get_running_loop().create_task(_spike(base, burst, stop)))

    try:
        await gw.run(on_started=started)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
