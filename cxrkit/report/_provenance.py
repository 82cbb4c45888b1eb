"""What a report was computed on: the data, the model, when and with what."""

from __future__ import annotations

import datetime
import os
from typing import Any


def describe_data(paths: Any, n: int, data_name: str | None = None) -> str:
    """The data in words: ``data_name``, else the folder the ``paths`` share
    (None: ``n`` images given as an array)."""
    if data_name:
        return data_name
    if paths is not None:
        full = [os.path.abspath(os.fspath(p)) for p in paths]
        try:
            root = os.path.commonpath(full)
        except ValueError:  # paths on different drives
            root = "several folders"
        return f"{len(full)} image files under {root}"
    return f"{n} images given as an array"


def describe_model(card: dict[str, Any]) -> dict[str, Any]:
    """The parameters that say what the model is, its classes and epochs:
    the report's part of a [`model_card`][cxrkit.persistence.model_card]."""
    summary = {
        **card["parameters"],
        "estimator": card["estimator"],
        "classes": [str(c) for c in card["classes"]],
    }
    if card["trained"]["epochs"] is not None:
        summary["epochs_trained"] = card["trained"]["epochs"]
    return summary


def created_at() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def describe_training(card: dict[str, Any]) -> dict[str, Any]:
    """What the model (or its model file) says about its training data and
    its chosen threshold (None when not recorded): the report's part of a
    [`model_card`][cxrkit.persistence.model_card]."""
    return {
        "data": card["trained"]["data"],
        "threshold": card["operating_threshold"],
    }
