"""Run another benchmark script with the input masked to the typical lung field.

    PYTHONPATH=. python benchmarks/experiments/lung_input.py [--level 0.25] \
        SCRIPT [ARGS ...]

Registers an extra preprocessing step, ``"lungs"``, in this process only,
then runs ``SCRIPT`` (``recipe.py`` to fit and score a recipe with
``--set preprocess=lungs``; ``localization.py`` to explain the model file
it saved, whose ``preprocess`` names the step). The step multiplies each
pixel by ``clip(lung_field_prior / LEVEL, 0, 1)``: 1 wherever at least
``LEVEL`` of radiographs have lung (43% of the image at 0.25), fading to
black where none do. The model then cannot read the neck, arms, abdomen,
markers or corners, and occlusion cannot find evidence there (the mean
image it fills patches with is black there too).

It is an experiment, not a step of cxrkit: the prior does not follow each
patient's position, so a film whose lungs lie off the typical field loses
part of them.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import functools
import runpy
import sys

import numpy as np
from PIL import Image

from cxrkit.explain import lung_field_prior
from cxrkit.images import _preprocess


@functools.lru_cache(maxsize=8)
def lung_mask(height: int, width: int, level: float) -> np.ndarray:
    """``clip(lung_field_prior / level, 0, 1)`` at ``height`` x ``width``."""
    prior = lung_field_prior(max(height, width))
    if height != width:
        resized = Image.fromarray(prior).resize(
            (width, height), Image.Resampling.BILINEAR
        )
        prior = np.asarray(resized)
    return np.clip(prior / level, 0, 1).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--level", type=float, default=0.25)
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if not 0 < args.level <= 1:
        parser.error(f"--level must be in (0, 1], got {args.level}")

    def lungs(image: np.ndarray) -> np.ndarray:
        mask = lung_mask(*image.shape, args.level)
        return np.rint(image * mask).astype(np.uint8)

    _preprocess.PREPROCESSING["lungs"] = lungs
    sys.argv = [args.script, *args.args]
    runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
    main()
