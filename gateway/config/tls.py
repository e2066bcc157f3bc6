"""The `tls:` blocks of routes.yaml: build them into ``BackendTLS`` / ``ListenerTLS`` and check the files they name
at load time, so that ``strangler check``, start-up and every reload refuse the same broken files.

A certificate file must be readable PEM with at least one certificate; a key file readable, unencrypted PEM whose
public half matches the first (leaf) certificate; the leaf must be valid now. A certificate that expires within
``EXPIRY_WARNING_DAYS`` is a warning. ``describe`` gives the one line per file that ``strangler check`` prints
(subject, expiry, days left).

Parsing uses ``cryptography`` (the stdlib ``ssl`` module can load a chain into a context but cannot say what is
in it, nor when it expires, without a private CPython helper).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.config.model import BackendTLS, ListenerTLS
from gateway.config.schema import Issues, KeyPath

EXPIRY_WARNING_DAYS = 14


class TLSFileError(ValueError):
    """A certificate or key file that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    path: Path
    subject: str
    not_after: dt.datetime
    count: int                 # certificates in the file (the chain, or a CA bundle)

    def days_left(self, now: dt.datetime | None = None) -> int:
        now = now or dt.datetime.now(dt.UTC)
        return (self.not_after - now).days


def read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TLSFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TLSFileError(f"{path} holds no PEM certificate ({exc})") from exc
    return certs


def _info(path: Path, certs: list[x509.Certificate]) -> CertInfo:
    leaf = certs[0]
    return CertInfo(path, leaf.subject.rfc4514_string() or "(empty subject)", leaf.not_valid_after_utc, len(certs))


def check_pair(cert: Path, key: Path, now: dt.datetime | None = None) -> CertInfo:
    """A certificate chain and its key, ready to serve or to present; raises ``TLSFileError``."""
    certs = read_certificates(cert)
    try:
        key_data = key.read_bytes()
    except OSError as exc:
        raise TLSFileError(f"cannot read {key}: {exc.strerror or exc}") from exc
    try:
        private = serialization.load_pem_private_key(key_data, password=None)
    except TypeError as exc:
        raise TLSFileError(f"{key} is encrypted; the gateway needs an unencrypted key") from exc
    except (ValueError, serialization.UnsupportedAlgorithm) as exc:
        raise TLSFileError(f"{key} holds no PEM private key ({exc})") from exc
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, spki) != certs[0].public_key().public_bytes(der, spki):
        raise TLSFileError(f"{key} is not the key of the certificate in {cert}")
    _check_dates(cert, certs[0], now)
    return _info(cert, certs)


def check_ca(path: Path, now: dt.datetime | None = None) -> CertInfo:
    certs = read_certificates(path)
    if all(c.not_valid_after_utc <= (now or dt.datetime.now(dt.UTC)) for c in certs):
        raise TLSFileError(f"every certificate in {path} has expired")
    return _info(path, certs)


def _check_dates(path: Path, cert: x509.Certificate, now: dt.datetime | None) -> None:
    now = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc <= now:
        raise TLSFileError(f"the certificate in {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now:
        raise TLSFileError(f"the certificate in {path} is not valid before "
                           f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")


def file_stamp(paths: tuple[Path | None, ...]) -> tuple[tuple[int, int, int], ...]:
    """What changes when any of ``paths`` is rewritten, replaced by a rename, or re-pointed by a symlink swap (as
    Kubernetes secret volumes do): inode, modification time and size of each (zeros for one that is missing)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path) if path is not None else None
        except OSError:
            st = None
        out.append((st.st_ino, st.st_mtime_ns, st.st_size) if st is not None else (0, 0, 0))
    return tuple(out)


def describe(info: CertInfo, role: str) -> str:
    """One line for ``strangler check``: what the file holds and how long it has left."""
    return (f"tls: {role}: {info.path}: {info.subject}, expires {info.not_after:%Y-%m-%d} "
            f"({info.days_left()} days left)")


# --------------------------------------------------------------------------------------------------------------
# Builders (called by gateway.config.parse)
# --------------------------------------------------------------------------------------------------------------


def _resolve(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _expiry_warning(info: CertInfo, where: KeyPath, issues: Issues) -> None:
    left = info.days_left()
    if left < EXPIRY_WARNING_DAYS:
        issues.warn(where, f"the certificate in {info.path} expires in {left} day(s), on {info.not_after:%Y-%m-%d}")


def backend_tls(v: dict[str, Any] | None, scheme: str, base: Path, where: KeyPath, issues: Issues
                ) -> BackendTLS | None:
    """``BackendTLS`` for an https:// backend (verification against the system CAs when there is no block)."""
    if scheme != "https":
        if v is not None:
            issues.error(where + ("tls",), "`tls` applies to https:// backends only; this URL is http://")
        return None
    if v is None:
        return BackendTLS()
    tls = BackendTLS(
        ca=_resolve(v["ca"], base) if v["ca"] else None,
        cert=_resolve(v["cert"], base) if v["cert"] else None,
        key=_resolve(v["key"], base) if v["key"] else None,
        server_name=v["server_name"],
    )
    if (tls.cert is None) != (tls.key is None):
        missing = "key" if tls.key is None else "cert"
        issues.error(where + ("tls", missing), f"a client certificate needs both `cert` and `key`; `{missing}` is "
                                               "missing")
        return tls
    try:
        if tls.ca is not None:
            check_ca(tls.ca)
    except TLSFileError as exc:
        issues.error(where + ("tls", "ca"), str(exc))
    if tls.cert is not None and tls.key is not None:
        try:
            _expiry_warning(check_pair(tls.cert, tls.key), where + ("tls", "cert"), issues)
        except TLSFileError as exc:
            issues.error(where + ("tls", "cert"), str(exc))
    return tls


def listener_tls(v: dict[str, Any] | None, base: Path, issues: Issues) -> ListenerTLS | None:
    if v is None:
        return None
    tls = ListenerTLS(cert=_resolve(v["cert"], base), key=_resolve(v["key"], base))
    try:
        _expiry_warning(check_pair(tls.cert, tls.key), ("tls", "cert"), issues)
    except TLSFileError as exc:
        issues.error(("tls", "cert"), str(exc))
    return tls


def tls_files(backends: dict[str, Any], listener: ListenerTLS | None) -> list[str]:
    """``describe`` lines for every certificate file the configuration names (files that cannot be read are
    left out: the load already reported them)."""
    lines = []
    items: list[tuple[str, Path | None, Path | None]] = []
    if listener is not None:
        items.append(("listener", listener.cert, listener.key))
    for name, b in backends.items():
        if b.tls is not None:
            items.append((f"backend {name} ca", b.tls.ca, None))
            items.append((f"backend {name} client certificate", b.tls.cert, b.tls.key))
    for role, cert, key in items:
        if cert is None:
            continue
        try:
            info = check_pair(cert, key) if key is not None else check_ca(cert)
        except TLSFileError:
            continue
        lines.append(describe(info, role))
    return lines
