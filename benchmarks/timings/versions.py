"""Seconds per training image of recipe "cpu": this tree against another; JSON.

    git worktree add --detach /tmp/cxrkit-0.1 95ba739   # cxrkit 0.1
    python benchmarks/timings/versions.py --other /tmp/cxrkit-0.1 [--n 384] [--rounds 3]

Each tree fits its own ``RECIPES["cpu"]`` (the recipe as that version
defines it) for two epochs on the same seeded subset of ``--data``, in a
fresh process that imports that tree's ``cxrkit`` (``PYTHONPATH``), with the
same torch and thread count. The second epoch is timed (the first also
decodes and caches the images). Runs alternate between the trees, so that a
change of load on a shared machine hits both alike; the figure is each
tree's fastest round, and ``ratio`` is other / this (above 1: this tree is
faster). Run it on a quiet machine for an unloaded before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, SHARED, print_json

# Run in the child process; written against the API that cxrkit 0.1 already
# had (load_image_folder, RECIPES, make_classifier, history_).
CHILD = """
import json
import numpy as np, torch
torch.set_num_threads({threads})
import cxrkit
from cxrkit import load_image_folder
from cxrkit.recipes import RECIPES, make_classifier
paths, y = load_image_folder({data!r})
idx = np.random.default_rng(0).choice(len(paths), {n}, replace=False)
X = [paths[i] for i in idx]
clf = make_classifier("cpu", max_epochs=2, random_state=0, device="cpu", verbose=0)
clf.fit(X, np.asarray(y)[idx])
print(json.dumps({{"cxrkit": cxrkit.__file__,
                   "recipe_epochs": RECIPES["cpu"]["max_epochs"],
                   "epoch_seconds": [float(e["dur"]) for e in clf.history_]}}))
"""


def one_fit(tree: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    code = CHILD.format(threads=args.threads, data=str(args.data), n=args.n)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True
    )
    if out.returncode != 0:  # show the child's own error, not CalledProcessError
        sys.exit(f"the fit with {tree}'s cxrkit failed:\n{out.stderr.strip()}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["cxrkit"].startswith(str(tree)):
        raise RuntimeError(f"{tree} imported cxrkit from {result['cxrkit']}")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="another checkout")
    parser.add_argument("--data", type=Path, default=SHARED / "chest_xray" / "train")
    parser.add_argument("--n", type=int, default=384, help="training images")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not (args.other / "cxrkit" / "__init__.py").is_file():
        parser.error(f"--other {args.other}: no cxrkit package there; pass a checkout")
    trees = {"this": ROOT, "other": args.other.resolve()}
    seconds: dict[str, list[float]] = {name: [] for name in trees}
    epochs_of: dict[str, int] = {}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for name, tree in trees.items():
            fit = one_fit(tree, args)
            epochs, epochs_of[name] = fit["epoch_seconds"], fit["recipe_epochs"]
            seconds[name].append(epochs[-1])
            print(name, round(epochs[-1], 2), file=sys.stderr, flush=True)
    load.append(os.getloadavg()[0])
    ms = {name: 1000 * min(s) / args.n for name, s in seconds.items()}
    result = {
        "this": str(trees["this"]),
        "other": str(trees["other"]),
        "n_images": args.n,
        "threads": args.threads,
        "epoch2_seconds": {k: [round(s, 2) for s in v] for k, v in seconds.items()},
        "ms_per_image_epoch": {k: round(v, 1) for k, v in ms.items()},
        "ratio_other_over_this": round(ms["other"] / ms["this"], 2),
        # all 5,216 Kermany training images, for each recipe's own epochs
        "full_fit_estimate_minutes": {
            k: round(v * 5216 * epochs_of[k] / 1000 / 60, 1) for k, v in ms.items()
        },
        "load_average_1min": [round(x, 1) for x in load],
    }
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
