"""TLS to backends: one client context per https:// backend, shared by its primary, shadow and WebSocket
connections, and the one function that turns a failed handshake into the gateway's error.

- **Always verified.** ``CERT_REQUIRED`` and host name checking, against ``tls.ca`` when given (only that CA, as
  nginx's ``proxy_ssl_trusted_certificate`` and Envoy's ``trusted_ca``), else the system CAs. There is no switch to
  skip verification: a backend that cannot be verified gets a 502 that says why, never an unverified exchange.
- **Session resumption.** asyncio's ``create_connection`` has no parameter for a TLS session, but its TLS
  transport (and uvloop's) opens every connection through ``SSLContext.wrap_bio``; ``ResumingContext`` passes the
  session of an earlier connection there, so a pool of keep-alive connections pays one full handshake, and the
  next connections an abbreviated one (RFC 8446 §2.2, RFC 5077).
- **Renewed files.** A changed CA bundle or client certificate on disk is picked up for new connections
  (``refresh``, looked at before opening one, at most once a second).
- **Failures, logged once.** A handshake failure is an ``UpstreamTLSError`` whose ``cause`` names the reason
  (unknown CA, name mismatch, expired, client certificate refused, ...); ``BackendTLSClient.report`` logs a cause
  the first time it is seen for the backend (and again only after a handshake succeeded in between), not once
  per request.
"""

from __future__ import annotations

import logging
import ssl
import time

from gateway.config.model import Backend, BackendTLS
from gateway.config.tls import file_stamp
from gateway.errors import UpstreamTLSError

log = logging.getLogger("strangler.tls")

ALPN = ["http/1.1"]
FILE_CHECK = 1.0      # seconds between two looks at a backend's certificate files (at a new connection only)
REFRESH = 300.0       # seconds before the remembered TLS session is replaced by a newer one (tickets live longer)   # the pool speaks HTTP/1.1; say so, so an h2-capable backend does not pick h2

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) -> the cause shown to the user.
_VERIFY_CAUSES = {
    2: "unknown CA",        # unable to get issuer certificate
    10: "certificate expired",
    9: "certificate not yet valid",
    18: "unknown CA",       # self-signed certificate
    19: "unknown CA",       # self-signed certificate in chain
    20: "unknown CA",       # unable to get local issuer certificate
    21: "unknown CA",       # unable to verify the first certificate
    23: "certificate revoked",
    62: "name mismatch",    # hostname mismatch
    64: "name mismatch",    # IP address mismatch
}

# TLS alerts the backend sends when it does not accept our client certificate (RFC 8446 §6.2).
_CLIENT_CERT_ALERTS = frozenset({
    "TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_CERTIFICATE_EXPIRED", "TLSV1_ALERT_ACCESS_DENIED",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE", "TLSV1_ALERT_DECRYPT_ERROR",
})


class ResumingContext(ssl.SSLContext):
    """A client context that offers the last remembered session on each new connection."""

    session: ssl.SSLSession | None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None
                 ) -> ssl.SSLObject:
        if session is None and not server_side:
            session = getattr(self, "session", None)
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def client_context(spec: BackendTLS) -> ResumingContext:
    """A verifying client context for one backend's ``tls`` settings; raises ``OSError``/``ssl.SSLError`` on files
    that cannot be loaded (the config load has checked them already)."""
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)   # CERT_REQUIRED and check_hostname by default
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.session = None
    if spec.ca is not None:
        ctx.load_verify_locations(cafile=str(spec.ca))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if spec.cert is not None and spec.key is not None:
        ctx.load_cert_chain(str(spec.cert), str(spec.key))
    ctx.set_alpn_protocols(ALPN)
    return ctx


def cause_of(exc: BaseException) -> str:
    """Why a TLS exchange failed, in the user's words."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_CAUSES.get(exc.verify_code, "certificate rejected")
    reason = getattr(exc, "reason", None) or ""
    if reason in _CLIENT_CERT_ALERTS:
        return "client certificate refused"
    if reason in ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return "not TLS"   # typically plain HTTP on the port
    if reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"):
        return "no common TLS version"
    return "handshake failed"


def handshake_error(exc: BaseException, backend: Backend, *, request_sent: bool = False
                    ) -> UpstreamTLSError:
    """The one translation of a TLS failure (``ssl.SSLError`` from the handshake, or the backend's alert right
    after it) into the gateway's error tree. Before the request was written it may be retried elsewhere as is;
    after (``request_sent``: the TLS 1.3 client-certificate alert) only if it had no body to consume."""
    cause = cause_of(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or str(exc)
    else:
        why = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    name = _server_name(backend)
    return UpstreamTLSError(f"{backend.name}: TLS with {name}:{backend.port} failed: {cause} ({why})",
                            cause=cause, backend=backend.name, retryable=not request_sent)


def _server_name(backend: Backend) -> str:
    tls = backend.tls
    return (tls.server_name if tls is not None and tls.server_name else None) or backend.host


class BackendTLSClient:
    """Everything TLS about one backend: its context, the name it is verified as, the remembered session, the
    handshake counters and the causes already logged."""

    def __init__(self, backend: Backend) -> None:
        assert backend.tls is not None
        self.backend = backend
        self.context = client_context(backend.tls)
        self.server_name = _server_name(backend)
        self._files = (backend.tls.ca, backend.tls.cert, backend.tls.key)
        self._stamp = file_stamp(self._files)
        self._checked_at = time.monotonic()
        self._failed_stamp: object = None
        self.handshakes = 0
        self.resumed = 0
        self.failures: dict[str, int] = {}   # cause -> failed handshakes (for /metrics)
        self._want_session = True
        self._taken_at = 0.0
        self._logged: set[str] = set()

    def connect_args(self) -> dict[str, object]:
        """Keyword arguments for ``loop.create_connection`` / ``asyncio.open_connection``."""
        return {"ssl": self.context, "server_hostname": self.server_name}

    def refresh(self) -> None:
        """Before a new connection: if the CA or client certificate files changed on disk (a renewed client
        certificate, a rotated CA bundle), new connections use a context built from the new files. At most one
        look (three ``stat`` calls) per ``FILE_CHECK`` seconds; connections already open keep their certificate."""
        now = time.monotonic()
        if now - self._checked_at < FILE_CHECK:
            return
        self._checked_at = now
        stamp = file_stamp(self._files)
        if stamp == self._stamp or stamp == self._failed_stamp:
            return
        assert self.backend.tls is not None
        try:
            fresh = client_context(self.backend.tls)
        except (OSError, ValueError) as exc:   # ssl.SSLError is an OSError
            self._failed_stamp = stamp
            log.error("backend %s: TLS files changed but cannot be loaded, keeping the previous ones: %s",
                      self.backend.name, exc, extra={"event": "backend_tls_reload_failed"})
            return
        self.context, self._stamp, self._want_session = fresh, stamp, True
        log.info("backend %s: TLS files changed on disk; new connections use them", self.backend.name,
                 extra={"event": "backend_tls_reloaded"})

    def connected(self, sslobj: ssl.SSLObject | None) -> None:
        """A handshake succeeded: count it. A full (not resumed) handshake means the remembered session is
        missing or no longer accepted, so the next ``remember`` takes this connection's."""
        self.handshakes += 1
        if sslobj is not None and sslobj.session_reused:
            self.resumed += 1
        else:
            self._want_session = True
        if self._logged:
            log.info("backend %s: TLS handshake succeeded again", self.backend.name)
            self._logged.clear()

    def remember(self, sslobj: ssl.SSLObject | None) -> None:
        """Keep this connection's session for the next ones, if one is wanted. Called once a response was read:
        under TLS 1.3 the session ticket arrives after the handshake. Reading ``SSLObject.session`` costs a copy
        of the session (CPython serialises and parses it back, a few hundred microseconds), so it is read only
        when there is none yet, the last handshake was a full one, or the kept one is ``REFRESH`` seconds old."""
        if sslobj is None or not (self._want_session or time.monotonic() - self._taken_at > REFRESH):
            return
        if sslobj.context is not self.context:
            return   # opened before the files were re-read: its session belongs to the previous context
        session = sslobj.session
        # A TLS 1.3 session is worth keeping only once its ticket has arrived; a TLS 1.2 one at once.
        if session is not None and (session.has_ticket or sslobj.version() != "TLSv1.3"):
            self.context.session = session
            self._want_session = False
            self._taken_at = time.monotonic()

    def report(self, error: UpstreamTLSError) -> UpstreamTLSError:
        """Count a failure, and log it once per cause until a handshake succeeds again; returns the error."""
        self.failures[error.cause] = self.failures.get(error.cause, 0) + 1
        if error.cause not in self._logged:
            self._logged.add(error.cause)
            log.error("%s; requests to it get 502 until this is fixed (logged once per cause)", error.detail,
                      extra={"event": "backend_tls_failed", "backend": self.backend.name, "cause": error.cause})
        return error
