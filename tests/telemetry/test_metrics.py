"""``GET /metrics``: Prometheus text format, parsed with prometheus-client's own parser."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support import admin_url, public_url, refused_port, serve_app
from tests.telemetry.services import TOKEN, Recorder, gateway_with_token, telemetry_routes


async def _scrape(s: aiohttp.ClientSession, url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    async with s.get(url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


async def test_requests_latency_shadow_reloads_and_states_are_exposed(tmp_path: Path) -> None:
    legacy, new = Recorder("legacy"), Recorder("reviews")
    async with serve_app(legacy.app) as lu, serve_app(new.app) as nu:
        body = f"""\
            backends:
              legacy: {{url: "{lu}"}}
              reviews: {{url: "{nu}"}}
              gone: {{url: "http://127.0.0.1:{refused_port()}", circuit: {{failures: 2, cooldown: 60s}}}}
            fallback: legacy
            routes:
              - name: reviews
                match: {{path: {{prefix: /reviews}}}}
                to: reviews
                stage: shadow
                shadow: {{methods: [GET], compare: {{noise: 0}}}}
                guard: {{window: 60s, min_requests: 1000, max_error_rate: 50%}}
              - name: gone
                match: {{path: {{prefix: /gone}}}}
                to: gone
                stage: extracted
            """
        path = telemetry_routes(tmp_path, body)
        async with gateway_with_token(path) as gw, aiohttp.ClientSession() as s:
            # A reload that works, then one that does not (a changed route starts its guard afresh, so first).
            path.write_text(path.read_text().replace("/reviews}", "/reviews/}"))
            async with s.post(f"{admin_url(gw)}/api/reload", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
            good = path.read_text()
            path.write_text(good + "bogus: 1\n")
            async with s.post(f"{admin_url(gw)}/api/reload", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 422
            path.write_text(good)
            for i in range(4):
                async with s.get(f"{public_url(gw)}/reviews/{i}") as r:
                    assert r.status == 200
            async with s.post(f"{public_url(gw)}/reviews/9", data=b"{}") as r:   # POST is not shadowed
                assert r.status == 200
            async with s.get(f"{public_url(gw)}/elsewhere") as r:
                assert r.status == 200
            async with s.get(f"{public_url(gw)}/bad%2Fpath") as r:
                assert r.status == 400
            for _ in range(2):   # two refused connections open the circuit of ``gone``
                async with s.get(f"{public_url(gw)}/gone") as r:
                    assert r.status == 502
            await gw.shadow.settle()
            m = await _scrape(s, admin_url(gw))
            (tmp_path / "other").mkdir()
            async with gateway_with_token(telemetry_routes(tmp_path / "other", body)) as other:
                fresh = await _scrape(s, admin_url(other))

    requests = "strangler_requests_total"
    assert _value(m, requests, route="reviews", stage="shadow", backend="legacy", status_class="2xx") == 5
    assert _value(m, requests, route="fallback", stage="legacy", backend="legacy", status_class="2xx") == 1
    assert _value(m, requests, route="none", stage="none", backend="none", status_class="4xx") == 1
    assert _value(m, requests, route="gone", stage="extracted", backend="gone", status_class="5xx") == 2
    assert _value(m, "strangler_request_duration_seconds_count", route="reviews") == 5
    assert _value(m, "strangler_request_duration_seconds_bucket", route="reviews", le="+Inf") == 5
    assert 0 < _value(m, "strangler_request_duration_seconds_sum", route="reviews") < 5
    assert _value(m, "strangler_upstream_duration_seconds_count", backend="legacy", purpose="primary") == 6
    assert _value(m, "strangler_upstream_duration_seconds_count", backend="reviews", purpose="shadow") == 4
    # The two services answer differently (served_by), so every comparison is a mismatch.
    assert _value(m, "strangler_shadow_verdicts_total", route="reviews", verdict="mismatch") == 4
    assert _value(m, "strangler_shadow_skipped_total", route="reviews", reason="method") == 1
    assert _value(m, "strangler_shadow_queue_depth") == 0
    assert _value(m, "strangler_dropped_total", store="comparisons") == 0
    assert _value(m, "strangler_dropped_total", store="traces") == 0
    # 4 comparisons, fewer than min_requests: the guard says inconclusive; ``gone`` refused twice: open.
    assert _value(m, "strangler_guard_state", route="reviews") == 1
    assert _value(m, "strangler_circuit_state", backend="gone") == 2
    assert _value(m, "strangler_route_rolled_back", route="reviews") == 0
    assert _value(m, "strangler_config_generation") == 2
    assert _value(m, "strangler_reloads_total", result="ok") == 1
    assert _value(m, "strangler_reloads_total", result="failed") == 1
    # Every gateway has its own registry: a second one starts from zero.
    assert requests not in fresh or not fresh[requests]
    assert _value(fresh, "strangler_config_generation") == 1


async def test_dropped_access_log_lines_are_counted(tmp_path: Path) -> None:
    """A log sink that stops taking lines (a stalled pipe, here a handler that blocks) fills the access log's queue;
    what it then refuses shows in ``strangler_dropped_total{store="access_log"}``."""
    import logging
    import threading

    from observability.logging import ACCESS_LOGGER

    release = threading.Event()

    class Stalled(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            release.wait(10)

    legacy = Recorder("legacy")
    logger = logging.getLogger(ACCESS_LOGGER)
    stalled, level = Stalled(), logger.level
    logger.addHandler(stalled)
    logger.setLevel(logging.INFO)
    try:
        async with serve_app(legacy.app) as lu:
            path = telemetry_routes(tmp_path, f"""\
                backends:
                  legacy: {{url: "{lu}"}}
                fallback: legacy
                """)
            async with gateway_with_token(path) as gw, aiohttp.ClientSession() as s:
                gw.access._limit = 5     # a small queue, so that a few requests fill it
                for _ in range(30):
                    async with s.get(f"{public_url(gw)}/x") as r:
                        assert r.status == 200
                m = await _scrape(s, admin_url(gw))
                dropped = gw.access.dropped
                release.set()
    finally:
        release.set()
        logger.removeHandler(stalled)
        logger.setLevel(level)
    # At most two queues-full got through: the batch the stalled writer took, and the queue behind it.
    assert dropped >= 30 - 2 * 5
    assert _value(m, "strangler_dropped_total", store="access_log") == dropped
