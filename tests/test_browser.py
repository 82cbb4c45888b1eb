"""The report and the docs as a browser shows them (headless Chromium).

A script appended to a copy of each page measures, once the page has
loaded, what a reader would notice: images that did not load, empty code
blocks, and content wider than a 1280 px window. Chromium writes the
result into the DOM it dumps. Skipped, with the reason, where Chromium is
not installed (``.ci/run`` installs Debian's ``chromium`` when it can).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cxrkit.report import evaluation_report

WIDTH = 1280

# Appended to a page: the checks, written into <body data-check="...">.
CHECK = """
<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const blocks = [...document.querySelectorAll("pre")];
  const wide = [...document.querySelectorAll("body *")].filter((el) => {
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.right > window.innerWidth + 1
      && getComputedStyle(el).position !== "fixed"
      && !el.closest("pre, .md-sidebar, .scroll, .md-search, nav");
  });
  document.body.dataset.check = JSON.stringify({
    images: images.length,
    broken: images.filter((i) => !i.complete || i.naturalWidth === 0)
      .map((i) => i.alt || i.src.slice(0, 60)),
    narrow: images.filter((i) => i.naturalWidth >= 600 && i.width < 300)
      .map((i) => i.alt),
    code_blocks: blocks.length,
    empty_code: blocks.filter((b) => !b.textContent.trim()).length,
    page_width: document.documentElement.scrollWidth,
    overflowing: wide.slice(0, 5).map((el) => el.tagName + "." + el.className),
  });
});
</script>
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def _run(page: Path, *flags: str) -> str:
    result = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WIDTH},2000",
            "--virtual-time-budget=5000",
            *flags,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def browser_check(page: Path, screenshot: Path | None = None) -> dict:
    """Open a copy of ``page`` with the checks appended; their results."""
    checked = page.with_name(f"checked-{page.name}")
    html = page.read_text("utf-8")
    checked.write_text(html.replace("</body>", CHECK + "</body>"), "utf-8")
    dom = _run(checked, "--dump-dom")
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, "the page did not finish loading in Chromium"
    if screenshot is not None:
        _run(page, f"--screenshot={screenshot}")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_report_renders_in_a_browser(fitted_synthetic, synthetic, tmp_path):
    X, y, _ = synthetic
    evaluation_report(
        fitted_synthetic, X[:120], y[:120], tmp_path, n_bootstrap=100, n_heatmaps=4
    )
    found = browser_check(tmp_path / "report.html", tmp_path / "report.png")
    assert found["images"] >= 6 and not found["broken"], found
    assert not found["narrow"], f"figures shown too small: {found['narrow']}"
    assert found["page_width"] <= WIDTH and not found["overflowing"], found
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.parametrize("page", ["quickstart", "tutorial"])
def test_newcomer_pages_render_in_a_browser(built_site, tmp_path, page):
    site = tmp_path / "site"
    shutil.copytree(built_site, site)
    found = browser_check(site / page / "index.html", tmp_path / f"{page}.png")
    assert found["code_blocks"] >= 3 and not found["empty_code"], found
    assert not found["broken"], found
    assert found["page_width"] <= WIDTH and not found["overflowing"], found
