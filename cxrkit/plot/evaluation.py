"""Evaluation figures: confusion matrix, ROC / PR / calibration curves,
training history, class distribution, misclassified images, model comparison.

The curves are computed by scikit-learn (``roc_curve``,
``precision_recall_curve``, ``calibration_curve``, ``ConfusionMatrixDisplay``);
the intervals by :func:`cxrkit.metrics.clinical_report`. Each function draws
on ``ax`` (a new figure when None) and returns it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    confusion_matrix,
    precision_recall_curve,
    roc_curve,
)

from cxrkit.metrics import ClinicalReport, _prepare, clinical_report

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
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _binary(
    y_true: Any, proba: Any, pos_label: Any, classes: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(is positive, probability of positive), validated like the metrics."""
    y_idx, scores, _, pos = _prepare(y_true, proba, classes, pos_label)
    if pos is None:
        raise ValueError(
            "this curve is for two classes; for more, plot one class against "
            "the rest: y_true == label and proba[:, column of label]"
        )
    return y_idx == pos, scores[:, pos]


def plot_confusion_matrix(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    *,
    labels: Sequence | None = None,
    cmap: str = "Blues",
    ax: Axes | None = None,
) -> Axes:
    """Confusion matrix with counts and row percentages.

    Colours follow the row percentages (the share of each true class), so
    a rare class is as visible as a common one.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted labels.
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
    ax = _axes(ax, (4.5, 4))
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    display = ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=labels,
        normalize="true",
        cmap=cmap,
        colorbar=False,
        ax=ax,
    )
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    for (i, j), text in np.ndenumerate(display.text_):
        text.set_text(f"{counts[i, j]}\n{rows[i, j]:.0%}")
    display.im_.set_clim(0, 1)
    ax.set_title("Confusion matrix (count, % of true class)")
    return ax


def plot_roc(
    y_true: Sequence | np.ndarray,
    proba: Sequence | np.ndarray,
    *,
    pos_label: Any = "PNEUMONIA",
    classes: Sequence | None = None,
    threshold: float | None = 0.5,
    report: ClinicalReport | None = None,
    name: str | None = None,
    chance: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """ROC curve with its AUC, the AUC's confidence interval and the
    operating point.

    Parameters
    ----------
    y_true : array-like of shape (n,)
    proba : array-like of shape (n,) or (n, 2)
        Probability of ``pos_label``, or ``predict_proba`` output.
    pos_label : label, default="PNEUMONIA"
    classes : sequence, optional
        Class order of the ``proba`` columns.
    threshold : float or None, default=0.5
        Operating point to mark; None marks none.
    report : ClinicalReport, optional
        A report of the same predictions (its AUC interval is shown);
        computed with :func:`~cxrkit.metrics.clinical_report` when None.
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
    ax = _axes(ax)
    is_pos, score = _binary(y_true, proba, pos_label, classes)
    if report is None:
        report = clinical_report(
            is_pos, score, pos_label=True, threshold=threshold or 0.5
        )
    fpr, tpr, _ = roc_curve(is_pos, score)
    auc = report.metrics["roc_auc"]
    label = f"{name + ': ' if name else ''}AUC {auc.value:.3f} " + (
        f"({report.confidence:.0%} CI {auc.low:.3f}-{auc.high:.3f})"
    )
    (line,) = ax.plot(fpr, tpr, lw=2, label=label)
    if threshold is not None:
        sens = float(np.mean(score[is_pos] >= threshold))
        spec = float(np.mean(score[~is_pos] < threshold))
        ax.plot(
            1 - spec,
            sens,
            "o",
            color=line.get_color(),
            markeredgecolor="black",
            label=f"threshold {threshold:g}: sensitivity {sens:.2f}, "
            f"specificity {spec:.2f}",
        )
    if chance:
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity (true positive rate)",
        title="ROC curve",
    )
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize="small")
    return ax


def plot_precision_recall(
    y_true: Sequence | np.ndarray,
    proba: Sequence | np.ndarray,
    *,
    pos_label: Any = "PNEUMONIA",
    classes: Sequence | None = None,
    threshold: float | None = 0.5,
    report: ClinicalReport | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Precision-recall curve (PPV against sensitivity) with its average
    precision, its interval, the prevalence line and the operating point.

    Parameters are those of :func:`plot_roc`.

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
    ax = _axes(ax)
    is_pos, score = _binary(y_true, proba, pos_label, classes)
    if report is None:
        report = clinical_report(
            is_pos, score, pos_label=True, threshold=threshold or 0.5
        )
    precision, recall, _ = precision_recall_curve(is_pos, score)
    ap = report.metrics["pr_auc"]
    (line,) = ax.plot(
        recall,
        precision,
        lw=2,
        drawstyle="steps-post",
        label=f"average precision {ap.value:.3f} "
        f"({report.confidence:.0%} CI {ap.low:.3f}-{ap.high:.3f})",
    )
    prevalence = float(np.mean(is_pos))
    ax.axhline(
        prevalence, ls="--", color="grey", lw=1, label=f"prevalence {prevalence:.2f}"
    )
    if threshold is not None and np.any(score >= threshold):
        called = score >= threshold
        sens = float(np.mean(called[is_pos]))
        ppv = float(np.mean(is_pos[called]))
        ax.plot(
            sens,
            ppv,
            "o",
            color=line.get_color(),
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
    y_true: Sequence | np.ndarray,
    proba: Sequence | np.ndarray,
    *,
    pos_label: Any = "PNEUMONIA",
    classes: Sequence | None = None,
    n_bins: int = 10,
    strategy: str = "quantile",
    ax: Axes | None = None,
) -> Axes:
    """Reliability curve: observed frequency of ``pos_label`` against the
    predicted probability, in bins.

    Parameters
    ----------
    y_true, proba, pos_label, classes
        As in :func:`plot_roc`.
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
    ax = _axes(ax)
    is_pos, score = _binary(y_true, proba, pos_label, classes)
    observed, predicted = calibration_curve(
        is_pos, score, n_bins=n_bins, strategy=strategy
    )
    brier = float(np.mean((score - is_pos) ** 2))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    ax.plot(predicted, observed, "o-", lw=2, label=f"model (Brier score {brier:.3f})")
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        xlabel=f"predicted probability of {pos_label}",
        ylabel=f"observed fraction {pos_label}",
        title="Calibration (reliability)",
    )
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize="small")
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
    ax.legend(handles=handles, loc="center right", fontsize="small")
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
    ax: Axes | None = None,
) -> Axes:
    """Grid of the most confidently misclassified images.

    Each tile shows the true and the predicted class and the predicted
    class's probability; the most confident errors come first.

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
    from cxrkit.cache import is_path_like_sequence, load_images

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    proba = np.asarray(proba, dtype=float)
    classes = list(np.asarray(classes).tolist())
    wrong = np.flatnonzero(y_true != y_pred)
    column = np.array([classes.index(p) for p in y_pred.tolist()], dtype=int)
    confidence = proba[np.arange(len(proba)), column]
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
    ncols = max(1, min(ncols, len(shown)))
    nrows = max(1, int(np.ceil(len(shown) / ncols)))
    ax = _axes(ax, (2.2 * ncols, 2.5 * nrows))
    ax.set_axis_off()
    if len(shown) == 0:
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return ax
    paths = is_path_like_sequence(X)
    picked = [X[i] for i in shown] if paths else np.asarray(X)[shown]
    images, _ = load_images(picked, image_size)
    for tile, (i, image) in enumerate(zip(shown, images)):
        r, c = divmod(tile, ncols)
        sub = ax.inset_axes(
            [c / ncols, 1 - (r + 1) / nrows, 1 / ncols * 0.95, 1 / nrows * 0.8]
        )
        sub.imshow(image, cmap="gray", vmin=0, vmax=255)
        sub.set_axis_off()
        title = f"true {y_true[i]}\npred {y_pred[i]} ({confidence[i]:.2f})"
        if paths:
            title = f"{Path(os.fspath(X[i])).name[:22]}\n{title}"
        sub.set_title(title, fontsize=7)
    ax.set_title(f"Misclassified: {len(shown)} of {len(wrong)}", pad=14)
    return ax


def plot_model_comparison(comparison: Any, *, ax: Axes | None = None) -> Axes:
    """ROC curves of several models on the same data, in one figure.

    Parameters
    ----------
    comparison : ModelComparison
        The result of :func:`cxrkit.report.compare_models`.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> from cxrkit.report import ModelComparison
    >>> y = np.array(["NORMAL"] * 20 + ["PNEUMONIA"] * 20)
    >>> probas = {"a": np.linspace(0, 1, 40), "b": np.linspace(1, 0, 40) ** 2}
    >>> ax = plot_model_comparison(ModelComparison.from_predictions(y, probas))
    >>> len(ax.get_legend().get_texts())
    3
    """
    ax = _axes(ax, (5.5, 5))
    for i, (name, report) in enumerate(comparison.reports.items()):
        plot_roc(
            comparison.y_true,
            comparison.proba[name],
            pos_label=report.pos_label,
            classes=report.classes,
            threshold=None,
            report=report,
            name=name,
            chance=i == len(comparison.reports) - 1,
            ax=ax,
        )
    ax.set_title("ROC curves on the same images")
    return ax
