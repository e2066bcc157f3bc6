"""The benchmark harness itself works: a one-second pass-through run through nginx, the naive proxy and the
gateway produces numbers for each, and a missing tool is reported with the way to install it.

The benchmark's figures are not asserted here (too noisy for a test); only that the harness measures something.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_passthrough_run_measures_every_proxy(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--scenario", "passthrough", "--duration", "1", "--warmup", "0",
         "--connections", "4", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
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


def test_missing_wrk_says_how_to_install_it(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "tests.bench", "--scenario", "passthrough"], cwd=REPO,
                          capture_output=True, text=True, timeout=30, env={"PATH": str(tmp_path)})
    assert proc.returncode != 0
    assert "apt-get install nginx-light wrk" in proc.stderr
