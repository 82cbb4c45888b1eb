"""Frozen-backbone head training: features once vs every epoch; one JSON line.

    python benchmarks/timings/frozen.py [--data DIR] [--n 600] [--epochs 10]

``PneumoniaClassifier(freeze="backbone")`` runs the frozen backbone once per
fit and trains the linear head on the stored features (``cxrkit.models._features``).
The comparison is the same head trained the straightforward way: a skorch net
over the whole model, whose frozen backbone runs on every image in every
epoch. Images are decoded before timing starts, for both.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, GroupKFold
from skorch import NeuralNetClassifier
from torch import nn

from cxrkit import PneumoniaClassifier, load_image_folder, load_images, patient_groups
from cxrkit.images import ImageDataset
from cxrkit.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import SHARED, print_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "chest_xray" / "train")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--n", type=int, default=600, help="images used")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    X, y = load_image_folder(args.data)
    pick = np.random.default_rng(0).choice(len(X), min(args.n, len(X)), replace=False)
    X, y = X[pick], y[pick]
    images, _ = load_images(X, args.image_size)  # decoded (and cached) up front
    params = {
        "model": args.model,
        "freeze": "backbone",
        "image_size": args.image_size,
        "augment": None,
        "max_epochs": args.epochs,
        "lr_schedule": None,
        "validation_fraction": None,
        "random_state": 0,
    }

    start = time.perf_counter()
    cached = PneumoniaClassifier(**params).fit(X, y)
    cached_s = time.perf_counter() - start

    _, y_enc = np.unique(y, return_inverse=True)
    torch.manual_seed(0)
    net = NeuralNetClassifier(
        build_model(args.model, 2, image_size=args.image_size, freeze="backbone"),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.AdamW,
        optimizer__weight_decay=1e-4,
        lr=1e-3,
        max_epochs=args.epochs,
        batch_size=32,
        iterator_train__shuffle=True,
        train_split=None,
        verbose=0,
    )
    start = time.perf_counter()
    net.fit(ImageDataset(images, y_enc), y=None)
    every_epoch_s = time.perf_counter() - start

    search = GridSearchCV(
        PneumoniaClassifier(**params),
        {"lr": [1e-3, 3e-3], "weight_decay": [1e-4, 1e-2]},
        cv=GroupKFold(3),
        scoring="roc_auc",
    )
    start = time.perf_counter()
    search.fit(X, y, groups=patient_groups(X))
    search_s = time.perf_counter() - start

    result = {
        "model": args.model,
        "image_size": args.image_size,
        "n_images": len(X),
        "epochs": args.epochs,
        "fit_seconds_features_once": round(cached_s, 2),
        "fit_seconds_backbone_every_epoch": round(every_epoch_s, 2),
        "speedup": round(every_epoch_s / cached_s, 2),
        "grid_search_4x3_fits_seconds": round(search_s, 2),
        "grid_search_best_params": search.best_params_,
        "train_accuracy_features_once": round(float(cached.score(X, y)), 4),
        "threads": args.threads,
    }
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
