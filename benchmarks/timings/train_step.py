"""Seconds per epoch of a recipe on a fixed subset, and where a step's time goes; JSON.

    python benchmarks/timings/train_step.py  # recipe "cpu", 1,000 images
    python benchmarks/timings/train_step.py --n 320 --threads 1
    python benchmarks/timings/train_step.py --no-channels-last --no-fused  # the old net
    python benchmarks/timings/train_step.py --compare --n 400  # old vs new, one run
    python benchmarks/timings/train_step.py --set precision='"bf16"'  # bf16 autocast

Fits ``RECIPES[--recipe]`` (``max_epochs=--epochs``, ``random_state=0``) on a
seeded random subset of ``--data`` (Kermany ``train`` by default) with the
images already decoded (the cache is filled first, so only training is
timed). Reports each epoch's wall-clock seconds (skorch's ``dur``) and the
process CPU seconds of the fit: on a machine shared with other work the CPU
seconds move less than the wall clock.

Then it times the phases of one training step of the fitted net, median of
``--steps`` steps: gathering the ``uint8`` batch, augmenting and normalising
it, the forward pass with the loss, the backward pass, the optimizer step.

``--no-channels-last`` and ``--no-fused`` train the net as it was before
channels-last memory order and the fused AdamW (these are settings of the
net, not of the estimator: the benchmark sets them on the net ``fit`` builds).
``--compare`` fits both (old, new, old, new: interleaved, so that a change of
load on a shared machine hits both alike) and reports each one's fastest fit
and the ratios (each fit is also printed to stderr as it ends).

``--set PARAM=JSON`` overrides recipe parameters, as in ``full_fit.py``.
``cpu`` in the JSON says whether this CPU has AVX-512 BF16 and AMX tiles:
on a CPU with AMX, ``precision="bf16"`` trained the recipe 1.89x faster,
and on one with AVX-512 BF16 alone it was slower (docs page *Training*).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from full_fit import cpu_features, param_override  # the script beside this one

from cxrkit import load_image_folder
from cxrkit.images import load_images
from cxrkit.recipes import RECIPES, make_classifier
from cxrkit.training import reuse_large_buffers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import SHARED, print_json


def _median_ms(seconds: list[float]) -> float:
    return round(float(np.median(seconds)) * 1000, 1)


def step_phases(net, images: np.ndarray, y: np.ndarray, steps: int) -> dict:
    """Median milliseconds of each phase of a training step of ``net``."""
    from cxrkit.images import ImageBatches

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
        loss = net.get_loss(net.infer(inputs), target, training=True)  # autocast
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


@contextlib.contextmanager
def net_settings(channels_last: bool, fused: bool) -> Iterator[None]:
    """``PneumoniaClassifier.fit`` builds its net with these settings meanwhile."""
    import cxrkit.classifier as classifier_module

    build_net = classifier_module.build_net

    def build(*args, **kwargs):
        return build_net(*args, **kwargs).set_params(
            channels_last=channels_last, optimizer__fused=fused
        )

    classifier_module.build_net = build
    try:
        yield
    finally:
        classifier_module.build_net = build_net


def timed_fit(clf, X, y, channels_last: bool, fused: bool) -> dict:
    """Fit ``clf`` with the net settings; its epochs' and the fit's seconds."""
    with net_settings(channels_last, fused):
        cpu, wall = time.process_time(), time.perf_counter()
        clf.fit(X, y)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "channels_last": channels_last,
        "fused_adamw": fused,
        "seconds_per_epoch": [round(float(e["dur"]), 1) for e in clf.history_],
        "fit_wall_seconds": round(wall, 1),
        "fit_cpu_seconds": round(cpu, 1),
        "load_average_1min": round(os.getloadavg()[0], 1),
    }


def compare(make, X, y, repeats: int) -> dict:
    """Old net (neither setting) vs new (both), interleaved; fastest of each."""
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(repeats):
        for name, on in (("before", False), ("after", True)):
            runs[name].append(timed_fit(make(), X, y, on, on))
            print_json({name: runs[name][-1]}, file=sys.stderr)
    best = {k: min(v, key=lambda r: r["fit_wall_seconds"]) for k, v in runs.items()}
    return {
        "runs": runs,
        "speedup_wall": round(
            best["before"]["fit_wall_seconds"] / best["after"]["fit_wall_seconds"], 2
        ),
        "speedup_cpu": round(
            min(r["fit_cpu_seconds"] for r in runs["before"])
            / min(r["fit_cpu_seconds"] for r in runs["after"]),
            2,
        ),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "chest_xray" / "train")
    parser.add_argument("--recipe", default="cpu", choices=sorted(RECIPES))
    parser.add_argument("--n", type=int, default=1000, help="images in the subset")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="steps timed by phase")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        type=param_override,
        metavar="PARAM=JSON",
        help="override recipe parameters, e.g. precision='\"bf16\"'",
    )
    parser.add_argument(
        "--no-channels-last", action="store_true", help="default memory order"
    )
    parser.add_argument("--no-fused", action="store_true", help="for-loop AdamW")
    parser.add_argument(
        "--compare", action="store_true", help="old vs new net, interleaved"
    )
    parser.add_argument("--repeats", type=int, default=2, help="fits each, --compare")
    parser.add_argument(
        "--reuse-large-buffers",
        action="store_true",
        help="call cxrkit.training.reuse_large_buffers() first",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reused = args.reuse_large_buffers and reuse_large_buffers()

    X, y = load_image_folder(args.data)
    subset = np.sort(np.random.default_rng(0).choice(len(X), args.n, replace=False))
    X, y = X[subset], y[subset]

    overrides = dict(args.set)

    def make():
        return make_classifier(
            args.recipe, max_epochs=args.epochs, random_state=0, **overrides
        )

    clf = make()
    images, _ = load_images(X, clf.image_size)  # decoded before the clock starts
    result = {
        "recipe": args.recipe,
        "n_images": args.n,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "reuse_large_buffers": reused,
        "overrides": overrides,
        "cpu": cpu_features(),
    }
    if args.compare:
        result.update(compare(make, X, y, args.repeats))
        print_json(result)
        return result
    result.update(timed_fit(clf, X, y, not args.no_channels_last, not args.no_fused))
    if hasattr(clf.net_, "model_input"):
        _, y_enc = np.unique(y, return_inverse=True)
        result["step_ms"] = step_phases(clf.net_, images, y_enc, args.steps)
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
