"""Driving a proxy with wrk and reading its results.

wrk's ``done`` hook (a small Lua script written next to the run) prints one JSON line with the exact numbers
(requests, duration, error counters, latency percentiles in microseconds), so nothing depends on parsing wrk's
human-readable units. The ``--latency`` text is kept in the result for people reading the JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

INSTALL_HINT = "apt-get install nginx-light wrk"

DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0), latency.max, latency.mean))
end
"""

# A fixed request rate for each wrk thread: the ``delay`` hook hands every finished request the thread's next slot
# on a schedule anchored in time, so the offered load is the same whatever the proxy's latency (a fixed pause per
# connection offers less to a slower proxy). LuaJIT's ffi reads the monotonic clock: wrk has no clock of its own.
RATE_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval_ms = %r
local next_at = nil
delay = function()
  local now = now_ms()
  -- behind schedule (the proxy is saturated): no burst to catch up, the run just falls short of the rate
  if next_at == nil or next_at < now then next_at = now end
  local wait = next_at - now
  next_at = next_at + interval_ms
  return math.floor(wait)
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int          # wrk counts statuses >= 400 here ("Non-2xx or 3xx responses")
    socket_errors: int    # connect + read + write + timeout
    text: str

    @property
    def failures(self) -> int:
        return self.non_2xx + self.socket_errors

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("text")
        return d


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def run_wrk(url: str, *, duration: float, connections: int, threads: int, workdir: Path,
            cpus: set[int] | None = None, timeout_s: float = 10.0, pace_ms: int = 0, rate: float = 0.0,
            headers: tuple[tuple[str, str], ...] = ()) -> WrkResult:
    """``pace_ms``: each connection waits that long after every answer before its next request, so the offered
    load stays below what the proxy can take (latency then measures the proxy, not its queue). ``rate``: requests
    per second over all connections instead, held whatever the latency (while the proxy keeps up). ``headers``
    are sent with every request (a ticket cookie, say)."""
    script = _script(workdir, _delay_lua(pace_ms, rate, threads), headers)
    # wrk takes whole seconds only.
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--latency",
            "--timeout", f"{timeout_s:.0f}s", "-s", str(script), url]

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + timeout_s + 30,
                          preexec_fn=pin)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return parse(proc.stdout)


def _delay_lua(pace_ms: int, rate: float, threads: int) -> str:
    """wrk's ``delay`` hook (milliseconds to wait before a connection's next request), or nothing."""
    if rate > 0:
        return RATE_LUA % (1000.0 * threads / rate)
    return f"delay = function() return {pace_ms:d} end\n" if pace_ms else ""


def _script(workdir: Path, delay_lua: str, headers: tuple[tuple[str, str], ...]) -> Path:
    """The Lua script for one kind of run, written once and named after its content."""
    lua_headers = "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers)
    text = DONE_LUA + lua_headers + delay_lua
    script = workdir / f"bench_{hashlib.sha256(text.encode()).hexdigest()[:12]}.lua"
    if not script.exists():
        script.write_text(text)
    return script


def parse(text: str) -> WrkResult:
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{text}")
    d = json.loads(line[len("BENCH_JSON "):])
    seconds = d["duration_us"] / 1e6
    return WrkResult(
        requests=d["requests"], seconds=seconds, rps=d["requests"] / seconds if seconds else 0.0,
        p50_ms=d["p50_us"] / 1000, p90_ms=d["p90_us"] / 1000, p99_ms=d["p99_us"] / 1000, max_ms=d["max_us"] / 1000,
        non_2xx=d["status"], socket_errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
        text="\n".join(ln for ln in text.splitlines() if not ln.startswith("BENCH_JSON ")),
    )
