"""A layout audit of every tab in headless Chromium: draws each tab (its primary buttons and sub-tabs) and lists every
Plotly title, subplot title or annotation that runs past its figure's edge (Plotly never wraps text, so such text is
cut off on the page). Prints one line per problem; exits 1 if there is any.

    .venv/bin/python docs/layout_audit.py
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.app_server import running_app  # noqa: E402
from docs.screenshots import drawn_tabs, settle  # noqa: E402

# every visible figure's text that crosses the figure's own box (the svg clips it there)
OVERFLOWING_TEXT = """() => {
  const found = [];
  for (const gd of document.querySelectorAll('[role=tabpanel]:not([hidden]) .js-plotly-plot')) {
    const box = gd.getBoundingClientRect();
    if (box.width === 0 || !gd._fullLayout) continue;
    for (const text of gd.querySelectorAll('.gtitle, .annotation-text, .g-xtitle text, .g-ytitle text')) {
      const r = text.getBoundingClientRect();
      if (r.width === 0) continue;
      if (r.right > box.right + 2 || r.left < box.left - 2)
        found.push(`${text.textContent.slice(0, 90)} (${Math.round(r.width)} px text in a `
                   + `${Math.round(box.width)} px figure)`);
    }
  }
  return found;
}"""
SUBTABS = "[role=tabpanel]:not([hidden]) [role=tablist] [role=tab]"


def audit(url: str) -> list[str]:
    """'tab: text' for every text that runs past its figure, after drawing every tab and sub-tab."""
    problems = []
    for tab, page in drawn_tabs(url):
        found = set(page.evaluate(OVERFLOWING_TEXT))
        subtabs = page.locator(SUBTABS)
        for index in range(subtabs.count()):
            if subtabs.nth(index).is_visible():
                subtabs.nth(index).click()
                settle(page)
                found |= set(page.evaluate(OVERFLOWING_TEXT))
        problems += [f"{tab}: {text}" for text in sorted(found)]
    return problems


def main() -> None:
    with running_app() as (url, _):
        problems = audit(url)
    print("\n".join(problems) or "no text runs past its figure")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
