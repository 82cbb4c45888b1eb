"""The report's out-of-distribution section: how many images were flagged, which."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cxrkit.cache import is_path_like_sequence


def ood_summary(
    clf: Any,
    found: tuple[np.ndarray, float] | None,
    X: Any,
    y_pred: np.ndarray,
) -> dict[str, Any] | None:
    """What the report says about images unlike the training images.

    Parameters
    ----------
    clf : fitted classifier
    found : (scores, threshold) or None
        From [`ood_scores`][cxrkit.report.ood_scores]; None for a model
        without a detector.
    X : sequence of paths, or ndarray of images
    y_pred : ndarray of shape (n,)
        The class given to each image.

    Returns
    -------
    dict or None
        ``method``, ``threshold``, ``alarm_rate``, ``n``, ``n_flagged``,
        ``share`` and ``flagged``: one row per flagged image, the highest
        score first (``name``, ``path``, ``score``, ``predicted``).
    """
    if found is None:
        return None
    scores, threshold = found
    flags = scores > threshold
    paths = is_path_like_sequence(X)
    order = np.argsort(-scores, kind="stable")
    flagged = []
    for i in order[flags[order]].tolist():
        path = os.fspath(X[i]) if paths else ""
        flagged.append(
            {
                "name": Path(path).name if paths else str(i),
                "path": path,
                "score": float(scores[i]),
                "predicted": str(y_pred[i]),
            }
        )
    return {
        "method": clf.ood_detector_.method,
        "threshold": float(threshold),
        "alarm_rate": clf.ood_detector_.alarm_rate,
        "n": len(scores),
        "n_flagged": int(flags.sum()),
        "share": float(flags.mean()),
        "flagged": flagged,
    }
