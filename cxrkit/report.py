"""Evaluation report: metrics, figures and one self-contained HTML page;
comparison of several models on the same images.

For research and education; not a medical device.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted, column_or_1d

from cxrkit.cache import is_path_like_sequence
from cxrkit.metrics import ClinicalReport, Estimate, _interval, clinical_report

__all__ = ["ModelComparison", "compare_models", "evaluation_report", "predict_proba"]

DISCLAIMER = (
    "For research and education only. This model is not a medical device: it is "
    "not cleared or approved for diagnosis, and its output must not guide the "
    "care of a patient."
)
_PROGRESS_MIN = 256  # images above which a progress bar is shown by default


def predict_proba(
    clf: Any,
    X: Sequence[str | os.PathLike] | np.ndarray,
    *,
    batch_size: int = 256,
    progress: bool | None = None,
) -> np.ndarray:
    """``clf.predict_proba(X)`` in batches, with a progress bar.

    Parameters
    ----------
    clf : fitted classifier
    X : sequence of paths, or ndarray of images
    batch_size : int, default=256
        Images decoded and predicted at a time.
    progress : bool, optional
        Show a tqdm progress bar; by default when X has more than 256 images.

    Returns
    -------
    ndarray of shape (n, n_classes)

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> clf = DummyClassifier().fit(np.zeros((4, 1)), [0, 0, 0, 1])
    >>> predict_proba(clf, np.zeros((3, 1)), batch_size=2).tolist()
    [[0.75, 0.25], [0.75, 0.25], [0.75, 0.25]]
    """
    from tqdm.auto import tqdm

    n = len(X)
    if n == 0:
        raise ValueError("X holds no images")
    if progress is None:
        progress = n > _PROGRESS_MIN
    parts = []
    with tqdm(total=n, desc="predicting", unit="image", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            parts.append(np.asarray(clf.predict_proba(X[start : start + batch_size])))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def _default_pos_label(classes: np.ndarray) -> Any:
    labels = classes.tolist()
    return "PNEUMONIA" if "PNEUMONIA" in labels else labels[-1]


def _predicted(report: ClinicalReport, proba: np.ndarray) -> np.ndarray:
    classes = np.asarray(report.classes)
    if report.average is None:
        pos = report.classes.index(report.pos_label)
        return np.where(
            proba[:, pos] >= report.threshold, classes[pos], classes[1 - pos]
        )
    return classes[proba.argmax(axis=1)]


# ------------------------------------------------------------------ compare
@dataclass
class ModelComparison:
    """Several models' reports on the same images.

    ``print()`` shows one table; the ROC curves are drawn by
    :func:`cxrkit.plot.plot_model_comparison`. Every model is resampled with
    the same bootstrap draws, so the difference in ROC AUC to the first
    model has a paired interval.
    """

    y_true: np.ndarray
    proba: dict[str, np.ndarray]
    reports: dict[str, ClinicalReport]

    @classmethod
    def from_predictions(
        cls,
        y_true: Sequence | np.ndarray,
        probas: Mapping[str, np.ndarray],
        **kwargs: Any,
    ) -> ModelComparison:
        """Compare precomputed probabilities; ``kwargs`` go to
        :func:`~cxrkit.metrics.clinical_report`."""
        y_true = column_or_1d(np.asarray(y_true))
        if not probas:
            raise ValueError("no models to compare: pass {name: proba, ...}")
        reports = {
            name: clinical_report(y_true, p, **kwargs) for name, p in probas.items()
        }
        return cls(y_true, {k: np.asarray(v) for k, v in probas.items()}, reports)

    def auc_differences(self) -> dict[str, Estimate]:
        """ROC AUC of each model minus that of the first, with paired CIs."""
        (_, ref), *others = self.reports.items()
        out = {}
        for name, report in others:
            diff = report._replicates["roc_auc"] - ref._replicates["roc_auc"]
            value = report.metrics["roc_auc"].value - ref.metrics["roc_auc"].value
            out[name] = Estimate(value, *_interval(diff, report.confidence))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Per model: its report as a dict and the AUC difference to the first."""
        diffs = self.auc_differences()
        return {
            name: {
                "report": report.to_dict(),
                "roc_auc_minus_first": diffs[name]._asdict() if name in diffs else None,
            }
            for name, report in self.reports.items()
        }

    def __str__(self) -> str:
        keys = ("roc_auc", "sensitivity", "specificity", "ppv", "npv", "f1", "brier")
        heads = ("ROC AUC", "sensitivity", "specificity", "PPV", "NPV", "F1", "Brier")
        first = next(iter(self.reports))
        diffs = self.auc_differences()
        width = max(len(n) for n in self.reports) + 2
        lines = [
            f"{'model':<{width}}"
            + "".join(f"{h:>21}" for h in heads)
            + f"{'AUC - ' + first[:12]:>23}"
        ]
        for name, report in self.reports.items():
            cells = "".join(f"{report.metrics[k]!s:>21}" for k in keys)
            diff = f"{diffs[name]!s:>23}" if name in diffs else f"{'':>23}"
            lines.append(f"{name:<{width}}{cells}{diff}")
        report = self.reports[first]
        lines.append(
            f"{report.n} images; estimate (low-high): {report.ci_method}, the same "
            "resamples for every model"
        )
        return "\n".join(lines)


def compare_models(
    models: Mapping[str, Any],
    X: Sequence[str | os.PathLike] | np.ndarray,
    y: Sequence | np.ndarray,
    *,
    progress: bool | None = None,
    **kwargs: Any,
) -> ModelComparison:
    """Evaluate several fitted models on the same images.

    Parameters
    ----------
    models : mapping of name to fitted classifier
        E.g. ``{"cnn4": clf_a, "resnet18": clf_b}``; all with the same
        ``classes_``.
    X : sequence of paths, or ndarray of images
    y : array-like of shape (n,)
    progress : bool, optional
        Progress bars while predicting (default: above 256 images).
    **kwargs
        Passed to :func:`~cxrkit.metrics.clinical_report` (``threshold``,
        ``pos_label``, ``n_bootstrap``, ...).

    Returns
    -------
    ModelComparison

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.r_[np.linspace(0, 1, 30), np.linspace(0.5, 1.5, 30)][:, None]
    >>> y = np.array(["NORMAL"] * 30 + ["PNEUMONIA"] * 30)
    >>> models = {"logistic": LogisticRegression().fit(X, y),
    ...           "dummy": DummyClassifier().fit(X, y)}
    >>> comparison = compare_models(models, X, y, n_bootstrap=200)
    >>> round(comparison.reports["dummy"].metrics["roc_auc"].value, 2)
    0.5
    """
    classes = None
    probas = {}
    for name, clf in models.items():
        check_is_fitted(clf)
        if classes is not None and list(clf.classes_) != list(classes):
            raise ValueError(
                f"model {name!r} has classes {list(clf.classes_)}, the first model "
                f"{list(classes)}: compare models trained on the same classes"
            )
        classes = clf.classes_
        probas[name] = predict_proba(clf, X, progress=progress)
    if classes is None:
        raise ValueError("no models to compare: pass {name: fitted classifier}")
    kwargs.setdefault("classes", classes)
    kwargs.setdefault("pos_label", _default_pos_label(np.asarray(classes)))
    return ModelComparison.from_predictions(y, probas, **kwargs)


# ------------------------------------------------------------------- report
def _describe_data(X: Any, data_name: str | None) -> str:
    if data_name:
        return data_name
    if is_path_like_sequence(X):
        paths = [os.path.abspath(os.fspath(p)) for p in X]
        try:
            root = os.path.commonpath(paths)
        except ValueError:  # paths on different drives
            root = "several folders"
        return f"{len(paths)} image files under {root}"
    return f"{len(X)} images given as an array"


def _model_summary(clf: Any) -> dict[str, Any]:
    params = clf.get_params() if hasattr(clf, "get_params") else {}
    keep = ("model", "pretrained", "image_size", "class_weight", "max_epochs", "lr")
    summary = {k: params[k] for k in keep if k in params}
    summary["estimator"] = type(clf).__name__
    summary["classes"] = [str(c) for c in clf.classes_]
    history = getattr(clf, "history_", None)
    if history is not None:
        summary["epochs_trained"] = len(history)
    return {
        k: (os.fspath(v) if isinstance(v, os.PathLike) else v)
        for k, v in summary.items()
    }


def _figures(
    clf: Any,
    X: Any,
    y: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray,
    report: ClinicalReport,
    n_misclassified: int,
) -> list[tuple[str, str, Any]]:
    """(file stem, caption, figure) of each figure of the report."""
    import matplotlib.pyplot as plt

    from cxrkit import plot

    figures = []

    def add(stem: str, caption: str, draw: Any, figsize: tuple) -> None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        draw(ax)
        figures.append((stem, caption, fig))

    binary = report.average is None
    common = {"classes": report.classes, "pos_label": report.pos_label}
    add(
        "class_distribution",
        "Images of each class in the evaluated data.",
        lambda ax: plot.plot_class_distribution(y, ax=ax),
        (5, 3.5),
    )
    add(
        "confusion_matrix",
        "Counts, and the share of each true class (row) given each prediction.",
        lambda ax: plot.plot_confusion_matrix(y, y_pred, labels=report.classes, ax=ax),
        (4.8, 4.2),
    )
    if binary:
        add(
            "roc_curve",
            "Sensitivity against 1 - specificity over all thresholds; the dot is "
            "the threshold used in the table.",
            lambda ax: plot.plot_roc(
                y, proba, threshold=report.threshold, report=report, ax=ax, **common
            ),
            (5.5, 5),
        )
        add(
            "precision_recall",
            "PPV against sensitivity; PPV depends on the prevalence of these data.",
            lambda ax: plot.plot_precision_recall(
                y, proba, threshold=report.threshold, report=report, ax=ax, **common
            ),
            (5.5, 5),
        )
        add(
            "calibration",
            "Observed fraction of positives in bins of equally many images, against "
            "their mean predicted probability; on the diagonal, a probability of 0.8 "
            "means 8 in 10 are positive. Few images make this curve noisy.",
            lambda ax: plot.plot_calibration(
                y, proba, n_bins=int(np.clip(len(y) // 25, 2, 10)), ax=ax, **common
            ),
            (5, 5),
        )
    history = getattr(clf, "history_", None)
    if history is not None and len(history) > 0:
        add(
            "training_history",
            "Loss and validation scores per training epoch (on the model's internal "
            "validation split, not on these data).",
            lambda ax: plot.plot_history(history, ax=ax),
            (6, 4),
        )
    n_wrong = int(np.sum(y != y_pred))
    if n_wrong and n_misclassified:
        shown = min(n_wrong, n_misclassified)
        rows = int(np.ceil(shown / 4))
        add(
            "misclassified",
            "The most confident errors: file, true class, predicted class and its "
            "probability.",
            lambda ax: plot.plot_misclassified(
                X, y, y_pred, proba, classes=report.classes, n=n_misclassified, ax=ax
            ),
            (2.3 * min(shown, 4), 2.6 * rows),
        )
    return figures


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:980px;
margin:2em auto;padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.warning{background:#fff4e5;border-left:5px solid #f0a020;padding:.7em 1em}
.note{background:#eef4fb;border-left:5px solid #4a90d9;padding:.7em 1em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;
padding:.3em .7em;text-align:right}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}dt{font-weight:600}
"""


def _html(
    report: ClinicalReport,
    figures: list[tuple[str, str, bytes]],
    data: dict[str, Any],
    model: dict[str, Any],
    created: str,
) -> str:
    esc = html.escape
    support = ", ".join(f"{esc(str(c))}: {n}" for c, n in report.support.items())
    model_rows = "".join(
        f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>"
        for k, v in model.items()
    )
    small = min(report.support.values()) < 30
    caution = (
        "<p class='warning'>Fewer than 30 images in a class: the intervals are wide "
        "and these numbers cannot rank models. Evaluate on a larger, "
        "patient-independent test set.</p>"
        if small
        else ""
    )
    if report.average is None:
        rule = (
            f"An image is called <b>{esc(str(report.pos_label))}</b> when the model's "
            f"probability of it is at least <b>{report.threshold:g}</b>."
        )
    else:
        rule = "Each image is given its most probable class."
    figs = "".join(
        f"<figure id='{stem}'><img alt='{esc(stem)}' "
        f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{esc(caption)}</figcaption></figure>"
        for stem, caption, png in figures
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cxrkit evaluation report</title><style>{_CSS}</style></head><body>
<h1>Evaluation report</h1>
<p class="warning"><b>Not a medical device.</b> {esc(DISCLAIMER)}</p>
<h2>Data</h2>
<p>Computed on <b>{esc(data["description"])}</b>: {report.n} images ({support}).</p>
{caution}
<p class="note">These figures describe this data set only. They do not show how
the model would do on other patients, hospitals, scanners or populations; PPV and
NPV also depend on the share of positives in these data. If these images were
used to train or tune the model, the figures are optimistic.</p>
<h2>Model</h2>
<table>{model_rows}</table>
<h2>Metrics</h2>
<p>{rule} Intervals: {esc(report.ci_method)}.</p>
{report.to_html()}
<h2>Figures</h2>
{figs}
<h2>Definitions</h2>
<dl>
<dt>Sensitivity (recall)</dt><dd>Share of positive images called positive.</dd>
<dt>Specificity</dt><dd>Share of negative images called negative.</dd>
<dt>PPV (precision) / NPV</dt><dd>Share of images called positive (negative) that
are positive (negative).</dd>
<dt>ROC AUC</dt><dd>Probability that a random positive image gets a higher score
than a random negative one (0.5: chance).</dd>
<dt>PR AUC</dt><dd>Average precision over all thresholds.</dd>
<dt>Brier score</dt><dd>Mean squared difference between predicted probabilities
and outcomes (0 is perfect).</dd>
</dl>
<p><small>cxrkit {esc(data["cxrkit_version"])}, {esc(created)}. Files beside this
page: metrics.json, predictions.csv and the figures as PNG.</small></p>
</body></html>
"""


def evaluation_report(
    clf: Any,
    X: Sequence[str | os.PathLike] | np.ndarray,
    y: Sequence | np.ndarray,
    out_dir: str | os.PathLike,
    *,
    threshold: float | None = None,
    pos_label: Any = None,
    data_name: str | None = None,
    n_bootstrap: int = 2000,
    random_state: int | None = 0,
    n_misclassified: int = 16,
    progress: bool | None = None,
) -> ClinicalReport:
    """Evaluate a fitted classifier and write a report to ``out_dir``.

    Writes ``metrics.json`` (metrics with intervals, data and model
    description), ``predictions.csv`` (one row per image), the figures as
    PNG, and ``report.html``: one self-contained page (figures embedded)
    with sections Data, Model, Metrics, Figures and Definitions, stating
    the data it was computed on and that the model is not a medical device.

    Parameters
    ----------
    clf : fitted classifier
        A :class:`~cxrkit.PneumoniaClassifier` or any classifier with
        ``predict_proba`` and ``classes_``.
    X : sequence of paths, or ndarray of images
    y : array-like of shape (n,)
        True labels.
    out_dir : str or path-like
        Created if needed; existing report files are overwritten.
    threshold : float, optional
        Two classes: decision threshold on the probability of ``pos_label``
        (default 0.5; choose it on validation data, see
        :func:`cxrkit.metrics.select_threshold`).
    pos_label : label, optional
        Default: ``"PNEUMONIA"`` when it is a class, else the last class.
    data_name : str, optional
        How the report names the data (default: the folder of the paths).
    n_bootstrap : int, default=2000
    random_state : int or None, default=0
    n_misclassified : int, default=16
        Images in the grid of errors (0 for none).
    progress : bool, optional
        Progress bar while predicting (default: above 256 images).

    Returns
    -------
    ClinicalReport

    Examples
    --------
    >>> import tempfile
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.r_[np.linspace(0, 1, 30), np.linspace(0.5, 1.5, 30)][:, None]
    >>> y = np.array(["NORMAL"] * 30 + ["PNEUMONIA"] * 30)
    >>> out = tempfile.mkdtemp()
    >>> report = evaluation_report(LogisticRegression().fit(X, y), X, y, out,
    ...                            n_bootstrap=200, n_misclassified=0)
    >>> sorted(p.name for p in Path(out).iterdir())[:3]
    ['calibration.png', 'class_distribution.png', 'confusion_matrix.png']
    """
    import matplotlib.pyplot as plt

    import cxrkit

    check_is_fitted(clf)
    y = column_or_1d(np.asarray(y), warn=True)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} images but y has {len(y)} labels")
    classes = np.asarray(clf.classes_)
    if pos_label is None:
        pos_label = _default_pos_label(classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    proba = predict_proba(clf, X, progress=progress)
    report = clinical_report(
        y,
        proba,
        classes=classes,
        threshold=threshold,
        pos_label=pos_label,
        n_bootstrap=n_bootstrap,
        random_state=random_state,
    )
    y_pred = _predicted(report, proba)

    figures = []
    for stem, caption, fig in _figures(
        clf, X, y, y_pred, proba, report, n_misclassified
    ):
        path = out / f"{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        figures.append((stem, caption, path.read_bytes()))

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    data = {
        "description": _describe_data(X, data_name),
        "n": len(y),
        "support": report.to_dict()["support"],
        "cxrkit_version": cxrkit.__version__,
    }
    model = _model_summary(clf)
    names = (
        [os.fspath(p) for p in X] if is_path_like_sequence(X) else list(range(len(y)))
    )
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "true", "predicted"] + [f"p_{c}" for c in classes])
        for name, t, p, row in zip(names, y, y_pred, proba):
            writer.writerow([name, t, p, *(f"{v:.6f}" for v in row)])
    summary = {
        "disclaimer": DISCLAIMER,
        "created": created,
        "data": data,
        "model": model,
        "metrics": report.to_dict(),
        "figures": [f"{stem}.png" for stem, _, _ in figures],
    }
    (out / "metrics.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n", "utf-8"
    )
    (out / "report.html").write_text(
        _html(report, figures, data, model, created), encoding="utf-8"
    )
    return report
