"""Which image statistic tells the second site's NORMAL films from training's.

    PYTHONPATH=. python benchmarks/experiments/site_shift_traits.py \
        --train DIR --test DIR [--runs RUN.npz ...]

For training NORMAL / PNEUMONIA and external NORMAL / PNEUMONIA (224 px
copies), prints per statistic: the median of each group, the ROC AUC of the
statistic for external vs training NORMAL and for training PNEUMONIA vs
NORMAL (0.5: no difference), and, given saved runs (``recipe.py --save``
``.npz``), the Spearman correlation of the statistic with the runs' mean
logit within external NORMAL. Statistics: ``cxrkit.validation``'s
acquisition traits, intensity spread and percentiles, Laplacian variance,
spectral energy fractions, the fine-detail residual (image minus its
Gaussian blur, sigma 1 px) in the central half, lung-field percentiles and
contrast, and the JPEG file size. Nothing is fitted.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from cxrkit import load_image_folder, load_images
from cxrkit.validation import TRAITS, acquisition_traits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json


def statistics(paths: np.ndarray) -> dict[str, np.ndarray]:
    images, _ = load_images(paths, 224)
    f = images.astype(np.float32)
    n = len(f)
    traits = acquisition_traits(images)
    out = {name: traits[:, i] for i, name in enumerate(TRAITS)}
    out["std"] = f.std(axis=(1, 2))
    out["p5"], out["p50"], out["p95"] = np.percentile(
        f.reshape(n, -1), [5, 50, 95], axis=1
    )
    out["log_laplacian_var"] = np.log([ndimage.laplace(im).var() for im in f])
    power = np.abs(np.fft.fft2(f - f.mean(axis=(1, 2), keepdims=True))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(224), np.fft.fftfreq(224), indexing="ij")
    radius = np.hypot(fy, fx)
    total = power.sum(axis=(1, 2))
    out["log_energy_above_0.25"] = np.log(power[:, radius > 0.25].sum(1) / total)
    out["log_energy_above_0.10"] = np.log(power[:, radius > 0.10].sum(1) / total)
    residual = np.stack([im - ndimage.gaussian_filter(im, 1.0) for im in f])
    out["fine_detail_std_centre"] = residual[:, 56:168, 56:168].std(axis=(1, 2))
    lungs = f[:, 40:180, 30:194].reshape(n, -1)
    out["lung_p10"], out["lung_p90"] = np.percentile(lungs, [10, 90], axis=1)
    out["lung_contrast"] = out["lung_p90"] - out["lung_p10"]
    out["file_kb"] = np.array([os.path.getsize(p) / 1024 for p in paths])
    return out


def mean_logit(runs: list[str], paths: np.ndarray) -> np.ndarray:
    logits = []
    for path in runs:
        run = np.load(path)
        proba = np.clip(run["proba_test"][:, 1], 1e-6, 1 - 1e-6)
        by_path = dict(zip(run["X_test"].astype(str), np.log(proba / (1 - proba))))
        logits.append([by_path[p] for p in paths.astype(str)])
    return np.mean(logits, axis=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--runs", nargs="*", default=[])
    args = parser.parse_args(argv)
    X, y = load_image_folder(args.train)
    X_test, y_test = load_image_folder(args.test)
    train, test = statistics(X), statistics(X_test)
    train_normal, test_normal = y == "NORMAL", y_test == "NORMAL"
    logit = mean_logit(args.runs, X_test) if args.runs else None
    site = np.r_[np.zeros(train_normal.sum()), np.ones(test_normal.sum())]
    for name in train:
        a, b = train[name], test[name]
        if np.ptp(a) == 0:
            continue
        row = {
            "statistic": name,
            "median": {
                "train_normal": round(float(np.median(a[train_normal])), 3),
                "train_pneumonia": round(float(np.median(a[~train_normal])), 3),
                "external_normal": round(float(np.median(b[test_normal])), 3),
                "external_pneumonia": round(float(np.median(b[~test_normal])), 3),
            },
            "auc_external_vs_train_normal": round(
                roc_auc_score(site, np.r_[a[train_normal], b[test_normal]]), 3
            ),
            "auc_train_pneumonia_vs_normal": round(roc_auc_score(~train_normal, a), 3),
        }
        if logit is not None and np.ptp(b[test_normal]) > 0:
            rho = spearmanr(b[test_normal], logit[test_normal]).statistic
            row["spearman_with_logit_external_normal"] = round(float(rho), 3)
        print_json(row)


if __name__ == "__main__":
    main(sys.argv[1:])
