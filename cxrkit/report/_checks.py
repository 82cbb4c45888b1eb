"""What a reader needs besides the metrics: other thresholds, and warnings.

``threshold_table``: what the model would do at other cut-offs, so that a
reader can see the trade-off, not only the one threshold of the report.
``degenerate_warnings``: predictions that make the metrics and figures
misleading (one class for every image, probabilities all near 0 or 1).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from cxrkit.metrics import ClinicalReport, select_threshold

#: Cut-offs of the threshold table, besides the report's own and the chosen ones.
CUTOFFS = (0.1, 0.25, 0.5, 0.75, 0.9)
_EXTREME = 0.01  # a probability below this or above 1 - this is "near 0 or 1"


def _positive(report: ClinicalReport) -> tuple[np.ndarray, np.ndarray]:
    """Is each image positive, and its probability of the positive class."""
    pos = list(report.classes).index(report.pos_label)
    return np.asarray(report.y_true) == report.pos_label, report.proba[:, pos]


def _share(k: int, m: int) -> dict[str, Any]:
    return {"value": k / m if m else None, "k": int(k), "m": int(m)}


def _row(label: str, threshold: float, is_pos: np.ndarray, p: np.ndarray) -> dict:
    called = p >= threshold
    tp, fp = int(np.sum(called & is_pos)), int(np.sum(called & ~is_pos))
    fn, tn = int(np.sum(~called & is_pos)), int(np.sum(~called & ~is_pos))
    return {
        "label": label,
        "threshold": float(threshold),
        "sensitivity": _share(tp, tp + fn),
        "specificity": _share(tn, tn + fp),
        "ppv": _share(tp, tp + fp),
        "npv": _share(tn, tn + fn),
        "n_positive": tp + fp,
    }


def threshold_table(
    report: ClinicalReport,
    *,
    cutoffs: tuple[float, ...] = CUTOFFS,
    sensitivity: float = 0.95,
) -> list[dict[str, Any]]:
    """Sensitivity, specificity, PPV and NPV at several thresholds.

    Rows: the fixed ``cutoffs``, the report's threshold, and the thresholds
    that maximise Youden's J and reach ``sensitivity`` **on these data**
    (optimistic here; choose on validation data). Sorted by threshold; each
    share is ``{"value", "k", "m"}`` (``value`` None when ``m`` is 0).
    Two classes only (empty otherwise).
    """
    if report.average is not None or report.proba is None:
        return []
    is_pos, p = _positive(report)
    rows = [_row("fixed cut-off", t, is_pos, p) for t in cutoffs]
    rows.append(_row("used in this report", report.threshold, is_pos, p))
    if is_pos.all() or not is_pos.any():
        return sorted(rows, key=lambda r: r["threshold"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unreachable target: no row
        for label, target in (
            ("Youden's J, on these data", None),
            (f"sensitivity >= {sensitivity:g}, on these data", sensitivity),
        ):
            point = select_threshold(
                report.y_true,
                report.proba,
                sensitivity=target,
                classes=report.classes,
                pos_label=report.pos_label,
            )
            if np.isfinite(point.threshold):
                rows.append(_row(label, min(point.threshold, 1.0), is_pos, p))
    return sorted(rows, key=lambda r: r["threshold"])


def degenerate_warnings(report: ClinicalReport) -> list[str]:
    """Why the metrics and figures of ``report`` may mislead, in words.

    Empty when nothing is wrong. Checks: one class given to every image;
    every probability within 0.01 of 0 or 1 (overconfident: the calibration
    curve has nothing to show); one distinct probability only (no ROC curve
    or calibration to speak of).
    """
    if report.proba is None:
        return []
    found = []
    given = np.unique(report.y_pred)
    if len(given) == 1 and len(report.classes) > 1:
        found.append(
            f"The model called every one of the {report.n} images {given[0]}. "
            "Sensitivity and specificity are then 1 and 0 (or 0 and 1) whatever "
            "the images show: the threshold does not suit this model, or the model "
            "has not learned to tell the classes apart. Look at the ROC AUC and "
            "the threshold table below; choose the threshold on validation data."
        )
    top = report.proba.max(axis=1)
    if report.n >= 2 and np.all((top > 1 - _EXTREME) | (top < _EXTREME)):
        found.append(
            f"Every probability is within {_EXTREME} of 0 or 1: the model is "
            "overconfident (often after a short or unstable training). The "
            "calibration plot has one or two points and cannot show calibration."
        )
    if report.n >= 2 and np.ptp(report.proba, axis=0).max() < 1e-6:
        found.append(
            "Every image got the same probabilities: the model's output does not "
            "depend on the image. ROC AUC is 0.5 by construction and the curves "
            "are meaningless."
        )
    return found


def conformal_summary(clf: Any, report: ClinicalReport) -> dict[str, Any] | None:
    """How the model's conformal prediction sets behave on the report's images.

    None for a model without sets (see
    [`conformalize`][cxrkit.adaptation.conformalize]). Else the target
    coverage, each class's coverage on these images (the share of its
    images whose set holds it), and how many sets are empty, hold one class,
    or hold every class (refer).
    """
    conformal = getattr(clf, "conformal_", None)
    if conformal is None:
        return None
    from cxrkit.adaptation import sets_from_probabilities

    sets = sets_from_probabilities(clf, report.proba)
    y = np.asarray(report.y_true)
    sizes = sets.sum(axis=1)
    k = sets.shape[1]
    return {
        "coverage": conformal["coverage"],
        "calibrated_on": conformal["n_images"],
        "covered": {
            str(label): _share(sets[y == label, i].sum(), np.sum(y == label))
            for i, label in enumerate(report.classes)
        },
        "set_sizes": {
            "empty (unlike either class)": int(np.sum(sizes == 0)),
            "one class": int(np.sum(sizes == 1)),
            **({f"{n} classes": int(np.sum(sizes == n)) for n in range(2, k)}),
            "every class (refer)": int(np.sum(sizes == k)),
        },
    }
