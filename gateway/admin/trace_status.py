"""What a trace is still waiting for: the services' spans arrive after the gateway's own (each service exports in
batches, about once a second), so a trace read right after its request may show only the gateway's spans. The
trace API says so, naming the services, instead of letting the waterfall look broken.

An upstream attempt (a CLIENT span of the gateway) that got an answer but has no span of the service under it is
*awaiting* while the trace is younger than ``LATE_S``; after that, the service is *silent* (not instrumented, or
not exporting to the admin listener: see docs/services.md).
"""

from __future__ import annotations

import time
from typing import Any

LATE_S = 5.0


def awaiting(spans: list[dict[str, Any]], now_ns: int | None = None) -> dict[str, Any]:
    now_ns = time.time_ns() if now_ns is None else now_ns
    parents = {s.get("parent_span_id") for s in spans}
    backends = set()
    for s in spans:
        attrs = s.get("attributes") or {}
        answered = attrs.get("http.response.status_code") is not None
        if s.get("kind") == "client" and answered and s["span_id"] not in parents and attrs.get("strangler.backend"):
            backends.add(str(attrs["strangler.backend"]))
    newest = max((int(s.get("end_ns") or 0) for s in spans), default=0)
    young = (now_ns - newest) / 1e9 < LATE_S
    names = sorted(backends)
    if not names:
        return {"services": [], "state": "complete", "text": ""}
    if young:
        return {"services": names, "state": "arriving",
                "text": f"spans from {', '.join(names)} are still arriving (services export about once a second)"}
    return {"services": names, "state": "silent",
            "text": f"no spans from {', '.join(names)}: not instrumented, or not exporting to this gateway's "
                    "admin listener (see docs/services.md)"}
