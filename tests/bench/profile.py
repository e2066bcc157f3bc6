"""Where the gateway's CPU goes on the pass-through request path, step by step.

    python -m tests.bench.profile [--seconds 10] [--out tests/bench/profile-passthrough.txt]

Starts the raw backend and a gateway with every default on (as the pass-through scenario does, the gateway on the
last CPU, the load on the others), drives it with wrk, and samples the gateway with py-spy (``pip install
py-spy``) while reading its CPU time from ``/proc``. Only the thread holding the GIL is sampled (``--gil``): a
thread waiting for it is not working, and without the flag py-spy counts those waits (the access-log thread then
looked three times its real cost). Each sample is charged to the step of the innermost frame that belongs to one
(see ``STEPS``), and the shares are turned into microseconds of CPU per request; kernel time spent without the
GIL (the event loop's waits) is thereby spread over the steps. The output is the table and py-spy's collapsed
stacks, so the next reader can look deeper than the table does.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.procs import CLK_TCK, REPO, free_port, wait_port

# (step, files or file:function) from the request's leaf frame outwards: the first match takes the sample.
STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("access log: JSON lines in the fold, written by a thread", ("logging.py:AccessLog.json_lines",
                                                                  "logging.py:AccessLog.put_many",
                                                                  "logging.py:AccessLog.write_batch")),
    ("background threads (trace, comparison stores; idle waits)", ("batches.py", "threading.py", "_asyncio.py",
                                                                  "thread.py", "traces.py", "diffs.py")),
    ("request screen (gateway.server.screen)", ("screen.py", "grammar.py")),
    ("tracing ids, X-Trace-Id, traceparent", ("tracing.py", "recorder.py:Recorder.start")),
    ("bookkeeping: statistics, metrics, access-log entry", ("recorder.py", "stats.py", "metrics.py",
                                                             "logging.py:AccessLog.emit")),
    ("path normalisation and route match", ("paths.py", "table.py", "index.py", "matching.py", "precedence.py")),
    ("rollout decision", ("controller.py", "decision.py")),
    ("header rewriting (upstream request, relayed answer)", ("headers.py",)),
    ("upstream pool: request head, send, response parse", ("pool.py", "connection.py", "response.py")),
    ("relayed answer: serialise and send", ("reply.py",)),
    ("proxy forward and handler glue", ("forward.py", "handler.py", "upstream.py", "protect.py")),
    ("aiohttp listener: parse, request, task, keep-alive", ("web_protocol.py", "web_request.py", "http_writer.py",
                                                            "streams.py", "helpers.py", "web_response.py",
                                                            "wire.py", "_weakrefset.py", "tasks.py")),
    ("event loop (uvloop): epoll, socket reads, callbacks", ("runners.py",)),
]


def step_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        name, _, where = frame.partition(" (")
        file = where.split(":")[0].rsplit("/", 1)[-1]
        for step, keys in STEPS:
            if any(k == file or k == f"{file}:{name}" for k in keys):
                return step
    return "other"


def collapse(raw: Path) -> collections.Counter[str]:
    shares: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        shares[step_of(stack.split(";"))] += int(count)
    return shares


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run(seconds: int, out: Path) -> None:
    if not shutil.which("py-spy") or not shutil.which("wrk"):
        sys.exit("needs py-spy (pip install py-spy) and wrk (apt-get install wrk)")
    cpus = sorted(os.sched_getaffinity(0))
    proxy_cpu, load_cpus = {cpus[-1]}, set(cpus[:-1]) or {cpus[-1]}
    work = Path(tempfile.mkdtemp(prefix="strangler-profile-"))
    backend, listen, admin = free_port(), free_port(), free_port()
    (work / "routes.yaml").write_text(
        f"version: 1\nlisten: 127.0.0.1:{listen}\nadmin: {{listen: 127.0.0.1:{admin}}}\n"
        f"backends:\n  legacy: {{url: http://127.0.0.1:{backend}}}\nfallback: legacy\n"
        f"store: {{dir: {work / 'store'}}}\nroutes: []\n")
    procs = []
    try:
        procs.append(_start([sys.executable, "-m", "tests.bench.backend", "--port", str(backend), "--server", "raw"],
                            load_cpus, work / "backend.log"))
        gateway = _start([sys.executable, "-m", "gateway", "up", "-c", str(work / "routes.yaml")], proxy_cpu,
                         work / "gateway.log")
        procs.append(gateway)
        wait_port(backend, 20)
        wait_port(listen, 20, gateway)
        url = f"http://127.0.0.1:{listen}/api/products/42"
        _wrk(url, 2, load_cpus)   # warm-up
        before = cpu_ticks(gateway.pid)
        spy = subprocess.Popen(["py-spy", "record", "-p", str(gateway.pid), "-d", str(seconds), "-r", "250", "-f",
                                "raw", "-o", str(work / "stacks.txt"), "--nonblocking", "--gil"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        requests = _wrk(url, seconds, load_cpus)
        cpu = (cpu_ticks(gateway.pid) - before) / CLK_TCK
        spy.wait(timeout=seconds + 30)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    shares = collapse(work / "stacks.txt")
    total = sum(shares.values())
    per_request = cpu / requests * 1e6
    lines = [f"pass-through, raw backend, defaults on: {requests} requests in {seconds} s, "
             f"{per_request:.1f} us of gateway CPU per request ({time.strftime('%Y-%m-%d')})", "",
             f"{'step':62s} {'share':>6s} {'us/req':>7s}"]
    for step, n in shares.most_common():
        lines.append(f"{step:62s} {100 * n / total:5.1f}% {per_request * n / total:7.1f}")
    lines += ["", "py-spy collapsed stacks (samples at 250 Hz of the thread holding the GIL):", "",
              (work / "stacks.txt").read_text()]
    out.write_text("\n".join(lines))
    print("\n".join(lines[:len(shares) + 3]))
    print(f"\nwritten to {out}")


def _start(argv: list[str], cpus: set[int], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    os.sched_setaffinity(proc.pid, cpus)
    return proc


def _wrk(url: str, seconds: int, cpus: set[int]) -> int:
    out = subprocess.run(["taskset", "-c", ",".join(map(str, sorted(cpus))), "wrk", "-t1", "-c32",
                          f"-d{seconds}s", url], capture_output=True, text=True, check=True).stdout
    return int(next(line for line in out.splitlines() if "requests in" in line).split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "bench" / "profile-passthrough.txt")
    args = parser.parse_args()
    run(args.seconds, args.out)


if __name__ == "__main__":
    main()
