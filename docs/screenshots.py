"""Screenshots of every tab of the app at 1440x1000, for the README and the docs: starts the app on the bundled
models, opens each tab in headless Chromium, presses the tab's primary buttons, waits for its figures, and saves
``docs/screenshots/<tab>.png``.

    .venv/bin/python docs/screenshots.py            # needs Chromium at /usr/bin/chromium (apt-get install chromium)
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import TABS  # noqa: E402
from benchmarks.app_server import running_app  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1440, "height": 1000}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--use-angle=swiftshader",
         "--enable-unsafe-swiftshader"]
PRIMARY = "[role=tabpanel]:not([hidden]) button.primary, [role=tabpanel]:not([hidden]) button.lg.primary"
BUSY = "document.querySelectorAll('.pending, .generating, .eta-bar, .progress-text').length === 0"


def file_name(tab: str) -> str:
    """``Zero-shot & Softmax`` -> ``zero-shot-softmax.png``."""
    return re.sub(r"[^a-z0-9]+", "-", tab.lower()).strip("-") + ".png"


def settle(page, timeout_s: float = 180.0) -> None:
    """Wait until no event is running (the page shows no progress) and the figures have drawn."""
    page.wait_for_timeout(500)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not page.evaluate(BUSY):
        page.wait_for_timeout(500)
    page.wait_for_timeout(1000)


def drawn_tabs(url: str) -> Iterator[tuple[str, object]]:
    """Open the app at ``url`` in headless Chromium and yield (tab, page) for each tab once it is open and its
    primary buttons have been pressed and their figures drawn."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        settle(page)
        for tab in TABS:
            page.get_by_role("tab", name=tab, exact=True).click()
            settle(page)
            buttons = page.locator(PRIMARY)
            for index in range(buttons.count()):
                if buttons.nth(index).is_visible():
                    buttons.nth(index).click()
                    settle(page)
            yield tab, page
        browser.close()


def take(url: str, out: Path = OUT) -> list[Path]:
    """One screenshot per tab of the app at ``url``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for tab, page in drawn_tabs(url):
        page.evaluate("window.scrollTo(0, 0)")
        path = out / file_name(tab)
        page.screenshot(path=str(path))
        written.append(path)
        print(f"{tab}: {path.relative_to(ROOT)}", flush=True)
    return written


def main() -> None:
    with running_app() as (url, _):
        take(url)


if __name__ == "__main__":
    main()
