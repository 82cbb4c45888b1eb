"""The demo workflow (``cxrkit demo``) as a function: split, train, evaluate
and explain, writing the evaluation report and heatmaps.

By default on the real sample shipped with cxrkit
([`load_sample_cxr`][cxrkit.datasets.load_sample_cxr]): 600 Kermany chest
X-rays, nothing to download. For research and education; not a medical
device.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrkit.classifier import PneumoniaClassifier
from cxrkit.images._inputs import is_path_like_sequence
from cxrkit.metrics import ClinicalReport, positive_label

__all__ = ["DemoResult", "run_demo"]

_TEST_SIZE = 0.25
#: How the demo names the sample of ``load_sample_cxr``.
SAMPLE_NAME = "the real sample shipped with cxrkit (Kermany et al. 2018, CC BY 4.0)"


@dataclass
class DemoResult:
    """What [`run_demo`][cxrkit.demo.run_demo] trained, measured and wrote."""

    classifier: PneumoniaClassifier
    report: ClinicalReport
    n_train: int
    report_html: Path
    heatmaps: Path
    heatmap_method: str
    seconds: float


def _split(X: Any, y: np.ndarray, random_state: int, groups: Any = None) -> tuple:
    """A quarter held out: by patient (``groups``) and stratified by class,
    else (no groups) stratified by class."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    if groups is not None:
        folds = StratifiedGroupKFold(
            round(1 / _TEST_SIZE), shuffle=True, random_state=random_state
        )
        train, test = next(folds.split(X, y, groups=groups))
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
    synthetic: bool = False,
    n_samples: int = 600,
    pos_label: Any = None,
    data_name: str | None = None,
    random_state: int = 0,
    verbose: int = 1,
) -> DemoResult:
    """Train a small model, evaluate it on held-out images and explain it.

    A quarter of the images is held out (by patient and stratified by class
    for Kermany-style file names, else stratified by class); a
    class-balanced model is trained on the rest. Writes the
    [`evaluation_report`][cxrkit.report.evaluation_report] of the held-out
    images to ``out_dir``, with a note that the model is a demonstration,
    and ``heatmaps.png``: heatmaps of ``cxrkit.explain.explain``'s
    recommended method (``heatmap_method`` of the result) on up to 4
    held-out images of each class.

    Parameters
    ----------
    X, y : images and labels, optional
        E.g. from [`load_image_folder`][cxrkit.load_image_folder]; default:
        the 600 real chest X-rays of
        [`load_sample_cxr`][cxrkit.datasets.load_sample_cxr] (450 to train
        on, 150 held out), or synthetic images with ``synthetic=True``.
    out_dir : str or path-like, default="cxrkit-demo"
    model : str, default="cnn4"
    max_epochs : int, default=8
    image_size : int, default=64
    synthetic : bool, default=False
        Train on ``n_samples`` synthetic chest-like images
        ([`make_synthetic_cxr`][cxrkit.datasets.make_synthetic_cxr])
        instead of the sample: fast and learnable, for tests; they say
        nothing about chest X-rays.
    n_samples : int, default=600
        Synthetic images, when ``synthetic`` is True.
    pos_label : label, optional
        The positive class of two (default ``"PNEUMONIA"``, see
        [`positive_label`][cxrkit.metrics.positive_label]).
    data_name : str, optional
        Where ``X`` comes from, for the report (e.g. the folder).
    random_state : int, default=0
        Seed of the data, the split and the training.
    verbose : int, default=1
        Training progress: 1 prints a line per epoch, 2 also a progress bar.

    Returns
    -------
    DemoResult

    Examples
    --------
    >>> import tempfile
    >>> result = run_demo(out_dir=tempfile.mkdtemp(), synthetic=True,
    ...                   model="simple_cnn", max_epochs=1, image_size=32,
    ...                   n_samples=40, verbose=0)
    >>> result.report.n, result.report_html.name, result.heatmap_method
    (10, 'report.html', 'adaptive_occlusion')
    """
    from cxrkit.datasets import load_sample_cxr, make_synthetic_cxr
    from cxrkit.explain import DEFAULT_METHOD
    from cxrkit.plot import plot_explanations
    from cxrkit.report import evaluation_report

    start = time.perf_counter()
    if X is not None and synthetic:
        raise ValueError("pass images X or synthetic=True, not both")
    if synthetic:
        X, y, _ = make_synthetic_cxr(
            n_samples, image_size=image_size, random_state=random_state
        )
        source = "synthetic images"
    elif X is None:
        X, y = load_sample_cxr(return_X_y=True)
        source = f"images of {SAMPLE_NAME}"
    elif y is None:
        raise ValueError("pass the labels y with the images X")
    else:
        source = f"images from {data_name}" if data_name else "images"
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) == 2:  # checked before training, not after
        pos_label = positive_label(classes, pos_label)
    from cxrkit.images._folders import patient_groups

    # files: held out by patient (Kermany-style names); arrays: by image
    groups = patient_groups(X) if is_path_like_sequence(X) else None
    X_train, X_test, y_train, y_test = _split(X, y, random_state, groups)
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
    held_out = f"{len(y_test)} held-out {source}; {_TEST_SIZE:.0%} of the demo data"
    report = evaluation_report(
        clf,
        X_test,
        y_test,
        out,
        pos_label=pos_label,
        data_name=held_out,
        note=_demo_note(len(y_train), max_epochs, image_size, synthetic),
    )
    # explain's recommended method (DEFAULT_METHOD) on up to 4 held-out
    # images of each class: where the model looks.
    shown = np.concatenate([np.flatnonzero(y_test == c)[:4] for c in clf.classes_])
    figure = plot_explanations(clf, X_test[shown], y_test[shown])
    figure.savefig(out / "heatmaps.png", dpi=100)
    return DemoResult(
        classifier=clf,
        report=report,
        n_train=len(y_train),
        report_html=out / "report.html",
        heatmaps=out / "heatmaps.png",
        heatmap_method=DEFAULT_METHOD,
        seconds=time.perf_counter() - start,
    )


def _demo_note(n_train: int, max_epochs: int, image_size: int, synthetic: bool) -> str:
    """What the report says the demo's model is."""
    note = (
        f"A demonstration: this model was trained for {max_epochs} epochs on "
        f"{n_train} images of {image_size} x {image_size} pixels, to show "
        "cxrkit's steps end to end. "
    )
    if synthetic:
        return note + (
            "The images are synthetic: these figures say nothing about chest X-rays."
        )
    return note + (
        "Its figures describe these few held-out images only; a model worth "
        "evaluating is trained on thousands of radiographs and validated on "
        "patients of another site (see the docs' Training recipe)."
    )
