"""The report's out-of-distribution section: how many images were flagged, which."""

from __future__ import annotations

from typing import Any

import numpy as np

from cxrkit.report._predictions import image_names


def ood_summary(
    clf: Any,
    found: tuple[np.ndarray, float] | None,
    paths: Any,
    y_pred: np.ndarray,
) -> dict[str, Any] | None:
    """What the report says about images unlike the training images.

    Parameters
    ----------
    clf : fitted classifier
    found : (scores, threshold) or None
        From [`ood_scores`][cxrkit.report.ood_scores]; None for a model
        without a detector.
    paths : sequence of paths, or None
        The images' files (None for images given as an array).
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
    order = np.argsort(-scores, kind="stable")
    listed = order[flags[order]].tolist()
    flagged = [
        {**named, "score": float(scores[i]), "predicted": str(y_pred[i])}
        for i, named in zip(listed, image_names(paths, listed))
    ]
    return {
        "method": clf.ood_detector_.method,
        "threshold": float(threshold),
        "alarm_rate": clf.ood_detector_.alarm_rate,
        "n": len(scores),
        "n_flagged": int(flags.sum()),
        "share": float(flags.mean()),
        "flagged": flagged,
    }
