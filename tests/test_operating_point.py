"""One operating point: a model saved with a threshold predicts, reports,
serves and exports with that threshold (issue 28), and
``cxrkit.persistence.decision_rule`` is the one place that resolves it."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from conftest import FAST
from PIL import Image
from sklearn.dummy import DummyClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import FixedThresholdClassifier

from cxrkit import PneumoniaClassifier
from cxrkit.cli import main
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.persistence import operating_threshold

CLASSES = np.array(["NORMAL", "PNEUMONIA"])


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X, y, _ = make_synthetic_cxr(40, image_size=32, random_state=0)
    return X, y


@pytest.fixture(scope="module")
def fitted(data) -> PneumoniaClassifier:
    X, y = data
    return PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, y)


@pytest.fixture(scope="module")
def threshold(fitted, data) -> float:
    """A threshold that calls about half the images PNEUMONIA, in the widest
    gap between their probabilities (so float noise cannot move a call)."""
    p = np.sort(fitted.predict_proba(data[0])[:, 1])
    middle = p[len(p) // 4 : 3 * len(p) // 4 + 1]
    k = int(np.argmax(np.diff(middle)))
    return round(float(middle[k] + middle[k + 1]) / 2, 6)


@pytest.fixture(scope="module")
def saved(fitted, threshold, tmp_path_factory):
    """The model file saved with ``threshold``, and the model loaded from it."""
    path = fitted.save(tmp_path_factory.mktemp("op") / "m.cxr", threshold=threshold)
    return path, PneumoniaClassifier.load(path, device="cpu")


@pytest.fixture(scope="module")
def expected(fitted, data, threshold) -> np.ndarray:
    """The calls at the threshold; they differ from the most probable class."""
    proba = fitted.predict_proba(data[0])
    calls = np.where(proba[:, 1] >= threshold, "PNEUMONIA", "NORMAL")
    most_probable = fitted.classes_[proba.argmax(axis=1)]
    assert (calls != most_probable).sum() >= 5  # else the tests could not fail
    return calls


# ----------------------------------------------------------- the resolver
def test_decision_rule_argument_then_record_then_default():
    from cxrkit.persistence import DecisionRule, decision_rule

    clf = DummyClassifier().fit([[0], [1]], CLASSES)
    assert decision_rule(clf) == DecisionRule(None, "PNEUMONIA")
    clf.operating_threshold_ = operating_threshold(0.3, pos_label="PNEUMONIA")
    assert decision_rule(clf) == DecisionRule(0.3, "PNEUMONIA")
    assert decision_rule(clf, 0.7) == DecisionRule(0.7, "PNEUMONIA")
    assert decision_rule(clf, 0.7, pos_label="NORMAL") == DecisionRule(0.7, "NORMAL")
    # the record is on P(PNEUMONIA): it does not apply to another class
    assert decision_rule(clf, pos_label="NORMAL") == DecisionRule(None, "NORMAL")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        decision_rule(clf, 1.5)
    with pytest.raises(ValueError, match="not one of the classes"):
        decision_rule(clf, pos_label="COVID")


def test_decision_rule_for_other_classes():
    from cxrkit.persistence import DecisionRule, decision_rule

    ints = DummyClassifier().fit([[0], [1]], [0, 1])
    ints.operating_threshold_ = operating_threshold(0.2, pos_label=1)  # text "1"
    rule = decision_rule(ints)
    assert rule == DecisionRule(0.2, 1) and isinstance(rule.pos_label, int)
    three = DummyClassifier().fit([[0], [1], [2]], ["A", "B", "C"])
    assert decision_rule(three) == DecisionRule(None, None)
    with pytest.raises(ValueError, match="applies to two classes"):
        decision_rule(three, 0.5)
    # a positive class is refused before any image is decoded, not ignored
    with pytest.raises(ValueError, match="leave pos_label out"):
        decision_rule(three, pos_label="B")
    # no default positive class: the most probable class needs none
    pair = DummyClassifier().fit([[0], [1]], ["BACTERIA", "VIRUS"])
    assert decision_rule(pair) == DecisionRule(None, None)
    with pytest.raises(ValueError, match="pos_label="):
        decision_rule(pair, 0.5)
    assert decision_rule(pair, 0.5, pos_label="VIRUS") == DecisionRule(0.5, "VIRUS")
    pair.operating_threshold_ = operating_threshold(0.4, pos_label="COVID")
    with pytest.raises(ValueError, match="damaged or was edited"):
        decision_rule(pair)


# ---------------------------------------------- every caller, end to end
def test_predict_applies_the_recorded_threshold(fitted, saved, data, expected):
    _, loaded = saved
    X, _ = data
    assert fitted.operating_threshold_ is None  # a fresh fit: the most probable
    proba = fitted.predict_proba(X)
    np.testing.assert_array_equal(fitted.predict(X), CLASSES[proba.argmax(axis=1)])
    np.testing.assert_allclose(loaded.predict_proba(X), proba, atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(X), expected)
    # scikit-learn's convention: FixedThresholdClassifier at the same threshold
    fixed = FixedThresholdClassifier(
        FrozenEstimator(fitted),
        threshold=loaded.operating_threshold_["threshold"],
        response_method="predict_proba",
    ).fit(X, data[1])
    np.testing.assert_array_equal(fixed.predict(X), expected)


def test_report_uses_the_recorded_threshold(saved, data, threshold, expected, tmp_path):
    from cxrkit.report import evaluation_report

    _, loaded = saved
    X, y = data
    report = evaluation_report(
        loaded, X, y, tmp_path, n_bootstrap=0, n_misclassified=0, n_heatmaps=0
    )
    assert report.threshold == threshold
    np.testing.assert_array_equal(report.y_pred, expected)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metrics"]["threshold"] == threshold


def test_cli_predict_uses_the_recorded_threshold(saved, data, expected, tmp_path):
    path, _ = saved
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(data[0]):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(path), str(folder), "--csv", str(out), "-q"]) == 0
    rows = sorted(csv.DictReader(out.open()), key=lambda row: row["path"])
    assert [row["predicted"] for row in rows] == expected.tolist()


def test_server_uses_the_recorded_threshold(saved, data, threshold, expected):
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from cxrkit.serve import create_app

    path, _ = saved
    files = []
    for i, image in enumerate(data[0]):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        files.append(("file", (f"{i}.png", buffer.getvalue(), "image/png")))
    with TestClient(create_app(path, device="cpu")) as client:
        card = client.get("/model").json()
        answer = client.post("/predict", files=files).json()
    assert card["threshold"] == threshold and card["positive_class"] == "PNEUMONIA"
    assert answer["threshold"] == threshold
    assert [p["label"] for p in answer["predictions"]] == expected.tolist()


def test_export_records_the_recorded_threshold(
    saved, data, threshold, expected, tmp_path
):
    """Before issue 28, ``cxrkit export`` of this model wrote decision_rule=argmax."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from cxrkit.images import ImageDataset
    from cxrkit.persistence import INPUT_NAME

    path, loaded = saved
    out = tmp_path / "m.onnx"
    assert main(["export", str(path), str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["decision_rule"] == "threshold"
    assert float(meta["threshold"]) == threshold
    assert meta["positive_class"] == "PNEUMONIA" and meta["positive_column"] == "1"
    # the metadata's rule on the graph's output gives the model's calls
    x = np.stack([image.numpy() for image, _ in ImageDataset(data[0])])
    (proba,) = session.run(None, {INPUT_NAME: x})
    column = int(meta["positive_column"])
    calls = np.where(
        proba[:, column] >= float(meta["threshold"]), meta["positive_class"], "NORMAL"
    )
    np.testing.assert_array_equal(calls, expected)
    # an explicit threshold still wins over the recorded one
    other = loaded.export_onnx(tmp_path / "other.onnx", threshold=0.25)
    session = ort.InferenceSession(str(other), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["threshold"] == "0.25"


def test_a_threshold_for_other_classes_is_saved_with_its_positive_class(data, tmp_path):
    X, y = data
    other = np.where(y == "PNEUMONIA", "VIRUS", "BACTERIA")
    clf = PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, other)
    with pytest.raises(ValueError, match="pos_label"):
        clf.save(tmp_path / "m.cxr", threshold=0.3)
    path = clf.save(tmp_path / "m.cxr", threshold=0.3, pos_label="VIRUS")
    loaded = PneumoniaClassifier.load(path, device="cpu")
    assert loaded.operating_threshold_ == {"threshold": 0.3, "pos_label": "VIRUS"}
    proba = loaded.predict_proba(X)[:, list(loaded.classes_).index("VIRUS")]
    np.testing.assert_array_equal(
        loaded.predict(X), np.where(proba >= 0.3, "VIRUS", "BACTERIA")
    )
