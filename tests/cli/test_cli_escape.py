"""Recorded data reaches the operator's terminal as text only: control characters in recorded bodies, paths,
span names and reasons are printed as escapes (ESC as ``\\x1b``), so a backend or a client cannot retitle the
window, clear the screen or forge lines through ``strangler diff``, ``diffs``, ``report``, ``trace``, ``traces``
or ``history``."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from rich.console import Console

from gateway.cli.render import print_diff, print_report
from gateway.cli.waterfall import print_trace, print_traces
from tests.support import admin_url, public_url, run_gateway, serve_app, write_routes

REPO = Path(__file__).resolve().parents[2]
TOKEN = "cli-escape-token"
HOSTILE = "before \x1b]0;pwned\x07 middle \x1b[2J\x1b[H after \x9b31m\rforged line\x7f"
# What a terminal must never receive from recorded data.
RAW = ("\x1b]0;", "\x1b[2J", "\x1b[H", "\x07", "\x9b", "\r", "\x7f")


def _assert_inert(out: str) -> None:
    for seq in RAW:
        assert seq not in out, repr(seq)
    assert "\\x1b]0;pwned\\x07" in out
    assert "\\x1b[2J" in out


def test_safe_escapes_c0_c1_esc_and_del_but_keeps_layout_where_asked() -> None:
    from gateway.cli.render import safe

    assert safe("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert safe("\x9b\x85\x7f\x00") == "\\x9b\\x85\\x7f\\x00"
    assert safe("tab\there\nline\r") == "tab\\there\\nline\\r"
    assert safe("tab\there\nline\r", layout=True) == "tab\there\nline\\r"
    assert safe(safe("\x1b")) == safe("\x1b")            # escaping twice changes nothing more
    assert safe("façade ✓ [bold]") == "façade ✓ [bold]"


def _render(fn: Any, data: Any) -> str:
    buf = io.StringIO()
    # A colour terminal: rich's own styling is ESC sequences too, so only the recorded ones are checked for.
    fn(Console(file=buf, force_terminal=True, color_system="truecolor", width=200), data)
    return buf.getvalue()


def test_diff_report_and_trace_views_print_recorded_text_inert() -> None:
    sample = {
        "id": 7, "route": "r", "method": "GET", "path": "/p", "verdict": "mismatch", "trace_id": "ab" * 16,
        "reason": HOSTILE,
        "primary": {"backend": "legacy", "status": 200, "ms": 1.0, "body": {"text": HOSTILE}},
        "shadow": {"backend": "new", "status": 200, "ms": 1.0, "body": {"text": "{\"k\": \"" + HOSTILE.encode(
            "unicode_escape").decode() + "\"}"}},
        "differences": [{"path": "$.k" + HOSTILE, "field": "k" + HOSTILE, "kind": "changed", "legacy": HOSTILE,
                         "shadow": 1}],
        "ignored": [{"path": "$." + HOSTILE, "field": HOSTILE}],
    }
    _assert_inert(_render(print_diff, sample))
    report = {"routes": [{"route": "r" + HOSTILE, "stage": "shadow", "compared": 1, "rates": {"match": 0.0},
                          "fields": [{"field": HOSTILE, "kind": "changed", "count": 1, "ignored": 0}],
                          "noise": [{"field": HOSTILE, "rate": 50.0}], "noise_samples": 2,
                          "skipped": {HOSTILE: 1}}]}
    _assert_inert(_render(print_report, report))
    trace = {"trace_id": "ab" * 16, "spans": [
        {"span_id": "1" * 16, "parent_span_id": None, "name": HOSTILE, "service": "svc" + HOSTILE, "kind": "server",
         "start_ns": 0, "end_ns": 1000, "status": "error",
         "attributes": {"http.response.status_code": HOSTILE, "otel.status_description": HOSTILE}}]}
    _assert_inert(_render(print_trace, trace))
    _assert_inert(_render(print_traces, [{"trace_id": "ab" * 16, "start_ns": 0, "route": HOSTILE, "root": HOSTILE,
                                          "services": [HOSTILE], "span_count": 1, "duration_ms": 1.0,
                                          "status": "ok"}]))


async def _cli(cwd: Path, *args: str) -> str:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO), "STRANGLER_ADMIN_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", *args, cwd=cwd, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_the_cli_prints_a_recorded_hostile_body_as_escapes(tmp_path: Path) -> None:
    async def legacy(request: web.Request) -> web.Response:
        return web.Response(text=HOSTILE, content_type="text/plain")

    async def new(request: web.Request) -> web.Response:
        return web.Response(text="clean", content_type="text/plain")

    apps = []
    for handler in (legacy, new):
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        apps.append(app)
    async with serve_app(apps[0]) as legacy_url, serve_app(apps[1]) as new_url:
        path = write_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{legacy_url}"}}, new: {{url: "{new_url}"}}}}
            fallback: legacy
            routes:
              - name: pages
                match: {{path: {{prefix: /pages}}}}
                to: new
                stage: shadow
            """)
        async with run_gateway(path, token=TOKEN) as gw, aiohttp.ClientSession() as s:
            async with s.get(public_url(gw) + "/pages/1") as resp:
                assert resp.status == 200
            await gw.shadow.settle()
            gw.shadow.store.flush(timeout=5)
            async with s.get(admin_url(gw) + "/api/diffs?route=pages") as resp:
                sample_id = (await resp.json())[0]["id"]
            # A span whose name is an escape sequence, exported by "a service" to the open OTLP receiver.
            otlp = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                                    "value": {"stringValue": "svc"}}]},
                                       "scopeSpans": [{"spans": [{"traceId": "cd" * 16, "spanId": "2" * 16,
                                                                  "name": HOSTILE, "kind": 2,
                                                                  "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]}
            async with s.post(admin_url(gw) + "/v1/traces", json=otlp) as resp:
                assert resp.status == 200
            async with s.post(admin_url(gw) + "/api/routes/pages/rollback", json={"reason": HOSTILE},
                              headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 200
            gw.tracing.store.flush(timeout=5)

            host, port = gw.bound["admin"]
            where = ("--admin", f"{host}:{port}")
            outputs = [await _cli(tmp_path, "diff", str(sample_id), *where),
                       await _cli(tmp_path, "trace", "cd" * 16, *where),
                       await _cli(tmp_path, "history", *where),
                       await _cli(tmp_path, "routes", *where)]
            for out in outputs:
                assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out, repr(out[:500])
            assert "\\x1b]0;pwned\\x07" in outputs[0] and "\\x1b[2J" in outputs[0]
            assert "\\x1b[2J" in outputs[1] and "\\x1b[2J" in outputs[2] and "\\x1b[2J" in outputs[3]
