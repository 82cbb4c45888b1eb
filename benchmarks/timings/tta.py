"""What test-time augmentation costs a prediction, in cxrkit and in ONNX Runtime; JSON.

    python benchmarks/timings/tta.py --model-file MODEL.cxr [--tta 4] [--rounds 5]

On ``--n-images`` decoded images of ``--data`` (no file reading in the
timed calls), paired rounds: in each round ``predict_proba`` runs once
without test-time augmentation and once with ``--tta`` copies (default:
the model's own ``tta``, else 4), and onnxruntime runs the two models'
ONNX exports, in an order drawn at random for the round. Printed: images/s
(median over rounds), the median of the per-round ratios of times, and the
largest difference between each ONNX model's probabilities and
``predict_proba``'s.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cxrkit import PneumoniaClassifier, load_image_folder, load_images
from cxrkit.images import model_images, normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import EXTERNAL, print_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-file", required=True)
    parser.add_argument("--data", type=Path, default=EXTERNAL)
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--tta", type=int, help="copies (default: the model's, else 4)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    clf = PneumoniaClassifier.load(args.model_file)
    copies = args.tta or clf.tta or 4
    plain = copy.deepcopy(clf).set_params(tta=0)
    augmented = copy.deepcopy(clf).set_params(tta=copies)
    X, _ = load_image_folder(args.data)
    X = X[np.random.default_rng(0).permutation(len(X))[: args.n_images]]
    images = load_images(X, clf.image_size)[0]  # what cxrkit gets
    # the ONNX input: what cxrkit feeds its network (uint8 -> normalised)
    pixels = model_images(clf, images).pixels  # the model's preprocess steps
    inputs = normalize(torch.from_numpy(pixels)[:, None]).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory() as folder:  # sessions hold the graphs
        sessions = {
            name: ort.InferenceSession(
                str(model.export_onnx(Path(folder) / f"{name}.onnx")),
                options,
                providers=["CPUExecutionProvider"],
            )
            for name, model in (("plain", plain), ("tta", augmented))
        }
    expected = {
        "plain": plain.predict_proba(images),
        "tta": augmented.predict_proba(images),
    }
    calls = {
        "cxrkit_tta0": lambda: plain.predict_proba(images),
        f"cxrkit_tta{copies}": lambda: augmented.predict_proba(images),
        "onnx_tta0": lambda: sessions["plain"].run(None, {"image": inputs})[0],
        f"onnx_tta{copies}": lambda: sessions["tta"].run(None, {"image": inputs})[0],
    }
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        for name in rng.permutation(list(calls)):
            start = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - start)
    onnx_diff = {
        kind: float(
            np.abs(session.run(None, {"image": inputs})[0] - expected[kind]).max()
        )
        for kind, session in sessions.items()
    }

    def ratio(slow: str, fast: str) -> float:
        return round(float(np.median(np.divide(seconds[slow], seconds[fast]))), 2)

    result = {
        "model": clf.model,
        "image_size": clf.image_size,
        "tta": copies,
        "n_images": len(images),
        "rounds": args.rounds,
        "threads": args.threads,
        "images_per_s_median": {
            name: round(len(images) / float(np.median(t)), 1)
            for name, t in seconds.items()
        },
        "time_ratio_median_of_rounds": {
            f"cxrkit tta{copies} / tta0": ratio(f"cxrkit_tta{copies}", "cxrkit_tta0"),
            f"onnx tta{copies} / tta0": ratio(f"onnx_tta{copies}", "onnx_tta0"),
        },
        "max_abs_onnx_minus_predict_proba": onnx_diff,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print_json(result)
    return result


if __name__ == "__main__":
    main()
