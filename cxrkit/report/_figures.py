"""The figures of the evaluation report, each with its caption."""

from __future__ import annotations

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
    clf: Any, X: Any, report: ClinicalReport, n_misclassified: int
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
        add(
            "misclassified",
            "The most confident errors: file, true class, predicted class and its "
            "probability.",
            lambda ax: plot.plot_misclassified(
                X,
                report.y_true,
                y_pred,
                report.proba,
                classes=report.classes,
                n=n_misclassified,
                ax=ax,
            ),
            (2.3 * min(shown, 4), 2.6 * rows),
        )
    return figures
