"""What the trace store holds, as values: a span row, the gateway's request packed into one text value and back.

``pack_request`` turns a ``RequestSpan.snapshot()`` into one short row (in the writer thread, never on the request
path); ``decode_record`` and ``gateway_rows`` rebuild the gateway's SERVER and CLIENT spans from it when read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
MASK63 = (1 << 63) - 1
_json = json.JSONEncoder(separators=(",", ":"), default=str).encode


def tkey_of(trace_hex: str) -> int:
    return int(trace_hex[16:], 16) & MASK63


class Row(NamedTuple):
    """One span as the API shows it: ids in lowercase hex, times in Unix nanoseconds, ``status`` unset|ok|error."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: str


class GatewayRecord(NamedTuple):
    """The gateway's part of one request, as stored in ``traces``. ``attempts`` holds one
    ``(span_id, backend, host, port, url_prefix, start_ns, end_ns, status, error_code, error_detail)`` per
    upstream attempt."""

    tkey: int
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    service: str
    method: str
    target: str
    scheme: str
    route: str | None
    http_route: str | None
    stage: str | None
    backend: str | None
    side: str | None
    shadow_to: str | None
    status: int
    bytes: int
    error_code: str | None
    error_detail: str | None
    error_status: int | None
    aborted: bool
    attempts: Sequence[Sequence[Any]]


# Packed text: fields joined by US, attempts by RS, the request's fields and its attempts by GS.
_FIELD, _RECORD, _GROUP = "\x1f", "\x1e", "\x1d"
_SEPARATORS = str.maketrans({_FIELD: " ", _RECORD: " ", _GROUP: " "})


def clean(text: str) -> str:
    """Free text (a request target, an error message) with the separators replaced."""
    return text.translate(_SEPARATORS) if (_FIELD in text or _RECORD in text or _GROUP in text) else text


def pack_request(snap: tuple[Any, ...]) -> tuple[int, str, str | None, str]:
    """A ``traces`` row ``(tkey, trace_id, route, packed)`` from ``RequestSpan.snapshot()``: the fields of
    ``GatewayRecord`` as text, attempts last."""
    (trace_id, span_id, parent_id, start, end, service, method, target, scheme, route, http_route, stage,
     backend, side, shadow_to, status, size, code, detail, error_status, aborted, attempts) = snap
    trace_hex = f"{trace_id:032x}"
    head = (f"{span_id:016x}\x1f{f'{parent_id:016x}' if parent_id else ''}\x1f{start}\x1f{end}\x1f{service}"
            f"\x1f{method}\x1f{clean(target)}\x1f{scheme}\x1f{route or ''}\x1f{http_route or ''}\x1f{stage or ''}"
            f"\x1f{backend or ''}\x1f{side or ''}\x1f{shadow_to or ''}\x1f{status}\x1f{size}\x1f{code or ''}"
            f"\x1f{clean(detail) if detail else ''}\x1f{error_status or ''}\x1f{1 if aborted else 0}")
    tail = _RECORD.join([
        f"{a_span:016x}\x1f{a_backend}\x1f{host}\x1f{port}\x1f{a_scheme}://{host}:{port}{base}\x1f{a_start}"
        f"\x1f{a_end}\x1f{a_status}\x1f{a_code or ''}\x1f{clean(a_detail) if a_detail else ''}"
        for a_span, a_backend, a_scheme, host, port, base, a_start, a_end, a_status, a_code, a_detail in attempts])
    return trace_id & MASK63, trace_hex, route, f"{head}{_GROUP}{tail}"


def _attempts(text: str) -> list[tuple[Any, ...]]:
    out = []
    for item in text.split(_RECORD) if text else ():
        sid, backend, host, port, prefix, start, end, status, code, detail = item.split(_FIELD)
        out.append((sid, backend, host, int(port), prefix, int(start), int(end or 0), int(status or 0),
                    code or None, detail or None))
    return out


def decode_record(tkey: int, trace_id: str, packed: str) -> GatewayRecord:
    """A ``GatewayRecord`` from a ``traces`` row's packed ``gateway`` value (see ``RequestSpan.record``)."""
    head, _, attempts = packed.partition(_GROUP)
    (span_id, parent, start, end, service, method, target, scheme, route, http_route, stage, backend, side,
     shadow_to, status, size, code, detail, error_status, aborted) = head.split(_FIELD)
    return GatewayRecord(tkey, trace_id, span_id, parent, int(start), int(end), service, method, target, scheme,
                         route or None, http_route or None, stage or None, backend or None, side or None,
                         shadow_to or None, int(status), int(size), code or None, detail or None,
                         int(error_status) if error_status else None, aborted == "1", _attempts(attempts))


def gateway_rows(r: GatewayRecord) -> list[Row]:
    """The SERVER span and the CLIENT span of each attempt, with their attributes (OTel HTTP conventions)."""
    path, _, query = r.target.partition("?")
    attrs: dict[str, Any] = {"http.request.method": r.method, "url.path": path, "url.scheme": r.scheme,
                             "http.response.status_code": r.status}
    if query:
        attrs["url.query"] = query
    if r.route is not None:
        attrs["strangler.route"] = r.route
    if r.http_route:
        attrs["http.route"] = r.http_route
    if r.stage is not None:
        attrs["strangler.stage"] = r.stage
        attrs["strangler.backend"] = r.backend
        attrs["strangler.side"] = r.side
    if r.shadow_to:
        attrs["strangler.shadow_to"] = r.shadow_to
    attrs["http.response.body.size"] = r.bytes
    if r.aborted:
        attrs["strangler.aborted"] = True
    if r.error_code:
        attrs["error.type"] = r.error_code
        attrs["otel.status_description"] = r.error_detail
    # A server span is an error on 5xx only (a 4xx is the client's fault: OTel HTTP semantic conventions).
    failed = r.status >= 500 or (r.error_status or 0) >= 500 or r.aborted
    name = f"{r.method} {r.route}" if r.route is not None else r.method
    rows = [Row(r.trace_id, r.span_id, r.parent_id, name, r.service, "server", r.start_ns, r.end_ns, attrs,
                "error" if failed else "unset")]
    for span_id, backend, host, port, prefix, start, end, status, code, detail in r.attempts:
        a: dict[str, Any] = {"http.request.method": r.method, "server.address": host, "server.port": port,
                             "url.full": prefix + r.target, "strangler.backend": backend}
        if status:
            a["http.response.status_code"] = status
        if code:
            a["error.type"] = code
            a["otel.status_description"] = detail
        # A client span is an error on 4xx and 5xx alike, and when no answer came at all.
        bad = bool(code) or status >= 400 or not end
        rows.append(Row(r.trace_id, span_id, r.span_id, f"{r.method} {backend}", r.service, "client", start,
                        end or r.end_ns, a, "error" if bad else "unset"))
    return rows


class Received:
    """Spans that arrived over OTLP; ``export`` is False for spans this gateway sent itself (a relay loop)."""

    __slots__ = ("spans", "export")

    def __init__(self, spans: list[Row], export: bool = True) -> None:
        self.spans = spans
        self.export = export

    def rows(self) -> list[Row]:
        return self.spans
