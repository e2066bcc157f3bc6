"""Loopback servers and gateways for the observability tests: a backend that records the headers it got, a gateway
on port 0 with its store in the test's directory, the real services as subprocesses, and a tiny OTLP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from gateway.runtime.gateway import Gateway
from tests.support import run_gateway

REPO = Path(__file__).resolve().parents[2]
TOKEN = "observability-test-token"


class Recorder:
    """A backend answering a small JSON document and keeping the headers of every request."""

    def __init__(self, name: str, status: int = 200) -> None:
        self.name = name
        self.status = status
        self.seen: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append(dict(request.headers))
        return web.json_response({"served_by": self.name, "path": request.path}, status=self.status)


def telemetry_routes(directory: Path, body: str, *, tracing: str = "", store: str = "") -> Path:
    """A routes.yaml on loopback ports with the store in ``directory`` and optional ``tracing:`` and ``store:``
    settings."""
    path = directory / "routes.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        listen: 127.0.0.1:0
        admin: {listen: 127.0.0.1:0}
        """) + f"store: {{dir: store{', ' + store if store else ''}}}\n"
                    + (f"tracing: {{{tracing}}}\n" if tracing else "") + textwrap.dedent(body))
    return path


def shadow_routes(legacy: str, new: str) -> str:
    return f"""\
        backends:
          legacy: {{url: "{legacy}"}}
          reviews: {{url: "{new}"}}
        fallback: legacy
        routes:
          - name: reviews
            match: {{path: {{template: "/api/products/{{id}}/reviews"}}}}
            to: reviews
            stage: shadow
            shadow: {{timeout: 2s, compare: {{noise: 0}}}}
        """


def gateway_with_token(path: Path) -> contextlib.AbstractAsyncContextManager[Gateway]:
    """A started gateway whose admin token is ``TOKEN``."""
    return run_gateway(path, token=TOKEN)


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll an async ``predicate`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


# -- the real services as processes -----------------------------------------------------------------------------


@contextlib.contextmanager
def services(tmp: Path, collector: str, ports: dict[str, int]) -> Iterator[dict[str, str]]:
    """legacy_app and extracted.reviews on ``ports`` (``{"legacy": P, "reviews": P}``), exporting their spans to
    ``collector`` (an OTLP/HTTP base URL)."""
    from extracted.reviews import migrate
    from legacy_app.db import ensure_database

    legacy_db, reviews_db = tmp / "legacy.db", tmp / "reviews.db"
    ensure_database(legacy_db)
    migrate(legacy_db, reviews_db)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
           "OTEL_BSP_SCHEDULE_DELAY": "100", "STRANGLER_LOG_FORMAT": "json"}
    procs = []
    try:
        for name, module, db in (("legacy", "legacy_app", legacy_db), ("reviews", "extracted.reviews", reviews_db)):
            log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process below
            procs.append((subprocess.Popen(
                [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(ports[name]), "--db", str(db)],
                stdout=log, stderr=subprocess.STDOUT, env={**env, "OTEL_SERVICE_NAME": name}), log))
        for name, port in ports.items():
            _wait_port(port, timeout=20.0, what=name)
        yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, log in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {port}")


# -- an OTLP receiver, as an external collector would be ----------------------------------------------------------


class Collector:
    """Accepts OTLP/HTTP protobuf exports and keeps ``(service, trace_id, span_id, name, attributes)``."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/traces", self.receive)

    async def receive(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        self.requests.append(dict(request.headers))
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        for rs in msg.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    self.spans.append({"service": resource.get("service.name"), "trace_id": sp.trace_id.hex(),
                                       "span_id": sp.span_id.hex(), "parent": sp.parent_span_id.hex(),
                                       "name": sp.name, "kind": sp.kind,
                                       "attributes": {kv.key: json.loads(_any_json(kv.value))
                                                      for kv in sp.attributes}})
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


def _any_json(value: Any) -> str:
    which = value.WhichOneof("value")
    return json.dumps(getattr(value, which) if which not in (None, "array_value", "kvlist_value") else None)
