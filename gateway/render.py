"""Terminal rendering of comparisons and reports (``strangler diff`` and ``strangler report``), with rich."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

VERDICT_STYLE = {"match": "green", "mismatch": "bold red", "ignored": "cyan", "error": "magenta",
                 "skipped": "dim"}


def _pretty(body: dict[str, Any] | None) -> list[str]:
    if not body or body.get("text") is None:
        if body and body.get("base64"):
            return [f"<{body['size']} bytes of binary>"]
        return ["<empty>"]
    text = body["text"]
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    except ValueError:
        return text.splitlines() or [""]


def _differing_keys(diffs: list[dict[str, Any]]) -> set[str]:
    """The last path component of every differing field, to highlight the lines that carry it."""
    keys = set()
    for d in diffs:
        path = d["path"]
        last = path.rsplit(".", 1)[-1].split("[", 1)[0]
        if last and last != "$":
            keys.add(last)
    return keys


def _highlight(line: str, keys: set[str], style: str) -> Text:
    stripped = line.strip()
    for key in keys:
        if stripped.startswith(f'"{key}":'):
            return Text(line, style=style)
    return Text(line)


def print_diff(con: Console, d: dict[str, Any]) -> None:
    verdict = d["verdict"]
    con.print(Text.assemble(("comparison #", "bold"), (str(d["id"]), "bold"), "  ", (d["route"], "bold"), "  ",
                            f"{d['method']} {d['path']}  ", (verdict, VERDICT_STYLE.get(verdict, ""))))
    if d.get("trace_id"):
        con.print(f"trace: {d['trace_id']}   (strangler trace {d['trace_id']})")
    if d.get("reason"):
        con.print(f"reason: {d['reason']}")
    p, s = d["primary"], d["shadow"]
    con.print(f"legacy side: {p['backend']}  status {p['status']}  {p['ms'] or '-'} ms      "
              f"new side: {s['backend']}  status {s['status'] or '-'}  {s['ms'] or '-'} ms")
    diffs = d.get("differences", [])
    if diffs:
        t = Table(title="differences", title_justify="left", show_edge=False)
        for col in ("path", "kind", "legacy", "new"):
            t.add_column(col, overflow="fold")
        for x in diffs[:50]:
            t.add_row(x["path"], x["kind"], Text(json.dumps(x["legacy"], default=str), style="red"),
                      Text(json.dumps(x["shadow"], default=str), style="green"))
        con.print(t)
        if len(diffs) > 50:
            con.print(f"... and {len(diffs) - 50} more")
    ignored = d.get("ignored", [])
    if ignored:
        con.print(Text("ignored (rules or learned noise): " + ", ".join(sorted({x["field"] for x in ignored})),
                       style="cyan"))
    keys = _differing_keys(diffs)
    left, right = _pretty(p.get("body")), _pretty(s.get("body"))
    side = Table(show_edge=False, expand=True)
    side.add_column(f"legacy ({p['backend']})", ratio=1, overflow="fold")
    side.add_column(f"new ({s['backend']})", ratio=1, overflow="fold")
    for i in range(min(max(len(left), len(right)), 200)):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        style_a = "on dark_red" if a != b else ""
        style_b = "on dark_green" if a != b else ""
        side.add_row(_highlight(a, keys, "bold red") if not style_a else Text(a, style=style_a),
                     _highlight(b, keys, "bold green") if not style_b else Text(b, style=style_b))
    con.print(side)


def print_report(con: Console, rep: dict[str, Any]) -> None:
    routes = rep["routes"]
    if not routes:
        con.print("no routes with comparisons yet")
        return
    t = Table(title="shadow comparison per route", title_justify="left", show_edge=False)
    for col in ("route", "stage", "compared", "match", "mismatch", "ignored", "error", "skipped",
                "legacy p50/p99 ms", "new p50/p99 ms"):
        t.add_column(col)
    for r in routes:
        rates = r.get("rates", {})
        lat = r["latency"]
        new = lat["shadow"] if r["stage"] == "shadow" else lat["extracted"]
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(r["skipped"].items())) or "-"
        t.add_row(r["route"], r["stage"], str(r.get("compared", 0)),
                  *[f"{rates.get(v, 0.0):.1f}%" for v in ("match", "mismatch", "ignored", "error")],
                  skipped, f"{_ms(lat['legacy']['p50_ms'])}/{_ms(lat['legacy']['p99_ms'])}",
                  f"{_ms(new['p50_ms'])}/{_ms(new['p99_ms'])}")
    con.print(t)
    for r in routes:
        if r.get("fields"):
            ft = Table(title=f"{r['route']}: top differing fields", title_justify="left", show_edge=False)
            for col in ("field", "kind", "mismatching", "ignored", "example"):
                ft.add_column(col)
            for f in r["fields"][:10]:
                ft.add_row(Text(f["field"], style="bold red" if f["count"] else "cyan"), f["kind"], str(f["count"]),
                           str(f["ignored"]), f"strangler diff {f['last_sample']}" if f.get("last_sample") else "")
            con.print(ft)
        if r.get("noise"):
            con.print(Text(f"{r['route']}: learned noise over {r['noise_samples']} double-checked request(s): "
                           + ", ".join(f"{n['field']} ({n['rate']:.0f}%)" for n in r["noise"][:10]), style="cyan"))


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"
