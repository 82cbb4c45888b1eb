"""How well a model's out-of-distribution flag separates other images from its own.

    python benchmarks/experiments/ood.py [--n-train 1200 --recipe cpu --seed 0] \
        [--save MODEL.cxr]
    python benchmarks/experiments/ood.py --model MODEL.cxr --split MODEL.cxr.split.json

The first form trains a small model: by default the ``"cpu"`` recipe
(ResNet-18 from scratch, 112 px, ``preprocess="equalize"``) for 4 epochs
(``--recipe`` another, ``--epochs`` other than the recipe's) on about
``--n-train`` images of ``../shared/data/chest_xray/train``; 400 more images
are drawn, and the patients of about a quarter of the drawn images are held
out (3 minutes on 2 CPU cores). ``fit`` fits the model's detector
(``ood_alarm_rate=0.05``). ``--save`` writes the model and, beside it, the
training and held-out paths (``.split.json``), which the second form reads
to score a saved model again.

Prints one JSON object: for the model's detector and for a kNN detector
(Sun et al. 2022, k=10) fitted on the same training images, the ROC AUC of
the score between ``nih_adult`` (599 adult NIH films) and
``chest_xray/external`` (a second paediatric site) and between ``nih_adult``
and the held-out patients, and the share flagged at the fitted threshold of:
external, held-out patients, NIH, photographs (scikit-learn's and
matplotlib's sample photographs and 9 random crops of each), transformed
held-out images (rotated 90 degrees, inverted, the top-left corner, upside
down), an X-ray shown inside a photograph, noise and flat images; and the
share of external flagged at a threshold taken from the training images'
own scores instead (``in_sample_threshold``: the 95th percentile of the
scores of the images the detector was fitted on). For research and
education; not a medical device.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit

from cxrkit import PneumoniaClassifier, load_image_folder, load_images, patient_groups
from cxrkit.ood import fit_ood_detector
from cxrkit.recipes import make_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import SHARED, print_json


def photographs() -> list[np.ndarray]:
    """The sample photographs that scikit-learn and matplotlib install."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    found = list(load_sample_images().images)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        found.append(np.asarray(Image.open(fh).convert("RGB")))
    return found


def photo_crops(photos: list[np.ndarray], rng: np.random.Generator) -> list:
    """Each photograph, and 9 random crops of 30-80% of its sides."""
    out = []
    for photo in photos:
        out.append(photo)
        h, w = photo.shape[:2]
        for _ in range(9):
            s = rng.uniform(0.3, 0.8)
            ch, cw = int(h * s), int(w * s)
            y0, x0 = rng.integers(0, h - ch), rng.integers(0, w - cw)
            out.append(photo[y0 : y0 + ch, x0 : x0 + cw])
    return out


def other_images(held_out: np.ndarray, seed: int) -> dict[str, list]:
    """Images that are not paediatric frontal chest films, by kind."""
    rng = np.random.default_rng(seed)
    photos = photographs()
    films = load_images(held_out[:100], 224)[0]
    in_photo = []
    for i, film in enumerate(films[:30]):
        grey = Image.fromarray(photos[i % len(photos)]).convert("L")
        scene = np.array(grey.resize((320, 320)))
        scene[60:260, 60:260] = np.asarray(Image.fromarray(film).resize((200, 200)))
        in_photo.append(scene)
    return {
        "photographs": photo_crops(photos, rng),
        "rotated_90": [np.rot90(f) for f in films],
        "inverted": [255 - f for f in films],
        "corner": [f[:90, :90] for f in films],
        "upside_down": [f[::-1] for f in films],
        "xray_in_photograph": in_photo,
        "noise": [rng.integers(0, 256, (224, 224), dtype=np.uint8) for _ in range(10)],
        "flat": [np.full((224, 224), v, np.uint8) for v in (0, 60, 128, 200, 255)],
    }


def score(clf: PneumoniaClassifier, X) -> np.ndarray:
    """OOD scores of paths, or of a list of images of any sizes."""
    if isinstance(X, list):  # arrays of different shapes: one at a time
        X = np.stack(
            [load_images(np.asarray(a)[None], clf.image_size)[0][0] for a in X]
        )
    return clf.ood_score(X)


def summary(clf: PneumoniaClassifier, sets: dict, train: np.ndarray) -> dict:
    scores = {name: score(clf, X) for name, X in sets.items()}
    threshold = clf.ood_detector_.threshold_
    in_sample = float(np.quantile(score(clf, train), 0.95))

    def auc(inside: str) -> float:
        y = np.r_[np.zeros(len(scores[inside])), np.ones(len(scores["nih_adult"]))]
        return round(roc_auc_score(y, np.r_[scores[inside], scores["nih_adult"]]), 4)

    return {
        "method": clf.ood_detector_.method,
        "threshold": round(threshold, 4),
        "auc_nih_vs_external": auc("external"),
        "auc_nih_vs_held_out": auc("held_out_patients"),
        "flagged": {
            name: round(float(np.mean(s > threshold)), 4) for name, s in scores.items()
        },
        "in_sample_threshold": {
            "threshold": round(in_sample, 4),
            "external_flagged": round(
                float(np.mean(scores["external"] > in_sample)), 4
            ),
        },
        "n": {name: len(s) for name, s in scores.items()},
    }


def draw_split(
    X: np.ndarray, groups: np.ndarray, n_train: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """About ``n_train`` training images and the held-out rest of
    ``n_train + 400`` drawn, split by patient."""
    drawn = np.random.default_rng(seed).choice(len(X), n_train + 400, replace=False)
    share = n_train / len(drawn)  # of the patients
    split = GroupShuffleSplit(1, train_size=share, random_state=seed)
    fit_idx, held_idx = next(split.split(drawn, groups=groups[drawn]))
    return drawn[fit_idx], drawn[held_idx]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model file (default: train one)")
    parser.add_argument("--split", help="with --model: the .split.json of --save")
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument(
        "--recipe", default="cpu", help="the recipe to train (default: cpu)"
    )
    parser.add_argument(
        "--epochs", type=int, help="override the recipe's epochs (default: cpu: 4)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--save", help="write the trained model here (and its paths to SAVE.train.json)"
    )
    args = parser.parse_args()
    if args.model is not None and args.split is None:
        parser.error("--model needs --split (written by --save)")
    torch.set_num_threads(min(2, torch.get_num_threads()))

    start = time.perf_counter()
    if args.model is None:
        X, y = load_image_folder(SHARED / "chest_xray" / "train")
        fit_idx, held_idx = draw_split(X, patient_groups(X), args.n_train, args.seed)
        train, held_out = X[fit_idx], X[held_idx]
        epochs = args.epochs or (4 if args.recipe == "cpu" else None)
        extra = {} if epochs is None else {"max_epochs": epochs}
        clf = make_classifier(args.recipe, random_state=args.seed, **extra)
        clf.fit(train, y[fit_idx])
        if args.save:
            clf.save(args.save)
            split = {"train": train.tolist(), "held_out": held_out.tolist()}
            Path(args.save + ".split.json").write_text(json.dumps(split))
    else:
        clf = PneumoniaClassifier.load(args.model, device="cpu")
        split = json.loads(Path(args.split).read_text())
        train = np.array(split["train"], dtype=object)
        held_out = np.array(split["held_out"], dtype=object)
    fit_s = time.perf_counter() - start

    external, _ = load_image_folder(SHARED / "chest_xray" / "external")
    sets = {
        "external": external,
        "held_out_patients": held_out,
        "nih_adult": np.array(
            sorted(str(p) for p in (SHARED / "nih_adult" / "images").glob("*.png")),
            dtype=object,
        ),
        **other_images(held_out, args.seed),
    }
    knn = fit_ood_detector(copy.deepcopy(clf), train, method="knn")
    result = {
        "model": args.model or f"{args.recipe} recipe, {clf.max_epochs} epochs",
        "n_train": len(train),
        "fit_seconds": None if args.model else round(fit_s, 1),
        "detectors": [summary(clf, sets, train), summary(knn, sets, train)],
    }
    print_json(result, indent=1)


if __name__ == "__main__":
    main()
