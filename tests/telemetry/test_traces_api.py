"""The embedded collector and the trace viewer: one trace across the gateway and the real services (as processes,
exporting over OTLP to the admin listener), ``/v1/traces`` in both encodings, the store's bound, the listing
filters, the CLI waterfall, and the same spans sent on to an external collector."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from gateway.telemetry.tracing import RELAY_HEADER
from tests.support import admin_url, public_url, serve_app
from tests.telemetry.services import (
    REPO,
    Collector,
    Recorder,
    gateway_with_token,
    get_json,
    services,
    shadow_routes,
    telemetry_routes,
    wait_for,
)

T1 = "5b8efff798038103d269b633813fc60c"


def otlp_json(trace_id: str, spans: list[dict[str, Any]], service: str = "svc") -> dict[str, Any]:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": [{"traceId": trace_id, **s} for s in spans]}]}]}


def span(span_id: str, name: str, start: int, end: int, parent: str = "", **extra: Any) -> dict[str, Any]:
    return {"spanId": span_id, "parentSpanId": parent, "name": name, "kind": 2,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(end), **extra}


async def _cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", *args, cwd=REPO, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


# -- one trace across the real services ------------------------------------------------------------------------


async def test_one_request_in_shadow_gives_one_trace_across_gateway_monolith_and_extracted(tmp_path: Path) -> None:
    from tests.support import free_port

    ports = {"legacy": free_port(), "reviews": free_port()}
    routes = telemetry_routes(tmp_path, shadow_routes(f"http://127.0.0.1:{ports['legacy']}",
                                                  f"http://127.0.0.1:{ports['reviews']}"))
    async with gateway_with_token(routes) as gw, aiohttp.ClientSession() as s:
        host, port = gw.bound["admin"]
        with services(tmp_path, f"http://{host}:{port}", ports) as _urls:
            async with s.get(f"{public_url(gw)}/api/products/3/reviews") as r:
                assert r.status == 200 and r.headers["X-Served-By"] == "legacy"
                trace_id = r.headers["X-Trace-Id"]
            await gw.shadow.settle()

            async def complete() -> dict[str, Any] | None:
                async with s.get(f"{admin_url(gw)}/api/traces/{trace_id}") as resp:
                    if resp.status != 200:
                        return None
                    found = await resp.json()
                services_seen = {sp["service"] for sp in found["spans"]}
                # Both services' server spans and their database spans have arrived.
                names = [sp["name"] for sp in found["spans"]]
                done = services_seen == {"gateway", "legacy", "reviews"} and sum(n.startswith("sqlite") for n in names) >= 2
                return found if done else None

            found = await wait_for(complete, timeout=20)
            listed = await get_json(s, f"{admin_url(gw)}/api/traces?route=reviews")
            code, waterfall, err = await _cli("trace", trace_id, "--admin", f"{host}:{port}")
            assert code == 0, err
            code, listing, err = await _cli("traces", "--json", "--admin", f"{host}:{port}")
            assert code == 0, err

    spans = found["spans"]
    assert found["trace_id"] == trace_id
    ids = {sp["span_id"] for sp in spans}
    roots = [sp for sp in spans if sp["parent_span_id"] is None]
    assert [r["name"] for r in roots] == ["GET reviews"]                     # one trace, one root
    assert all(sp["parent_span_id"] in ids for sp in spans if sp not in roots)  # nothing dangling
    by_id = {sp["span_id"]: sp for sp in spans}

    def parent(sp: dict[str, Any]) -> dict[str, Any]:
        return by_id[sp["parent_span_id"]]

    legacy_server = next(sp for sp in spans if sp["service"] == "legacy" and sp["kind"] == "server")
    reviews_server = next(sp for sp in spans if sp["service"] == "reviews" and sp["kind"] == "server")
    shadow = next(sp for sp in spans if sp["name"] == "shadow reviews")
    # The monolith answered under the gateway's client span; the new service under the shadow span.
    assert parent(legacy_server)["name"] == "GET legacy" and parent(parent(legacy_server)) == roots[0]
    assert parent(reviews_server) == shadow and parent(shadow) == roots[0]
    assert shadow["attributes"]["strangler.shadow"] is True
    assert shadow["attributes"]["strangler.verdict"] in ("match", "mismatch", "ignored")
    assert reviews_server["attributes"]["strangler.shadow"] is True            # X-Shadow: 1, visible there
    assert "strangler.shadow" not in legacy_server["attributes"]
    assert legacy_server["attributes"]["http.route"] == r"/api/products/{id}/reviews"
    for server in (legacy_server, reviews_server):
        queries = [sp for sp in spans if sp["parent_span_id"] == server["span_id"]]
        assert queries and all(q["name"].startswith("sqlite ") for q in queries)
        assert all(q["attributes"]["db.system.name"] == "sqlite" for q in queries)

    summary = next(t for t in listed if t["trace_id"] == trace_id)
    assert summary["root"] == "GET reviews" and summary["route"] == "reviews"
    assert summary["services"] == ["gateway", "legacy", "reviews"] and summary["service_count"] == 3
    assert summary["span_count"] == len(spans) and summary["has_shadow"] is True
    assert summary["shadow_verdict"] == shadow["attributes"]["strangler.verdict"]
    assert trace_id in {t["trace_id"] for t in json.loads(listing)}
    # The waterfall names every service and marks the shadow call beside the primary.
    for text in ("GET reviews", "GET legacy", "shadow reviews", "[shadow", "legacy", "reviews", "sqlite"):
        assert text in waterfall, text
    lines = waterfall.splitlines()
    assert any("█" in line for line in lines)


# -- the OTLP receiver -----------------------------------------------------------------------------------------


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    return telemetry_routes(tmp_path, """\
        backends: {legacy: {url: "http://127.0.0.1:9"}}
        fallback: legacy
        """, store="max_traces: 10")


async def test_otlp_json_and_protobuf_exports_are_stored_without_a_token(routes: Path) -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    doc = otlp_json(T1, [span("1111111111111111", "GET /x", 1_000, 9_000, attributes=[
        {"key": "http.response.status_code", "value": {"intValue": "200"}},
        {"key": "flags", "value": {"arrayValue": {"values": [{"boolValue": True}, {"doubleValue": 1.5}]}}}])],
        service="alpha")
    msg = ExportTraceServiceRequest()
    rs = msg.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="beta")))
    pb = rs.scope_spans.add().spans.add()
    pb.trace_id, pb.span_id, pb.parent_span_id = bytes.fromhex(T1), bytes.fromhex("2" * 16), bytes.fromhex("1" * 16)
    pb.name, pb.kind, pb.start_time_unix_nano, pb.end_time_unix_nano = "SELECT", Span.SPAN_KIND_CLIENT, 2_000, 12_000
    pb.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="disk on fire"))
    async with gateway_with_token(routes) as gw, aiohttp.ClientSession() as s:
        async with s.post(f"{admin_url(gw)}/v1/traces", json=doc) as r:
            assert r.status == 200 and r.content_type == "application/json"
            assert await r.json() == {}
        async with s.post(f"{admin_url(gw)}/v1/traces", data=msg.SerializeToString(),
                          headers={"Content-Type": "application/x-protobuf"}) as r:
            assert r.status == 200 and r.content_type == "application/x-protobuf"
            ExportTraceServiceResponse().ParseFromString(await r.read())
        # Exporters may compress (OTEL_EXPORTER_OTLP_COMPRESSION=gzip).
        zipped = gzip.compress(json.dumps(otlp_json("c" * 32, [span("7" * 16, "zipped", 1, 2)])).encode())
        async with s.post(f"{admin_url(gw)}/v1/traces", data=zipped, headers={
                "Content-Type": "application/json", "Content-Encoding": "gzip"}) as r:
            assert r.status == 200
        assert (await get_json(s, f"{admin_url(gw)}/api/traces/{'c' * 32}"))["spans"][0]["name"] == "zipped"
        async with s.post(f"{admin_url(gw)}/v1/traces", data=b"\x0a\xff\xff", headers={
                "Content-Type": "application/x-protobuf"}) as r:
            assert r.status == 400
        async with s.post(f"{admin_url(gw)}/v1/traces", data=b"{}", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 415
        async with s.post(f"{admin_url(gw)}/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": [
                {"traceId": "xyz", "spanId": "1"}]}]}]}) as r:
            assert r.status == 400
        trace = await get_json(s, f"{admin_url(gw)}/api/traces/{T1}")
        listed = [t for t in await get_json(s, f"{admin_url(gw)}/api/traces") if t["trace_id"] == T1]
        async with s.get(f"{admin_url(gw)}/api/traces/{'f' * 32}") as r:
            assert r.status == 404
        async with s.get(f"{admin_url(gw)}/api/traces/not-an-id") as r:
            assert r.status == 400

    root, child = trace["spans"]
    assert root == {"span_id": "1" * 16, "parent_span_id": None, "name": "GET /x", "service": "alpha",
                    "kind": "server", "start_ns": 1_000, "end_ns": 9_000,
                    "attributes": {"http.response.status_code": 200, "flags": [True, 1.5]}, "status": "unset"}
    assert child["parent_span_id"] == "1" * 16 and child["service"] == "beta" and child["kind"] == "client"
    assert child["status"] == "error" and child["attributes"]["otel.status_description"] == "disk on fire"
    assert listed == [{"trace_id": T1, "root": "GET /x", "root_service": "alpha", "route": None,
                       "services": ["alpha", "beta"], "service_count": 2, "span_count": 2, "duration_ms": 0.011,
                       "status": "error", "has_shadow": False, "shadow_verdict": None, "start_ns": 1_000, "at": 1e-06}]


async def test_the_store_keeps_the_newest_traces_up_to_its_bound(routes: Path) -> None:
    ids = [f"{i:032x}" for i in range(1, 31)]
    async with gateway_with_token(routes) as gw, aiohttp.ClientSession() as s:
        for n, tid in enumerate(ids):
            async with s.post(f"{admin_url(gw)}/v1/traces",
                              json=otlp_json(tid, [span("1" * 16, f"op{n}", n * 10, n * 10 + 5)])) as r:
                assert r.status == 200
            if n % 4 == 0:
                gw.tracing.store.flush()  # several batches, so eviction runs more than once
        listed = await get_json(s, f"{admin_url(gw)}/api/traces?limit=100")
        db = gw.tracing.store.reader()
        try:
            stored_sets = db.execute("SELECT count(*) FROM span_sets").fetchone()[0]
        finally:
            db.close()
        # A late child of an evicted trace does not come back as a fragment.
        async with s.post(f"{admin_url(gw)}/v1/traces",
                          json=otlp_json(ids[0], [span("2" * 16, "late", 1, 2, parent="1" * 16)])) as r:
            assert r.status == 200
        gw.tracing.store.flush()
        after = await get_json(s, f"{admin_url(gw)}/api/traces?limit=100")
    assert [t["trace_id"] for t in listed] == ids[-10:][::-1]
    assert stored_sets == 10
    assert [t["trace_id"] for t in after] == ids[-10:][::-1]


async def test_listing_filters_by_route_status_and_duration(tmp_path: Path) -> None:
    ok, broken = Recorder("legacy"), Recorder("broken", status=503)
    async with serve_app(ok.app) as lu, serve_app(broken.app) as bu:
        path = telemetry_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{lu}"}}, broken: {{url: "{bu}"}}}}
            fallback: legacy
            routes:
              - name: down
                match: {{path: {{prefix: /down}}}}
                to: broken
                stage: extracted
            """)
        async with gateway_with_token(path) as gw, aiohttp.ClientSession() as s:
            for _ in range(3):
                async with s.get(f"{public_url(gw)}/fine") as r:
                    assert r.status == 200
            async with s.get(f"{public_url(gw)}/down/1") as r:
                assert r.status == 503
                failed = r.headers["X-Trace-Id"]
            # A slow trace, reported by a service: 2.5 s long (far above anything the local requests take, even on a
            # busy machine).
            async with s.post(f"{admin_url(gw)}/v1/traces", json=otlp_json(T1, [
                    span("3" * 16, "slow", 1_000_000_000, 3_500_000_000)])) as r:
                assert r.status == 200
            everything = await get_json(s, f"{admin_url(gw)}/api/traces")
            errors = await get_json(s, f"{admin_url(gw)}/api/traces?status=error")
            down = await get_json(s, f"{admin_url(gw)}/api/traces?route=down")
            slow = await get_json(s, f"{admin_url(gw)}/api/traces?min_ms=2000")
            two = await get_json(s, f"{admin_url(gw)}/api/traces?limit=2")
            async with s.get(f"{admin_url(gw)}/api/traces?status=maybe") as r:
                assert r.status == 400
    assert len(everything) == 5
    assert [t["trace_id"] for t in errors] == [failed]
    assert [t["trace_id"] for t in down] == [failed] and down[0]["root"] == "GET down"
    assert [t["trace_id"] for t in slow] == [T1] and slow[0]["duration_ms"] == 2500.0
    assert len(two) == 2


# -- export to an external collector ---------------------------------------------------------------------------


async def test_spans_reach_an_external_otlp_collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver, legacy = Collector(), Recorder("legacy")
    async with serve_app(receiver.app) as collector_url, serve_app(legacy.app) as lu:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        path = telemetry_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{lu}"}}}}
            fallback: legacy
            """)
        async with gateway_with_token(path) as gw, aiohttp.ClientSession() as s:
            async with s.get(f"{public_url(gw)}/hello") as r:
                trace_id = r.headers["X-Trace-Id"]
            # A service's spans, received here, are sent on as well (the collector sees the whole trace) ...
            async with s.post(f"{admin_url(gw)}/v1/traces", json=otlp_json(trace_id, [
                    span("4" * 16, "GET /hello", 1, 2, parent="5" * 16)], service="legacy")) as r:
                assert r.status == 200
            # ... but not spans this gateway sent itself (a collector pointing back here must not loop).
            async with s.post(f"{admin_url(gw)}/v1/traces", headers={RELAY_HEADER: gw.tracing.instance},
                              json=otlp_json(T1, [span("6" * 16, "echo", 1, 2)], service="gateway")) as r:
                assert r.status == 200
            gw.tracing.store.flush()

            async def arrived() -> bool:
                return {"GET fallback", "GET legacy", "GET /hello"} <= {
                    sp["name"] for sp in receiver.spans if sp["trace_id"] == trace_id}

            await wait_for(arrived, timeout=10)
        # Stopping flushes what is left; nothing of T1 was sent on.
    mine = [sp for sp in receiver.spans if sp["trace_id"] == trace_id]
    server = next(sp for sp in mine if sp["name"] == "GET fallback")
    assert server["service"] == "gateway" and server["attributes"]["strangler.route"] == "fallback"
    assert next(sp for sp in mine if sp["name"] == "GET /hello")["service"] == "legacy"
    assert not [sp for sp in receiver.spans if sp["trace_id"] == T1]
    assert all(any(k.lower() == RELAY_HEADER.lower() for k in h) for h in receiver.requests)
