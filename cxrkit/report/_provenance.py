"""What a report was computed on: the data, the model, when and with what."""

from __future__ import annotations

import datetime
import os
from typing import Any

from cxrkit.inputs import is_path_like_sequence


def describe_data(X: Any, data_name: str | None = None) -> str:
    """The data in words: ``data_name``, else the folder the paths share."""
    if data_name:
        return data_name
    if is_path_like_sequence(X):
        paths = [os.path.abspath(os.fspath(p)) for p in X]
        try:
            root = os.path.commonpath(paths)
        except ValueError:  # paths on different drives
            root = "several folders"
        return f"{len(paths)} image files under {root}"
    return f"{len(X)} images given as an array"


def describe_model(clf: Any) -> dict[str, Any]:
    """The parameters that say what the model is, its classes and epochs."""
    params = clf.get_params() if hasattr(clf, "get_params") else {}
    keep = ("model", "pretrained", "image_size", "class_weight", "max_epochs", "lr")
    summary = {k: params[k] for k in keep if k in params}
    summary["estimator"] = type(clf).__name__
    summary["classes"] = [str(c) for c in clf.classes_]
    history = getattr(clf, "history_", None)
    if history is not None:
        summary["epochs_trained"] = len(history)
    return {
        k: (os.fspath(v) if isinstance(v, os.PathLike) else v)
        for k, v in summary.items()
    }


def created_at() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def describe_training(clf: Any) -> dict[str, Any]:
    """What the model (or its model file) says about its training data and
    its chosen threshold (None when not recorded)."""
    return {
        "data": getattr(clf, "training_data_", None),
        "threshold": getattr(clf, "operating_threshold_", None),
    }
