"""What tracing and logging cost the gateway: CPU microseconds per request, with and without them.

Runs one minimal backend and one gateway process per configuration, all on loopback, and drives each gateway with
``wrk`` (keep-alive, a fixed number of connections, a fixed duration). The gateway's CPU time (utime + stime from
``/proc/PID/stat``, all its threads, so the trace store's writer thread counts) is read before and after each run
and divided by the number of requests wrk completed. Configurations are measured in turns (off, on, off, on, ...)
so that a slow minute of the machine hits all of them alike; the median of the runs is reported.

    off       routes.yaml ``tracing: {sample: 0}`` and ``STRANGLER_LOG_LEVEL=WARNING``: no span recorded, no
              access line written (trace context is still propagated and ``X-Trace-Id`` still set)
    tracing   default tracing (every request sampled, spans stored in traces.db), logging at WARNING
    logging   ``sample: 0``, default logging (INFO: one JSON access line per request)
    both      the defaults: tracing and logging on

Run: ``python tests/bench/bench_tracing.py [--duration 4] [--runs 3] [--connections 16]``. Prints one table and a
last line ``overhead: tracing+logging = X% of the gateway's CPU per request``; ``--json`` prints the figures as
JSON instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONFIGS = {
    "off": {"sample": 0, "log_level": "WARNING"},
    "tracing": {"sample": 100, "log_level": "WARNING"},
    "logging": {"sample": 0, "log_level": "INFO"},
    "both": {"sample": 100, "log_level": "INFO"},
}
PAYLOAD = b'{"id":42,"name":"bench widget","price":19.99,"stock":7}'


# -- the backend: answers every request with the same small JSON document ------------------------------------------


async def _backend(port: int) -> None:
    from aiohttp import web

    async def answer(request: web.BaseRequest) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="application/json")

    server = web.Server(answer, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


# -- processes -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid`` (fields 14 and 15 of /proc/PID/stat, after the comm field)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_routes(directory: Path, name: str, port: int, backend_port: int, sample: int) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"""\
version: 1
listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:0}}
backends:
  app: {{url: "http://127.0.0.1:{backend_port}"}}
fallback: app
routes:
  - name: items
    match: {{path: {{prefix: /items}}}}
    stage: legacy
tracing: {{sample: {sample}}}
store: {{dir: store-{name}}}
""")
    return path


def start_gateway(directory: Path, name: str, backend_port: int, settings: dict[str, object]
                  ) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    routes = write_routes(directory, name, port, backend_port, int(settings["sample"]))  # type: ignore[call-overload]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(STRANGLER_LOG_LEVEL=str(settings["log_level"]), STRANGLER_LOG_FORMAT="json",
               STRANGLER_ADMIN_TOKEN="bench", PYTHONPATH=str(REPO))
    log = open(directory / f"{name}.log", "wb")  # noqa: SIM115 - the child writes it; closed when we exit
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "up", "-c", str(routes)], cwd=directory,
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    wait_port(port, proc)
    return proc, port


def drive(port: int, duration: float, connections: int) -> int:
    """Run wrk against the gateway; returns the number of completed requests (non-2xx counts as failure)."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", f"http://127.0.0.1:{port}/items/1"],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    m = re.search(r"(\d+) requests in", out)
    if m is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return int(m.group(1))


def measure(pid: int, port: int, duration: float, connections: int) -> float:
    """CPU microseconds of the gateway process per request over one wrk run."""
    before = cpu_ticks(pid)
    requests = drive(port, duration, connections)
    # Let the trace store's writer catch up with what this run queued: its work belongs to these requests.
    time.sleep(0.5)
    spent = cpu_ticks(pid) - before
    return spent / CLK_TCK * 1e6 / requests


def run(duration: float, runs: int, connections: int, names: list[str]) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="strangler-bench-tracing-") as tmp:
        directory = Path(tmp)
        backend_port = free_port()
        backend = subprocess.Popen([sys.executable, __file__, "backend", "--port", str(backend_port)],
                                   start_new_session=True)
        gateways: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            wait_port(backend_port, backend)
            for name in names:
                gateways[name] = start_gateway(directory, name, backend_port, CONFIGS[name])
            for _, port in gateways.values():
                drive(port, 1.0, connections)  # warm up: pools, caches, first-use imports
            for _ in range(runs):
                for name in names:
                    proc, port = gateways[name]
                    results[name].append(measure(proc.pid, port, duration, connections))
        finally:
            for proc, _ in gateways.values():
                stop(proc)
            stop(backend)
    return results


def report(results: dict[str, list[float]], as_json: bool) -> None:
    medians = {name: statistics.median(values) for name, values in results.items()}
    base = medians.get("off")
    summary = {name: {"median_us": round(m, 1), "runs_us": [round(v, 1) for v in results[name]],
                      "overhead_pct": None if not base else round(100.0 * (m - base) / base, 1)}
               for name, m in medians.items()}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{'config':<10} {'CPU us/request (median)':>24} {'runs':>30} {'vs off':>8}")
    for name, s in summary.items():
        runs = " ".join(f"{v:.1f}" for v in s["runs_us"])
        pct = "" if s["overhead_pct"] is None else f"{s['overhead_pct']:+.1f}%"
        print(f"{name:<10} {s['median_us']:>24.1f} {runs:>30} {pct:>8}")
    if "both" in summary and base:
        print(f"overhead: tracing+logging = {summary['both']['overhead_pct']:.1f}% of the gateway's CPU per "
              f"request ({summary['both']['median_us']:.1f} us with, {base:.1f} us without)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    be = sub.add_parser("backend", help="(internal) run the minimal backend")
    be.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=int, default=4, help="whole seconds per measured run (default 4)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per configuration (default 3)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--configs", default="off,tracing,logging,both",
                        help="comma-separated subset of: " + ", ".join(CONFIGS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "backend":
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(_backend(args.port))
        return 0
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s): {', '.join(unknown)}")
    report(run(args.duration, args.runs, args.connections, names), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
