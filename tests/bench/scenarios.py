"""The benchmark's scenarios, one function each, run in this order by default.

Every scenario measures its own baseline in the same run, back to back, so that the comparison it reports (table
size, shadow, canary, tracing) is not skewed by load that other users of the machine put on it meanwhile:

    passthrough      nginx, naive aiohttp proxy, gateway (fallback only, default features on)
    floor            nginx, aiohttp's listener alone, the bare relay, gateway: what each layer costs per request
    paced            nginx and gateway offered the same load, half of the gateway's saturation: p50, p99
    routes           gateway with 1 route vs 1,000 vs 10,000 (the request hits a template near the end)
    shadow-fast      no shadow vs shadow 100% to a second fast backend
    shadow-slow      no shadow vs shadow 100% to a backend answering after 500 ms
    shadow-dead      no shadow vs shadow 100% to a refused port
    canary           legacy only vs canary 50% (random split, both sides fast backends)
    tracing          tracing.sample 0 vs 100
    stream-download  1 GiB streamed from the backend through gateway and nginx: MB/s, gateway RSS growth
    stream-upload    1 GiB streamed from the client through gateway and nginx: MB/s, gateway RSS growth
    reload           1,000 routes, without and with a rewrite (atomic rename) of routes.yaml every second
    workers          --workers 1 vs 2: throughput per worker (the gateway pinned apart where the cores allow)
    admission        a route without a waiting room vs with one (an admitted visitor's ticket; a queued visitor
                     polling), then 50,000 visitors held waiting: gateway memory
    tls              HTTP vs HTTPS to the backend, gateway and nginx (proxy_ssl); handshakes/s, keep-alive off
    fleet-store      pass-through with the PostgreSQL store of a fleet vs the SQLite default

The naive proxy is left out of the transfers on purpose: it buffers whole bodies, so 1 GiB would cost it 1 GiB
of memory (or more), which says nothing new.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from tests.bench import bench_tls, configs, procs, transfer
from tests.bench.configs import MEASURED_PATH, GatewaySetup
from tests.bench.procs import Proc
from tests.bench.run import SECOND_PASS, Bench, Gateway, Row, Subject, progress, times

MIB = 1024 * 1024


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _gateway_run(b: Bench, scenario: str, variant: str, setup: GatewaySetup, path: str = MEASURED_PATH,
                 baseline: str | None = None, expect_route: str | None = None,
                 after: Callable[[Gateway, Row], None] | None = None) -> Row:
    gw = b.start_gateway(setup)
    try:
        if expect_route is not None:
            _check_route(b, scenario, variant, gw, path, expect_route)
        row = b.measure(scenario, "gateway", variant, gw.proc, gw.port, path)
        if baseline is not None:
            row.extra["baseline"] = baseline
        if after is not None:
            after(gw, row)
        return row
    finally:
        b.procs.stop(gw.proc)


@contextlib.contextmanager
def _gateways(b: Bench, setups: list[GatewaySetup], each: list[dict[str, Any]] | None = None,
              **start: Any) -> Iterator[list[Gateway]]:
    """Several gateways running at once (each idle while another is measured), stopped together. ``each``: start
    arguments of one gateway apiece (its backend, its CPUs), on top of ``start``."""
    running: list[Gateway] = []
    try:
        for i, setup in enumerate(setups):
            running.append(b.start_gateway(setup, **start, **(each[i] if each else {})))
        yield running
    finally:
        for gw in running:
            b.procs.stop(gw.proc)


def _check_route(b: Bench, scenario: str, variant: str, gw: Gateway, path: str, route: str) -> None:
    try:
        got = gw.admin_get(f"/api/explain?method=GET&path={path}").get("route")
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        got = repr(exc)
    b.check(scenario, f"gateway: {variant}: GET {path} is served by route {route!r}", got == route, f"got {got!r}")


def _route_stats(gw: Gateway, name: str) -> dict[str, Any]:
    for view in gw.admin_get("/api/routes"):
        if view["name"] == name:
            return dict(view["stats"])
    return {}


def _within(b: Bench, scenario: str, what: str, value: float, base: float, tolerance: float,
            higher_is_better: bool) -> None:
    if not base:
        return
    ratio = value / base
    met = ratio >= 1 - tolerance if higher_is_better else ratio <= 1 + tolerance
    b.target(scenario, what, met, f"x{ratio:.3f} ({value:.2f} vs {base:.2f})")


# ----------------------------------------------------------------------------------------------------------------
# Scenarios
# ----------------------------------------------------------------------------------------------------------------


def passthrough(b: Bench) -> None:
    name = "passthrough"
    rows: dict[str, Row] = {}
    for proxy in ("nginx", "naive"):
        if proxy not in b.opts.proxies:
            continue
        proc, port = b.start_nginx() if proxy == "nginx" else b.start_naive()
        try:
            rows[proxy] = b.measure(name, proxy, "", proc, port, MEASURED_PATH)
        finally:
            b.procs.stop(proc)
    if "gateway" not in b.opts.proxies:
        return
    if b.opts.baseline_src is not None:
        gw = _against_baseline(b, name)
    else:
        gw = _gateway_run(b, name, "", GatewaySetup(), expect_route="fallback")
    _passthrough_targets(b, gw, rows)


def _passthrough_targets(b: Bench, gw: Row, refs: dict[str, Row]) -> None:
    """Judged with the raw backend only: with the aiohttp one the backend, not the proxy, caps nginx's throughput
    (and the load side's share of the machine moves every figure), so there they are shown for information."""
    name = "passthrough"
    judged = b.opts.backend == "raw"
    rig = "" if judged else " (judged with --backend raw)"
    b.target(name, f"gateway CPU per request <= 50 us{rig}", gw.cpu_us <= 50,
             f"{gw.cpu_us:.0f} us ({gw.best_of('cpu_us'):.0f} us)", judged, SECOND_PASS)
    for proxy, share in (("naive", 2.0), ("nginx", 0.35)):
        ref = refs.get(proxy)
        if ref is not None and ref.rps:
            b.target(name, f"gateway throughput >= {share:g}x {proxy}'s{rig}", gw.rps >= share * ref.rps,
                     f"{times(gw, ref, 'rps')}: {gw.rps:.0f} vs {ref.rps:.0f} req/s", judged, SECOND_PASS)


def _against_baseline(b: Bench, name: str) -> Row:
    """This checkout's gateway and the one in ``--baseline-src``, measured in turns (A B, A B) in one run."""
    setups = [GatewaySetup(), GatewaySetup(src=b.opts.baseline_src)]
    with _gateways(b, setups) as (gw, base):
        _check_route(b, name, "", gw, MEASURED_PATH, "fallback")
        row, base_row = b.measure_together(name, [
            Subject("gateway", "", gw.proc, gw.port, MEASURED_PATH),
            Subject("gateway", "baseline", base.proc, base.port, MEASURED_PATH)])
    base_row.extra["src"] = str(b.opts.baseline_src)
    _within(b, name, "CPU per request no higher than the baseline checkout's (5% noise)", row.cpu_us,
            base_row.cpu_us, 0.05, higher_is_better=False)
    return row


def floor(b: Bench) -> None:
    """Where the gateway's CPU per request goes, layer by layer, all measured in turns: aiohttp's listener answering
    by itself, the same listener relaying through the gateway's pool with nothing else (``floor_proxy``), and the
    gateway with every default on; nginx for scale. The differences are the upstream exchange and the features."""
    name = "floor"
    started: list[Proc] = []
    try:
        subjects = []
        if "nginx" in b.opts.proxies:
            proc, port = b.start_nginx()
            started.append(proc)
            subjects.append(Subject("nginx", "", proc, port, MEASURED_PATH))
        for mode in ("listener", "relay"):
            proc, port = b.start_floor(mode)
            started.append(proc)
            subjects.append(Subject("aiohttp", mode, proc, port, MEASURED_PATH))
        gw = b.start_gateway(GatewaySetup())
        started.append(gw.proc)
        subjects.append(Subject("gateway", "", gw.proc, gw.port, MEASURED_PATH))
        rows = {(r.proxy, r.variant): r for r in b.measure_together(name, subjects)}
    finally:
        for proc in started:
            b.procs.stop(proc)
    listener, relay, gateway = rows[("aiohttp", "listener")], rows[("aiohttp", "relay")], rows[("gateway", "")]
    b.note(f"{name}: CPU per request: aiohttp's listener {listener.cpu_us:.1f} us, the upstream exchange "
           f"{relay.cpu_us - listener.cpu_us:.1f} us, the gateway's features {gateway.cpu_us - relay.cpu_us:.1f} us "
           f"(gateway {gateway.cpu_us:.1f} us)")
    nginx = rows.get(("nginx", ""))
    if nginx is not None and nginx.rps:
        # At one core each, throughput is the inverse of CPU per request: 0.35x nginx's is this much CPU.
        budget = nginx.cpu_us / 0.35
        b.note(f"{name}: 0.35x nginx's throughput allows {budget:.1f} us per request; the bare relay alone takes "
               f"{relay.cpu_us:.1f} us ({times(relay, nginx, 'rps')} nginx), leaving {budget - relay.cpu_us:.1f} us "
               "for every feature")


def paced(b: Bench) -> None:
    """Latency below saturation: nginx and the gateway offered the same fixed request rate, half of what the
    gateway takes at full load, over the same connections. At saturation a closed-loop client's latency is just
    its queue (connections / throughput); at half load it is what a request costs in the proxy."""
    name = "paced"
    nginx_proc, nginx_port = b.start_nginx()
    try:
        with _gateways(b, [GatewaySetup()]) as (gw,):
            _check_route(b, name, "", gw, MEASURED_PATH, "fallback")
            rate = PACED_SHARE * _saturation(b, name, gw)
            variant = f"{rate:.0f} req/s offered"
            nginx, gateway = b.measure_together(name, [
                Subject("nginx", variant, nginx_proc, nginx_port, MEASURED_PATH, rate=rate),
                Subject("gateway", variant, gw.proc, gw.port, MEASURED_PATH, rate=rate)])
    finally:
        b.procs.stop(nginx_proc)
    for row in (nginx, gateway):
        _achieved(b, name, row, rate)
    b.target(name, f"gateway p99 <= 1.5x nginx's at {PACED_SHARE:.0%} of the gateway's saturation",
             gateway.p99_ms <= 1.5 * nginx.p99_ms,
             f"{times(gateway, nginx, 'p99_ms')}: p99 {gateway.p99_ms:.2f} vs {nginx.p99_ms:.2f} ms, "
             f"p50 {gateway.p50_ms:.2f} vs {nginx.p50_ms:.2f} ms at {rate:.0f} req/s", issue=SECOND_PASS)


def _saturation(b: Bench, scenario: str, gw: Gateway) -> float:
    """The gateway's requests/s at full load: the passthrough scenario's median when it ran before in this run,
    else one unpaced run of this gateway."""
    done = next((r for r in b.rows if r.scenario == "passthrough" and r.proxy == "gateway" and not r.variant), None)
    if done is not None and done.rps:
        b.note(f"{scenario}: the gateway's saturation is passthrough's median, {done.rps:.0f} req/s")
        return done.rps
    url = f"http://127.0.0.1:{gw.port}{MEASURED_PATH}"
    if b.opts.warmup > 0:
        b.wrk(url, b.opts.warmup)
    rps = b.wrk(url, b.opts.duration).rps
    b.note(f"{scenario}: the gateway's saturation, one unpaced run: {rps:.0f} req/s")
    return rps


def _achieved(b: Bench, scenario: str, row: Row, rate: float) -> None:
    """A paced run says nothing about latency at that load unless the proxy was actually offered it (a proxy
    that cannot keep up turns the schedule into a closed loop again)."""
    row.extra["offered_rps"] = rate
    b.check(scenario, f"{row.label}: achieved the offered rate (within 10%)", abs(row.rps / rate - 1) <= 0.10,
            f"{row.rps:.0f} of {rate:.0f} req/s")


def routes(b: Bench) -> None:
    name = "routes"
    sizes = {"1 route": 1, "1,000 routes": 1000, "10,000 routes": 10_000}
    paths = {variant: configs.table_path(n) for variant, n in sizes.items()}
    with _gateways(b, [GatewaySetup(routes=configs.table_routes(n)) for n in sizes.values()]) as gws:
        for (variant, path), gw in zip(paths.items(), gws, strict=True):
            _check_route(b, name, variant, gw, path, f"r{path.split('/')[2].removeprefix('svc')}")
        measured = b.measure_together(name, [
            Subject("gateway", variant, gw.proc, gw.port, paths[variant],
                    baseline=None if variant == "1 route" else "1 route")
            for variant, gw in zip(sizes, gws, strict=True)])
    rows = dict(zip(sizes, measured, strict=True))
    for variant, n in sizes.items():
        rows[variant].extra["routes"] = n
    for variant in ("1,000 routes", "10,000 routes"):
        _within(b, name, f"{variant}: throughput within 5% of one route", rows[variant].rps, rows["1 route"].rps,
                0.05, higher_is_better=True)


# Latency is compared at this share of the no-shadow run's saturated throughput: at saturation, a closed-loop
# client's p50 is just connections / throughput (Little's law), so it restates the CPU figure; below saturation it
# says whether the shadow path makes a primary request wait.
PACED_SHARE = 0.5


def _pace_ms(b: Bench, saturated_rps: float) -> int:
    """Per-connection pause that offers about ``PACED_SHARE`` of ``saturated_rps``."""
    return max(1, round(1000 * b.opts.connections / (PACED_SHARE * saturated_rps))) if saturated_rps else 5


def _shadow(b: Bench, scenario: str, label: str, target_port: int, expect_compared: bool) -> None:
    backends = {"extracted": target_port}
    setups = [GatewaySetup(routes=configs.staged_route(stage, "extracted"), extra_backends=backends)
              for stage in ("legacy", "shadow")]
    with _gateways(b, setups) as (base_gw, shadow_gw):
        _check_route(b, scenario, "no shadow", base_gw, MEASURED_PATH, "products")
        base, row = b.measure_together(scenario, [
            Subject("gateway", "no shadow", base_gw.proc, base_gw.port, MEASURED_PATH),
            Subject("gateway", label, shadow_gw.proc, shadow_gw.port, MEASURED_PATH, baseline="no shadow")])
        # With every request copied to a fast target each one costs about twice the CPU, so half of the no-shadow
        # throughput would already saturate the gateway: that scenario is paced at a quarter instead.
        pace = _pace_ms(b, base.rps / 2 if expect_compared else base.rps)
        base_paced = f"no shadow, paced {pace} ms"
        time.sleep(2.0)   # the copies queued at full load drain first: the paced runs start from an empty queue
        before = _route_stats(shadow_gw, "products")
        paced_base, paced = b.measure_together(scenario, [
            Subject("gateway", base_paced, base_gw.proc, base_gw.port, MEASURED_PATH, pace),
            Subject("gateway", f"{label}, paced {pace} ms", shadow_gw.proc, shadow_gw.port, MEASURED_PATH,
                    pace, baseline=base_paced)])
        if expect_compared:
            _copies_at_half_load(b, scenario, before, _route_stats(shadow_gw, "products"))
        _inspect_shadow(b, scenario, shadow_gw, row, expect_compared)
    if not expect_compared:
        load = f"at {PACED_SHARE:.0%} load"
        _within(b, scenario, f"primary p50 within 10% of no shadow {load}", paced.p50_ms, paced_base.p50_ms, 0.10,
                False)
        _within(b, scenario, f"primary p99 within 10% of no shadow {load}", paced.p99_ms, paced_base.p99_ms, 0.10,
                False)


def _copies_at_half_load(b: Bench, scenario: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Below saturation a fast target gets every copy: copies are shed only when the gateway's CPU is saturated."""
    sent = after.get("shadow", {}).get("requests", 0) - before.get("shadow", {}).get("requests", 0)
    skipped = sum(after.get("skipped", {}).values()) - sum(before.get("skipped", {}).values())
    b.note(f"{scenario}: during the paced runs {sent} copies were sent and {skipped} skipped")
    b.check(scenario, "below saturation no copy was skipped", sent > 0 and skipped == 0,
            f"{sent} sent, {skipped} skipped")


def _inspect_shadow(b: Bench, scenario: str, gw: Gateway, row: Row, expect_compared: bool) -> None:
    time.sleep(0.5)  # let the last comparisons land in the stats
    stats = _route_stats(gw, "products")
    row.extra["route_stats"] = stats
    shadow = stats.get("shadow", {})
    b.note(f"{scenario}: shadow side over the run: {shadow.get('requests', 0)} sent, "
           f"{shadow.get('compared', 0)} compared, {shadow.get('mismatches', 0)} mismatches, "
           f"{shadow.get('errors', 0)} errors, skipped {stats.get('skipped', {})}")
    if expect_compared:
        b.check(scenario, "shadow copies were compared, all matching",
                shadow.get("compared", 0) > 0 and shadow.get("mismatches", 0) == 0, f"{shadow}")
    else:
        b.check(scenario, "the shadow target's failure or slowness was seen (errors or skips)",
                shadow.get("errors", 0) > 0 or sum(stats.get("skipped", {}).values()) > 0
                or shadow.get("requests", 0) > 0, f"{shadow}, skipped {stats.get('skipped')}")


def shadow_fast(b: Bench) -> None:
    _shadow(b, "shadow-fast", "shadow 100% fast", b.start_backend("shadow-fast"), expect_compared=True)


def shadow_slow(b: Bench) -> None:
    _shadow(b, "shadow-slow", "shadow 100% slow (500 ms)", b.start_backend("shadow-slow", delay=0.5),
            expect_compared=False)


def shadow_dead(b: Bench) -> None:
    _shadow(b, "shadow-dead", "shadow 100% dead (refused)", procs.dead_port(), expect_compared=False)


def canary(b: Bench) -> None:
    name = "canary"
    backends = {"extracted": b.start_backend("canary-target")}
    _gateway_run(b, name, "legacy only", GatewaySetup(routes=configs.staged_route("legacy", "extracted"),
                                                      extra_backends=backends), expect_route="products")

    def split(gw: Gateway, row: Row) -> None:
        total = _route_stats(gw, "products").get("total", {})
        legacy, extracted = total.get("legacy", 0), total.get("extracted", 0)
        share = extracted / (legacy + extracted) * 100 if legacy + extracted else 0.0
        row.extra["split"] = {"legacy": legacy, "extracted": extracted, "extracted_percent": round(share, 2)}
        b.check(name, "canary 50%: the extracted side served 45-55% of requests", 45 <= share <= 55,
                f"legacy {legacy}, extracted {extracted} ({share:.1f}%)")

    _gateway_run(b, name, "canary 50%", GatewaySetup(routes=configs.staged_route("canary", "extracted"),
                                                     extra_backends=backends), baseline="legacy only", after=split)


def tracing(b: Bench) -> None:
    name = "tracing"
    _gateway_run(b, name, "tracing sample 0", GatewaySetup(tracing_sample=0))

    def traced(gw: Gateway, row: Row) -> None:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{gw.port}{MEASURED_PATH}", timeout=10) as resp:
            trace_id = resp.headers.get("X-Trace-Id")
        row.extra["x_trace_id_seen"] = bool(trace_id)
        if not trace_id:
            b.note("tracing: no X-Trace-Id on responses with tracing.sample 100: tracing is not active in this "
                   "build, so the two variants measure the same code")

    _gateway_run(b, name, "tracing sample 100", GatewaySetup(tracing_sample=100), baseline="tracing sample 0",
                 after=traced)


def _stream(b: Bench, direction: str) -> None:
    name = f"stream-{direction}"
    size = b.opts.big_size
    move = transfer.download if direction == "download" else transfer.upload
    variant = f"{direction} {size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{direction} {size // MIB} MiB"
    rows = [_transfer(b, name, proxy, variant, move, size) for proxy in ("nginx", "gateway")]
    _stream_targets(b, name, *rows)


def _transfer(b: Bench, name: str, proxy: str, variant: str, move: Callable[[int, int], transfer.TransferResult],
              size: int) -> Row:
    """One transfer of ``size`` bytes through a freshly started ``proxy``: MB/s, CPU, RSS growth."""
    if proxy == "nginx":
        proc, port = b.start_nginx()
    else:
        gw = b.start_gateway(GatewaySetup())
        proc, port = gw.proc, gw.port
    try:
        b.check_get(name, proxy, port, MEASURED_PATH)   # also warms the upstream connection
        pids = procs.descendants(proc.pid)
        cpu0 = procs.cpu_seconds(pids)
        with transfer.RssSampler(pids) as rss:
            result = move(port, size)
        cpu = procs.cpu_seconds(pids) - cpu0
    finally:
        b.procs.stop(proc)
    row = Row(name, proxy, variant, requests=1, failures=0 if result.ok else 1, mb_s=result.mb_per_s,
              cpu_share=cpu / result.seconds * 100 if result.seconds else 0.0,
              rss_growth_mib=rss.growth_mib,
              extra={"bytes": result.body_bytes, "seconds": round(result.seconds, 3), "status": result.status,
                     "cpu_seconds": cpu, "rss_before_mib": rss.before_kib / 1024,
                     "rss_peak_mib": rss.max_kib / 1024, "peak_from_vmhwm": rss.hwm_reset})
    b.rows.append(row)
    b.check(name, f"{proxy}: {variant}: every byte arrived, status 200", result.ok, result.error or
            f"{result.body_bytes} bytes")
    progress(f"  {row.label:<34} {row.mb_s:8.0f} MB/s  RSS +{row.rss_growth_mib:.1f} MiB  "
             f"({result.seconds:.1f} s, CPU {cpu:.1f} s)  {'ok' if result.ok else 'FAILED: ' + result.error}")
    return row


def _stream_targets(b: Bench, name: str, nginx: Row, gateway: Row) -> None:
    """One transfer each (a gigabyte is long enough to average itself out): no median to take."""
    if nginx.mb_s and gateway.mb_s is not None:
        b.target(name, "gateway >= 0.8x nginx's MB/s", gateway.mb_s >= 0.8 * nginx.mb_s,
                 f"x{gateway.mb_s / nginx.mb_s:.2f}: {gateway.mb_s:.0f} vs {nginx.mb_s:.0f} MB/s", issue=SECOND_PASS)
    growth = gateway.rss_growth_mib or 0.0
    b.target(name, "gateway RSS growth < 64 MiB", growth < 64, f"{growth:.1f} MiB", issue=SECOND_PASS)


def stream_download(b: Bench) -> None:
    _stream(b, "download")


def stream_upload(b: Bench) -> None:
    _stream(b, "upload")


def reload(b: Bench) -> None:
    name = "reload"
    n = 1000
    path = configs.table_path(n)
    last = path.split("/")[2].removeprefix("svc")
    _gateway_run(b, name, "1,000 routes, no reload", GatewaySetup(routes=configs.table_routes(n)), path=path,
                 expect_route=f"r{last}")
    gw = b.start_gateway(GatewaySetup(routes=configs.table_routes(n)))
    stop = threading.Event()
    rewrites = 0

    def rewrite() -> None:
        nonlocal rewrites
        template = gw.routes.read_text()
        base = configs.table_routes(n, 0)
        while not stop.wait(1.0):
            rewrites += 1
            configs.write_atomically(gw.routes, template.replace(base, configs.table_routes(n, rewrites)))

    try:
        start_gen = gw.admin_get("/api/config")["generation"]
        writer = threading.Thread(target=rewrite, daemon=True)
        writer.start()
        try:
            row = b.measure(name, "gateway", "1,000 routes, reload every 1 s", gw.proc, gw.port, path,
                            duration=b.opts.reload_duration, repeat=1)
        finally:
            stop.set()
            writer.join()
        row.extra["baseline"] = "1,000 routes, no reload"
        final_digest = hashlib.sha256(gw.routes.read_bytes()).hexdigest()
        status = _settled_config(gw, final_digest)
    finally:
        b.procs.stop(gw.proc)
    reloads = status["generation"] - start_gen
    row.extra.update(rewrites=rewrites, reloads=reloads, last_reload=status.get("last_reload"))
    b.note(f"reload: {rewrites} rewrites, {reloads} reloads (rewrites landing during a reload are coalesced)")
    # The gateway may fold rewrites that land while it is still parsing into one reload; what must hold is that
    # it reloaded and ended up serving exactly the last file written.
    b.check(name, "the gateway reloaded and serves the last file written",
            reloads > 0 and status.get("digest") == final_digest and bool(status.get("last_reload", {}).get("ok")),
            f"{rewrites} rewrites, {reloads} reloads, last_reload {status.get('last_reload')}")
    b.target(name, "zero failed requests while reloading every second", row.failures == 0,
             f"{row.failures} failed of {row.requests}")


def _settled_config(gw: Gateway, digest: str, timeout: float = 15.0) -> dict[str, Any]:
    """The admin API's config status once it serves ``digest`` (or whatever it serves after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        status = gw.admin_get("/api/config")
        if status.get("digest") == digest or time.monotonic() > deadline:
            return dict(status)
        time.sleep(0.2)


def workers(b: Bench) -> None:
    """``--workers 1`` against ``--workers 2``: throughput per worker and its ratio to one worker's. The backend is
    the near-free raw one whatever ``--backend`` says, so that the gateway is what needs the cores. Each variant
    has its own backend, laid out on the CPUs with its wrk (``_worker_cpus``). Where one worker gets a core of its
    own and two cannot, one worker also runs laid out as the two are (nothing pinned): the scaling target compares
    like with like."""
    name = "workers"
    variants = [(n, _worker_cpus(b, n)) for n in (1, 2)]
    if variants[0][1] != variants[1][1]:
        variants.append((1, (None, None)))
    labels = [_workers_variant(n) + ("" if i < 2 else ", nothing pinned") for i, (n, _) in enumerate(variants)]
    backends = [b.start_backend(f"workers-backend-{i}", server="raw", role="any", cpus=layout[1])
                for i, (_, layout) in enumerate(variants)]
    each = [{"backend": backend, "cpus": layout[0]} for backend, (_, layout) in zip(backends, variants, strict=True)]
    with _gateways(b, [GatewaySetup(workers=n) for n, _ in variants], each=each, role="any") as gws:
        rows = b.measure_together(name, [
            Subject("gateway", label, gw.proc, gw.port, MEASURED_PATH, baseline=None if n == 1 else labels[0],
                    anywhere=layout[0] is None, load_cpus=layout[1])
            for (n, layout), label, gw in zip(variants, labels, gws, strict=True)])
    for (n, layout), row in zip(variants, rows, strict=True):
        row.extra.update(workers=n, per_worker_rps=row.rps / n, cpus=_layout_text(layout))
    for (n, _), row in zip(variants[:2], rows[:2], strict=True):
        _per_worker_target(b, name, n, row, rows[0])
    one, two = rows[-1] if len(rows) > 2 else rows[0], rows[1]
    b.target(name, f"2 workers on {len(b.procs.all_cpus)} cores: throughput >= 1.3x one worker laid out alike",
             two.rps >= 1.3 * one.rps, times(two, one, "rps") if one.rps else "no throughput")


def _workers_variant(n: int) -> str:
    return f"{n} worker{'s' if n > 1 else ''}"


def _worker_cpus(b: Bench, workers: int) -> tuple[set[int] | None, set[int] | None]:
    """(the gateway's CPUs, wrk's and the backend's). Apart when the machine has a core for each worker and one
    more for the load: the gateway on the last ``workers`` CPUs. Where the cores do not allow it (2 workers on 2
    cores) or with ``--no-pin``: (None, None), every process on every CPU, as on a real machine."""
    cpus = sorted(b.procs.all_cpus)
    if not b.opts.pin or len(cpus) < workers + 1:
        return None, None
    return set(cpus[-workers:]), set(cpus[:-workers])


def _layout_text(layout: tuple[set[int] | None, set[int] | None]) -> str:
    gateway, load = layout
    if gateway is None or load is None:
        return "nothing pinned"
    return f"gateway on CPUs {sorted(gateway)}, wrk and backend on {sorted(load)}"


def _per_worker_target(b: Bench, name: str, n: int, row: Row, one: Row) -> None:
    """A figure reported, not judged: req/s per worker and how it compares with a single worker's."""
    per, best = row.rps / n, row.best_of("rps") / n
    ratio = f", x{per / one.rps:.2f} of one worker's" if one.rps and n > 1 else ""
    b.target(name, f"{_workers_variant(n)}: throughput per worker", None,
             f"{per:.0f} req/s ({best:.0f}){ratio} ({row.extra['cpus']})", issue=SECOND_PASS)


def _ticket(port: int, requests: int) -> str:
    """The ticket cookie the ``requests``-th visitor without one gets (the first is let in, the next waits)."""
    import urllib.error
    import urllib.request

    cookie = ""
    for _ in range(requests):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{MEASURED_PATH}", timeout=10) as resp:
                cookie = resp.headers.get("Set-Cookie", "")
        except urllib.error.HTTPError as exc:
            cookie = exc.headers.get("Set-Cookie", "")
    return cookie.split(";", 1)[0]


HELD = 50_000


def admission(b: Bench) -> None:
    """What a waiting room costs: the same route without one; with one, a visitor holding an admitted ticket (a
    signature check, then the usual proxying); a queued visitor polling (answered by the gateway, the backend
    never sees it). Then 50,000 visitors arrive without tickets and are held waiting: the gateway's RSS growth,
    and that the line stops at its limit (more arrivals are turned away "full", memory stays put)."""
    name = "admission"
    setups = [GatewaySetup(routes=configs.admission_route(None)),
              GatewaySetup(routes=configs.admission_route("{rate: 1000000/s, session: 1h}")),
              GatewaySetup(routes=configs.admission_route(f"{{rate: 1/h, grace: 1h, queue: {HELD}}}"))]
    with _gateways(b, setups) as (plain, room, held):
        admitted = _ticket(room.port, 1)
        waiting = _ticket(held.port, 2)
        b.check(name, "an admitted and a waiting ticket were handed out", ":a:" in admitted and ":w:" in waiting,
                f"{admitted!r} {waiting!r}")
        base, ok, queued = b.measure_together(name, [
            Subject("gateway", "no admission", plain.proc, plain.port, MEASURED_PATH),
            Subject("gateway", "admitted ticket", room.proc, room.port, MEASURED_PATH, baseline="no admission",
                    headers=(("Cookie", admitted),)),
            Subject("gateway", "queued, polling", held.proc, held.port, MEASURED_PATH, baseline="no admission",
                    headers=(("Cookie", waiting),), status=503)])
        _within(b, name, "admitted: CPU per request within 10% of no admission", ok.cpu_us, base.cpu_us, 0.10,
                higher_is_better=False)
        b.target(name, "queued: CPU per request below no admission (the backend is not called)",
                 queued.cpu_us < base.cpu_us, f"{queued.cpu_us:.0f} us vs {base.cpu_us:.0f} us")
        _hold_many(b, name, held)


def _hold_many(b: Bench, name: str, gw: Gateway) -> None:
    pids = procs.descendants(gw.proc.pid)
    before = sum(procs.status_kib(pid, "VmRSS") for pid in pids)
    deadline = time.monotonic() + 120
    waiting = 0
    while time.monotonic() < deadline and waiting < HELD:       # arrivals without tickets, until the line is full
        b.wrk(f"http://127.0.0.1:{gw.port}{MEASURED_PATH}", 3)
        waiting = _waiting(gw)
    full = sum(procs.status_kib(pid, "VmRSS") for pid in pids)
    b.wrk(f"http://127.0.0.1:{gw.port}{MEASURED_PATH}", 5)       # more arrive: turned away, nothing held
    after = sum(procs.status_kib(pid, "VmRSS") for pid in pids)
    growth = (full - before) / 1024
    b.note(f"{name}: {waiting} visitors held waiting: gateway RSS +{growth:.1f} MiB "
           f"({(full - before) * 1024 / max(1, waiting):.0f} bytes a visitor); 5 s more of arrivals at the full "
           f"line: {(after - full) / 1024:+.1f} MiB")
    b.check(name, f"the line holds {HELD} visitors", waiting == HELD, f"{waiting} waiting")
    b.target(name, f"{HELD} waiting visitors hold < 64 MiB", growth < 64, f"{growth:.1f} MiB")
    b.target(name, "a full line stays put (< 4 MiB more after 5 s of arrivals)", (after - full) / 1024 < 4,
             f"{(after - full) / 1024:+.1f} MiB")


def _waiting(gw: Gateway) -> int:
    return sum(int(r["waiting"]) for r in gw.admin_get("/api/admission"))


def fleet_store(b: Bench) -> None:
    """Pass-through with the PostgreSQL store of a fleet against the SQLite default, measured in turns in one
    run: the request path reads the same in-memory snapshots either way, so the CPU per request should not move.
    A throwaway PostgreSQL cluster is started for it (``tests/pg_cluster.py``: needs Debian's postgresql)."""
    from tests.stores.pg_cluster import PASSWORD, cluster

    name = "fleet-store"
    with cluster() as pg:
        url = pg.create_database("bench")
        setups = [GatewaySetup(), GatewaySetup(env={"STRANGLER_STORE_URL": url, "PGPASSWORD": PASSWORD})]
        with _gateways(b, setups) as (sqlite_gw, pg_gw):
            store = pg_gw.admin_get("/api/fleet")["store"]
            b.check(name, "gateway: postgresql: the store is PostgreSQL and reachable",
                    store.get("kind") == "postgresql" and store.get("up") is True, str(store))
            lite, shared = b.measure_together(name, [
                Subject("gateway", "sqlite store", sqlite_gw.proc, sqlite_gw.port, MEASURED_PATH),
                Subject("gateway", "postgresql store", pg_gw.proc, pg_gw.port, MEASURED_PATH,
                        baseline="sqlite store")])
    _within(b, name, "CPU per request with the PostgreSQL store within 5% of SQLite's", shared.cpu_us,
            lite.cpu_us, 0.05, higher_is_better=False)


SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "passthrough": passthrough,
    "floor": floor,
    "paced": paced,
    "routes": routes,
    "shadow-fast": shadow_fast,
    "shadow-slow": shadow_slow,
    "shadow-dead": shadow_dead,
    "canary": canary,
    "tracing": tracing,
    "stream-download": stream_download,
    "stream-upload": stream_upload,
    "reload": reload,
    "workers": workers,
    "admission": admission,
    "tls": bench_tls.tls,
    "fleet-store": fleet_store,
}
