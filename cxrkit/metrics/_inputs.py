"""Checks of labels and probabilities, and the positive-class policy.

Every function of ``cxrkit.metrics`` (and through it ``cxrkit.plot``,
``cxrkit.report`` and the command line) reads its inputs here, so that one
rule decides which class is positive and one message names each bad input.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from sklearn.utils.validation import column_or_1d

#: The default positive class where it is one of the classes.
DEFAULT_POSITIVE = "PNEUMONIA"


def positive_label(classes: Sequence | np.ndarray, pos_label: Any = None) -> Any:
    """The positive class of a two-class problem, by scikit-learn's rules.

    ``pos_label`` when given (it must be one of ``classes``). Otherwise
    ``"PNEUMONIA"`` when it is a class, and 1 for 0/1 (or -1/1) labels, as
    in scikit-learn. Any other pair of classes needs an explicit
    ``pos_label``: which of two names is "positive" cannot be guessed.

    Parameters
    ----------
    classes : array-like of shape (2,)
        The two classes, e.g. ``clf.classes_``.
    pos_label : label, optional
        The positive class.

    Returns
    -------
    label
        The element of ``classes`` that is positive.

    Raises
    ------
    ValueError
        Not two classes, ``pos_label`` not among them, or no default.

    Examples
    --------
    >>> positive_label(["NORMAL", "PNEUMONIA"])
    'PNEUMONIA'
    >>> positive_label([0, 1])
    1
    >>> positive_label(["BACTERIA", "VIRUS"], pos_label="VIRUS")
    'VIRUS'
    """
    labels = np.asarray(classes).tolist()
    if len(labels) != 2:
        raise ValueError(
            f"a positive class applies to two classes; there are {len(labels)} "
            f"({labels}), and each image is given its most probable class"
            + ("" if pos_label is None else f"; leave out pos_label={pos_label!r}")
        )
    if pos_label is None:
        if DEFAULT_POSITIVE in labels:
            pos_label = DEFAULT_POSITIVE
        elif set(labels) in ({0, 1}, {-1, 1}):  # scikit-learn's pos_label=1
            pos_label = 1
        else:
            raise ValueError(
                f"the classes {labels} have no default positive class (it is "
                f"{DEFAULT_POSITIVE!r} when that is a class, and 1 for 0/1 labels); "
                "pass pos_label=<the positive class>"
            )
    elif pos_label not in labels:
        if isinstance(pos_label, np.generic):  # np.str_('X') reads as 'X'
            pos_label = pos_label.item()
        raise ValueError(
            f"pos_label={pos_label!r} is not one of the classes {labels}; pass "
            "pos_label=<the positive class>"
        )
    return labels[labels.index(pos_label)]


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float in [0, 1], or a ValueError naming it."""
    value = float(threshold)
    if not 0 <= value <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return value


class Checked(NamedTuple):
    """Validated predictions of one model on labelled images."""

    y_true: np.ndarray  # (n,) labels as given
    y_idx: np.ndarray  # (n,) index of each true label in ``classes``
    scores: np.ndarray  # (n, k) probability of each class
    classes: np.ndarray  # (k,)
    pos: int | None  # column of the positive class; None with k > 2


def check_probabilities(proba: Any, n: int | None = None) -> np.ndarray:
    """``proba`` as a 1-D or 2-D float array of probabilities (n rows)."""
    proba = np.asarray(proba, dtype=float)
    if proba.ndim not in (1, 2):
        raise ValueError(
            f"proba must be 1-D (probability of pos_label) or 2-D (predict_proba "
            f"output), got shape {proba.shape}"
        )
    if n is not None and len(proba) != n:
        raise ValueError(f"y_true has {n} labels but proba has {len(proba)} rows")
    if proba.size and not np.all(np.isfinite(proba)):
        raise ValueError(
            f"proba holds {int(np.sum(~np.isfinite(proba)))} NaN or infinite "
            "value(s); pass probabilities in [0, 1] (predict_proba output)"
        )
    if proba.size and (proba.min() < 0 or proba.max() > 1):
        raise ValueError(
            f"proba must hold probabilities in [0, 1], got values from "
            f"{proba.min():.4g} to {proba.max():.4g}; if these are logits or "
            "scores, pass the model's predict_proba output (a softmax) instead"
        )
    return proba


def class_scores(proba: np.ndarray, classes: np.ndarray, pos: int | None) -> np.ndarray:
    """(n, k) probabilities from ``predict_proba`` output or P(positive)."""
    k = len(classes)
    if proba.ndim == 1:
        if pos is None:
            raise ValueError(
                f"a 1-D proba is the probability of pos_label for two classes; "
                f"with {k} classes pass the (n, {k}) predict_proba output"
            )
        scores = np.empty((len(proba), 2))
        scores[:, pos], scores[:, 1 - pos] = proba, 1 - proba
        return scores
    if proba.shape[1] != k:
        raise ValueError(
            f"proba has {proba.shape[1]} columns but there are {k} classes "
            f"{classes.tolist()}; columns must follow classes (clf.classes_)"
        )
    if k > 2 and len(proba) and not np.allclose(proba.sum(axis=1), 1, atol=1e-4):
        warnings.warn(
            "the rows of proba do not sum to 1; the Brier score assumes "
            "probabilities (predict_proba output)",
            UserWarning,
            stacklevel=4,
        )
    return proba


def check_predictions(y_true: Any, proba: Any, classes: Any, pos_label: Any) -> Checked:
    """Validate labels and probabilities of one model; see ``Checked``."""
    y_true = column_or_1d(np.asarray(y_true), warn=True)
    proba = check_probabilities(proba, len(y_true))
    classes = np.asarray(np.unique(y_true) if classes is None else classes)
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    unknown = sorted({repr(v) for v in y_true.tolist() if v not in lookup})
    if unknown:
        known = {str(c) for c in classes.tolist()}
        hint = (
            "; the labels and the classes are the same names of different types "
            "(e.g. '1' and 1): convert y_true to the classes' type"
            if {s.strip("'\"") for s in unknown} <= known
            else "; pass classes=clf.classes_ (the model's classes)"
        )
        raise ValueError(
            f"y_true holds labels [{', '.join(unknown)}] that are not in classes "
            f"{classes.tolist()}{hint}"
        )
    if len(classes) < 2:
        raise ValueError(
            f"y_true holds a single class ({classes.tolist()}); sensitivity and "
            "specificity need images of every class"
        )
    pos = None
    if len(classes) == 2 or pos_label is not None:
        # with more classes a pos_label is refused, not ignored: the metrics
        # are then macro averages over every class
        pos = lookup[positive_label(classes, pos_label)]
    scores = class_scores(proba, classes, pos)
    y_idx = np.array([lookup[v] for v in y_true.tolist()], dtype=np.intp)
    missing = [c for i, c in enumerate(classes.tolist()) if not np.any(y_idx == i)]
    if missing:
        raise ValueError(
            f"y_true has no images of class(es) {missing}; every class needs "
            "images for sensitivity, specificity and AUC"
        )
    return Checked(y_true, y_idx, scores, classes, pos)
