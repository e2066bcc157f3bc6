"""What the gateway's request path costs before any of its features: the floor under the pass-through figure.

Two stripped servers on the same listener as the gateway (aiohttp's low-level server, uvloop), measured by the
``floor`` scenario beside nginx and the gateway:

    listener   answers every request itself with the 70-byte document, in one write (``RelayedReply``): what
               aiohttp's server side costs per request (parser, request object, task, keep-alive), with the
               cheapest answer there is
    relay      forwards every request through the gateway's own upstream pool and relays the answer in one
               write: the listener plus the upstream exchange, with no screen, routing, rollout, tracing, access
               log, metrics or statistics

The gateway's figure less ``relay`` is what its features cost; ``relay`` less ``listener`` is the upstream
exchange; ``listener`` is aiohttp's part, which the gateway keeps (its public listener is aiohttp's).

Run: ``python -m tests.bench.floor_proxy --mode relay --port P --upstream-port U``; prints ``ready``.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from gateway.config.model import Backend, Timeouts
from gateway.proxy.headers import backend_fields
from gateway.proxy.pool import Pool
from gateway.proxy.reply import RelayedReply
from tests.bench.backend import PAYLOAD as DOCUMENT

FIELDS = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(DOCUMENT)
SMALL = 64 * 1024
# What a proxy must not pass on (RFC 9110 §7.6.1); the relay sends the rest as the client sent it.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"})


async def listener(request: web.BaseRequest) -> RelayedReply:
    return RelayedReply(200, FIELDS, DOCUMENT, True)


def relay(backend: Backend) -> object:
    pool = Pool(backend)

    async def handle(request: web.BaseRequest) -> RelayedReply | web.Response:
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers
                   if name.decode("latin-1").lower() not in HOP_BY_HOP]
        resp = await pool.request(request.method, request.raw_path, headers, None)
        try:
            whole = resp.take_complete(SMALL)
            fields = backend_fields(resp.raw_headers, len(whole)) if whole is not None else None
            if whole is None or fields is None:
                return web.Response(status=502, text="the floor relay handles small whole answers only")
            return RelayedReply(resp.status, fields[0], whole, fields[1])
        finally:
            resp.release()

    return handle


def _backend(port: int) -> Backend:
    return Backend("floor", f"http://127.0.0.1:{port}", "http", "127.0.0.1", port, "", Timeouts(5.0, 30.0, 60.0),
                   256, None, 0, None)


async def serve(mode: str, host: str, port: int, upstream_port: int) -> None:
    handler = listener if mode == "listener" else relay(_backend(upstream_port))
    server = web.Server(handler, access_log=None)   # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    await loop.create_server(server, host, port, backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the gateway's floor: aiohttp's listener, then the bare relay")
    parser.add_argument("--mode", choices=("listener", "relay"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, default=0)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.mode, args.host, args.port, args.upstream_port))


if __name__ == "__main__":
    main()
