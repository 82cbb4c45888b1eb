"""The figures of the evaluation report, each with its caption."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from matplotlib.figure import Figure

from cxrkit import plot
from cxrkit.metrics import ClinicalReport


class ReportFigure(NamedTuple):
    """One figure of the report: file stem, caption and the figure."""

    stem: str
    caption: str
    figure: Figure


def report_figures(
    clf: Any, X: Any, report: ClinicalReport, n_misclassified: int, n_heatmaps: int
) -> list[ReportFigure]:
    """The report's figures, drawn from ``report`` (and ``X`` for the images)."""
    figures = []

    def add(stem: str, caption: str, draw: Callable, figsize: tuple) -> None:
        fig = Figure(figsize=figsize, layout="constrained")
        draw(fig.subplots())
        figures.append(ReportFigure(stem, caption, fig))

    add(
        "class_distribution",
        "Images of each class in the evaluated data.",
        lambda ax: plot.plot_class_distribution(report.y_true, ax=ax),
        (5, 3.5),
    )
    add(
        "confusion_matrix",
        "Counts, and the share of each true class (row) given each prediction.",
        lambda ax: plot.plot_confusion_matrix(report=report, ax=ax),
        (4.8, 4.2),
    )
    if report.average is None:
        add(
            "roc_curve",
            "Sensitivity against 1 - specificity over all thresholds; the dot is "
            "the threshold used in the table.",
            lambda ax: plot.plot_roc(report=report, ax=ax),
            (5.5, 5),
        )
        add(
            "precision_recall",
            "PPV against sensitivity; PPV depends on the prevalence of these data.",
            lambda ax: plot.plot_precision_recall(report=report, ax=ax),
            (5.5, 5),
        )
        add(
            "calibration",
            "Observed fraction of positives in bins of equally many images, against "
            "their mean predicted probability; on the diagonal, a probability of 0.8 "
            "means 8 in 10 are positive. Few images make this curve noisy.",
            lambda ax: plot.plot_calibration(
                report=report, n_bins=int(np.clip(report.n // 25, 2, 10)), ax=ax
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
    y_pred = report.y_pred
    n_wrong = int(np.sum(report.y_true != y_pred))
    if n_wrong and n_misclassified:
        shown = min(n_wrong, n_misclassified)
        rows = int(np.ceil(shown / 4))
        what = (
            "its probability"
            if report.average is not None
            else f"P({report.pos_label}), as in the table of images"
        )
        add(
            "misclassified",
            f"The {shown} most confident of {n_wrong} errors: file, true class, "
            f"predicted class and {what}.",
            lambda ax: plot.plot_misclassified(
                X,
                report.y_true,
                y_pred,
                report.proba,
                classes=report.classes,
                n=n_misclassified,
                pos_label=report.pos_label if report.average is None else None,
                ax=ax,
            ),
            (2.8 * min(shown, 4), 3.2 * rows),
        )
    if n_wrong and n_heatmaps and _explainable(clf):
        from cxrkit.explain import DEFAULT_METHOD, method_caption

        worst = _most_confident_errors(report, n_heatmaps)
        caption = method_caption(DEFAULT_METHOD, getattr(clf, "tta", 0))
        fig = _heatmap_figure(clf, X, report, worst)
        figures.append(
            ReportFigure(
                "heatmap_errors",
                f"Heatmaps of the most confident errors, in the order of the grid "
                f"above, for the (wrong) class given. {caption}"
                " Heat outside the lungs (text markers, devices, shoulders) "
                "suggests the model uses something other than the lungs. Research "
                "and education only.",
                fig,
            )
        )
    if n_heatmaps and _explainable(clf):
        figures.append(_lung_evidence_figure(clf, X, report))
    return figures


def _explainable(clf: Any) -> bool:
    """Whether cxrkit.explain applies: a fitted PneumoniaClassifier."""
    from cxrkit import PneumoniaClassifier

    return isinstance(clf, PneumoniaClassifier) and hasattr(clf, "net_")


def _most_confident_errors(report: ClinicalReport, n: int) -> np.ndarray:
    y_pred = report.y_pred
    classes = list(report.classes)
    column = np.array([classes.index(c) for c in y_pred.tolist()], dtype=int)
    confidence = report.proba[np.arange(len(y_pred)), column]
    wrong = np.flatnonzero(report.y_true != y_pred)
    return wrong[np.argsort(-confidence[wrong], kind="stable")][:n]


def _heatmap_figure(
    clf: Any, X: Any, report: ClinicalReport, worst: np.ndarray
) -> Figure:
    from cxrkit.explain import DEFAULT_METHOD, explain
    from cxrkit.images._cache import decode_images

    # rows of a list of paths or of an array alike; decoded once, for the
    # heatmaps and the images under them
    picked = decode_images([X[i] for i in worst], clf.image_size)
    given = report.y_pred[worst]
    heatmaps = explain(clf, picked, list(given))
    images = picked.pixels
    classes = list(report.classes)
    if report.average is None:  # P(positive), as the table of images shows
        column, label = (
            [classes.index(report.pos_label)] * len(worst),
            (f"P({report.pos_label})"),
        )
    else:
        column, label = [classes.index(c) for c in given.tolist()], "p"
    names = (
        None if picked.paths is None else [os.path.basename(p) for p in picked.paths]
    )
    ncols = min(len(worst), 4)
    fig = Figure(
        figsize=(2.8 * ncols + 0.8, 3.1 * -(-len(worst) // ncols)),
        layout="constrained",
    )
    return plot.plot_heatmap_grid(
        images,
        heatmaps,
        y_true=list(report.y_true[worst]),
        y_pred=list(given),
        proba=report.proba[worst, column].tolist(),
        names=names,
        ncols=ncols,
        fig=fig,
        title=f"{plot.method_title(DEFAULT_METHOD)} heatmaps of the most confident "
        "errors",
        proba_label=label,
    )


#: Images (at most) on which the report measures where the model's evidence lies.
LUNG_CHECK_IMAGES = 32


def _lung_evidence_figure(clf: Any, X: Any, report: ClinicalReport) -> ReportFigure:
    """How much of the model's heat lies outside the lung fields (a shortcut
    check), on an evenly spaced sample of the images (each at most once, at most
    `LUNG_CHECK_IMAGES` of them), explaining the class given."""
    from cxrkit.explain import DEFAULT_METHOD, evidence_outside_lungs, method_caption
    from cxrkit.images._cache import decode_images

    n = len(report.y_pred)
    # Round to indices before dropping repeats: each image at most once.
    spaced = np.linspace(0, n - 1, min(n, LUNG_CHECK_IMAGES))
    picked = np.unique(spaced.round().astype(int))
    images = decode_images([X[i] for i in picked], clf.image_size)
    evidence = evidence_outside_lungs(clf, images, list(report.y_pred[picked]))
    caption = method_caption(DEFAULT_METHOD, getattr(clf, "tta", 0))
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.hist(100 * evidence.outside, bins=np.linspace(0, 100, 21), color="tab:blue")
    ax.axvline(
        100 * evidence.area_outside, color="k", ls="--", label="heat spread evenly"
    )
    ax.set_xlabel("heat outside the lung field (% of each heatmap)")
    ax.set_ylabel("images")
    ax.legend(loc="upper left", fontsize=8)
    return ReportFigure(
        "lung_evidence",
        f"Evidence outside the lung fields, on {len(picked)} of the images "
        f"(the class given explained): {evidence.summary()} The lung field is "
        f"that of a typical radiograph (cxrkit.explain.lung_field_prior); with "
        f"your own lung masks, use cxrkit.explain.evidence_outside_lungs. "
        f"{caption}",
        fig,
    )
