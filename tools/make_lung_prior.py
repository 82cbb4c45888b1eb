"""Fit cxrkit's lung-field prior (``LUNG_FIELDS``, ``cxrkit/explain/_lung_fields.py``).

Usage, from the repository root::

    python tools/make_lung_prior.py path/to/covid-19-xray-dataset

Reads the semantic lung masks of V7 Labs' COVID-19 X-ray dataset
(https://github.com/v7labs/covid-19-xray-dataset,
``annotations/all-images-semantic-masks/*.png``: 0 background, 127
"Ignore" (devices over the lungs), 255 lung; lung polygons drawn by human
annotators and reviewed by V7; licence CC BY 4.0). Most of its 6,500
frontal radiographs are the Kermany et al. (2018) images cxrkit's recipes
train on; about 500 are adult COVID-19 cases. Masks that mark no lung
(lateral views, CT slices) are skipped.

Each mask is squashed to ``SIZE`` x ``SIZE`` (as cxrkit squashes images to
its square input), area-averaged, and the masks are averaged: the value of
a cell is the share of radiographs whose lung field covers it. Two smooth
lung fields (the model of ``lung_field_prior``) are fitted to that average
by least squares (scipy), and their parameters are printed as the
``LUNG_FIELDS`` tuple to paste, with the fit's mean absolute difference and
the intersection over union of the fields at >= 0.5. The package ships the
parameters, not the masks or their average.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import least_squares

from cxrkit.explain import _lung_fields

SIZE = 32
#: Starting point and bounds of one lung field's parameters (see LUNG_FIELDS).
START = (0.3, 0.5, 0.13, 0.3, 0.2, 0.3, 2.0, 0.1)
LOW = (0.0, 0.0, 0.02, 0.02, 0.02, -2.0, 1.0, 0.005)
HIGH = (1.0, 1.0, 0.5, 0.8, 0.8, 2.0, 6.0, 0.5)


def average_mask(paths: list[Path], size: int = SIZE) -> tuple[np.ndarray, int]:
    """Mean of the lung masks at ``size`` x ``size`` in [0, 1], and how many."""
    total = np.zeros((size, size), dtype=np.float64)
    used = 0
    for path in paths:
        lung = (np.asarray(Image.open(path).convert("L")) >= 127).astype(np.float32)
        if lung.sum() == 0:
            continue
        small = Image.fromarray(lung).resize((size, size), Image.Resampling.BOX)
        total += np.asarray(small, dtype=np.float64)
        used += 1
    if not used:
        raise ValueError("no mask marks any lung; is this the V7 masks folder?")
    return total / used, used


def fit_lung_fields(share: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """The two lung fields whose map is closest to ``share`` (least squares)."""
    size = share.shape[0]

    def residual(flat: np.ndarray) -> np.ndarray:
        _lung_fields.LUNG_FIELDS = (tuple(flat[:8]), tuple(flat[8:]))
        return (_lung_fields.lung_field_prior(size) - share).ravel()

    start = np.array(START)
    right = start.copy()
    right[0] = 1 - start[0]
    fit = least_squares(
        residual, np.concatenate([start, right]), bounds=(LOW * 2, HIGH * 2)
    )
    return tuple(tuple(round(float(v), 3) for v in fit.x[k : k + 8]) for k in (0, 8))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("v7", type=Path, help="a copy of v7labs/covid-19-xray-dataset")
    args = parser.parse_args(argv)
    folder = args.v7 / "annotations" / "all-images-semantic-masks"
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise SystemExit(f"no masks in {folder}")
    share, used = average_mask(paths)
    fields = fit_lung_fields(share)
    _lung_fields.LUNG_FIELDS = fields
    prior = _lung_fields.lung_field_prior(SIZE)
    lung, masks = prior >= 0.5, share >= 0.5
    print(f"{used} masks of {len(paths)}")
    print(f"LUNG_FIELDS = {fields!r}")
    print(f"mean absolute difference {np.abs(prior - share).mean():.3f}")
    overlap = (lung & masks).sum() / (lung | masks).sum()
    print(f"intersection over union at >= 0.5 {overlap:.3f}")


if __name__ == "__main__":
    main()
