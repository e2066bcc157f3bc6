"""Talking to a running gateway: its admin API, found from routes.yaml, and the CLI's one error type.

Commands that talk to a running gateway use its admin API, at the address from routes.yaml or ``--admin``, with
the token from ``STRANGLER_ADMIN_TOKEN`` or the token file the gateway wrote beside routes.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gateway.cli.render import terminal_safe
from gateway.config.parse import ConfigError, load


class CLIError(Exception):
    """A user-facing failure: printed without a traceback, exit code 1 (or ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class AdminClient:
    def __init__(self, base: str, token: str | None, terminal: bool = False) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.terminal = terminal   # answers are drawn for people: control characters escaped (render.safe)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, Any] | None = None) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:   # reads too: the gateway may have admin.read_token set
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                data = json.loads(resp.read() or b"null")
                return terminal_safe(data) if self.terminal else data
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("detail", detail)
            except (ValueError, AttributeError):
                pass
            raise CLIError(f"the gateway answered {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CLIError(f"cannot reach the gateway's admin API at {self.base} ({reason}). Is `strangler up` "
                           f"running? (use --admin HOST:PORT or -c FILE to point at it)") from exc


def admin_client(args: argparse.Namespace) -> AdminClient:
    cfg = None
    path = Path(args.config)
    if path.exists():
        try:
            cfg = load(path)
        except ConfigError:
            cfg = None  # the running gateway may still be serving its last good table
    admin = args.admin or (f"{cfg.admin_listen[0]}:{cfg.admin_listen[1]}" if cfg else None)
    if admin is None:
        admin = _admin_from_raw(path) or "127.0.0.1:9901"
    token = os.environ.get("STRANGLER_ADMIN_TOKEN")
    if not token:
        store = cfg.store.dir if cfg else path.resolve().parent / ".strangler"
        try:
            token = (store / "admin.token").read_text().strip()
        except OSError:
            token = None
    base = admin if admin.startswith("http") else f"http://{admin}"
    return AdminClient(base, token, terminal=not getattr(args, "json", False))


def _admin_from_raw(path: Path) -> str | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
        return str(data["admin"]["listen"])
    except Exception:  # noqa: BLE001 - best effort for a broken file
        return None
