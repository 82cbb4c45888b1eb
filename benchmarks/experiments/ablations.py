"""One-change-at-a-time ablations of the ``"cpu"`` recipe; one JSON line each.

    python benchmarks/experiments/ablations.py --train TRAIN90 --test HOLDOUT \
        --out DIR [--only NAME ...] [--epochs 6] [--threads 1]

Each variant is ``benchmarks/experiments/recipe.py`` with one parameter changed from the
recipe, run in its own process (so peak RSS is per variant), at a shorter
budget than the recipe (``--epochs``, 6 by default) so that all of them fit
on 2 CPU cores in an afternoon. ``--save DIR/NAME`` keeps each fitted model and
its probabilities so that test-time augmentation, thresholds and ensembles can
be scored afterwards without training again (``benchmarks/experiments/posthoc.py``).

Two variants run concurrently with ``--threads 1`` use the two cores better
than one with two threads; compare fit seconds only within one queue.
For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json

HERE = Path(__file__).resolve().parent

#: Variant name -> extra arguments to ``benchmarks/experiments/recipe.py``.
VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "baseline_seed1": ["--seed", "1"],
    "no_label_smoothing": ["--set", "label_smoothing=0.0"],
    "no_class_weight": ["--set", "class_weight=null"],
    "balanced_sampler": ["--set", "class_weight=null", 'sampler="balanced"'],
    "augment_none": ["--set", "augment=null"],
    "augment_light": ["--set", 'augment="light"'],
    "augment_strong": ["--set", 'augment="strong"'],
    "augment_blur": ["--set", 'augment="blur"'],
    "cosine": ["--set", 'lr_schedule="cosine"'],
    "size_160": ["--image-size", "160"],
    "size_96": ["--image-size", "96"],
    "cnn4_96": ["--model", "cnn4", "--image-size", "96"],
    "efficientnet_b0": ["--model", "efficientnet_b0"],
    "ema": ["--set", "ema_decay=0.99"],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--out", required=True, help="folder for models and scores")
    parser.add_argument("--only", nargs="*", choices=sorted(VARIANTS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(VARIANTS):
        command = [
            sys.executable,
            str(HERE / "recipe.py"),
            "--train",
            args.train,
            "--test",
            args.test,
            "--epochs",
            str(args.epochs),
            "--threads",
            str(args.threads),
            "--target-sensitivity",
            "0.97",
            "--save",
            str(out / name),
            *VARIANTS[name],
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print_json({"variant": name, "error": done.stderr[-2000:]})
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print_json({"variant": name, **result})


if __name__ == "__main__":
    main(sys.argv[1:])
