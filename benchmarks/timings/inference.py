"""Inference images/s on CPU: torch, onnxruntime and cxrkit's predict_proba; JSON.

    python benchmarks/timings/inference.py  # resnet18 at 128 and 224 px
    python benchmarks/timings/inference.py --model cnn4 --image-size 64 --repeats 2

For each image size, on the same preprocessed images (the files of ``--data``
decoded, resized and normalised as cxrkit does: float32 ``(32, 1, size,
size)`` batches of ``--batch-size``):

* ``torch_eager``: ``softmax(module(x))`` as plain eager code calls it
  (autograd recording);
* ``torch_no_grad``: the same under ``torch.no_grad()`` ("bare torch");
* ``torch_inference_mode``: the same under ``torch.inference_mode()``
  (whether skipping autograd's bookkeeping altogether would pay; cxrkit
  predicts under skorch's ``no_grad``);
* ``onnxruntime``: the model exported with ``clf.export_onnx``, run by
  onnxruntime's CPU provider on as many intra-op threads as torch has, with
  its threads' spin-waiting off (``--onnx-spinning`` keeps onnxruntime's
  default; see below);
* ``cxrkit_predict_proba``: ``clf.predict_proba`` on the decoded ``uint8``
  images (array input: no file decoding, but cxrkit's checks, dataset,
  normalisation and skorch's predict loop);
* ``cxrkit_without_network``: the same call with the network replaced by one
  that returns zeros: what cxrkit's predict path costs besides the network;

and end to end, ``clf.predict_proba`` on the image files with the image cache
cleared (``end_to_end_cold``: decoding and resizing included) and right after,
with the batch cached (``end_to_end_warm``).

The machine may be shared, so the measurements are paired: in each round
every method runs once on the same batch, in an order drawn at random for
that round, and a ratio is the median over rounds of the per-round ratio of
times; images/s is the median over rounds.

Why the random order and the spinning: after a run, onnxruntime's intra-op
threads spin, waiting for more work, and hold the cores for a while; on 2
cores the torch call timed next was then 11-13% slower (278 against 250 ms
per batch for ``torch_no_grad``, resnet18 at 128 px; 238 against 232 ms with
spinning off). With a fixed rotation ``cxrkit_predict_proba`` always ran
right after onnxruntime, and this benchmark reported cxrkit 7-21% slower
than bare torch; timed after the same method, the two took the same time.
Spinning off did not make onnxruntime slower here (onnxruntime / torch
``no_grad`` 1.25-1.51 without it, 1.28-1.47 with it).

The model is trained for one epoch on a few images
(``--model-file`` benchmarks a saved one): weights do not change the speed of
these networks.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrkit import PneumoniaClassifier, clear_image_cache, load_image_folder
from cxrkit.images import ImageDataset, load_images
from cxrkit.training import reuse_large_buffers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import SHARED, print_json


def _classifier(args: argparse.Namespace, X: np.ndarray, y: np.ndarray, size: int):
    if args.model_file:
        # One pass per image, as the torch references time: a model's
        # test-time augmentation is timed by benchmarks/timings/tta.py.
        return PneumoniaClassifier.load(args.model_file).set_params(tta=0)
    pick = np.concatenate([np.flatnonzero(y == c)[:8] for c in np.unique(y)])
    clf = PneumoniaClassifier(
        model=args.model,
        image_size=size,
        batch_size=args.batch_size,
        max_epochs=1,
        augment=None,
        validation_fraction=None,
        device="cpu",
        random_state=0,
    )
    return clf.fit(X[pick], y[pick])


def _onnx_session(clf: PneumoniaClassifier, threads: int, spinning: bool):
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp(prefix="cxrkit_bench_")) / "model.onnx"
    clf.export_onnx(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:  # idle threads free the cores for the next method timed
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _NoNetwork(nn.Module):
    """Zero logits: measures everything in predict_proba but the network."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(len(x), self.n_classes)


def _methods(
    clf: PneumoniaClassifier, paths: np.ndarray, threads: int, spinning: bool
) -> dict[str, Callable[[np.ndarray], Any]]:
    """Each method predicts the images ``idx`` (an index array)."""
    images, _ = load_images(list(paths), clf.image_size)
    x = torch.stack([image for image, _ in ImageDataset(images)])
    x_numpy = x.numpy()
    module = clf.net_.module_.eval()
    session = _onnx_session(clf, threads, spinning)
    without_network = copy.copy(clf)
    without_network.net_ = copy.copy(clf.net_)
    without_network.net_.module_ = _NoNetwork(len(clf.classes_))

    def torch_eager(idx: np.ndarray) -> np.ndarray:
        return torch.softmax(module(x[idx]), dim=1).detach().numpy()

    def torch_no_grad(idx: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(module(x[idx]), dim=1).numpy()

    def torch_inference_mode(idx: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(module(x[idx]), dim=1).numpy()

    def end_to_end(idx: np.ndarray) -> tuple[float, float]:
        clear_image_cache()
        start = time.perf_counter()
        clf.predict_proba(paths[idx])
        cold = time.perf_counter() - start
        clf.predict_proba(paths[idx])
        return cold, time.perf_counter() - start - cold

    return {
        "torch_eager": torch_eager,
        "torch_no_grad": torch_no_grad,
        "torch_inference_mode": torch_inference_mode,
        "onnxruntime": lambda idx: session.run(None, {"image": x_numpy[idx]})[0],
        "cxrkit_predict_proba": lambda idx: clf.predict_proba(images[idx]),
        "cxrkit_without_network": lambda idx: without_network.predict_proba(
            images[idx]
        ),
        "end_to_end": end_to_end,  # timed inside: cold, then warm
    }


def _paired_rounds(
    methods: dict[str, Callable], batches: list[np.ndarray], repeats: int
) -> dict[str, list[float]]:
    """Seconds per batch of each method, one entry per round, in random order.

    A fixed rotation would time each method right after the same other one,
    whose after-effects (onnxruntime's spinning threads) it would then carry
    in every round.
    """
    seconds: dict[str, list[float]] = {}
    names = list(methods)
    rng = np.random.default_rng(0)
    rounds = [batch for _ in range(repeats) for batch in batches]
    for batch in rounds:
        for name in (names[i] for i in rng.permutation(len(names))):
            start = time.perf_counter()
            out = methods[name](batch)
            if name == "end_to_end":
                seconds.setdefault("end_to_end_cold", []).append(out[0])
                seconds.setdefault("end_to_end_warm", []).append(out[1])
            else:
                seconds.setdefault(name, []).append(time.perf_counter() - start)
    return seconds


def _ratio(seconds: dict[str, list[float]], fast: str, slow: str) -> float:
    """Median over rounds of time(slow) / time(fast): the speed of fast vs slow."""
    per_round = np.array(seconds[slow]) / np.array(seconds[fast])
    return round(float(np.median(per_round)), 3)


def benchmark_size(
    args: argparse.Namespace, X: np.ndarray, y: np.ndarray, size: int
) -> dict:
    clf = _classifier(args, X, y, size)
    clf.net_.set_params(batch_size=args.batch_size)  # predict_proba's batches
    paths = np.array([str(p) for p in X[: args.n_images]], dtype=object)
    methods = _methods(clf, paths, args.threads, args.onnx_spinning)
    everything = np.arange(len(paths))
    reference = methods["torch_no_grad"](everything)
    max_diff = {
        name: float(np.abs(methods[name](everything) - reference).max())
        for name in (
            "torch_eager",
            "torch_inference_mode",
            "onnxruntime",
            "cxrkit_predict_proba",
        )
    }
    max_diff["end_to_end"] = float(np.abs(clf.predict_proba(paths) - reference).max())
    n_batches = len(paths) // args.batch_size
    batches = np.array_split(everything[: n_batches * args.batch_size], n_batches)
    seconds = _paired_rounds(methods, batches, args.repeats)
    per_s = {
        name: round(args.batch_size / float(np.median(s)), 1)
        for name, s in seconds.items()
    }
    network = np.median(seconds["torch_no_grad"])
    overhead = np.median(seconds["cxrkit_without_network"])
    return {
        "model": clf.model,
        "image_size": size,
        "rounds": len(seconds["torch_no_grad"]),
        "images_per_round": args.batch_size,
        "images_per_s_median": per_s,
        "speed_ratios_median_of_rounds": {
            "cxrkit_predict_proba / torch_no_grad": _ratio(
                seconds, "cxrkit_predict_proba", "torch_no_grad"
            ),
            "cxrkit_predict_proba / torch_inference_mode": _ratio(
                seconds, "cxrkit_predict_proba", "torch_inference_mode"
            ),
            "torch_inference_mode / torch_no_grad": _ratio(
                seconds, "torch_inference_mode", "torch_no_grad"
            ),
            "onnxruntime / torch_eager": _ratio(seconds, "onnxruntime", "torch_eager"),
            "onnxruntime / torch_no_grad": _ratio(
                seconds, "onnxruntime", "torch_no_grad"
            ),
            "end_to_end_warm / torch_no_grad": _ratio(
                seconds, "end_to_end_warm", "torch_no_grad"
            ),
            "end_to_end_cold / torch_no_grad": _ratio(
                seconds, "end_to_end_cold", "torch_no_grad"
            ),
        },
        "cxrkit_overhead_ms_per_image": round(1e3 * overhead / args.batch_size, 3),
        "cxrkit_overhead_share_of_network_time": round(float(overhead / network), 4),
        "max_abs_probability_difference_vs_torch_no_grad": {
            k: float(f"{v:.2g}") for k, v in max_diff.items()
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=SHARED / "chest_xray_fullres" / "train",
        help="class-per-subfolder images (default: the 120 full-resolution ones)",
    )
    parser.add_argument("--n-images", type=int, default=120)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--model-file", help="a saved model (then --model is unused)")
    parser.add_argument("--image-size", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the images")
    parser.add_argument(
        "--reuse-large-buffers",
        action="store_true",
        help="call cxrkit.training.reuse_large_buffers() first, as the "
        "cxrkit command line does (every method then runs with it)",
    )
    parser.add_argument(
        "--onnx-spinning",
        action="store_true",
        help="keep onnxruntime's spin-waiting threads (its default): faster for "
        "onnxruntime alone, but they slow down whatever runs next on the cores",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reused = args.reuse_large_buffers and reuse_large_buffers()
    X, y = load_image_folder(args.data)
    order = np.random.default_rng(0).permutation(len(X))  # both classes in front
    X, y = X[order], y[order]
    load_before = os.getloadavg()[0]
    sizes = (
        [PneumoniaClassifier.load(args.model_file).image_size]
        if args.model_file
        else args.image_size
    )
    runs = [benchmark_size(args, X, y, size) for size in sizes]
    result = {
        "runs": runs,
        "threads": args.threads,
        "reuse_large_buffers": reused,
        "onnx_spinning": args.onnx_spinning,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "data": str(args.data),
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1min_before_after": [
            round(load_before, 2),
            round(os.getloadavg()[0], 2),
        ],
    }
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
