"""Connections to backends: one pool per backend and purpose, and the single translation of client errors.

A pool is an aiohttp ``ClientSession`` configured as a proxy needs it: no cookie jar, no redirects, no automatic
decompression, none of the client's default headers, raw (already encoded) request targets. Pools survive reloads
while the backend's address and settings are unchanged, so a reload never drops warm keep-alive connections.
Shadow traffic gets pools of its own so that a slow shadow target can never take connections from the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Iterable, Mapping

import aiohttp
from yarl import URL

from gateway.config import Backend
from gateway.errors import (
    GatewayError,
    UpstreamBodyError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


def _pool_key(backend: Backend, purpose: str) -> tuple[object, ...]:
    return (purpose, backend.scheme, backend.host, backend.port, backend.timeouts, backend.max_connections)


class Upstreams:
    """All backend pools of a running gateway."""

    def __init__(self) -> None:
        self._pools: dict[tuple[object, ...], aiohttp.ClientSession] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def session(self, backend: Backend, purpose: str = "primary") -> aiohttp.ClientSession:
        key = _pool_key(backend, purpose)
        session = self._pools.get(key)
        if session is None or session.closed:
            session = self._pools[key] = _new_session(backend)
        return session

    def retain(self, backends: Iterable[Backend], grace: float = 30.0) -> None:
        """After a reload: close the pools no backend uses any more, once in-flight requests had time to finish."""
        wanted = {_pool_key(b, p) for b in backends for p in ("primary", "shadow")}
        for key in [k for k in self._pools if k not in wanted]:
            session = self._pools.pop(key)
            task = asyncio.get_running_loop().create_task(_close_later(session, grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for task in list(self._closing):
            task.cancel()
        sessions = list(self._pools.values())
        self._pools.clear()
        for session in sessions:
            await session.close()


async def _close_later(session: aiohttp.ClientSession, grace: float) -> None:
    try:
        await asyncio.sleep(grace)
    finally:
        await session.close()


def _new_session(backend: Backend) -> aiohttp.ClientSession:
    t = backend.timeouts
    connector = aiohttp.TCPConnector(
        limit=backend.max_connections,
        limit_per_host=0,
        keepalive_timeout=t.idle,
        ttl_dns_cache=60,
        enable_cleanup_closed=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=_SKIP_AUTO,
        # sock_read starts once the request body is fully sent (aiohttp starts the read timer after write_eof),
        # so it is the "response" timeout; after the headers the proxy lowers it to the idle timeout.
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=t.connect, sock_read=t.response),
        raise_for_status=False,
        # Header sizes: the backend is trusted as much as the client; aiohttp's defaults (8 KiB line) are too
        # small for some legacy apps' cookies.
        max_line_size=65536,
        max_field_size=65536,
    )


def upstream_url(backend: Backend, raw_target: str) -> URL:
    return URL(f"{backend.scheme}://{backend.host}:{backend.port}{backend.base_path}{raw_target}", encoded=True)


async def open_response(session: aiohttp.ClientSession, backend: Backend, method: str, raw_target: str,
                        headers: Iterable[tuple[str, str]] | Mapping[str, str],
                        body: AsyncIterable[bytes] | bytes | None) -> aiohttp.ClientResponse:
    """Send the request and wait for the response headers; the body is left to stream."""
    try:
        resp = await session.request(
            method, upstream_url(backend, raw_target), headers=list(headers) if not isinstance(headers, Mapping)
            else headers, data=body, allow_redirects=False, compress=None)
    except BaseException as exc:  # noqa: BLE001 - translated below; cancellation passes through
        raise translate(exc, backend, phase="headers") from exc
    # From here on, a silent backend is an idle body, not a slow response.
    conn = resp.connection
    if conn is not None and conn.protocol is not None:
        conn.protocol.read_timeout = backend.timeouts.idle
    return resp


def translate(exc: BaseException, backend: Backend, phase: str) -> BaseException:
    """The one place where aiohttp's and the OS's exceptions become the gateway's errors.

    ``phase`` is "headers" before the response started and "body" after: a body failure can no longer become a
    status code, so it is always an ``UpstreamBodyError`` and the caller aborts the client connection.
    """
    if isinstance(exc, asyncio.CancelledError | GatewayError):
        return exc
    # aiohttp wraps a failure of the request-body writer (our own PayloadTooLarge among them) as its cause.
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, GatewayError):
            return cause
        cause = cause.__cause__
    name = backend.name
    if phase == "body":
        return UpstreamBodyError(f"{name}: response body broke off: {_describe(exc)}", backend=name)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"{name}: connect timed out after {backend.timeouts.connect:g}s", backend=name,
                               retryable=True)
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"{name}: no response within {backend.timeouts.response:g}s", backend=name)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamConnectError(f"{name}: cannot connect to {backend.host}:{backend.port}: "
                                    f"{exc.os_error.strerror or exc.os_error}", backend=name, retryable=True)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamProtocolError(f"{name}: closed the connection without a response", backend=name)
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return UpstreamProtocolError(f"{name}: invalid response: {_describe(exc)}", backend=name)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamConnectError(f"{name}: connection failed: {_describe(exc)}", backend=name)
    return exc


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


async def discard(resp: aiohttp.ClientResponse) -> None:
    """Give a response's connection back without reading a body nobody wants (the pool closes it if unread)."""
    with contextlib.suppress(Exception):
        resp.close()
