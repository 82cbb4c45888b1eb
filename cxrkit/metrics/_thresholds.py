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
from collections.abc import Mapping, Sequence
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


def _two_classes(function: str, classes: np.ndarray) -> str:
    return (
        f"{function} needs two classes; y_true has {len(classes)} "
        f"({classes.tolist()}): a threshold on one class's probability decides "
        "between two, and with more each image is given its most probable class "
        "(apply_threshold(proba, None, classes=...))"
    )


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
    if pos_label is not None:  # refused when wrong, also where it is not needed
        positive_label(classes, pos_label)
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
        raise ValueError(_two_classes("select_threshold", checked.classes))
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
    if criterion == "Youden's J" and tpr[i] - fpr[i] <= 0:
        warnings.warn(
            "these probabilities do not separate the classes: Youden's J is at "
            f"most 0 at every threshold (no threshold calls a larger share of "
            f"{checked.classes[pos]} images positive than of the others); the "
            "threshold is inf (every image negative). Check y_true, pos_label "
            "and the model",
            UserWarning,
            stacklevel=2,
        )
    elif not math.isfinite(threshold):
        warnings.warn(
            f"no threshold reaches {criterion} while calling any image "
            f"{checked.classes[pos]}; the threshold is inf (every image negative)",
            UserWarning,
            stacklevel=2,
        )
    return OperatingPoint(threshold, float(tpr[i]), float(1 - fpr[i]), criterion)


def select_robust_threshold(
    y_true: Sequence | np.ndarray,
    probas: Mapping[str, Any],
    *,
    min_sensitivity: float = 0.95,
    min_specificity: float = 0.85,
    pos_label: Any = None,
    classes: Sequence | np.ndarray | None = None,
) -> OperatingPoint:
    """Choose a threshold that keeps two floors under every version of the data.

    ``probas`` holds predictions for the same validation images in several
    versions: as acquired, and under synthetic acquisition shifts
    ([`shifted_predictions`][cxrkit.validation.shifted_predictions]). The
    chosen threshold maximises the worst, over the versions, of
    ``min(sensitivity - min_sensitivity, specificity - min_specificity)``:
    the margin by which both floors hold in the hardest version (minimax,
    not pooled, so one hard shift is not diluted by the easy ones). Among
    equally good thresholds it prefers the best worst-case sensitivity +
    specificity, then the middle one.

    Why not a sensitivity target alone: in distribution a model can be
    almost certain, and the highest threshold with sensitivity 0.98 is then
    very low (0.08 for cxrkit's 0.1 recipe); under a shift the NORMAL
    images' probabilities move up and cross it (specificity 0.60 on the
    Kermany test split). A specificity floor, checked under shift, keeps the
    threshold away from where the model is overconfident.

    The floors are on sensitivity and specificity, which do not depend on
    prevalence; for a population with another prevalence, compute PPV and
    NPV at the chosen threshold (e.g. with
    [`clinical_report`][cxrkit.metrics.clinical_report]'s figures) or choose
    other floors.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Labels of the validation images, the same for every version.
    probas : mapping of str to array-like of shape (n,) or (n, 2)
        Version name -> probability of ``pos_label`` (or ``predict_proba``
        output) on those images.
    min_sensitivity : float in (0, 1], default=0.95
        The floor of sensitivity.
    min_specificity : float in (0, 1], default=0.85
        The floor of specificity.
    pos_label : label, optional
        The positive class: ``"PNEUMONIA"`` when it is a class, 1 for 0/1
        labels; other classes need it.
    classes : array-like, optional
        Class order of the ``proba`` columns (default: sorted labels).

    Returns
    -------
    OperatingPoint
        ``threshold``, and the worst sensitivity and worst specificity it
        reaches over the versions (possibly in different versions); when
        they are below the floors, no threshold keeps both floors in every
        version (a warning says so).

    Examples
    --------
    >>> y = [0, 0, 0, 0, 1, 1, 1, 1]
    >>> probas = {
    ...     "as acquired": [0.1, 0.1, 0.2, 0.2, 0.8, 0.9, 0.9, 0.9],
    ...     "brighter": [0.3, 0.4, 0.5, 0.6, 0.7, 0.9, 0.9, 0.9],
    ... }
    >>> point = select_robust_threshold(y, probas, min_specificity=0.75)
    >>> round(point.threshold, 3), point.sensitivity, point.specificity
    (0.65, 1.0, 1.0)
    """
    floors = {"min_sensitivity": min_sensitivity, "min_specificity": min_specificity}
    for name, floor in floors.items():
        if not 0 < floor <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {floor!r}")
    if not isinstance(probas, Mapping) or not probas:
        raise ValueError(
            "probas must be a non-empty mapping of version name -> probabilities "
            "of the same images, e.g. cxrkit.validation.shifted_predictions(...)"
        )
    versions = {}
    for name, proba in probas.items():
        checked = check_predictions(y_true, proba, classes, pos_label)
        if checked.pos is None:
            raise ValueError(_two_classes("select_robust_threshold", checked.classes))
        versions[name] = (checked.y_idx == checked.pos, checked.scores[:, checked.pos])
    # Candidates: midpoints between consecutive distinct scores of all
    # versions, plus one below and one above them all. Every distinct
    # decision on these data is one of them. Written here rather than with
    # roc_curve: that gives each version its own thresholds, and the minimax
    # needs one grid shared by every version.
    scores = np.unique(np.concatenate([s for _, s in versions.values()]))
    candidates = np.concatenate([[0.0], (scores[1:] + scores[:-1]) / 2, [1.0]])
    worst_sens = np.ones(len(candidates))
    worst_spec = np.ones(len(candidates))
    margin = np.full(len(candidates), np.inf)
    balanced = np.full(len(candidates), np.inf)  # worst sensitivity + specificity
    for positive, score in versions.values():
        # images below each candidate, counted on the sorted scores of each
        # class (memory linear in the images, not candidates x images)
        pos_below = np.searchsorted(np.sort(score[positive]), candidates, "left")
        neg_below = np.searchsorted(np.sort(score[~positive]), candidates, "left")
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        sens = (n_pos - pos_below) / max(1, n_pos)
        spec = neg_below / max(1, n_neg)
        worst_sens, worst_spec = (
            np.minimum(worst_sens, sens),
            np.minimum(worst_spec, spec),
        )
        margin = np.minimum(
            margin, np.minimum(sens - min_sensitivity, spec - min_specificity)
        )
        balanced = np.minimum(balanced, sens + spec)
    best = np.flatnonzero(margin >= margin.max() - 1e-12)
    best = best[balanced[best] >= balanced[best].max() - 1e-12]
    i = int(best[len(best) // 2])
    criterion = (
        f"worst over {len(versions)} versions of min(sensitivity - "
        f"{min_sensitivity:g}, specificity - {min_specificity:g})"
    )
    if margin[i] < 0:
        warnings.warn(
            f"no threshold keeps sensitivity >= {min_sensitivity:g} and "
            f"specificity >= {min_specificity:g} in every version; the chosen "
            f"{candidates[i]:.4g} misses a floor by {-margin[i]:.3f} in the "
            "hardest one",
            UserWarning,
            stacklevel=2,
        )
    return OperatingPoint(
        float(candidates[i]), float(worst_sens[i]), float(worst_spec[i]), criterion
    )
