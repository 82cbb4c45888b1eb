"""Operating thresholds: the decision rule, and choosing a threshold.

One rule turns probabilities into classes everywhere in cxrkit: with a
threshold, an image is called positive when the probability of the positive
class is ``>= threshold`` (the convention of ``roc_curve`` and
``FixedThresholdClassifier``); without one, it is given its most probable
class (as ``clf.predict``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from sklearn import metrics as skm

from cxrkit.metrics._inputs import (
    check_predictions,
    check_probabilities,
    check_threshold,
    class_scores,
    positive_label,
)


class OperatingPoint(NamedTuple):
    """A decision threshold and what it achieves on the data it was chosen on.

    An image is called positive when its probability is ``>= threshold``
    (the convention of ``roc_curve`` and ``FixedThresholdClassifier``).
    """

    threshold: float
    sensitivity: float
    specificity: float
    criterion: str


def decide(scores: np.ndarray, pos: int | None, threshold: float | None) -> np.ndarray:
    """Column index of the class each row is given (the decision rule)."""
    if threshold is None:
        return scores.argmax(axis=1)
    return np.where(scores[:, pos] >= threshold, pos, 1 - pos)


def apply_threshold(
    proba: Sequence | np.ndarray,
    threshold: float | None = None,
    *,
    classes: Sequence | np.ndarray,
    pos_label: Any = None,
) -> np.ndarray:
    """The class of each image, from its probabilities.

    Parameters
    ----------
    proba : array-like of shape (n, n_classes) or (n,)
        ``predict_proba`` output (columns in ``classes`` order), or, for two
        classes, the probability of the positive class.
    threshold : float in [0, 1], optional
        Two classes: call an image positive when its probability is
        ``>= threshold``. None: the most probable class (as ``clf.predict``).
    classes : array-like of shape (n_classes,)
        ``clf.classes_``.
    pos_label : label, optional
        The positive class (see [`positive_label`][cxrkit.metrics.positive_label]:
        ``"PNEUMONIA"`` when it is a class, 1 for 0/1 labels).

    Returns
    -------
    ndarray of shape (n,)
        Labels from ``classes``.

    Examples
    --------
    >>> proba = np.array([[0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])
    >>> classes = ["NORMAL", "PNEUMONIA"]
    >>> apply_threshold(proba, classes=classes).tolist()
    ['NORMAL', 'PNEUMONIA', 'NORMAL']
    >>> apply_threshold(proba, 0.25, classes=classes).tolist()
    ['NORMAL', 'PNEUMONIA', 'PNEUMONIA']
    """
    classes = np.asarray(classes)
    proba = check_probabilities(proba)
    pos = None
    if threshold is not None:
        threshold = check_threshold(threshold)
        if len(classes) != 2:
            raise ValueError(
                f"threshold applies to two classes; with {len(classes)} classes the "
                "most probable class is predicted (pass threshold=None)"
            )
        pos = classes.tolist().index(positive_label(classes, pos_label))
    elif proba.ndim == 1:
        pos = classes.tolist().index(positive_label(classes, pos_label))
    return classes[decide(class_scores(proba, classes, pos), pos, threshold)]


def select_threshold(
    y_true: Sequence | np.ndarray,
    proba: Sequence | np.ndarray,
    *,
    sensitivity: float | None = None,
    specificity: float | None = None,
    pos_label: Any = None,
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
    pos_label : label, optional
        The positive class: ``"PNEUMONIA"`` when it is a class, 1 for 0/1
        labels; other classes need it.
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
    checked = check_predictions(y_true, proba, classes, pos_label)
    pos = checked.pos
    if pos is None:
        raise ValueError("select_threshold needs two classes")
    fpr, tpr, thresholds = skm.roc_curve(
        checked.y_idx == pos, checked.scores[:, pos], drop_intermediate=False
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
            f"{checked.classes[pos]}; the threshold is inf (every image negative)",
            UserWarning,
            stacklevel=2,
        )
    return OperatingPoint(threshold, float(tpr[i]), float(1 - fpr[i]), criterion)
