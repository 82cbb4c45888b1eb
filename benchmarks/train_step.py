"""Seconds per epoch of a recipe on a fixed subset, and where a step's time goes; JSON.

    python benchmarks/train_step.py                       # recipe "cpu", 1,000 images
    python benchmarks/train_step.py --n 320 --threads 1

Fits ``RECIPES[--recipe]`` (``max_epochs=--epochs``, ``random_state=0``) on a
seeded random subset of ``--data`` (Kermany ``train`` by default) with the
images already decoded (the cache is filled first, so only training is
timed). Reports each epoch's wall-clock seconds (skorch's ``dur``) and the
process CPU seconds of the fit: on a machine shared with other work the CPU
seconds move less than the wall clock.

Then it times the phases of one training step of the fitted net, median of
``--steps`` steps: gathering the ``uint8`` batch, augmenting and normalising
it, the forward pass with the loss, the backward pass, the optimizer step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cxrkit import load_image_folder
from cxrkit.cache import load_images
from cxrkit.recipes import RECIPES, make_classifier

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _median_ms(seconds: list[float]) -> float:
    return round(float(np.median(seconds)) * 1000, 1)


def step_phases(net, images: np.ndarray, y: np.ndarray, steps: int) -> dict:
    """Median milliseconds of each phase of a training step of ``net``."""
    from cxrkit.transforms import ImageBatches  # absent from older cxrkit

    data = ImageBatches(images, y)
    rng = np.random.default_rng(0)
    phases: dict[str, list[float]] = {
        "gather": [],
        "augment_normalise": [],
        "forward_loss": [],
        "backward": [],
        "optimizer": [],
    }
    net.module_.train()
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        x, target = data.__getitems__(rng.choice(len(data), net.batch_size).tolist())
        t1 = time.perf_counter()
        inputs = net.model_input(x)
        t2 = time.perf_counter()
        net.optimizer_.zero_grad()
        loss = net.get_loss(net.module_(inputs), target, training=True)
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        net.optimizer_.step()
        t5 = time.perf_counter()
        for name, (a, b) in zip(
            phases, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)], strict=True
        ):
            phases[name].append(b - a)
    return {name: _median_ms(seconds[1:]) for name, seconds in phases.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "chest_xray" / "train")
    parser.add_argument("--recipe", default="cpu", choices=sorted(RECIPES))
    parser.add_argument("--n", type=int, default=1000, help="images in the subset")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="steps timed by phase")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    X, y = load_image_folder(args.data)
    subset = np.sort(np.random.default_rng(0).choice(len(X), args.n, replace=False))
    X, y = X[subset], y[subset]
    clf = make_classifier(args.recipe, max_epochs=args.epochs, random_state=0)
    images, _ = load_images(X, clf.image_size)  # decoded before the clock starts

    cpu, wall = time.process_time(), time.perf_counter()
    clf.fit(X, y)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result = {
        "recipe": args.recipe,
        "n_images": args.n,
        "threads": args.threads,
        "seconds_per_epoch": [round(float(e["dur"]), 1) for e in clf.history_],
        "fit_wall_seconds": round(wall, 1),
        "fit_cpu_seconds": round(cpu, 1),
        "load_average_1min": round(os.getloadavg()[0], 1),
    }
    if hasattr(clf.net_, "model_input"):
        _, y_enc = np.unique(y, return_inverse=True)
        result["step_ms"] = step_phases(clf.net_, images, y_enc, args.steps)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
