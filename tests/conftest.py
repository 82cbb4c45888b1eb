"""Shared test fixtures: seeds, tiny synthetic data, one fitted model, real data.

Small settings for tests live here, in one place. Real chest X-rays are read
from ``../shared/data`` (beside the repository; CI has it too) and are never
copied into the repository.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KERMANY = SHARED_DATA / "chest_xray"
FULLRES = SHARED_DATA / "chest_xray_fullres"

#: Settings that keep a fit to a second or two on 2 CPU cores.
FAST = {"image_size": 32, "max_epochs": 1, "batch_size": 16, "random_state": 0}

torch.set_num_threads(min(2, torch.get_num_threads()))


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
