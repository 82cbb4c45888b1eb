"""Evaluation figures: confusion matrix, ROC / PR / calibration curves,
training history, class distribution, misclassified images, model comparison.

The curves are scikit-learn's displays (``RocCurveDisplay``,
``PrecisionRecallDisplay``, ``CalibrationDisplay``,
``ConfusionMatrixDisplay``); the numbers in their legends come from a
[`ClinicalReport`][cxrkit.metrics.ClinicalReport]. Each curve takes a report
(``report=``; its intervals label the curve) or predictions (``y_true``,
``proba``; turned into a report without bootstrap, so the legend has no
interval): a plot never runs a bootstrap of its own.

Each function draws on ``ax`` and returns it. Without ``ax`` it draws on a
new ``matplotlib.figure.Figure`` made without pyplot (no global state, no
figure left open; safe in libraries, servers and loops): save it with
``ax.figure.savefig(path)``, or show it in a notebook with ``ax.figure``.
For pyplot windows, pass ``ax`` from ``plt.subplots()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    confusion_matrix,
)
from sklearn.utils.multiclass import unique_labels

from cxrkit.metrics import ClinicalReport, ModelComparison, clinical_report

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "plot_calibration",
    "plot_class_distribution",
    "plot_confusion_matrix",
    "plot_history",
    "plot_misclassified",
    "plot_model_comparison",
    "plot_precision_recall",
    "plot_roc",
]


def _axes(ax: Axes | None, figsize: tuple[float, float] = (5, 4.5)) -> Axes:
    """``ax``, or the axes of a new pyplot-free figure."""
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").subplots()


def _report_of(
    y_true: Any,
    proba: Any,
    report: ClinicalReport | None,
    *,
    pos_label: Any,
    classes: Any,
    threshold: float | None = None,
) -> ClinicalReport:
    """The report a curve is drawn from: ``report``, or one of the predictions.

    Predictions become a report without bootstrap (``n_bootstrap=0``): the
    same checks and numbers as ``clinical_report``, and no resampling.
    """
    if report is not None:
        given = {"y_true": y_true, "proba": proba, "pos_label": pos_label}
        extra = [
            name for name, v in {**given, "classes": classes}.items() if v is not None
        ]
        if extra:
            raise TypeError(
                f"pass either report= (it holds the predictions, classes and "
                f"positive class) or y_true and proba, not both (got {extra})"
            )
        return report
    if y_true is None or proba is None:
        raise TypeError("pass y_true and proba, or report=")
    return clinical_report(
        y_true,
        proba,
        pos_label=pos_label,
        classes=classes,
        threshold=threshold,
        n_bootstrap=0,
    )


def _binary(report: ClinicalReport) -> tuple[np.ndarray, np.ndarray]:
    """(is positive, probability of the positive class) of a two-class report."""
    if report.average is not None:
        raise ValueError(
            "this curve is for two classes; for more, plot one class against "
            "the rest: y_true == label and proba[:, column of label]"
        )
    pos = report.classes.index(report.pos_label)
    return np.asarray(report.y_true) == report.pos_label, report.proba[:, pos]


def _label(name: str, e: Any, report: ClinicalReport) -> str:
    """``name value (95% CI low-high)``; without the interval when there is none."""
    if not np.isfinite(e.low):
        return f"{name} {e.value:.3f}"
    return f"{name} {e.value:.3f} ({report.confidence:.0%} CI {e.low:.3f}-{e.high:.3f})"


def _at(report: ClinicalReport, threshold: float) -> ClinicalReport:
    """The point estimates of ``report``'s predictions at another threshold."""
    if threshold == report.threshold:
        return report
    return clinical_report(
        report.y_true,
        report.proba,
        classes=report.classes,
        pos_label=report.pos_label,
        threshold=threshold,
        n_bootstrap=0,
    )


def plot_confusion_matrix(
    y_true: Sequence | np.ndarray | None = None,
    y_pred: Sequence | np.ndarray | None = None,
    *,
    report: ClinicalReport | None = None,
    labels: Sequence | None = None,
    cmap: str = "Blues",
    ax: Axes | None = None,
) -> Axes:
    """Confusion matrix with counts and row percentages.

    Colours follow the row percentages (the share of each true class), so
    a rare class is as visible as a common one.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,), optional
        True and predicted labels; or pass ``report``.
    report : ClinicalReport, optional
        Its confusion matrix (at its threshold).
    labels : sequence, optional
        Class order (default: sorted labels).
    cmap : str, default="Blues"
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> ax = plot_confusion_matrix(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    >>> ax.texts[0].get_text()
    '1\\n50%'
    """
    if report is not None:
        if y_true is not None or y_pred is not None or labels is not None:
            raise TypeError("pass either report= or y_true and y_pred, not both")
        counts, labels = report.confusion_matrix, report.classes
    elif y_true is None or y_pred is None:
        raise TypeError("pass y_true and y_pred, or report=")
    else:
        labels = unique_labels(y_true, y_pred) if labels is None else labels
        counts = confusion_matrix(y_true, y_pred, labels=labels)
    ax = _axes(ax, (4.5, 4))
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    display = ConfusionMatrixDisplay(rows, display_labels=list(labels)).plot(
        ax=ax, cmap=cmap, colorbar=False
    )
    for (i, j), text in np.ndenumerate(display.text_):
        text.set_text(f"{counts[i, j]}\n{rows[i, j]:.0%}")
    display.im_.set_clim(0, 1)
    ax.set_title("Confusion matrix (count, % of true class)")
    return ax


def _draw_roc(
    ax: Axes,
    report: ClinicalReport,
    *,
    threshold: float | None,
    name: str | None,
    chance: bool,
) -> None:
    is_pos, score = _binary(report)
    display = RocCurveDisplay.from_predictions(is_pos, score, pos_label=True, ax=ax)
    prefix = f"{name}: " if name else ""
    display.line_.set(
        lw=2, label=_label(f"{prefix}AUC", report.metrics["roc_auc"], report)
    )
    if threshold is not None:
        at = _at(report, threshold)
        sens = at.metrics["sensitivity"].value
        spec = at.metrics["specificity"].value
        ax.plot(
            1 - spec,
            sens,
            "o",
            color=display.line_.get_color(),
            markeredgecolor="black",
            label=f"threshold {threshold:g}: sensitivity {sens:.2f}, "
            f"specificity {spec:.2f}",
        )
    if chance:
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity (true positive rate)",
        title="ROC curve",
    )
    ax.legend(loc="lower right", fontsize="small")


def plot_roc(
    y_true: Sequence | np.ndarray | None = None,
    proba: Sequence | np.ndarray | None = None,
    *,
    report: ClinicalReport | None = None,
    pos_label: Any = None,
    classes: Sequence | None = None,
    threshold: float | None = None,
    name: str | None = None,
    chance: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """ROC curve with its AUC, the AUC's confidence interval and the
    operating point.

    Parameters
    ----------
    y_true : array-like of shape (n,), optional
    proba : array-like of shape (n,) or (n, 2), optional
        Probability of the positive class, or ``predict_proba`` output.
    report : ClinicalReport, optional
        A report (of two classes) instead of ``y_true`` and ``proba``: the
        curve is drawn from its predictions, labelled with its AUC interval,
        and marked at its threshold.
    pos_label : label, optional
        With ``y_true`` and ``proba``: the positive class (``"PNEUMONIA"``
        when it is a class, 1 for 0/1 labels).
    classes : sequence, optional
        With ``y_true`` and ``proba``: class order of the ``proba`` columns.
    threshold : float, optional
        Operating point to mark (``proba >= threshold``); default: the
        report's threshold, or 0.5 for predictions.
    name : str, optional
        Legend prefix, e.g. the model's name.
    chance : bool, default=True
        Draw the diagonal of a classifier that guesses.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> y = ["NORMAL"] * 20 + ["PNEUMONIA"] * 20
    >>> p = np.r_[np.linspace(0, 0.7, 20), np.linspace(0.3, 1, 20)]
    >>> ax = plot_roc(y, p, threshold=0.5)
    >>> ax.get_xlabel()
    '1 - specificity (false positive rate)'
    """
    report = _report_of(
        y_true, proba, report, pos_label=pos_label, classes=classes, threshold=threshold
    )
    ax = _axes(ax)
    threshold = report.threshold if threshold is None else threshold
    _draw_roc(ax, report, threshold=threshold, name=name, chance=chance)
    return ax


def plot_precision_recall(
    y_true: Sequence | np.ndarray | None = None,
    proba: Sequence | np.ndarray | None = None,
    *,
    report: ClinicalReport | None = None,
    pos_label: Any = None,
    classes: Sequence | None = None,
    threshold: float | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Precision-recall curve (PPV against sensitivity) with its average
    precision, its interval, the prevalence line and the operating point.

    Parameters are those of [`plot_roc`][cxrkit.plot.plot_roc].

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> y = ["NORMAL"] * 20 + ["PNEUMONIA"] * 20
    >>> p = np.r_[np.linspace(0, 0.7, 20), np.linspace(0.3, 1, 20)]
    >>> plot_precision_recall(y, p).get_ylabel()
    'PPV (precision)'
    """
    report = _report_of(
        y_true, proba, report, pos_label=pos_label, classes=classes, threshold=threshold
    )
    ax = _axes(ax)
    threshold = report.threshold if threshold is None else threshold
    is_pos, score = _binary(report)
    prevalence = float(np.mean(is_pos))
    display = PrecisionRecallDisplay.from_predictions(
        is_pos,
        score,
        pos_label=True,
        ax=ax,
        plot_chance_level=True,
        chance_level_kw={
            "color": "grey",
            "linestyle": "--",
            "lw": 1,
            "label": f"prevalence {prevalence:.2f}",
        },
    )
    display.line_.set(
        lw=2, label=_label("average precision", report.metrics["pr_auc"], report)
    )
    at = _at(report, threshold)
    sens, ppv = at.metrics["sensitivity"].value, at.metrics["ppv"].value
    if np.isfinite(ppv):  # some image is called positive
        ax.plot(
            sens,
            ppv,
            "o",
            color=display.line_.get_color(),
            markeredgecolor="black",
            label=f"threshold {threshold:g}: sensitivity {sens:.2f}, PPV {ppv:.2f}",
        )
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        xlabel="sensitivity (recall)",
        ylabel="PPV (precision)",
        title="Precision-recall curve",
    )
    ax.legend(loc="lower left", fontsize="small")
    return ax


def plot_calibration(
    y_true: Sequence | np.ndarray | None = None,
    proba: Sequence | np.ndarray | None = None,
    *,
    report: ClinicalReport | None = None,
    pos_label: Any = None,
    classes: Sequence | None = None,
    n_bins: int = 10,
    strategy: str = "quantile",
    ax: Axes | None = None,
) -> Axes:
    """Reliability curve: observed frequency of the positive class against
    the predicted probability, in bins.

    Parameters
    ----------
    y_true, proba, report, pos_label, classes
        As in [`plot_roc`][cxrkit.plot.plot_roc].
    n_bins : int, default=10
    strategy : {"quantile", "uniform"}, default="quantile"
        Bins with equal numbers of images, or of equal width
        (``sklearn.calibration.calibration_curve``).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> y = ["NORMAL"] * 20 + ["PNEUMONIA"] * 20
    >>> p = np.r_[np.linspace(0, 0.7, 20), np.linspace(0.3, 1, 20)]
    >>> plot_calibration(y, p, n_bins=4).get_title()
    'Calibration (reliability)'
    """
    report = _report_of(y_true, proba, report, pos_label=pos_label, classes=classes)
    ax = _axes(ax)
    is_pos, score = _binary(report)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    display = CalibrationDisplay.from_predictions(
        is_pos,
        score,
        n_bins=n_bins,
        strategy=strategy,
        pos_label=True,
        ref_line=False,
        ax=ax,
    )
    brier = _label("Brier score", report.metrics["brier"], report)
    display.line_.set(lw=2, marker="o", label=f"model ({brier})")
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        xlabel=f"predicted probability of {report.pos_label}",
        ylabel=f"observed fraction {report.pos_label}",
        title="Calibration (reliability)",
    )
    ax.set_aspect("equal")
    # below the axes: inside, the legend covers the curve wherever it runs
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small", ncol=1)
    return ax


def _history_rows(history: Any) -> list[Mapping]:
    rows = getattr(history, "history_", history)
    rows = [dict(r) for r in (rows or [])]
    if not rows:
        raise ValueError(
            "the training history is empty: pass a fitted classifier, its "
            "history_, or a list of per-epoch dicts"
        )
    return rows


def plot_history(history: Any, *, ax: Axes | None = None) -> Axes:
    """Losses (left axis) and validation scores (right axis) per epoch.

    Parameters
    ----------
    history : PneumoniaClassifier, skorch History or list of dict
        A fitted classifier (its ``history_`` is used) or the rows of one,
        with ``epoch``, ``train_loss`` and, when a validation split was
        used, ``valid_loss``, ``valid_acc``, ``valid_auc``.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
        The loss axis (the score axis is ``ax.right_ax``).

    Examples
    --------
    >>> rows = [{"epoch": 1, "train_loss": 0.7, "valid_loss": 0.6,
    ...          "valid_auc": 0.7}, {"epoch": 2, "train_loss": 0.5,
    ...          "valid_loss": 0.5, "valid_auc": 0.8}]
    >>> ax = plot_history(rows)
    >>> sorted(line.get_label() for line in ax.get_lines())
    ['train_loss', 'valid_loss']
    """
    rows = _history_rows(history)
    ax = _axes(ax, (6, 4))
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    handles = []
    for key, style in (("train_loss", "-"), ("valid_loss", "--")):
        if any(key in r for r in rows):
            values = [r.get(key, np.nan) for r in rows]
            handles += ax.plot(epochs, values, style, marker="o", label=key)
    ax.set(xlabel="epoch", ylabel="loss", title="Training history")
    scores = [k for k in ("valid_acc", "valid_auc") if any(k in r for r in rows)]
    if scores:
        right = ax.twinx()
        for key, colour in zip(scores, ("tab:green", "tab:red")):
            values = [r.get(key, np.nan) for r in rows]
            handles += right.plot(
                epochs, values, ":", marker="s", color=colour, label=key
            )
        right.set(ylabel="validation score", ylim=(0, 1.02))
        ax.right_ax = right
    # below the axes, as in plot_calibration: inside, it covers the curves
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        fontsize="small",
        ncol=min(len(handles), 4),
    )
    ax.xaxis.get_major_locator().set_params(integer=True)
    return ax


def plot_class_distribution(
    y: Sequence | np.ndarray | Mapping[str, Sequence], *, ax: Axes | None = None
) -> Axes:
    """Number of images per class, for one data set or several side by side.

    Parameters
    ----------
    y : array-like of labels, or mapping of name to labels
        E.g. ``{"train": y_train, "test": y_test}``.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> ax = plot_class_distribution({"train": ["a", "b", "b"], "test": ["a", "b"]})
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['a', 'b']
    """
    sets = dict(y) if isinstance(y, Mapping) else {"images": y}
    sets = {name: np.asarray(labels) for name, labels in sets.items()}
    classes = np.unique(np.concatenate([v for v in sets.values()]))
    ax = _axes(ax, (5, 3.5))
    width = 0.8 / len(sets)
    x = np.arange(len(classes))
    for i, (name, labels) in enumerate(sets.items()):
        counts = np.array([np.sum(labels == c) for c in classes])
        bars = ax.bar(x + (i - (len(sets) - 1) / 2) * width, counts, width, label=name)
        share = counts / max(len(labels), 1)
        ax.bar_label(bars, [f"{c}\n{s:.0%}" for c, s in zip(counts, share)], fontsize=8)
    ax.set_xticks(x, [str(c) for c in classes])
    ax.set(ylabel="images", title="Class distribution")
    ax.margins(y=0.2)
    if len(sets) > 1:
        ax.legend(fontsize="small")
    return ax


def plot_misclassified(
    X: Sequence[str | os.PathLike] | np.ndarray,
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    proba: np.ndarray,
    *,
    classes: Sequence,
    n: int = 16,
    ncols: int = 4,
    image_size: int = 128,
    pos_label: Any = None,
    ax: Axes | None = None,
) -> Axes:
    """Grid of the most confidently misclassified images.

    Each tile shows the true and the predicted class and the predicted
    class's probability (or, with ``pos_label``, the positive class's, as
    the report's table does); the most confident errors come first.

    Parameters
    ----------
    X : sequence of paths, or ndarray of images
    y_true, y_pred : array-like of shape (n_images,)
    proba : ndarray of shape (n_images, n_classes)
        ``predict_proba`` output, columns in ``classes`` order.
    classes : sequence
        ``clf.classes_``.
    n : int, default=16
        At most this many images.
    ncols : int, default=4
    image_size : int, default=128
        Pixels of each tile.
    pos_label : class label, optional
        Show ``P(pos_label)`` on each tile instead of the probability of the
        predicted class.
    ax : matplotlib Axes, optional
        Its area is divided into tiles.

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> images = np.zeros((3, 32, 32), np.uint8)
    >>> ax = plot_misclassified(images, ["a", "b", "b"], ["a", "a", "a"],
    ...                         np.array([[.9, .1], [.8, .2], [.6, .4]]),
    ...                         classes=["a", "b"])
    >>> len(ax.child_axes)
    2
    """
    from cxrkit.images._cache import decode_images

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    proba = np.asarray(proba, dtype=float)
    classes = list(np.asarray(classes).tolist())
    wrong = np.flatnonzero(y_true != y_pred)
    column = np.array([classes.index(p) for p in y_pred.tolist()], dtype=int)
    confidence = proba[np.arange(len(proba)), column]
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
    ncols = max(1, min(ncols, len(shown)))
    nrows = max(1, int(np.ceil(len(shown) / ncols)))
    ax = _axes(ax, (2.8 * ncols, 3.2 * nrows))
    ax.set_axis_off()
    if len(shown) == 0:
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return ax
    picked = decode_images([X[i] for i in shown], image_size)
    images = picked.pixels
    for tile, (i, image) in enumerate(zip(shown, images)):
        r, c = divmod(tile, ncols)
        sub = ax.inset_axes(
            [c / ncols, 1 - (r + 1) / nrows, 1 / ncols * 0.95, 1 / nrows * 0.8]
        )
        sub.imshow(image, cmap="gray", vmin=0, vmax=255)
        sub.set_axis_off()
        if pos_label is None:
            called = f"pred {y_pred[i]} ({confidence[i]:.2f})"
        else:
            p = proba[i, classes.index(pos_label)]
            called = f"pred {y_pred[i]}, P({pos_label})={p:.2f}"
        title = f"true {y_true[i]}\n{called}"
        if picked.paths is not None:
            title = f"{_short_name(Path(picked.paths[tile]).name)}\n{title}"
        sub.set_title(title, fontsize=9)
    if len(shown) == len(wrong):
        heading = f"All {len(wrong)} errors, most confident first"
    else:
        heading = f"The {len(shown)} most confident of {len(wrong)} errors"
    ax.set_title(heading, pad=14)
    return ax


def _short_name(name: str, width: int = 34) -> str:
    """A file name that fits a tile: the middle elided, both ends kept."""
    if len(name) <= width:
        return name
    keep = (width - 1) // 2
    return f"{name[:keep]}…{name[-keep:]}"


def plot_model_comparison(
    comparison: ModelComparison, *, ax: Axes | None = None
) -> Axes:
    """ROC curves of several models on the same data, in one figure.

    Parameters
    ----------
    comparison : ModelComparison
        The result of [`compare_models`][cxrkit.report.compare_models] or
        [`ModelComparison.from_predictions`][cxrkit.metrics.ModelComparison.from_predictions].
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> from cxrkit.metrics import ModelComparison
    >>> y = np.array(["NORMAL"] * 20 + ["PNEUMONIA"] * 20)
    >>> probas = {"a": np.linspace(0, 1, 40), "b": np.linspace(1, 0, 40) ** 2}
    >>> ax = plot_model_comparison(ModelComparison.from_predictions(y, probas))
    >>> len(ax.get_legend().get_texts())
    3
    """
    ax = _axes(ax, (5.5, 5))
    last = len(comparison.reports) - 1
    for i, (name, report) in enumerate(comparison.reports.items()):
        _draw_roc(ax, report, threshold=None, name=name, chance=i == last)
    ax.set_title("ROC curves on the same images")
    return ax
