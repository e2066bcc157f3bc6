"""Logging for the gateway and the services: structlog in front, the stdlib behind.

JSON lines when stderr is not a terminal (for machines), readable console lines on a terminal (for people). The
stdlib's and aiohttp's own records go through the same processor chain, so every line has the same shape, and
``extra={...}`` fields of stdlib calls become JSON fields.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _extra_fields(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Copy ``extra={...}`` of stdlib records into the event."""
    record = event.get("_record")
    if record is not None:
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_") and key not in event:
                event[key] = value
    return event


def setup_logging(service: str, level: str | None = None, json_lines: bool | None = None) -> None:
    level = (level or os.environ.get("STRANGLER_LOG_LEVEL") or "INFO").upper()
    if json_lines is None:
        fmt = os.environ.get("STRANGLER_LOG_FORMAT")
        json_lines = (fmt == "json") if fmt else not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _extra_fields,
    ]
    renderer: Any = (structlog.processors.JSONRenderer() if json_lines
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.contextvars.bind_contextvars(service=service)


def _noop(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    return event
