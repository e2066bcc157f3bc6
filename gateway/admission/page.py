"""What a waiting visitor sees. Browsers (``Accept: text/html``) get a small page that shows the position and the
estimated wait and reloads itself with ``<meta http-equiv="refresh">`` (no script, no external asset, so it works
with JavaScript off and costs one request per refresh); API clients get problem+json (``gateway.errors.Queued``)
with ``position`` and ``eta_s``. Both come with ``Retry-After`` (RFC 9110 section 10.2.3) and
``X-Queue-Position``.
"""

from __future__ import annotations

import html

from aiohttp import web

from gateway.errors import WaitingRoom

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;margin:0;display:flex;min-height:100vh;align-items:center;
justify-content:center;background:#f4f5f7;color:#222}}
main{{background:#fff;padding:2em 2.5em;border-radius:8px;box-shadow:0 1px 4px #0002;max-width:28em}}
h1{{font-size:1.3em;margin:0 0 .5em}} .n{{font-size:2.4em;font-weight:600;margin:.2em 0}}
p{{margin:.4em 0}} small{{color:#666}}
</style></head>
<body><main>
<h1>{title}</h1>
{body}
<p><small>This page refreshes itself every {refresh} s; keep it open to keep your place.</small></p>
</main></body></html>
"""


def wants_html(request: web.BaseRequest) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def waiting_page(error: WaitingRoom, position: int | None, eta_s: float | None) -> str:
    if position is not None:
        wait = "unknown (admission is paused)" if eta_s is None else _human(eta_s)
        body = (f'<p>You are in line. Your place:</p><p class="n">{position}</p>'
                f"<p>Estimated wait: {html.escape(wait)}</p>")
    else:
        body = f"<p>{html.escape(error.detail)}</p>"
    return PAGE.format(refresh=error.retry_after, title=html.escape(error.title), body=body)


def _human(seconds: float) -> str:
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    minutes = seconds / 60
    return f"about {round(minutes)} min" if minutes < 90 else f"about {minutes / 60:.1f} h"
