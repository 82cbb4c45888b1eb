"""Training and prediction images/s on one device: cxrkit vs a plain AMP loop; JSON.

    python benchmarks/timings/gpu.py --data chest_xray/train  # a GPU
    python benchmarks/timings/gpu.py --data chest_xray/train --device cpu \
        --n 64 --epochs 1

Both train ``resnet18`` from scratch at 224 px (AdamW, batch 64, cross-entropy,
the same random affine and brightness/contrast augmentation, mixed precision
``--precision``) for ``--epochs`` epochs on the same images, then predict them.

* cxrkit: ``PneumoniaClassifier(...).fit(X, y)`` and ``predict_proba(X)``:
  images decoded once (epoch 1 includes it; the cache is cleared first), the
  ``uint8`` cache on the GPU, augmentation there on whole batches,
  channels-last, cuDNN autotuning.
* plain: the loop of a typical tutorial: torchvision ``ImageFolder`` +
  ``DataLoader`` (``--workers`` processes decoding and augmenting each image,
  pinned memory) + ``torch.autocast`` (and a ``GradScaler`` for float16).

Peak GPU memory is ``torch.cuda.max_memory_allocated`` per phase (null on a
CPU). Training images/s are over epochs 2 and later (all epochs when there is
one); prediction images/s are the best of two passes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import v2

from cxrkit import PneumoniaClassifier, clear_image_cache
from cxrkit.images import MEAN, STD
from cxrkit.models import build_model
from cxrkit.training import AUGMENT_PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json

LR = 1e-3
AUTOCAST = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def _reset_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _images_per_s(n: int, seconds: list[float]) -> float:
    steady = seconds[1:] or seconds
    return round(n * len(steady) / sum(steady), 1)


def plain_transform(size: int, train: bool) -> v2.Compose:
    p = AUGMENT_PRESETS["default"]
    augment = [
        v2.RandomAffine(
            degrees=p["degrees"],
            translate=(p["translate"], p["translate"]),
            scale=p["scale"],
            interpolation=v2.InterpolationMode.BILINEAR,
        ),
        v2.ColorJitter(brightness=p["brightness"], contrast=p["contrast"]),
    ]
    return v2.Compose(
        [v2.Grayscale(1), v2.Resize((size, size))]
        + (augment if train else [])
        + [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([MEAN], [STD]),
        ]
    )


def plain_loader(root: Path, indices: np.ndarray, args, train: bool) -> DataLoader:
    folder = datasets.ImageFolder(
        str(root), transform=plain_transform(args.image_size, train)
    )
    return DataLoader(
        Subset(folder, indices.tolist()),
        batch_size=args.batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=args.workers,
        pin_memory=args.device.startswith("cuda"),
        persistent_workers=args.workers > 0,
    )


def plain_run(root: Path, indices: np.ndarray, args) -> dict:
    """A tutorial AMP loop: ImageFolder + DataLoader + autocast (+ GradScaler)."""
    device, dtype = args.device, AUTOCAST[args.precision]
    device_type = torch.device(device).type
    amp = dtype is not None and (device_type == "cuda" or dtype == torch.bfloat16)
    torch.manual_seed(0)
    model = build_model("resnet18", 2, image_size=args.image_size).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    scaler = torch.amp.GradScaler(device_type, enabled=amp and dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    loader = plain_loader(root, indices, args, train=True)
    _reset_memory(device)
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.train()
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=dtype, enabled=amp):
                loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    train_memory = _peak_mb(device)

    loader = plain_loader(root, indices, args, train=False)
    model.eval()
    _reset_memory(device)
    predict_seconds = []
    for _ in range(2):
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast(device_type, dtype=dtype, enabled=amp):
            for x, _ in loader:
                model(x.to(device, non_blocking=True)).float().softmax(1).cpu()
        _sync(device)
        predict_seconds.append(time.perf_counter() - start)
    return {
        "train_seconds_per_epoch": [round(s, 2) for s in seconds],
        "train_images_per_s": _images_per_s(len(loader) * args.batch_size, seconds),
        "predict_images_per_s": round(len(indices) / min(predict_seconds), 1),
        "peak_gpu_memory_mb": {"train": train_memory, "predict": _peak_mb(device)},
    }


def cxrkit_run(X: np.ndarray, y: np.ndarray, args) -> dict:
    device = args.device
    clf = PneumoniaClassifier(
        model="resnet18",
        image_size=args.image_size,
        augment="default",
        lr=LR,
        weight_decay=1e-2,  # torch's AdamW default, as in the plain loop
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        lr_schedule=None,
        validation_fraction=None,
        device=device,
        precision=args.precision,
        random_state=0,
    )
    clear_image_cache()  # an honest first epoch: decode everything
    _reset_memory(device)
    start = time.perf_counter()
    clf.fit(X, y)
    _sync(device)
    total = time.perf_counter() - start
    seconds = [float(e["dur"]) for e in clf.history_]
    train_memory = _peak_mb(device)

    _reset_memory(device)
    predict_seconds = []
    for _ in range(2):  # images come from the cache filled by fit
        start = time.perf_counter()
        clf.predict_proba(X)
        _sync(device)
        predict_seconds.append(time.perf_counter() - start)
    n_train = len(X) - len(X) % args.batch_size if len(X) > args.batch_size else len(X)
    return {
        "train_seconds_per_epoch": [round(s, 2) for s in seconds],
        "decode_and_setup_seconds": round(total - sum(seconds), 2),
        "train_images_per_s": _images_per_s(n_train, seconds),
        "predict_images_per_s": round(len(X) / min(predict_seconds), 1),
        "peak_gpu_memory_mb": {"train": train_memory, "predict": _peak_mb(device)},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="class-per-folder images (Kermany train)",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--n", type=int, default=0, help="images used (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=list(AUTOCAST), default="bf16")
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="plain loop"
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available; pass --device cpu")

    folder = datasets.ImageFolder(str(args.data))
    rng = np.random.default_rng(0)
    n = len(folder) if args.n <= 0 else min(args.n, len(folder))
    indices = np.sort(rng.choice(len(folder), n, replace=False))
    X = np.array([folder.samples[i][0] for i in indices], dtype=object)
    y = np.array([folder.classes[folder.samples[i][1]] for i in indices])

    ours = cxrkit_run(X, y, args)
    plain = plain_run(args.data, indices, args)
    name = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else "cpu"
    )
    result = {
        "device": name,
        "torch": torch.__version__,
        "data": str(args.data),
        "n_images": n,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "precision": args.precision,
        "plain_workers": args.workers,
        "cpu_threads": torch.get_num_threads(),
        "cxrkit": ours,
        "plain": plain,
        "speedup_train": round(
            ours["train_images_per_s"] / plain["train_images_per_s"], 2
        ),
        "speedup_predict": round(
            ours["predict_images_per_s"] / plain["predict_images_per_s"], 2
        ),
    }
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
