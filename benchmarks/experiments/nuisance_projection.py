"""Project synthetic-shift directions out of frozen Lite0 features.

    PYTHONPATH=. python benchmarks/experiments/nuisance_projection.py \
        --cache DIR --k 0 3 10 [--seeds 0 1 2]

Reads the features that ``site_shift_features.py --variants none`` cached
in ``--cache`` (training images, external site, and the threshold split as
acquired and under each shift of ``cxrkit.validation.SHIFTS``). The
differences between each threshold-split image's shifted and plain features
(training images only, no labels) give, by SVD, the ``k`` directions along
which acquisition shifts move the features most; they are projected out of
every feature vector before the head is trained (as in
``site_shift_features.py``) and the ``robust_shift`` threshold is chosen on
the projected threshold split. ``k = 0`` is the plain recipe. Prints one
JSON line per ``k`` and seed, and saves the scores beside the cache.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from cxrkit.validation import SHIFTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json
from site_shift_features import (
    head_scores,
    site_split,
    threshold_and_scores,
    train_head,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--k", nargs="+", type=int, default=[0, 3])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)

    _, y, X_test, y_test, fit_idx, tune_idx = site_split(args.train, args.test)
    f_train = np.load(cache / "none_train.npy")
    f_test = np.load(cache / "none_test.npy")
    f_tune = {"none": f_train[tune_idx]}
    f_tune.update({s: np.load(cache / f"none_tune_{s}.npy") for s in SHIFTS})
    moves = np.concatenate([f_tune[s] - f_tune["none"] for s in SHIFTS])
    directions = np.linalg.svd(moves, full_matrices=False)[2]

    for k in args.k:
        basis = directions[:k].T

        def project(f: np.ndarray, basis: np.ndarray = basis) -> np.ndarray:
            return (f - (f @ basis) @ basis.T).astype(np.float32)

        for seed in args.seeds:
            head = train_head(project(f_train[fit_idx]), y[fit_idx], seed)
            projected = {name: project(f) for name, f in f_tune.items()}
            probas, p_test = head_scores(head, projected, project(f_test))
            t, figures = threshold_and_scores(y[tune_idx], probas, y_test, p_test)
            print_json({"k": k, "seed": seed, **figures})
            np.savez(
                cache / f"scores_projection{k}_s{seed}.npz",
                X_test=X_test.astype(str),
                y_test=y_test,
                proba_test=p_test,
                threshold=t,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
