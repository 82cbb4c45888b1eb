"""Every figure renders to PNG without a display."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import FAST

from cxrkit import PneumoniaClassifier, plot
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.metrics import clinical_report
from cxrkit.report import ModelComparison

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(0)
    y = np.array(["NORMAL"] * 40 + ["PNEUMONIA"] * 60)
    p = np.clip(rng.normal(0.35 + 0.3 * (y == "PNEUMONIA"), 0.2), 0, 1)
    return y, p


@pytest.fixture(scope="module")
def tiny_model():
    X, y, _ = make_synthetic_cxr(48, image_size=32, random_state=0)
    fast = {**FAST, "max_epochs": 2}
    return PneumoniaClassifier(model="simple_cnn", **fast).fit(X, y), X, y


def _png(ax) -> bytes:
    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png")
    plt.close(ax.figure)
    data = buffer.getvalue()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000
    return data


def test_backend_is_headless():
    assert matplotlib.get_backend().lower() == "agg"


def test_confusion_matrix_shows_counts_and_row_percentages():
    _, ax = plt.subplots()
    y_true = ["NORMAL"] * 4 + ["PNEUMONIA"] * 6
    y_pred = (
        ["NORMAL", "NORMAL", "NORMAL", "PNEUMONIA"] + ["PNEUMONIA"] * 5 + ["NORMAL"]
    )
    assert plot.plot_confusion_matrix(y_true, y_pred, ax=ax) is ax
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["3\n75%", "1\n25%", "1\n17%", "5\n83%"]
    _png(ax)
    # The same from a report whose threshold makes the same calls.
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.2])
    report = clinical_report(y_true, p, n_bootstrap=0)
    ax = plot.plot_confusion_matrix(report=report)
    assert [t.get_text() for t in ax.texts] == texts


def test_roc_marks_auc_interval_and_operating_point(predictions):
    y, p = predictions
    report = clinical_report(y, p, threshold=0.4, n_bootstrap=200)
    _, ax = plt.subplots()
    assert plot.plot_roc(report=report, ax=ax) is ax
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    auc = report.metrics["roc_auc"]
    assert labels[0] == f"AUC {auc.value:.3f} (95% CI {auc.low:.3f}-{auc.high:.3f})"
    sens = np.mean(p[y == "PNEUMONIA"] >= 0.4)  # at the report's threshold
    assert f"threshold 0.4: sensitivity {sens:.2f}" in labels[1]
    point = ax.get_lines()[1]
    assert point.get_ydata()[0] == pytest.approx(sens)
    _png(ax)
    with pytest.raises(TypeError, match="not both"):
        plot.plot_roc(y, p, report=report)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 1.0])
def test_an_operating_point_of_0_is_not_0_5(predictions, threshold):
    y, p = predictions
    ax = plot.plot_roc(y, p, threshold=threshold)
    point = ax.get_lines()[1]
    is_pos = y == "PNEUMONIA"
    assert point.get_ydata()[0] == pytest.approx(np.mean(p[is_pos] >= threshold))
    assert point.get_xdata()[0] == pytest.approx(np.mean(p[~is_pos] >= threshold))
    ax = plot.plot_precision_recall(y, p, threshold=threshold)
    if threshold == 0.0:  # every image called positive: PPV is the prevalence
        assert ax.get_lines()[-1].get_ydata()[0] == pytest.approx(np.mean(is_pos))


def test_plots_of_predictions_never_bootstrap(predictions, monkeypatch):
    from cxrkit.metrics import _bootstrap

    def refuse(*args, **kwargs):
        raise AssertionError("a plot ran a bootstrap")

    monkeypatch.setattr(_bootstrap, "stratified_weights", refuse)
    y, p = predictions
    labels = plot.plot_roc(y, p).get_legend().get_texts()
    assert labels[0].get_text().startswith("AUC ") and "CI" not in labels[0].get_text()
    plot.plot_precision_recall(y, p)
    plot.plot_calibration(y, p)


def test_figures_are_made_without_pyplot(predictions):
    y, p = predictions
    before = plt.get_fignums()
    axes = [
        plot.plot_roc(y, p),
        plot.plot_precision_recall(y, p),
        plot.plot_calibration(y, p),
        plot.plot_confusion_matrix(y, np.where(p >= 0.5, "PNEUMONIA", "NORMAL")),
        plot.plot_class_distribution(y),
    ]
    assert plt.get_fignums() == before  # no figure left open in pyplot
    for ax in axes:
        _png(ax)


def test_curves_of_0_1_labels_take_1_as_positive():
    y = np.repeat([0, 1], 20)
    p = np.r_[np.linspace(0, 0.7, 20), np.linspace(0.3, 1, 20)]
    ax = plot.plot_calibration(y, p, n_bins=4)
    assert ax.get_xlabel() == "predicted probability of 1"
    with pytest.raises(ValueError, match="pos_label="):
        plot.plot_roc(np.where(y == 1, "b", "a"), p)


def test_precision_recall_and_calibration(predictions):
    y, p = predictions
    ax = plot.plot_precision_recall(y, p)
    assert any("prevalence 0.60" in t.get_text() for t in ax.get_legend().get_texts())
    _png(ax)
    ax = plot.plot_calibration(y, np.c_[1 - p, p])
    assert ax.get_lines()[1].get_xdata().max() <= 1
    _png(ax)
    with pytest.raises(ValueError, match="two classes"):
        plot.plot_roc(["a", "b", "c"], np.full((3, 3), 1 / 3))


def test_history_from_a_fitted_classifier(tiny_model):
    clf, _, _ = tiny_model
    ax = plot.plot_history(clf)
    labels = {line.get_label() for line in ax.get_lines()}
    assert "train_loss" in labels
    assert len(ax.get_lines()[0].get_xdata()) == len(clf.history_)
    _png(ax)
    with pytest.raises(ValueError, match="history is empty"):
        plot.plot_history([])


def test_class_distribution_counts(predictions):
    y, _ = predictions
    ax = plot.plot_class_distribution({"test": y, "other": y[:10]})
    heights = sorted(round(b.get_height()) for b in ax.patches)
    assert heights == [0, 10, 40, 60]
    _png(ax)


def test_misclassified_grid_most_confident_first(tiny_model):
    clf, X, y = tiny_model
    proba = clf.predict_proba(X)
    y_pred = np.array(["PNEUMONIA"] * len(y))  # every NORMAL is an error
    n_wrong = int(np.sum(y != y_pred))
    ax = plot.plot_misclassified(X, y, y_pred, proba, classes=clf.classes_, n=6)
    assert len(ax.child_axes) == min(6, n_wrong)
    first = ax.child_axes[0].get_title()
    top = np.max(proba[y != y_pred, 1])
    assert f"({top:.2f})" in first and "true NORMAL" in first
    _png(ax)
    ax = plot.plot_misclassified(X, y, y, proba, classes=clf.classes_)
    assert "no misclassified" in ax.texts[0].get_text()
    _png(ax)


def test_model_comparison_figure(predictions):
    y, p = predictions
    comparison = ModelComparison.from_predictions(
        y, {"model a": p, "model b": p**2}, n_bootstrap=200
    )
    ax = plot.plot_model_comparison(comparison)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("model a: AUC") and labels[1].startswith("model b")
    _png(ax)


def test_misclassified_tiles_name_the_files(tiny_model, tmp_path):
    from PIL import Image

    clf, X, y = tiny_model
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"case{i}.png"))
        Image.fromarray(X[i]).save(paths[-1])
    paths = np.array(paths, dtype=object)  # as load_image_folder returns them
    wrong = np.where(y[:4] == "NORMAL", "PNEUMONIA", "NORMAL")
    proba = clf.predict_proba(paths)
    ax = plot.plot_misclassified(paths, y[:4], wrong, proba, classes=clf.classes_)
    titles = " ".join(a.get_title() for a in ax.child_axes)
    assert all(f"case{i}.png" in titles for i in range(4))
    _png(ax)
