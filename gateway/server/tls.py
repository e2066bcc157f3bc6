"""HTTPS on the public listener, with certificates re-read when they change on disk (renewals).

The listening socket keeps one ``SSLContext`` for its whole life. Its SNI callback, which OpenSSL calls on every
ClientHello (with ``None`` when the client sends no server name), moves each new handshake onto the context of the
current certificate. A renewal builds a fresh context from the new files and swaps it in: handshakes from then on
get the new certificate, established connections keep theirs, nothing is dropped.

Why not ``load_cert_chain`` on the live context: when a renewal tool has written the new certificate but not yet
the new key, that call fails half-way and leaves the context with the new certificate and no usable key, so every
handshake would fail until the next change. A separate context is either complete or not used.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from gateway.config.model import ListenerTLS
from gateway.config.tls import TLSFileError, check_pair, describe, file_stamp

log = logging.getLogger("strangler.tls")

CHECK_EVERY = 1.0   # seconds between two looks at the files (two stat calls)
ALPN = ["http/1.1"]

Stamp = tuple[tuple[int, int, int], ...]


def server_context(spec: ListenerTLS) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(spec.cert), str(spec.key))
    ctx.set_alpn_protocols(ALPN)
    return ctx


def _stamp(spec: ListenerTLS) -> Stamp:
    return file_stamp((spec.cert, spec.key))


class ListenerCertificates:
    """The listener's TLS context and the certificate currently served through it."""

    def __init__(self, spec: ListenerTLS) -> None:
        self.spec = spec
        self.current = server_context(spec)
        self.context = server_context(spec)
        self.context.sni_callback = self._select
        self.reloads = 0
        self._stamp = _stamp(spec)
        self._failed: Stamp | None = None

    def _select(self, sslobj: ssl.SSLObject, _name: str | None, ctx: ssl.SSLContext) -> None:
        current = self.current
        if ctx is not current:
            sslobj.context = current

    def refresh(self, spec: ListenerTLS | None = None) -> bool:
        """Re-read the files if they changed (or ``spec`` names others); True when a new certificate is served."""
        spec = spec or self.spec
        stamp = _stamp(spec)
        if stamp == self._stamp and spec == self.spec:
            return False
        if stamp == self._failed:
            return False   # already said why these files cannot be used; wait for the next change
        try:
            info = check_pair(spec.cert, spec.key)
            fresh = server_context(spec)
        except (TLSFileError, OSError, ssl.SSLError) as exc:
            self._failed = stamp
            log.error("listener certificate not reloaded, still serving the previous one: %s", exc,
                      extra={"event": "listener_tls_reload_failed"})
            return False
        self.current, self.spec, self._stamp, self._failed = fresh, spec, stamp, None
        self.reloads += 1
        log.info("listener certificate reloaded: %s", describe(info, "listener"),
                 extra={"event": "listener_tls_reloaded"})
        return True

    async def watch(self, spec: Callable[[], ListenerTLS | None], every: float = CHECK_EVERY) -> None:
        """Look at the files every ``every`` seconds (a stat call each: cheaper and more portable than inotify on
        two files, and it sees symlink swaps such as Kubernetes secret volumes make)."""
        while True:
            await asyncio.sleep(every)
            try:
                self.refresh(spec())
            except Exception:  # never let a bookkeeping error stop the watch
                log.exception("checking the listener certificate failed")
