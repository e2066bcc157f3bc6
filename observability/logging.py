"""Logging for the gateway and the services: structlog in front, the stdlib behind.

JSON lines when stderr is not a terminal (for machines), readable console lines on a terminal (for people). The
stdlib's and aiohttp's own records go through the same processor chain, so every line has the same shape, and
``extra={...}`` fields of stdlib calls become JSON fields. A record logged with ``extra={"event": NAME}`` (reloads,
rollbacks, guard decisions) keeps ``NAME`` as its ``event`` and its text as ``message``, so machines can select
events by name.

Every line written while a request is being handled carries that request's ``trace_id`` and ``span_id``: the
gateway's current span (``observability.tracing.CURRENT``) or, in the services, OpenTelemetry's current span.

The access log (one line per request) is the only per-request logging and it is built to cost the request nothing
it does not need: when INFO is filtered out, ``AccessLog.enabled`` is one level check and nothing else happens;
otherwise the request appends one tuple, the event loop's fold formats it once per loop turn with the others of
that turn (in JSON mode: the same keys the processor chain would produce), and a background thread writes the
lines in batches, a few hundred per write. On a terminal the thread hands each entry to the normal chain.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import IO, Any

import structlog
from opentelemetry import trace as otel_trace

from observability.batches import BatchWriter
from observability.tracing import CURRENT

_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
ACCESS_LOGGER = "strangler.access"

# Set by setup_logging in JSON mode: the handler the access log writes its pre-formatted lines to.
_json_handler: logging.StreamHandler[Any] | None = None
_service: str | None = None


def _extra_fields(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Copy ``extra={...}`` of stdlib records into the event; an ``event`` extra names the event."""
    record = event.get("_record")
    if record is not None:
        fields = record.__dict__
        if isinstance(fields.get("event"), str):
            event["message"] = event.get("event")
            event["event"] = fields["event"]
        for key, value in fields.items():
            if key not in _STD_ATTRS and not key.startswith("_") and key not in event:
                event[key] = value
    return event


def add_trace_context(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """``trace_id`` and ``span_id`` of the span this line was written in, if any."""
    span = CURRENT.get()
    if span is not None:
        event.setdefault("trace_id", f"{span.trace_id:032x}")
        event.setdefault("span_id", f"{span.span_id:016x}")
        return event
    ctx = otel_trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", f"{ctx.trace_id:032x}")
        event.setdefault("span_id", f"{ctx.span_id:016x}")
    return event


def setup_logging(service: str, level: str | None = None, json_lines: bool | None = None,
                  stream: IO[str] | None = None) -> None:
    global _json_handler, _service
    level = (level or os.environ.get("STRANGLER_LOG_LEVEL") or "INFO").upper()
    stream = stream or sys.stderr
    if json_lines is None:
        fmt = os.environ.get("STRANGLER_LOG_FORMAT")
        json_lines = (fmt == "json") if fmt else not stream.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _extra_fields,
        add_trace_context,
    ]
    renderer: Any = (structlog.processors.JSONRenderer(default=str) if json_lines
                     else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info if json_lines else _noop, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.contextvars.bind_contextvars(service=service)
    _json_handler = handler if json_lines else None
    _service = service


def _noop(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    return event


def _str(value: str) -> str:
    return encode_basestring_ascii(value)


def _opt(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


# -- the access log --------------------------------------------------------------------------------------------

CHUNK_LINES = 256   # access-log lines per write(2): a batch is thousands of lines, joined in pieces far below
                    # malloc's mmap threshold, so memory is reused instead of mapped and faulted in per batch
_METHODS = {m: f'"{m}"' for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
ACCESS_FIELDS = ("method", "path", "route", "stage", "backend", "status", "duration_ms", "bytes", "trace_id",
                 "span_id")


class AccessLog(BatchWriter):
    """One line per request, written by a background thread (started with the first line).

    ``emit`` and ``put_many`` take ``(unix_time_ns, method, path, route, stage, backend, status, seconds, bytes,
    trace_id, span_id)`` with the ids in hex as traces show them (or None). In JSON mode the lines are formatted
    as they are queued, by the event loop's once-per-turn fold, a few at a time, and the thread only joins and
    writes them. Formatting them
    in the thread cost more than the formatting: the thread took the GIL from the loop for long stretches (or,
    yielding it often, switched threads hundreds of times a second), and a batch's text was one large allocation,
    mapped and faulted in anew each time. On a terminal the thread hands each entry to the normal processor chain.
    """

    QUEUE_LIMIT = 50_000
    INTERVAL = 0.25

    def __init__(self, name: str = ACCESS_LOGGER) -> None:
        super().__init__("strangler-access-log", interval=self.INTERVAL, limit=self.QUEUE_LIMIT, start=False)
        self.logger = logging.getLogger(name)
        self._line_second = -1    # the second of the last line formatted, and its line up to the fraction
        self._line_prefix = ""
        self._where: dict[tuple[Any, ...], str] = {}

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def emit(self, entry: tuple[Any, ...]) -> None:
        self.put_many([entry])

    def put_many(self, items: list[Any]) -> None:
        super().put_many(self.json_lines(items) if _json_handler is not None else items)

    def json_lines(self, batch: list[tuple[Any, ...]]) -> list[str]:
        """The JSON lines of ``batch``: the keys the processor chain would write, formatted directly (under two
        microseconds a line)."""
        head = '{"event":"access",' + (f'"service":{_str(_service)},' if _service else "") + \
            f'"level":"info","logger":{_str(self.logger.name)},"timestamp":"'
        lines = []
        append = lines.append
        where = self._where
        methods = _METHODS
        enc = encode_basestring_ascii
        # ``prefix`` is everything up to the timestamp's fraction: the date part is formatted once per second.
        second, prefix = self._line_second, self._line_prefix
        for at, method, path, route, stage, backend, status, seconds, size, trace_id, span_id in batch:
            # route, stage and backend repeat across requests: their JSON is made once per combination.
            part = where.get((route, stage, backend))
            if part is None:
                part = where[(route, stage, backend)] = \
                    f'"route":{_opt(route)},"stage":{_opt(stage)},"backend":{_opt(backend)},'
            # Integers only, and no format spec where str() says the same: each costs a parse per line.
            whole = at // 1_000_000_000
            if whole != second:
                second, prefix = whole, head + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            ids = (f'"{trace_id}","span_id":"{span_id}"' if trace_id and span_id   # hex: nothing to escape
                   else f'{_opt(trace_id)},"span_id":{_opt(span_id)}')
            append(f'{prefix}.{at // 1000 % 1_000_000:06d}Z","method":{methods.get(method) or enc(method)},'
                   f'"path":{enc(path)},{part}"status":{status},"duration_ms":{seconds * 1000:.3f},'
                   f'"bytes":{size},"trace_id":{ids}}}\n')
        self._line_second, self._line_prefix = second, prefix
        if len(where) > 10_000:
            where.clear()
        return lines

    # -- the writer thread -----------------------------------------------------------------------------------------

    def write_batch(self, batch: list[Any]) -> None:
        handler = _json_handler
        if handler is None or not self.logger.isEnabledFor(logging.INFO):
            for entry in batch:
                if isinstance(entry, str):   # formatted before logging went to a terminal
                    self.logger.info(entry.rstrip("\n"))
                    continue
                fields = self.fields(entry)
                self.logger.info("%s %s %s", fields["method"], fields["path"], fields["status"],
                                 extra={"event": "access", **fields})
            return
        if any(not isinstance(entry, str) for entry in batch):   # queued before logging was set up as JSON
            batch = [entry if isinstance(entry, str) else self.json_lines([entry])[0] for entry in batch]
        handler.acquire()
        try:
            stream = handler.stream
            raw = getattr(stream, "buffer", None)
            if raw is not None:
                # stderr is line-buffered: through the text layer, every line would be a write(2) of its own.
                stream.flush()
            for i in range(0, len(batch), CHUNK_LINES):
                text = "".join(batch[i:i + CHUNK_LINES])
                if raw is not None:
                    raw.write(text.encode("utf-8"))
                else:
                    stream.write(text)
            if raw is not None:
                raw.flush()
            else:
                handler.flush()
        finally:
            handler.release()

    @staticmethod
    def fields(entry: tuple[Any, ...]) -> dict[str, Any]:
        _at, method, path, route, stage, backend, status, seconds, size, trace_id, span_id = entry
        return {"method": method, "path": path, "route": route, "stage": stage, "backend": backend,
                "status": status, "duration_ms": round(seconds * 1000, 3), "bytes": size,
                "trace_id": trace_id or None, "span_id": span_id or None}
