"""Certificates made at run time for the TLS tests (trustme): a CA the gateway is told to trust, another it is
not, server and client certificates written as PEM files, and the server contexts the loopback backends use."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import trustme


class Certs:
    """A trusted CA, an untrusted one, and files under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        self.ca_file = self.dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def leaf(self, name: str, *identities: str, ca: trustme.CA | None = None,
             not_after: dt.datetime | None = None) -> tuple[Path, Path, trustme.LeafCert]:
        """A certificate for ``identities`` (default 127.0.0.1 and localhost), written as NAME.pem and NAME.key."""
        cert = (ca or self.ca).issue_cert(*(identities or ("127.0.0.1", "localhost")), not_after=not_after)
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        write_pair(cert, cert_path, key_path)
        return cert_path, key_path, cert

    def server_context(self, *identities: str, ca: trustme.CA | None = None, client_ca: trustme.CA | None = None,
                       not_after: dt.datetime | None = None) -> ssl.SSLContext:
        """A backend's context; with ``client_ca`` it requires a client certificate signed by it (mutual TLS)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (ca or self.ca).issue_cert(*(identities or ("127.0.0.1", "localhost")),
                                   not_after=not_after).configure_cert(ctx)
        if client_ca is not None:
            client_ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the test CA (for talking to the gateway's HTTPS listener)."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


def write_pair(cert: trustme.LeafCert, cert_path: Path, key_path: Path) -> None:
    """Write a chain and key; through a temporary name and a rename, as renewal tools do."""
    for blob, path in ((b"".join(b.bytes() for b in cert.cert_chain_pems), cert_path),
                       (cert.private_key_pem.bytes(), key_path)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)


@contextlib.contextmanager
def refusing_server(ctx: ssl.SSLContext) -> Iterator[int]:
    """A TLS server on loopback that closes as nginx does when it refuses a client's certificate: it sends its alert,
    then reads what the client already sent before closing (lingering close), so the client reads the alert and not
    a reset. (An asyncio server aborts the connection without flushing the alert.) Yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(2)
            conn = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            with contextlib.suppress(OSError):
                conn.do_handshake()
                conn.recv(65536)   # under TLS 1.3 the refusal comes here, after the client's handshake ended
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_WR)
                for _ in range(100):
                    if not raw.recv(65536):
                        break
            raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
