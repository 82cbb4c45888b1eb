"""Clinical metrics with bootstrap confidence intervals, and operating thresholds.

Point estimates come from scikit-learn's metrics (``accuracy_score``,
``recall_score``, ``precision_score``, ``f1_score``, ``roc_auc_score``,
``average_precision_score``, ``brier_score_loss``). Written here by hand, because
neither scikit-learn nor SciPy has them in this form: specificity and NPV as
names (they are the recall and precision of the negative class), a
*stratified, vectorized* bootstrap of all metrics at once, and the choice of
an operating threshold for a target sensitivity or specificity.

For research and education; not a medical device.
"""

from __future__ import annotations

import html
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn import metrics as skm
from sklearn.utils.validation import column_or_1d

__all__ = [
    "ClinicalReport",
    "Estimate",
    "OperatingPoint",
    "clinical_report",
    "select_threshold",
]

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
}
_PER_CLASS = ("sensitivity", "specificity", "ppv", "npv", "f1", "roc_auc", "pr_auc")
# Elements of one chunk of bootstrap weights (resamples x cases): 32 MB of float64.
_CHUNK_ELEMENTS = 2**22


class Estimate(NamedTuple):
    """A point estimate with the bounds of its confidence interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{_fmt(self.value)} ({_fmt(self.low)}-{_fmt(self.high)})"


class OperatingPoint(NamedTuple):
    """A decision threshold and what it achieves on the data it was chosen on.

    An image is called positive when its probability is ``>= threshold``
    (the convention of ``roc_curve`` and ``FixedThresholdClassifier``).
    """

    threshold: float
    sensitivity: float
    specificity: float
    criterion: str


@dataclass
class ClinicalReport:
    """Metrics of a classifier on one data set, each with a confidence interval.

    Made by :func:`clinical_report`. ``print(report)`` shows a table;
    :meth:`to_dict` and :meth:`to_json` give plain data.

    Attributes
    ----------
    metrics : dict of str to Estimate
        ``accuracy``, ``sensitivity``, ``specificity``, ``ppv``, ``npv``,
        ``f1``, ``roc_auc``, ``pr_auc``, ``brier``. With two classes they
        describe ``pos_label`` against the other class; with more, they are
        macro averages of the one-vs-rest values (``average == "macro"``),
        except accuracy and Brier score.
    per_class : dict or None
        With more than two classes: class -> one-vs-rest metrics.
    support : dict
        Number of images of each class.
    confusion_matrix : ndarray of shape (n_classes, n_classes)
        Rows are true classes, columns predicted classes, in ``classes`` order.
    """

    metrics: dict[str, Estimate]
    per_class: dict[Any, dict[str, Estimate]] | None
    support: dict[Any, int]
    classes: list
    pos_label: Any
    threshold: float | None
    confusion_matrix: np.ndarray
    n_bootstrap: int
    confidence: float
    random_state: int | None
    average: str | None = None
    notes: list[str] = field(default_factory=list)
    _replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        """Number of images."""
        return int(sum(self.support.values()))

    @property
    def ci_method(self) -> str:
        """How the confidence intervals were computed, in words."""
        return (
            f"{self.confidence:.0%} percentile bootstrap, {self.n_bootstrap} "
            "resamples stratified by class"
            + (f" (seed {self.random_state})" if self.random_state is not None else "")
        )

    def _title(self) -> str:
        if self.average is None:
            others = [c for c in self.classes if c != self.pos_label]
            rule = f"threshold {self.threshold:g} on P({self.pos_label})"
            task = f"{self.pos_label} vs {', '.join(map(str, others))}"
        else:
            task = f"{len(self.classes)} classes, macro averages"
            rule = "most probable class"
        return f"{task}; {self.n} images; {rule}"

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data (NaN becomes None; class labels become str)."""

        def est(e: Estimate) -> dict[str, float | None]:
            return {k: _finite_or_none(v) for k, v in e._asdict().items()}

        per_class = None
        if self.per_class is not None:
            per_class = {
                str(c): {k: est(v) for k, v in m.items()}
                for c, m in self.per_class.items()
            }
        return {
            "task": "binary" if self.average is None else "multiclass",
            "classes": [str(c) for c in self.classes],
            "pos_label": None if self.pos_label is None else str(self.pos_label),
            "threshold": self.threshold,
            "average": self.average,
            "n": self.n,
            "support": {str(c): int(v) for c, v in self.support.items()},
            "metrics": {k: est(v) for k, v in self.metrics.items()},
            "per_class": per_class,
            "confusion_matrix": {
                "rows": "true class",
                "columns": "predicted class",
                "labels": [str(c) for c in self.classes],
                "counts": self.confusion_matrix.tolist(),
            },
            "confidence": self.confidence,
            "n_bootstrap": self.n_bootstrap,
            "random_state": self.random_state,
            "ci_method": self.ci_method,
            "notes": list(self.notes),
        }

    def to_json(self, path: str | os.PathLike | None = None, **kwargs: Any) -> str:
        """The report as a JSON string; also written to ``path`` when given."""
        kwargs.setdefault("indent", 2)
        text = json.dumps(self.to_dict(), **kwargs)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def _rows(self) -> list[tuple[str, Estimate]]:
        suffix = "" if self.average is None else " (macro)"
        rows = []
        for key, label in METRIC_NAMES.items():
            macro = key not in ("accuracy", "brier")
            rows.append((label + (suffix if macro else ""), self.metrics[key]))
        return rows

    def __str__(self) -> str:
        pct = f"{self.confidence:.0%} CI"
        lines = [self._title(), f"intervals: {self.ci_method}", ""]
        lines.append(f"{'metric':<36}{'estimate':>9}   {pct}")
        for label, e in self._rows():
            ci = f"{_fmt(e.low)}-{_fmt(e.high)}"
            lines.append(f"{label:<36}{_fmt(e.value):>9}   {ci}")
        if self.per_class is not None:
            heads = ("class", "n", *(_SHORT[k] for k in _PER_CLASS))
            width = max(len(str(c)) for c in self.classes) + 2
            lines += ["", "one vs rest, per class:"]
            lines.append(
                f"{heads[0]:<{width}}{heads[1]:>6}  "
                + "".join(f"{h:>21}" for h in heads[2:])
            )
            for c, m in self.per_class.items():
                cells = "".join(f"{m[k]!s:>21}" for k in _PER_CLASS)
                lines.append(f"{c!s:<{width}}{self.support[c]:>6}  {cells}")
        support = ", ".join(f"{c} {n}" for c, n in self.support.items())
        lines += ["", f"support: {support}"]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<ClinicalReport: {self._title()}>"

    def to_html(self) -> str:
        """The metrics as an HTML table (used by the evaluation report)."""
        pct = f"{self.confidence:.0%} CI"
        cells = "".join(
            f"<tr><td>{html.escape(label)}</td><td>{_fmt(e.value)}</td>"
            f"<td>{_fmt(e.low)} &ndash; {_fmt(e.high)}</td></tr>"
            for label, e in self._rows()
        )
        out = (
            f"<table class='metrics'><thead><tr><th>metric</th><th>estimate</th>"
            f"<th>{pct}</th></tr></thead><tbody>{cells}</tbody></table>"
        )
        out += "".join(f"<p class='warning'>{html.escape(n)}</p>" for n in self.notes)
        if self.per_class is not None:
            head = "".join(f"<th>{_SHORT[k]}</th>" for k in _PER_CLASS)
            body = "".join(
                f"<tr><td>{html.escape(str(c))}</td><td>{self.support[c]}</td>"
                + "".join(f"<td>{m[k]!s}</td>" for k in _PER_CLASS)
                + "</tr>"
                for c, m in self.per_class.items()
            )
            out += (
                "<p>One vs rest, per class (estimate and CI):</p>"
                f"<table class='metrics'><thead><tr><th>class</th><th>n</th>{head}"
                f"</tr></thead><tbody>{body}</tbody></table>"
            )
        return out

    _repr_html_ = to_html


_SHORT = {
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
}


def _fmt(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


# --------------------------------------------------------------------- inputs
def _prepare(
    y_true: Any, proba: Any, classes: Any, pos_label: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    """Validate inputs; returns class indices, (n, K) scores, classes, positive."""
    y_true = column_or_1d(np.asarray(y_true), warn=True)
    proba = np.asarray(proba, dtype=float)
    if proba.ndim not in (1, 2):
        raise ValueError(
            f"proba must be 1-D (probability of pos_label) or 2-D (predict_proba "
            f"output), got shape {proba.shape}"
        )
    if len(proba) != len(y_true):
        raise ValueError(
            f"y_true has {len(y_true)} labels but proba has {len(proba)} rows"
        )
    if not np.all(np.isfinite(proba)) or proba.min() < 0 or proba.max() > 1:
        raise ValueError("proba must hold probabilities in [0, 1], without NaN")
    if classes is None:
        classes = np.unique(y_true)
    classes = np.asarray(classes)
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    unknown = sorted({str(v) for v in y_true.tolist() if v not in lookup})
    if unknown:
        raise ValueError(
            f"y_true holds labels {unknown} that are not in classes "
            f"{classes.tolist()}; pass classes=clf.classes_"
        )
    y_idx = np.array([lookup[v] for v in y_true.tolist()], dtype=np.intp)
    k = len(classes)
    if k < 2:
        raise ValueError(
            f"y_true holds a single class ({classes.tolist()}); sensitivity and "
            "specificity need images of every class"
        )
    pos = None
    if k == 2:
        if pos_label not in lookup:
            raise ValueError(
                f"pos_label={pos_label!r} is not one of the classes "
                f"{classes.tolist()}; pass pos_label=<the positive class>"
            )
        pos = lookup[pos_label]
    if proba.ndim == 1:
        if k != 2:
            raise ValueError(
                f"a 1-D proba is the probability of pos_label for two classes; "
                f"with {k} classes pass the (n, {k}) predict_proba output"
            )
        scores = np.empty((len(proba), 2))
        scores[:, pos], scores[:, 1 - pos] = proba, 1 - proba
    else:
        if proba.shape[1] != k:
            raise ValueError(
                f"proba has {proba.shape[1]} columns but there are {k} classes "
                f"{classes.tolist()}; columns must follow classes (clf.classes_)"
            )
        scores = proba
    missing = [c for i, c in enumerate(classes.tolist()) if not np.any(y_idx == i)]
    if missing:
        raise ValueError(
            f"y_true has no images of class(es) {missing}; every class needs "
            "images for sensitivity, specificity and AUC"
        )
    return y_idx, scores, classes, pos


# ------------------------------------------------------------------ bootstrap
# Hand-written: scikit-learn has no bootstrap, and scipy.stats.bootstrap
# resamples values (one sort per resample for AUC). Here a resample is a
# matrix row of counts (how often each case is drawn, multinomial within its
# class = stratified), so every metric is a weighted sum over cases and all
# resamples share one sort by score: 2,000 resamples of 624 cases take a few
# hundredths of a second.
def _bootstrap_weights(
    y_idx: np.ndarray, n_classes: int, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_resamples, n) counts of each case per resample, stratified by class."""
    weights = np.zeros((n_resamples, len(y_idx)))
    for k in range(n_classes):
        members = np.flatnonzero(y_idx == k)
        m = len(members)
        weights[:, members] = rng.multinomial(m, np.full(m, 1.0 / m), size=n_resamples)
    return weights


class _Curve:
    """Sort order and tie groups of one score vector, shared by all resamples."""

    def __init__(self, is_pos: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(-score, kind="mergesort")
        ranked = score[self.order]
        # Last position of each group of tied scores (one ROC/PR point each).
        self.ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
        self.pos = is_pos[self.order].astype(float)

    def aucs(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ROC AUC and average precision of each weighted resample."""
        w = weights[:, self.order]
        tps = np.cumsum(w * self.pos, axis=1)[:, self.ends]
        fps = np.cumsum(w * (1 - self.pos), axis=1)[:, self.ends]
        zero = np.zeros((len(w), 1))
        tpr = np.hstack([zero, tps / tps[:, -1:]])
        fpr = np.hstack([zero, fps / fps[:, -1:]])
        roc_auc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]), axis=1) / 2
        called = tps + fps
        precision = np.divide(tps, called, out=np.zeros_like(tps), where=called > 0)
        pr_auc = np.sum(np.diff(tpr, axis=1) * precision, axis=1)
        return roc_auc, pr_auc


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _one_vs_rest(
    weights: np.ndarray, is_k: np.ndarray, pred_k: np.ndarray, curve: _Curve
) -> dict[str, np.ndarray]:
    """Per-resample one-vs-rest metrics of one class (sensitivity, ...)."""
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


def _replicates(
    weights: np.ndarray,
    y_idx: np.ndarray,
    pred_idx: np.ndarray,
    focus: Sequence[int],
    brier_terms: np.ndarray,
    curves: dict[int, _Curve],
) -> tuple[dict[str, np.ndarray], dict[int, dict[str, np.ndarray]]]:
    """All metrics for each row of ``weights`` (overall and per focus class)."""
    n = len(y_idx)
    per_class = {
        k: _one_vs_rest(weights, y_idx == k, pred_idx == k, curves[k]) for k in focus
    }
    overall = {
        "accuracy": weights @ (pred_idx == y_idx).astype(float) / n,
        "brier": weights @ brier_terms / n,
    }
    return overall, per_class


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


# ------------------------------------------------------------ point estimates
def _point_one_vs_rest(
    is_k: np.ndarray, pred_k: np.ndarray, score: np.ndarray
) -> dict[str, float]:
    """One-vs-rest point estimates of one class, from scikit-learn."""
    nan = np.nan
    return {
        "sensitivity": skm.recall_score(is_k, pred_k, zero_division=nan),
        "specificity": skm.recall_score(
            is_k, pred_k, pos_label=False, zero_division=nan
        ),
        "ppv": skm.precision_score(is_k, pred_k, zero_division=nan),
        "npv": skm.precision_score(is_k, pred_k, pos_label=False, zero_division=nan),
        "f1": skm.f1_score(is_k, pred_k, zero_division=nan),
        "roc_auc": skm.roc_auc_score(is_k, score),
        "pr_auc": skm.average_precision_score(is_k, score),
    }


def clinical_report(
    y_true: Sequence | np.ndarray,
    proba: Sequence | np.ndarray,
    *,
    threshold: float | None = None,
    pos_label: Any = "PNEUMONIA",
    classes: Sequence | np.ndarray | None = None,
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    random_state: int | None = 0,
) -> ClinicalReport:
    """Accuracy, sensitivity, specificity, PPV, NPV, F1, ROC/PR AUC and Brier
    score, each with a bootstrap confidence interval.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        True labels.
    proba : array-like of shape (n,) or (n, n_classes)
        ``predict_proba`` output (columns in ``classes`` order), or, for two
        classes, the probability of ``pos_label`` alone.
    threshold : float, optional
        Two classes: an image is called ``pos_label`` when its probability
        is ``>= threshold`` (default 0.5; choose one on validation data with
        :func:`select_threshold`). More classes: the most probable class is
        predicted, and ``threshold`` must be None.
    pos_label : label, default="PNEUMONIA"
        The positive class (two classes only).
    classes : array-like, optional
        Class labels in the order of the ``proba`` columns; default: the
        sorted unique labels of ``y_true`` (pass ``clf.classes_`` to be sure).
    n_bootstrap : int, default=2000
        Bootstrap resamples; 0 skips the intervals (they are NaN).
    confidence : float, default=0.95
        Coverage of the intervals.
    random_state : int or None, default=0
        Seed of the resampling; the same seed gives the same intervals.

    Returns
    -------
    ClinicalReport
        ``print()`` it for a table; ``.metrics["sensitivity"].low`` etc.;
        ``.to_dict()`` / ``.to_json()``.

    Notes
    -----
    Intervals are percentile intervals of a bootstrap stratified by class:
    each resample keeps the number of images of each class, so sensitivity
    varies only with the positive images and specificity only with the
    negative ones. They describe the sampling uncertainty of *this* data set,
    not how the model would do at another hospital or on another population.
    PPV and NPV depend on the prevalence of the data set.

    Examples
    --------
    >>> y = ["NORMAL"] * 50 + ["PNEUMONIA"] * 50
    >>> p = np.r_[np.linspace(0, 0.6, 50), np.linspace(0.4, 1, 50)]
    >>> report = clinical_report(y, p, threshold=0.5)
    >>> round(report.metrics["sensitivity"].value, 2)
    0.82
    >>> e = report.metrics["roc_auc"]
    >>> bool(e.low <= e.value <= e.high)
    True
    >>> report.to_dict()["support"]
    {'NORMAL': 50, 'PNEUMONIA': 50}
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be an integer >= 0, got {n_bootstrap!r}")
    y_idx, scores, classes, pos = _prepare(y_true, proba, classes, pos_label)
    n, k = scores.shape
    binary = pos is not None
    if binary:
        threshold = 0.5 if threshold is None else float(threshold)
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        pred_idx = np.where(scores[:, pos] >= threshold, pos, 1 - pos)
        focus = [pos]
    else:
        if threshold is not None:
            raise ValueError(
                f"threshold applies to two classes; with {k} classes the most "
                "probable class is predicted (pass threshold=None)"
            )
        pred_idx = scores.argmax(axis=1)
        focus = list(range(k))

    # Point estimates: scikit-learn.
    y_lab, pred_lab = classes[y_idx], classes[pred_idx]
    per_point = {
        i: _point_one_vs_rest(y_idx == i, pred_idx == i, scores[:, i]) for i in focus
    }
    if binary:
        brier = skm.brier_score_loss(y_idx == pos, scores[:, pos])
        brier_terms = (scores[:, pos] - (y_idx == pos)) ** 2
    else:
        with warnings.catch_warnings():
            if np.allclose(scores.sum(axis=1), 1, atol=1e-4):  # float32 softmax
                warnings.filterwarnings("ignore", message=".*do not sum to one")
            brier = skm.brier_score_loss(y_lab, scores, labels=classes)
        onehot = np.eye(k)[y_idx]
        brier_terms = np.sum((scores - onehot) ** 2, axis=1)  # as scikit-learn
    point = {"accuracy": skm.accuracy_score(y_lab, pred_lab), "brier": brier}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN when undefined
        for key in _PER_CLASS:
            point[key] = float(np.nanmean([per_point[i][key] for i in focus]))

    # Intervals: the vectorized, stratified bootstrap.
    rng = np.random.default_rng(random_state)
    curves = {i: _Curve(y_idx == i, scores[:, i]) for i in focus}
    chunk = max(1, _CHUNK_ELEMENTS // n)
    reps: dict[str, list] = {key: [] for key in point}
    reps_class: dict[int, dict[str, list]] = {
        i: {m: [] for m in _PER_CLASS} for i in focus
    }
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        weights = _bootstrap_weights(y_idx, k, b, rng)
        overall, per_class = _replicates(
            weights, y_idx, pred_idx, focus, brier_terms, curves
        )
        for key, values in overall.items():
            reps[key].append(values)
        for i in focus:
            for key, values in per_class[i].items():
                reps_class[i][key].append(values)
    replicates = {key: _concat(reps[key]) for key in ("accuracy", "brier")}
    class_reps = {
        i: {m: _concat(v) for m, v in d.items()} for i, d in reps_class.items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples
        for key in _PER_CLASS:
            replicates[key] = np.nanmean([class_reps[i][key] for i in focus], axis=0)

    def estimate(value: float, values: np.ndarray) -> Estimate:
        return Estimate(float(value), *_interval(values, confidence))

    metrics = {key: estimate(point[key], replicates[key]) for key in METRIC_NAMES}
    per_class_out = None
    if not binary:
        per_class_out = {
            classes[i].item(): {
                m: estimate(per_point[i][m], class_reps[i][m]) for m in _PER_CLASS
            }
            for i in focus
        }
    labels = classes.tolist()
    matrix = skm.confusion_matrix(y_idx, pred_idx, labels=range(k))
    notes = _zero_width_notes(metrics, matrix, pos, confidence) if binary else []
    return ClinicalReport(
        metrics=metrics,
        per_class=per_class_out,
        support={c: int(np.sum(y_idx == i)) for i, c in enumerate(labels)},
        classes=labels,
        pos_label=labels[pos] if binary else None,
        threshold=threshold,
        confusion_matrix=matrix,
        n_bootstrap=int(n_bootstrap),
        confidence=float(confidence),
        random_state=random_state,
        average=None if binary else "macro",
        notes=notes,
        _replicates=replicates,
    )


def _zero_width_notes(
    metrics: dict[str, Estimate], matrix: np.ndarray, pos: int, confidence: float
) -> list[str]:
    """Exact intervals where the bootstrap interval has zero width.

    With k of k (or 0 of k) right, every resample agrees and the bootstrap
    interval collapses to a point; that is not certainty. SciPy's exact
    (Clopper-Pearson) binomial interval says how wide it really is.
    """
    from scipy.stats import binomtest

    neg = 1 - pos
    (tp, fn), (fp, tn) = matrix[pos, [pos, neg]], matrix[neg, [pos, neg]]
    counts = {
        "accuracy": (tp + tn, matrix.sum()),
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
    }
    notes = []
    for key, (k, m) in counts.items():
        e = metrics[key]
        if m > 0 and e.low == e.high:
            ci = binomtest(int(k), int(m)).proportion_ci(confidence_level=confidence)
            notes.append(
                f"{METRIC_NAMES[key]} is {k} of {m}: the bootstrap interval has zero "
                f"width, which does not mean certainty; the exact (Clopper-Pearson) "
                f"{confidence:.0%} interval is {ci.low:.3f}-{ci.high:.3f}."
            )
    return notes


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0)


# ------------------------------------------------------------ operating points
def select_threshold(
    y_true: Sequence | np.ndarray,
    proba: Sequence | np.ndarray,
    *,
    sensitivity: float | None = None,
    specificity: float | None = None,
    pos_label: Any = "PNEUMONIA",
    classes: Sequence | np.ndarray | None = None,
) -> OperatingPoint:
    """Choose a decision threshold on validation data.

    With ``sensitivity=s``: the highest threshold whose sensitivity is at
    least ``s`` (the best specificity among those). With ``specificity=s``:
    the lowest threshold whose specificity is at least ``s`` (the best
    sensitivity among those). With neither: the threshold that maximizes
    Youden's J = sensitivity + specificity - 1.

    Choose the threshold on validation data and report the metrics on
    separate test data: on the data it was chosen on, the target is met by
    construction and the estimate is optimistic.

    Parameters
    ----------
    y_true : array-like of shape (n,)
    proba : array-like of shape (n,) or (n, 2)
        Probability of ``pos_label``, or ``predict_proba`` output.
    sensitivity, specificity : float in (0, 1], optional
        The target; at most one of them.
    pos_label : label, default="PNEUMONIA"
    classes : array-like, optional
        Class order of the ``proba`` columns (default: sorted labels).

    Returns
    -------
    OperatingPoint
        ``threshold`` (call an image positive when its probability is
        ``>= threshold``) and the sensitivity and specificity it reaches on
        these data.

    Examples
    --------
    >>> y = ["NORMAL"] * 4 + ["PNEUMONIA"] * 4
    >>> p = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    >>> point = select_threshold(y, p, sensitivity=1.0)
    >>> point.threshold, point.sensitivity, point.specificity
    (0.4, 1.0, 0.75)
    >>> select_threshold(y, p, specificity=1.0).threshold
    0.7
    """
    if sensitivity is not None and specificity is not None:
        raise ValueError("pass sensitivity or specificity, not both")
    for name, target in (("sensitivity", sensitivity), ("specificity", specificity)):
        if target is not None and not 0 < target <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {target!r}")
    y_idx, scores, _, pos = _prepare(y_true, proba, classes, pos_label)
    if pos is None:
        raise ValueError("select_threshold needs two classes")
    fpr, tpr, thresholds = skm.roc_curve(
        y_idx == pos, scores[:, pos], drop_intermediate=False
    )
    if sensitivity is not None:
        i = int(np.argmax(tpr >= sensitivity - 1e-12))
        criterion = f"sensitivity >= {sensitivity:g}"
    elif specificity is not None:
        i = int(np.flatnonzero(1 - fpr >= specificity - 1e-12).max())
        criterion = f"specificity >= {specificity:g}"
    else:
        i = int(np.argmax(tpr - fpr))
        criterion = "Youden's J"
    threshold = float(thresholds[i])
    if not math.isfinite(threshold):
        warnings.warn(
            f"no threshold reaches {criterion} while calling any image "
            f"{pos_label}; the threshold is inf (every image negative)",
            UserWarning,
            stacklevel=2,
        )
    return OperatingPoint(threshold, float(tpr[i]), float(1 - fpr[i]), criterion)
