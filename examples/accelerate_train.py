"""Train on several GPUs with Hugging Face Accelerate (``accelerator=``).

Usage::

    pip install "cxrkit[accelerate]"
    # one process per GPU, 4 GPUs on this machine, bfloat16 mixed precision:
    accelerate launch --multi_gpu --num_processes 4 --mixed_precision bf16 \\
        examples/accelerate_train.py DATA_DIR --out model.cxr
    # one process (a CPU, or one GPU), e.g. to try the script:
    python examples/accelerate_train.py [DATA_DIR] [--epochs 1]

DATA_DIR is a class-per-subfolder folder (e.g. ``chest_xray/train``; default:
synthetic images). Every process runs this whole script: each one decodes the
images itself, and the accelerator gives each a different share of every
epoch's batches and averages the gradients (PyTorch DDP). For research and
education; not a medical device.
"""

import argparse
from pathlib import Path

# --8<-- [start:train]
from accelerate import Accelerator

from cxrkit import PneumoniaClassifier, load_image_folder

# --8<-- [end:train]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, help="class-per-subfolder")
    parser.add_argument("--out", type=Path, help="model file to write")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)

    # --8<-- [start:fit]
    accelerator = Accelerator()  # devices, processes, mixed precision: the launch's
    if args.data is not None:
        X, y = load_image_folder(args.data)  # the same paths in every process
    else:
        from cxrkit.datasets import make_synthetic_cxr

        X, y, _ = make_synthetic_cxr(200, image_size=64, random_state=0)
    clf = PneumoniaClassifier(
        model=args.model,
        image_size=args.image_size,
        batch_size=32,  # per process: 4 GPUs train on batches of 128
        max_epochs=args.epochs,
        class_weight="balanced",
        accelerator=accelerator,
        random_state=0,  # the same seed in every process: the same weights
    )
    clf.fit(X, y)  # every process decodes all of X, trains on its share
    proba = clf.predict_proba(X[:64])  # on every process: scored in shares
    if accelerator.is_main_process:
        accelerator.print(clf.history_[-1, "train_loss"], proba.shape)
        if args.out is not None:
            clf.save(args.out)  # one process writes the model file
    accelerator.wait_for_everyone()
    # --8<-- [end:fit]


if __name__ == "__main__":
    main()
