"""The demo workflow (``cxrkit demo``) as a function: split, train, evaluate
and explain, writing the evaluation report and heatmaps.

For research and education; not a medical device.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrkit.cache import is_path_like_sequence
from cxrkit.classifier import PneumoniaClassifier
from cxrkit.metrics import ClinicalReport, positive_label

__all__ = ["DemoResult", "run_demo"]

_TEST_SIZE = 0.25


@dataclass
class DemoResult:
    """What [`run_demo`][cxrkit.demo.run_demo] trained, measured and wrote."""

    classifier: PneumoniaClassifier
    report: ClinicalReport
    n_train: int
    report_html: Path
    heatmaps: Path
    seconds: float


def _split(X: Any, y: np.ndarray, random_state: int) -> tuple:
    """75/25 split: by patient for Kermany-style paths, else stratified."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    if is_path_like_sequence(X):
        from cxrkit.data import patient_groups

        split = GroupShuffleSplit(1, test_size=_TEST_SIZE, random_state=random_state)
        train, test = next(split.split(X, y, groups=patient_groups(X)))
        X = np.asarray(X, dtype=object)
        return X[train], X[test], y[train], y[test]
    return train_test_split(
        X, y, test_size=_TEST_SIZE, stratify=y, random_state=random_state
    )


def run_demo(
    X: Sequence[str | os.PathLike] | np.ndarray | None = None,
    y: Sequence | np.ndarray | None = None,
    *,
    out_dir: str | os.PathLike = "cxrkit-demo",
    model: str = "cnn4",
    max_epochs: int = 8,
    image_size: int = 64,
    n_samples: int = 600,
    pos_label: Any = None,
    data_name: str | None = None,
    random_state: int = 0,
    verbose: int = 1,
) -> DemoResult:
    """Train a small model, evaluate it on held-out images and explain it.

    A quarter of the images is held out (by patient for Kermany-style file
    names, else stratified by class); a class-balanced model is trained on
    the rest. Writes the [`evaluation_report`][cxrkit.report.evaluation_report]
    of the held-out images to ``out_dir`` and ``heatmaps.png``: heatmaps of
    ``cxrkit.explain.explain`` on up to 4 held-out images of each class.

    Parameters
    ----------
    X, y : images and labels, optional
        E.g. from [`load_image_folder`][cxrkit.load_image_folder]; default:
        ``n_samples`` synthetic chest-like images
        ([`make_synthetic_cxr`][cxrkit.datasets.make_synthetic_cxr]).
    out_dir : str or path-like, default="cxrkit-demo"
    model : str, default="cnn4"
    max_epochs : int, default=8
    image_size : int, default=64
    n_samples : int, default=600
        Synthetic images, when ``X`` is None.
    pos_label : label, optional
        The positive class of two (default ``"PNEUMONIA"``, see
        [`positive_label`][cxrkit.metrics.positive_label]).
    data_name : str, optional
        Where ``X`` comes from, for the report (e.g. the folder).
    random_state : int, default=0
        Seed of the data, the split and the training.
    verbose : int, default=1
        Print the training progress.

    Returns
    -------
    DemoResult

    Examples
    --------
    >>> import tempfile
    >>> result = run_demo(out_dir=tempfile.mkdtemp(), model="simple_cnn",
    ...                   max_epochs=1, image_size=32, n_samples=40, verbose=0)
    >>> result.report.n, result.report_html.name
    (10, 'report.html')
    """
    from cxrkit.datasets import make_synthetic_cxr
    from cxrkit.plot import plot_explanations
    from cxrkit.report import evaluation_report

    start = time.perf_counter()
    if X is None:
        X, y, _ = make_synthetic_cxr(
            n_samples, image_size=image_size, random_state=random_state
        )
        source = "synthetic images"
    elif y is None:
        raise ValueError("pass the labels y with the images X")
    else:
        source = f"images from {data_name}" if data_name else "images"
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) == 2:  # checked before training, not after
        pos_label = positive_label(classes, pos_label)
    X_train, X_test, y_train, y_test = _split(X, y, random_state)
    clf = PneumoniaClassifier(
        model=model,
        image_size=image_size,
        max_epochs=max_epochs,
        batch_size=16,  # more steps per epoch on the small demo set
        class_weight="balanced",
        random_state=random_state,
        verbose=verbose,
    )
    clf.fit(X_train, y_train)
    out = Path(out_dir)
    held_out = f"{len(y_test)} held-out {source} ({_TEST_SIZE:.0%} of the demo data)"
    report = evaluation_report(
        clf, X_test, y_test, out, pos_label=pos_label, data_name=held_out
    )
    # Grad-CAM on up to 4 held-out images of each class: where the model looks.
    shown = np.concatenate([np.flatnonzero(y_test == c)[:4] for c in clf.classes_])
    figure = plot_explanations(clf, X_test[shown], y_test[shown])
    figure.savefig(out / "heatmaps.png", dpi=100)
    return DemoResult(
        classifier=clf,
        report=report,
        n_train=len(y_train),
        report_html=out / "report.html",
        heatmaps=out / "heatmaps.png",
        seconds=time.perf_counter() - start,
    )
