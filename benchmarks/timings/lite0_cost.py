"""Training cost of EfficientNet-Lite0 against the ResNet-18 recipe; one JSON line.

    python benchmarks/timings/lite0_cost.py [--data DIR] [--n 320] [--rounds 2]

Every configuration is the ``"cpu"`` recipe (``cxrkit.recipes``) with one
epoch on the same ``--n`` Kermany training images, changed only as named:

* ``resnet18_128``: the recipe itself (ResNet-18 from scratch, 128 px);
* ``lite0_160_finetune`` / ``lite0_224_finetune``: ``model="efficientnet_lite0"``,
  ``pretrained="imagenet"`` (extra ``cxrkit[pretrained]``), all layers trained;
* ``lite0_160_frozen`` / ``lite0_224_frozen``: the same with
  ``freeze="backbone"``: one pass of the frozen backbone (feature
  extraction) and the head trained on the stored features.

Each configuration runs in its own process (its peak RSS is its own, images
decoded before timing), and the configurations take turns for ``--rounds``
rounds, so that a change in the machine's load hits them alike. Reported:
median seconds per image (training epoch; for the frozen ones the whole
``fit``), the ratio to ``resnet18_128`` within each round, and peak RSS.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import SHARED, peak_rss_mb, print_json

#: Configuration name -> overrides of the "cpu" recipe.
CONFIGS: dict[str, dict] = {
    "resnet18_128": {},
    "lite0_160_finetune": {
        "model": "efficientnet_lite0",
        "pretrained": "imagenet",
        "image_size": 160,
    },
    "lite0_224_finetune": {
        "model": "efficientnet_lite0",
        "pretrained": "imagenet",
        "image_size": 224,
    },
    "lite0_160_frozen": {
        "model": "efficientnet_lite0",
        "pretrained": "imagenet",
        "image_size": 160,
        "freeze": "backbone",
    },
    "lite0_224_frozen": {
        "model": "efficientnet_lite0",
        "pretrained": "imagenet",
        "image_size": 224,
        "freeze": "backbone",
    },
}


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Fit one configuration for one epoch in this process."""
    import torch

    from cxrkit import load_image_folder, load_images
    from cxrkit.recipes import make_classifier

    torch.set_num_threads(args.threads)
    X, y = load_image_folder(args.data)
    pick = np.random.default_rng(0).choice(len(X), min(args.n, len(X)), replace=False)
    X, y = X[pick], y[pick]
    params = {"max_epochs": 1, "validation_fraction": None, "random_state": 0}
    clf = make_classifier("cpu", **{**params, **CONFIGS[name]})
    load_images(X, clf.image_size)  # decoded before timing
    start = time.perf_counter()
    clf.fit(X, y)
    seconds = time.perf_counter() - start
    # frozen: the whole fit (features once + head); otherwise the epoch
    timed = seconds if clf.freeze else clf.history_[-1, "dur"]
    return {
        "config": name,
        "n_images": len(X),
        "ms_per_image": 1000 * timed / len(X),
        "fit_seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "chest_xray" / "train")
    parser.add_argument("--n", type=int, default=320, help="images per fit")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS))
    parser.add_argument("--one", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        result = run_one(args.one, args)
        print_json(result)
        return result

    names = args.only or list(CONFIGS)
    rounds = []
    for _ in range(args.rounds):
        row = {}
        for name in names:
            child = [sys.executable, __file__, "--one", name, "--n", str(args.n)]
            child += ["--data", str(args.data), "--threads", str(args.threads)]
            out = subprocess.run(child, check=True, capture_output=True, text=True)
            row[name] = json.loads(out.stdout.strip().splitlines()[-1])
        rounds.append(row)

    def median(name: str, key: str) -> float:
        return round(float(np.median([r[name][key] for r in rounds])), 2)

    base = "resnet18_128"
    result = {
        "benchmark": "efficientnet_lite0 training cost",
        "n_images": args.n,
        "rounds": args.rounds,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "ms_per_image": {n: median(n, "ms_per_image") for n in names},
        "peak_rss_mb": {n: median(n, "peak_rss_mb") for n in names},
        "per_round_ms_per_image": [
            {n: round(r[n]["ms_per_image"], 1) for n in names} for r in rounds
        ],
    }
    if base in names:
        result["ratio_to_resnet18_128"] = {
            n: round(
                float(
                    np.median(
                        [r[n]["ms_per_image"] / r[base]["ms_per_image"] for r in rounds]
                    )
                ),
                2,
            )
            for n in names
        }
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
