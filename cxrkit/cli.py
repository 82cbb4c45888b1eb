"""The ``cxrkit`` command line: argument parsing and calls to the public API.

Each subcommand has one function that declares its arguments
(``_add_<name>_command``) and one that runs it (``_cmd_<name>``); a new
subcommand is one more pair and one more entry in ``_COMMANDS``. An option
that several commands take is declared once, by an ``_<name>_argument``
function that adds it to a parser. No modelling logic lives here.

Errors: what the user gave (files, folders, options, a model file) is read
and checked first, inside ``_user_input()``; an error raised there, or an
error that is always about the user's files, parameters or environment
(``_is_user_error``), ends with one line on stderr and exit code 2. Any other
error is a bug and shows its traceback. ``--debug`` shows the traceback of
user errors too.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cxrkit.training._allocator import reuse_large_buffers

__all__ = ["main"]


class _UserError(Exception):
    """An error in what the user gave: reported in one line, exit code 2."""


@contextlib.contextmanager
def _user_input(hint: str = "") -> Iterator[None]:
    """Errors raised here come from checking what the user gave."""
    try:
        yield
    except (OSError, ValueError, TypeError) as exc:
        raise _UserError(f"{exc}{hint}") from exc


def _is_user_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised anywhere, is about the user's input.

    Unreadable image files, invalid estimator parameters, missing files and
    network failures are; so is a missing optional package, when the error
    says what to ``pip install``. A ``ValueError`` or ``TypeError`` from
    anywhere else may be a bug, and is not.
    """
    from sklearn.utils._param_validation import InvalidParameterError

    from cxrkit.images._reading import ImageReadError

    always = (
        _UserError,
        ImageReadError,
        InvalidParameterError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        ConnectionError,
    )
    if isinstance(exc, always):
        return True
    return isinstance(exc, ImportError) and "pip install" in str(exc)


def _class_named(classes: Any, text: str | None) -> Any:
    """The class whose name is ``text`` (a command-line class such as 1)."""
    if text is None:
        return None
    return next((c for c in classes if str(c) == text), text)


def _positive_class(classes: Any, pos_label: Any) -> Any:
    """The positive class of two (None with k > 2), named on the command
    line or by default, checked before any image is decoded."""
    if len(classes) != 2:
        return None
    from cxrkit.metrics import positive_label

    with _user_input(hint=" (on the command line: --pos-label)"):
        return positive_label(classes, _class_named(classes, pos_label))


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0 <= threshold <= 1:
        raise _UserError(f"--threshold must be in [0, 1], got {threshold}")


def _decision_rule(clf: Any, threshold: float | None, pos_label: str | None) -> Any:
    """The model's decision rule with --threshold and --pos-label (see
    ``cxrkit.persistence.decision_rule``), checked before any image is decoded."""
    from cxrkit.persistence._provenance import decision_rule

    _check_threshold(threshold)
    if threshold is not None and len(clf.classes_) != 2:
        raise _UserError(
            f"--threshold applies to two classes; this model has "
            f"{len(clf.classes_)} and predicts the most probable one"
        )
    with _user_input(hint=" (on the command line: --pos-label)"):
        return decision_rule(
            clf, threshold, pos_label=_class_named(clf.classes_, pos_label)
        )


def _pos_label_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pos-label",
        default=None,
        metavar="CLASS",
        help="the positive class of two (default: PNEUMONIA, or 1 for 0/1 classes)",
    )


def _on_error_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help=f"unreadable image files: stop with a list of them (raise), or leave "
        f"them out of {what} with a warning (skip) (default: raise)",
    )


# Options that several commands share, each declared once: a command adds
# them where its --help lists them.
def _model_file_argument(parser: argparse.ArgumentParser) -> None:
    """The model file a command reads (``args.model_file``), said the same
    way by every command."""
    parser.add_argument(
        "model_file",
        metavar="MODEL",
        help="model file (written by cxrkit train or clf.save)",
    )


def _device_argument(parser: argparse.ArgumentParser) -> None:
    """Where the model's weights go; the default is the API's
    (``PneumoniaClassifier.load``, and the estimator's ``device``)."""
    from cxrkit import PneumoniaClassifier

    parser.add_argument(
        "--device",
        default=_default_of(PneumoniaClassifier.load, "device"),
        help="auto, cpu or cuda (default: %(default)s)",
    )


#: --threshold of the commands that apply a model file's decision rule to
#: new images as a service (serve, listen, pacs).
_SERVICE_THRESHOLD_HELP = (
    "two classes: call the positive class at probability >= this "
    "(default: the threshold recorded in the model file, else 0.5)"
)


def _threshold_argument(
    parser: argparse.ArgumentParser, help: str = _SERVICE_THRESHOLD_HELP
) -> None:
    """An operating threshold in [0, 1] (None: the model file's, if any)."""
    parser.add_argument("--threshold", type=float, default=None, help=help)


def _address_arguments(
    parser: argparse.ArgumentParser, *, port: int, host_note: str = ""
) -> None:
    """--host and --port of a command that listens (loopback by default)."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help=f"address to bind (default: %(default)s, this machine only{host_note})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=port,
        help="port to listen on (default: %(default)s)",
    )


def _refuse_ood_argument(
    parser: argparse.ArgumentParser, withheld: str, why: str
) -> None:
    """No call for images the model's out-of-distribution detector flags."""
    parser.add_argument(
        "--refuse-ood",
        action="store_true",
        help=f"give {withheld} for images flagged as unlike the training images "
        f"({why})",
    )


def _overlay_argument(parser: argparse.ArgumentParser, verb: str, per: str) -> None:
    """A heatmap secondary capture with each DICOM result."""
    parser.add_argument(
        "--overlay",
        action="store_true",
        help=f"also {verb} a heatmap secondary capture per {per} (the recommended "
        "method of cxrkit explain)",
    )


def _csv_argument(parser: argparse.ArgumentParser) -> None:
    """Where a command's CSV rows go (None: stdout)."""
    parser.add_argument("--csv", default=None, help="write here (default: stdout)")


def _shown(value: Any) -> str:
    """A default as a help text states it: None as 'none'."""
    return "none" if value is None else str(value)


#: Folder names of dataset splits: class folders named so are a mistake
#: (``cxrkit train chest_xray`` instead of ``chest_xray/train``).
SPLIT_NAMES = frozenset(
    {"train", "training", "test", "testing", "val", "valid", "validation", "external"}
)


def _refuse_split_folders(
    labels: Any, data_dir: str, command: str, force: bool = False
) -> None:
    """Class folders named like dataset splits: the parent folder was given."""
    splits = sorted(str(c) for c in labels if str(c).lower() in SPLIT_NAMES)
    if not splits or force:
        return
    want = ("train",) if command == "train" else ("test", "val", "external")
    pick = next((s for w in want for s in splits if s.lower().startswith(w)), splits[0])
    model = " MODEL" if command == "evaluate" else ""
    again = " (or add --force to use them as classes)" if command == "train" else ""
    raise _UserError(
        f"{data_dir} has subfolders {splits}: these are dataset splits, not "
        f"classes. Give one split, whose subfolders are the classes, e.g. "
        f"cxrkit {command}{model} {Path(data_dir) / pick}{again}"
    )


def _warn_if_training_folder(clf: Any, data_dir: str) -> None:
    """Evaluating on the folder the model file records as its training data."""
    source = (getattr(clf, "training_data_", None) or {}).get("source")
    if not source or not os.path.isdir(source):
        return
    given, trained = os.path.realpath(data_dir), os.path.realpath(source)
    if given == trained:
        what = "the folder this model was trained on"
    elif trained.startswith(given + os.sep):
        what = f"a folder that contains its training folder {source}"
    elif given.startswith(trained + os.sep):
        what = f"inside the folder this model was trained on ({source})"
    else:
        return
    warnings.warn(
        f"{data_dir} is {what}, as recorded in the model file: these images "
        "were seen in training, so the figures are optimistic. Evaluate on "
        "images the model has not seen (e.g. chest_xray/test).",
        UserWarning,
        stacklevel=2,
    )


def _note(args: argparse.Namespace, text: str, *, always: bool = False) -> None:
    """Progress on stdout (not with --quiet); hints on stderr (always)."""
    if always:
        print(text, file=sys.stderr)
    elif not getattr(args, "quiet", False):
        print(text)


def _training_verbosity(args: argparse.Namespace) -> int:
    """skorch's verbosity: --quiet 0; a line per epoch (1) in a log; with a
    progress bar in every epoch (2) on a terminal, or with --verbose."""
    if getattr(args, "quiet", False):
        return 0
    if getattr(args, "verbose", False):
        return 2
    isatty = getattr(sys.stderr, "isatty", None)  # where skorch's bar goes
    return 2 if isatty and isatty() else 1


def _readable(args: argparse.Namespace, paths: Any, image_size: int) -> Any:
    """The paths that can be read; with --on-error skip, the others are left
    out with a warning (decoded once: the cache keeps them for predicting),
    and a user error ends the command when none is left."""
    import numpy as np

    from cxrkit import load_images

    if args.on_error != "skip":
        return paths
    try:
        _, kept = load_images(paths, image_size, on_error="skip")
    except ValueError as exc:  # every file unreadable: listed by the warning
        raise _UserError(
            f"none of the {len(paths)} image file(s) could be read; fix or "
            "replace them (--on-error skip left out every one)"
        ) from exc
    return np.asarray(paths, dtype=object)[kept]


def _labels_of_model(y: Any, classes: Any, data_dir: str) -> Any:
    """The folder names of ``data_dir`` as the model's classes: the same
    names, or the same in another case (normal/ for NORMAL)."""
    import numpy as np

    known = [str(c) for c in classes]
    by_case = {k.lower(): c for k, c in zip(known, classes)}
    folders = sorted({str(label) for label in y})
    if set(folders) <= set(known):
        return y
    if all(f.lower() in by_case for f in folders):
        return np.array([by_case[str(label).lower()] for label in y], dtype=object)
    raise _UserError(
        f"{data_dir} has class folders {folders}, but the model's classes are "
        f"{known}: name the subfolders of {data_dir} after the model's classes"
    )


# ---------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from cxrkit import load_image_folder
    from cxrkit.demo import SAMPLE_NAME, run_demo

    X = y = pos_label = None
    if args.pos_label is not None and args.data is None:
        raise _UserError("--pos-label applies to --data (the sample: PNEUMONIA)")
    if args.n_samples is not None and not args.synthetic:
        raise _UserError("--n-samples applies to --synthetic")
    if args.data is not None:
        with _user_input():
            X, y = load_image_folder(args.data)
        pos_label = _positive_class(np.unique(y), args.pos_label)
        what = f"{len(X)} images in {args.data}"
    elif args.synthetic:
        what = "synthetic chest-like images"
    else:
        what = SAMPLE_NAME
    print(f"cxrkit demo: {what}; model {args.model} at {args.image_size} px")
    result = run_demo(
        X,
        y,
        out_dir=args.out,
        model=args.model,
        max_epochs=args.epochs,
        image_size=args.image_size,
        synthetic=args.synthetic,
        **({} if args.n_samples is None else {"n_samples": args.n_samples}),
        pos_label=pos_label,
        data_name=args.data,
        random_state=args.seed,
    )
    report = result.report
    task = (
        f"{report.pos_label} vs rest"
        if report.average is None
        else "macro, one vs rest"
    )
    accuracy, auc = report.metrics["accuracy"], report.metrics["roc_auc"]
    print(
        f"held-out images: {report.n}   "
        f"accuracy: {accuracy.value:.3f} (95% CI {accuracy.low:.3f}-"
        f"{accuracy.high:.3f})   ROC AUC ({task}): {auc.value:.3f} "
        f"(95% CI {auc.low:.3f}-{auc.high:.3f})"
    )
    print(
        f"A demonstration: a small model trained on {result.n_train} images, "
        "not a result to rely on."
    )
    print(f"evaluation report: {result.report_html}")
    print(f"{result.heatmap_method.replace('_', ' ')} heatmaps: {result.heatmaps}")
    print(f"total time: {result.seconds:.0f} s")
    print("For research and education; not a medical device.")
    return 0


def _add_demo_command(sub: argparse._SubParsersAction) -> None:
    from cxrkit.demo import run_demo

    demo = sub.add_parser(
        "demo",
        help="train and evaluate a small model end to end",
        description="Train a small model on the real sample shipped with cxrkit "
        "(600 Kermany chest X-rays; or on --data DIR, a class-per-subfolder "
        "folder, or --synthetic images), report held-out accuracy and ROC AUC "
        "with 95%% intervals, and draw heatmaps.",
    )
    source = demo.add_mutually_exclusive_group()
    source.add_argument(
        "--data", metavar="DIR", help="class-per-subfolder image folder"
    )
    source.add_argument(
        "--synthetic",
        action="store_true",
        help="synthetic chest-like images instead of the real sample (tests)",
    )
    demo.add_argument(
        "--model",
        default=_default_of(run_demo, "model"),
        help="architecture (default: %(default)s)",
    )
    demo.add_argument(
        "--epochs",
        type=int,
        default=_default_of(run_demo, "max_epochs"),
        help="training epochs (default: %(default)s)",
    )
    demo.add_argument(
        "--image-size",
        type=int,
        default=_default_of(run_demo, "image_size"),
        help="pixels (default: %(default)s)",
    )
    demo.add_argument(
        "--n-samples",
        type=int,
        default=None,
        help="synthetic images, with --synthetic "
        f"(default: {_default_of(run_demo, 'n_samples')})",
    )
    _pos_label_argument(demo)
    demo.add_argument(
        "--seed",
        type=int,
        default=_default_of(run_demo, "random_state"),
        help="random seed (default: %(default)s)",
    )
    demo.add_argument(
        "--out",
        default=_default_of(run_demo, "out_dir"),
        help="folder for the evaluation report (default: %(default)s)",
    )
    demo.set_defaults(func=_cmd_demo)


# --------------------------------------------------------------------- train
#: train's options (``args`` names) and the estimator parameters they set.
TRAIN_PARAMETERS = {
    "model": "model",
    "pretrained": "pretrained",
    "image_size": "image_size",
    "augment": "augment",
    "preprocess": "preprocess",
    "class_weight": "class_weight",
    "sampler": "sampler",
    "lr": "lr",
    "lr_schedule": "lr_schedule",
    "label_smoothing": "label_smoothing",
    "mixup": "mixup",
    "batch_size": "batch_size",
    "epochs": "max_epochs",
    "validation_fraction": "validation_fraction",
    "early_stopping": "early_stopping",
    "tta": "tta",
    "checkpoint_dir": "checkpoint_dir",
    "on_error": "on_error",
    "precision": "precision",
}

#: Where train's defaults (without --recipe) differ from the estimator's:
#: a first run on Kermany's training split (74% PNEUMONIA) weighs the classes.
TRAIN_DEFAULTS = {"class_weight": "balanced"}


def _default_of(function: Any, parameter: str) -> Any:
    """The default of ``parameter`` in ``function``'s signature: an option
    that stands for it takes (and its help states) the API's own value."""
    return inspect.signature(function).parameters[parameter].default


def train_default(parameter: str) -> Any:
    """The value ``cxrkit train`` uses for an estimator parameter that is not
    given on the command line (without --recipe): its help states it."""
    from cxrkit import PneumoniaClassifier

    if parameter in TRAIN_DEFAULTS:
        return TRAIN_DEFAULTS[parameter]
    return _default_of(PneumoniaClassifier, parameter)


def _cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    from cxrkit import load_image_folder
    from cxrkit.images._preprocess import check_preprocess
    from cxrkit.recipes import make_classifier

    out = Path(args.out)
    if out.is_dir():
        raise _UserError(f"--out {out} is a folder; give a file name, e.g. model.cxr")
    _check_threshold(args.threshold)
    given = {param: getattr(args, dest) for dest, param in TRAIN_PARAMETERS.items()}
    # Options not given are None: the recipe's (or the estimator's) value stays.
    overrides = {k: v for k, v in given.items() if v is not None}
    if args.recipe is None:  # train's own defaults (TRAIN_DEFAULTS)
        for key, value in TRAIN_DEFAULTS.items():
            if key == "class_weight" and args.sampler == "balanced":
                continue  # the sampler balances the classes instead
            overrides.setdefault(key, value)
    # The command line's spellings of None.
    for key in ("class_weight", "sampler", "lr_schedule", "augment", "preprocess"):
        if overrides.get(key) == "none":
            overrides[key] = None
    if overrides.get("validation_fraction") == 0:
        overrides["validation_fraction"] = None
    with _user_input(" (--preprocess: steps joined by '+', or none)"):
        check_preprocess(overrides.get("preprocess"))  # before the images load
    start = time.perf_counter()
    with _user_input():
        clf = make_classifier(
            args.recipe,
            **overrides,
            device=args.device,
            random_state=args.seed,
            verbose=_training_verbosity(args),
        )
        X, y = load_image_folder(args.data_dir)
    labels, counts = np.unique(y, return_counts=True)
    _refuse_split_folders(labels, args.data_dir, "train", force=args.force)
    per_class = ", ".join(f"{c} {n}" for c, n in zip(labels.tolist(), counts))
    _note(args, f"cxrkit train: {len(X)} images in {args.data_dir} ({per_class})")
    _hint_lower_case_classes(args, labels)
    _hint_unweighted_classes(args, clf, counts)
    clf.fit(X, y)
    _note_held_out(args, clf)
    _hint_stuck_accuracy(args, clf.history_)
    with _user_input():
        path = clf.save(out, threshold=args.threshold)
    _note(args, f"model written to {path} ({time.perf_counter() - start:.0f} s)")
    advice = "" if args.threshold is not None else " --threshold T (from validation)"
    _note(args, f"next: cxrkit evaluate {path} DATA_DIR --out report/{advice}")
    return 0


def _hint_unweighted_classes(args: argparse.Namespace, clf: Any, counts: Any) -> None:
    """Imbalanced classes trained unweighted (a recipe's choice): say so."""
    if clf.class_weight is not None or clf.sampler is not None:
        return
    if max(counts) < 1.5 * min(counts):
        return
    share = max(counts) / sum(counts)
    _note(
        args,
        f"cxrkit train: note: the largest class holds {share:.0%} of the images "
        "and the classes are not weighted (the recipe's choice); add "
        "--class-weight balanced, or expect the model to favour that class.",
        always=True,
    )


def _note_held_out(args: argparse.Namespace, clf: Any) -> None:
    """How many images scored the epochs and did not train the model."""
    data = getattr(clf, "training_data_", None) or {}
    n_images, n_held = data.get("n_images"), data.get("n_validation", 0)
    if n_images is None:
        return
    if n_held:
        _note(
            args,
            f"cxrkit train: trained on {n_images - n_held} images; {n_held} held "
            "out (grouped by patient) to score the epochs",
        )
    else:
        _note(
            args,
            f"cxrkit train: trained on all {n_images} images; none held out "
            "(choose a threshold on other patients' images)",
        )


def _hint_lower_case_classes(args: argparse.Namespace, labels: Any) -> None:
    """Lower-case Kermany folders work, but the default positive class is
    PNEUMONIA: say so before training, not at evaluation."""
    names = [str(c) for c in labels]
    if "PNEUMONIA" not in names and "pneumonia" in [n.lower() for n in names]:
        _note(
            args,
            f"cxrkit train: note: the class folders are {names}; the default positive "
            "class is 'PNEUMONIA' (upper case). Rename the folders, or pass "
            f"--pos-label {next(n for n in names if n.lower() == 'pneumonia')} to "
            "evaluate, predict and explain.",
            always=True,
        )


def _hint_stuck_accuracy(args: argparse.Namespace, history: Any) -> None:
    """valid_acc flat while valid_auc rises: the threshold, not the model."""
    acc = [row.get("valid_acc") for row in history]
    auc = [row.get("valid_auc") for row in history]
    if len(acc) < 2 or None in acc or None in auc:
        return
    if max(acc) - min(acc) < 1e-9 and auc[-1] > auc[0] + 0.02:
        _note(
            args,
            f"cxrkit train: note: valid_acc stayed at {acc[0]:.4f} while valid_auc "
            f"rose from {auc[0]:.3f} to {auc[-1]:.3f}. The model ranks the images "
            "better, but the default rule (the most probable class) still gives "
            "them all one class: the threshold, not the model, is the problem. "
            "Choose a threshold on validation data (cxrkit.metrics.select_threshold) "
            "and pass it as --threshold to train, evaluate or predict.",
            always=True,
        )


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    from cxrkit.images._preprocess import PREPROCESSING
    from cxrkit.models._net import PRECISIONS
    from cxrkit.models._registry import available_models
    from cxrkit.recipes import RECIPES, RECOMMENDED
    from cxrkit.training._augmentation import AUGMENT_PRESETS

    def default(dest: str) -> str:
        """``(default: X)`` of an option, read from train_default."""
        return f"(default: {_shown(train_default(TRAIN_PARAMETERS[dest]))})"

    train = sub.add_parser(
        "train",
        help="train a classifier on a class-per-subfolder image folder",
        description="Train a PneumoniaClassifier on DATA_DIR (one subfolder per "
        "class, e.g. chest_xray/train with NORMAL/ and PNEUMONIA/) and write it "
        "to a model file. With --recipe, options not given keep the recipe's "
        "value; without, the defaults below.",
    )
    train.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        help="training images, one subfolder per class (e.g. chest_xray/train)",
    )
    train.add_argument(
        "--recipe",
        metavar="NAME",
        help="start from a named configuration of cxrkit.recipes.RECIPES, one "
        f"of: {', '.join(RECIPES)} ({RECOMMENDED}: the recommended training "
        "recipe); the "
        "options below override it",
    )
    train.add_argument(
        "--model",
        choices=available_models(),
        metavar="NAME",
        help=f"architecture, one of: {', '.join(available_models())} "
        f"{default('model')}",
    )
    train.add_argument(
        "--pretrained",
        default=None,
        metavar="WEIGHTS",
        help="'imagenet' or a local weights file (torchvision backbones) "
        f"{default('pretrained')}",
    )
    train.add_argument(
        "--epochs", type=int, help=f"passes over the images {default('epochs')}"
    )
    train.add_argument(
        "--image-size",
        type=int,
        help=f"side in pixels the images are resized to {default('image_size')}",
    )
    train.add_argument(
        "--augment",
        choices=[*sorted(AUGMENT_PRESETS), "none"],
        help=f"augmentation preset while training {default('augment')}",
    )
    train.add_argument(
        "--preprocess",
        metavar="STEPS",
        help="preprocessing of every image, at fit and at prediction: one of "
        f"{', '.join(sorted(PREPROCESSING))}, several joined by '+' "
        f"(crop+equalize), or none; clahe needs cxrkit[clahe] "
        f"{default('preprocess')}",
    )
    train.add_argument(
        "--class-weight",
        choices=["balanced", "none"],
        help="weigh classes in the loss by their inverse frequency "
        f"{default('class_weight')[:-1]}; with --recipe, the recipe's; with "
        "--sampler balanced, none)",
    )
    train.add_argument(
        "--sampler",
        choices=["balanced", "none"],
        help="draw classes equally often, instead of --class-weight "
        f"{default('sampler')}",
    )
    train.add_argument(
        "--lr", type=float, help=f"learning rate of AdamW {default('lr')}"
    )
    train.add_argument(
        "--lr-schedule",
        choices=["cosine", "onecycle", "plateau", "none"],
        help=f"learning-rate schedule {default('lr_schedule')}",
    )
    train.add_argument(
        "--label-smoothing",
        type=float,
        metavar="EPS",
        help=f"label smoothing of the loss {default('label_smoothing')}",
    )
    train.add_argument(
        "--mixup",
        type=float,
        metavar="ALPHA",
        help="mix training batches by a weight drawn from Beta(ALPHA, ALPHA); "
        f"0: no mixup {default('mixup')}",
    )
    train.add_argument(
        "--batch-size",
        type=int,
        help=f"images per training step {default('batch_size')}",
    )
    train.add_argument(
        "--validation-fraction",
        type=float,
        help="patient-grouped share held out to score epochs; 0: none "
        f"{default('validation_fraction')}",
    )
    train.add_argument(
        "--early-stopping",
        type=int,
        default=None,
        metavar="PATIENCE",
        help=f"stop after this many epochs without a better validation loss "
        f"{default('early_stopping')}",
    )
    train.add_argument(
        "--tta",
        type=int,
        metavar="N",
        help="test-time augmentation: also average N fixed copies of each image, "
        "shifted, rotated, zoomed and changed in brightness and contrast "
        f"{default('tta')}",
    )
    train.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="save every epoch here; run the same command again to resume",
    )
    _on_error_argument(train, "training")
    _threshold_argument(
        train,
        help="record this operating threshold on P(PNEUMONIA) in the model file, "
        "chosen on validation data; evaluate, predict, explain, serve, export and "
        "PneumoniaClassifier.predict use it by default",
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="train even when class folders are named like dataset splits "
        "(train, test, val, external)",
    )
    _device_argument(train)
    train.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="32 (float32), bf16 (bfloat16 mixed precision: GPUs, and CPUs with "
        "AMX, where it trains faster) or 16 (float16, CUDA only) "
        f"{default('precision')}",
    )
    train.add_argument(
        "--seed", type=int, default=0, help="random seed (default: %(default)s)"
    )
    train.add_argument(
        "--out", default="model.cxr", help="model file to write (default: %(default)s)"
    )
    train.set_defaults(func=_cmd_train)


# ------------------------------------------------------------------ evaluate
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cxrkit import PneumoniaClassifier, load_image_folder
    from cxrkit.report import evaluation_report

    if args.n_bootstrap < 0:
        raise _UserError(f"--n-bootstrap must be 0 or more, got {args.n_bootstrap}")
    with _user_input():
        clf = PneumoniaClassifier.load(args.model_file, device=args.device)
        rule = _decision_rule(clf, args.threshold, args.pos_label)
        pos_label = _positive_class(clf.classes_, rule.pos_label)  # reports need one
        X, y = load_image_folder(args.data_dir)
    if not {str(c) for c in y} <= {str(c) for c in clf.classes_}:
        _refuse_split_folders(set(y.tolist()), args.data_dir, "evaluate")
    y = _labels_of_model(y, clf.classes_, args.data_dir)
    _warn_if_training_folder(clf, args.data_dir)
    kept = set(_readable(args, X, clf.image_size))
    if len(kept) < len(X):
        keep = [x in kept for x in X]
        X, y = X[keep], y[keep]
    _note(args, f"cxrkit evaluate: {len(X)} images in {args.data_dir}")
    report = evaluation_report(
        clf,
        X,
        y,
        args.out,
        threshold=rule.threshold,
        pos_label=pos_label,
        data_name=str(args.data_dir),
        n_bootstrap=args.n_bootstrap,
        random_state=args.seed,
        progress=None if not getattr(args, "quiet", False) else False,
    )
    print(report)
    print(f"\nreport: {Path(args.out) / 'report.html'}")
    print("For research and education; not a medical device.")
    return 0


def _add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    from cxrkit.report import evaluation_report

    evaluate = sub.add_parser(
        "evaluate",
        help="write an evaluation report (metrics with CIs, figures, HTML)",
        description="Evaluate a model file on DATA_DIR (one subfolder per class) "
        "and write metrics.json, predictions.csv, PNG figures and report.html.",
    )
    _model_file_argument(evaluate)
    evaluate.add_argument("data_dir", metavar="DATA_DIR", help="labelled images")
    evaluate.add_argument(
        "--out", default="report", help="report folder (default: %(default)s)"
    )
    _threshold_argument(
        evaluate,
        help="two classes: call positive at probability >= this (default: the "
        "threshold recorded in the model file, if it is on the --pos-label class; "
        "else 0.5)",
    )
    _pos_label_argument(evaluate)
    _on_error_argument(evaluate, "the evaluation")
    evaluate.add_argument(
        "--n-bootstrap",
        type=int,
        default=_default_of(evaluation_report, "n_bootstrap"),
        help="bootstrap resamples for the 95%% intervals (default: %(default)s)",
    )
    evaluate.add_argument(
        "--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)"
    )
    _device_argument(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)


# ------------------------------------------------------------------- predict
def _cmd_predict(args: argparse.Namespace) -> int:
    from cxrkit import PneumoniaClassifier
    from cxrkit.images._folders import find_images
    from cxrkit.metrics import apply_threshold
    from cxrkit.ood import no_detector_error
    from cxrkit.report import ood_columns, predictions, write_predictions

    with _user_input():
        clf = PneumoniaClassifier.load(args.model_file, device=args.device)
        rule = _decision_rule(clf, args.threshold, args.pos_label)
        paths = find_images(args.images)
        if args.refuse_ood and clf.ood_detector_ is None:
            raise no_detector_error(clf)
    paths = _readable(args, paths, clf.image_size)
    proba, found = predictions(
        clf, paths, progress=False if getattr(args, "quiet", False) else None
    )
    predicted = apply_threshold(
        proba, rule.threshold, classes=clf.classes_, pos_label=rule.pos_label
    )
    proba, predicted, ood = ood_columns(
        clf, paths, proba, predicted, refuse=args.refuse_ood, found=found
    )
    write_predictions(
        args.csv or sys.stdout,
        paths,
        proba,
        predicted,
        classes=clf.classes_,
        extra_columns=ood,
    )
    if args.csv:
        print(f"{len(paths)} predictions written to {args.csv}", file=sys.stderr)
    return 0


def _add_predict_command(sub: argparse._SubParsersAction) -> None:
    predict = sub.add_parser(
        "predict",
        help="predict the class of images",
        description="Predict images (files, or folders searched recursively); "
        "writes CSV rows: path, predicted class, probability of each class, "
        "ood_score and ood (True: the image looks unlike the training images, "
        "and its prediction is unreliable).",
    )
    _model_file_argument(predict)
    predict.add_argument(
        "images", metavar="IMAGE_OR_DIR", nargs="+", help="image files or folders"
    )
    _threshold_argument(
        predict,
        help="two classes: call the positive class (--pos-label) at probability "
        ">= this, e.g. one chosen on held-out patients (default: the threshold "
        "recorded in the model file, if it is on the --pos-label class; else the "
        "most probable class)",
    )
    _pos_label_argument(predict)
    _on_error_argument(predict, "the predictions")
    _refuse_ood_argument(
        predict, "no call and no probabilities", "a reason column says why"
    )
    _csv_argument(predict)
    _device_argument(predict)
    predict.set_defaults(func=_cmd_predict)


# ------------------------------------------------------------------- explain
def _cmd_explain(args: argparse.Namespace) -> int:
    from cxrkit import PneumoniaClassifier, explain, load_images
    from cxrkit.images._folders import find_images
    from cxrkit.metrics import apply_threshold
    from cxrkit.plot import method_title, plot_heatmap, plot_heatmap_grid

    method = explain.DEFAULT_METHOD if args.method is None else args.method
    if method not in explain.METHODS:
        raise _UserError(
            f"--method {method!r} is not a heatmap method; use one of "
            f"{sorted(explain.METHODS)}"
        )
    with _user_input():
        clf = PneumoniaClassifier.load(args.model_file, device=args.device)
        paths = find_images(args.images)
    paths = list(_readable(args, paths, clf.image_size))
    # a command-line target is text; match it to a class such as 1 too
    target = _class_named(clf.classes_, args.target)
    if target is not None and target not in list(clf.classes_):
        raise _UserError(
            f"--target {args.target!r} is not a class of this model; use one of "
            f"{[str(c) for c in clf.classes_]}, or leave it out for the predicted class"
        )
    proba = clf.predict_proba(paths)
    if target is None:  # the class given, by the model file's threshold if any
        rule = _decision_rule(clf, None, None)
        explained = apply_threshold(
            proba, rule.threshold, classes=clf.classes_, pos_label=rule.pos_label
        )
    else:
        explained = [target] * len(paths)
    heatmaps = explain.explain(clf, paths, list(explained), method=method)
    caption = explain.method_caption(method, clf.tta)
    column = {c: k for k, c in enumerate(clf.classes_)}
    p_explained = [proba[i, column[c]] for i, c in enumerate(explained)]
    images = load_images(paths, clf.image_size)[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid_name = f"grid_{method}.png"
    names = _heatmap_names(paths, method, taken={grid_name})
    for name, image, heatmap, label, p in zip(
        names, images, heatmaps, explained, p_explained
    ):
        ax = plot_heatmap(
            image, heatmap, title=f"{method_title(method)}: {label} (p={p:.2f})"
        )
        ax.figure.suptitle(caption, fontsize=7, wrap=True)
        dest = out / name
        ax.figure.savefig(dest, dpi=120)
        print(dest)
    fig = plot_heatmap_grid(
        images,
        heatmaps,
        y_pred=list(explained),
        proba=p_explained,
        names=[Path(path).name for path in paths],
        title=caption,
    )
    fig.savefig(out / grid_name, dpi=120)
    print(out / grid_name)
    print(f"{caption} Research and education only.")
    return 0


def _heatmap_names(paths: Sequence[str], method: str, taken: set[str]) -> list[str]:
    """One PNG file name per image for ``cxrkit explain``, all different.

    ``{stem}_{method}.png`` where the stem is the only one of its kind. Files
    whose stems are shared (``a/scan.png``, ``a/scan.jpg``, ``b/scan.png``), or
    whose name would be one of ``taken``, are named after their path below
    the folder that holds all the images: ``a_scan.png_{method}.png``. A
    name still not unique gets ``_2``, ``_3``, ... in the order of
    ``paths``. The same paths always get the same names.
    """
    stems = [Path(path).stem for path in paths]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    absolute = [os.path.abspath(path) for path in paths]
    try:
        root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    except ValueError:  # on different drives
        root = ""
    names = []
    used = set(taken)
    for stem, path in zip(stems, absolute):
        name = f"{stem}_{method}.png"
        if counts[stem] > 1 or name in taken:
            below = os.path.relpath(path, root) if root else path
            flat = below.replace(os.sep, "_").replace(":", "_").lstrip("_")
            name = f"{flat}_{method}.png"
        base, k = name[: -len(".png")], 2
        while name in used:
            name, k = f"{base}_{k}.png", k + 1
        used.add(name)
        names.append(name)
    return names


def _add_explain_command(sub: argparse._SubParsersAction) -> None:
    from cxrkit import explain

    parser = sub.add_parser(
        "explain",
        help="save heatmap overlays (the recommended method or another) as PNG",
        description="Explain a saved model's predictions on images: one PNG "
        "overlay per image (IMAGE-STEM_METHOD.png; where stems repeat, named "
        "after the image's path instead) and a grid, written to --out.",
    )
    _model_file_argument(parser)
    parser.add_argument(
        "images", metavar="IMAGE", nargs="+", help="image files or folders"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="heatmaps",
        help="output folder (default: %(default)s)",
    )
    _device_argument(parser)
    parser.add_argument(
        "--method",
        default=None,
        help="heatmap method, a key of cxrkit.explain.METHODS: "
        f"{', '.join(explain.METHODS)} (default: {explain.DEFAULT_METHOD}, the "
        "method that pointed at lesions best in the localization benchmark)",
    )
    parser.add_argument(
        "--target", default=None, help="class to explain (default: the predicted one)"
    )
    _on_error_argument(parser, "the heatmaps")
    parser.set_defaults(func=_cmd_explain)


def _cmd_export(args: argparse.Namespace) -> int:
    from cxrkit import PneumoniaClassifier

    _check_threshold(args.threshold)
    with _user_input():
        clf = PneumoniaClassifier.load(args.model_file)
    path = clf.export_onnx(args.out, threshold=args.threshold)
    print(
        f"ONNX model written to {path} (input 'image': batch x 1 x "
        f"{clf.image_size} x {clf.image_size}; preprocessing in its metadata)"
    )
    if clf.preprocess:
        needs = " and OpenCV" if "clahe" in str(clf.preprocess) else ""
        print(
            f"The model preprocesses with {clf.preprocess!r} after resizing: a "
            f"runtime must do the same (examples/onnx_inference.py does, with "
            f"numpy and Pillow{needs})."
        )
    return 0


def _add_export_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export a model file as ONNX (needs cxrkit[onnx])",
        description="Write a model file's network as ONNX, with a dynamic batch "
        "axis and the preprocessing (image size, normalisation, class order, "
        'threshold) in the ONNX metadata. Needs pip install "cxrkit[onnx]".',
    )
    _model_file_argument(parser)
    parser.add_argument("out", metavar="OUT.onnx", help="ONNX file to write")
    _threshold_argument(
        parser,
        help="two classes: record this operating threshold on the probability of "
        "PNEUMONIA (or 1 for 0/1 classes) in the metadata (default: the threshold "
        "recorded in the model file; without one, the metadata's decision rule "
        "is argmax)",
    )
    parser.set_defaults(func=_cmd_export)


# --------------------------------------------------------------------- serve
def _cmd_serve(args: argparse.Namespace) -> int:
    from cxrkit.serve import create_app, serve

    with _user_input(hint=" (on the command line: --threshold)"):
        app = create_app(
            args.model_file,
            threshold=args.threshold,
            max_upload_mb=args.max_upload_mb,
            keep_uploads=args.keep_uploads,
            device=args.device,
            refuse_ood=args.refuse_ood,
        )
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"cxrkit serve: {app.state.served.model_id} on http://{host}:{args.port}/ "
        "(API: /docs). For research and education only; not a medical device.",
        file=sys.stderr,
    )
    serve(app, host=args.host, port=args.port)
    return 0


def _add_serve_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="a web page and JSON API over a model file (needs cxrkit[serve])",
        description="Serve a model file: a page to upload PNG, JPEG or DICOM "
        "images and see the prediction and heatmap, and a JSON API (POST "
        "/predict, POST /explain, GET /model, GET /health; OpenAPI at /docs). "
        "No authentication: it binds 127.0.0.1 unless --host says otherwise. "
        'Needs pip install "cxrkit[serve]".',
    )
    _model_file_argument(parser)
    _address_arguments(
        parser, port=8000, host_note="; any other warns: there is no authentication"
    )
    _threshold_argument(parser)
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=50,
        help="largest request body in MB, refused while it arrives "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--keep-uploads",
        metavar="DIR",
        default=None,
        help="keep a copy of each upload here, named by its SHA-256 (default: "
        "keep nothing)",
    )
    _refuse_ood_argument(
        parser, "no call, probabilities or heatmap", "the page and the API say why"
    )
    _device_argument(parser)
    parser.set_defaults(func=_cmd_serve)


# --------------------------------------------------------------------- adapt
def _adjusted(out_of_fold: Any, clf: Any) -> Any:
    """Out-of-fold probabilities of the refitted head, through the model's
    later steps (--prior, the calibration) as predict_proba applies them;
    None without them."""
    from cxrkit.adaptation import adjust_probabilities

    if out_of_fold is None:
        return None
    return adjust_probabilities(out_of_fold, clf.adaptation_)


#: Below this many labelled images ``adapt --head`` without ``--sensitivity``
#: hints to leave the refit out, for a model with test-time augmentation:
#: the smallest sample the refit was measured to pay with (docs: "Adapting
#: to a new site", "Refitting the head").
HEAD_REFIT_MIN_IMAGES = 50
#: The same for a model without test-time augmentation (``tta=0``), measured
#: in the same section; a sensitivity floor (``--sensitivity``) gives no hint.
HEAD_REFIT_MIN_IMAGES_NO_TTA = 100


def _hint_head_refit(args: argparse.Namespace, n_images: int, tta: int) -> None:
    """With fewer labelled images than the refit was measured to pay from, a
    hint to leave out ``--head`` (its caller gives none with a floor)."""
    if tta:
        least = HEAD_REFIT_MIN_IMAGES
        measured = (
            f"raised accuracy with {least} and 100 images for the recommended "
            "recipe with test-time augmentation (tta=4); fewer were not measured"
        )
    else:
        least = HEAD_REFIT_MIN_IMAGES_NO_TTA
        measured = (
            "had not raised accuracy with 25 or 50 images for the recommended "
            f"recipe without test-time augmentation (tta=0), and did with {least}"
        )
    if n_images < least:
        _note(
            args,
            f"cxrkit adapt: hint: --head with {n_images} labelled images; at a "
            f"second site, with the fewest-errors threshold, the refit {measured}: "
            "consider leaving out --head",
            always=True,
        )


def _cmd_adapt(args: argparse.Namespace) -> int:
    from cxrkit import PneumoniaClassifier, load_image_folder
    from cxrkit.adaptation import (
        adapt_batchnorm,
        adapt_head,
        adapt_prior,
        calibrate,
        conformalize,
        head_cross_val_proba,
    )
    from cxrkit.images._folders import find_images

    unlabelled = args.batchnorm or args.prior
    if unlabelled and not args.site:
        raise _UserError(
            "--batchnorm and --prior adapt to the site's unlabelled images: give "
            "them with --site DIR"
        )
    if args.head and not args.labelled:
        raise _UserError(
            "--head refits the final layer on a labelled sample: give it with "
            "--labelled DIR (one subfolder per class)"
        )
    if not (unlabelled or args.labelled):
        raise _UserError(
            "nothing to do: choose --batchnorm and/or --prior (with --site DIR, "
            "the site's unlabelled images), and/or --labelled DIR (a labelled "
            "sample of the site, one subfolder per class)"
        )
    if args.sensitivity is not None and not 0 < args.sensitivity <= 1:
        raise _UserError(f"--sensitivity must be in (0, 1], got {args.sensitivity}")
    if args.max_accuracy and args.sensitivity is not None:
        raise _UserError("give --sensitivity or --max-accuracy, not both")
    if args.max_accuracy and (args.method != "platt" or not args.labelled):
        raise _UserError(
            "--max-accuracy needs --labelled DIR and --method platt (Platt "
            "scaling learns the site's class mix from the sample)"
        )
    if args.coverage is not None and not args.labelled:
        raise _UserError("--coverage needs a labelled sample: --labelled DIR")
    if not args.pull > 0:
        raise _UserError(f"--pull must be a positive number, got {args.pull}")
    if args.coverage is not None and not 0 < args.coverage < 1:
        raise _UserError(f"--coverage must be in (0, 1), got {args.coverage}")
    with _user_input():
        clf = PneumoniaClassifier.load(args.model_file, device=args.device)
        site = find_images(args.site) if args.site else None
        if args.labelled:
            X_lab, y_lab = load_image_folder(args.labelled)
            y_lab = _labels_of_model(y_lab, clf.classes_, args.labelled)
    if args.batchnorm:
        _note(args, f"cxrkit adapt: batch-norm statistics of {len(site)} site images")
        clf = adapt_batchnorm(clf, site)
    out_of_fold = None
    if args.head:  # before --prior and the calibration, which correct its outputs
        _note(args, f"cxrkit adapt: final layer refitted on {len(X_lab)} images")
        if args.sensitivity is None:
            _hint_head_refit(args, len(X_lab), clf.tta)
        # the refitted layer separates its own sample: the recalibration, the
        # threshold and the sets come from scores of heads refitted without
        # each patient
        out_of_fold = head_cross_val_proba(clf, X_lab, y_lab, pull=args.pull)
        with warnings.catch_warnings():
            if args.max_accuracy or args.sensitivity is not None:
                # the calibration below records the site's threshold
                warnings.filterwarnings("ignore", message=".*operating threshold")
            clf = adapt_head(clf, X_lab, y_lab, pull=args.pull)
    if args.prior:
        clf = adapt_prior(clf, site)
        prior = clf.adaptation_["steps"][-1]["site_prior"]
        _note(args, f"cxrkit adapt: estimated class prior of the site {prior}")
    if args.labelled:
        _note(args, f"cxrkit adapt: {args.method} scaling on {len(X_lab)} images")
        clf = calibrate(
            clf,
            X_lab,
            y_lab,
            method=args.method,
            sensitivity=args.sensitivity,
            threshold="accuracy" if args.max_accuracy else None,
            proba=_adjusted(out_of_fold, clf),
        )
        if clf.operating_threshold_ is not None:
            point = clf.operating_threshold_
            print(f"operating threshold {point['threshold']:.4f}: {point['source']}")
        if args.coverage is not None:
            clf = conformalize(
                clf,
                X_lab,
                y_lab,
                coverage=args.coverage,
                proba=_adjusted(out_of_fold, clf),
            )
            print(
                f"conformal prediction sets: {args.coverage:.0%} coverage per class, "
                f"from {clf.conformal_['n_images']} images"
            )
    path = clf.save(args.out)
    print(f"adapted model written to {path}")
    print("For research and education; not a medical device.")
    return 0


def _add_adapt_command(sub: argparse._SubParsersAction) -> None:
    from cxrkit.adaptation import adapt_head, calibrate

    parser = sub.add_parser(
        "adapt",
        help="adapt a model file to a new site's images",
        description="Adapt a trained model to a new site and write the adapted "
        "model file: unlabelled, with the site's images (--site DIR with "
        "--batchnorm and/or --prior); labelled, with a small labelled sample "
        "(--labelled DIR, one subfolder per class: with --head, the final layer "
        "refitted; recalibration and, with --sensitivity or --max-accuracy, the "
        "operating threshold). Steps run in the order --batchnorm, --head, "
        "--prior, recalibration.",
    )
    _model_file_argument(parser)
    parser.add_argument(
        "--out", required=True, help="adapted model file to write (e.g. site.cxr)"
    )
    parser.add_argument(
        "--site",
        metavar="DIR",
        help="the site's images, no labels (searched recursively)",
    )
    parser.add_argument(
        "--batchnorm",
        action="store_true",
        help="re-estimate batch-norm statistics on the --site images (AdaBN)",
    )
    parser.add_argument(
        "--prior",
        action="store_true",
        help="re-estimate the site's class prior on the --site images (EM) and "
        "correct the probabilities for it",
    )
    parser.add_argument(
        "--labelled",
        metavar="DIR",
        help="a labelled sample of the site (one subfolder per class) to "
        "recalibrate on; use patients you will not score afterwards",
    )
    parser.add_argument(
        "--head",
        action="store_true",
        help="with --labelled: first refit the final layer on the sample, pulled "
        "towards the trained one (can reorder the site's images); the "
        "recalibration, the threshold and --coverage then use out-of-fold "
        "probabilities of the sample (5 folds by patient). Measured at a "
        "second site with --max-accuracy, it paid with 50 and 100 labelled "
        "images for a model with test-time augmentation (tta=4; fewer were not "
        "measured) and only with 100 without it (tta=0): below those a hint "
        "says so; with --sensitivity it paid with 50 and 100 (tta=0)",
    )
    parser.add_argument(
        "--pull",
        type=float,
        default=_default_of(adapt_head, "pull"),
        help="with --head: how strongly the refitted layer is kept near the "
        "trained one (default: %(default)s)",
    )
    parser.add_argument(
        "--method",
        choices=["temperature", "platt"],
        default=_default_of(calibrate, "method"),
        help="recalibration with --labelled (default: %(default)s)",
    )
    parser.add_argument(
        "--sensitivity",
        type=float,
        default=None,
        help="with --labelled: record the threshold that keeps this sensitivity "
        "for new patients on average (the split-conformal quantile of the "
        "sample's positive images; 19 of them for 0.95), with its 95%% CI on "
        "the sample (default: keep the model's calls)",
    )
    parser.add_argument(
        "--max-accuracy",
        action="store_true",
        help="with --labelled and --method platt: record the threshold with the "
        "fewest expected errors at the site (0.5 after Platt scaling; no "
        "sensitivity floor)",
    )
    parser.add_argument(
        "--coverage",
        type=float,
        default=None,
        help="with --labelled: also make class-conditional conformal prediction "
        "sets with this coverage per class, e.g. 0.9 (default: none)",
    )
    _device_argument(parser)
    parser.set_defaults(func=_cmd_adapt)


# -------------------------------------------------------------------- listen
def _cmd_listen(args: argparse.Namespace) -> int:
    import logging

    from cxrkit import pacs

    if (args.tls_cert is None) != (args.tls_key is None):
        raise _UserError("--tls-cert and --tls-key go together")
    if args.tls_ca and not args.tls_cert:
        raise _UserError("--tls-ca applies with --tls-cert and --tls-key")
    with _user_input():
        model = pacs.ReportingModel(
            args.model_file, threshold=args.threshold, device=args.device
        )
        if args.send_to:
            tls = None
            if args.send_tls_ca:
                tls = pacs.client_tls_context(
                    args.send_tls_ca, cert=args.tls_cert, key=args.tls_key
                )
            destination = pacs.DimseDestination(
                args.send_to, calling_ae_title=args.ae_title, ssl_context=tls
            )
        elif args.stow_url:
            destination = pacs.DicomwebDestination(args.stow_url)
        else:
            destination = pacs.FolderDestination(args.results_dir)
        listener = pacs.Listener(
            model,
            destination,
            ae_title=args.ae_title,
            host=args.host,
            port=args.port,
            spool=args.spool,
            keep=args.keep,
            overlay=args.overlay,
            queue_size=args.queue_size,
            queue_timeout=args.queue_timeout,
            batch_size=args.batch_size,
            allowed_ae_titles=args.allow_ae,
            ssl_context=None
            if args.tls_cert is None
            else pacs.server_tls_context(args.tls_cert, args.tls_key, ca=args.tls_ca),
            log_identifiers=args.log_identifiers,
        )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s cxrkit listen: %(message)s"))
    log = logging.getLogger("cxrkit.pacs")
    log.addHandler(handler)
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    log.setLevel(
        logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    )
    with _user_input(
        hint=f" (on the command line: --host {args.host} --port {args.port})"
    ):
        listener.start()
    _note(
        args,
        "cxrkit listen: Ctrl-C or SIGTERM stops it; instances acknowledged and "
        "not yet reported wait in the spool. For research and education only; "
        "not a medical device.",
    )
    pacs.listen(listener)
    stats = listener.stats
    _note(
        args,
        f"cxrkit listen: {stats.received} received, {stats.reported} reported, "
        f"{stats.refused} refused, {stats.failed} failed"
        + (f", {stats.duplicates} sent again" if stats.duplicates else ""),
    )
    return 0


def _add_listen_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "listen",
        help="a DICOM node that reports chest radiographs to a PACS (cxrkit[pacs])",
        description="Listen as a DICOM Storage SCP: accept chest radiographs (CR, "
        "DX, secondary captures of radiographs), classify each with the model's "
        "operating threshold, and send a structured report (and, with --overlay, "
        "a heatmap capture) to a PACS by C-STORE (--send-to), STOW-RS "
        "(--stow-url) or to a folder (--results-dir). Every acknowledged "
        "instance is on disk first (--spool); a restart resumes. Binds 127.0.0.1 "
        'unless --host says otherwise. Needs pip install "cxrkit[pacs]".',
    )
    _model_file_argument(parser)
    parser.add_argument(
        "--ae-title",
        default="CXRKIT",
        help="this node's AE title (default: %(default)s)",
    )
    _address_arguments(parser, port=11112)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--send-to", metavar="AE@HOST:PORT", help="C-STORE results to this node"
    )
    where.add_argument(
        "--stow-url", metavar="URL", help="STOW-RS results to this DICOMweb root"
    )
    where.add_argument("--results-dir", metavar="DIR", help="write results here")
    _overlay_argument(parser, "send", "instance")
    _threshold_argument(parser)
    parser.add_argument(
        "--spool",
        metavar="DIR",
        default="cxrkit-spool",
        help="where acknowledged instances wait until reported (default: %(default)s)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep reported instances in SPOOL/done/ (default: delete them)",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=32,
        help="instances waiting, at most (default: %(default)s)",
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=10,
        help="seconds a C-STORE waits for room before status A700 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="instances predicted together (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-ae",
        metavar="AE",
        action="append",
        default=None,
        help="accept associations only from this calling AE title (repeat it)",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="this node's certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="this node's private key")
    parser.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="with --tls-cert: require client certificates signed by this CA",
    )
    parser.add_argument(
        "--send-tls-ca",
        metavar="PEM",
        help="with --send-to: TLS to the node, whose certificate this CA signed",
    )
    parser.add_argument(
        "--log-identifiers",
        action="store_true",
        help="name instances in logs by UID, patient ID and accession (default: "
        "by the hash of the SOP Instance UID)",
    )
    _device_argument(parser)
    parser.set_defaults(func=_cmd_listen)


# ---------------------------------------------------------------------- pacs
def _cmd_pacs(args: argparse.Namespace) -> int:
    import csv

    from cxrkit import pacs

    if not (args.date or args.modality or args.accession or args.study):
        raise _UserError(
            "give at least one of --date, --modality, --accession or --study, so "
            "that a whole archive is never processed by accident"
        )
    with _user_input():
        model = pacs.ReportingModel(
            args.model_file, threshold=args.threshold, device=args.device
        )
    try:
        results = pacs.process_dicomweb(
            model,
            args.url,
            study_date=args.date,
            modality=args.modality,
            accession_number=args.accession,
            study_instance_uid=args.study,
            limit=args.limit,
            store=not args.no_store,
            overlay=args.overlay,
        )
    except (OSError, pacs.DeliveryError) as exc:  # the server, not a bug
        raise _UserError(f"DICOMweb server {args.url}: {exc}") from exc
    rows = pacs.results_table(results, identifiers=args.show_identifiers)
    with _user_input():
        out = (
            open(args.csv, "w", newline="", encoding="utf-8")
            if args.csv
            else contextlib.nullcontext(sys.stdout)
        )
    with out as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["instance"])
        writer.writeheader()
        writer.writerows(rows)
    stored = sum(r["results_stored"] > 0 for r in rows)
    print(
        f"{len(rows)} radiograph(s), results stored for {stored}. For research and "
        "education only; not a medical device.",
        file=sys.stderr,
    )
    return 0


def _add_pacs_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "pacs",
        help="predict radiographs on a DICOMweb server, store results back",
        description="Query a DICOMweb server (QIDO-RS) for studies by date, "
        "modality, accession number or Study Instance UID, fetch their chest "
        "radiographs (WADO-RS), predict, and store a structured report per "
        "radiograph back (STOW-RS). Prints one CSV row per radiograph, named by "
        'the hash of its SOP Instance UID. Needs pip install "cxrkit[pacs]".',
    )
    _model_file_argument(parser)
    parser.add_argument(
        "--url",
        required=True,
        help="the DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web",
    )
    parser.add_argument(
        "--date", help="study date or range: 20240131 or 20240101-20240131"
    )
    parser.add_argument("--modality", help="e.g. CR or DX")
    parser.add_argument("--accession", help="accession number")
    parser.add_argument("--study", metavar="UID", help="one Study Instance UID")
    parser.add_argument("--limit", type=int, help="at most this many studies")
    parser.add_argument(
        "--no-store", action="store_true", help="predict only; store nothing back"
    )
    _overlay_argument(parser, "store", "radiograph")
    _threshold_argument(parser)
    parser.add_argument(
        "--show-identifiers",
        action="store_true",
        help="add the Study and SOP Instance UIDs to the CSV",
    )
    _csv_argument(parser)
    _device_argument(parser)
    parser.set_defaults(func=_cmd_pacs)


# ---------------------------------------------------------------------- main
#: The subcommands, in the order ``cxrkit --help`` lists them.
_COMMANDS = (
    _add_demo_command,
    _add_train_command,
    _add_evaluate_command,
    _add_predict_command,
    _add_explain_command,
    _add_export_command,
    _add_serve_command,
    _add_listen_command,
    _add_pacs_command,
    _add_adapt_command,
)


def _build_parser() -> argparse.ArgumentParser:
    from cxrkit import __version__

    parser = argparse.ArgumentParser(
        prog="cxrkit",
        description="Chest X-ray pneumonia classification (research and education "
        "only; not a medical device).",
    )
    parser.add_argument("--version", action="version", version=f"cxrkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(sub)
    # --debug before or after the subcommand (SUPPRESS: one does not reset the other)
    for command_parser in (parser, *sub.choices.values()):
        command_parser.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the traceback of every error, also of errors in what was given",
        )
        loudness = command_parser.add_mutually_exclusive_group()
        loudness.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print results, warnings and errors only (no progress)",
        )
        loudness.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="more progress: a progress bar in every training epoch (the "
            "default when the output is a terminal)",
        )
    return parser


@contextlib.contextmanager
def _plain_warnings(command: str) -> Iterator[None]:
    """Warnings as one line each, ``cxrkit <command>: warning: ...``: the
    source line of cxrkit that raised them means nothing to a user."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"cxrkit {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _user_message(exc: BaseException, args: argparse.Namespace) -> str:
    """The message of a user error, with command-line advice in place of
    the Python API's (``pass on_error='skip'``), for the command given."""
    from cxrkit.images._reading import ImageReadError

    if isinstance(exc, ImageReadError):
        hint = "Remove or fix these files"
        if hasattr(args, "on_error"):  # the command accepts --on-error
            hint += ", or add --on-error skip to leave them out with a warning"
        return str(ImageReadError(exc.failures, hint=hint + "."))
    return str(exc)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that its flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a captured stdout has no file descriptor
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cxrkit`` command line; returns the exit code."""
    args = _build_parser().parse_args(argv)
    if os.environ.get("CXRKIT_REUSE_BUFFERS") == "1":
        # asked for: keep large freed buffers for reuse (cxrkit.training)
        reuse_large_buffers()
    try:
        with _plain_warnings(args.command):
            code = args.func(args)
        sys.stdout.flush()  # a closed pipe (cxrkit predict ... | head) shows here
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a process a pipe closed
    except KeyboardInterrupt:
        print(f"cxrkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if getattr(args, "debug", False) or not _is_user_error(exc):
            raise
        print(
            f"cxrkit {args.command}: error: {_user_message(exc, args)}", file=sys.stderr
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
