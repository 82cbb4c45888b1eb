"""What the report page adds to the metrics: thresholds, warnings, the
images, the model's provenance, legible figures."""

from __future__ import annotations

import html
import json
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from sklearn.base import BaseEstimator, ClassifierMixin

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.explain import DEFAULT_METHOD, method_caption
from cxrkit.metrics import clinical_report, select_threshold
from cxrkit.plot import method_title
from cxrkit.report import evaluation_report
from cxrkit.report._checks import degenerate_warnings, threshold_table
from cxrkit.report._figures import LUNG_CHECK_IMAGES, _lung_evidence_figure


class _Fixed(ClassifierMixin, BaseEstimator):
    """A fitted two-class model with given probabilities of PNEUMONIA."""

    def __init__(self, p=None):
        self.p = p
        self.classes_ = np.array(["NORMAL", "PNEUMONIA"])

    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        p = np.asarray(self.p, dtype=float)[: len(X)]
        return np.c_[1 - p, p]


Y = np.array(["NORMAL"] * 10 + ["PNEUMONIA"] * 10)


def test_threshold_table_counts_at_each_cut_off():
    p = np.r_[np.linspace(0.05, 0.6, 10), np.linspace(0.4, 0.95, 10)]
    report = clinical_report(Y, p, threshold=0.5, n_bootstrap=0)
    rows = threshold_table(report)
    assert [r["threshold"] for r in rows] == sorted(r["threshold"] for r in rows)
    at = {r["label"]: r for r in rows}
    half = at["used in this report"]
    called = p >= 0.5
    assert half["sensitivity"]["k"] == np.sum(called[10:])
    assert half["specificity"]["k"] == np.sum(~called[:10])
    assert half["ppv"]["m"] == half["n_positive"] == np.sum(called)
    youden = select_threshold(Y, p)
    assert at["Youden's J, on these data"]["threshold"] == pytest.approx(
        youden.threshold
    )
    assert at["sensitivity >= 0.95, on these data"]["sensitivity"]["value"] >= 0.95
    fixed = {r["threshold"]: r for r in rows if r["label"] == "fixed cut-off"}
    assert sorted(fixed) == [0.1, 0.25, 0.5, 0.75, 0.9]
    for cut, row in fixed.items():
        assert row["n_positive"] == np.sum(p >= cut)


def test_no_threshold_table_for_three_classes():
    y = np.array(["A", "B", "C"] * 4)
    proba = np.tile([[0.6, 0.3, 0.1]], (12, 1))
    report = clinical_report(y, proba, n_bootstrap=0)
    assert threshold_table(report) == []


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (np.full(20, 0.7), ["called every one of the 20 images PNEUMONIA", "same"]),
        (np.r_[np.full(10, 0.001), np.full(10, 0.999)], ["within 0.01 of 0 or 1"]),
        (np.r_[np.linspace(0.1, 0.6, 10), np.linspace(0.4, 0.9, 10)], []),
    ],
)
def test_degenerate_predictions_are_named(p, expected):
    report = clinical_report(Y, p, n_bootstrap=0)
    found = " ".join(degenerate_warnings(report))
    for text in expected:
        assert text in found
    assert bool(found) == bool(expected)


def test_degenerate_report_warns_once_and_says_so_on_the_page(tmp_path):
    X = np.zeros((20, 1))
    with pytest.warns(UserWarning, match="called every one") as record:
        evaluation_report(
            _Fixed(np.full(20, 0.9)), X, Y, tmp_path, n_bootstrap=50, n_misclassified=0
        )
    assert len([w for w in record if "called every one" in str(w.message)]) == 1
    page = (tmp_path / "report.html").read_text()
    assert page.count("Read with care.") == 2  # one class; same probabilities
    assert json.loads((tmp_path / "metrics.json").read_text())["warnings"]


def test_one_zero_width_note(tmp_path):
    p = np.r_[np.full(10, 0.1), np.full(10, 0.9)]  # all right: every CI collapses
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluation_report(_Fixed(p), np.zeros((20, 1)), Y, tmp_path, n_bootstrap=50)
    page = (tmp_path / "report.html").read_text()
    assert page.count("Zero-width bootstrap intervals") == 1
    assert "Sensitivity (recall) 10 of 10" in page and "Specificity 10 of 10" in page


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    X, y, _ = make_synthetic_cxr(60, image_size=32, random_state=1)
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i, (image, label) in enumerate(zip(X, y)):
        path = root / label / f"person{i}_bacteria_{i}_a_long_file_name.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return np.array(paths, dtype=object), y


def test_page_shows_images_provenance_and_legible_figures(image_files, tmp_path):
    X, y = image_files
    clf = PneumoniaClassifier(
        model="simple_cnn", image_size=32, max_epochs=1, random_state=0
    ).fit(X[:40], y[:40])
    path = clf.save(tmp_path / "m.cxr", threshold=0.4)
    loaded = PneumoniaClassifier.load(path)
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluation_report(loaded, X[40:], y[40:], out, n_bootstrap=50)
    assert report.threshold == 0.4  # the model file's threshold by default
    page = (out / "report.html").read_text()
    # one row per image, errors first, sortable
    table = page[page.index('id="images"') :]
    assert table.count("<tr><td title=") == 20
    wrong = int(np.sum(report.y_pred != report.y_true))
    cells = re.findall(r"<td>(yes|no)</td></tr>", table)
    assert cells == ["no"] * wrong + ["yes"] * (20 - wrong)
    assert "table.sortable" in page and "addEventListener" in page
    # where the model came from
    assert "Trained on <b>40</b> images" in page
    assert "Operating threshold recorded with the model: <b>0.4</b>" in page
    assert "patients" in page and str(X[0]).rsplit("/", 2)[0] in page
    # figures at 150 dpi, heatmaps of the errors when there are errors, by
    # the recommended method, named with its caveat; where the evidence lies
    with Image.open(out / "roc_curve.png") as png:
        assert png.width >= 5 * 150
    names = json.loads((out / "metrics.json").read_text())["figures"]
    assert ("heatmap_errors.png" in names) == bool(wrong)
    assert "lung_evidence.png" in names
    assert method_caption(DEFAULT_METHOD) in page
    assert "outside the lung field of a typical radiograph" in page


def test_figures_say_what_they_show(image_files, tmp_path):
    """The error grids show the table's P(PNEUMONIA) and name their files and
    their count of errors; the heatmap figure names its method; the model
    table prints no Python None; the calibration legend leaves the curve."""
    from cxrkit.report._figures import report_figures

    X, y = image_files
    clf = PneumoniaClassifier(
        model="simple_cnn", image_size=32, max_epochs=1, random_state=0
    ).fit(X[:40], y[:40])
    report = clinical_report(
        y[40:], clf.predict_proba(X[40:]), classes=clf.classes_, n_bootstrap=20
    )
    wrong = int(np.sum(report.y_pred != report.y_true))
    assert wrong >= 2, "the tiny model should make a few errors"
    figures = {f.stem: f for f in report_figures(clf, X[40:], report, 1, 2)}

    grid = figures["misclassified"]
    assert f"The 1 most confident of {wrong} errors" in grid.caption
    ax = grid.figure.axes[0]
    assert ax.get_title() == f"The 1 most confident of {wrong} errors"
    tile = ax.child_axes[0].get_title()
    assert "P(PNEUMONIA)=" in tile and "file_name.png" in tile

    heat = figures["heatmap_errors"]
    title = f"{method_title(DEFAULT_METHOD)} heatmaps"
    assert heat.figure.get_suptitle().startswith(title)
    titles = [a.get_title() for a in heat.figure.axes if a.images]
    assert all("P(PNEUMONIA)=" in t and ".png" in t for t in titles)

    calibration = figures["calibration"].figure
    calibration.canvas.draw()
    (axes,) = [a for a in calibration.axes if a.get_legend()]
    legend = axes.get_legend().get_window_extent()
    assert legend.y1 <= axes.get_window_extent().y0  # below the plot

    out = tmp_path / "r"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluation_report(clf, X[40:], y[40:], out, n_bootstrap=20, n_heatmaps=2)
    page = (out / "report.html").read_text()
    model = page[page.index("<h2>Model</h2>") : page.index("<h2>Metrics</h2>")]
    assert ">None<" not in model and "<td>none</td>" in model
    assert "<td>NORMAL, PNEUMONIA</td>" in model


class _Flagging(_Fixed):
    """`_Fixed` with an out-of-distribution detector that flags given images."""

    def __init__(self, p=None, scores=None):
        super().__init__(p)
        self.scores = scores
        self.ood_detector_ = SimpleNamespace(
            threshold_=0.5, method="given", alarm_rate=0.05
        )

    def ood_score(self, X):
        return np.asarray(self.scores, dtype=float)[: len(X)]


# Appended to the page: click headers, write each table's rows after the click.
CLICK = """
<script>
window.addEventListener("load", () => {
  const found = {};
  for (const [id, col] of [["images", 0], ["images", 3], ["ood-images", 2]]) {
    const table = document.getElementById(id);
    table.tHead.rows[0].cells[col].click();
    found[id + "/" + col] = [...table.tBodies[0].rows].map(
      (row) => [...row.cells].map((cell) => cell.textContent));
  }
  document.body.dataset.sorted = JSON.stringify(found);
});
</script>
"""


def test_each_table_sorts_by_its_own_column_in_a_browser(tmp_path):
    """With the unusual-images table above it, a click on a header of the
    Images table sorts the Images table by that header's column."""
    from test_browser import _run  # skips where Chromium is not installed

    rng = np.random.default_rng(0)
    p = rng.permutation(np.linspace(0.03, 0.97, 20))
    scores = np.r_[np.full(15, 0.1), 0.6, 0.9, 0.7, 0.8, 0.65]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluation_report(
            _Flagging(p, scores),
            np.zeros((20, 1)),
            Y,
            tmp_path,
            n_bootstrap=20,
            n_misclassified=0,
        )
    page = (tmp_path / "report.html").read_text("utf-8")
    assert page.index('id="ood-images"') < page.index('id="images"')
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.replace("</body>", CLICK + "</body>"), "utf-8")
    found = re.search(r'data-sorted="([^"]*)"', _run(clicked, "--dump-dom"))
    assert found, "the page did not finish loading in Chromium"
    sorted_rows = json.loads(html.unescape(found.group(1)))

    def by(rows, col):
        return sorted(rows, key=lambda row: float(row[col]))

    for key, col in [("images/0", 0), ("images/3", 3), ("ood-images/2", 2)]:
        rows = sorted_rows[key]
        assert rows == by(rows, col), (key, rows)
    images = sorted_rows["images/0"]
    assert len(images) == 20 and len(sorted_rows["ood-images/2"]) == 5
    # the rows stay whole: image i keeps its probability
    assert all(row[3] == f"{p[int(row[0])]:.3f}" for row in images)


@pytest.mark.parametrize("n", [10, 20])
def test_lung_evidence_explains_each_image_once(image_files, n):
    """Fewer images than LUNG_CHECK_IMAGES: each is explained once, and the
    caption and the histogram count them once."""
    X, y = image_files
    clf = PneumoniaClassifier(
        model="simple_cnn", image_size=32, max_epochs=1, random_state=0
    ).fit(X[:40], y[:40])
    X, y = X[40 : 40 + n], y[40 : 40 + n]
    assert n < LUNG_CHECK_IMAGES
    report = clinical_report(
        y, clf.predict_proba(X), classes=clf.classes_, n_bootstrap=0
    )
    figure = _lung_evidence_figure(clf, X, report)
    assert f"on {n} of the images" in figure.caption
    assert f"over {n} images." in figure.caption
    (ax,) = figure.figure.axes
    assert sum(bar.get_height() for bar in ax.patches) == n
