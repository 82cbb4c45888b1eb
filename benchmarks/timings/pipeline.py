"""Seconds per epoch: cxrkit vs a plain ImageFolder + DataLoader loop; one JSON line.

    python benchmarks/timings/pipeline.py \
        [--data ../shared/data/chest_xray_fullres/train]
    python benchmarks/timings/pipeline.py --small  # the same images' 224 px copies

Both train the same small model (``simple_cnn``, 128 px by default, AdamW, batch 32,
no augmentation) for 3 epochs on the same images, on the same threads. The
plain loop decodes and resizes every image in every epoch, as a torchvision
``ImageFolder`` does; cxrkit decodes each image once (its first epoch
includes that decoding: the image cache is cleared before it) and serves
later epochs from memory.

``cache_only_ceiling`` is the plain loop's epoch divided by that epoch less
its decoding (a pass over its ``DataLoader`` without the model,
``plain_decode_seconds_per_epoch``): the most that caching the decoded
images can gain while the training step itself costs the same. A speed-up
above it comes from cxrkit's training step being faster than the plain
loop's (cxrkit trains channels-last with a fused AdamW; which of the two
gains how much is not separated here).

Then both run again after ``cxrkit.training.reuse_large_buffers()``
(off by default; the ``cxrkit`` command line calls it when
``CXRKIT_REUSE_BUFFERS=1``), in the opposite order (cxrkit first), under
``"reuse_large_buffers"``:
``speedup_vs_plain_as_written`` compares cxrkit with it against the first
plain loop (glibc's default), ``speedup_both_reusing`` against the plain
loop with it too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from cxrkit import PneumoniaClassifier, clear_image_cache, load_image_folder
from cxrkit.images import MEAN, STD
from cxrkit.models import build_model
from cxrkit.training import reuse_large_buffers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import SHARED, print_json

EPOCHS, BATCH = 3, 32


def small_copies(fullres: Path) -> Path:
    """A folder of links to the 224 px copies of the images in ``fullres``."""
    root = Path(tempfile.mkdtemp(prefix="cxrkit_small_"))
    for image in sorted(fullres.rglob("*.jp*g")):
        small = SHARED / "chest_xray" / "train" / image.parent.name / image.name
        (root / image.parent.name).mkdir(exist_ok=True)
        (root / image.parent.name / image.name).symlink_to(small)
    return root


def plain_loop(root: Path, workers: int, size: int) -> tuple[list[float], float]:
    torch.manual_seed(0)
    tf = transforms.Compose(
        [
            transforms.Grayscale(1),
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize([MEAN], [STD]),
        ]
    )
    loader = DataLoader(
        datasets.ImageFolder(str(root), transform=tf),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
    )
    # one pass without the model: what decoding and resizing alone cost
    start = time.perf_counter()
    for _ in loader:
        pass
    decode = time.perf_counter() - start
    model = build_model("simple_cnn", 2, image_size=size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(EPOCHS):
        start = time.perf_counter()
        model.train()
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        seconds.append(time.perf_counter() - start)
    return seconds, decode


def cxrkit_fit(root: Path, size: int) -> list[float]:
    X, y = load_image_folder(root)
    clf = PneumoniaClassifier(
        model="simple_cnn",
        image_size=size,
        augment=None,
        lr_schedule=None,
        batch_size=BATCH,
        max_epochs=EPOCHS,
        validation_fraction=None,
        random_state=0,
    )
    clear_image_cache()  # an honest first epoch: decode everything
    start = time.perf_counter()
    clf.fit(X, y)
    total = time.perf_counter() - start
    seconds = [float(e["dur"]) for e in clf.history_]
    seconds[0] += total - sum(seconds)  # decoding and set-up count as epoch 1
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "chest_xray_fullres")
    parser.add_argument("--small", action="store_true", help="use the 224 px copies")
    parser.add_argument("--workers", type=int, default=0, help="plain loop workers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = args.data
    if not any(p.is_dir() and p.name == "NORMAL" for p in root.iterdir()):
        root = root / "train"  # chest_xray_fullres keeps its images in train/
    if args.small:
        root = small_copies(root)
    plain, decode = plain_loop(root, args.workers, args.image_size)
    ours = cxrkit_fit(root, args.image_size)
    reuse_applied = reuse_large_buffers()
    ours_reuse = cxrkit_fit(root, args.image_size)
    plain_reuse, _ = plain_loop(root, args.workers, args.image_size)
    result = {
        "data": str(args.data) + (" (224 px copies)" if args.small else ""),
        "n_images": sum(1 for p in root.rglob("*") if p.is_file() or p.is_symlink()),
        "plain_seconds_per_epoch": [round(s, 2) for s in plain],
        "cxrkit_seconds_per_epoch": [round(s, 2) for s in ours],
        "speedup_per_epoch": [round(p / c, 2) for p, c in zip(plain, ours)],
        "speedup_epochs_2_on": round(sum(plain[1:]) / sum(ours[1:]), 2),
        "speedup_all_epochs": round(sum(plain) / sum(ours), 2),
        # the plain loop's decoding alone, and the most a cache alone can
        # gain over it: its epoch / (its epoch - decoding)
        "plain_decode_seconds_per_epoch": round(decode, 2),
        "cache_only_ceiling": round(
            sum(plain[1:]) / max(sum(plain[1:]) - decode * (EPOCHS - 1), 1e-9), 2
        ),
        "reuse_large_buffers": {
            "applied": reuse_applied,
            "plain_seconds_per_epoch": [round(s, 2) for s in plain_reuse],
            "cxrkit_seconds_per_epoch": [round(s, 2) for s in ours_reuse],
            "speedup_vs_plain_as_written": round(
                sum(plain[1:]) / sum(ours_reuse[1:]), 2
            ),
            "speedup_both_reusing": round(
                sum(plain_reuse[1:]) / sum(ours_reuse[1:]), 2
            ),
        },
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "image_size": args.image_size,
        "threads": args.threads,
        "plain_workers": args.workers,
    }
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
