"""Label-free preprocessing against the second site's score shift.

    PYTHONPATH=. python benchmarks/experiments/site_shift_features.py \
        --variants none crop blur1 [--seeds 0 1 2] [--cache DIR]

For each deterministic preprocessing variant, applied alike to the training
images and to the external site's, the frozen ImageNet EfficientNet-Lite0
backbone of the ``efficientnet_lite0_frozen`` recipe computes features once
(cached in ``--cache`` per variant). A linear head is then trained on them
the way that recipe trains it (AdamW, lr 1e-3, weight decay 1e-4, cosine
schedule over 30 epochs, batch 32, balanced class weights), on the same
patient split as ``recipe.py`` (``ConfounderMatchedSplit``, split seed 0),
and the threshold is chosen on the held-out threshold split by the
``robust_shift`` rule (the split as acquired and under the 9 synthetic
shifts, each shift applied before the variant's preprocessing, as the
classifier would see it). Nothing is fitted, sampled or thresholded on the
external site: its images are only scored.

A variant name ``aug:NAME`` trains the head on the features of the training
images and of a copy of each degraded at random by the augmentation
``NAME`` of ``DEGRADATIONS`` (feature-level augmentation: the head cannot
rely on what that degradation changes); prediction uses the plain images.
``augn:NAME`` copies the NORMAL training images only (counter-examples to
"less fine detail means pneumonia", which points one way).
``--weight-decay`` changes the head's AdamW weight decay,
``--label-smoothing`` and ``--mixup`` its loss (mixup of the feature
vectors), ``--heads K`` averages K heads of different seeds (a seed
ensemble), and ``--min-specificity`` sets the rule's specificity floor.

Prints one JSON line per variant and seed: external ROC AUC, sensitivity
and specificity at the rule's threshold, specificity at the highest
threshold reaching sensitivity 0.95 on the external site (an oracle
figure, for diagnosis only), and the score quantiles of both sites.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from sklearn.metrics import roc_auc_score
from torch import nn

from cxrkit import load_image_folder, load_images, patient_groups
from cxrkit.images import PREPROCESSING, ImageDataset
from cxrkit.metrics import select_robust_threshold
from cxrkit.models import build_model
from cxrkit.models._features import backbone_features, headless
from cxrkit.validation import SHIFTS, ConfounderMatchedSplit, shift_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import EXTERNAL, SHARED, peak_rss_mb, print_json

SIZE = 224


def _per_image(fn: Callable[[Image.Image], Image.Image]) -> Callable:
    def apply(images: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(fn(Image.fromarray(im))) for im in images])

    return apply


def _down_up(side: int) -> Callable:
    return _per_image(
        lambda im: im.resize((side, side), Image.Resampling.BILINEAR).resize(
            im.size, Image.Resampling.BILINEAR
        )
    )


def _steps(name: str) -> Callable:
    def apply(images: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        for i, image in enumerate(images):
            out[i] = PREPROCESSING[name](image)
        return out

    return apply


#: Deterministic variants: name -> function of a uint8 batch (n, H, W).
VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda x: x,
    "crop": _steps("crop"),
    "equalize": _steps("equalize"),
    "stretch": _steps("stretch"),
    "clahe": _steps("clahe"),
    "blur1": _per_image(lambda im: im.filter(ImageFilter.GaussianBlur(1.0))),
    "blur2": _per_image(lambda im: im.filter(ImageFilter.GaussianBlur(2.0))),
    "down112": _down_up(112),
    # larger inputs for the fully convolutional backbone (upsampled 224 px)
    "up288": _per_image(lambda im: im.resize((288, 288), Image.Resampling.BICUBIC)),
    "up320": _per_image(lambda im: im.resize((320, 320), Image.Resampling.BICUBIC)),
    "down80": _down_up(80),
    "median3": _per_image(lambda im: im.filter(ImageFilter.MedianFilter(3))),
}


def _combo(name: str) -> Callable[[np.ndarray], np.ndarray]:
    fns = [VARIANTS[part] for part in name.split("+")]

    def apply(images: np.ndarray) -> np.ndarray:
        for fn in fns:
            images = fn(images)
        return images

    return apply


def _random_degrade(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image blurred, down-and-up scaled or contrast-changed at random."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        im = Image.fromarray(image)
        kind = rng.integers(4)
        if kind == 0:
            im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0))))
        elif kind == 1:
            side = int(rng.integers(64, 160))
            im = im.resize((side, side), Image.Resampling.BILINEAR).resize(
                im.size, Image.Resampling.BILINEAR
            )
        elif kind == 2:
            gamma = float(np.exp(rng.uniform(-0.4, 0.4)))
            lut = [round(255 * (v / 255) ** gamma) for v in range(256)]
            im = im.point(lut)
        else:
            band = float(rng.uniform(0.0, 0.12))
            w, h = im.size
            dx, dy = round(w * band), round(h * band)
            im = im.crop((dx, dy, w - dx, h - dy)).resize(
                (w, h), Image.Resampling.BILINEAR
            )
        out[i] = np.asarray(im)
    return out


def _random_acquisition(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image given noise, JPEG, a zoom in or out, or a blur, at random
    strength: the acquisition changes that raise NORMAL scores most."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        im = Image.fromarray(image)
        w, h = im.size
        kind = rng.integers(5)
        if kind == 0:
            noisy = image + rng.normal(0.0, rng.uniform(3.0, 10.0), image.shape)
            im = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        elif kind == 1:
            buffer = io.BytesIO()
            im.save(buffer, format="JPEG", quality=int(rng.integers(15, 60)))
            im = Image.open(buffer).convert("L")
        elif kind == 2:
            band = float(rng.uniform(0.03, 0.1))
            dx, dy = round(w * band), round(h * band)
            im = im.crop((dx, dy, w - dx, h - dy)).resize(
                (w, h), Image.Resampling.BILINEAR
            )
        elif kind == 3:
            scale = float(rng.uniform(0.8, 0.95))
            small = im.resize((round(w * scale), round(h * scale)))
            padded = np.pad(
                np.asarray(small),
                (((h - small.size[1]) // 2,) * 2, ((w - small.size[0]) // 2,) * 2),
                mode="edge",
            )
            im = Image.fromarray(padded).resize((w, h), Image.Resampling.BILINEAR)
        else:
            im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0))))
        out[i] = np.asarray(im)
    return out


#: Random degradations for ``aug:NAME`` (copies of every training image)
#: and ``augn:NAME`` (copies of the NORMAL training images only: the
#: shortcut points one way, so only that class gets the counter-examples).
DEGRADATIONS = {"mix": _random_degrade, "acq": _random_acquisition}


def _backbone() -> nn.Module:
    return build_model(
        "efficientnet_lite0",
        n_classes=2,
        image_size=SIZE,
        pretrained="imagenet",
        freeze="backbone",
    )


def features(model: nn.Module, images: np.ndarray) -> np.ndarray:
    with headless(model, "efficientnet_lite0") as (backbone, _):
        return backbone_features(backbone, ImageDataset(images), batch_size=64)


def cached_features(
    cache: Path, key: str, model: nn.Module, make: Callable[[], np.ndarray]
) -> np.ndarray:
    path = cache / f"{key}.npy"
    if path.exists():
        return np.load(path)
    f = features(model, make())
    np.save(path, f)
    return f


def site_split(
    train: str, test: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training and site images with 0/1 labels (1: PNEUMONIA), and the
    patient split of ``recipe.py`` (``ConfounderMatchedSplit``, seed 0) into
    the images the head is fitted on and the threshold split."""
    X, y_names = load_image_folder(train)
    X_test, y_test_names = load_image_folder(test)
    split = ConfounderMatchedSplit(holdout_fraction=0.1, n_bins=5, random_state=0)
    fit_idx, tune_idx = next(split.split(X, y_names, patient_groups(X)))
    y = (y_names == "PNEUMONIA").astype(int)
    y_test = (y_test_names == "PNEUMONIA").astype(int)
    return X, y, X_test, y_test, fit_idx, tune_idx


def train_head(
    f: np.ndarray,
    y: np.ndarray,
    seed: int,
    *,
    epochs: int = 30,
    weight_decay: float = 1e-4,
    label_smoothing: float = 0.0,
    mixup: float = 0.0,
) -> nn.Linear:
    """The recipe's head training, on feature vectors.

    ``mixup`` > 0 mixes each batch with a shuffled copy of itself, features
    and loss alike, by a weight drawn from Beta(mixup, mixup) (Zhang et al.
    2018; here on the frozen backbone's features, where image mixup would
    need the backbone at every epoch: Verma et al.'s manifold mixup at the
    last layer).
    """
    torch.manual_seed(seed)
    head = nn.Linear(f.shape[1], 2)
    counts = np.bincount(y, minlength=2)
    weight = torch.tensor(len(y) / (2 * counts), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    ft, yt = torch.from_numpy(f), torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    beta = torch.distributions.Beta(mixup, mixup) if mixup > 0 else None
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(32):
            opt.zero_grad()
            if beta is None:
                loss = loss_fn(head(ft[idx]), yt[idx])
            else:
                lam = float(beta.sample())
                other = idx[torch.randperm(len(idx), generator=gen)]
                out = head(lam * ft[idx] + (1 - lam) * ft[other])
                loss = lam * loss_fn(out, yt[idx]) + (1 - lam) * loss_fn(out, yt[other])
            loss.backward()
            opt.step()
        sched.step()
    return head


@torch.no_grad()
def proba(head: nn.Linear, f: np.ndarray) -> np.ndarray:
    return torch.softmax(head(torch.from_numpy(f)), dim=1)[:, 1].numpy()


def head_scores(
    head: nn.Linear, f_tune: dict, f_test: np.ndarray
) -> tuple[dict, np.ndarray]:
    """The head's ``(n, 2)`` probabilities of each version of the threshold
    split (what ``select_robust_threshold`` takes), and its PNEUMONIA
    probabilities of the site's images."""
    probas = {}
    for name, f in f_tune.items():
        p = proba(head, f)
        probas[name] = np.column_stack([1 - p, p])
    return probas, proba(head, f_test)


def spec_at_sens(y: np.ndarray, p: np.ndarray, target: float = 0.95) -> float:
    """Specificity at the highest threshold reaching sensitivity ``target``."""
    pos = np.sort(p[y == 1])[::-1]
    t = pos[int(np.ceil(target * len(pos))) - 1]
    return float((p[y == 0] < t).mean())


def quantiles(y: np.ndarray, p: np.ndarray) -> dict:
    return {
        "normal_q50_q75_q90": np.round(np.quantile(p[y == 0], [0.5, 0.75, 0.9]), 3),
        "pneumonia_q05_q10": np.round(np.quantile(p[y == 1], [0.05, 0.1]), 3),
    }


def threshold_and_scores(
    y_tune: np.ndarray,
    probas: dict,
    y_test: np.ndarray,
    p_test: np.ndarray,
    *,
    min_specificity: float = 0.85,
) -> tuple[float, dict]:
    """The ``robust_shift`` threshold chosen on the threshold split (as
    acquired and shifted, training images only), and the site's figures.
    ``min_specificity`` is the rule's specificity floor (the recipe's: 0.85;
    its sensitivity floor is 0.95)."""
    point = select_robust_threshold(
        y_tune, probas, min_sensitivity=0.95, min_specificity=min_specificity
    )
    t = float(point.threshold)
    pred = p_test >= t
    return t, {
        "roc_auc": round(roc_auc_score(y_test, p_test), 4),
        "threshold": round(t, 4),
        "sensitivity": round(float(pred[y_test == 1].mean()), 4),
        "specificity": round(float((~pred)[y_test == 0].mean()), 4),
        "spec_at_sens95_oracle": round(spec_at_sens(y_test, p_test), 4),
        "threshold_split_normal_q90_by_version": {
            k: round(float(np.quantile(v[y_tune == 0, 1], 0.9)), 3)
            for k, v in probas.items()
        },
        "threshold_split": {
            k: v.tolist() for k, v in quantiles(y_tune, probas["none"][:, 1]).items()
        },
        "external": {k: v.tolist() for k, v in quantiles(y_test, p_test).items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["none"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache", default="features_cache")
    parser.add_argument("--train", default=str(SHARED / "chest_xray" / "train"))
    parser.add_argument("--test", default=str(EXTERNAL))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=1e-4,
        help="AdamW weight decay of the head (the recipe's: 1e-4)",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        help="label smoothing of the head's loss (default 0, as the recipe had it "
        "when these figures were measured; the recipe now has none, and mixup 0.4)",
    )
    parser.add_argument(
        "--mixup",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="mix feature vectors and labels by Beta(ALPHA, ALPHA) (default: no "
        "mixup; the recipe's now: 0.4, by PneumoniaClassifier's mixup=)",
    )
    parser.add_argument(
        "--min-specificity",
        type=float,
        default=0.85,
        help="the threshold rule's specificity floor (the recipe's: 0.85)",
    )
    parser.add_argument(
        "--heads",
        type=int,
        default=1,
        metavar="K",
        help="average the probabilities of K heads, trained with seeds SEED, "
        "SEED + 1000, ... on the same features (a seed ensemble of heads; "
        "default 1)",
    )
    parser.add_argument(
        "--pneumonia-fraction",
        type=float,
        default=1.0,
        help="train the head on all NORMAL training images and this seeded "
        "fraction of the PNEUMONIA ones (a cheaper screen; compare variants "
        "at the same fraction)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    wd_tag = "" if args.weight_decay == 1e-4 else f"_wd{args.weight_decay:g}"
    if args.min_specificity != 0.85:
        wd_tag += f"_spec{args.min_specificity:g}"
    if args.label_smoothing:
        wd_tag += f"_ls{args.label_smoothing:g}"
    if args.mixup:
        wd_tag += f"_mixup{args.mixup:g}"
    if args.heads > 1:
        wd_tag += f"_heads{args.heads}"

    X, y, X_test, y_test, fit_idx, tune_idx = site_split(args.train, args.test)
    if args.pneumonia_fraction < 1:
        keep = (y[fit_idx] == 0) | (
            np.random.default_rng(0).random(len(fit_idx)) < args.pneumonia_fraction
        )
        fit_idx = fit_idx[keep]
    needed = np.union1d(fit_idx, tune_idx)
    sub = "" if args.pneumonia_fraction >= 1 else f"_p{args.pneumonia_fraction:g}"
    train_images, _ = load_images(X, SIZE)
    test_images, _ = load_images(X_test, SIZE)
    model = _backbone()

    for variant in args.variants:
        start = time.perf_counter()
        augment = None
        base = variant
        kind, _, rest = variant.partition(":")
        if kind in ("aug", "augn"):
            augment, _, base = rest.partition(":")
            base = base or "none"
        prep = _combo(base)
        if sub and not (cache / f"{base}_train.npy").exists():
            f_train = np.full((len(X), 1280), np.nan, np.float32)
            f_train[needed] = cached_features(
                cache,
                f"{base}_train{sub}",
                model,
                lambda prep=prep: prep(train_images[needed]),
            )
        else:
            f_train = cached_features(
                cache, f"{base}_train", model, lambda prep=prep: prep(train_images)
            )
        f_test = cached_features(
            cache, f"{base}_test", model, lambda prep=prep: prep(test_images)
        )
        f_tune = {"none": f_train[tune_idx]}
        for shift in SHIFTS:
            f_tune[shift] = cached_features(
                cache,
                f"{base}_tune_{shift}",
                model,
                lambda s=shift, prep=prep: prep(
                    shift_images(train_images[tune_idx], s)
                ),
            )
        f_fit, y_fit = f_train[fit_idx], y[fit_idx]
        if augment is not None:
            copied = fit_idx if kind == "aug" else fit_idx[y[fit_idx] == 0]
            tag = "" if kind == "aug" else "normal_"
            f_aug = cached_features(
                cache,
                f"{base}_aug_{tag}{augment}{sub}",
                model,
                lambda prep=prep, augment=augment, copied=copied: prep(
                    DEGRADATIONS[augment](
                        train_images[copied], np.random.default_rng(0)
                    )
                ),
            )
            f_fit, y_fit = np.r_[f_fit, f_aug], np.r_[y_fit, y[copied]]
        feature_seconds = time.perf_counter() - start
        for seed in args.seeds:
            scored = [
                head_scores(
                    train_head(
                        f_fit,
                        y_fit,
                        seed + 1000 * k,
                        weight_decay=args.weight_decay,
                        label_smoothing=args.label_smoothing,
                        mixup=args.mixup,
                    ),
                    f_tune,
                    f_test,
                )
                for k in range(args.heads)
            ]
            probas = {
                name: np.mean([s[0][name] for s in scored], axis=0) for name in f_tune
            }
            p_test = np.mean([s[1] for s in scored], axis=0)
            t, figures = threshold_and_scores(
                y[tune_idx],
                probas,
                y_test,
                p_test,
                min_specificity=args.min_specificity,
            )
            print_json(
                {
                    "variant": variant,
                    "seed": seed,
                    "weight_decay": args.weight_decay,
                    "label_smoothing": args.label_smoothing,
                    "mixup": args.mixup,
                    "heads": args.heads,
                    "min_specificity": args.min_specificity,
                    **figures,
                    "n_fit": len(y_fit),
                    "feature_seconds": round(feature_seconds, 1),
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                }
            )
            np.savez(
                cache / f"scores_{variant.replace(':', '_')}{sub}{wd_tag}_s{seed}.npz",
                X_test=X_test.astype(str),
                y_test=y_test,
                proba_test=p_test,
                proba_threshold=probas["none"][:, 1],
                y_threshold=y[tune_idx],
                threshold=t,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
