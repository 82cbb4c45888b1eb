"""Split a class-per-subfolder tree by patient into TRAIN90/ and HOLDOUT/ (links).

    python benchmarks/tools/make_holdout.py --train ../shared/data/chest_xray/train \
        --out /tmp/full

makes ``OUT/train90/CLASS/*`` and ``OUT/holdout/CLASS/*`` as symbolic links
(nothing is copied): 10% of the patients (``cxrkit.patient_groups``,
``StratifiedGroupKFold(10, shuffle=True, random_state=0)``) go to the holdout,
the rest to train90. This is the holdout of the docs' *Training recipe* page.
Prints one JSON line with the counts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from sklearn.model_selection import StratifiedGroupKFold

from cxrkit import load_image_folder, patient_groups

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    X, y = load_image_folder(args.train)
    splitter = StratifiedGroupKFold(10, shuffle=True, random_state=args.seed)
    fit_idx, hold_idx = next(splitter.split(X, y, patient_groups(X)))
    counts = {}
    for name, idx in (("train90", fit_idx), ("holdout", hold_idx)):
        for path, label in zip(X[idx], y[idx]):
            link = args.out / name / str(label) / Path(path).name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(os.path.abspath(path))
        counts[name] = dict(Counter(y[idx].tolist()))
    print_json(counts)
    return counts


if __name__ == "__main__":
    main(sys.argv[1:])
