"""A real browser on the search page: Debian's Chromium driven by Playwright.

The server is ``ssan serve`` itself, in a subprocess on 127.0.0.1; the browser opens the address
it prints (with the token). Skipped (with the reason) when /usr/bin/chromium or Playwright is
missing; CI installs both.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from footage import build_footage_index
from helpers import save_random_checkpoint
from servers import cli_server

CHROMIUM = Path("/usr/bin/chromium")
STREET_START = "2026-12-01T08:00:00.000000Z"  # the street video's creation_time (the folder of frames has none)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)"
    ),
]


@pytest.fixture(scope="module")
def server(synth_root, prepared_synth, tmp_path_factory):
    """``ssan serve --index IDX --port 0`` over 12 images; yields the printed address and the audit log."""
    pytest.importorskip("uvicorn")
    from ssan.search import build_index

    base = tmp_path_factory.mktemp("browser")
    gallery = base / "gallery"
    gallery.mkdir()
    for image in sorted(p for p in (synth_root / "imgs").rglob("*") if p.is_file())[:12]:
        shutil.copy(image, gallery / image.name)
    checkpoint = save_random_checkpoint(base / "model.pt", prepared_synth)
    build_index(base / "idx", checkpoint, images=gallery, progress=False)
    with cli_server("--index", base / "idx", "--audit-log", base / "audit.jsonl") as (_, line):
        address = re.search(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]+", line)
        assert address, line
        yield {"address": address.group(0), "audit": base / "audit.jsonl"}


@pytest.fixture(scope="module")
def track_server(prepared_synth, tmp_path_factory):
    """``ssan serve`` over a track index: 5 walkers of a 6 s street video (wall-clock start known: its
    creation_time), and again as a folder of frames (offsets only)."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("av")
    from ssan.search import GalleryIndex

    base = tmp_path_factory.mktemp("browser-tracks")
    built = build_footage_index(base, prepared_synth, STREET_START)
    with cli_server("--index", built["index"], "--audit-log", base / "audit.jsonl") as (_, line):
        address = re.search(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]+", line)
        assert address, line
        yield {
            "address": address.group(0),
            "audit": base / "audit.jsonl",
            "entries": GalleryIndex.load(built["index"]).entries,
        }


def _wait_until(page, expression: str, timeout_s: float = 20.0) -> None:
    """Poll ``expression`` in the page until it is true (page.evaluate is not subject to the page's CSP,
    unlike wait_for_function, whose string predicates the service's no-eval policy refuses)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {expression}")
        time.sleep(0.05)


def _search_and_see_images(page, query: str, k: int) -> None:
    page.fill("#query", query)
    page.fill("#k", str(k))
    page.click("#search-button")
    page.wait_for_selector("#results figure img", timeout=20_000)
    _wait_until(
        page,
        "[...document.querySelectorAll('#results img')].length > 0 && "
        "[...document.querySelectorAll('#results img')].every(img => img.complete && img.naturalWidth > 0)",
    )
    widths = page.eval_on_selector_all("#results img", "imgs => imgs.map(img => img.naturalWidth)")
    assert len(widths) == k and all(w > 0 for w in widths)


@pytest.fixture()
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


def test_open_the_printed_address_search_and_see_ranked_images(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server["address"])
    _wait_until(page, "document.getElementById('gallery-info').textContent.includes('12 images')")
    assert "token" not in page.url and page.evaluate("window.location.href") == page.url
    assert page.url.endswith("/")
    cookies = page.context.cookies()
    assert len(cookies) == 1 and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the page's scripts cannot read it

    _search_and_see_images(page, "a man in a black coat with white shoes zzqx", 6)
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

    lines = [json.loads(line) for line in server["audit"].read_text().splitlines()]
    searches = [line for line in lines if line["path"] == "/api/search"]
    assert [(s["query"], s["status"], len(s["image_ids"])) for s in searches[:2]] == [
        ("a man in a black coat with white shoes zzqx", 200, 6),
        ("🙂", 400, 0),
    ]
    shown = {line["path"] for line in lines if line["path"].startswith("/api/images/")}
    assert shown == {f"/api/images/{i}" for i in searches[0]["image_ids"]}
    assert all(line["client"] == "127.0.0.1" and len(line["token"]) == 12 for line in lines)


def test_a_browser_without_the_cookie_gets_the_token_form(server, browser):
    page = browser.new_context().new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = page.goto(server["address"].split("?")[0])
    assert response.status == 401
    assert page.locator("#token-form").is_visible() and page.locator("#query").count() == 0
    assert page.context.cookies() == []

    page.fill("#token", "not-the-token-" + "x" * 20)
    page.click("#token-button")
    page.wait_for_selector("#token-error")
    assert page.context.cookies() == []

    page.fill("#token", server["address"].split("token=")[1])
    page.click("#token-button")
    _wait_until(page, "document.getElementById('gallery-info').textContent.includes('12 images')")
    assert "token" not in page.url
    _search_and_see_images(page, "a woman in a red coat", 3)
    assert errors == []


def _clock(seconds: float) -> str:
    tenths = round(seconds * 10)
    return f"{tenths // 36000}:{tenths // 600 % 60:02d}:{tenths % 600 // 10:02d}.{tenths % 10}"


def _local_time(page, entry: dict) -> str:
    """The wall-clock span the page should show for a track: its UTC times in the browser's zone (Paris)."""
    assert entry["utc_start"].startswith("2026-12-01T08:00:0")
    shown = page.evaluate(
        "([start, end]) => { const time = {hour: 'numeric', minute: '2-digit', second: '2-digit'};"
        "return new Date(start).toLocaleString(undefined, {year: 'numeric', month: 'short', day: 'numeric', "
        "...time, timeZoneName: 'short'}) + ' – ' + new Date(end).toLocaleTimeString(undefined, time); }",
        [entry["utc_start"], entry["utc_end"]],
    )
    assert shown.startswith("Dec 1, 2026, 9:00:0") and "GMT+1" in shown, shown  # 08:00 UTC is 09:00 in Paris
    return shown


def _show_tracks(page, address: str, count: int) -> None:
    page.goto(address)
    _wait_until(page, f"document.getElementById('gallery-info').textContent.includes('{count} tracks')")
    page.fill("#query", "a man in a red jacket and blue jeans")
    page.fill("#k", str(count))
    page.click("#search-button")
    _wait_until(
        page,
        f"document.querySelectorAll('#results figure.track').length === {count} && "
        "[...document.querySelectorAll('#results img')].every(img => img.complete && img.naturalWidth > 0)",
    )


def test_track_results_show_camera_time_and_frame_and_play_the_clip_from_the_start(track_server, browser):
    entries = track_server["entries"]
    page = browser.new_page(viewport={"width": 1200, "height": 900}, timezone_id="Europe/Paris", locale="en-US")
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _show_tracks(page, track_server["address"], len(entries))
    for figure in page.locator("#results figure.track").all():
        entry = entries[int(figure.get_attribute("data-image-id"))]
        text = figure.inner_text()
        assert entry["camera"] in text and f"track {entry['track']}" in text
        assert f"{_clock(entry['start'])}–{_clock(entry['end'])}" in text  # the offsets in the file, as ever
        wall = _local_time(page, entry) if entry["camera"] == "street" else "offsets in the file (no wall-clock"
        assert wall in text, (wall, text)
    frame_widths = page.eval_on_selector_all("#results img.frame", "imgs => imgs.map(img => img.naturalWidth)")
    assert frame_widths == [256] * len(entries)  # the full frames, not the crops

    late = max((i for i, e in enumerate(entries) if e["camera"] == "street"), key=lambda i: entries[i]["start"])
    start = entries[late]["start"]
    assert start > 1.5  # far enough from 0 that a clip played from the beginning cannot pass
    page.evaluate(  # record where playback really begins (evaluate is not bound by the page's CSP)
        "const clip = document.getElementById('clip');"
        "clip.addEventListener('playing', () => { window.firstPlaying ??= clip.currentTime; });"
    )
    page.click(f"#results figure.track[data-image-id='{late}']")
    _wait_until(page, "window.firstPlaying !== undefined", timeout_s=30)
    first = page.evaluate("window.firstPlaying")
    assert start - 0.05 <= first <= start + 0.3, (first, start)
    _wait_until(page, f"document.getElementById('clip').currentTime > {start + 0.3}", timeout_s=30)  # it plays
    assert page.evaluate("document.getElementById('clip').error") is None
    state = page.evaluate("(() => { const c = document.getElementById('clip'); return [c.paused, c.videoWidth]; })()")
    assert state == [False, 256]
    entry = entries[late]
    assert f"{entry['camera']} · {_clock(start)}–{_clock(entry['end'])} · track {entry['track']}" == page.inner_text(
        "#player-title"
    )

    lobby = next(i for i, e in enumerate(entries) if e["camera"] == "lobby")
    page.click(f"#results figure.track[data-image-id='{lobby}']")  # a folder of frames: its frame, no player
    _wait_until(
        page,
        "document.getElementById('player-frame').complete && "
        "document.getElementById('player-frame').naturalWidth === 256",
    )
    assert page.locator("#clip").is_hidden() and page.locator("#player-frame").is_visible()
    assert "folder of frames" in page.inner_text("#player-note")
    assert errors == []

    lines = [json.loads(line) for line in track_server["audit"].read_text().splitlines()]
    clips = [line for line in lines if line["path"] == f"/api/clips/{late}"]
    assert clips and all(c["status"] in (200, 206) and c["image_ids"] == [late] for c in clips)
    frames = {line["path"] for line in lines if line["path"].startswith("/api/frames/")}
    assert frames == {f"/api/frames/{i}" for i in range(len(entries))}


def test_the_camera_filter_narrows_track_results_on_the_page(track_server, browser):
    entries = track_server["entries"]
    lobby = [i for i, e in enumerate(entries) if e["camera"] == "lobby"]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(track_server["address"])
    _wait_until(
        page, "!document.getElementById('filters').hidden && document.querySelectorAll('#cameras option').length"
    )
    assert page.eval_on_selector_all("#cameras option", "options => options.map(o => o.value)") == ["lobby", "street"]
    page.select_option("#cameras", ["lobby"])
    page.fill("#query", "a man in a red jacket and blue jeans")
    page.fill("#k", str(len(entries)))
    page.click("#search-button")
    _wait_until(page, f"document.querySelectorAll('#results figure.track').length === {len(lobby)}")
    shown = [int(f.get_attribute("data-image-id")) for f in page.locator("#results figure.track").all()]
    assert sorted(shown) == lobby
    assert "offsets in the file (no wall-clock start known)" in page.inner_text("#results")
    lines = [json.loads(line) for line in track_server["audit"].read_text().splitlines()]
    search = [line for line in lines if line["path"] == "/api/search"][-1]
    assert search["filters"] == {"cameras": ["lobby"], "after": None, "before": None}


@pytest.fixture(scope="module")
def clip_server(tmp_path_factory):
    """``ssan serve`` over 6 tall images indexed with a tiny random CLIP checkpoint (``ssan import-clip``)."""
    pytest.importorskip("uvicorn")
    pytest.importorskip("open_clip")
    import numpy as np
    import torch
    from PIL import Image

    from clip_models import VIT, random_clip, register_tiny_models
    from ssan.clip.checkpoint import import_clip
    from ssan.search import build_index

    base = tmp_path_factory.mktemp("browser-clip")
    register_tiny_models(base / "configs")
    torch.save(random_clip(VIT).state_dict(), base / "weights.bin")
    import_clip(VIT, base / "clip.pt", weights=base / "weights.bin")
    gallery = base / "gallery"
    gallery.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (64, 28, 3), dtype=np.uint8)).save(gallery / f"person{i}.png")
    build_index(base / "idx", base / "clip.pt", images=gallery, progress=False)
    with cli_server("--index", base / "idx", "--no-audit-log") as (_, line):
        address = re.search(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]+", line)
        assert address, line
        yield address.group(0)


def test_clip_index_in_the_page_ranks_images_and_says_when_a_query_was_cut(clip_server, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(clip_server)
    _wait_until(page, "document.getElementById('gallery-info').textContent.includes('6 images')")
    _search_and_see_images(page, "a woman in a white coat and black trousers", 4)
    assert page.locator("#parts .part").count() == 0  # CLIP has one global feature: no body parts
    _search_and_see_images(page, " ".join(["a tall man with a red scarf"] * 20), 3)
    assert "cut to the first 75" in page.inner_text("#attention")
    assert errors == []
