"""Build the lung-field prior that ships inside cxrkit (``cxrkit/explain/data/``).

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
a cell is the share of radiographs whose lung field covers it. Written as
an 8-bit grayscale PNG (255 = lung in every radiograph) with its licence
note. The same masks give the same file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
OUT = Path(__file__).resolve().parents[1] / "cxrkit" / "explain" / "data"

NOTICE = """\
lung_field_prior.png: the share of radiographs whose lung field covers each
cell of a 32 x 32 grid (255 = all of them), averaged over {n} frontal chest
X-ray lung masks of V7 Labs' COVID-19 X-ray dataset (each squashed to the
square grid). Built by tools/make_lung_prior.py.

Source: V7 Labs, COVID-19 X-ray dataset, lung segmentations
https://github.com/v7labs/covid-19-xray-dataset
Licence of the annotations: Creative Commons Attribution 4.0 (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/ . This file is an adaptation
(an average at low resolution) of those annotations.

The radiographs the masks were drawn on: Kermany D. S. et al. (2018), Cell
172(5):1122-1131, data doi:10.17632/rscbjbr9sj.2 (CC BY 4.0), and Cohen J. P.
et al. (2020), COVID-19 image data collection, arXiv:2003.11597.
"""


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("v7", type=Path, help="a copy of v7labs/covid-19-xray-dataset")
    args = parser.parse_args(argv)
    folder = args.v7 / "annotations" / "all-images-semantic-masks"
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise SystemExit(f"no masks in {folder}")
    prior, used = average_mask(paths)
    OUT.mkdir(parents=True, exist_ok=True)
    image = np.round(prior * 255).astype(np.uint8)
    Image.fromarray(image).save(OUT / "lung_field_prior.png", optimize=True)
    (OUT / "LUNG_FIELD_PRIOR.txt").write_text(NOTICE.format(n=f"{used:,}"))
    print(f"{used} masks of {len(paths)} -> {OUT / 'lung_field_prior.png'}")


if __name__ == "__main__":
    main()
