"""Evaluation report: files, a self-contained HTML page, model comparison."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from conftest import FAST
from sklearn.base import BaseEstimator, ClassifierMixin

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.report import compare_models, evaluation_report, predict_proba


@pytest.fixture(scope="module")
def model_and_data():
    X, y, _ = make_synthetic_cxr(100, image_size=32, random_state=0)
    clf = PneumoniaClassifier(model="simple_cnn", **FAST).fit(X[:60], y[:60])
    return clf, X[60:], y[60:]


class _Links(HTMLParser):
    """Every src / href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def _links(page: Path) -> list[str]:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.links


def test_report_writes_json_csv_figures_and_self_contained_html(
    model_and_data, tmp_path
):
    clf, X, y = model_and_data
    report = evaluation_report(
        clf, X, y, tmp_path / "out", n_bootstrap=300, data_name="40 test images"
    )
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "predictions.csv", "report.html"} <= names
    for stem in ("confusion_matrix", "roc_curve", "precision_recall", "calibration"):
        assert (out / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
    assert "training_history.png" in names  # the model has a history

    data = json.loads((out / "metrics.json").read_text())
    assert data["metrics"] == report.to_dict()
    assert data["data"]["description"] == "40 test images"
    assert data["data"]["support"] == {
        c: int(np.sum(y == c)) for c in ("NORMAL", "PNEUMONIA")
    }
    assert "not a medical device" in data["disclaimer"]
    for figure in data["figures"]:
        assert (out / figure).is_file()

    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "index,true,predicted,p_NORMAL,p_PNEUMONIA,ood_score,ood"
    assert len(rows) == len(y) + 1
    proba = clf.predict_proba(X)
    first = rows[1].split(",")
    assert float(first[4]) == pytest.approx(proba[0, 1], abs=1e-6)

    page = out / "report.html"
    text = page.read_text(encoding="utf-8")
    assert "Not a medical device" in text and "40 test images" in text
    for section in ("Data", "Model", "Metrics", "Figures", "Definitions"):
        assert f"<h2>{section}</h2>" in text
    links = _links(page)
    assert len(links) >= 5
    for link in links:  # embedded, or a file that exists
        assert link.startswith("data:image/png;base64,") or (out / link).exists()
    sens = report.metrics["sensitivity"]
    assert f"{sens.value:.3f}" in text
    assert "Fewer than 30 images" in text  # 40 images: warned about


def test_report_on_image_files_lists_paths_and_misclassified(model_and_data, tmp_path):
    from PIL import Image

    clf, X, y = model_and_data
    paths = []
    for i, image in enumerate(X[:12]):
        path = tmp_path / "images" / y[i] / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        paths.append(str(path))
    evaluation_report(clf, paths, y[:12], tmp_path / "out", n_bootstrap=100)
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert str(tmp_path / "images") in data["data"]["description"]
    wrong = np.sum(clf.predict(np.asarray(X[:12])) != y[:12])
    assert ("misclassified.png" in data["figures"]) == bool(wrong)
    predictions = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "path,true,predicted,p_NORMAL,p_PNEUMONIA,ood_score,ood"
    assert predictions[1].startswith(f"{paths[0]},{y[0]},")


def test_report_errors(model_and_data, tmp_path):
    clf, X, y = model_and_data
    with pytest.raises(ValueError, match="40 images but y has 39"):
        evaluation_report(clf, X, y[:-1], tmp_path)
    with pytest.raises(ValueError, match="not one of the classes"):
        evaluation_report(clf, X, y, tmp_path, pos_label="COVID")


class _NeverPredicts(ClassifierMixin, BaseEstimator):
    """A fitted two-class model that fails the test if it is asked to predict."""

    def __init__(self, classes=("a", "b")):
        self.classes = classes
        self.classes_ = np.asarray(classes)

    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        raise AssertionError("predicted before the positive class was checked")


def test_positive_class_follows_scikit_learn_and_is_checked_first(tmp_path):
    from sklearn.linear_model import LogisticRegression

    X = np.r_[np.linspace(0, 1, 30), np.linspace(0.5, 1.5, 30)][:, None]
    y01 = np.repeat([0, 1], 30)
    report = evaluation_report(
        LogisticRegression().fit(X, y01),
        X,
        y01,
        tmp_path,
        n_bootstrap=50,
        n_misclassified=0,
    )
    assert report.pos_label == 1  # scikit-learn's default for 0/1 labels
    # Two classes without PNEUMONIA or 0/1: an error naming them, before predicting
    with pytest.raises(ValueError, match=r"\['BACTERIA', 'VIRUS'\].*pos_label="):
        evaluation_report(_NeverPredicts(["BACTERIA", "VIRUS"]), X, y01, tmp_path)
    with pytest.raises(ValueError, match="not one of the classes"):
        evaluation_report(_NeverPredicts([0, 1]), X, y01, tmp_path, pos_label=2)


def test_report_page_escapes_what_it_shows(model_and_data, tmp_path):
    clf, X, y = model_and_data
    name = "<script>alert(1)</script> & co"
    evaluation_report(clf, X, y, tmp_path, n_bootstrap=20, data_name=name)
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert (
        "<script>alert" not in text  # the page has its own script (sorting)
        and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text
    )


def test_progress_bar_while_predicting(model_and_data, capsys):
    clf, X, _ = model_and_data
    proba = predict_proba(clf, X, batch_size=16, progress=True)
    np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-6)
    assert "predicting" in capsys.readouterr().err
    predict_proba(clf, X, batch_size=16)  # 40 images: no bar by default
    assert "predicting" not in capsys.readouterr().err


def test_compare_models_table_and_paired_difference(model_and_data):
    clf, X, y = model_and_data
    other = PneumoniaClassifier(model="simple_cnn", **{**FAST, "random_state": 1})
    other.fit(X, y)
    comparison = compare_models(
        {"first": clf, "same": clf, "other": other}, X, y, n_bootstrap=300
    )
    diffs = comparison.auc_differences()
    assert diffs["same"] == (0.0, 0.0, 0.0)  # paired: the same resamples
    auc = {k: r.metrics["roc_auc"].value for k, r in comparison.reports.items()}
    assert diffs["other"].value == pytest.approx(auc["other"] - auc["first"])
    assert diffs["other"].low <= diffs["other"].value <= diffs["other"].high
    table = str(comparison)
    assert table.splitlines()[0].startswith("model") and "other" in table
    assert set(comparison.to_dict()) == {"first", "same", "other"}
    three = PneumoniaClassifier(model="simple_cnn", **FAST).fit(
        X, np.where(np.arange(len(y)) % 3 == 0, "VIRUS", y)
    )
    with pytest.raises(ValueError, match="same classes"):
        compare_models({"a": clf, "b": three}, X, y)


@pytest.mark.parametrize("random_state", [None, 0, 12345])
def test_a_model_compared_with_itself_differs_by_exactly_zero(
    model_and_data, random_state
):
    clf, X, y = model_and_data
    comparison = compare_models(
        {"a": clf, "b": clf}, X, y, n_bootstrap=200, random_state=random_state
    )
    assert comparison.auc_differences()["b"] == (0.0, 0.0, 0.0)
    assert "paired: every model is measured on the same resamples" in str(comparison)


def test_reports_resampled_apart_get_no_paired_interval(model_and_data):
    from cxrkit.metrics import clinical_report
    from cxrkit.report import ModelComparison

    clf, X, y = model_and_data
    proba = clf.predict_proba(X)
    reports = {k: clinical_report(y, proba, n_bootstrap=50) for k in "ab"}
    comparison = ModelComparison(y, {"a": proba, "b": proba}, reports)
    with pytest.raises(ValueError, match="not resampled together"):
        comparison.auc_differences()


def test_report_with_three_classes(tmp_path):
    X, y, _ = make_synthetic_cxr(90, image_size=32, random_state=1)
    y = np.where(np.arange(len(y)) % 3 == 0, "VIRUS", y)
    clf = PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, y)
    report = evaluation_report(clf, X, y, tmp_path, n_bootstrap=100, n_misclassified=4)
    assert report.average == "macro"
    assert set(report.per_class) == {"NORMAL", "PNEUMONIA", "VIRUS"}
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "most probable class" in text and "One vs rest" in text
    assert not (tmp_path / "roc_curve.png").exists()  # ROC is for two classes
    assert (tmp_path / "confusion_matrix.png").is_file()
