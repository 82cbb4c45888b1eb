"""Predicting in batches, and the one writer of predictions as CSV."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cxrkit.cache import is_path_like_sequence

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
    from tqdm.auto import tqdm

    n = len(X)
    if n == 0:
        raise ValueError("X holds no images")
    if progress is None:
        progress = n > _PROGRESS_MIN
    parts = []
    with tqdm(total=n, desc="predicting", unit="image", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            parts.append(np.asarray(clf.predict_proba(X[start : start + batch_size])))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def write_predictions(
    file: str | os.PathLike | TextIO,
    X: Sequence[str | os.PathLike] | np.ndarray,
    proba: np.ndarray,
    y_pred: Sequence | np.ndarray,
    *,
    classes: Sequence | np.ndarray,
    y_true: Sequence | np.ndarray | None = None,
) -> None:
    """Write one CSV row per image: what it is, its class and probabilities.

    Columns: ``path`` (or ``index`` for images given as an array), ``true``
    (when ``y_true`` is given), ``predicted``, then ``p_<class>`` for each
    class (6 decimals). The format of ``cxrkit predict`` and of the
    ``predictions.csv`` of [`evaluation_report`][cxrkit.report.evaluation_report].

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
    lengths = {len(names), len(proba), *(len(c) for c in columns)}
    if len(lengths) != 1:
        raise ValueError(
            f"X, proba, y_pred and y_true must have one row per image; got "
            f"{len(names)} images, {len(proba)} rows of proba and labels of "
            f"lengths {[len(c) for c in columns]}"
        )
    header = [first, *head, *(f"p_{c}" for c in np.asarray(classes).tolist())]
    rows = (
        [name, *cells, *(f"{v:.6f}" for v in p)]
        for name, p, *cells in zip(names, proba, *columns)
    )
    if isinstance(file, (str, os.PathLike)):
        with Path(file).open("w", newline="", encoding="utf-8") as fh:
            _write(fh, header, rows)
    else:
        _write(file, header, rows)


def _write(fh: TextIO, header: list, rows: Any) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
