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
        batch_size=16,  # more steps per epoch on the small demo set
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
    from cxrkit.report import evaluation_report

    source = f"images from {args.data}" if args.data else "synthetic images"
    evaluation_report(
        clf,
        X_test,
        y_test,
        args.out,
        pos_label=positive,
        data_name=f"{len(y_test)} held-out {source} (25% of the demo data)",
    )
    print(f"evaluation report: {args.out}/report.html")
    from pathlib import Path

    from cxrkit.plot import plot_explanations

    # Grad-CAM on 4 held-out images of each class: where the model looks.
    shown = np.concatenate(
        [np.flatnonzero(np.asarray(y_test) == c)[:4] for c in clf.classes_]
    )
    figure = plot_explanations(clf, X_test[shown], np.asarray(y_test)[shown])
    figure.savefig(Path(args.out) / "heatmaps.png", dpi=100)
    print(f"Grad-CAM heatmaps: {args.out}/heatmaps.png")
    print(f"total time: {time.perf_counter() - start:.0f} s")
    print("For research and education; not a medical device.")
    return 0


def _image_paths(items: Sequence[str]) -> list[str]:
    """Image files named on the command line; folders are searched recursively."""
    from pathlib import Path

    from cxrkit.io import IMAGE_EXTENSIONS, is_dicom_file

    paths: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_file():
            paths.append(str(path))
        elif path.is_dir():
            found = sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file()
                and not p.name.startswith(".")
                and (
                    p.suffix.lower() in IMAGE_EXTENSIONS
                    or (p.suffix == "" and is_dicom_file(p))
                )
            )
            if not found:
                raise ValueError(
                    f"folder {path} holds no image files (readable endings: "
                    f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            paths += found
        else:
            raise FileNotFoundError(f"no such image file or folder: {path}")
    return paths


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cxrkit import PneumoniaClassifier, load_image_folder

    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name, e.g. model.cxr")
    start = time.perf_counter()
    X, y = load_image_folder(args.data_dir)
    labels, counts = np.unique(y, return_counts=True)
    per_class = ", ".join(f"{c} {n}" for c, n in zip(labels, counts))
    print(f"cxrkit train: {len(X)} images in {args.data_dir} ({per_class})")
    from cxrkit.recipes import RECIPES

    if args.recipe and args.recipe not in RECIPES:
        raise ValueError(
            f"--recipe {args.recipe!r} is not a recipe; choose one of {sorted(RECIPES)}"
        )
    params = dict(RECIPES[args.recipe]) if args.recipe else {}
    given = {
        "model": args.model,
        "image_size": args.image_size,
        "class_weight": args.class_weight,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_epochs": args.epochs,
        "validation_fraction": args.validation_fraction,
        "early_stopping": args.early_stopping,
    }
    params.update({k: v for k, v in given.items() if v is not None})
    if params.get("class_weight") == "none":
        params["class_weight"] = None
    if params.get("validation_fraction") == 0:
        params["validation_fraction"] = None
    clf = PneumoniaClassifier(
        **params,
        pretrained=args.pretrained,
        device=args.device,
        random_state=args.seed,
        verbose=1,
    )
    clf.fit(X, y)
    path = clf.save(out)
    print(f"model written to {path} ({time.perf_counter() - start:.0f} s)")
    print(f"next: cxrkit evaluate {path} DATA_DIR --out report/")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cxrkit import PneumoniaClassifier, load_image_folder
    from cxrkit.report import evaluation_report

    clf = PneumoniaClassifier.load(args.model_file, device=args.device)
    X, y = load_image_folder(args.data_dir)
    print(f"cxrkit evaluate: {len(X)} images in {args.data_dir}", file=sys.stderr)
    report = evaluation_report(
        clf,
        X,
        y,
        args.out,
        threshold=args.threshold,
        pos_label=args.pos_label,
        data_name=str(args.data_dir),
        n_bootstrap=args.n_bootstrap,
        random_state=args.seed,
    )
    print(report)
    print(f"\nreport: {Path(args.out) / 'report.html'}")
    print("For research and education; not a medical device.")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import csv

    from cxrkit import PneumoniaClassifier
    from cxrkit.report import _default_pos_label, predict_proba

    clf = PneumoniaClassifier.load(args.model_file, device=args.device)
    if args.threshold is not None:  # checked before any image is decoded
        if len(clf.classes_) != 2:
            raise ValueError(
                f"--threshold applies to two classes; this model has "
                f"{len(clf.classes_)} and predicts the most probable one"
            )
        if not 0 <= args.threshold <= 1:
            raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    paths = _image_paths(args.images)
    proba = predict_proba(clf, paths)
    predicted = clf.classes_[proba.argmax(axis=1)]
    if args.threshold is not None:
        pos = clf.classes_.tolist().index(_default_pos_label(clf.classes_))
        predicted = np.where(
            proba[:, pos] >= args.threshold, clf.classes_[pos], clf.classes_[1 - pos]
        )
    fh = open(args.csv, "w", newline="", encoding="utf-8") if args.csv else sys.stdout
    try:
        writer = csv.writer(fh)
        writer.writerow(["path", "predicted"] + [f"p_{c}" for c in clf.classes_])
        for path, label, row in zip(paths, predicted, proba):
            writer.writerow([path, label, *(f"{v:.4f}" for v in row)])
    finally:
        if fh is not sys.stdout:
            fh.close()
    if args.csv:
        print(f"{len(paths)} predictions written to {args.csv}", file=sys.stderr)
    return 0


def _add_evaluation_commands(sub: argparse._SubParsersAction) -> None:
    """The ``train``, ``evaluate`` and ``predict`` subcommands."""
    train = sub.add_parser(
        "train",
        help="train a classifier on a class-per-subfolder image folder",
        description="Train a PneumoniaClassifier on DATA_DIR (one subfolder per "
        "class, e.g. chest_xray/train with NORMAL/ and PNEUMONIA/) and write it "
        "to a model file.",
    )
    train.add_argument("data_dir", metavar="DATA_DIR", help="training images")
    train.add_argument(
        "--recipe",
        metavar="NAME",
        help="start from a named configuration of cxrkit.recipes.RECIPES (e.g. "
        "cpu, the measured training recipe); the options below override it",
    )
    train.add_argument("--model", help="architecture (default: cnn4)")
    train.add_argument(
        "--pretrained",
        default=None,
        metavar="WEIGHTS",
        help="'imagenet' or a local weights file (torchvision backbones)",
    )
    train.add_argument("--epochs", type=int, help="default: 10")
    train.add_argument("--image-size", type=int, help="default: 128")
    train.add_argument(
        "--class-weight",
        choices=["balanced", "none"],
        help="weigh classes in the loss (default: none)",
    )
    train.add_argument("--lr", type=float, help="default: 0.001")
    train.add_argument("--batch-size", type=int, help="default: 32")
    train.add_argument(
        "--validation-fraction",
        type=float,
        help="patient-grouped share held out to score epochs (default: 0.1; 0: none)",
    )
    train.add_argument(
        "--early-stopping", type=int, default=None, metavar="PATIENCE", help="epochs"
    )
    train.add_argument("--device", default="auto", help="auto, cpu or cuda")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument(
        "--out", default="model.cxr", help="model file to write (default: model.cxr)"
    )
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="write an evaluation report (metrics with CIs, figures, HTML)",
        description="Evaluate a model file on DATA_DIR (one subfolder per class) "
        "and write metrics.json, predictions.csv, PNG figures and report.html.",
    )
    evaluate.add_argument("model_file", metavar="MODEL", help="written by train")
    evaluate.add_argument("data_dir", metavar="DATA_DIR", help="labelled images")
    evaluate.add_argument(
        "--out", default="report", help="report folder (default: report)"
    )
    evaluate.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="two classes: call positive at probability >= this (default: 0.5)",
    )
    evaluate.add_argument(
        "--pos-label",
        default=None,
        help="positive class (default: PNEUMONIA, else the last class)",
    )
    evaluate.add_argument(
        "--n-bootstrap", type=int, default=2000, help="bootstrap resamples (2000)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    evaluate.add_argument("--device", default="cpu", help="default: cpu")
    evaluate.set_defaults(func=_cmd_evaluate)

    predict = sub.add_parser(
        "predict",
        help="predict the class of images",
        description="Predict images (files, or folders searched recursively); "
        "writes CSV rows: path, predicted class, probability of each class.",
    )
    predict.add_argument("model_file", metavar="MODEL", help="written by train")
    predict.add_argument(
        "images", metavar="IMAGE_OR_DIR", nargs="+", help="image files or folders"
    )
    predict.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="two classes: call PNEUMONIA (else the second class) at probability "
        ">= this, e.g. one chosen on held-out patients (default: most probable)",
    )
    predict.add_argument("--csv", default=None, help="write here (default: stdout)")
    predict.add_argument("--device", default="cpu", help="default: cpu")
    predict.set_defaults(func=_cmd_predict)


def _cmd_explain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cxrkit import PneumoniaClassifier, explain, load_images
    from cxrkit.plot import plot_heatmap, plot_heatmap_grid

    clf = PneumoniaClassifier.load(args.model)
    paths = _image_paths(args.images)
    # a command-line target is text; match it to a class such as 1 too
    target = next((c for c in clf.classes_ if str(c) == args.target), args.target)
    method = args.method or explain.DEFAULT_METHOD
    heatmaps = explain.explain(clf, paths, target, method=method)
    proba = clf.predict_proba(paths)
    if target is None:
        explained = clf.classes_[proba.argmax(axis=1)]
    else:
        explained = [target] * len(paths)
    column = {c: k for k, c in enumerate(clf.classes_)}
    p_explained = [proba[i, column[c]] for i, c in enumerate(explained)]
    images = load_images(paths, clf.image_size)[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path, image, heatmap, label, p in zip(
        paths, images, heatmaps, explained, p_explained
    ):
        ax = plot_heatmap(image, heatmap, title=f"{label} (p={p:.2f})")
        dest = out / f"{Path(path).stem}_{method}.png"
        ax.figure.savefig(dest, dpi=120)
        print(dest)
    fig = plot_heatmap_grid(
        images,
        heatmaps,
        y_pred=list(explained),
        proba=p_explained,
        names=[Path(path).name for path in paths],
    )
    fig.savefig(out / f"grid_{method}.png", dpi=120)
    print(out / f"grid_{method}.png")
    print("Heatmaps show what the model used; research and education only.")
    return 0


def _add_explain_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "explain",
        help="save heatmap overlays (Grad-CAM and others) as PNG",
        description="Explain a saved model's predictions on images: one PNG "
        "overlay per image and a grid, written to --out.",
    )
    parser.add_argument("model", metavar="MODEL", help="model file from clf.save")
    parser.add_argument(
        "images", metavar="IMAGE", nargs="+", help="image files or folders"
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder")
    parser.add_argument(
        "--method",
        default=None,
        help="heatmap method, a key of cxrkit.explain.METHODS such as grad_cam "
        "or layer_cam (default: cxrkit.explain.DEFAULT_METHOD, the one that "
        "points at lesions best in benchmarks/localization.py)",
    )
    parser.add_argument(
        "--target", default=None, help="class to explain (default: the predicted one)"
    )
    parser.set_defaults(func=_cmd_explain)


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
    demo.add_argument(
        "--out",
        default="cxrkit-demo",
        help="folder for the evaluation report (default: cxrkit-demo)",
    )
    demo.set_defaults(func=_cmd_demo)
    _add_evaluation_commands(sub)
    _add_explain_command(sub)
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
