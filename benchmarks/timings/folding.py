"""What folding, padding in the conv and crops buy the recipe's heatmap.

    python benchmarks/timings/folding.py [--model FILE.cxr] [--repeats 5]

The recommended recipe's model (EfficientNet-Lite0 at 224 px, timm's
``Conv2dSame`` and ``BatchNormAct2d`` layers; fitted for one epoch on 8
synthetic images unless ``--model`` names a saved one: the timing does not
depend on the weights) runs ``cxrkit.explain.adaptive_occlusion`` on one
image and a forward pass of 41 inputs (one of its passes) in five ways,
each adding one change to the one before:

* ``unfolded``: the model as trained (what cxrkit ran before it could fold
  timm's layers), every patch through the whole network;
* ``folded``: batch norm folded into the convs, activations as they were;
* ``folded_inplace``: the same with the activations overwriting the folded
  convs' outputs;
* ``same_in_conv``: the folded ``Conv2dSame`` layers pad inside the
  convolution instead of copying their input with ``F.pad``;
* ``crops``: each patch's first layers run on a crop around it (what cxrkit
  runs now; the forward pass of 41 whole inputs is that of
  ``same_in_conv``).

Calls alternate between the settings, best of ``--repeats`` after a warm-up,
so that a change of the machine's load hits all alike. Prints one JSON line:
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
from timm.layers import conv2d_same

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.explain import _incremental, adaptive_occlusion
from cxrkit.models import _inference_model
from cxrkit.recipes import RECOMMENDED, make_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json


def _padding_by_copy(self, x):  # timm's Conv2dSame.forward
    return conv2d_same(
        x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups
    )


#: what each setting leaves out, as patches of cxrkit (which has no switch
#: for them: it always runs the last setting)
LEFT_OUT = {
    "unfolded": lambda: mock.patch.object(
        _inference_model, "_conv_norm_pairs", lambda model: []
    ),
    "inplace": lambda: mock.patch.object(_inference_model, "_INPLACE_SAFE", ()),
    "same_in_conv": lambda: mock.patch.object(
        _inference_model._SameConv, "forward", _padding_by_copy
    ),
    "crops": lambda: mock.patch.object(
        _incremental, "_efficientnet_split", lambda model: None
    ),
}
SETTINGS = {
    "unfolded": ["unfolded", "crops"],
    "folded": ["inplace", "same_in_conv", "crops"],
    "folded_inplace": ["same_in_conv", "crops"],
    "same_in_conv": ["crops"],
    "crops": [],
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
        with contextlib.ExitStack() as stack, torch.no_grad():
            for left_out in SETTINGS[setting]:
                stack.enter_context(LEFT_OUT[left_out]())
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
