"""``clinical_report``: every metric with a bootstrap interval, for one or
several models on the same images.

One path builds every report: labels and probabilities are checked
(``_inputs``), turned into classes by the decision rule (``_thresholds``),
and measured by one statistic (``_weighted``) on the unit row and on every
resample of one weights matrix (``_bootstrap``). Several models measured
together share that matrix, so their differences are paired.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix

from cxrkit.metrics._bootstrap import Estimate, bootstrap, estimate, fmt
from cxrkit.metrics._inputs import Checked, check_predictions, check_threshold
from cxrkit.metrics._thresholds import apply_threshold, decide
from cxrkit.metrics._weighted import METRIC_NAMES, PER_CLASS, clinical_statistic

_SHORT = {
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
}


def _finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


@dataclass
class ClinicalReport:
    """Metrics of a classifier on one data set, each with a confidence interval.

    Made by [`clinical_report`][cxrkit.metrics.clinical_report].
    ``print(report)`` shows a table; `to_dict` and `to_json` give plain data.

    Attributes
    ----------
    metrics : dict of str to Estimate
        ``accuracy``, ``sensitivity``, ``specificity``, ``ppv``, ``npv``,
        ``f1``, ``roc_auc``, ``pr_auc``, ``brier``, ``ece`` (expected
        calibration error of the most probable class, 10 equal-width bins;
        Guo et al. 2017). With two classes they describe ``pos_label``
        against the other class; with more, they are macro averages of the
        one-vs-rest values (``average == "macro"``), except accuracy, Brier
        score and ECE.
    per_class : dict or None
        With more than two classes: class -> one-vs-rest metrics.
    support : dict
        Number of images of each class.
    confusion_matrix : ndarray of shape (n_classes, n_classes)
        Rows are true classes, columns predicted classes, in ``classes`` order.
    y_true : ndarray of shape (n,)
        The true labels the report was computed on.
    proba : ndarray of shape (n, n_classes)
        The probability of each class (columns in ``classes`` order); with
        ``y_true``, what the figures of ``cxrkit.plot`` are drawn from.
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
    y_true: np.ndarray | None = field(default=None, repr=False)
    proba: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        """Number of images."""
        return int(sum(self.support.values()))

    @property
    def y_pred(self) -> np.ndarray:
        """The class each image was given (the decision rule of the report)."""
        return apply_threshold(
            self.proba, self.threshold, classes=self.classes, pos_label=self.pos_label
        )

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
            task = f"{self.pos_label} vs {', '.join(map(str, others))}"
            rule = f"threshold {self.threshold:g} on P({self.pos_label})"
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
        """(display name, estimate) of each metric, in table order."""
        suffix = "" if self.average is None else " (macro)"
        return [
            (label + (suffix if key not in ("accuracy", "brier", "ece") else ""), e)
            for key, label in METRIC_NAMES.items()
            for e in [self.metrics[key]]
        ]

    def __str__(self) -> str:
        pct = f"{self.confidence:.0%} CI"
        lines = [self._title(), f"intervals: {self.ci_method}", ""]
        lines.append(f"{'metric':<36}{'estimate':>9}   {pct}")
        for label, e in self._rows():
            lines.append(f"{label:<36}{fmt(e.value):>9}   {fmt(e.low)}-{fmt(e.high)}")
        if self.per_class is not None:
            heads = ("class", "n", *(_SHORT[k] for k in PER_CLASS))
            width = max(len(str(c)) for c in self.classes) + 2
            lines += ["", "one vs rest, per class:"]
            lines.append(
                f"{heads[0]:<{width}}{heads[1]:>6}  "
                + "".join(f"{h:>21}" for h in heads[2:])
            )
            for c, m in self.per_class.items():
                cells = "".join(f"{m[k]!s:>21}" for k in PER_CLASS)
                lines.append(f"{c!s:<{width}}{self.support[c]:>6}  {cells}")
        support = ", ".join(f"{c} {n}" for c, n in self.support.items())
        lines += ["", f"support: {support}"]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<ClinicalReport: {self._title()}>"

    def to_html(self) -> str:
        """The metrics as an HTML table (also shown by Jupyter)."""
        from cxrkit.templates import render

        return render(
            "metrics_table.html",
            report=self,
            rows=self._rows(),
            per_class_heads=[_SHORT[k] for k in PER_CLASS],
            per_class_keys=PER_CLASS,
            fmt=fmt,
        )

    _repr_html_ = to_html


def clinical_report(
    y_true: Sequence | np.ndarray,
    proba: Sequence | np.ndarray,
    *,
    threshold: float | None = None,
    pos_label: Any = None,
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
        [`select_threshold`][cxrkit.metrics.select_threshold]). More classes:
        the most probable class is predicted, and ``threshold`` must be None.
    pos_label : label, optional
        The positive class (two classes only). Default, as in scikit-learn:
        ``"PNEUMONIA"`` when it is a class, 1 for 0/1 labels; any other
        two classes need it.
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
    >>> clinical_report([0, 0, 1, 1], [0.2, 0.6, 0.7, 0.9], n_bootstrap=0).pos_label
    1
    """
    reports, _ = clinical_reports(
        y_true,
        {"model": proba},
        threshold=threshold,
        pos_label=pos_label,
        classes=classes,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        random_state=random_state,
    )
    return reports["model"]


def clinical_reports(
    y_true: Sequence | np.ndarray,
    probas: Mapping[str, Sequence | np.ndarray],
    *,
    threshold: float | None = None,
    pos_label: Any = None,
    classes: Sequence | np.ndarray | None = None,
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    random_state: int | None = 0,
) -> tuple[dict[str, ClinicalReport], dict[str, dict[Hashable, np.ndarray]]]:
    """One report per model, all resampled with one shared weights matrix.

    Returns the reports and, per model, the bootstrap replicates of every
    metric: replicate ``b`` of every model comes from the same resample, so
    differences between models are paired by construction.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be an integer >= 0, got {n_bootstrap!r}")
    checked = {
        name: check_predictions(y_true, p, classes, pos_label)
        for name, p in probas.items()
    }
    first = next(iter(checked.values()))
    binary = first.pos is not None
    if binary:
        threshold = 0.5 if threshold is None else check_threshold(threshold)
    elif threshold is not None:
        raise ValueError(
            f"threshold applies to two classes; with {len(first.classes)} classes "
            "the most probable class is predicted (pass threshold=None)"
        )
    predicted = {
        name: decide(c.scores, c.pos, threshold) for name, c in checked.items()
    }
    statistics = {
        name: clinical_statistic(c.y_idx, predicted[name], c.scores, c.pos)
        for name, c in checked.items()
    }

    def together(weights: np.ndarray) -> dict[Hashable, np.ndarray]:
        return {
            (name, key): values
            for name, statistic in statistics.items()
            for key, values in statistic(weights).items()
        }

    point, replicates = bootstrap(
        together, first.y_idx, n_resamples=int(n_bootstrap), random_state=random_state
    )
    reports, per_model = {}, {}
    for name, c in checked.items():
        own_point = {key: v for (m, key), v in point.items() if m == name}
        per_model[name] = {key: v for (m, key), v in replicates.items() if m == name}
        reports[name] = _report(
            c,
            predicted[name],
            threshold,
            own_point,
            per_model[name],
            n_bootstrap=int(n_bootstrap),
            confidence=float(confidence),
            random_state=random_state,
        )
    return reports, per_model


def _report(
    c: Checked,
    pred_idx: np.ndarray,
    threshold: float | None,
    point: dict[Hashable, float],
    replicates: dict[Hashable, np.ndarray],
    **settings: Any,
) -> ClinicalReport:
    """A ClinicalReport from the point values and replicates of one model."""
    confidence = settings["confidence"]

    def est(key: Hashable) -> Estimate:
        return estimate(point[key], replicates[key], confidence)

    labels = c.classes.tolist()
    k = len(labels)
    metrics = {key: est(key) for key in METRIC_NAMES}
    per_class = None
    if c.pos is None:
        per_class = {labels[i]: {m: est((i, m)) for m in PER_CLASS} for i in range(k)}
    matrix = confusion_matrix(c.y_idx, pred_idx, labels=range(k))
    notes = []
    if c.pos is not None:
        notes = _zero_width_notes(metrics, matrix, c.pos, confidence)
    else:
        notes = _macro_notes(per_class, labels)
    notes += _undefined_notes(replicates, settings["n_bootstrap"])
    return ClinicalReport(
        metrics=metrics,
        per_class=per_class,
        support={label: int(np.sum(c.y_idx == i)) for i, label in enumerate(labels)},
        classes=labels,
        pos_label=labels[c.pos] if c.pos is not None else None,
        threshold=threshold,
        confusion_matrix=matrix,
        average=None if c.pos is not None else "macro",
        notes=notes,
        y_true=c.y_true,
        proba=c.scores,
        **settings,
    )


#: Share of bootstrap resamples without a value above which a note says so.
UNDEFINED_SHARE = 0.01


def _undefined_notes(
    replicates: dict[Hashable, np.ndarray], n_bootstrap: int
) -> list[str]:
    """Metrics undefined on more than ``UNDEFINED_SHARE`` of the resamples.

    A resample that calls no image positive has no PPV (0 of 0), and one
    with no negative call no NPV; the percentile interval is taken over the
    other resamples, which leaves out the very ones where the metric is
    least certain.
    """
    found = []
    for key, name in METRIC_NAMES.items():
        values = replicates.get(key)
        if values is None or not len(values):
            continue
        share = float(np.mean(~np.isfinite(values)))
        if UNDEFINED_SHARE < share < 1:  # at 1 the metric is n/a, no interval
            found.append(f"{name} {share:.1%}")
    if not found:
        return []
    return [
        f"Undefined in part of the {n_bootstrap} bootstrap resamples (0 of 0: "
        "e.g. no image called positive in them), with the interval taken over "
        "the rest, which may make it too narrow: " + "; ".join(found) + "."
    ]


def _macro_notes(
    per_class: dict[Any, dict[str, Estimate]] | None, labels: list[Any]
) -> list[str]:
    """Macro averages taken over fewer classes than there are.

    A class that is never predicted has no PPV (0 of 0); the macro average
    is then over the other classes (scikit-learn's ``zero_division=np.nan``;
    its default counts such a class as 0).
    """
    if per_class is None:
        return []
    found = []
    for name in PER_CLASS:
        missing = [
            str(label)
            for label in labels
            if not np.isfinite(per_class[label][name].value)
        ]
        if missing:
            found.append(
                f"{METRIC_NAMES[name]} over {len(labels) - len(missing)} of "
                f"{len(labels)} classes (undefined for {', '.join(missing)})"
            )
    if not found:
        return []
    return [
        "Macro averages of the classes where a metric is defined (a class "
        "never predicted has no PPV; counted as 0 it would lower the "
        "average): " + "; ".join(found) + "."
    ]


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
    exact = []
    for key, (k, m) in counts.items():
        e = metrics[key]
        if m > 0 and e.low == e.high:
            ci = binomtest(int(k), int(m)).proportion_ci(confidence_level=confidence)
            exact.append(f"{METRIC_NAMES[key]} {k} of {m}: {ci.low:.3f}-{ci.high:.3f}")
    if not exact:
        return []
    # One note for all of them: the same sentence five times reads as noise.
    return [
        "Zero-width bootstrap intervals (every resample agrees) do not mean "
        f"certainty; the exact (Clopper-Pearson) {confidence:.0%} intervals are: "
        + "; ".join(exact)
        + "."
    ]
