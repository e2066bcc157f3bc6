"""The console's waiting-rooms panel in a real browser (headless Chromium through Playwright): a gateway with a
waiting room, three visitors in line, and the panel showing them."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from gateway.config.parse import load
from gateway.runtime.gateway import Gateway
from tests.support import Backend, serve_app, write_routes

CHROMIUM = "/usr/bin/chromium"            # Debian's, as for the other console tests (.ci/run installs it)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TIMEOUT_MS = 10_000


def test_console_shows_the_waiting_room(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    backend = serve_app(Backend("legacy").app())
    url = call(backend.__aenter__())
    path = write_routes(tmp_path, f"""\
        backends: {{legacy: {{url: "{url}"}}}}
        fallback: legacy
        routes:
          - name: events
            match: {{path: {{exact: /api/events}}}}
            admission: {{rate: 1/m}}
        """)

    async def start() -> Gateway:
        gw = Gateway(load(path))
        await gw.start()
        return gw

    gw = call(start())
    try:
        public = "http://{}:{}".format(*gw.bound["public"])
        admin = "http://{}:{}".format(*gw.bound["admin"])
        statuses = []
        for _ in range(4):
            try:
                with urllib.request.urlopen(public + "/api/events", timeout=10) as resp:
                    statuses.append(resp.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
        assert statuses == [200, 503, 503, 503]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(TIMEOUT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(admin + "/")
                row = page.locator("#rooms tr[data-room='events']")
                row.wait_for()
                assert row.locator(".room-waiting").inner_text() == "3"
                assert row.locator("td").nth(1).inner_text() == "1/m"
                assert row.locator("td").last.inner_text() == "ok"
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "console-waiting-room.png"), full_page=True)
                assert errors == []
            finally:
                browser.close()
    finally:
        call(gw.stop())
        call(backend.__aexit__(None, None, None))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
