"""Starting the gateway: one process, or a supervisor with N worker processes sharing the port (SO_REUSEPORT).

With several workers, worker 0 is the primary: it owns the admin listener and writes the shared history; every
worker reads rollback pins from the shared state store, so a rollback made through worker 0 reaches the others
within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.config.model import Config
from gateway.config.parse import ConfigError, load, parse_listen
from gateway.stores.admission import SqliteAdmissionQueue

log = logging.getLogger("strangler.launch")


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_gateway(config_path: str, *, listen: str | None = None, admin: str | None = None, workers: int = 1,
                worker_index: int | None = None) -> int:
    from observability.logging import setup_logging

    setup_logging("gateway")
    if not Path(config_path).is_file():
        print(f"strangler up: no config file at {config_path} (pass the routes.yaml to serve with -c FILE; "
              "`strangler demo` in the Strangler checkout runs the shipped one)", file=sys.stderr)
        return 1
    try:
        cfg = load(config_path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        print(f"strangler up: {config_path} is invalid; not starting", file=sys.stderr)
        return 1
    for warning in cfg.warnings:
        log.warning("%s", warning)
    listen_addr = parse_listen(listen) if listen else cfg.listen
    admin_addr = parse_listen(admin) if admin else cfg.admin_listen
    if workers > 1 and worker_index is None:
        return _supervise(config_path, listen_addr, admin_addr, workers)
    _use_uvloop()
    return asyncio.run(_serve(cfg, listen_addr, admin_addr, workers, worker_index or 0))


async def _serve(cfg: Config, listen: tuple[str, int], admin: tuple[str, int], workers: int,
                 index: int) -> int:
    from gateway.runtime.gateway import Gateway
    from gateway.stores.postgres.connect import StoreURLError

    try:
        gw = Gateway(cfg, listen=listen, admin_listen=admin if index == 0 else None, reuse_port=workers > 1,
                     primary=index == 0, serve_admin=index == 0, worker=index if workers > 1 else None)
    except StoreURLError as exc:
        print(f"strangler up: {exc}; not starting", file=sys.stderr)
        return 1
    _tune_gc()
    rooms = [r.name for r in cfg.routes if r.admission is not None]
    if workers > 1 and index == 0 and rooms and isinstance(gw.stores.admission, SqliteAdmissionQueue):
        # With SQLite each worker keeps its own line (docs/admission.md): a visitor whose next request lands on
        # another worker is a stranger there and queues again. Said at start rather than discovered in a spike.
        # A shared store (store.url) has one line for every worker: nothing to say.
        log.warning("waiting rooms on %s: with --workers %d each worker keeps its own line and admits the full "
                    "rate; run a route with a waiting room with one worker", ", ".join(rooms), workers)
    try:
        await gw.run_with_banner() if index == 0 else await gw.run()
    except OSError as exc:
        print(f"strangler up: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _tune_gc() -> None:
    """A gateway allocates a few short-lived objects per request, almost all freed by reference counting, and
    keeps a large, long-lived heap (modules, the route table). Freezing that heap after start-up keeps the cyclic
    collector from re-scanning it, and a larger first-generation threshold makes young collections rarer; together
    they take several percent of the CPU per request off the hot path."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    # The access log, the comparison store and the trace store run Python code in threads. A thread waiting for
    # the GIL asks for it only after the switch interval (5 ms by default), so each burst of background work
    # could hold the event loop -- every request in flight -- for up to that long; 1 ms bounds it at 1 ms.
    sys.setswitchinterval(0.001)


def _supervise(config_path: str, listen: tuple[str, int], admin: tuple[str, int], workers: int) -> int:
    """Run N copies of ``strangler up`` on the same port and stop them together."""
    if listen[1] == 0:
        print("strangler up: --workers needs a fixed port (port 0 would give each worker its own)", file=sys.stderr)
        return 1
    args = [sys.executable, "-m", "gateway", "up", "-c", str(Path(config_path)), "--listen",
            f"{listen[0]}:{listen[1]}", "--admin", f"{admin[0]}:{admin[1]}"]
    procs = []
    for i in range(workers):
        env = {**os.environ, "STRANGLER_WORKER_INDEX": str(i), "STRANGLER_WORKERS": str(workers)}
        procs.append(subprocess.Popen(args, env=env))
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM)
        if signum == signal.SIGHUP:
            stop = False

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    code = 0
    while procs:
        for p in list(procs):
            rc = p.poll()
            if rc is not None:
                procs.remove(p)
                if not stop:
                    code = rc or 1
                    print(f"strangler up: worker {p.pid} exited with {rc}; stopping", file=sys.stderr)
                    on_signal(signal.SIGTERM, None)
        time.sleep(0.1)
    return code


def worker_index_from_env() -> tuple[int | None, int]:
    raw = os.environ.get("STRANGLER_WORKER_INDEX")
    return (int(raw) if raw is not None else None), int(os.environ.get("STRANGLER_WORKERS", "1"))
