"""A real browser on the search page: Debian's Chromium driven by Playwright.

The server is ``ssan serve``'s app under uvicorn in a background thread on 127.0.0.1.
Skipped (with the reason) when /usr/bin/chromium or Playwright is missing; CI installs both.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from helpers import save_random_checkpoint

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(synth_root, prepared_synth, tmp_path_factory):
    """``ssan serve`` equivalent (Searcher + create_app + uvicorn) on a free local port."""
    uvicorn = pytest.importorskip("uvicorn")
    from ssan.search import GalleryIndex, Searcher
    from ssan.search.app import create_app

    base = tmp_path_factory.mktemp("browser")
    gallery = base / "gallery"
    gallery.mkdir()
    for image in sorted(p for p in (synth_root / "imgs").rglob("*") if p.is_file())[:12]:
        shutil.copy(image, gallery / image.name)
    GalleryIndex.build(base / "idx", save_random_checkpoint(base / "model.pt", prepared_synth), images=gallery,
                       progress=False)
    port = _free_port()
    config = uvicorn.Config(create_app(Searcher(base / "idx")), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


def _wait_until(page, expression: str, timeout_s: float = 20.0) -> None:
    """Poll ``expression`` in the page until it is true (page.evaluate is not subject to the page's CSP,
    unlike wait_for_function, whose string predicates the service's no-eval policy refuses)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {expression}")
        time.sleep(0.05)


def test_type_a_query_and_see_ranked_images(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server + "/")
            _wait_until(page, "document.getElementById('gallery-info').textContent.includes('12 images')")
            page.fill("#query", "a man in a black coat with white shoes zzqx")
            page.fill("#k", "6")
            page.click("#search-button")
            page.wait_for_selector("#results figure img", timeout=20_000)
            _wait_until(page, "[...document.querySelectorAll('#results img')]"
                              ".every(img => img.complete && img.naturalWidth > 0)")
            widths = page.eval_on_selector_all("#results img", "imgs => imgs.map(img => img.naturalWidth)")
            assert len(widths) == 6 and all(w > 0 for w in widths)
            captions = page.inner_text("#results")
            assert "#1" in captions and "#6" in captions
            assert page.locator("#parts .part").count() == 6
            assert page.locator("#parts .part").first.locator(".word").count() == 9  # known words
            assert "zzqx" in page.inner_text("#unknown")
            page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
            assert (tmp_path / "search.png").stat().st_size > 10_000

            page.fill("#query", "🙂")
            page.click("#search-button")
            page.wait_for_selector("#status.error")
            assert "no words" in page.inner_text("#status")
            assert errors == []
        finally:
            browser.close()
