"""The benchmark harness itself works: a one-second pass-through run through nginx, the naive proxy and the
gateway produces numbers for each, a one-second paced run offers nginx and the gateway the same load, a
one-second floor run measures aiohttp's listener, the bare relay and the gateway, and a missing tool is reported
with the way to install it.

The benchmark's figures are not asserted here (too noisy for a test); only that the harness measures something.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bench(tmp_path: Path, scenario: str, *more: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """A one-second run of ``scenario`` on 4 connections, and the results it wrote."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--scenario", scenario, "--duration", "1", "--warmup", "0",
         "--connections", "4", *more, "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=100)
    assert out.exists(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def test_passthrough_run_measures_every_proxy(tmp_path: Path) -> None:
    proc, results = bench(tmp_path, "passthrough")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results["ok"] is True
    rows = {r["proxy"]: r for r in results["rows"] if r["scenario"] == "passthrough"}
    assert set(rows) == {"nginx", "naive", "gateway"}
    for name, row in rows.items():
        assert row["requests"] > 0 and row["rps"] > 0, name
        assert row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"], name
        assert row["cpu_us_per_request"] > 0, name
        assert row["failures"] == 0, name
    assert any(line.startswith("passthrough: gateway/nginx") for line in results["ratios"])
    assert "gateway" in proc.stdout and "CPU us/req" in proc.stdout


def test_paced_run_offers_nginx_and_the_gateway_the_same_load(tmp_path: Path) -> None:
    proc, results = bench(tmp_path, "paced", "--repeat", "1")
    # Whether a busy machine let both proxies reach the offered rate is a measurement, not the harness working.
    failed = [c for c in results["checks"] if not c["ok"] and "achieved the offered rate" not in c["what"]]
    assert not failed, proc.stdout + proc.stderr
    rows = {r["proxy"]: r for r in results["rows"] if r["scenario"] == "paced"}
    assert set(rows) == {"nginx", "gateway"}
    assert rows["nginx"]["rate"] == rows["gateway"]["rate"] > 0
    for name, row in rows.items():
        assert row["requests"] > 0 and row["failures"] == 0, name
        assert row["p99_ms"] >= row["p50_ms"] > 0, name
    assert [t["scenario"] for t in results["targets"]] == ["paced"]
    assert "gateway p99 <= 1.5x nginx's" in proc.stdout


def test_floor_run_measures_each_layer_and_notes_their_costs(tmp_path: Path) -> None:
    proc, results = bench(tmp_path, "floor", "--repeat", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {(r["proxy"], r["variant"]): r for r in results["rows"] if r["scenario"] == "floor"}
    assert set(rows) == {("nginx", ""), ("aiohttp", "listener"), ("aiohttp", "relay"), ("gateway", "")}
    for name, row in rows.items():
        assert row["requests"] > 0 and row["failures"] == 0 and row["cpu_us_per_request"] > 0, name
    assert all(c["ok"] for c in results["checks"]), results["checks"]   # every layer answered the exact body
    notes = [n for n in results["notes"] if n.startswith("floor: CPU per request: aiohttp's listener")]
    assert len(notes) == 1 and "the gateway's features" in notes[0]


def test_missing_wrk_says_how_to_install_it(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "tests.bench", "--scenario", "passthrough"], cwd=REPO,
                          capture_output=True, text=True, timeout=30, env={"PATH": str(tmp_path)})
    assert proc.returncode != 0
    assert "apt-get install nginx-light wrk" in proc.stderr
