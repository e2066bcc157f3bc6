"""The web console: static HTML, CSS and JavaScript modules served by the admin listener.

Model
-----
The console is a single page (``index.html``) whose ES modules read the admin API with ``fetch`` and draw every
view in the browser; there is no server-side rendering and no build step. The files ship inside the package next
to this module, so nothing is fetched from anywhere but the admin listener itself: no CDN, no web fonts.

Two handlers serve them: ``GET /`` answers ``index.html`` and ``GET /console/{path}`` answers one asset. Only files
directly under this directory with a known suffix are served (never this module, never a path that leaves the
directory), each with a strict Content-Security-Policy: scripts, styles and requests may only come from the admin
origin, and no inline script can run. That is the second line of defence behind the pages' own rule of inserting
backend data as text only, since recorded bodies and headers come from backends and are untrusted.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

CONSOLE_DIR = Path(__file__).resolve().parent

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# `default-src 'self'` covers scripts, styles, images and fetch; the rest closes what it does not cover.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The files change with the installed package, not per request: revalidate so an upgrade shows at once.
    "Cache-Control": "no-cache",
}


def _file_response(path: Path) -> web.StreamResponse:
    content_type = CONTENT_TYPES.get(path.suffix)
    if content_type is None or not path.is_file():
        raise web.HTTPNotFound(text="no such console file")
    return web.Response(body=path.read_bytes(), headers={"Content-Type": content_type, **SECURITY_HEADERS})


async def index(request: web.Request) -> web.StreamResponse:
    """``GET /``: the console's single page."""
    return _file_response(CONSOLE_DIR / "index.html")


async def asset(request: web.Request) -> web.StreamResponse:
    """``GET /console/{path}``: one of the console's files, by name."""
    name = request.match_info["path"]
    if "\x00" in name:   # an encoded NUL (%00) names no file; the OS would refuse the path outright
        raise web.HTTPNotFound(text="no such console file")
    path = (CONSOLE_DIR / name).resolve()
    if path.parent != CONSOLE_DIR:
        raise web.HTTPNotFound(text="no such console file")
    return _file_response(path)
