"""cxrkit serve in a real browser: headless Chromium uploads a real X-ray.

Screenshots go to the test's temporary folder; the user guide's come from
``CXRKIT_SCREENSHOT_DIR=docs/images pytest tests/test_serve_browser.py``.

Chromium is driven through the DevTools protocol over its pipe
(``--remote-debugging-pipe``: JSON messages ending in a NUL byte on file
descriptors 3 and 4). A small client is written here because the usual ones
do not fit an offline CI: playwright downloads its own browsers, selenium
needs a chromedriver matching the installed Chromium, and a websocket client
would be one more dependency for what the pipe does without one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from cxrkit import PneumoniaClassifier, load_image_folder
from cxrkit.explain import DEFAULT_METHOD, method_caption
from cxrkit.serve import create_app

CHROMIUM = next(
    (
        shutil.which(n)
        for n in ("chromium", "chromium-browser", "google-chrome")
        if shutil.which(n)
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on PATH (apt-get install chromium; .ci/run installs it)",
)


class Browser:
    """Headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, user_data_dir: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds_3_and_4() -> None:  # the pipe's file descriptors, by convention
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--remote-debugging-pipe",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={user_data_dir}",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=fds_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call(
            "Target.attachToTarget", targetId=target, flatten=True
        )["sessionId"]

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:  # skip events and other answers until ours
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def page(self, method: str, **params) -> dict:
        return self.call(method, session=self.session, **params)

    def evaluate(self, expression: str):
        result = self.page(
            "Runtime.evaluate", expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:  # the page may still be loading
                value = self.evaluate(expression)
            except RuntimeError as exc:
                value, last = None, exc
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout} s for {expression} ({last})")

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except RuntimeError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.close()


@pytest.fixture(scope="module")
def real_model(kermany_dir, tmp_path_factory):
    """A small model trained here on 48 real X-rays (seconds)."""
    X, y = load_image_folder(kermany_dir / "train")
    rng = np.random.default_rng(0)
    keep = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), 24, replace=False) for c in np.unique(y)]
    )
    clf = PneumoniaClassifier(
        model="simple_cnn", image_size=64, max_epochs=2, random_state=0
    ).fit(X[keep], y[keep])
    return clf.save(tmp_path_factory.mktemp("browser") / "real.cxr")


def open_page(browser: Browser, url: str) -> int:
    """Load the page and wait for the model card; the file input's node id."""
    browser.page("Page.enable")
    browser.page("Page.navigate", url=url + "/")
    browser.wait_for("document.getElementById('card').textContent.includes('real-')")
    root = browser.page("DOM.getDocument")["root"]["nodeId"]
    return browser.page("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]


def screenshot(browser: Browser, path: Path) -> Path:
    data = browser.page("Page.captureScreenshot", format="png")["data"]
    path.write_bytes(base64.b64decode(data))
    return path


PAGE_STATE = """JSON.stringify({
  state: document.body.dataset.state,
  resultShown: getComputedStyle(document.getElementById('result')).display !== 'none',
  ood: document.getElementById('ood').hidden ? null
       : document.getElementById('ood').textContent,
  label: document.getElementById('label').textContent,
  versus: document.getElementById('versus').textContent,
  probabilities: [...document.querySelectorAll('.probability')].map(e => e.textContent),
  showing: document.getElementById('image').dataset.showing,
  imageWidth: document.getElementById('image').naturalWidth,
  toggleEnabled: !document.getElementById('overlay-toggle').disabled,
  card: document.getElementById('card').textContent,
  method: document.getElementById('method').textContent,
  noticeTop: document.getElementById('notice').getBoundingClientRect().top,
  notice: document.getElementById('notice').textContent,
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  error: document.getElementById('error').hidden ? null
         : document.getElementById('error').textContent,
})"""


@pytest.mark.parametrize(
    ("width", "height", "mobile"), [(1280, 900, False), (390, 844, True)]
)
def test_page_predicts_and_explains_a_real_xray(
    browser, real_model, fullres_dir, run_server, tmp_path, width, height, mobile
):
    url = run_server(create_app(real_model, device="cpu"))
    xray = sorted(fullres_dir.rglob("PNEUMONIA/*.jpeg"))[0]
    browser.page(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=mobile,
    )
    node = open_page(browser, url)
    # before an upload: no result card (no empty call, no broken image)
    before = json.loads(browser.evaluate(PAGE_STATE))
    screenshot(browser, tmp_path / f"serve-before-{width}px.png")
    assert not before["resultShown"] and before["state"] == "idle", before
    assert before["overflow"] <= 0
    shown = "getComputedStyle(document.getElementById('result')).display"

    browser.page("DOM.setFileInputFiles", files=[str(xray)], nodeId=node)
    browser.wait_for("['done', 'error'].includes(document.body.dataset.state)")
    # the overlay is a data URL that the browser decodes asynchronously
    browser.wait_for(
        "document.body.dataset.state === 'error' || "
        "document.getElementById('image').naturalWidth > 0",
        timeout=20,
    )
    state = json.loads(browser.evaluate(PAGE_STATE))
    shot = screenshot(browser, tmp_path / f"serve-{width}px.png")

    docs_dir = os.environ.get("CXRKIT_SCREENSHOT_DIR")  # docs/images for the guide
    if docs_dir:
        name = "serve_page.png" if not mobile else "serve_page_phone.png"
        shutil.copyfile(shot, Path(docs_dir) / name)

    assert state["error"] is None and state["state"] == "done", state
    assert state["resultShown"] and state["ood"] is None, state  # a chest X-ray
    assert state["label"] in ("NORMAL", "PNEUMONIA")
    assert len(state["probabilities"]) == 2
    assert (
        "PNEUMONIA probability" in state["versus"]
        and "threshold 0.5" in state["versus"]
    )
    assert all(p.endswith("%") for p in state["probabilities"])
    assert state["showing"] == "overlay" and state["imageWidth"] > 0
    assert state["toggleEnabled"]
    assert "Research and education only" in state["notice"]
    assert 0 <= state["noticeTop"] < height  # on screen
    assert "Trained on" in state["card"] and " images" in state["card"]
    # the heatmap drawn is the recommended method's, named beside it
    assert state["method"] == method_caption(DEFAULT_METHOD)
    assert "not where disease is" in state["method"]
    assert "cxrkit" in state["card"]
    assert state["overflow"] <= 0, f"page wider than {width} px"
    assert shot.stat().st_size > 10_000

    # the toggle shows the image without the heatmap, and back
    browser.evaluate("document.getElementById('overlay-toggle').click()")
    assert (
        browser.evaluate("document.getElementById('image').dataset.showing") == "image"
    )
    browser.evaluate("document.getElementById('overlay-toggle').click()")
    assert (
        browser.evaluate("document.getElementById('image').dataset.showing")
        == "overlay"
    )

    # a bad file shows the server's message on the page
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image")
    browser.page("DOM.setFileInputFiles", files=[str(bad)], nodeId=node)
    message = browser.wait_for(
        "document.body.dataset.state === 'error' && "
        "document.getElementById('error').textContent"
    )
    assert "notes.png" in message and "not an image" in message
    assert browser.evaluate(shown) == "none"  # not the last image's call


@pytest.fixture(scope="module")
def photograph(tmp_path_factory) -> Path:
    """A photograph (scikit-learn's sample image of a flower) as a JPEG upload."""
    from sklearn.datasets import load_sample_image

    path = tmp_path_factory.mktemp("photo") / "flower.jpg"
    Image.fromarray(load_sample_image("flower.jpg")).save(path, quality=90)
    return path


@pytest.mark.parametrize("refuse", [False, True])
def test_page_says_in_words_when_an_image_is_unlike_the_training_images(
    browser, real_model, photograph, run_server, tmp_path, refuse
):
    url = run_server(create_app(real_model, device="cpu", refuse_ood=refuse))
    browser.page(
        "Emulation.setDeviceMetricsOverride",
        width=1280,
        height=900,
        deviceScaleFactor=1,
        mobile=False,
    )
    node = open_page(browser, url)
    card = browser.evaluate("document.getElementById('card').textContent")
    assert "Unusual images" in card and "out-of-distribution score" in card
    browser.page("DOM.setFileInputFiles", files=[str(photograph)], nodeId=node)
    browser.wait_for("['done', 'error'].includes(document.body.dataset.state)")
    state = json.loads(browser.evaluate(PAGE_STATE))
    shot = screenshot(browser, tmp_path / f"serve-ood-refuse-{refuse}.png")
    docs_dir = os.environ.get("CXRKIT_SCREENSHOT_DIR")
    if docs_dir and not refuse:
        shutil.copyfile(shot, Path(docs_dir) / "serve_page_ood.png")

    assert state["error"] is None and state["state"] == "done", state
    assert "looks unlike the images the model was trained on" in state["ood"], state
    if refuse:
        assert "gives no call" in state["ood"]
        assert state["label"] == "none (refused)" and state["probabilities"] == []
        assert state["showing"] == "image" and not state["toggleEnabled"]
    else:
        assert "call and its heatmap below are unreliable" in state["ood"]
        assert state["label"] in ("NORMAL", "PNEUMONIA")
        assert state["showing"] == "overlay"
    assert state["overflow"] <= 0
