"""What the benchmark scripts share: paths, peak memory, JSON output, saved runs.

Every script in ``timings/``, ``experiments/`` and ``tools/`` runs as
``python benchmarks/FOLDER/NAME.py`` from the repository root; it puts this
folder on ``sys.path`` first and imports what it needs from here::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _common import SHARED, peak_rss_mb, print_json

For research and education; not a medical device.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

#: The repository root (the folder that holds ``benchmarks/`` and ``cxrkit/``).
ROOT = Path(__file__).resolve().parents[1]

#: ``../shared/data`` beside the repository: the real images of the README
#: there (Kermany train and external site, full-resolution originals, NIH).
SHARED = ROOT.parent / "shared" / "data"

#: The external site (a second hospital batch of the Kermany test split),
#: used as a whole for validation and recipe selection, never fitted on.
EXTERNAL = SHARED / "chest_xray" / "external"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Returns
    -------
    float
        ``ru_maxrss`` of ``getrusage(RUSAGE_SELF)`` (kibibytes on Linux)
        divided by 1024. Children started by the process are not counted.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_json(obj: Any, *, file: TextIO | None = None, **kwargs: Any) -> None:
    """Print one JSON document on one line (or as ``json.dumps`` is told), flushed.

    Parameters
    ----------
    obj : object
        What to print; anything ``json.dumps`` takes with ``kwargs``.
    file : file object, optional
        Where to print; standard output by default.
    **kwargs
        Passed to ``json.dumps`` (``indent``, ``default``).
    """
    print(json.dumps(obj, **kwargs), file=file or sys.stdout, flush=True)


def test_images(data: Any) -> np.ndarray:
    """A saved run's test images (``X_test``) as absolute paths.

    ``recipe.py`` records the paths as it was given them, so runs saved from
    different folders (``../shared/data/...`` and ``/work/shared/data/...``)
    name the same image differently; relative ones are taken from the
    current folder, as a run saved there would have them.
    """
    return np.array(
        [os.path.abspath(p) for p in np.asarray(data["X_test"]).astype(str)]
    )


def run_threshold(npz: Path, data: Any, *, required: bool = True) -> float | None:
    """The operating threshold of a ``recipe.py --save`` run.

    Parameters
    ----------
    npz : Path
        The run's ``.npz``; its ``.cxr`` lies beside it.
    data : NpzFile
        ``np.load(npz)``.
    required : bool, default=True
        A run with neither (a ``site_shift_features.py`` run): exit with a
        message naming the file; False: return None.

    Returns
    -------
    float or None
        The ``threshold`` the ``.npz`` records, or (runs saved before it
        recorded one) the model file's ``operating_threshold_``.
    """
    if "threshold" in data:
        return float(data["threshold"])
    model_file = Path(npz).with_suffix(".cxr")
    if not model_file.exists():
        if required:
            raise SystemExit(
                f"{npz}: records no threshold and has no model file beside it; "
                "save the run with recipe.py --save"
            )
        return None
    from cxrkit import PneumoniaClassifier

    model = PneumoniaClassifier.load(model_file, device="cpu")
    return float(model.operating_threshold_["threshold"])
