"""The recipes of five reference projects, in cxrkit, on a patient-grouped holdout.

    python examples/reference_recipes.py [--n-train 1200] [--epochs 3]

Trains each recipe of ``cxrkit.recipes.RECIPES`` (except ``"cpu"``) from
scratch on a patient-grouped subset of ``../shared/data/chest_xray/train``,
scores it on a patient-grouped holdout (10%, no patient in both), prints one
JSON line per recipe and saves ``reference_recipes.png`` in ``--out``
(default ``out/``; ``--out docs/images`` refreshes the guide's copy).
On 2 CPU cores the full recipes (10 epochs, 5,216 images, 224 px) would take
hours, so by default each trains for ``--epochs`` epochs on ``--n-train``
images, and VGG16 at 96 px: the figures are a cheap comparison, not the
projects' results. For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.metrics import recall_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

# --8<-- [start:setup]
from cxrkit import load_image_folder, patient_groups
from cxrkit.metrics import clinical_report
from cxrkit.recipes import make_classifier

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "data" / "chest_xray" / "train"

X, y = load_image_folder(TRAIN)
groups = patient_groups(X)
# 10% of the patients held out; the rest is for training
fit_idx, hold_idx = next(
    StratifiedGroupKFold(10, shuffle=True, random_state=0).split(X, y, groups)
)
# --8<-- [end:setup]

REFERENCE = {
    "simple_cnn_224": "Two-conv CNN, 224 px, 10 epochs Adam",
    "efficientnet_b0_frozen": "EfficientNet-B0 frozen feature extractor",
    "grayscale_cnn_plateau": "Grayscale CNN, BCE, LR on plateau",
    "vgg16_transfer": "VGG16 transfer",
    "cnn4": "4-block custom CNN",
    "simple_cnn_150": "150 px CNN",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--out", type=Path, default=Path("out"), help="figure folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(REFERENCE))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*no Kermany patient id.*")
    sub, _ = next(
        StratifiedGroupKFold(
            max(2, round(len(fit_idx) / args.n_train)), shuffle=True, random_state=1
        ).split(X[fit_idx], y[fit_idx], groups[fit_idx])
    )
    train_idx = np.random.default_rng(0).permutation(fit_idx[sub])[: args.n_train]
    X_hold, y_hold = X[hold_idx], (y[hold_idx] == "PNEUMONIA").astype(int)
    rows = []
    for name in args.only:
        # --8<-- [start:fit]
        clf = make_classifier(name, max_epochs=args.epochs, random_state=0)
        if name == "vgg16_transfer":
            clf.set_params(image_size=96)  # 224 px VGG16 takes hours per epoch on CPU
        start = time.perf_counter()
        clf.fit(X[train_idx], y[train_idx])
        proba = clf.predict_proba(X_hold)[:, 1]  # P(PNEUMONIA)
        # --8<-- [end:fit]
        pred = (proba >= 0.5).astype(int)
        row = {
            "recipe": name,
            "reference": REFERENCE[name],
            "n_train": len(train_idx),
            "n_holdout": len(hold_idx),
            "epochs": args.epochs,
            "image_size": clf.image_size,
            "roc_auc": round(roc_auc_score(y_hold, proba), 4),
            "roc_auc_ci95": _auc_interval(y_hold, proba),
            "sensitivity": round(recall_score(y_hold, pred), 4),
            "specificity": round(recall_score(y_hold, pred, pos_label=0), 4),
            "accuracy": round(float((pred == y_hold).mean()), 4),
            "fit_seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out / "reference_recipes.png")


def _auc_interval(y: np.ndarray, proba: np.ndarray) -> list[float]:
    """95% bootstrap interval of the ROC AUC (cxrkit.metrics.clinical_report)."""
    auc = clinical_report(y, proba, pos_label=1, classes=[0, 1], n_bootstrap=1000)
    e = auc.metrics["roc_auc"]
    return [round(e.low, 4), round(e.high, 4)]


def plot(rows: list[dict], path: Path) -> None:
    keys = ["roc_auc", "sensitivity", "specificity"]
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=90)
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        ax.bar(
            np.arange(len(rows)) + i * width,
            [r[key] for r in rows],
            width,
            label=key.replace("_", " "),
        )
    ax.set_xticks(np.arange(len(rows)) + width, [r["recipe"] for r in rows])
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("Reference recipes on a patient-grouped holdout (threshold 0.5)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    main()
