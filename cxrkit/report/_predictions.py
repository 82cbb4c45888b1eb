"""Predicting in batches (probabilities, out-of-distribution scores), and the
one writer of predictions as CSV."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cxrkit.images._inputs import is_path_like_sequence

_PROGRESS_MIN = 256  # images above which a progress bar is shown by default


def predict_proba(
    clf: Any,
    X: Sequence[str | os.PathLike] | np.ndarray,
    *,
    batch_size: int = 256,
    progress: bool | None = None,
) -> np.ndarray:
    """``clf.predict_proba(X)`` in batches, with a progress bar.

    Parameters
    ----------
    clf : fitted classifier
    X : sequence of paths, or ndarray of images
    batch_size : int, default=256
        Images decoded and predicted at a time.
    progress : bool, optional
        Show a tqdm progress bar; by default when X has more than 256 images.

    Returns
    -------
    ndarray of shape (n, n_classes)

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> clf = DummyClassifier().fit(np.zeros((4, 1)), [0, 0, 0, 1])
    >>> predict_proba(clf, np.zeros((3, 1)), batch_size=2).tolist()
    [[0.75, 0.25], [0.75, 0.25], [0.75, 0.25]]
    """
    return _in_batches(clf.predict_proba, X, batch_size, progress, "predicting")


def _in_batches(
    method: Any, X: Any, batch_size: int, progress: bool | None, desc: str
) -> np.ndarray:
    from tqdm.auto import tqdm

    n = len(X)
    if n == 0:
        raise ValueError("X holds no images")
    if progress is None:
        progress = n > _PROGRESS_MIN
    parts = []
    with tqdm(total=n, desc=desc, unit="image", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            parts.append(np.asarray(method(X[start : start + batch_size])))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def predictions(
    clf: Any,
    X: Sequence[str | os.PathLike] | np.ndarray,
    *,
    batch_size: int = 256,
    progress: bool | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, float] | None]:
    """`predict_proba` and `ood_scores` together: one forward pass per batch.

    For a cxrkit classifier with an out-of-distribution detector, each batch
    is decoded and run through the network once
    ([`proba_and_ood_score`][cxrkit.ood.proba_and_ood_score]); other
    classifiers are asked for each in turn.

    Parameters
    ----------
    clf : fitted classifier
    X : sequence of paths, or ndarray of images
    batch_size : int, default=256
    progress : bool, optional
        Show a progress bar; by default when X has more than 256 images.

    Returns
    -------
    proba : ndarray of shape (n, n_classes)
    found : (scores, threshold) or None
        As [`ood_scores`][cxrkit.report.ood_scores] returns it.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> clf = DummyClassifier().fit(np.zeros((4, 1)), [0, 0, 0, 1])
    >>> proba, found = predictions(clf, np.zeros((3, 1)), batch_size=2)
    >>> proba.tolist(), found
    ([[0.75, 0.25], [0.75, 0.25], [0.75, 0.25]], None)
    """
    from cxrkit.ood import proba_and_ood_score

    detector = getattr(clf, "ood_detector_", None)
    if detector is None:
        return predict_proba(clf, X, batch_size=batch_size, progress=progress), None

    def both(batch: Any) -> np.ndarray:  # one array per batch for _in_batches
        proba, scores = proba_and_ood_score(clf, batch)
        return np.column_stack([proba, scores])

    joined = _in_batches(both, X, batch_size, progress, "predicting")
    return joined[:, :-1], (joined[:, -1], detector.threshold_)


def ood_scores(
    clf: Any,
    X: Sequence[str | os.PathLike] | np.ndarray,
    *,
    batch_size: int = 256,
    progress: bool | None = None,
) -> tuple[np.ndarray, float] | None:
    """``clf.ood_score(X)`` in batches, and the flag's threshold.

    Parameters
    ----------
    clf : fitted classifier
    X : sequence of paths, or ndarray of images
    batch_size : int, default=256
    progress : bool, optional
        Show a progress bar; by default when X has more than 256 images.

    Returns
    -------
    (scores, threshold) or None
        None for a classifier without an out-of-distribution detector
        (``ood_detector_`` None or missing, see [`cxrkit.ood`][cxrkit.ood]).
        An image is flagged when its score is above ``threshold``.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> print(ood_scores(DummyClassifier().fit([[0], [1]], [0, 1]), [[0]]))
    None
    """
    detector = getattr(clf, "ood_detector_", None)
    if detector is None:
        return None
    scores = _in_batches(clf.ood_score, X, batch_size, progress, "checking")
    return scores, detector.threshold_


def ood_columns(
    clf: Any,
    X: Sequence[str | os.PathLike] | np.ndarray,
    proba: np.ndarray,
    y_pred: Sequence | np.ndarray,
    *,
    refuse: bool = False,
    progress: bool | None = None,
    found: tuple[np.ndarray, float] | str | None = "compute",
) -> tuple[np.ndarray, np.ndarray, dict[str, list]]:
    """The ``ood_score`` and ``ood`` columns of ``cxrkit predict``; refusals.

    Parameters
    ----------
    clf : fitted classifier
    X : sequence of paths, or ndarray of images
    proba : ndarray of shape (n, n_classes)
    y_pred : array-like of shape (n,)
    refuse : bool, default=False
        Flagged images get no call (empty ``predicted``), no probabilities
        (NaN, written as empty cells) and a ``reason`` column says why.
    progress : bool, optional
    found : (scores, threshold) or None, optional
        The scores when they are already computed (as
        [`predictions`][cxrkit.report.predictions] returns them); by default
        (``"compute"``) they are computed here.

    Returns
    -------
    proba, y_pred : the inputs, with refused rows emptied
    columns : dict
        ``ood_score`` (4 decimals) and ``ood`` (``True``/``False``), both
        empty strings for a model without a detector; and ``reason`` with
        ``refuse``.

    Raises
    ------
    cxrkit.ood.NoOODDetectorError
        ``refuse`` for a model without a detector.
    """
    from cxrkit.ood import no_detector_error

    if isinstance(found, str):
        found = ood_scores(clf, X, progress=progress)
    if found is None and refuse:
        raise no_detector_error(clf)
    columns = ood_cells(found, len(proba))
    if refuse:
        scores, threshold = found
        flags = scores > threshold
        proba = np.where(flags[:, None], np.nan, proba)
        y_pred = np.where(flags, "", np.asarray(y_pred, dtype=object))
        columns["reason"] = [
            "unlike the training images (ood_score above the threshold "
            f"{threshold:.4f})"
            if flag
            else ""
            for flag in flags
        ]
    return proba, np.asarray(y_pred), columns


def ood_cells(found: tuple[np.ndarray, float] | None, n: int) -> dict[str, list]:
    """The ``ood_score`` (4 decimals) and ``ood`` CSV columns of ``n`` images
    from ``ood_scores``' answer; empty strings when it is None."""
    if found is None:
        return {"ood_score": [""] * n, "ood": [""] * n}
    scores, threshold = found
    return {
        "ood_score": [f"{s:.4f}" for s in scores],
        "ood": (scores > threshold).tolist(),
    }


def write_predictions(
    file: str | os.PathLike | TextIO,
    X: Sequence[str | os.PathLike] | np.ndarray,
    proba: np.ndarray,
    y_pred: Sequence | np.ndarray,
    *,
    classes: Sequence | np.ndarray,
    y_true: Sequence | np.ndarray | None = None,
    extra_columns: Mapping[str, Sequence] | None = None,
) -> None:
    """Write one CSV row per image: what it is, its class and probabilities.

    Columns: ``path`` (or ``index`` for images given as an array), ``true``
    (when ``y_true`` is given), ``predicted``, then ``p_<class>`` for each
    class (6 decimals; empty where NaN, e.g. a refused image), then
    ``extra_columns`` in order (such as ``ood_score`` and ``ood``, see
    [`ood_columns`][cxrkit.report.ood_columns]). The format of ``cxrkit
    predict`` and of the ``predictions.csv`` of
    [`evaluation_report`][cxrkit.report.evaluation_report].

    Parameters
    ----------
    file : path or text stream
        A file to (over)write, or an open stream such as ``sys.stdout``.
    X : sequence of paths, or ndarray of images
    proba : ndarray of shape (n, n_classes)
        ``predict_proba`` output, columns in ``classes`` order.
    y_pred : array-like of shape (n,)
        The class given to each image, e.g. from
        [`apply_threshold`][cxrkit.metrics.apply_threshold].
    classes : array-like of shape (n_classes,)
    y_true : array-like of shape (n,), optional
    extra_columns : mapping of str to sequence, optional
        Column name to one value per image, written as given.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> write_predictions(out, ["a.png", "b.png"], np.array([[0.9, 0.1], [0.2, 0.8]]),
    ...                   ["NORMAL", "PNEUMONIA"], classes=["NORMAL", "PNEUMONIA"])
    >>> print(out.getvalue().strip())
    path,predicted,p_NORMAL,p_PNEUMONIA
    a.png,NORMAL,0.900000,0.100000
    b.png,PNEUMONIA,0.200000,0.800000
    """
    proba = np.asarray(proba, dtype=float)
    columns = [list(np.asarray(y_pred).tolist())]
    head = ["predicted"]
    if y_true is not None:
        columns.insert(0, list(np.asarray(y_true).tolist()))
        head.insert(0, "true")
    if is_path_like_sequence(X):
        names, first = [os.fspath(p) for p in X], "path"
    else:
        names, first = list(range(len(X))), "index"
    extra = dict(extra_columns or {})
    columns += [list(c) for c in extra.values()]
    lengths = {len(names), len(proba), *(len(c) for c in columns)}
    if len(lengths) != 1:
        raise ValueError(
            f"X, proba, y_pred and y_true must have one row per image; got "
            f"{len(names)} images, {len(proba)} rows of proba and labels of "
            f"lengths {[len(c) for c in columns]}"
        )
    header = [first, *head, *(f"p_{c}" for c in np.asarray(classes).tolist())]
    n_head = len(head)
    rows = (
        [
            name,
            *cells[:n_head],
            *(f"{v:.6f}" if np.isfinite(v) else "" for v in p),
            *cells[n_head:],
        ]
        for name, p, *cells in zip(names, proba, *columns)
    )
    header += list(extra)
    if isinstance(file, (str, os.PathLike)):
        with Path(file).open("w", newline="", encoding="utf-8") as fh:
            _write(fh, header, rows)
    else:
        _write(file, header, rows)


def _write(fh: TextIO, header: list, rows: Any) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)


def image_rows(paths: Any, report: Any, *, limit: int = 5000) -> list[dict[str, Any]]:
    """One row per image for the report's table, the most confident errors
    first, then the rest by decreasing probability of the given class.

    Each row: ``name`` (file name, or index), ``path`` (full path, or ""),
    ``true``, ``predicted``, ``p`` (probability of the positive class of
    two, else of the predicted class), ``correct``. At most ``limit`` rows.
    """
    y_true = np.asarray(report.y_true)
    y_pred = np.asarray(report.y_pred)
    classes = list(np.asarray(report.classes).tolist())
    column = np.array([classes.index(c) for c in y_pred.tolist()], dtype=int)
    confidence = report.proba[np.arange(len(y_pred)), column]
    if report.average is None:
        p = report.proba[:, classes.index(report.pos_label)]
    else:
        p = confidence
    correct = y_true == y_pred
    order = np.lexsort((-confidence, correct))[:limit]  # errors first
    rows = []
    for i, named in zip(order.tolist(), image_names(paths, order)):
        rows.append(
            {
                **named,
                "true": str(y_true[i]),
                "predicted": str(y_pred[i]),
                "p": float(p[i]),
                "correct": bool(correct[i]),
            }
        )
    return rows


def image_names(paths: Any, indices: Any) -> list[dict[str, str]]:
    """How the report names the images ``indices``: ``name`` (the file name,
    or the index of an array's image) and ``path`` (the full path, or "").
    ``paths`` are the images' files, None for images given as an array."""
    if paths is None:
        return [{"name": str(i), "path": ""} for i in indices]
    chosen = [os.fspath(paths[i]) for i in indices]
    return [{"name": Path(p).name, "path": p} for p in chosen]
