"""Evaluate fitted models on images: the report folder, and comparisons."""

from __future__ import annotations

import base64
import io
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted, column_or_1d

from cxrkit.images._inputs import is_path_like_sequence
from cxrkit.metrics import (
    ClinicalReport,
    ModelComparison,
    clinical_report,
    positive_label,
)
from cxrkit.persistence._model_files import model_card
from cxrkit.persistence._provenance import decision_rule
from cxrkit.report._checks import (
    conformal_summary,
    degenerate_warnings,
    threshold_table,
)
from cxrkit.report._figures import report_figures
from cxrkit.report._ood import ood_summary
from cxrkit.report._predictions import (
    image_rows,
    ood_cells,
    predict_proba,
    predictions,
    write_predictions,
)
from cxrkit.report._provenance import (
    created_at,
    describe_data,
    describe_model,
    describe_training,
)

#: Resolution of the report's figures (PNG files and the page).
FIGURE_DPI = 150
#: Figures that take the page's whole width (the others go two to a row).
WIDE_FIGURES = ("misclassified", "heatmap_errors")
#: Rows of the page's table of images; predictions.csv has all of them.
MAX_IMAGE_ROWS = 5000
#: Flagged images listed on the page; metrics.json and predictions.csv have all.
MAX_OOD_ROWS = 200

DISCLAIMER = (
    "For research and education only. This model is not a medical device: it is "
    "not cleared or approved for diagnosis, and its output must not guide the "
    "care of a patient."
)


def evaluation_report(
    clf: Any,
    X: Sequence[str | os.PathLike] | np.ndarray,
    y: Sequence | np.ndarray,
    out_dir: str | os.PathLike,
    *,
    threshold: float | None = None,
    pos_label: Any = None,
    data_name: str | None = None,
    note: str | None = None,
    n_bootstrap: int = 2000,
    random_state: int | None = 0,
    n_misclassified: int = 16,
    n_heatmaps: int = 8,
    progress: bool | None = None,
) -> ClinicalReport:
    """Evaluate a fitted classifier and write a report to ``out_dir``.

    Writes ``metrics.json`` (metrics with intervals, data and model
    description, the images flagged as unlike the training images),
    ``predictions.csv`` (one row per image, with its ``ood_score`` and
    ``ood`` flag, see
    [`write_predictions`][cxrkit.report.write_predictions]), the figures as
    PNG, and ``report.html``: one self-contained page (figures embedded)
    with sections Data, Unusual images (how many, and which, the model's
    out-of-distribution detector flags; see
    [`PneumoniaClassifier.is_ood`][cxrkit.PneumoniaClassifier.is_ood]),
    Model (with what it was trained on, from the model
    file), Metrics (and a table of other thresholds), Figures (with heatmaps
    of the most confident errors, and how much of the model's evidence lies
    outside the lung fields), Images (a sortable table, one row per
    image) and Definitions, stating the data it was computed on and that the
    model is not a medical device. Predictions that make the figures
    misleading (one class for every image, probabilities all near 0 or 1)
    are stated at the top of the page and raise one ``UserWarning``.

    Parameters
    ----------
    clf : fitted classifier
        A [`PneumoniaClassifier`][cxrkit.PneumoniaClassifier] or any
        classifier with ``predict_proba`` and ``classes_``.
    X : sequence of paths, or ndarray of images
    y : array-like of shape (n,)
        True labels.
    out_dir : str or path-like
        Created if needed; existing report files are overwritten.
    threshold : float, optional
        Two classes: decision threshold on the probability of ``pos_label``.
        Default: the model's recorded ``operating_threshold_`` (see
        [`PneumoniaClassifier.save`][cxrkit.PneumoniaClassifier.save]) when
        it has one and it is on ``pos_label``, else 0.5 (see
        [`decision_rule`][cxrkit.persistence.decision_rule]). Choose it on
        validation data, see
        [`select_threshold`][cxrkit.metrics.select_threshold].
    pos_label : label, optional
        The positive class of two: default ``"PNEUMONIA"`` when it is a
        class, 1 for 0/1 labels (see
        [`positive_label`][cxrkit.metrics.positive_label]).
    data_name : str, optional
        How the report names the data (default: the folder of the paths).
    note : str, optional
        A sentence shown at the top of the page and kept in ``metrics.json``,
        e.g. what the model is for ("a demonstration trained on 450
        images").
    n_bootstrap : int, default=2000
    random_state : int or None, default=0
    n_misclassified : int, default=16
        Images in the grid of errors (0 for none).
    n_heatmaps : int, default=8
        Most confident errors shown with their heatmap, by
        [`explain`][cxrkit.explain.explain]'s recommended method, with the
        share of the model's evidence outside the lung fields on up to 32
        images (0 for neither; only for fitted ``PneumoniaClassifier``).
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
    import cxrkit

    check_is_fitted(clf)
    y = column_or_1d(np.asarray(y), warn=True)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} images but y has {len(y)} labels")
    classes = np.asarray(clf.classes_)
    rule = decision_rule(clf, threshold, pos_label=pos_label)  # before decoding
    if len(classes) == 2:
        pos_label = positive_label(classes, rule.pos_label)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # the one place the report asks whether X holds files (for their names)
    paths = X if is_path_like_sequence(X) else None
    proba, found = predictions(clf, X, progress=progress)
    report = clinical_report(
        y,
        proba,
        classes=classes,
        threshold=rule.threshold,
        pos_label=pos_label,
        n_bootstrap=n_bootstrap,
        random_state=random_state,
    )
    problems = degenerate_warnings(report)
    if problems:
        warnings.warn(
            f"{problems[0]} (evaluation_report: {out / 'report.html'})",
            UserWarning,
            stacklevel=2,
        )
    figures = []
    drawn = report_figures(clf, X, report, n_misclassified, n_heatmaps)
    for stem, caption, fig in drawn:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
        (out / f"{stem}.png").write_bytes(buffer.getvalue())
        figures.append(
            {
                "stem": stem,
                "caption": caption,
                "wide": stem in WIDE_FIGURES,
                "png_base64": base64.b64encode(buffer.getvalue()).decode(),
            }
        )
    write_predictions(
        out / "predictions.csv",
        X,
        proba,
        report.y_pred,
        classes=classes,
        y_true=y,
        extra_columns=ood_cells(found, len(y)),
    )
    ood = ood_summary(clf, found, paths, report.y_pred)
    data = {
        "description": describe_data(paths, len(y), data_name),
        "n": len(y),
        "support": report.to_dict()["support"],
        "cxrkit_version": cxrkit.__version__,
    }
    card = model_card(clf)
    model = describe_model(card)
    training = describe_training(card)
    created = created_at()
    conformal = conformal_summary(clf, report)
    summary = {
        "disclaimer": DISCLAIMER,
        "created": created,
        "note": note,
        "data": data,
        "model": model,
        "training": training,
        "warnings": problems,
        "ood": ood,
        "metrics": report.to_dict(),
        "conformal": conformal,
        "adaptation": getattr(clf, "adaptation_", None),
        "figures": [f"{f['stem']}.png" for f in figures],
    }
    (out / "metrics.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n", "utf-8"
    )
    from cxrkit.templates import render

    page = render(
        "report.html",
        disclaimer=DISCLAIMER,
        note=note,
        report=report,
        metrics_table=report.to_html(),
        problems=problems,
        thresholds=threshold_table(report),
        conformal=conformal,
        adaptation=getattr(clf, "adaptation_", None),
        images=image_rows(paths, report, limit=MAX_IMAGE_ROWS),
        max_image_rows=MAX_IMAGE_ROWS,
        ood=ood,
        max_ood_rows=MAX_OOD_ROWS,
        data=data,
        model=model,
        training=training,
        figures=figures,
        created=created,
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    return report


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
        Passed to [`clinical_report`][cxrkit.metrics.clinical_report]
        (``threshold``, ``pos_label``, ``n_bootstrap``, ...), the same for
        every model.

    Returns
    -------
    ModelComparison
        Every model measured on one shared set of bootstrap resamples.

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
    for name, clf in models.items():
        check_is_fitted(clf)
        if classes is not None and list(clf.classes_) != list(classes):
            raise ValueError(
                f"model {name!r} has classes {list(clf.classes_)}, the first model "
                f"{list(classes)}: compare models trained on the same classes"
            )
        classes = clf.classes_
    if classes is None:
        raise ValueError("no models to compare: pass {name: fitted classifier}")
    kwargs.setdefault("classes", classes)
    probas = {
        name: predict_proba(clf, X, progress=progress) for name, clf in models.items()
    }
    return ModelComparison.from_predictions(y, probas, **kwargs)
