"""CPU training and prediction with and without reuse of large freed buffers; JSON.

    python benchmarks/timings/allocator.py  # simple_cnn, cnn4, resnet18
    python benchmarks/timings/allocator.py --models cnn4 --sizes 128 --threads 1

For each model and image size, one training step (forward, loss, backward,
fused AdamW step, channels-last: as cxrkit's net trains) and one prediction
batch under ``torch.no_grad``, on random batches of ``--batch`` images, with
glibc's allocation as a process starts and after
``cxrkit.training.reuse_large_buffers()``. glibc's starting behaviour
(an mmap threshold that it raises as the program runs) cannot be restored
once changed, so each setting runs in a fresh child process of this script;
the children alternate (default, reuse, default, ...) ``--rounds`` times, so
that a change of load on a shared machine hits both alike. Figures are
medians over the rounds of each child's median step (after one untimed
step), and each child's peak resident memory (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from cxrkit.models import build_model
from cxrkit.training import reuse_large_buffers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import peak_rss_mb, print_json


def _setup(model: str, size: int, batch: int):
    torch.manual_seed(0)
    net = build_model(model, 2, image_size=size).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
    return net, x, y, opt


def _train_steps(net, x, y, opt, steps: int) -> list[float]:
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return times


def _predict_batches(net, x, batches: int) -> list[float]:
    net.eval()
    times = []
    with torch.no_grad():
        for _ in range(batches):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    return times


def child(args: argparse.Namespace) -> dict:
    """Time every configuration under one setting; ms per step and peak RSS."""
    applied = reuse_large_buffers() if args.child == "reuse" else False
    runs = {}
    for model in args.models:
        for size in args.sizes:
            net, x, y, opt = _setup(model, size, args.batch)
            train = _train_steps(net, x, y, opt, args.steps + 1)[1:]
            pred = _predict_batches(net, x, args.steps + 1)[1:]
            runs[f"{model}@{size}"] = (
                1000 * statistics.median(train),
                1000 * statistics.median(pred),
            )
            del net, x, y, opt
    rss = peak_rss_mb()
    return {"applied": applied, "runs": runs, "peak_rss_mb": rss}


def run_child(argv: list[str], setting: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--child", setting],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:  # say why, as benchmarks/timings/versions.py does
        sys.exit(
            f"the child run with setting {setting!r} failed:\n{out.stderr.strip()}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["simple_cnn", "cnn4", "resnet18"]
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 224])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed per child")
    parser.add_argument("--child", choices=["default", "reuse"], help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        result = child(args)
        print_json(result)
        return result
    load_before = os.getloadavg()[0]
    children: dict[str, list[dict]] = {"default": [], "reuse": []}
    for _ in range(args.rounds):
        for setting, done in children.items():
            done.append(run_child(argv, setting))
    runs = []
    for key in children["default"][0]["runs"]:
        model, size = key.split("@")
        ms = {
            setting: [
                statistics.median(c["runs"][key][i] for c in done) for i in (0, 1)
            ]
            for setting, done in children.items()
        }
        runs.append(
            {
                "model": model,
                "image_size": int(size),
                "train_step_ms": {k: round(v[0], 1) for k, v in ms.items()},
                "predict_batch_ms": {k: round(v[1], 1) for k, v in ms.items()},
                "train_speedup": round(ms["default"][0] / ms["reuse"][0], 2),
                "predict_speedup": round(ms["default"][1] / ms["reuse"][1], 2),
            }
        )
    result = {
        "benchmark": "allocator",
        "applied": all(c["applied"] for c in children["reuse"]),  # False: not glibc
        "runs": runs,
        "peak_rss_mb": {
            k: round(statistics.median(c["peak_rss_mb"] for c in v))
            for k, v in children.items()
        },
        "rounds": args.rounds,
        "batch": args.batch,
        "threads": args.threads,
        "torch": torch.__version__,
        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }
    print_json(result)
    return result


if __name__ == "__main__":
    main()
