"""Probabilities with their out-of-distribution scores: two passes or one; JSON.

    python benchmarks/timings/ood_pass.py  # resnet18 at 112 px, 256 files
    python benchmarks/timings/ood_pass.py --model efficientnet_lite0 \
        --image-size 224 --pretrained imagenet --freeze backbone

What a caller that shows a prediction with its flag pays: before,
``clf.predict_proba(paths)`` then ``clf.ood_score(paths)`` (each reads the
files and runs the network); now ``cxrkit.ood.proba_and_ood_score(clf,
paths)``, one read and one pass. Both are timed on the same ``--n`` files of
``../shared/data/chest_xray/train``, with the image cache cleared before each
call, alternating over ``--rounds`` rounds; ``ratio`` is the median of the
per-round ratios (two calls over one). The model is trained for one epoch on
the package's 600-image sample (weights do not change the speed), with
``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cxrkit import PneumoniaClassifier, clear_image_cache, load_image_folder
from cxrkit.datasets import load_sample_cxr
from cxrkit.ood import proba_and_ood_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import SHARED, print_json


def _timed(fn) -> tuple[float, object]:
    clear_image_cache()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--freeze", default=None)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    sample = load_sample_cxr()
    clf = PneumoniaClassifier(
        model=args.model,
        image_size=args.image_size,
        pretrained=args.pretrained,
        freeze=args.freeze,
        max_epochs=1,
        random_state=0,
    ).fit(sample.data, sample.target)
    paths, _ = load_image_folder(SHARED / "chest_xray" / "train")
    paths = paths[np.random.default_rng(0).permutation(len(paths))[: args.n]]

    two, one, ratios = [], [], []
    for _ in range(args.rounds):
        t_two, (proba, scores) = _timed(
            lambda: (clf.predict_proba(paths), clf.ood_score(paths))
        )
        t_one, (proba_one, scores_one) = _timed(lambda: proba_and_ood_score(clf, paths))
        two.append(t_two)
        one.append(t_one)
        ratios.append(t_two / t_one)
    result = {
        "model": args.model,
        "image_size": args.image_size,
        "n_images": len(paths),
        "threads": args.threads,
        "two_calls_s": [round(t, 2) for t in two],
        "one_pass_s": [round(t, 2) for t in one],
        "ratio": round(statistics.median(ratios), 2),
        "max_abs_proba_difference": float(np.abs(proba - proba_one).max()),
        "max_rel_score_difference": float(
            np.abs(scores - scores_one).max() / np.abs(scores).max()
        ),
    }
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
