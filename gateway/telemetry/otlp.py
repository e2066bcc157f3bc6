"""Decoding OTLP/HTTP trace exports (``POST /v1/traces``) into trace-store rows.

Two encodings, as the OTLP specification defines them (https://opentelemetry.io/docs/specs/otlp/#otlphttp):

- ``application/x-protobuf``: an ``ExportTraceServiceRequest`` message, decoded with the ``opentelemetry-proto``
  classes.
- ``application/json``: the protobuf JSON mapping with OTLP's two exceptions: trace and span ids are hex strings
  (not base64), and enum values are integers. Keys are lowerCamelCase; snake_case is accepted too. 64-bit
  integers may be strings or numbers.

A span's service is its resource's ``service.name``. Kinds become ``server``/``client``/..., status codes
``unset``/``ok``/``error``; a status message is kept as the ``otel.status_description`` attribute.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from gateway.stores.trace_records import KINDS, Row

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
STATUSES = ("unset", "ok", "error")


class OTLPError(ValueError):
    """The body is not a valid OTLP trace export (answered with 400)."""


def decode(content_type: str, body: bytes) -> list[Row]:
    if content_type == PROTOBUF:
        return decode_protobuf(body)
    if content_type == JSON:
        return decode_json(body)
    raise OTLPError(f"unsupported content type {content_type!r}; expected {PROTOBUF} or {JSON}")


def response(content_type: str, rejected: int = 0, message: str = "") -> bytes:
    """The success answer in the request's encoding (``partial_success`` when spans were not kept)."""
    if content_type == PROTOBUF:
        msg = ExportTraceServiceResponse()
        if rejected:
            msg.partial_success.rejected_spans = rejected
            msg.partial_success.error_message = message
        return msg.SerializeToString()
    body: dict[str, Any] = {}
    if rejected:
        body["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
    return json.dumps(body).encode()


# -- protobuf ----------------------------------------------------------------------------------------------------


def decode_protobuf(body: bytes) -> list[Row]:
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError as exc:
        raise OTLPError(f"invalid protobuf ExportTraceServiceRequest: {exc}") from exc
    rows: list[Row] = []
    for rs in req.resource_spans:
        service = _service({kv.key: _pb_value(kv.value) for kv in rs.resource.attributes})
        for ss in rs.scope_spans:
            for sp in ss.spans:
                if len(sp.trace_id) != 16 or len(sp.span_id) != 8:
                    raise OTLPError("a span needs a 16-byte trace_id and an 8-byte span_id")
                attrs = {kv.key: _pb_value(kv.value) for kv in sp.attributes}
                if sp.status.message:
                    attrs["otel.status_description"] = sp.status.message
                rows.append(Row(sp.trace_id.hex(), sp.span_id.hex(), sp.parent_span_id.hex(), sp.name, service,
                                _kind(sp.kind), sp.start_time_unix_nano, sp.end_time_unix_nano, attrs,
                                _status(sp.status.code)))
    return rows


def _pb_value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


# -- JSON --------------------------------------------------------------------------------------------------------


def decode_json(body: bytes) -> list[Row]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OTLPError(f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise OTLPError("expected a JSON object with resourceSpans")
    rows: list[Row] = []
    try:
        for rs in _get(doc, "resourceSpans", []):
            resource = _get(rs, "resource", {})
            service = _service(_json_attrs(_get(resource, "attributes", [])))
            for ss in _get(rs, "scopeSpans", []):
                for sp in _get(ss, "spans", []):
                    rows.append(_json_span(sp, service))
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        raise OTLPError(f"malformed OTLP JSON: {exc}") from exc
    return rows


def _json_span(sp: dict[str, Any], service: str) -> Row:
    trace_id = _hex_id(_get(sp, "traceId", ""), 32, "traceId")
    span_id = _hex_id(_get(sp, "spanId", ""), 16, "spanId")
    parent = _get(sp, "parentSpanId", "") or ""
    parent = _hex_id(parent, 16, "parentSpanId") if parent else ""
    attrs = _json_attrs(_get(sp, "attributes", []))
    status = _get(sp, "status", {}) or {}
    if _get(status, "message", ""):
        attrs["otel.status_description"] = _get(status, "message", "")
    return Row(trace_id, span_id, parent, str(_get(sp, "name", "")), service, _kind(_kind_code(_get(sp, "kind", 0))),
               int(_get(sp, "startTimeUnixNano", 0)), int(_get(sp, "endTimeUnixNano", 0)), attrs,
               _status(_status_code(_get(status, "code", 0))))


def _get(d: dict[str, Any], camel: str, default: Any) -> Any:
    if camel in d:
        return d[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return d.get(snake, default)


def _hex_id(value: Any, length: int, what: str) -> str:
    text = str(value).lower()
    if len(text) != length or any(c not in "0123456789abcdef" for c in text):
        raise OTLPError(f"{what} must be {length} hex digits, got {value!r}")
    return text


def _json_attrs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {str(kv["key"]): _json_value(kv.get("value") or {}) for kv in items}


def _json_value(v: dict[str, Any]) -> Any:
    if "stringValue" in v or "string_value" in v:
        return _get(v, "stringValue", "")
    if "boolValue" in v or "bool_value" in v:
        return bool(_get(v, "boolValue", False))
    if "intValue" in v or "int_value" in v:
        return int(_get(v, "intValue", 0))
    if "doubleValue" in v or "double_value" in v:
        return float(_get(v, "doubleValue", 0.0))
    if "arrayValue" in v or "array_value" in v:
        return [_json_value(x) for x in _get(v, "arrayValue", {}).get("values", [])]
    if "kvlistValue" in v or "kvlist_value" in v:
        return _json_attrs(_get(v, "kvlistValue", {}).get("values", []))
    if "bytesValue" in v or "bytes_value" in v:
        return base64.b64decode(_get(v, "bytesValue", "")).hex()
    return None


def _kind_code(kind: Any) -> int:
    if isinstance(kind, str) and not kind.isdigit():
        name = kind.removeprefix("SPAN_KIND_").lower()
        return KINDS.index(name) if name in KINDS else 0
    return int(kind)


def _status_code(code: Any) -> int:
    # Some exporters write the enum name; the OTLP JSON mapping asks for the integer.
    if isinstance(code, str) and not code.isdigit():
        return {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(code, 0)
    return int(code)


# -- shared ------------------------------------------------------------------------------------------------------


def _service(resource_attrs: dict[str, Any]) -> str:
    name = resource_attrs.get("service.name")
    return str(name) if name else "unknown_service"


def _kind(kind: int) -> str:
    return KINDS[kind] if 0 <= kind < len(KINDS) else "unspecified"


def _status(code: int) -> str:
    return STATUSES[code] if 0 <= code < len(STATUSES) else "unset"
