"""Bringing your own service (docs/services.md): the example inventory service does what a new service must, and
`strangler demo` starts the services listed in services.yaml beside routes.yaml, so the user's own service runs,
is shadowed and traced with the demo."""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp

from examples.inventory_service import create_app
from legacy_app.db import ensure_database
from tests.support import free_port, process, serve_app, wait_http

ROOT = Path(__file__).resolve().parents[2]


async def test_the_example_service_honours_shadow_idempotency_and_sets_served_by(tmp_path: Path) -> None:
    legacy_db = tmp_path / "legacy.db"
    ensure_database(legacy_db)
    async with serve_app(create_app(str(legacy_db))) as base, aiohttp.ClientSession() as s:
        async with s.get(base + "/api/inventory/3") as resp:
            assert resp.status == 200 and resp.headers["X-Served-By"] == "inventory"
            before = (await resp.json())["stock"]
        # A shadow copy answers as if, and changes nothing.
        async with s.post(base + "/api/inventory/3", json={"quantity": 2}, headers={"X-Shadow": "1"}) as resp:
            assert (await resp.json())["stock"] == before - 2
        async with s.get(base + "/api/inventory/3") as resp:
            assert (await resp.json())["stock"] == before
        # A write retried with the same Idempotency-Key is applied once, and answered the same.
        for _ in range(2):
            async with s.post(base + "/api/inventory/3", json={"quantity": 1},
                              headers={"Idempotency-Key": "k1", "X-Strangler-Sync": "1"}) as resp:
                assert (await resp.json())["stock"] == before - 1
        async with s.get(base + "/api/inventory/3") as resp:
            assert (await resp.json())["stock"] == before - 1
        async with s.get(base + "/api/inventory/99999") as resp:
            assert resp.status == 404 and resp.headers["X-Served-By"] == "inventory"


def _get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_demo_starts_the_services_of_services_yaml_and_they_are_shadowed_and_traced(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("public", "admin", "legacy", "reviews", "likes", "inventory")}
    shutil.copy(ROOT / "examples" / "inventory_service.py", tmp_path / "inventory_service.py")
    (tmp_path / "routes.yaml").write_text(f"""\
version: 1
listen: 127.0.0.1:{ports['public']}
admin: {{listen: 127.0.0.1:{ports['admin']}}}
store: {{dir: store}}
backends:
  legacy: {{url: "http://127.0.0.1:{ports['legacy']}"}}
  reviews: {{url: "http://127.0.0.1:{ports['reviews']}"}}
  likes: {{url: "http://127.0.0.1:{ports['likes']}"}}
  inventory: {{url: "http://127.0.0.1:{ports['inventory']}"}}
fallback: legacy
routes:
  - name: inventory
    match: {{path: {{template: "/api/inventory/{{id}}"}}}}
    to: inventory
    stage: shadow
""")
    (tmp_path / "services.yaml").write_text(
        'inventory:\n  run: [python, inventory_service.py, --port, "{port}", --legacy-db, "{data}/legacy.db"]\n')
    admin = f"http://127.0.0.1:{ports['admin']}"
    with process([sys.executable, "-m", "gateway", "demo"], tmp_path / "demo.log", cwd=tmp_path):
        wait_http(admin + "/readyz", timeout=60)
        log = (tmp_path / "demo.log").read_text()
        assert "started from" in log and "inventory" in log, log
        status, headers, _ = _get(f"http://127.0.0.1:{ports['public']}/api/inventory/3")
        assert status == 200 and headers["X-Served-By"] == "legacy"
        trace_id = headers["X-Trace-Id"]
        deadline = time.monotonic() + 20
        trace: dict = {}
        while time.monotonic() < deadline:      # the service exports its spans about once a second
            status, _, body = _get(f"{admin}/api/traces/{trace_id}")
            if status == 200:
                trace = json.loads(body)
                if "inventory" in {s["service"] for s in trace["spans"]} and trace["comparisons"]:
                    break
            time.sleep(0.2)
        assert "inventory" in {s["service"] for s in trace.get("spans", [])}, trace
        comparison = trace["comparisons"][0]
        _, _, body = _get(f"{admin}/api/diffs/{comparison['id']}")
        sample = json.loads(body)
        assert sample["shadow"]["backend"] == "inventory" and sample["shadow"]["status"] == 200

        # The demo's terminal says when an edit took effect (not only warnings and errors).
        config = tmp_path / "routes.yaml"
        config.write_text(config.read_text().replace("stage: shadow", "stage: legacy"))
        deadline = time.monotonic() + 20
        while "config reloaded: generation 2" not in (tmp_path / "demo.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "demo.log").read_text()
            time.sleep(0.1)


def test_demo_refuses_a_services_yaml_naming_an_unknown_backend(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("public", "admin", "legacy")}
    (tmp_path / "routes.yaml").write_text(f"""\
version: 1
listen: 127.0.0.1:{ports['public']}
admin: {{listen: 127.0.0.1:{ports['admin']}}}
store: {{dir: store}}
backends:
  legacy: {{url: "http://127.0.0.1:{ports['legacy']}"}}
fallback: legacy
routes: []
""")
    (tmp_path / "services.yaml").write_text("inventry:\n  run: [python, x.py]\n")
    import subprocess

    out = subprocess.run([sys.executable, "-m", "gateway", "demo"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "services.yaml: inventry: no backend 'inventry'" in out.stderr, out.stderr
