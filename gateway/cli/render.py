"""Terminal rendering of comparisons and reports (``strangler diff`` and ``strangler report``), with rich.

Everything shown here was recorded from backends and clients, and a terminal obeys what it is sent: ``ESC ] 0;``
retitles the window, ``ESC [2J`` clears the screen, a carriage return overwrites a line, and C1 controls (CSI is
U+009B) act like their ESC forms on some terminals. So recorded text reaches the terminal only through ``safe``,
which shows control characters as escapes (ESC as ``\x1b``), and always as rich ``Text``, never as markup.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

VERDICT_STYLE = {"match": "green", "mismatch": "bold red", "ignored": "cyan", "error": "magenta",
                 "skipped": "dim"}

# C0 controls, DEL and the C1 controls; ``_CONTROL_IN_TEXT`` leaves TAB and LF, which lay text out.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    char = m.group(0)
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def safe(value: object, layout: bool = False) -> str:
    """``value`` as text a terminal only displays: control characters written as escapes (``\x1b``, ``\r``).
    With ``layout``, tabs and line feeds are kept (a multi-line body); otherwise they are escaped too."""
    text = value if isinstance(value, str) else str(value)
    return (_CONTROL_IN_TEXT if layout else _CONTROL).sub(_escape, text)


def terminal_safe(data: Any) -> Any:
    """An admin API answer with every string (keys too) passed through ``safe`` (tabs and line feeds kept), for
    the commands that draw it for people: whatever prints it, no recorded byte can drive the terminal."""
    if isinstance(data, str):
        return safe(data, layout=True)
    if isinstance(data, dict):
        return {terminal_safe(k): terminal_safe(v) for k, v in data.items()}
    if isinstance(data, list):
        return [terminal_safe(v) for v in data]
    return data


def _t(value: object, style: str = "") -> Text:
    return Text(safe(value), style=style)


def _pretty(body: dict[str, Any] | None) -> list[str]:
    if not body or body.get("text") is None:
        if body and body.get("base64"):
            return [f"<{body['size']} bytes of binary>"]
        return ["<empty>"]
    text = body["text"]
    try:
        lines = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    except ValueError:
        lines = text.splitlines() or [""]
    return [safe(line, layout=True) for line in lines]


def _keys(diffs: list[dict[str, Any]]) -> set[str]:
    """The last name in each difference's path: the key of the pretty-printed line that carries it."""
    keys = set()
    for d in diffs:
        last = d["path"].rsplit(".", 1)[-1].split("[", 1)[0].strip("'\"")
        if last and last != "$":
            keys.add(last)
    return keys


def _line_key(line: str) -> str | None:
    stripped = line.strip()
    if stripped.startswith('"'):
        key, sep, _ = stripped[1:].partition('":')
        if sep:
            return key
    return None


# One row of the side-by-side view: (mark, legacy line, new line); mark is "!" for a counted difference, "~" for
# one only in ignored or noise fields, " " for equal lines.
Row = tuple[str, str, str]


def side_by_side(left: list[str], right: list[str], counted: set[str], ignored: set[str]) -> list[Row]:
    """Align two pretty-printed bodies like a code review diff (difflib opcodes) and mark the differing rows."""
    rows: list[Row] = []
    for op, a1, a2, b1, b2 in difflib.SequenceMatcher(None, left, right, autojunk=False).get_opcodes():
        if op == "equal":
            rows.extend((" ", left[i], right[j]) for i, j in zip(range(a1, a2), range(b1, b2), strict=True))
            continue
        for k in range(max(a2 - a1, b2 - b1)):
            a = left[a1 + k] if a1 + k < a2 else ""
            b = right[b1 + k] if b1 + k < b2 else ""
            key = _line_key(a) or _line_key(b)
            rows.append(("~" if key in ignored and key not in counted else "!", a, b))
    return rows


def _collapse(rows: list[Row], context: int) -> list[Row | int]:
    """Keep ``context`` rows around each difference; runs of equal rows beyond that become their length."""
    marked = [i for i, r in enumerate(rows) if r[0] != " "]
    if not marked:
        return list(rows[:context * 8]) + ([len(rows) - context * 8] if len(rows) > context * 8 else [])
    keep = set()
    for i in marked:
        keep.update(range(max(0, i - context), min(len(rows), i + context + 1)))
    out: list[Row | int] = []
    skipped = 0
    for i, row in enumerate(rows):
        if i in keep:
            if skipped:
                out.append(skipped)
                skipped = 0
            out.append(row)
        else:
            skipped += 1
    if skipped:
        out.append(skipped)
    return out


MARK_STYLE = {"!": ("on dark_red", "on dark_green"), "~": ("dim cyan", "dim cyan"), " ": ("", "")}


def print_diff(con: Console, d: dict[str, Any], *, context: int = 3) -> None:
    verdict = d["verdict"]
    con.print(Text.assemble(("comparison #", "bold"), (safe(d["id"]), "bold"), "  ", (safe(d["route"]), "bold"),
                            "  ", safe(f"{d['method']} {d['path']}") + "  ",
                            (safe(verdict), VERDICT_STYLE.get(verdict, ""))))
    if d.get("trace_id"):
        trace_id = safe(d["trace_id"])
        con.print(Text(f"trace: {trace_id}   (strangler trace {trace_id})"))
    if d.get("reason"):
        con.print(Text("reason: " + safe(d["reason"])))
    p, s = d["primary"], d["shadow"]
    con.print(Text(safe(f"legacy side: {p['backend']}  status {p['status']}  {p['ms'] or '-'} ms      "
                        f"new side: {s['backend']}  status {s['status'] or '-'}  {s['ms'] or '-'} ms")))
    diffs = d.get("differences", [])
    if diffs:
        t = Table(title="differences", title_justify="left", show_edge=False)
        for col in ("path", "kind", "legacy", "new"):
            t.add_column(col, overflow="fold")
        for x in diffs[:50]:
            t.add_row(_t(x["path"]), _t(x["kind"]), _t(json.dumps(x["legacy"], default=str), "red"),
                      _t(json.dumps(x["shadow"], default=str), "green"))
        con.print(t)
        if len(diffs) > 50:
            con.print(f"... and {len(diffs) - 50} more")
    ignored = d.get("ignored", [])
    if ignored:
        con.print(Text("ignored (rules or learned noise): " + ", ".join(sorted({safe(x["field"]) for x in ignored})),
                       style="cyan"))
    rows = side_by_side(_pretty(p.get("body")), _pretty(s.get("body")), _keys(diffs), _keys(ignored))
    side = Table(show_edge=False, expand=True, caption="! differs   ~ differs only in ignored or noise fields",
                 caption_justify="left")
    side.add_column(" ", width=1, no_wrap=True)
    side.add_column(Text(f"legacy ({safe(p['backend'])})" + (" [cut]" if p.get("truncated") else "")), ratio=1,
                    overflow="fold")
    side.add_column(Text(f"new ({safe(s['backend'])})" + (" [cut]" if s.get("truncated") else "")), ratio=1,
                    overflow="fold")
    for row in _collapse(rows, context):
        if isinstance(row, int):
            side.add_row("", Text(f"... {row} equal line(s) ...", style="dim"), "")
            continue
        mark, a, b = row
        style_a, style_b = MARK_STYLE[mark]
        side.add_row(Text(mark, style="bold"), Text(a, style=style_a), Text(b, style=style_b))
    con.print(side)


def print_report(con: Console, rep: dict[str, Any]) -> None:
    routes = rep["routes"]
    if not routes:
        con.print("no routes with comparisons yet")
        return
    t = Table(title="shadow comparison per route (latency over the compared requests)", title_justify="left",
              show_edge=False)
    for col in ("route", "stage", "compared", "match", "mismatch", "ignored", "error", "skipped",
                "legacy p50/p99 ms", "new p50/p99 ms"):
        t.add_column(col)
    for r in routes:
        rates = r.get("rates", {})
        legacy, new = _latency(r)
        compared = r.get("compared", 0)
        t.add_row(_t(r["route"]), _t(r["stage"]), str(compared),
                  *[f"{rates.get(v, 0.0):.1f}%" if compared else "-" for v in ("match", "mismatch", "ignored",
                                                                                  "error")],
                  _t(_skipped(r)), f"{_ms(legacy.get('p50_ms'))}/{_ms(legacy.get('p99_ms'))}",
                  f"{_ms(new.get('p50_ms'))}/{_ms(new.get('p99_ms'))}")
    con.print(t)
    con.print(Text("match: identical answers; ignored: differed only in ignored or learned-noise fields (equal for "
                   "the migration); mismatch: a field that counts differs; error: the shadow failed", style="dim"))
    for r in routes:
        if r.get("fields"):
            ft = Table(title=Text(f"{safe(r['route'])}: top differing fields"), title_justify="left",
                       show_edge=False)
            for col in ("field", "kind", "mismatching", "ignored", "example"):
                ft.add_column(col)
            for f in r["fields"][:10]:
                ft.add_row(_t(f["field"], "bold red" if f["count"] else "cyan"), _t(f["kind"]), str(f["count"]),
                           str(f["ignored"]), _t(f"strangler diff {f['last_sample']}" if f.get("last_sample") else ""))
            con.print(ft)
        learned = [n for n in r.get("noise", []) if n.get("learned", True)]
        candidates = [n for n in r.get("noise", []) if not n.get("learned", True)]
        if learned:
            con.print(Text(safe(f"{r['route']}: learned noise over {r['noise_samples']} double-checked "
                                f"request(s): " + ", ".join(f"{n['field']} ({n['rate']:.0f}%)" for n in learned[:10])),
                           style="cyan"))
        if candidates:
            con.print(Text(safe(f"{r['route']}: legacy disagreed with itself too rarely to call these noise yet: "
                                + ", ".join(f"{n['field']} ({n['rate']:.0f}%)" for n in candidates[:10])),
                           style="dim"))


def _latency(r: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """p50/p99 of both sides: over the compared requests when the store has them, else the live window."""
    compared = r.get("compared_latency") or {}
    if compared.get("legacy") and compared.get("extracted"):
        return compared["legacy"], compared["extracted"]
    lat = r.get("latency") or {}
    new = lat.get("shadow") if r.get("stage") == "shadow" else lat.get("extracted")
    return lat.get("legacy") or {}, new or {}


def _skipped(r: dict[str, Any]) -> str:
    """Skips by reason: the store's counters, plus the reasons only counted live (sampled_out, method)."""
    reasons = dict(r.get("skipped_live") or {})
    reasons.update(r.get("skipped") or {})
    return ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "-"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"
