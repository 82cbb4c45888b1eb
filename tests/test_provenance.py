"""Model files say what the model was trained on and which threshold was
chosen for it, and are written with the permissions of any new file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.metrics import OperatingPoint


@pytest.fixture(scope="module")
def model(fast) -> PneumoniaClassifier:
    X, y, _ = make_synthetic_cxr(40, image_size=32, random_state=0)
    return PneumoniaClassifier(model="simple_cnn", **fast).fit(X, y)


def test_fit_records_the_training_data(model):
    data = model.training_data_
    assert data["source"] == "images given as an array"
    assert data["n_images"] == 40
    assert data["n_validation"] > 0  # validation_fraction=0.1 by default
    assert sum(c["images"] for c in data["classes"].values()) == 40
    assert all(c["patients"] is None for c in data["classes"].values())
    assert model.operating_threshold_ is None


def test_threshold_and_training_data_survive_the_model_file(tmp_path, model):
    point = OperatingPoint(0.31, 0.95, 0.6, "sensitivity >= 0.95")
    same = PneumoniaClassifier.load(model.save(tmp_path / "m.cxr", threshold=point))
    assert same.operating_threshold_ == {
        "threshold": 0.31,
        "pos_label": "PNEUMONIA",
        "criterion": "sensitivity >= 0.95",
        "sensitivity": 0.95,
        "specificity": 0.6,
    }
    assert same.training_data_ == model.training_data_
    assert model.operating_threshold_ is None  # saving does not change the model
    # saved again without a threshold: the recorded one stays
    again = PneumoniaClassifier.load(same.save(tmp_path / "n.cxr"))
    assert again.operating_threshold_["threshold"] == 0.31


def test_bad_thresholds_are_refused(tmp_path, model, fast):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.save(tmp_path / "m.cxr", threshold=1.5)
    X, _, _ = make_synthetic_cxr(30, image_size=32, random_state=0)
    three = PneumoniaClassifier(model="simple_cnn", **fast).fit(
        X, np.array(["A", "B", "C"] * 10)
    )
    with pytest.raises(ValueError, match="two classes"):
        three.save(tmp_path / "t.cxr", threshold=0.5)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_model_files_follow_the_umask(tmp_path, model, umask, mode):
    old = os.umask(umask)
    try:
        path = model.save(tmp_path / "m.cxr")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    path.chmod(0o640)  # replacing a file keeps its mode
    assert model.save(path).stat().st_mode & 0o777 == 0o640
