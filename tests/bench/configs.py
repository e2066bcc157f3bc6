"""What the proxies under test are told: the gateway's routes.yaml and nginx's configuration.

Route tables for the table-size scenarios are generated: route ``i`` is, by ``i % 3``, a template
(``/api/svc{i}/items/{id}/detail``), an exact path (``/api/svc{i}/items``) or a prefix (``/api/svc{i}/area``).
The measured request hits the last template route in file order (``table_path``), so a linear scan would pay for
the whole table on every request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MEASURED_PATH = "/api/products/42"


@dataclass
class GatewaySetup:
    """One gateway configuration of a scenario (a variant)."""

    routes: str = ""                     # the ``routes:`` list, YAML text, already indented
    extra_backends: dict[str, int] = field(default_factory=dict)   # name -> port
    tracing_sample: float | None = None  # None: the default (tracing on, 100%)
    workers: int = 1                     # strangler up --workers
    src: Path | None = None              # run the gateway package found in this checkout (--baseline-src)
    legacy_ca: Path | None = None        # the legacy backend speaks HTTPS with a certificate from this CA
    env: dict[str, str] = field(default_factory=dict)   # added to the gateway's environment (a store URL)


def gateway_yaml(setup: GatewaySetup, *, listen: int, admin: int, backend: int, store: Path) -> str:
    lines = [
        "version: 1",
        f"listen: 127.0.0.1:{listen}",
        f"admin: {{listen: 127.0.0.1:{admin}}}",
        "backends:",
        f"  legacy: {{url: http://127.0.0.1:{backend}}}" if setup.legacy_ca is None else
        f"  legacy: {{url: https://127.0.0.1:{backend}, tls: {{ca: {setup.legacy_ca}}}}}",
    ]
    for name, port in setup.extra_backends.items():
        lines.append(f"  {name}: {{url: http://127.0.0.1:{port}, timeouts: {{connect: 1s, response: 5s}}}}")
    lines.append("fallback: legacy")
    if setup.tracing_sample is not None:
        lines.append(f"tracing: {{sample: {setup.tracing_sample:g}}}")
    lines.append(f"store: {{dir: {store}}}")
    lines.append("routes:" + ("\n" + setup.routes if setup.routes.strip() else " []"))
    return "\n".join(lines) + "\n"


def table_routes(n: int, variant: int = 0) -> str:
    """``n`` generated routes, all to legacy. ``variant`` changes one route (the reload scenario alternates it)
    without touching the measured one."""
    out: list[str] = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            path = f'{{template: "/api/svc{i}/items/{{id}}/detail"}}'
        elif kind == 1:
            path = f"{{exact: /api/svc{i}/items{'-v2' if i == 1 and variant % 2 else ''}}}"
        else:
            path = f"{{prefix: /api/svc{i}/area}}"
        methods = ", methods: [GET, HEAD]" if i % 7 == 3 else ""
        out.append(f"  - name: r{i}\n    match: {{path: {path}{methods}}}\n    stage: legacy")
    return "\n".join(out)


def table_path(n: int) -> str:
    """The request path of the table scenarios: the last template route of a table of ``n``."""
    last_template = max(i for i in range(n) if i % 3 == 0)
    return f"/api/svc{last_template}/items/42/detail"


def staged_route(stage: str, to: str | None, *, shadow_percent: float = 100.0, canary_weight: float = 50.0) -> str:
    """One route on ``/api/products/{id}`` in the given stage."""
    text = ('  - name: products\n    match: {path: {template: "/api/products/{id}"}}\n'
            f"    stage: {stage}\n")
    if to is not None:
        text += f"    to: {to}\n"
    if stage == "shadow":
        text += f"    shadow: {{percent: {shadow_percent:g}, timeout: 2s}}\n"
    if stage == "canary":
        text += f"    canary: {{weight: {canary_weight:g}}}\n"
    return text.rstrip("\n")


def admission_route(admission: str | None) -> str:
    """The measured route on ``/api/products/{id}``, to legacy, with this ``admission:`` block (or none)."""
    text = '  - name: products\n    match: {path: {template: "/api/products/{id}"}}\n    stage: legacy'
    return text + (f"\n    admission: {admission}" if admission else "")


def write_atomically(path: Path, text: str) -> None:
    """Write beside ``path`` and rename over it, as deploy tools do (the watcher sees one complete file)."""
    tmp = path.parent.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def nginx_conf(workdir: Path, *, listen: int, backend: int) -> str:
    """nginx as the reference: one worker, upstream keep-alive; bodies stream through bounded memory buffers and
    never go to a temp file (request buffering off, no temp file for responses), so a 1 GiB transfer streams."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{listen} backlog=1024;
        client_max_body_size 0;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # Response: buffered in memory only, never spilled to a temp file (a 1 GiB answer streams).
            proxy_max_temp_file_size 0;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_busy_buffers_size 128k;
            proxy_request_buffering off;
        }}
    }}
}}
"""
