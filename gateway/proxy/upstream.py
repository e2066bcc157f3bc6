"""Connections to backends: one pool per backend and purpose, and the single translation of client errors.

HTTP goes through ``gateway.proxy.pool`` (a lean keep-alive pool on httptools, which raises the gateway's own
errors); WebSocket upgrades go through an aiohttp ``ClientSession`` per backend, whose exceptions ``translate``
maps. That session is configured as a proxy needs it: no cookie jar, no redirects, no automatic decompression,
none of the client's default headers, raw (already encoded) request targets.

Pools survive reloads while the backend's address and settings are unchanged, so a reload never drops warm
keep-alive connections (``retain`` closes the others after a grace period). Shadow traffic gets pools of its own
so that a slow shadow target can never take connections from the primary. An https:// backend's pools and session
share one ``BackendTLSClient`` (``gateway.proxy.tls``): one verifying context, one remembered TLS session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterable, Iterable

import aiohttp
from yarl import URL

from gateway.config.model import Backend
from gateway.errors import (
    GatewayError,
    UpstreamBodyError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.proxy.pool import Pool, UpstreamResponse
from gateway.proxy.tls import BackendTLSClient, handshake_error

_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


def _pool_key(backend: Backend, purpose: str) -> tuple[object, ...]:
    return (purpose, backend.scheme, backend.host, backend.port, backend.timeouts, backend.max_connections,
            backend.tls)


def _tls_key(backend: Backend) -> tuple[object, ...]:
    return (backend.name, backend.host, backend.port, backend.tls)


class Upstreams:
    """All backend pools of a running gateway: lean keep-alive pools (``gateway.pool``) for HTTP, and an aiohttp
    session per backend only for WebSocket upgrades, which are rare and need a full client."""

    def __init__(self) -> None:
        self._pools: dict[tuple[object, ...], Pool] = {}
        # (backend object, purpose) -> its pool, without hashing the config; emptied at each reload (``retain``)
        self._known: dict[tuple[int, str], tuple[Backend, Pool]] = {}
        self._ws: dict[tuple[object, ...], aiohttp.ClientSession] = {}
        self._tls: dict[tuple[object, ...], BackendTLSClient] = {}
        self._ws_context: dict[tuple[object, ...], ssl.SSLContext] = {}   # the TLS context each session was made with
        self._closing: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def pool(self, backend: Backend, purpose: str = "primary") -> Pool:
        # Every request asks: the last answer per backend object is kept, as hashing the key calls the config
        # dataclasses' Python-level __hash__ (a reload makes new backend objects, which look again).
        known = self._known.get((id(backend), purpose))
        if known is not None and known[0] is backend and not known[1].closed:
            return known[1]
        key = _pool_key(backend, purpose)
        pool = self._pools.get(key)
        if pool is None or pool.closed:
            pool = self._pools[key] = Pool(backend, tls=self.tls(backend))
            self._schedule_sweep()
        self._known[(id(backend), purpose)] = (backend, pool)
        return pool

    def tls(self, backend: Backend) -> BackendTLSClient | None:
        """The TLS client of an https:// backend (one per backend and settings: its primary, shadow and WebSocket
        connections share the context, the remembered session and the failures already logged)."""
        if backend.tls is None:
            return None
        key = _tls_key(backend)
        client = self._tls.get(key)
        if client is None:
            client = self._tls[key] = BackendTLSClient(backend)
        return client

    def tls_clients(self) -> list[BackendTLSClient]:
        return list(self._tls.values())

    def ws_session(self, backend: Backend) -> aiohttp.ClientSession:
        key = _pool_key(backend, "ws")
        session = self._ws.get(key)
        tls = self.tls(backend)
        if tls is not None:
            tls.refresh()
            if session is not None and self._ws_context.get(key) is not tls.context:
                self._retire(self._ws.pop(key), 30.0)   # renewed TLS files: new sessions use them
                session = None
        if session is None or session.closed:
            session = self._ws[key] = _new_session(backend, tls)
            if tls is not None:
                self._ws_context[key] = tls.context
        return session

    def _retire(self, session: aiohttp.ClientSession, grace: float) -> None:
        task = asyncio.get_running_loop().create_task(_close_later(session, grace))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _schedule_sweep(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(5.0, self._sweep)

    def _sweep(self) -> None:
        """Close keep-alive connections idle past their backend's idle timeout, every few seconds."""
        self._sweeper = None
        for pool in self._pools.values():
            pool.sweep()
        if self._pools:
            self._schedule_sweep()

    def retain(self, backends: Iterable[Backend], grace: float = 30.0) -> None:
        """After a reload: close the pools no backend uses any more, once in-flight requests had time to finish."""
        backends = list(backends)
        self._known.clear()
        wanted = {_pool_key(b, p) for b in backends for p in ("primary", "shadow", "ws")}
        tls_wanted = {_tls_key(b) for b in backends}
        self._tls = {k: c for k, c in self._tls.items() if k in tls_wanted}
        for key in [k for k in self._pools if k not in wanted]:
            pool = self._pools.pop(key)
            asyncio.get_running_loop().call_later(grace, pool.close)
        for key in [k for k in self._ws if k not in wanted]:
            self._ws_context.pop(key, None)
            self._retire(self._ws.pop(key), grace)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._closing):
            task.cancel()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._known.clear()
        sessions = list(self._ws.values())
        self._ws.clear()
        for session in sessions:
            await session.close()


async def _close_later(session: aiohttp.ClientSession, grace: float) -> None:
    try:
        await asyncio.sleep(grace)
    finally:
        await session.close()


def _new_session(backend: Backend, tls: BackendTLSClient | None) -> aiohttp.ClientSession:
    t = backend.timeouts
    connector = aiohttp.TCPConnector(
        ssl=tls.context if tls is not None else True,
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


async def open_response(pool: Pool, method: str, raw_target: str, headers: Iterable[tuple[str, str]],
                        body: AsyncIterable[bytes] | bytes | None) -> UpstreamResponse:
    """Send the request and wait for the response headers; the body is left to stream."""
    return await pool.request(method, raw_target, headers, body)


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
    tls_failure = _ssl_cause(exc)
    if tls_failure is not None and phase == "headers":
        return handshake_error(tls_failure, backend)
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


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind an aiohttp exception, if any (aiohttp's certificate and TLS errors wrap one,
    and are themselves ``ssl.SSLError`` subclasses without its fields)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        inner = getattr(seen, "certificate_error", None) or getattr(seen, "os_error", None)
        if isinstance(inner, ssl.SSLError):
            return inner
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, aiohttp.ClientError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


async def discard(resp: aiohttp.ClientResponse) -> None:
    """Give a response's connection back without reading a body nobody wants (the pool closes it if unread)."""
    with contextlib.suppress(Exception):
        resp.close()
