"""Every clinical metric as a weighted sum over cases: the one copy of each.

A row of weights is one version of the data set: all ones is the data as
they are (the point estimate), a row of bootstrap counts is one resample.
The tests check every row against scikit-learn's metrics with
``sample_weight``: ``recall_score``, ``precision_score``, ``f1_score``,
``roc_auc_score``, ``average_precision_score``, ``accuracy_score``,
``brier_score_loss``. They are written here, vectorized over rows, because
scikit-learn computes one weighting per call (one sort per resample), which
would make 2,000 resamples of every metric take seconds instead of a
fraction of one.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable

import numpy as np

from cxrkit.metrics._bootstrap import Statistic

#: Display names, in table order. Keys are the names in ``ClinicalReport``.
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "brier": "Brier score (lower is better)",
    "ece": "Expected calibration error (lower is better)",
}
#: Equal-width confidence bins of the expected calibration error (Guo et al. 2017).
ECE_BINS = 10
#: One-vs-rest metrics: per class, and macro-averaged over classes.
PER_CLASS = ("sensitivity", "specificity", "ppv", "npv", "f1", "roc_auc", "pr_auc")


class Curve:
    """Sort order and tie groups of one score vector, shared by all rows."""

    def __init__(self, is_pos: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(-score, kind="mergesort")
        ranked = score[self.order]
        # Last position of each group of tied scores (one ROC/PR point each).
        self.ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
        self.pos = is_pos[self.order].astype(float)

    def aucs(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ROC AUC and average precision of each row of weights."""
        w = weights[:, self.order]
        tps = np.cumsum(w * self.pos, axis=1)[:, self.ends]
        fps = np.cumsum(w * (1 - self.pos), axis=1)[:, self.ends]
        zero = np.zeros((len(w), 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = np.hstack([zero, tps / tps[:, -1:]])
            fpr = np.hstack([zero, fps / fps[:, -1:]])
        roc_auc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]), axis=1) / 2
        called = tps + fps
        precision = np.divide(tps, called, out=np.zeros_like(tps), where=called > 0)
        pr_auc = np.sum(np.diff(tpr, axis=1) * precision, axis=1)
        return roc_auc, pr_auc


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (as scikit-learn's zero_division=nan)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def one_vs_rest(
    weights: np.ndarray, is_k: np.ndarray, pred_k: np.ndarray, curve: Curve
) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV, F1, ROC and PR AUC of one class."""
    tp = weights @ (is_k & pred_k).astype(float)
    fp = weights @ (~is_k & pred_k).astype(float)
    fn = weights @ (is_k & ~pred_k).astype(float)
    tn = weights @ (~is_k & ~pred_k).astype(float)
    roc_auc, pr_auc = curve.aucs(weights)
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
    }


def clinical_statistic(
    y_idx: np.ndarray, pred_idx: np.ndarray, scores: np.ndarray, pos: int | None
) -> Statistic:
    """The statistic of ``clinical_report``: weights -> every metric.

    Keys: each name of ``METRIC_NAMES`` (for two classes, ``pos`` against
    the other; for more, macro averages of the one-vs-rest values, except
    accuracy and Brier score), and ``(class index, name)`` for each
    one-vs-rest metric of each class described.
    """
    k = scores.shape[1]
    focus = [pos] if pos is not None else list(range(k))
    curves = {i: Curve(y_idx == i, scores[:, i]) for i in focus}
    correct = (pred_idx == y_idx).astype(float)
    if pos is not None:
        brier_terms = (scores[:, pos] - (y_idx == pos)) ** 2
    else:  # as scikit-learn: the sum over classes of squared differences
        brier_terms = np.sum((scores - np.eye(k)[y_idx]) ** 2, axis=1)
    # Expected calibration error of the most probable class (Guo et al., "On
    # Calibration of Modern Neural Networks", ICML 2017): per confidence bin,
    # |mean confidence - accuracy|, weighted by the bin's share of cases.
    confidence = scores.max(axis=1)
    top_correct = (scores.argmax(axis=1) == y_idx).astype(float)
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    gap_by_bin = np.eye(ECE_BINS)[bins] * (confidence - top_correct)[:, None]

    def statistic(weights: np.ndarray) -> dict[Hashable, np.ndarray]:
        total = weights.sum(axis=1)
        out: dict[Hashable, np.ndarray] = {
            "accuracy": weights @ correct / total,
            "brier": weights @ brier_terms / total,
            "ece": np.abs(weights @ gap_by_bin).sum(axis=1) / total,
        }
        per_class = {
            i: one_vs_rest(weights, y_idx == i, pred_idx == i, curves[i]) for i in focus
        }
        for i, values in per_class.items():
            out.update({(i, name): v for name, v in values.items()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: NaN
            for name in PER_CLASS:
                out[name] = np.nanmean([per_class[i][name] for i in focus], axis=0)
        return out

    return statistic
