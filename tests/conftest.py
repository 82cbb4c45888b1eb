"""Shared test fixtures: seeds, tiny synthetic data, one fitted model, real data.

Small settings for tests live here, in one place. Real chest X-rays come
from the sample shipped in the package (``sample_cxr``: 600 Kermany images
at 128 px, always there) or, for what needs the full dataset or full-size
images, from ``../shared/data`` (beside the repository; CI has it too),
never copied into the repository.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import load_sample_cxr, make_synthetic_cxr

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KERMANY = SHARED_DATA / "chest_xray"
FULLRES = SHARED_DATA / "chest_xray_fullres"

#: Settings that keep a fit to a second or two on 2 CPU cores.
FAST = {"image_size": 32, "max_epochs": 1, "batch_size": 16, "random_state": 0}

torch.set_num_threads(min(2, torch.get_num_threads()))


class _Count:
    n = 0


@contextmanager
def network_images(clf: PneumoniaClassifier) -> Iterator[_Count]:
    """Count the images a fitted classifier's network runs on (``.n``)."""
    count = _Count()

    def seen(_module, args, _out) -> None:
        count.n += len(args[0])

    handle = clf.net_.module_.register_forward_hook(seen)
    try:
        yield count
    finally:
        handle.remove()


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 (seeds code that uses the legacy global RNG)
    torch.manual_seed(0)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture(scope="session")
def kermany_dir() -> Path:
    """``../shared/data/chest_xray`` (train and val splits, 224 px)."""
    return _require(KERMANY)


@pytest.fixture(scope="session")
def fullres_dir() -> Path:
    """``../shared/data/chest_xray_fullres`` (120 full-resolution originals)."""
    return _require(FULLRES)


@pytest.fixture(scope="session")
def sample_cxr():
    """The real sample in the package (``load_sample_cxr()``): 300 NORMAL and
    300 PNEUMONIA Kermany radiographs, 128 px, one per patient."""
    return load_sample_cxr()


@pytest.fixture(scope="session")
def synthetic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """400 synthetic 64 px images, labels and lesion masks."""
    return make_synthetic_cxr(400, image_size=64, random_state=0)


@pytest.fixture(scope="session")
def fitted_synthetic(synthetic) -> PneumoniaClassifier:
    """A cnn4 trained on ``synthetic`` with the default augmentation.

    Shared by every test that needs a trained model (about 20 s once).
    Do not modify it in a test.
    """
    X, y, _ = synthetic
    clf = PneumoniaClassifier(
        model="cnn4", image_size=64, max_epochs=6, augment="default", random_state=0
    )
    return clf.fit(X, y)


@pytest.fixture(scope="session")
def fast() -> dict:
    """``FAST`` settings (a copy), for tests that fit their own small models."""
    return dict(FAST)


@pytest.fixture
def run_server():
    """Start an ASGI app with uvicorn on a free loopback port; gives its URL.

    Servers stop at the end of the test. Needs ``cxrkit[serve]``.
    """
    import socket
    import threading
    import time

    uvicorn = pytest.importorskip("uvicorn")
    running = []

    def start(app) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # the OS picks a free port: no race
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        thread.start()
        running.append((server, thread, sock))
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread, sock in running:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built with ``mkdocs build --strict`` (once)."""
    import subprocess
    import sys

    pytest.importorskip("mkdocs", reason='needs pip install -e ".[docs]"')
    site = tmp_path_factory.mktemp("site")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", site],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return site
