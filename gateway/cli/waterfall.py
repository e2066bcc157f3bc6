"""Terminal views of traces (``strangler traces`` and ``strangler trace ID``), drawn with rich.

The waterfall is the tree of spans in depth-first order, children by start time, each row with its service, its
duration and a bar placed to scale on the trace's time axis: where a bar starts is when the span started, its
length is how long it took. Errors are red; the shadow exchange (and everything the shadow target did under it) is
marked, so the copy sent to the new service reads side by side with the primary.

Span names, services and attributes come from whatever exported them (any service can post OTLP to the admin
listener), so they are shown through ``render.safe``, as rich ``Text``: no control character reaches the terminal.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway.cli.render import safe

SERVICE_STYLES = {"gateway": "blue", "legacy": "yellow", "reviews": "green", "likes": "magenta"}
FALLBACK_STYLES = ("cyan", "bright_blue", "bright_green", "bright_magenta")
BAR_WIDTH = 48


def service_style(service: str) -> str:
    if service in SERVICE_STYLES:
        return SERVICE_STYLES[service]
    return FALLBACK_STYLES[sum(map(ord, service)) % len(FALLBACK_STYLES)]


def is_shadow(span: dict[str, Any]) -> bool:
    return (span.get("attributes") or {}).get("strangler.shadow") is True


def tree(spans: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, bool]]:
    """``(span, guide, in_shadow)`` in depth-first order; ``guide`` is the tree prefix (``├─ `` etc.). Spans
    whose parent is missing (not sampled there, evicted, still on its way) are shown as roots."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s.get("parent_span_id")
        children.setdefault(parent if parent in ids else None, []).append(s)
    for kids in children.values():
        kids.sort(key=lambda s: (s["start_ns"], s["span_id"]))
    out: list[tuple[dict[str, Any], str, bool]] = []

    def visit(span: dict[str, Any], prefix: str, last: bool, depth: int, shadow: bool) -> None:
        shadow = shadow or is_shadow(span)
        guide = "" if depth == 0 else prefix + ("└─ " if last else "├─ ")
        out.append((span, guide, shadow))
        kids = children.get(span["span_id"], [])
        child_prefix = "" if depth == 0 else prefix + ("   " if last else "│  ")
        for i, kid in enumerate(kids):
            visit(kid, child_prefix, i == len(kids) - 1, depth + 1, shadow)

    for root in children.get(None, []):
        visit(root, "", True, 0, False)
    return out


def _bar(start: int, end: int, t0: int, total: int, width: int, style: str) -> Text:
    offset = int((start - t0) / total * width) if total else 0
    length = max(1, round((end - start) / total * width)) if total else 1
    offset = min(offset, width - 1)
    length = min(length, width - offset)
    text = Text(" " * offset)
    text.append("█" * length, style=style)
    text.append(" " * (width - offset - length))
    return text


def print_trace(console: Console, trace: dict[str, Any], width: int = BAR_WIDTH) -> None:
    spans = trace["spans"]
    t0 = min(s["start_ns"] for s in spans)
    t1 = max(s["end_ns"] for s in spans)
    total = max(1, t1 - t0)
    services = sorted({s["service"] for s in spans})
    rows = tree(spans)
    root = rows[0][0] if rows else spans[0]
    head = Text()
    head.append(safe(root["name"]), style="bold")
    head.append(f"  trace {safe(trace['trace_id'])}  {total / 1e6:.2f} ms  {len(spans)} span(s)  services: ")
    for i, name in enumerate(services):
        head.append(("" if i == 0 else ", ") + safe(name), style=service_style(name))
    console.print(head)
    table = Table(show_edge=False, box=None, pad_edge=False, header_style="bold")
    table.add_column("span", no_wrap=True)
    table.add_column("service", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column(f"0{' ' * (width - 10)}{total / 1e6:>8.2f}ms", no_wrap=True)
    for span, guide, in_shadow in rows:
        failed = span.get("status") == "error"
        attrs = span.get("attributes") or {}
        name = Text(guide, style="dim")
        name.append(safe(span["name"]), style="bold red" if failed else ("magenta" if in_shadow else ""))
        if is_shadow(span) and span["service"] == "gateway":
            verdict = attrs.get("strangler.verdict")
            name.append(" [shadow" + (f": {safe(verdict)}" if verdict else "") + "]",
                        style="bold red" if verdict in ("mismatch", "error") else "magenta")
        elif in_shadow and span.get("kind") == "server":
            name.append(" [shadow]", style="magenta")
        status = attrs.get("http.response.status_code")
        if status:
            name.append(f" {safe(status)}", style="red" if failed or _number(status) >= 500 else "dim")
        if failed and attrs.get("otel.status_description"):
            name.append(f" {safe(str(attrs['otel.status_description'])[:60])}", style="red")
        style = "red" if failed else ("magenta" if in_shadow else service_style(span["service"]))
        duration = (span["end_ns"] - span["start_ns"]) / 1e6
        table.add_row(name, Text(safe(span["service"]), style=service_style(span["service"])), f"{duration:.2f}",
                      _bar(span["start_ns"], span["end_ns"], t0, total, width, style))
    console.print(table)


def _number(value: object) -> int:
    try:
        return int(value)   # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def print_traces(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(show_edge=False, header_style="bold")
    for col in ("trace id", "when", "route", "root", "services", "spans", "ms", "status"):
        table.add_column(col, justify="right" if col in ("spans", "ms") else "left", no_wrap=col != "root")
    for r in rows:
        when = dt.datetime.fromtimestamp(r["start_ns"] / 1e9).strftime("%H:%M:%S.%f")[:-3]
        status = Text("error", style="red") if r["status"] == "error" else Text("ok", style="green")
        if r.get("has_shadow"):
            status.append(" shadow", style="magenta")
        table.add_row(Text(safe(r["trace_id"])), when, Text(safe(r["route"] or "-")), Text(safe(r["root"] or "-")),
                      Text(safe(", ".join(r["services"]))), str(r["span_count"]), f"{r['duration_ms']:.2f}", status)
    console.print(table)
    if not rows:
        console.print("no traces recorded yet (the gateway keeps the sampled ones: routes.yaml tracing.sample)")
