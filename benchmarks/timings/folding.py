"""What folding batch norm into the convs buys the recommended recipe's heatmap.

    python benchmarks/timings/folding.py [--model FILE.cxr] [--repeats 5]

The recommended recipe's model (EfficientNet-Lite0 at 224 px, timm's
``Conv2dSame`` and ``BatchNormAct2d`` layers; fitted for one epoch on 8
synthetic images unless ``--model`` names a saved one: the timing does not
depend on the weights) runs ``cxrkit.explain.adaptive_occlusion`` on one
image and a forward pass of 41 inputs (one of its passes) in three ways:

* ``unfolded``: the model as trained (what cxrkit ran before it could fold
  timm's layers);
* ``folded``: batch norm folded into the convs, activations as they were;
* ``folded_inplace``: the same with the activations overwriting the folded
  convs' outputs (what cxrkit runs now).

Calls alternate between the three, best of ``--repeats`` after a warm-up, so
that a change of the machine's load hits all alike. Prints one JSON line:
the seconds, their ratios to ``unfolded``, and the largest difference of the
logits and of the heatmaps from ``unfolded``'s.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.explain import adaptive_occlusion
from cxrkit.models import _inference_model
from cxrkit.recipes import RECOMMENDED, make_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json

#: the three settings, as patches of cxrkit's folding (cxrkit has no switch
#: for them: the folded copy is what it always runs)
SETTINGS = {
    "unfolded": lambda: mock.patch.object(
        _inference_model, "_conv_norm_pairs", lambda model: []
    ),
    "folded": lambda: mock.patch.object(_inference_model, "_INPLACE_SAFE", ()),
    "folded_inplace": contextlib.nullcontext,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a saved model (clf.save)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]

    X, y, _ = make_synthetic_cxr(8, image_size=224, random_state=0)
    if args.model:
        clf = PneumoniaClassifier.load(args.model)
    else:
        clf = make_classifier(RECOMMENDED, max_epochs=1, batch_size=8).fit(X, y)
    one = X[y == "PNEUMONIA"][:1]
    module = clf.net_.module_.eval()
    inputs = torch.randn(41, 1, 224, 224, generator=torch.Generator().manual_seed(0))

    def run(setting: str) -> tuple[float, float, torch.Tensor, np.ndarray]:
        _inference_model._CACHE.clear()  # fold afresh under this setting
        with SETTINGS[setting](), torch.no_grad():
            model = _inference_model.inference_model(module)
            start = time.perf_counter()
            logits = model(inputs)
            forward_s = time.perf_counter() - start
            start = time.perf_counter()
            heatmap = adaptive_occlusion(clf, one)
            heatmap_s = time.perf_counter() - start
        return forward_s, heatmap_s, logits, heatmap

    outputs = {name: run(name) for name in SETTINGS}  # warm-up
    best = {name: [np.inf, np.inf] for name in SETTINGS}
    for _ in range(args.repeats):
        for name in SETTINGS:
            forward_s, heatmap_s, *_ = run(name)
            best[name] = [min(best[name][0], forward_s), min(best[name][1], heatmap_s)]
    base = outputs["unfolded"]
    print_json(
        {
            "model": clf.model,
            "recipe": None if args.model else RECOMMENDED,
            "size": clf.image_size,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "load_average_start": round(load, 2),
            "forward_inputs": len(inputs),
            **{
                name: {
                    "forward_s": round(b[0], 3),
                    "heatmap_s": round(b[1], 3),
                    "forward_speedup": round(best["unfolded"][0] / b[0], 2),
                    "heatmap_speedup": round(best["unfolded"][1] / b[1], 2),
                    "max_logit_difference": float(
                        (outputs[name][2] - base[2]).abs().max()
                    ),
                    "max_heatmap_difference": float(
                        np.abs(outputs[name][3] - base[3]).max()
                    ),
                }
                for name, b in best.items()
            },
        }
    )


if __name__ == "__main__":
    main(sys.argv[1:])
