"""Time cxrkit's grad_cam (or hires_cam) against the grad-cam package.

Same resnet18 weights, same 64 images of 224 px (from ../shared/data, or
synthetic when absent), the predicted class, one batch of 64. Prints one JSON
line: both times (best of ``--repeats``), the ratio cxrkit / grad-cam (goal
<= 1.0) and the correlation of the two sets of heatmaps (goal >= 0.99).

``--method hires_cam`` compares cxrkit's ``hires_cam`` with the package's
``HiResCAM`` the same way.

The grad-cam package is only needed here, not by cxrkit::

    pip install grad-cam
    python benchmarks/timings/explain.py [--method hires_cam]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cxrkit import PneumoniaClassifier, load_image_folder, load_images
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.explain import grad_cam, hires_cam
from cxrkit.images import ImageDataset
from cxrkit.models import target_layer

try:
    from pytorch_grad_cam import GradCAM, HiResCAM
except ImportError as exc:  # pragma: no cover
    raise SystemExit(
        "this benchmark compares against the grad-cam package: pip install grad-cam"
    ) from exc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import SHARED

DATA = SHARED / "chest_xray"

parser = argparse.ArgumentParser()
parser.add_argument("--n-images", type=int, default=64)
parser.add_argument("--size", type=int, default=224)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--method", choices=["grad_cam", "hires_cam"], default="grad_cam")
args = parser.parse_args()
warnings.simplefilter("ignore")
torch.manual_seed(0)

if (DATA / "train").is_dir():
    paths, _ = load_image_folder(DATA / "train")
    chosen = np.random.default_rng(0).choice(len(paths), args.n_images, replace=False)
    X = load_images(paths[chosen], args.size)[0]
    source = "chest_xray/train"
else:
    X = make_synthetic_cxr(args.n_images, image_size=args.size, random_state=0)[0]
    source = "synthetic"
y = np.array(["NORMAL", "PNEUMONIA"] * (len(X) // 2) + ["NORMAL"] * (len(X) % 2))
# one short epoch on these images: the weights only need to be the same for both
clf = PneumoniaClassifier(
    model="resnet18",
    image_size=args.size,
    max_epochs=1,
    batch_size=16,
    validation_fraction=None,
    lr_schedule=None,
    random_state=0,
).fit(X[:16], y[:16])
module = clf.net_.module_.eval()
inputs = torch.stack([ImageDataset(X)[i][0] for i in range(len(X))])
ours_method, theirs_class = {
    "grad_cam": (grad_cam, GradCAM),
    "hires_cam": (hires_cam, HiResCAM),
}[args.method]
reference = theirs_class(model=module, target_layers=[target_layer(module, "resnet18")])


def run_cxrkit() -> np.ndarray:
    return ours_method(clf, X, batch_size=len(X))


def run_reference() -> np.ndarray:
    return reference(input_tensor=inputs, targets=None)


times: dict[str, list[float]] = {"cxrkit": [], "grad_cam_package": []}
for _ in range(args.repeats):  # alternate, so load changes hit both alike
    for name, fn in (("cxrkit", run_cxrkit), ("grad_cam_package", run_reference)):
        start = time.perf_counter()
        out = fn()
        times[name].append(time.perf_counter() - start)
        if name == "cxrkit":
            ours = out
        else:
            theirs = out
corr = [
    np.corrcoef(a.ravel(), b.ravel())[0, 1]
    for a, b in zip(ours, theirs)
    if a.std() > 0 and b.std() > 0
]
best = {k: min(v) for k, v in times.items()}
print(
    json.dumps(
        {
            "benchmark": f"{args.method} resnet18",
            "images": len(X),
            "size": args.size,
            "source": source,
            "threads": torch.get_num_threads(),
            "cxrkit_s": round(best["cxrkit"], 3),
            "grad_cam_package_s": round(best["grad_cam_package"], 3),
            "ratio": round(best["cxrkit"] / best["grad_cam_package"], 3),
            "correlation_mean": round(float(np.mean(corr)), 5),
            "correlation_min": round(float(np.min(corr)), 5),
            "compared_maps": len(corr),
        }
    )
)
