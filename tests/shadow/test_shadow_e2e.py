"""End to end: the real monolith and the real extracted reviews service behind the gateway in stage shadow. The
deliberate difference (reviews rounds `average` to one decimal) must show up as a mismatch on `$.average`, and
the noisy `generated_at` as learned noise, both in `/api/report` and through the `strangler` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import extracted.reviews
from legacy_app.app import create_app as create_legacy_app
from legacy_app.db import ensure_database
from tests.shadow.services import admin_json, report_for, routes_yaml, serve_cancelling
from tests.support import public_url, run_gateway

REPO_ROOT = Path(__file__).resolve().parents[2]

REVIEWS = """\
- name: reviews
  match:
    path: {template: "/api/products/{id}/reviews"}
    methods: [GET, POST]
  to: new
  stage: shadow
  shadow:
    percent: 100
    timeout: 2s
    compare:
      ignore: ["header:Date"]
      unordered: [{path: "$.items", by: id}]
      tolerance: 0.0001
      noise: 10%
"""


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "legacy.db"
    ensure_database(path)
    return path


async def _cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "COLUMNS": "140", "NO_COLOR": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", *args, cwd=REPO_ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_rounding_mismatch_is_found_and_generated_at_is_learned_noise(seeded: Path,
                                                                              tmp_path: Path) -> None:
    legacy_db = tmp_path / "legacy.db"
    shutil.copyfile(seeded, legacy_db)
    reviews_db = tmp_path / "reviews.db"
    extracted.reviews.migrate(legacy_db, reviews_db)
    async with serve_cancelling(create_legacy_app(str(legacy_db))) as lu, serve_cancelling(
            extracted.reviews.create_app(str(reviews_db))) as nu:
        async with run_gateway(routes_yaml(tmp_path, lu, nu, REVIEWS)) as gw, aiohttp.ClientSession() as s:
            for product in range(1, 31):
                async with s.get(f"{public_url(gw)}/api/products/{product}/reviews") as r:
                    assert r.status == 200
                    assert r.headers["X-Served-By"] == "legacy"
            await gw.shadow.settle()
            report = await report_for(gw, "reviews")
            host, port = gw.bound["admin"]
            code, out, err = await _cli("report", "--json", "--admin", f"{host}:{port}")
            assert code == 0, err
            cli_report = json.loads(out)
            mismatch = next(d for d in await admin_json(gw, "GET", "/api/diffs?route=reviews&verdict=mismatch"))
            code, diff_text, err = await _cli("diff", str(mismatch["id"]), "--admin", f"{host}:{port}")
            assert code == 0, err
            code, report_text, err = await _cli("report", "--admin", f"{host}:{port}")
            assert code == 0, err

    for rep in (report, next(r for r in cli_report["routes"] if r["route"] == "reviews")):
        _assert_findings(rep)
    # The human renderings name the same findings.
    assert "$.average" in report_text and "$.generated_at" in report_text
    assert "average" in diff_text and "legacy" in diff_text and "mismatch" in diff_text


def _assert_findings(rep: dict[str, Any]) -> None:
    assert rep["compared"] == 30
    assert rep["verdicts"].get("mismatch", 0) >= 20  # most products have an average one decimal cannot hold
    fields = {f["field"]: f for f in rep["fields"]}
    assert fields["$.average"]["count"] == rep["verdicts"]["mismatch"]
    # Nothing else differs for real; generated_at may count once: the first comparison runs before two
    # disagreements of legacy with itself make it noise.
    assert {f for f, v in fields.items() if v["count"]} - {"$.generated_at"} == {"$.average"}
    noise = {n["field"]: n for n in rep["noise"]}
    assert noise["$.generated_at"]["learned"] is True
    assert noise["$.generated_at"]["rate"] == 100.0
    assert not [n for n in noise.values() if n["learned"] and n["field"] != "$.generated_at"]
    assert fields.get("$.generated_at", {"count": 0})["count"] <= 1
    assert fields["$.generated_at"]["ignored"] >= 29
    assert rep["compared_latency"]["legacy"]["requests"] == 30
    assert rep["compared_latency"]["extracted"]["p50_ms"] > 0
