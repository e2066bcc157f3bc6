"""The Python baseline: the reverse proxy most people would write first with aiohttp.

One ``ClientSession`` for the process, uvloop, and buffered bodies both ways (``await request.read()``, then
``await resp.read()``): nothing clever, so the benchmark can show what the gateway's own design costs or saves
relative to plain aiohttp. Hop-by-hop headers are dropped as RFC 9110 section 7.6.1 requires; everything else
is passed through. Because it buffers, it is not used for the 1 GiB transfers.

Run: ``python -m tests.bench.naive_proxy --port P --upstream http://127.0.0.1:U``; prints ``ready``.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
        app[SESSION] = session
        yield
        await session.close()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with app[SESSION].request(request.method, upstream + request.path_qs, headers=headers,
                                        data=body or None, allow_redirects=False) as resp:
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=resp.status, body=data, headers=out)

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="naive aiohttp reverse proxy (benchmark baseline)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT")
    args = parser.parse_args(argv)
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(make_app(args.upstream.rstrip("/")), host=args.host, port=args.port, access_log=None,
                print=lambda *_: print("ready", flush=True), backlog=1024)


if __name__ == "__main__":
    main()
