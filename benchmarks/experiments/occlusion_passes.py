"""Fewer passes of adaptive occlusion against exact occlusion, on real radiographs.

    python benchmarks/experiments/occlusion_passes.py --model MODEL.cxr \
        [--images 16] [--settings 3,2,2 3,1,2 4,1,2 4,1,1 6,1,1]

``adaptive_occlusion`` evaluates a coarse grid of patch positions, then
refines around the highest drops (``coarse``, ``refine``, ``peaks``; the
default 3, 2, 2 makes up to 73 passes per image). Fewer passes are faster;
this measures what they cost in agreement with exact occlusion (every one
of the 169 positions) on the external site's images (half PNEUMONIA, half
NORMAL, every 10th file of each folder), the predicted class explained.
Prints one JSON line per setting: the median seconds per image (one image
per call, as ``cxrkit explain`` and the serve page make them), the distance
between the two maps' peaks (median, largest, and how many images within
8 px), their per-pixel correlation (smallest, median) and the largest
difference.

Exact occlusion is the reference here, not the truth: this says how much of
the occlusion map a setting keeps, not whether it points at an opacity.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cxrkit import PneumoniaClassifier, load_image_folder
from cxrkit.explain import adaptive_occlusion, occlusion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import EXTERNAL, print_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a saved model (clf.save)")
    parser.add_argument("--data", default=str(EXTERNAL))
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["3,2,2", "3,1,2", "4,1,2", "4,1,1", "6,1,1"],
        help="coarse,refine,peaks of adaptive_occlusion (3,2,2: the default)",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    clf = PneumoniaClassifier.load(args.model)
    X, y = load_image_folder(args.data)
    half = args.images // 2
    paths = [
        path
        for label in ("PNEUMONIA", "NORMAL")
        for path in sorted(X[y == label])[::10][:half]
    ]
    exact = occlusion(clf, paths)
    for setting in args.settings:
        coarse, refine, peaks = (int(v) for v in setting.split(","))
        options = {"coarse": coarse, "refine": refine, "peaks": peaks}
        adaptive_occlusion(clf, paths[:1], **options)  # warm-up
        seconds, maps = [], []
        for path in paths:
            start = time.perf_counter()
            maps.append(adaptive_occlusion(clf, [path], **options)[0])
            seconds.append(time.perf_counter() - start)
        maps = np.stack(maps)
        peaks_apart = [
            float(
                np.hypot(
                    *np.subtract(
                        np.unravel_index(a.argmax(), a.shape),
                        np.unravel_index(b.argmax(), b.shape),
                    )
                )
            )
            for a, b in zip(maps, exact)
        ]
        correlation = [
            float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(maps, exact)
        ]
        print_json(
            {
                **options,
                "model": args.model,
                "images": len(paths),
                "median_s": round(float(np.median(seconds)), 3),
                "peak_distance_px_median": round(float(np.median(peaks_apart)), 1),
                "peak_distance_px_max": round(max(peaks_apart), 1),
                "peaks_within_8px": int(sum(d <= 8 for d in peaks_apart)),
                "correlation_min": round(min(correlation), 3),
                "correlation_median": round(float(np.median(correlation)), 3),
                "max_abs_difference": round(float(np.abs(maps - exact).max()), 3),
            }
        )


if __name__ == "__main__":
    main(sys.argv[1:])
