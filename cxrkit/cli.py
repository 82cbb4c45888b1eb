"""The ``cxrkit`` command line: a thin layer over the public API.

Each command parses its arguments, calls library functions and prints; no
modelling logic lives here. Errors a user can fix (missing files, bad
folders, wrong model files) end with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["main"]

_USER_ERRORS = (FileNotFoundError, ValueError, TypeError, ImportError, ConnectionError)


def _cmd_demo(args: argparse.Namespace) -> int:
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    from cxrkit import PneumoniaClassifier, load_image_folder, patient_groups
    from cxrkit.datasets import make_synthetic_cxr

    start = time.perf_counter()
    if args.data is None:
        print(
            f"cxrkit demo: {args.n_samples} synthetic chest-like images "
            f"({args.image_size} px), model {args.model}"
        )
        X, y, _ = make_synthetic_cxr(
            args.n_samples, image_size=args.image_size, random_state=args.seed
        )
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.25, stratify=y, random_state=args.seed
        )
    else:
        X, y = load_image_folder(args.data)
        print(f"cxrkit demo: {len(X)} images in {args.data}, model {args.model}")
        split = GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=args.seed)
        train, test = next(split.split(X, y, groups=patient_groups(X)))
        X_train, X_test, y_train, y_test = X[train], X[test], y[train], y[test]
    clf = PneumoniaClassifier(
        model=args.model,
        image_size=args.image_size,
        max_epochs=args.epochs,
        class_weight="balanced",
        random_state=args.seed,
        verbose=1,
    )
    clf.fit(X_train, y_train)
    proba = clf.predict_proba(X_test)
    y_pred = clf.classes_[proba.argmax(axis=1)]
    positive = clf.classes_[-1]
    auc = roc_auc_score(np.asarray(y_test) == positive, proba[:, -1])
    print(
        f"held-out images: {len(y_test)}   "
        f"accuracy: {accuracy_score(y_test, y_pred):.3f}   "
        f"ROC AUC ({positive} vs rest): {auc:.3f}"
    )
    print(f"total time: {time.perf_counter() - start:.0f} s")
    print("For research and education; not a medical device.")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrkit",
        description="Chest X-ray pneumonia classification (research and education "
        "only; not a medical device).",
    )
    from cxrkit import __version__

    parser.add_argument("--version", action="version", version=f"cxrkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="train and evaluate a small model end to end",
        description="Train a small model on synthetic chest-like images (or on "
        "--data DIR, a class-per-subfolder folder) and report held-out accuracy "
        "and ROC AUC.",
    )
    demo.add_argument("--data", metavar="DIR", help="class-per-subfolder image folder")
    demo.add_argument("--model", default="cnn4", help="architecture (default: cnn4)")
    demo.add_argument(
        "--epochs", type=int, default=8, help="training epochs (default: 8)"
    )
    demo.add_argument("--image-size", type=int, default=64, help="pixels (default: 64)")
    demo.add_argument(
        "--n-samples", type=int, default=600, help="synthetic images (default: 600)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cxrkit`` command line; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _USER_ERRORS as exc:
        print(f"cxrkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cxrkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
