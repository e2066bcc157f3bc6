"""The benchmark harness: one command, every proxy, every scenario, one table.

    python -m tests.bench [--scenario NAME ...] [--duration 6] [--warmup 1] [--out FILE]

A run starts one upstream backend (``tests/bench/backend.py``), then, per scenario, the proxies it compares:
nginx (the reference), the naive aiohttp proxy (``naive_proxy.py``, the Python baseline) and the gateway
(``python -m gateway up`` on a generated routes.yaml). Each proxy is driven by wrk in turn (a warm-up run, then
``--repeat`` measured runs), and its CPU time is read from /proc around each measured run only. A row's figures
are the medians over its measured runs; the best run is shown beside them.

On a machine with two or more CPUs the proxy under test gets one CPU of its own and everything else (backend,
wrk, the harness) gets the rest, so "CPU per request" is the proxy's cost alone and every proxy is limited to
one core (nginx ``worker_processes 1``, one gateway process). ``--no-pin`` turns that off.

Scenarios are in ``tests/bench/scenarios.py``. Each one checks correctness too (wrk's non-2xx and socket errors,
byte counts, that the intended route answered); a failed check is printed loudly and makes the exit status 1.
The performance targets are printed as met / missed, judged on the medians: they are measurements, not
failures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import configs, procs, wrk
from tests.bench.procs import Proc, Procs

ADMIN_TOKEN = "bench-admin-token"
NGINX = "/usr/sbin/nginx"
RESULTS_DIR = procs.REPO / "bench-results"


@dataclass
class Options:
    duration: int = 6
    warmup: int = 1
    connections: int = 32
    big_size: int = 1 << 30
    reload_duration: int = 10
    repeat: int = 2
    pin: bool = True
    scenarios: list[str] = field(default_factory=list)
    proxies: tuple[str, ...] = ("nginx", "naive", "gateway")   # which of them the pass-through scenario runs
    out: Path | None = None
    keep: bool = False
    backend: str = "aiohttp"   # which build of tests/bench/backend.py serves as upstream (see its docstring)
    baseline_src: Path | None = None   # another checkout whose gateway passthrough also measures


def label(proxy: str, variant: str) -> str:
    return proxy if variant in ("", proxy) else f"{proxy}: {variant}"


@dataclass
class Row:
    """A measured proxy/variant. ``rps``, the latencies and the CPU figures are the medians over its measured runs
    (what targets and ratios use: one disturbed run does not move them); ``best`` holds the least disturbed run."""
    scenario: str
    proxy: str            # nginx | naive | gateway
    variant: str          # what differs within the scenario ("1 route", "shadow slow", ...)
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us: float = 0.0   # CPU microseconds per request, proxy process tree
    cpu_share: float = 0.0  # proxy CPU time / wall time, percent: ~100 = CPU-bound, far less = starved or waiting
    requests: int = 0
    failures: int = 0
    mb_s: float | None = None
    rss_growth_mib: float | None = None
    best: dict[str, float] = field(default_factory=dict)   # the same figures for the best run
    runs: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return label(self.proxy, self.variant)

    def best_of(self, key: str) -> float:
        """``key`` ("rps", "p50_ms", "p99_ms", "cpu_us", "cpu_share") in the best run (the median if none)."""
        return self.best.get(key, getattr(self, key))


@dataclass
class Subject:
    """One running proxy to measure, and how."""
    proxy: str
    variant: str
    proc: Proc
    port: int
    path: str
    pace_ms: int = 0              # per-connection pause between requests (0: as fast as it answers)
    rate: float = 0.0             # or a fixed offered load, requests/s over all connections (0: none)
    baseline: str | None = None   # the variant this one is compared with
    anywhere: bool = False        # wrk not pinned either (the scaling scenario: everything shares every core)
    load_cpus: set[int] | None = None   # wrk's CPUs when a scenario lays them out itself (workers)
    headers: tuple[tuple[str, str], ...] = ()   # sent with every request (the admission scenario's tickets)
    status: int = 200             # what every answer should be (a waiting room's queued answer is 503)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def label(self) -> str:
        return label(self.proxy, self.variant)


@dataclass
class Check:
    scenario: str
    what: str
    ok: bool
    detail: str = ""


SECOND_PASS = "Performance, second pass"


@dataclass
class Target:
    scenario: str
    what: str
    met: bool | None      # None: a figure reported, no threshold
    value: str
    judged: bool = True   # False: shown for information (the issue judges it on another rig)
    issue: str = ""       # SECOND_PASS, or "" for the standing targets of earlier issues

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "info"
        if not self.judged:
            return f"info, {'met' if self.met else 'missed'}"
        return "met" if self.met else "MISSED"


class Bench:
    """The run's shared state: options, process registry, the main backend, and everything measured so far."""

    def __init__(self, opts: Options, workdir: Path) -> None:
        self.opts = opts
        self.workdir = workdir
        self.procs = Procs(workdir, _cpu_split() if opts.pin else (None, None))
        self.rows: list[Row] = []
        self.checks: list[Check] = []
        self.targets: list[Target] = []
        self.notes: list[str] = []
        self.backend_port = 0
        self._counter = 0
        self.code: dict[str, Any] = {"at_start": code_state()}

    # -- processes ---------------------------------------------------------------------------------------------

    def start_backend(self, name: str = "backend", delay: float = 0.0, server: str | None = None,
                      role: str = "load", cpus: set[int] | None = None) -> int:
        port = procs.free_port()
        argv = [procs.python(), "-m", "tests.bench.backend", "--port", str(port), "--delay", str(delay),
                "--server", server or self.opts.backend]
        proc = self.procs.start(name, argv, role=role, cpus=cpus)
        procs.wait_port(port, 15, proc.popen, name)
        return port

    def start_nginx(self) -> tuple[Proc, int]:
        port = procs.free_port()
        ndir = self.workdir / "nginx"
        ndir.mkdir(exist_ok=True)
        conf = ndir / "nginx.conf"
        conf.write_text(configs.nginx_conf(ndir, listen=port, backend=self.backend_port))
        proc = self.procs.start("nginx", [NGINX, "-p", str(ndir), "-c", str(conf), "-e", str(ndir / "error.log")],
                                role="proxy")
        procs.wait_port(port, 15, proc.popen, "nginx")
        return proc, port

    def start_naive(self) -> tuple[Proc, int]:
        port = procs.free_port()
        argv = [procs.python(), "-m", "tests.bench.naive_proxy", "--port", str(port), "--upstream",
                f"http://127.0.0.1:{self.backend_port}"]
        proc = self.procs.start("naive", argv, role="proxy")
        procs.wait_port(port, 20, proc.popen, "naive proxy")
        return proc, port

    def start_floor(self, mode: str) -> tuple[Proc, int]:
        """aiohttp's listener alone (``listener``) or with the gateway's upstream pool (``relay``): floor_proxy."""
        port = procs.free_port()
        argv = [procs.python(), "-m", "tests.bench.floor_proxy", "--mode", mode, "--port", str(port),
                "--upstream-port", str(self.backend_port)]
        proc = self.procs.start(f"floor-{mode}", argv, role="proxy")
        procs.wait_port(port, 20, proc.popen, f"floor {mode}")
        return proc, port

    def start_gateway(self, setup: configs.GatewaySetup, name: str = "gateway", backend: int | None = None,
                      role: str = "proxy", cpus: set[int] | None = None) -> Gateway:
        self._counter += 1
        gdir = self.workdir / f"{name}-{self._counter}" / "conf"
        gdir.mkdir(parents=True)
        port, admin = procs.free_port(), procs.free_port()
        routes = gdir / "routes.yaml"
        routes.write_text(configs.gateway_yaml(setup, listen=port, admin=admin, backend=backend or self.backend_port,
                                               store=gdir.parent / "store"))
        argv = [procs.python(), "-m", "gateway", "up", "-c", str(routes)]
        if setup.workers > 1:
            argv += ["--workers", str(setup.workers)]
        env = {"STRANGLER_ADMIN_TOKEN": ADMIN_TOKEN, "STRANGLER_LOG_FORMAT": "json", **setup.env}
        if setup.src is not None:
            # `python -m` puts its working directory first on sys.path: run in the other checkout, with it on
            # PYTHONPATH too (ahead of an installed copy), or the baseline would silently be this checkout.
            env["PYTHONPATH"] = str(setup.src)
        proc = self.procs.start(f"{name}-{self._counter}", argv, role=role, env=env, cpus=cpus, cwd=setup.src)
        try:
            procs.wait_port(port, 180, proc.popen, "gateway")
            procs.wait_port(admin, 30, proc.popen, "gateway admin")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- gateway output ---\n{proc.tail()}") from exc
        return Gateway(proc, port, admin, routes)

    # -- measuring ---------------------------------------------------------------------------------------------

    def measure(self, scenario: str, proxy: str, variant: str, proc: Proc, port: int, path: str,
                duration: int | None = None, repeat: int | None = None, pace_ms: int = 0) -> Row:
        """Warm up, then ``repeat`` measured wrk runs; the row's figures are their medians, its best run the one
        with the highest throughput (the one least disturbed by other load on the machine), and the JSON keeps them
        all. Failures count over every run. With ``pace_ms`` (a paced run, below saturation) the best run is the
        one with the lowest p50 instead."""
        return self.measure_together(scenario, [Subject(proxy, variant, proc, port, path, pace_ms)], duration,
                                     repeat)[0]

    def measure_together(self, scenario: str, subjects: list[Subject], duration: int | None = None,
                         repeat: int | None = None) -> list[Row]:
        """Measure several already running subjects in turns (A B C, A B C, ...) rather than one after the other,
        so that a change in the machine's background load over the minutes a scenario takes falls on every
        variant alike instead of on whichever happened to run last."""
        for sub in subjects:
            self.check_get(scenario, sub.label, sub.port, sub.path, sub.headers, sub.status)
            if self.opts.warmup > 0:
                self.wrk_for(sub, self.opts.warmup)
        runs: list[list[tuple[wrk.WrkResult, float]]] = [[] for _ in subjects]
        pids = [procs.descendants(sub.proc.pid) for sub in subjects]
        for _ in range(max(1, repeat or self.opts.repeat)):
            for i, sub in enumerate(subjects):
                cpu0 = procs.cpu_seconds(pids[i])
                result = self.wrk_for(sub, duration or self.opts.duration)
                runs[i].append((result, procs.cpu_seconds(pids[i]) - cpu0))
        return [self._row(scenario, sub, sub_runs) for sub, sub_runs in zip(subjects, runs, strict=True)]

    def _row(self, scenario: str, sub: Subject, runs: list[tuple[wrk.WrkResult, float]]) -> Row:
        paced = bool(sub.pace_ms or sub.rate)
        best = min(runs, key=lambda r: r[0].p50_ms) if paced else max(runs, key=lambda r: r[0].rps)
        figures = [_figures(r, cpu) for r, cpu in runs]
        median = {key: statistics.median(f[key] for f in figures) for key in figures[0]}
        # wrk counts every status >= 400 as non-2xx: where 503 is the expected answer, only socket errors fail.
        failures = sum(r.failures if sub.status < 400 else r.socket_errors for r, _ in runs)
        row = Row(scenario, sub.proxy, sub.variant, **median, requests=best[0].requests, failures=failures,
                  best=_figures(*best), runs=len(runs),
                  extra={"wrk": best[0].as_dict(), "cpu_seconds": best[1], "pace_ms": sub.pace_ms,
                         "rate": sub.rate, "runs": [{**r.as_dict(), "cpu_seconds": c} for r, c in runs]})
        if sub.baseline is not None:
            row.extra["baseline"] = sub.baseline
        self.rows.append(row)
        self.check(scenario, f"{row.label}: no failed requests", failures == 0 and best[0].requests > 0,
                   "; ".join(f"{r.requests} requests, {r.non_2xx} non-2xx, {r.socket_errors} socket errors"
                             for r, _ in runs))
        progress(f"  {row.label:<34} {_figures_text(median)}  failures {row.failures}\n"
                 f"  {'':<34} {_figures_text(row.best)}  (best of {row.runs})")
        if sub.proxy != "nginx" and row.cpu_share < 75 and not paced and not sub.anywhere:
            # A Python proxy at full load is CPU-bound; well below that, it was waiting for a CPU someone else held.
            self.note(f"{scenario}: {row.label} used only {row.cpu_share:.0f}% of its CPU under full load: the "
                      f"machine was busy, so its req/s and latency are unreliable (CPU per request still holds)")
        return row

    def wrk_for(self, sub: Subject, duration: int) -> wrk.WrkResult:
        load = sub.load_cpus if sub.load_cpus is not None else self.procs.all_cpus if sub.anywhere else None
        return self.wrk(sub.url, duration, sub.pace_ms, sub.anywhere, sub.headers, rate=sub.rate, cpus=load)

    def wrk(self, url: str, duration: int, pace_ms: int = 0, anywhere: bool = False,
            headers: tuple[tuple[str, str], ...] = (), rate: float = 0.0,
            cpus: set[int] | None = None) -> wrk.WrkResult:
        load = cpus if cpus is not None else self.procs.all_cpus if anywhere else self.procs.cpus[1]
        threads = 1 if load is not None and len(load) == 1 else 2
        return wrk.run_wrk(url, duration=duration, connections=self.opts.connections, threads=threads,
                           workdir=self.workdir, cpus=load, pace_ms=pace_ms, rate=rate, headers=headers)

    def check_get(self, scenario: str, who: str, port: int, path: str,
                  headers: tuple[tuple[str, str], ...] = (), expect: int = 200) -> None:
        """One request by hand before the load: the proxy must answer 200 with the backend's exact body (or the
        ``expect``-ed status, for a waiting room's queued answer)."""
        from tests.bench.backend import PAYLOAD

        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers))
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            status, body = 0, repr(exc).encode()
        if expect == 200:
            self.check(scenario, f"{who}: GET {path} answers 200 with the backend's body",
                       status == 200 and body == PAYLOAD, f"status {status}, body {body[:80]!r}")
        else:
            self.check(scenario, f"{who}: GET {path} answers {expect}", status == expect,
                       f"status {status}, body {body[:80]!r}")

    def check(self, scenario: str, what: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(scenario, what, ok, detail))
        if not ok:
            progress(f"  !!! CHECK FAILED [{scenario}] {what}: {detail}")
        return ok

    def target(self, scenario: str, what: str, met: bool | None, value: str, judged: bool = True,
               issue: str = "") -> None:
        self.targets.append(Target(scenario, what, met, value, judged, issue))

    def note(self, text: str) -> None:
        self.notes.append(text)
        progress(f"  note: {text}")


@dataclass
class Gateway:
    proc: Proc
    port: int
    admin: int
    routes: Path

    def admin_get(self, path: str, timeout: float = 30.0) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())


def _figures(result: wrk.WrkResult, cpu: float) -> dict[str, float]:
    """One measured run's figures, as the Row fields of the same names."""
    return {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
            "cpu_us": cpu / result.requests * 1e6 if result.requests else 0.0,
            "cpu_share": cpu / result.seconds * 100 if result.seconds else 0.0}


def _figures_text(f: dict[str, float]) -> str:
    return (f"{f['rps']:>9.0f} req/s  p50 {f['p50_ms']:6.2f} ms  p99 {f['p99_ms']:7.2f} ms  "
            f"{f['cpu_us']:6.0f} us CPU/req  CPU {f['cpu_share']:3.0f}%")


def code_state() -> dict[str, Any]:
    """Which gateway code ran: the commit, the files changed on top of it, and a digest of the gateway's sources
    (the checkout is shared, so the code can change between two variants of one run; this makes that visible)."""
    import hashlib
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=procs.REPO, capture_output=True, text=True,
                                  timeout=10).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""

    digest = hashlib.sha256()
    for path in sorted([*procs.REPO.glob("gateway/**/*.py"), *procs.REPO.glob("observability/**/*.py")]):
        digest.update(path.as_posix().encode() + b"\0" + path.read_bytes())
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "changed": git("status", "--porcelain", "--", "gateway", "observability").splitlines(),
            "sources_sha256": digest.hexdigest()[:16]}


def _cpu_split() -> tuple[set[int] | None, set[int] | None]:
    """(CPUs for the proxy under test, CPUs for everything else): the last CPU for the proxy."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return (None, None)
    return ({cpus[-1]}, set(cpus[:-1]))


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def table_text(bench: Bench) -> str:
    header = f"{'scenario':<15} {'proxy / variant':<36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} " \
             f"{'CPU %':>6} {'fails':>6} {'best req/s':>10} {'best p99':>9} {'best CPU':>9} {'MB/s':>8} {'RSS +MiB':>9}"
    lines = [header, "-" * len(header)] + [_table_line(r) for r in bench.rows]
    ratios = ratio_lines(bench)
    if ratios:
        lines += ["", "ratios (gateway / other, same run; medians, best runs in brackets):"] + [f"  {x}" for x in ratios]
    lines += _target_lines(bench)
    failed = [c for c in bench.checks if not c.ok]
    lines += ["", f"correctness checks: {len(bench.checks) - len(failed)} of {len(bench.checks)} passed"]
    lines += [f"  FAILED [{c.scenario}] {c.what}: {c.detail}" for c in failed]
    if bench.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in bench.notes]
    return "\n".join(lines)


def _table_line(r: Row) -> str:
    mb = f"{r.mb_s:8.0f}" if r.mb_s is not None else f"{'':8}"
    rss = f"{r.rss_growth_mib:9.1f}" if r.rss_growth_mib is not None else f"{'':9}"
    if r.mb_s is not None:
        return (f"{r.scenario:<15} {r.label:<36} {'':>9} {'':>8} {'':>8} {'':>10} {r.cpu_share:>6.0f} "
                f"{r.failures:>6} {'':>10} {'':>9} {'':>9} {mb} {rss}")
    return (f"{r.scenario:<15} {r.label:<36} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.cpu_us:>10.0f} {r.cpu_share:>6.0f} {r.failures:>6} {r.best_of('rps'):>10.0f} "
            f"{r.best_of('p99_ms'):>9.2f} {r.best_of('cpu_us'):>9.0f} {mb} {rss}")


def _target_lines(bench: Bench) -> list[str]:
    """The second pass's targets first (judged on medians), then the standing ones of earlier issues."""
    runs = max((r.runs for r in bench.rows), default=1)
    lines = []
    for issue, title in ((SECOND_PASS, f"targets ({SECOND_PASS}; median of {runs} runs, best run in brackets; "
                                       f"backend: {bench.opts.backend}):"),
                         ("", "standing targets (earlier issues):")):
        targets = [t for t in bench.targets if t.issue == issue]
        if targets:
            lines += ["", title]
            lines += [f"  [{t.verdict}] {t.scenario}: {t.what}: {t.value}" for t in targets]
    return lines


def times(value: Row, base: Row, key: str) -> str:
    """``value``'s ``key`` over ``base``'s: the medians' ratio, the best runs' in brackets."""
    median = getattr(value, key) / getattr(base, key) if getattr(base, key) else 0.0
    best = value.best_of(key) / base.best_of(key) if base.best_of(key) else 0.0
    return f"x{median:.2f} (x{best:.2f})"


def ratio_lines(bench: Bench) -> list[str]:
    out = []
    for scenario in dict.fromkeys(r.scenario for r in bench.rows):
        rows = [r for r in bench.rows if r.scenario == scenario and r.mb_s is None]
        gw = next((r for r in rows if r.proxy == "gateway" and r.extra.get("baseline") is None), None)
        for other in ("naive", "nginx"):
            o = next((r for r in rows if r.proxy == other), None)
            if gw is not None and o is not None and o.rps and o.cpu_us:
                out.append(f"{scenario}: gateway/{other}: throughput {times(gw, o, 'rps')}, "
                           f"CPU per request {times(gw, o, 'cpu_us')}, p50 {times(gw, o, 'p50_ms')}, "
                           f"p99 {times(gw, o, 'p99_ms')}")
        for r in rows:
            base_name = r.extra.get("baseline")
            base = next((b for b in rows if b.variant == base_name and b.proxy == r.proxy), None)
            if base is not None and base is not r and base.rps and base.p50_ms and base.p99_ms:
                out.append(f"{scenario}: {r.variant} / {base.variant}: throughput {times(r, base, 'rps')}, "
                           f"p50 {times(r, base, 'p50_ms')}, p99 {times(r, base, 'p99_ms')}, "
                           f"CPU per request {times(r, base, 'cpu_us')}")
        out += _transfer_ratios(bench, scenario)
    return out


def _transfer_ratios(bench: Bench, scenario: str) -> list[str]:
    big = [r for r in bench.rows if r.scenario == scenario and r.mb_s is not None]
    out = []
    for r in big:
        if r.proxy != "gateway" or not r.mb_s:
            continue
        ref = next((n for n in big if n.proxy == "nginx" and n.variant == r.variant), None)
        if ref is not None and ref.mb_s:
            out.append(f"{scenario}: {r.variant}: gateway {r.mb_s:.0f} MB/s vs nginx {ref.mb_s:.0f} MB/s "
                       f"(x{r.mb_s / ref.mb_s:.2f})")
    return out


def results_json(bench: Bench, started: float) -> dict[str, Any]:
    return {
        "started_at": started,
        "code": bench.code,
        "finished_at": time.time(),
        "options": {"duration": bench.opts.duration, "warmup": bench.opts.warmup,
                    "connections": bench.opts.connections, "big_size": bench.opts.big_size,
                    "pinning": {"proxy_cpus": sorted(bench.procs.cpus[0] or []),
                                "load_cpus": sorted(bench.procs.cpus[1] or [])},
                    "scenarios": bench.opts.scenarios, "backend": bench.opts.backend},
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "rows": [{"scenario": r.scenario, "proxy": r.proxy, "variant": r.variant, "rps": r.rps, "p50_ms": r.p50_ms,
                  "p99_ms": r.p99_ms, "cpu_us_per_request": r.cpu_us, "cpu_percent": r.cpu_share,
                  "figures": f"median of {r.runs} runs" if r.best else "one run", "best": r.best,
                  "requests": r.requests,
                  "failures": r.failures, "mb_per_s": r.mb_s, "rss_growth_mib": r.rss_growth_mib, **r.extra}
                 for r in bench.rows],
        "ratios": ratio_lines(bench),
        "checks": [vars(c) for c in bench.checks],
        "targets": [{**vars(t), "verdict": t.verdict} for t in bench.targets],
        "notes": bench.notes,
        "ok": all(c.ok for c in bench.checks),
    }


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def missing_tools() -> list[str]:
    missing = []
    if not (os.path.exists(NGINX) or shutil.which("nginx")):
        missing.append("nginx")
    if wrk.wrk_binary() is None:
        missing.append("wrk")
    return missing


def can_install() -> bool:
    """Debian's packages can be installed here: root, with apt-get (as on CI and in containers)."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def install_tools() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx-light", "wrk"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            progress(f"benchmark: {' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-300:]}")
            return


def parse_args(argv: list[str] | None) -> Options:
    from tests.bench.scenarios import SCENARIOS

    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", action="append", choices=list(SCENARIOS), metavar="NAME",
                   help=f"run only this scenario (repeatable); one of: {', '.join(SCENARIOS)}")
    p.add_argument("--duration", type=int, default=6, help="seconds of each measured wrk run (default 6)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up before each run (0: none)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--big-size", type=_size, default=1 << 30, help="bytes of the streamed transfers (default 1GiB)")
    p.add_argument("--repeat", type=int, default=2,
                   help="measured runs per proxy/variant; the least disturbed (highest req/s) is reported (default 2)")
    p.add_argument("--reload-duration", type=int, default=10, help="seconds of load while reloading (default 10)")
    p.add_argument("--proxy", action="append", choices=["nginx", "naive", "gateway"],
                   help="pass-through scenario: run only this proxy (repeatable), e.g. to profile the gateway")
    p.add_argument("--backend", choices=["aiohttp", "raw"], default="aiohttp",
                   help="upstream build: a minimal aiohttp app, as in the issue's rig (default), or a raw httptools "
                        "protocol that never limits the proxy")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs")
    p.add_argument("--out", type=Path, help="JSON results file (default bench-results/bench-TIMESTAMP.json)")
    p.add_argument("--baseline-src", type=Path, metavar="DIR",
                   help="another checkout (e.g. a git worktree of an older commit): passthrough also measures its "
                        "gateway, in turns with this one")
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs) for inspection")
    a = p.parse_args(argv)
    return Options(duration=a.duration, warmup=a.warmup, connections=a.connections, big_size=a.big_size,
                   reload_duration=a.reload_duration, repeat=a.repeat, pin=a.pin, scenarios=a.scenario or list(SCENARIOS),
                   out=a.out, keep=a.keep, backend=a.backend, baseline_src=a.baseline_src,
                   proxies=tuple(a.proxy or ("nginx", "naive", "gateway")))


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def main(argv: list[str] | None = None) -> int:
    from tests.bench.scenarios import SCENARIOS

    opts = parse_args(argv)
    missing = missing_tools()
    if missing and can_install():
        progress(f"benchmark: {' and '.join(missing)} not found: installing them ({wrk.INSTALL_HINT})")
        install_tools()
        missing = missing_tools()
    if missing:
        print(f"benchmark: {' and '.join(missing)} not found. Install them with:\n    {wrk.INSTALL_HINT}",
              file=sys.stderr)
        return 2
    # SIGTERM ends the run like Ctrl-C does, so the `finally` below stops every process we started.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="strangler-bench-run-"))
    bench = Bench(opts, workdir)
    if bench.procs.cpus[1]:
        os.sched_setaffinity(0, bench.procs.cpus[1])   # the harness is load, not proxy
    started = time.time()
    code = 0
    try:
        bench.backend_port = bench.start_backend()
        for name in opts.scenarios:
            progress(f"== {name}")
            try:
                SCENARIOS[name](bench)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
                bench.check(name, "scenario ran to the end", False, f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        progress("interrupted: stopping every process")
        code = 130
    except Exception as exc:  # noqa: BLE001 - the backend did not start: report it like a failed check
        bench.check("setup", "the upstream backend started", False, f"{type(exc).__name__}: {exc}")
    finally:
        bench.procs.close()
        bench.code["at_end"] = code_state()
        if bench.code["at_end"]["sources_sha256"] != bench.code["at_start"]["sources_sha256"]:
            bench.note("the gateway's sources changed during this run (shared checkout): variants measured "
                       "before and after the change ran different code")
        if not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            progress(f"work directory kept: {workdir}")
    out = opts.out or RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results_json(bench, started), indent=2))
    print(table_text(bench))
    print(f"\nresults: {out}")
    if code == 0 and not all(c.ok for c in bench.checks):
        print("\nBENCHMARK CORRECTNESS CHECKS FAILED (see above)", file=sys.stderr)
        code = 1
    return code


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
