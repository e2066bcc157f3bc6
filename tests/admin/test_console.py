"""The web console in a real browser: headless Chromium driven by Playwright, against a running gateway in front of
the real monolith and extracted services, with real traffic through it.

The services and the gateway run on their own event loop in a background thread (``Stack``), so the tests use
Playwright's sync API on the main thread. Each page is saved as a screenshot in tests/admin/artifacts/ for a reviewer.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import sync_playwright

import extracted.likes
import extracted.reviews
from gateway.config.parse import load
from gateway.runtime.gateway import Gateway
from legacy_app.app import create_app as create_legacy_app
from legacy_app.db import ensure_database
from tests.support import CHROMIUM, CHROMIUM_ARGS

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CONSOLE_DIR = Path(__file__).resolve().parents[2] / "gateway" / "admin" / "console"
XSS_TEXT = '<img src=x onerror="window.__pwned=1"> great'
TIMEOUT_MS = 10_000

ROUTES_YAML = """\
version: 1
listen: 127.0.0.1:0
admin: {{listen: 127.0.0.1:0}}
backends:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  reviews: {{url: "http://127.0.0.1:{reviews}"}}
  likes: {{url: "http://127.0.0.1:{likes}"}}
fallback: legacy
routes:
  - name: reviews
    match:
      path: {{template: "/api/products/{{id}}/reviews"}}
      methods: [GET, POST]
    to: reviews
    stage: shadow
    shadow:
      compare:
        ignore: ["header:Date", "$.generated_at"]
        unordered: [{{path: "$.items", by: id}}]
  - name: likes
    match: {{path: {{prefix: /api/likes}}}}
    to: likes
    stage: canary
    canary:
      weight: 50
      sticky: {{header: X-User-Id}}
    sync: {{}}
  - name: search
    match: {{path: {{exact: /api/search}}, methods: [GET]}}
    stage: legacy
"""


class Stack:
    """legacy_app, the reviews and likes services and the gateway, on one event loop in a background thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="console-stack", daemon=True)
        self.runners: list[web.AppRunner] = []
        self.gateway: Gateway | None = None

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.call(self._start())

    async def _serve(self, app: web.Application) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner.addresses[0][1]

    async def _start(self) -> None:
        legacy_db = self.root / "legacy.db"
        ensure_database(legacy_db)
        extracted.reviews.migrate(legacy_db, self.root / "reviews.db")
        extracted.likes.migrate(legacy_db, self.root / "likes.db")
        ports = {
            "legacy": await self._serve(create_legacy_app(str(legacy_db))),
            "reviews": await self._serve(extracted.reviews.create_app(str(self.root / "reviews.db"))),
            "likes": await self._serve(extracted.likes.create_app(str(self.root / "likes.db"))),
        }
        path = self.root / "routes.yaml"
        path.write_text(ROUTES_YAML.format(**ports))
        self.gateway = Gateway(load(path))
        await self.gateway.start()

    def stop(self) -> None:
        async def _stop() -> None:
            if self.gateway is not None:
                await self.gateway.stop()
            for runner in reversed(self.runners):
                await runner.cleanup()

        try:
            self.call(_stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    @property
    def gw(self) -> Gateway:
        assert self.gateway is not None
        return self.gateway

    @property
    def public(self) -> str:
        host, port = self.gw.bound["public"]
        return f"http://{host}:{port}"

    @property
    def admin(self) -> str:
        host, port = self.gw.bound["admin"]
        return f"http://{host}:{port}"

    def settle(self) -> None:
        """Wait until every shadow comparison sent so far is stored."""
        self.call(self.gw.shadow.settle())


def http(url: str, *, method: str = "GET", body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={**(headers or {}),
                                 **({"Content-Type": "application/json"} if data else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def served_by(stack: Stack, path: str, user: str) -> str:
    status, headers, _ = http(stack.public + path, headers={"X-User-Id": user})
    assert status == 200, (path, status)
    return headers["X-Served-By"]


def route_view(stack: Stack, name: str) -> dict[str, Any]:
    routes = json.loads(http(stack.admin + "/api/routes")[2])
    return next(r for r in routes if r["name"] == name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("console"))
    s.start()
    try:
        # Real traffic: shadowed reviews (legacy answers, the reviews service is compared), a canary on likes
        # split by user, the legacy-only search, and a review whose text is markup, shown later as plain text.
        status, _, _ = http(s.public + "/api/products/7/reviews", method="POST",
                            body={"author": "Mallory", "rating": 5, "text": XSS_TEXT})
        assert status == 201
        for product in range(1, 13):
            assert http(s.public + f"/api/products/{product}/reviews")[0] == 200
        for user in range(20):
            assert http(s.public + "/api/likes/3", headers={"X-User-Id": f"user-{user}"})[0] == 200
        assert http(s.public + "/api/search?q=lamp")[0] == 200
        s.settle()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # The console must never reach beyond the admin listener (no CDN, no fonts).
    outside: list[str] = []
    pg.on("request", lambda req: None if req.url.startswith(stack.admin) else outside.append(req.url))
    try:
        yield pg
        assert errors == [], f"JavaScript errors on the page: {errors}"
        assert outside == [], f"the console requested something outside the admin listener: {outside}"
    finally:
        context.close()


def shot(pg: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


# --- serving ------------------------------------------------------------------------------------------------


def test_console_is_served_from_the_admin_listener_with_a_strict_csp(stack: Stack) -> None:
    status, headers, body = http(stack.admin + "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b'<script type="module" src="/console/app.js">' in body

    for name in ("app.js", "console.css", "favicon.svg"):
        status, headers, _ = http(f"{stack.admin}/console/{name}")
        assert status == 200, name
        assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert http(stack.admin + "/console/app.js")[1]["Content-Type"].startswith("text/javascript")
    # Only the console's own files: never its Python module, never a path out of the directory.
    for escape in ("__init__.py", "..%2Fadmin.py", "%2E%2E%2Fadmin.py", "nothing.js"):
        assert http(f"{stack.admin}/console/{escape}")[0] == 404, escape


def test_console_files_reference_nothing_outside_the_admin_listener() -> None:
    files = [p for p in CONSOLE_DIR.iterdir() if p.suffix in (".html", ".js", ".css", ".svg")]
    assert {"index.html", "app.js", "console.css"} <= {p.name for p in files}
    for path in files:
        text = path.read_text()
        # The SVG namespace is a name, not a request.
        urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{path.name} refers to {urls}"
        assert "@import" not in text and "@font-face" not in text, path.name


# --- pages --------------------------------------------------------------------------------------------------


def test_routes_page_shows_every_route_with_stage_stats_and_progress(page: Any, stack: Stack) -> None:
    page.goto(stack.admin + "/")
    page.wait_for_selector("#routes-table tr[data-route='reviews']")
    rows = page.locator("#routes-table tbody tr")
    assert [rows.nth(i).get_attribute("data-route") for i in range(rows.count())] == \
        ["reviews", "likes", "search", "fallback"]

    reviews = page.locator("tr[data-route='reviews']")
    assert "template /api/products/{id}/reviews" in reviews.locator(".match").inner_text()
    assert reviews.locator(".stage-cell").inner_text().strip() == "shadow"
    # The monolith's average has two decimals, the service's one: most comparisons mismatch.
    assert re.fullmatch(r"\d+\.\d%", reviews.locator("td").nth(7).locator("a").inner_text().strip())
    assert reviews.locator("svg.spark polyline").count() >= 1

    likes = page.locator("tr[data-route='likes']")
    assert likes.locator(".stage-cell").inner_text().strip() == "canary"
    assert likes.locator("td").nth(4).inner_text().startswith("50%")
    assert likes.get_by_role("button", name="Roll back").is_enabled()
    assert page.locator("tr[data-route='search'] button").is_disabled()

    assert "generation 1" in page.locator("#reload-status").inner_text()
    progress = page.locator("#progress").inner_text()
    assert "2 / 3" in progress           # shadow and canary are past legacy; search is not
    assert "shadow 1" in progress and "canary 1" in progress and "legacy 1" in progress
    share = float(page.locator("#traffic-share").inner_text().rstrip("%"))
    assert 0.0 < share < 100.0     # the likes canary serves part of the traffic
    page.wait_for_selector("#live-text:has-text('live')")
    shot(page, "routes")


def test_sync_panel_shows_the_mirrored_writes_of_a_route(page: Any, stack: Stack) -> None:
    for user in range(4):
        status, _, _ = http(stack.public + "/api/likes/11", method="POST", body={"user": f"console-{user}"},
                            headers={"X-User-Id": f"console-{user}"})
        assert status == 200
    stack.call(stack.gw.deliverer.settle())
    page.goto(stack.admin + "/")
    row = page.locator("#sync-table tr[data-sync-route='likes']")
    row.wait_for()
    cells = row.locator("td")
    assert cells.nth(2).inner_text().strip() == "0"               # pending
    assert int(cells.nth(4).inner_text().replace(",", "")) >= 4   # delivered
    assert "lag p50" in page.locator("#sync").inner_text()
    shot(page, "sync")


def test_differences_page_opens_a_mismatch_side_by_side_with_the_field_highlighted(page: Any, stack: Stack) -> None:
    page.goto(stack.admin + "/#/diffs")
    card = page.locator(".route-card[data-route='reviews']")
    card.wait_for()
    assert card.locator("tr[data-field='$.average']").count() == 1
    assert "mismatch" in card.locator(".stackbar").inner_text()
    shot(page, "differences")

    page.select_option("#filter-verdict", "mismatch")
    # Functions, not expression strings: the console's CSP forbids the eval that string predicates need.
    page.wait_for_function("() => { const rows = [...document.querySelectorAll('#samples tr[data-verdict]')];"
                           " return rows.length > 0 && rows.every(r => r.dataset.verdict === 'mismatch'); }")
    assert "verdict=mismatch" in page.url

    # The sample of product 7 also carries the review that only the monolith has, with markup in its text.
    samples = json.loads(http(stack.admin + "/api/diffs?route=reviews&verdict=mismatch&limit=100")[2])
    sample = next(s for s in samples if s["path"] == "/api/products/7/reviews")
    page.click(f"#samples tr[data-sample='{sample['id']}'] td.target")
    page.wait_for_selector(".side-by-side")
    assert page.url.endswith(f"#/diffs/{sample['id']}")

    legacy, new = page.locator(".side-pane").nth(0), page.locator(".side-pane").nth(1)
    for pane in (legacy, new):
        line = pane.locator(".j-line.hl-diff[data-path='$.average']")
        assert line.count() == 1
        assert line.inner_text().strip().startswith('"average":')
        assert pane.locator(".j-line.hl-ignored[data-path='$.generated_at']").count() == 1
    assert legacy.locator("[data-path='$.average']").inner_text() != new.locator("[data-path='$.average']").inner_text()
    assert "$.average" in page.locator("#differences").inner_text()
    # Backend data is shown as text: the markup in the review is visible, and nothing of it became an element.
    assert json.dumps(XSS_TEXT) in legacy.inner_text()
    assert legacy.locator("img").count() == 0
    assert page.evaluate("window.__pwned") is None

    if sample["trace_id"]:
        assert page.locator("#trace-link").get_attribute("href") == f"#/traces/{sample['trace_id']}"
    else:
        assert page.locator("#trace-link-none").is_visible()
    shot(page, "difference-sample")


def test_traces_page_lists_traces_and_draws_a_waterfall(page: Any, stack: Stack) -> None:
    status, _, body = http(stack.admin + "/api/traces?route=reviews&limit=20")
    page.goto(stack.admin + "/#/traces")
    if status == 404:
        # The gateway records no traces: the page says so instead of failing.
        page.wait_for_selector(".trace-list .empty:has-text('No traces yet')")
        shot(page, "traces")
        return
    assert status == 200
    listed = json.loads(body)
    traces = listed if isinstance(listed, list) else listed["traces"]
    assert traces, "the reviews requests left no trace"
    page.wait_for_selector("#traces tr[data-trace]")
    shot(page, "traces")

    # Every id in full (selectable text, the whole id in its title too), and the shadow call's verdict.
    row = page.locator(f"#traces tr[data-trace='{traces[0]['trace_id']}']")
    assert row.locator(".trace-id").inner_text() == traces[0]["trace_id"]
    assert row.locator(".trace-id").get_attribute("title") == traces[0]["trace_id"]
    judged = [t for t in traces if t.get("shadow_verdict")]
    assert judged, "no shadowed reviews trace carries its verdict"
    for t in judged[:5]:
        verdict = t["shadow_verdict"]
        badge = page.locator(f"#traces tr[data-trace='{t['trace_id']}'] .shadow-verdict")
        assert badge.inner_text() == f"shadow {verdict}"
        assert f"shadow-{verdict}" in (badge.get_attribute("class") or "")

    # A reviews request is shadowed: its trace holds the primary call and the shadow call, which ends later.
    trace_id = traces[0]["trace_id"]
    page.goto(f"{stack.admin}/#/traces/{trace_id}")
    shadow = page.locator("#waterfall .wf-row[data-shadow='true']")
    shadow.first.wait_for()
    spans = json.loads(http(f"{stack.admin}/api/traces/{trace_id}")[2])["spans"]
    assert any(s["attributes"].get("strangler.shadow") for s in spans)
    page.wait_for_function("(n) => document.querySelectorAll('#waterfall .wf-row[data-span]').length >= n",
                           arg=len(spans))
    assert {s["service"] for s in spans} <= set(page.locator(".legend-services").inner_text().split())
    shadow.first.click()
    detail = page.locator("#span-detail")
    detail.wait_for()
    assert "strangler.shadow" in detail.inner_text()
    shot(page, "trace")


def test_a_pasted_trace_id_opens_its_trace(page: Any, stack: Stack) -> None:
    status, headers, _ = http(stack.public + "/api/products/4/reviews")
    assert status == 200
    trace_id = headers["X-Trace-Id"]
    stack.settle()
    page.goto(stack.admin + "/#/traces")
    field = page.locator("#trace-open-id")
    field.wait_for()

    # Not a trace id: said at once, and nothing is opened.
    field.fill(trace_id[:16])
    field.press("Enter")
    assert "32 hex digits" in page.locator("#trace-open-error").inner_text()
    assert page.url.endswith("#/traces")

    # Pasted with the whitespace and case of a copied header value.
    field.fill(f"  {trace_id.upper()} ")
    page.click("#trace-open button[type='submit']")
    page.wait_for_url(f"**/#/traces/{trace_id}")
    page.locator("#waterfall .wf-row[data-span]").first.wait_for()
    assert page.locator(".trace-id-full").inner_text() == trace_id

    # An id the gateway never saw: the API answers 404 and the page says the trace is not found.
    unknown = "f" * 32
    assert http(f"{stack.admin}/api/traces/{unknown}")[0] == 404
    page.goto(f"{stack.admin}/#/traces/{unknown}")
    missing = page.locator("#trace-missing")
    missing.wait_for()
    assert f"Trace {unknown} not found" in missing.inner_text()
    assert page.locator("#trace-missing #trace-open-id").input_value() == unknown
    shot(page, "trace-not-found")


def test_rollback_asks_for_the_token_and_moves_traffic_then_resume_moves_it_back(page: Any, stack: Stack) -> None:
    # A user the canary sends to the likes service (sticky by X-User-Id, 50%).
    user = next(u for u in (f"user-{i}" for i in range(200)) if served_by(stack, "/api/likes/3", u) == "likes")

    page.goto(stack.admin + "/")
    row = page.locator("tr[data-route='likes']")
    row.wait_for()
    # A stale token from an earlier gateway: the 401 must make the console ask again.
    page.evaluate("sessionStorage.setItem('strangler.admin-token', 'stale')")

    row.get_by_role("button", name="Roll back").click()
    page.locator("#action-dialog").wait_for()
    page.click("#action-cancel")
    assert route_view(stack, "likes")["effective_stage"] == "canary"    # cancelled: nothing changed

    row.get_by_role("button", name="Roll back").click()
    page.fill("#action-reason", "likes p99 doubled")
    shot(page, "rollback-confirm")
    page.click("#action-ok")
    page.locator("#token-dialog").wait_for()
    assert "refused" in page.locator("#token-error").inner_text()
    page.fill("#token-input", stack.gw.token)
    page.click("#token-ok")

    page.wait_for_selector("tr[data-route='likes'] .stage-cell:has-text('legacy')")
    assert "rolled back" in row.locator(".pin").inner_text()
    assert "by console" in row.locator(".pin").inner_text()
    view = route_view(stack, "likes")
    assert view["effective_stage"] == "legacy"
    assert view["rolled_back"]["actor"] == "console"
    assert view["rolled_back"]["reason"] == "likes p99 doubled"
    assert served_by(stack, "/api/likes/3", user) == "legacy"
    assert page.evaluate("sessionStorage.getItem('strangler.admin-token')") == stack.gw.token
    shot(page, "rolled-back")

    # The token is kept for the tab: resuming asks only for confirmation.
    row.get_by_role("button", name="Resume").click()
    page.click("#action-ok")
    page.wait_for_selector("tr[data-route='likes'] .stage-cell:has-text('canary')")
    assert not page.locator("#token-dialog").is_visible()
    assert route_view(stack, "likes")["rolled_back"] is None
    assert served_by(stack, "/api/likes/3", user) == "likes"


def test_pages_refresh_in_place_and_pause_when_hidden(page: Any, stack: Stack) -> None:
    page.goto(stack.admin + "/")
    page.wait_for_selector("tr[data-route='search']")
    page.evaluate("window.__marker = 1")     # survives only if the page is never reloaded

    def search_requests() -> int:
        return int(page.locator("tr[data-route='search'] .traffic .muted").get_attribute("data-requests") or -1)

    before = search_requests()
    for _ in range(5):
        assert http(stack.public + "/api/search?q=chair")[0] == 200
    page.wait_for_function("(n) => Number(document.querySelector(\"tr[data-route='search'] .traffic .muted\")"
                           ".dataset.requests) >= n", arg=before + 5)
    assert page.evaluate("window.__marker") == 1

    # Hidden tab: no more polling.
    page.evaluate("Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
                  "document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_selector("#live-text:has-text('paused')")
    polls: list[str] = []
    page.on("request", lambda req: polls.append(req.url) if "/api/" in req.url else None)
    time.sleep(2.5)   # proving an absence takes a stretch of time: two poll periods with nothing sent
    assert polls == []


# --- what a new user tripped over (issue 13) ------------------------------------------------------------------


def test_routes_page_shows_the_gateways_match_figure_with_its_window_and_no_weight_outside_canary(
        page: Any, stack: Stack) -> None:
    view = route_view(stack, "reviews")
    figure = view["shadow_match"]
    assert figure["window"] == "last 60s" and figure["compared"] > 0
    page.goto(stack.admin + "/")
    reviews = page.locator("tr[data-route='reviews']")
    reviews.wait_for()
    cell = reviews.locator("td").nth(7)
    assert cell.locator(".denominator").inner_text().startswith("of ")
    assert "compared, last 60s" in (cell.get_attribute("title") or "")
    # The weight means something in a canary only: "–" for shadow and legacy routes, as in the CLI.
    assert reviews.locator("td").nth(4).inner_text().strip() == "–"
    assert page.locator("tr[data-route='search'] td").nth(4).inner_text().strip() == "–"
    assert "60 s" in page.locator("#routes-table thead").inner_text().lower()


def test_differences_page_scopes_results_lists_ignore_rules_and_clears_a_route(page: Any, stack: Stack) -> None:
    page.goto(stack.admin + "/#/diffs")
    card = page.locator(".route-card[data-route='reviews']")
    card.wait_for()
    assert card.locator(".window").inner_text() == "everything stored"
    # The configured ignores are listed as such, not only learned noise.
    noise = card.locator("table.noise").inner_text()
    assert "$.generated_at" in noise and "header:date" in noise and "rule in routes.yaml" in noise

    page.select_option("#filter-since", "reload")
    page.wait_for_function("() => (document.querySelector(\".route-card[data-route='reviews'] .window\") || {})"
                           ".textContent?.startsWith('since routes.yaml last changed this route')")
    assert "since=reload" in page.url
    page.select_option("#filter-since", "10m")
    page.wait_for_function("() => document.querySelector(\".route-card[data-route='reviews'] .window\")"
                           ".textContent === 'last 10m'")
    shot(page, "differences-scoped")

    # Clearing needs the token, then the route's results start again from nothing.
    assert json.loads(http(stack.admin + "/api/report")[2])["routes"][0]["compared"] > 0
    page.evaluate(f"sessionStorage.setItem('strangler.admin-token', {json.dumps(stack.gw.token)})")
    page.select_option("#filter-since", "")
    card.locator("button.clear-results").click()
    page.click("#action-ok")
    page.wait_for_function("() => document.querySelector(\".route-card[data-route='reviews'] .compared\")"
                           ".textContent === '0 compared'")
    report = {r["route"]: r for r in json.loads(http(stack.admin + "/api/report")[2])["routes"]}
    assert report["reviews"]["compared"] == 0
    # Traffic after the clear is what the report shows.
    for product in range(1, 4):
        assert http(stack.public + f"/api/products/{product}/reviews")[0] == 200
    stack.settle()
    page.wait_for_function("() => document.querySelector(\".route-card[data-route='reviews'] .compared\")"
                           ".textContent === '3 compared'")


def test_a_trace_links_to_its_comparison_and_says_when_spans_are_still_arriving(page: Any, stack: Stack) -> None:
    status, headers, _ = http(stack.public + "/api/products/9/reviews")
    assert status == 200
    trace_id = headers["X-Trace-Id"]
    stack.settle()
    page.goto(f"{stack.admin}/#/traces/{trace_id}")
    link_el = page.locator("#trace-comparisons a.comparison-link")
    link_el.wait_for()
    comparison = json.loads(http(f"{stack.admin}/api/traces/{trace_id}")[2])["comparisons"][0]
    assert link_el.get_attribute("href") == f"#/diffs/{comparison['id']}"
    assert comparison["verdict"] in page.locator("#trace-comparisons").inner_text()
    shot(page, "trace-with-comparison")
    link_el.click()
    page.wait_for_selector("#trace-link")
    assert page.locator("#trace-link").get_attribute("href") == f"#/traces/{trace_id}"    # and back

    # The in-process services export no spans: a fresh trace says the services' spans are on their way.
    trace = json.loads(http(f"{stack.admin}/api/traces/{trace_id}")[2])
    if trace["awaiting"]["state"] == "arriving":
        page.goto(f"{stack.admin}/#/traces/{trace_id}")
        note = page.locator("#trace-awaiting")
        note.wait_for()
        assert "still arriving" in note.inner_text() or "no spans from" in note.inner_text()


def test_a_resume_keeps_the_new_sides_figures_and_recent_events_show_the_change(page: Any, stack: Stack) -> None:
    for user in range(20):
        assert http(stack.public + "/api/likes/3", headers={"X-User-Id": f"user-{user}"})[0] == 200
    auth = {"Authorization": f"Bearer {stack.gw.token}"}
    assert http(stack.admin + "/api/routes/likes/rollback", method="POST", body={"reason": "t"}, headers=auth)[0] == 200
    assert http(stack.admin + "/api/routes/likes/resume", method="POST", body={}, headers=auth)[0] == 200
    # The guard starts afresh, but what the new side did in the last minute is still shown.
    likes = route_view(stack, "likes")
    assert likes["stats"]["extracted"]["p50_ms"] is not None
    page.goto(stack.admin + "/")
    row = page.locator("tr[data-route='likes']")
    row.wait_for()
    assert row.locator("td").nth(9).locator(".side-new").inner_text().strip() != "–"
    share = page.locator("#traffic-share").inner_text()
    assert share != "0.0%"

    # An edit of the route: "Recent events" says what changed, in full.
    path = stack.gw.table.config.path
    path.write_text(path.read_text().replace("weight: 50", "weight: 60"))
    page.wait_for_selector("#history td.event-text:has-text('weight 50 -> 60')", timeout=15_000)
    text = page.locator("#history").inner_text()
    assert "modified: weight 50 -> 60" in text
    shot(page, "recent-events")
