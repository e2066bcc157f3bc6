"""The gateway's spans: what a request, its upstream attempt and its shadow copy record, how the trace context
travels (traceparent in, traceparent out, X-Trace-Id back), and sampling. Spans are asserted through an in-memory
exporter attached the way an external collector is (an SDK span processor)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from observability.tracing import format_traceparent, parse_traceparent, sample_bound, sampled
from tests.support import admin_url, public_url, serve_app
from tests.telemetry.services import Recorder, gateway_with_token, get_json, shadow_routes, telemetry_routes

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"

# -- pure functions -------------------------------------------------------------------------------------------


def test_traceparent_round_trip_and_invalid_headers_are_rejected() -> None:
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-01") == (int(TRACE, 16), int(PARENT, 16), True)
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00") == (int(TRACE, 16), int(PARENT, 16), False)
    assert format_traceparent(int(TRACE, 16), int(PARENT, 16), True) == f"00-{TRACE}-{PARENT}-01"
    # A future version may append fields; version 00 may not (W3C Trace Context §3.2).
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-01-extra") is not None
    for bad in (None, "", f"00-{TRACE}-{PARENT}-01-extra", f"ff-{TRACE}-{PARENT}-01",
                f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE.upper()}-{PARENT}-01",
                f"00-{TRACE[:-1]}-{PARENT}-01", f"00-0x{TRACE[2:]}-{PARENT}-01", "garbage"):
        assert parse_traceparent(bad) is None, bad


@pytest.mark.parametrize("percent", [0, 1, 10, 50, 99.9, 100])
def test_the_root_sampling_decision_is_the_sdk_ratio_samplers(percent: float) -> None:
    sdk = ParentBased(TraceIdRatioBased(percent / 100))
    bound = sample_bound(percent)
    rng = random.Random(percent)
    for _ in range(2000):
        trace_id = rng.getrandbits(128) or 1
        expected = sdk.should_sample(None, trace_id, "x").decision == Decision.RECORD_AND_SAMPLE
        assert sampled(trace_id, bound) == expected


# -- spans of real requests ------------------------------------------------------------------------------------


def _by_name(spans: list[Any]) -> dict[str, Any]:
    return {s.name: s for s in spans}


async def test_a_shadowed_request_gives_one_trace_with_server_client_and_shadow_spans(tmp_path: Path) -> None:
    legacy, new = Recorder("legacy"), Recorder("reviews")
    exporter = InMemorySpanExporter()
    async with serve_app(legacy.app) as lu, serve_app(new.app) as nu, \
            gateway_with_token(telemetry_routes(tmp_path, shadow_routes(lu, nu))) as gw, aiohttp.ClientSession() as s:
        gw.tracing.add_processor(SimpleSpanProcessor(exporter))
        async with s.get(f"{public_url(gw)}/api/products/7/reviews?sort=new") as r:
            assert r.status == 200
            trace_id = r.headers["X-Trace-Id"]
        await gw.shadow.settle()
        gw.tracing.store.flush()
        diffs = await get_json(s, f"{admin_url(gw)}/api/diffs?route=reviews")

    spans = exporter.get_finished_spans()
    assert {f"{sp.context.trace_id:032x}" for sp in spans} == {trace_id}
    by_name = _by_name(spans)
    server, client, shadow = by_name["GET reviews"], by_name["GET legacy"], by_name["shadow reviews"]
    assert server.kind == SpanKind.SERVER and server.parent is None
    assert server.resource.attributes["service.name"] == "gateway"
    assert dict(server.attributes) == {
        "http.request.method": "GET", "url.path": "/api/products/7/reviews", "url.query": "sort=new",
        "url.scheme": "http", "http.response.status_code": 200, "http.route": "/api/products/{id}/reviews",
        "strangler.route": "reviews", "strangler.stage": "shadow", "strangler.backend": "legacy",
        "strangler.side": "legacy", "strangler.shadow_to": "reviews",
        "http.response.body.size": server.attributes["http.response.body.size"]}
    assert client.kind == SpanKind.CLIENT and client.parent.span_id == server.context.span_id
    assert client.attributes["strangler.backend"] == "legacy"
    assert client.attributes["http.response.status_code"] == 200
    assert shadow.kind == SpanKind.CLIENT and shadow.parent.span_id == server.context.span_id
    assert shadow.attributes["strangler.shadow"] is True
    assert shadow.attributes["strangler.backend"] == "reviews"
    assert shadow.attributes["strangler.verdict"] == diffs[0]["verdict"] == "mismatch"  # served_by differs
    assert shadow.start_time >= client.end_time  # the copy goes out once the primary is done

    # Each backend continues the trace under the span that called it.
    assert legacy.seen[0]["traceparent"] == f"00-{trace_id}-{client.context.span_id:016x}-01"
    assert new.seen[0]["traceparent"] == f"00-{trace_id}-{shadow.context.span_id:016x}-01"
    assert new.seen[0]["X-Shadow"] == "1"
    # The comparison links to its trace.
    assert diffs[0]["trace_id"] == trace_id


async def test_an_inbound_traceparent_is_continued_with_its_sampling_decision(tmp_path: Path) -> None:
    legacy, new = Recorder("legacy"), Recorder("reviews")
    exporter = InMemorySpanExporter()
    async with serve_app(legacy.app) as lu, serve_app(new.app) as nu, \
            gateway_with_token(telemetry_routes(tmp_path, shadow_routes(lu, nu), tracing="sample: 0")) as gw, \
            aiohttp.ClientSession() as s:
        gw.tracing.add_processor(SimpleSpanProcessor(exporter))
        # sample: 0 keeps no new trace, but a caller's sampled trace is continued (parent-based).
        async with s.get(f"{public_url(gw)}/api/products/1/reviews",
                         headers={"traceparent": f"00-{TRACE}-{PARENT}-01"}) as r:
            assert r.headers["X-Trace-Id"] == TRACE
        # A caller's decision not to sample is kept too: nothing recorded, the context still travels.
        other = "a" * 32
        async with s.get(f"{public_url(gw)}/api/products/2/reviews",
                         headers={"traceparent": f"00-{other}-{PARENT}-00"}) as r:
            assert r.headers["X-Trace-Id"] == other
        # An invalid header is not trusted: a new trace starts (and sample: 0 does not keep it).
        async with s.get(f"{public_url(gw)}/api/products/3/reviews",
                         headers={"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"}) as r:
            fresh = r.headers["X-Trace-Id"]
        await gw.shadow.settle()
        gw.tracing.store.flush()

    spans = exporter.get_finished_spans()
    assert {f"{sp.context.trace_id:032x}" for sp in spans} == {TRACE}
    server = _by_name(spans)["GET reviews"]
    assert server.parent is not None and server.parent.span_id == int(PARENT, 16) and server.parent.is_remote
    assert legacy.seen[1]["traceparent"].startswith(f"00-{other}-") and legacy.seen[1]["traceparent"].endswith("-00")
    assert fresh not in (TRACE, other)
    assert legacy.seen[2]["traceparent"] == f"00-{fresh}-{legacy.seen[2]['traceparent'][36:52]}-00"
    # The client's traceparent is replaced, never forwarded next to the gateway's.
    assert all(list(h).count("traceparent") <= 1 for h in legacy.seen)


async def test_sampling_off_records_nothing_and_the_header_can_be_turned_off(tmp_path: Path) -> None:
    legacy = Recorder("legacy")
    exporter = InMemorySpanExporter()
    routes = """\
        backends: {legacy: {url: "%s"}}
        fallback: legacy
        """
    async with serve_app(legacy.app) as lu:
        path = telemetry_routes(tmp_path, routes % lu, tracing="sample: 0, response_header: false")
        async with gateway_with_token(path) as gw, aiohttp.ClientSession() as s:
            gw.tracing.add_processor(SimpleSpanProcessor(exporter))
            for i in range(20):
                async with s.get(f"{public_url(gw)}/anything/{i}") as r:
                    assert r.status == 200
                    assert "X-Trace-Id" not in r.headers
            gw.tracing.store.flush()
            assert await get_json(s, f"{admin_url(gw)}/api/traces") == []
    assert exporter.get_finished_spans() == ()
    assert all(h["traceparent"].endswith("-00") for h in legacy.seen)


async def test_errors_carry_the_trace_id_and_mark_the_spans_as_failed(tmp_path: Path) -> None:
    from tests.support import free_port

    exporter = InMemorySpanExporter()
    routes = f"""\
        backends: {{legacy: {{url: "http://127.0.0.1:{free_port()}"}}}}
        fallback: legacy
        """
    async with gateway_with_token(telemetry_routes(tmp_path, routes)) as gw, aiohttp.ClientSession() as s:
        gw.tracing.add_processor(SimpleSpanProcessor(exporter))
        async with s.get(f"{public_url(gw)}/down") as r:
            assert r.status == 502
            assert r.content_type == "application/problem+json"
            body = await r.json()
            trace_id = r.headers["X-Trace-Id"]
            assert body["trace_id"] == trace_id
        # Refused before any route is chosen (an encoded slash): still a span, still the header.
        async with s.get(f"{public_url(gw)}/a%2Fb") as r:
            assert r.status == 400
            refused = r.headers["X-Trace-Id"]
            assert (await r.json())["trace_id"] == refused
        gw.tracing.store.flush()

    spans = {(f"{sp.context.trace_id:032x}", sp.name): sp for sp in exporter.get_finished_spans()}
    server, client = spans[(trace_id, "GET fallback")], spans[(trace_id, "GET legacy")]
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes["http.response.status_code"] == 502
    assert server.attributes["error.type"] == "backend-unreachable"
    assert client.status.status_code == StatusCode.ERROR
    assert "cannot connect" in client.status.description
    bad = spans[(refused, "GET")]
    assert bad.attributes["http.response.status_code"] == 400
    assert bad.status.status_code == StatusCode.UNSET  # a client error is not the server's failure


async def test_new_traces_are_rate_limited_per_second(tmp_path: Path) -> None:
    legacy = Recorder("legacy")
    routes = """\
        backends: {legacy: {url: "%s"}}
        fallback: legacy
        """
    async with serve_app(legacy.app) as lu:
        path = telemetry_routes(tmp_path, routes % lu, tracing="sample: 100, max_per_second: 5")
        async with gateway_with_token(path) as gw, aiohttp.ClientSession() as s:
            for i in range(40):
                async with s.get(f"{public_url(gw)}/anything/{i}") as r:
                    assert r.status == 200 and len(r.headers["X-Trace-Id"]) == 32
            gw.tracing.store.flush()
            kept = await get_json(s, f"{admin_url(gw)}/api/traces?limit=100")
    # 40 requests within a second or two: at most 5 new traces per second were kept.
    assert 5 <= len(kept) <= 15
    sampled = [h["traceparent"] for h in legacy.seen if h["traceparent"].endswith("-01")]
    assert len(sampled) == len(kept)


async def test_an_unsampled_request_creates_no_span_object(tmp_path: Path) -> None:
    """While a request waits on its backend, the gateway holds a ``RequestSpan`` for it only if it is sampled; an
    unsampled one carries just its ids (``TraceContext``), which still travel upstream and back."""
    import asyncio
    import gc

    from aiohttp import web

    from gateway.telemetry.tracing import RequestSpan, TraceContext

    arrived, release = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        seen.append(request.headers["traceparent"])
        arrived.set()
        await release.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)

    def in_flight(kind: type) -> list[Any]:
        return [o for o in gc.get_objects() if type(o) is kind]

    async with serve_app(app) as lu:
        for sample, kind in (("0", TraceContext), ("100", RequestSpan)):
            arrived.clear()
            release.clear()
            routes = f'backends: {{legacy: {{url: "{lu}"}}}}\nfallback: legacy\n'
            (tmp_path / sample).mkdir()
            path = telemetry_routes(tmp_path / sample, routes, tracing=f"sample: {sample}")
            async with gateway_with_token(path) as gw, aiohttp.ClientSession() as s:
                request = asyncio.ensure_future(s.get(f"{public_url(gw)}/slow"))
                await asyncio.wait_for(arrived.wait(), 5)
                spans, contexts = in_flight(RequestSpan), in_flight(TraceContext)
                release.set()
                async with await request as r:
                    trace_id = r.headers["X-Trace-Id"]
            # Earlier tests in this process may have left objects of both kinds: only this request's count.
            spans = [sp for sp in spans if sp.trace_hex == trace_id]
            contexts = [c for c in contexts if c.trace_hex == trace_id]
            if kind is TraceContext:
                assert spans == [] and len(contexts) == 1
                assert seen[-1].startswith(f"00-{trace_id}-") and seen[-1].endswith("-00")
            else:
                assert len(spans) == 1 and contexts == []
                assert seen[-1].startswith(f"00-{trace_id}-") and seen[-1].endswith("-01")
