"""Pool the frozen Lite0 feature map other ways: by the lung field, GeM, max.

    PYTHONPATH=. python benchmarks/experiments/lung_pooling.py \
        --cache DIR --pools gap lung lungmask inner5 gem:3 max [--seeds 0 1 2] \
        [--mixup 0.4]

The ``efficientnet_lite0_frozen`` recipe averages the backbone's last
feature map (7 x 7 at 224 px) over the whole image before its linear head,
so the head can read the neck, arms and corners as easily as the lungs.
Here the map is averaged with weights instead: ``gap`` (even weights, the
recipe as it is), ``lung`` (``cxrkit.explain.lung_field_prior`` averaged to
7 x 7), ``lungmask`` (its cells at >= 0.5) or ``inner5`` (the 5 x 5 cells
inside the border ring); or not averaged: ``gem:P``, the generalised mean
``(mean x^P)^(1/P)`` (Radenovic et al. 2018), or ``max``. ``--mixup A``
trains the head with the recipe's feature mixup. The head is trained as in
``site_shift_features.py`` on the same patient split, the threshold chosen
by the ``robust_shift`` rule on the threshold split (as acquired and under
the 9 synthetic shifts); the external site is only scored. The feature maps
(float16) are cached in ``--cache``.

Prints one JSON line per pooling and seed (as ``site_shift_features.py``)
and saves each run's scores as ``lung_pooling_{POOL}_s{SEED}.npz`` in
``--cache`` for ``paired_auc.py``.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from cxrkit import load_images
from cxrkit.explain import lung_field_prior
from cxrkit.images import ImageDataset
from cxrkit.validation import SHIFTS, shift_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import EXTERNAL, SHARED, print_json
from site_shift_features import (
    SIZE,
    _backbone,
    head_scores,
    site_split,
    threshold_and_scores,
    train_head,
)

GRID = SIZE // 32


def pool_weights(name: str) -> np.ndarray:
    """Weights over the ``GRID x GRID`` feature map, summing to 1."""
    prior = torch.from_numpy(lung_field_prior(SIZE))[None, None]
    field = F.adaptive_avg_pool2d(prior, GRID)[0, 0].numpy()
    if name == "gap":
        w = np.ones_like(field)
    elif name == "lung":
        w = field
    elif name == "lungmask":
        w = (field >= 0.5).astype(np.float32)
    elif name == "inner5":
        w = np.zeros_like(field)
        w[1:-1, 1:-1] = 1
    else:
        raise ValueError(f"unknown pooling {name!r}: gap, lung, lungmask or inner5")
    return (w / w.sum()).astype(np.float32)


def cached_maps(cache: Path, key: str, model: torch.nn.Module, make) -> np.ndarray:
    path = cache / f"maps_{key}.npy"
    if not path.exists():
        with torch.no_grad():
            maps = [
                model.forward_features(x).half().numpy()
                for x, _ in DataLoader(ImageDataset(make()), batch_size=64)
            ]
        np.save(path, np.concatenate(maps))
    return np.load(path, mmap_mode="r")


def gem_power(name: str) -> float | None:
    """The power of a generalised-mean pooling ``gem:P`` (``max``: infinite)."""
    if name == "max":
        return np.inf
    if name.startswith("gem:"):
        power = float(name.partition(":")[2])
        if not power > 0:
            raise ValueError(f"{name}: the power of gem:P must be positive")
        return power
    return None


def pooled(maps: np.ndarray, name: str) -> np.ndarray:
    """Feature vectors: the maps averaged with ``pool_weights(name)``, or their
    generalised mean ``(mean x^p)^(1/p)`` (Radenovic et al. 2018; the maps
    are ReLU6 outputs, >= 0), or their maximum."""
    power = gem_power(name)
    weights = None if power is not None else pool_weights(name)
    out = np.empty(maps.shape[:2], np.float32)
    for i in range(0, len(maps), 512):
        chunk = np.asarray(maps[i : i + 512], dtype=np.float32)
        if power is None:
            out[i : i + 512] = np.einsum("nchw,hw->nc", chunk, weights)
        elif np.isinf(power):
            out[i : i + 512] = chunk.max(axis=(2, 3))
        else:
            mean = (np.clip(chunk, 1e-6, None) ** power).mean(axis=(2, 3))
            out[i : i + 512] = mean ** (1 / power)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--pools", nargs="+", default=["gap", "lung"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train", default=str(SHARED / "chest_xray" / "train"))
    parser.add_argument("--test", default=str(EXTERNAL))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--mixup", type=float, default=0.0, help="the head's mixup (the recipe: 0.4)"
    )
    args = parser.parse_args(argv)
    for name in args.pools:
        if gem_power(name) is None:
            pool_weights(name)  # unknown names fail before hours of features
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    X, y, X_test, y_test, fit_idx, tune_idx = site_split(args.train, args.test)
    model = _backbone().eval()
    train_images, _ = load_images(X, SIZE)
    maps_train = cached_maps(cache, "train", model, lambda: train_images)
    maps_test = cached_maps(cache, "test", model, lambda: load_images(X_test, SIZE)[0])
    maps_tune = {
        shift: cached_maps(
            cache,
            f"tune_{shift}",
            model,
            lambda s=shift: shift_images(train_images[tune_idx], s),
        )
        for shift in SHIFTS
    }

    for name in args.pools:
        f_train = pooled(maps_train, name)
        f_test = pooled(maps_test, name)
        f_tune = {"none": f_train[tune_idx]}
        f_tune.update({s: pooled(m, name) for s, m in maps_tune.items()})
        for seed in args.seeds:
            head = train_head(f_train[fit_idx], y[fit_idx], seed, mixup=args.mixup)
            probas, p_test = head_scores(head, f_tune, f_test)
            t, figures = threshold_and_scores(y[tune_idx], probas, y_test, p_test)
            print_json({"pool": name, "mixup": args.mixup, "seed": seed, **figures})
            tag = name.replace(":", "") + (f"_mix{args.mixup:g}" if args.mixup else "")
            np.savez(
                cache / f"lung_pooling_{tag}_s{seed}.npz",
                X_test=X_test.astype(str),
                y_test=y_test,
                proba_test=np.column_stack([1 - p_test, p_test]),
                threshold=t,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
