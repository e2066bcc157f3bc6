"""Logs: JSON lines through the structlog pipeline, captured and parsed. Every access line carries the trace id of
its request; lines written inside a request carry its trace and span; reloads and guard decisions are events."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from observability.logging import setup_logging
from tests.support import admin_url, public_url, serve_app
from tests.telemetry.services import TOKEN, Recorder, gateway_with_token, telemetry_routes


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """JSON logging into a buffer; the process's logging set-up is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    setup_logging("gateway", level="INFO", json_lines=True, stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        import observability.logging as obs_logging

        obs_logging._json_handler = None
        obs_logging._service = None


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_every_access_line_carries_the_trace_id_of_its_request(tmp_path: Path, captured: io.StringIO
                                                                     ) -> None:
    legacy = Recorder("legacy")
    async with serve_app(legacy.app) as lu:
        path = telemetry_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{lu}"}}}}
            fallback: legacy
            routes:
              - name: items
                match: {{path: {{prefix: /items}}}}
                stage: legacy
            """)
        async with gateway_with_token(path) as gw, aiohttp.ClientSession() as s:
            sent = {}
            for target in ("/items/1", "/items/2?q=a%22b", "/other", "/x%2Fy"):
                async with s.get(public_url(gw) + target) as r:
                    sent[target] = (r.status, r.headers["X-Trace-Id"], len(await r.read()))
            assert gw.access.flush()
    access = [line for line in _lines(captured) if line["event"] == "access"]
    assert len(access) == len(sent)
    for line in access:
        status, trace_id, size = sent[line["path"]]
        assert line["trace_id"] == trace_id
        assert len(line["span_id"]) == 16
        assert line["status"] == status and line["method"] == "GET"
        assert line["level"] == "info" and line["logger"] == "strangler.access" and line["service"] == "gateway"
        assert line["duration_ms"] > 0 and line["timestamp"].endswith("Z")
        if status == 200:
            assert line["bytes"] == size
    by_path = {line["path"]: line for line in access}
    assert (by_path["/items/1"]["route"], by_path["/items/1"]["stage"], by_path["/items/1"]["backend"]) == \
        ("items", "legacy", "legacy")
    assert by_path["/other"]["route"] == "fallback"
    assert by_path["/x%2Fy"]["route"] is None and by_path["/x%2Fy"]["status"] == 400


def test_access_lines_are_formatted_as_queued_and_written_whole_in_pieces(captured: io.StringIO) -> None:
    """JSON lines are made when the loop queues them (the writer thread only writes), a batch longer than one
    write's worth of lines loses and merges none, and an entry queued before logging went JSON still comes out."""
    from observability.logging import CHUNK_LINES, AccessLog

    log = AccessLog()
    early = (1_700_000_000_500_000_000, "PUT", '/q"uote', None, None, None, 400, 0.002, 0, f"{7:032x}", None)
    log._pending.append(early)   # as if queued while logging was not yet JSON
    log._queued += 1
    count = CHUNK_LINES * 2 + 3
    entries = [(1_700_000_001_250_000_000 + i * 1_000_000, "GET", f"/items/{i}", "items", "canary", "new", 200,
                0.0015, i, f"{0xABC + i:032x}", f"{0xDEF:016x}") for i in range(count)]
    log.put_many(entries)
    assert all(isinstance(item, str) and item.endswith("\n") for item in list(log._pending)[1:])
    assert log.flush()
    log.close()
    access = [line for line in _lines(captured) if line["event"] == "access"]
    assert len(access) == count + 1
    assert access[0]["path"] == '/q"uote' and access[0]["trace_id"] == f"{7:032x}" and access[0]["span_id"] is None
    assert access[0]["timestamp"] == "2023-11-14T22:13:20.500000Z"
    for i, line in enumerate(access[1:]):
        assert line["path"] == f"/items/{i}" and line["bytes"] == i and line["duration_ms"] == 1.5
        assert (line["route"], line["stage"], line["backend"]) == ("items", "canary", "new")
        assert line["trace_id"] == f"{0xABC + i:032x}" and line["span_id"] == f"{0xDEF:016x}"
        assert line["timestamp"] == f"2023-11-14T22:13:{21 + (250 + i) // 1000:02d}.{(250 + i) % 1000:03d}000Z"


async def test_no_access_lines_and_no_work_when_info_is_filtered(tmp_path: Path, captured: io.StringIO) -> None:
    logging.getLogger().setLevel("WARNING")
    legacy = Recorder("legacy")
    async with serve_app(legacy.app) as lu:
        path = telemetry_routes(tmp_path, f'backends: {{legacy: {{url: "{lu}"}}}}\nfallback: legacy\n')
        async with gateway_with_token(path) as gw, aiohttp.ClientSession() as s:
            for i in range(5):
                async with s.get(f"{public_url(gw)}/{i}") as r:
                    assert r.status == 200
            assert gw.access._queued == 0      # nothing was even queued for formatting
    assert not [line for line in _lines(captured) if line["event"] == "access"]


async def test_lines_inside_a_request_carry_its_trace_and_guard_decisions_are_events(
        tmp_path: Path, captured: io.StringIO) -> None:
    legacy, new = Recorder("legacy"), Recorder("likes")
    async with serve_app(legacy.app) as lu, serve_app(new.app) as nu:
        path = telemetry_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{lu}"}}, likes: {{url: "{nu}"}}}}
            fallback: legacy
            routes:
              - name: likes
                match: {{path: {{prefix: /likes}}}}
                to: likes
                stage: canary
                canary: {{weight: 100}}
                guard: {{window: 60s, min_requests: 50, max_error_rate: 2%}}
            """)
        async with gateway_with_token(path) as gw, aiohttp.ClientSession() as s:
            async with s.get(f"{public_url(gw)}/likes/1") as r:
                assert r.status == 200
                trace_id = r.headers["X-Trace-Id"]
            # A reload (outside any request) is an event too.
            path.write_text(path.read_text().replace("weight: 100", "weight: 90"))
            async with s.post(f"{admin_url(gw)}/api/reload", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
            assert gw.access.flush()
    lines = _lines(captured)
    # The guard judged the route while handling the first request: that line is inside the request.
    guard = next(line for line in lines if line["event"] == "guard")
    assert guard["route"] == "likes" and guard["state"] == "inconclusive"
    assert guard["trace_id"] == trace_id and len(guard["span_id"]) == 16
    assert "guard" in guard["message"]
    access = next(line for line in lines if line["event"] == "access")
    assert access["span_id"] == guard["span_id"]
    reloaded = next(line for line in lines if line["event"] == "reloaded")
    assert reloaded["generation"] == 2 and reloaded["level"] == "info"
    assert "trace_id" not in reloaded


def test_service_lines_carry_the_current_opentelemetry_span(captured: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    log = logging.getLogger("legacy_app.app")
    with tracer.start_as_current_span("GET /api/products/{id}") as span:
        log.warning("stock is low", extra={"product": 7})
    log.warning("outside")
    inside, outside = _lines(captured)[-2:]
    ctx = span.get_span_context()
    assert inside["trace_id"] == f"{ctx.trace_id:032x}" and inside["span_id"] == f"{ctx.span_id:016x}"
    assert inside["product"] == 7 and inside["event"] == "stock is low"
    assert "trace_id" not in outside
