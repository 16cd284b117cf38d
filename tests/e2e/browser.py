"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium (installed by
scripts/browser.sh) driven by Playwright for Python, and pages served from their own
loopback origin that call ``fetch()`` exactly as a frontend would.

Playwright's own browser download is never used (``executable_path``); the flags keep
Chromium off every network but loopback.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright

from .conftest import LOOPBACK, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>a frontend of the broker</title>
<script>
// One fetch(), answered as data: what a page's script can see of the response, or the
// error the browser gave it (a CORS refusal is a bare "TypeError: Failed to fetch").
async function attempt(url, init) {
  try {
    const response = await fetch(url, init);
    const headers = {};
    response.headers.forEach((value, name) => { headers[name] = value; });
    const text = await response.text();
    return {status: response.status, headers, text, redirected: response.redirected};
  } catch (error) {
    return {error: String(error)};
  }
}
</script>
"""


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """One headless Chromium (Debian's), closed at the end."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextlib.contextmanager
def page_origin() -> Iterator[str]:
    """Serve the page on loopback; yield its origin, ``http://localhost:<port>`` (a host
    other than the broker's and storage's 127.0.0.1, so every call is cross-origin)."""
    server = http.server.ThreadingHTTPServer((LOOPBACK, free_port()), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Frontend:
    """A tab showing the page at ``origin``; ``fetch`` runs in it, ``console`` is what
    Chromium reported (its CORS refusals say why there)."""

    page: Page
    origin: str
    console: list[str] = field(default_factory=list)

    def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str | None = None,
    ) -> dict[str, Any]:
        """``fetch(url, {method, headers, body})`` from the page; the response as the
        script sees it (``status``, readable ``headers``, ``text``) or ``error``."""
        init: dict[str, Any] = {"method": method, "headers": headers or {}}
        if body is not None:
            init["body"] = body
        answer: dict[str, Any] = self.page.evaluate(
            "([url, init]) => attempt(url, init)", [url, init]
        )
        return answer


@contextlib.contextmanager
def frontend(browser: Browser, origin: str) -> Iterator[Frontend]:
    """A fresh browser context (no cookies or cache shared) with the page open."""
    context = browser.new_context()
    try:
        page = context.new_page()
        opened = Frontend(page, origin)
        page.on("console", lambda message: opened.console.append(message.text))
        page.goto(f"{origin}/")
        yield opened
    finally:
        context.close()
