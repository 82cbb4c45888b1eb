"""Train a cxrkit recipe on a folder and evaluate it on another; print one JSON line.

    python benchmarks/experiments/recipe.py --train DIR --test DIR \
        [--recipe efficientnet_lite0_frozen] [--model ...]

``--train`` and ``--test`` are class-per-subfolder trees (NORMAL/PNEUMONIA).
A patient pool of 10% of ``--train`` is held out and matched on acquisition
traits (``cxrkit.validation.ConfounderMatchedSplit``); the recipe trains on
the rest. The operating threshold is chosen on that matched threshold split
by a decision rule (``--rule``, named in the JSON):

* ``robust_shift`` (default): ``cxrkit.metrics.select_robust_threshold`` on
  the split as acquired and under every synthetic shift of
  ``cxrkit.validation.SHIFTS``: the threshold whose worst case over those
  versions keeps sensitivity >= ``--min-sensitivity`` (0.95) and
  specificity >= ``--min-specificity`` (0.85) by the widest margin;
* ``sensitivity``: the highest threshold with sensitivity >=
  ``--target-sensitivity`` (0.98) on the split as acquired (cxrkit 0.1's
  rule; it gave threshold 0.084 and specificity 0.598 on the official test
  split);
* ``balanced_accuracy``: scikit-learn's ``TunedThresholdClassifierCV``
  (``--balanced-accuracy`` is the same).

``--test`` is touched only once, for the final figures, which come with
seeded bootstrap 95% confidence intervals. ``--site DIR`` adapts the model
to a new site first, with the site's labelled images (``cxrkit.adaptation``;
``--site-steps``, by default ``head,calibrate``: the final layer refitted
near the trained one, then Platt scaling and the threshold with the fewest
expected errors there, ``--site-rule accuracy``, the best-measured
workflow of the docs' *Adapting to a new site* page; ``--site-rule
sensitivity``: temperature scaling and the threshold that keeps
``--min-sensitivity`` of new positives on average; after ``head``, both
on out-of-fold probabilities of the site's images), and the figures on
``--test`` are then at the site's threshold.
``--subtypes`` trains the three-class NORMAL / BACTERIA / VIRUS problem
instead (argmax, no threshold).

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedGroupKFold, TunedThresholdClassifierCV

from cxrkit import clear_image_cache, load_image_folder, patient_groups
from cxrkit.adaptation import (
    adapt_batchnorm,
    adapt_head,
    adapt_prior,
    adjust_probabilities,
    calibrate,
    head_cross_val_proba,
)
from cxrkit.metrics import clinical_report, select_robust_threshold, select_threshold
from cxrkit.persistence import operating_threshold
from cxrkit.recipes import RECIPES, RECOMMENDED, make_classifier
from cxrkit.validation import SHIFTS, ConfounderMatchedSplit, shifted_predictions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import peak_rss_mb, print_json

RULES = ("robust_shift", "sensitivity", "balanced_accuracy")


#: The figures of the JSON -> their names in ``cxrkit.metrics.clinical_report``.
FIGURES = {
    "accuracy": "accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "precision": "ppv",
    "f1": "f1",
    "roc_auc": "roc_auc",
}


def binary_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """Clinical metrics of ``score >= threshold`` against ``y`` (1 = PNEUMONIA)."""
    report = clinical_report(y, score, threshold=threshold, n_bootstrap=0)
    return {k: report.metrics[name].value for k, name in FIGURES.items()}


def bootstrap_ci(
    y: np.ndarray, score: np.ndarray, threshold: float, n: int = 1000, seed: int = 0
) -> dict:
    """95% intervals of :func:`binary_metrics`: ``clinical_report``'s bootstrap."""
    report = clinical_report(
        y, score, threshold=threshold, n_bootstrap=n, random_state=seed
    )
    return {
        k: [round(report.metrics[name].low, 4), round(report.metrics[name].high, 4)]
        for k, name in FIGURES.items()
    }


def adapt_to_site(clf, site: str, steps: str, rule: str, min_sensitivity: float):
    """The workflow of the docs' *Adapting to a new site* page, on a labelled folder."""
    X_site, y_site = load_image_folder(site)
    oof = None  # after head: out-of-fold probabilities of the site's images
    for step in steps.split(","):
        if step == "batchnorm":
            clf = adapt_batchnorm(clf, X_site)
        elif step == "prior":
            clf = adapt_prior(clf, X_site)
        elif step == "head":
            oof = head_cross_val_proba(clf, X_site, y_site)
            clf = adapt_head(clf, X_site, y_site)
        elif step == "calibrate":
            proba = None if oof is None else adjust_probabilities(oof, clf.adaptation_)
            if rule == "accuracy":
                kwargs = {"method": "platt", "threshold": "accuracy"}
            else:
                kwargs = {"sensitivity": min_sensitivity}
            clf = calibrate(clf, X_site, y_site, proba=proba, **kwargs)
        else:
            raise SystemExit(f"unknown --site-steps step {step!r}")
    if clf.operating_threshold_ is None or "site" not in str(
        clf.operating_threshold_.get("source")
    ):
        raise SystemExit("--site-steps must end with calibrate (the site threshold)")
    return clf


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--recipe", default=RECOMMENDED, choices=sorted(RECIPES))
    parser.add_argument("--model", help="override the recipe's architecture")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="PARAM=JSON",
        help="parameters of the recipe to replace; values are JSON, or strings",
    )
    parser.add_argument("--subtypes", action="store_true")
    parser.add_argument(
        "--rule",
        choices=RULES,
        default="robust_shift",
        help="how the threshold is chosen on the threshold split (default "
        "robust_shift)",
    )
    parser.add_argument("--min-sensitivity", type=float, default=0.95)
    parser.add_argument("--min-specificity", type=float, default=0.85)
    parser.add_argument(
        "--target-sensitivity",
        type=float,
        default=0.98,
        help="--rule sensitivity: the highest threshold reaching this sensitivity "
        "on the threshold split (cxrkit.metrics.select_threshold; default 0.98)",
    )
    parser.add_argument(
        "--balanced-accuracy",
        action="store_true",
        help="the same as --rule balanced_accuracy",
    )
    parser.add_argument(
        "--save",
        metavar="PREFIX",
        help="also write PREFIX.cxr (the fitted model) and PREFIX.npz (labels and "
        "probabilities of the threshold split and of --test) for later analysis",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the training")
    parser.add_argument(
        "--split-seed", type=int, default=0, help="seed of the threshold split"
    )
    parser.add_argument(
        "--site",
        metavar="DIR",
        help="a new site's labelled folder: adapt to it (--site-steps) and choose "
        "the threshold on it (--site-rule) before scoring --test; without it, "
        "nothing but --train is seen",
    )
    parser.add_argument(
        "--site-steps",
        default="head,calibrate",
        help="comma-separated steps of cxrkit.adaptation for --site, in order, "
        "from batchnorm, prior (its images), head and calibrate (its labels); "
        "default: head,calibrate",
    )
    parser.add_argument(
        "--site-rule",
        choices=("accuracy", "sensitivity"),
        default="accuracy",
        help="the site's threshold: accuracy (Platt scaling, the fewest expected "
        "errors; default) or sensitivity (temperature scaling, the threshold "
        "that keeps --min-sensitivity of new positives on average)",
    )
    args = parser.parse_args(argv)
    if args.balanced_accuracy:
        args.rule = "balanced_accuracy"
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*no Kermany patient id.*")

    overrides: dict = {"random_state": args.seed}
    if args.model:
        overrides["model"] = args.model
        kept = {
            key: RECIPES[args.recipe][key]
            for key in ("pretrained", "freeze")
            if RECIPES[args.recipe].get(key) is not None
        }
        if kept and args.model != RECIPES[args.recipe]["model"]:
            warnings.warn(
                f"--model {args.model} keeps the {args.recipe!r} recipe's "
                f"{kept}; for a model trained from scratch, pass --recipe cpu, "
                "or --set pretrained=null freeze=null",
                stacklevel=1,
            )
    if args.image_size:
        overrides["image_size"] = args.image_size
    if args.epochs:
        overrides["max_epochs"] = args.epochs
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:  # a bare word: --set model=resnet18
            overrides[key] = value
    clf = make_classifier(args.recipe, **overrides)

    X, y = load_image_folder(args.train, subtypes=args.subtypes)
    X_test, y_test = load_image_folder(args.test, subtypes=args.subtypes)
    # --8<-- [start:split]
    groups = patient_groups(X)
    splitter = ConfounderMatchedSplit(
        holdout_fraction=0.1, n_bins=5, random_state=args.split_seed
    )
    try:
        if args.subtypes:  # three classes, no threshold: a plain patient split
            raise ValueError("three classes")
        fit_idx, tune_idx = next(splitter.split(X, y, groups))
    except ValueError as exc:  # e.g. classes that do not overlap in their traits
        if not args.subtypes:
            warnings.warn(f"plain patient split for the threshold: {exc}", stacklevel=1)
        splitter = StratifiedGroupKFold(10, shuffle=True, random_state=args.split_seed)
        fit_idx, tune_idx = next(splitter.split(X, y, groups))

    start = time.perf_counter()
    clf.fit(X[fit_idx], y[fit_idx])
    # --8<-- [end:split]
    fit_seconds = time.perf_counter() - start

    result: dict = {
        "recipe": args.recipe,
        "params": {k: v for k, v in clf.get_params().items() if k != "verbose"},
        "n_train": len(fit_idx),
        "n_threshold": len(tune_idx),
        "n_test": len(X_test),
        "threshold_split": {
            "kind": type(splitter).__name__,
            "trait_auc": {
                k: round(v, 4) for k, v in getattr(splitter, "trait_auc_", {}).items()
            },
            "n_dropped": int(getattr(splitter, "n_dropped_", 0)),
        },
        "threshold_rule": {
            "robust_shift": "select_robust_threshold over the threshold split as "
            f"acquired and under {len(SHIFTS)} shifts: sensitivity >= "
            f"{args.min_sensitivity}, specificity >= {args.min_specificity}",
            "sensitivity": f"sensitivity >= {args.target_sensitivity} on the "
            "threshold split as acquired",
            "balanced_accuracy": "best balanced accuracy on the threshold split",
        }[args.rule],
        "rule": args.rule,
        "epochs_run": len(clf.history_),
        "fit_seconds": round(fit_seconds, 1),
    }
    clear_image_cache()  # predict speed includes decoding, as for new images
    start = time.perf_counter()
    proba = clf.predict_proba(X_test)
    result["predict_images_per_second"] = round(
        len(X_test) / (time.perf_counter() - start), 1
    )

    proba_tune = None  # the threshold split's probabilities, predicted once
    if args.subtypes:
        pred = clf.classes_[proba.argmax(axis=1)]
        result["accuracy"] = round(accuracy_score(y_test, pred), 4)
        recalls = recall_score(y_test, pred, labels=clf.classes_, average=None)
        result["confusion_matrix"] = {  # rows: true class; columns: classes_
            str(c): row.tolist()
            for c, row in zip(
                clf.classes_, confusion_matrix(y_test, pred, labels=clf.classes_)
            )
        }
        result["recall"] = {
            str(c): round(float(r), 4) for c, r in zip(clf.classes_, recalls)
        }
        result["roc_auc_ovr"] = round(
            roc_auc_score(y_test, proba, multi_class="ovr", labels=clf.classes_), 4
        )
    else:
        # --8<-- [start:threshold]
        if args.rule == "robust_shift":  # the split as acquired and under shifts
            probas = shifted_predictions(clf, X[tune_idx])
            point = select_robust_threshold(
                y[tune_idx],
                probas,
                min_sensitivity=args.min_sensitivity,
                min_specificity=args.min_specificity,
                classes=clf.classes_,
            )
            threshold = float(point.threshold)
            proba_tune = probas["none"]
        elif args.rule == "balanced_accuracy":
            proba_tune = clf.predict_proba(X[tune_idx])
            tuner = TunedThresholdClassifierCV(
                clf, scoring="balanced_accuracy", cv="prefit", refit=False
            ).fit(X[tune_idx], y[tune_idx])
            threshold = float(tuner.best_threshold_)
        else:  # the highest threshold reaching the target on held-out patients
            proba_tune = clf.predict_proba(X[tune_idx])
            point = select_threshold(
                y[tune_idx],
                proba_tune,
                sensitivity=args.target_sensitivity,
                classes=clf.classes_,
            )
            threshold = float(point.threshold)
        # --8<-- [end:threshold]
        if args.site:  # the documented workflow for a new site, then --test
            clf = adapt_to_site(
                clf, args.site, args.site_steps, args.site_rule, args.min_sensitivity
            )
            threshold = float(clf.operating_threshold_["threshold"])
            result["site"] = {
                "dir": args.site,
                "rule": args.site_rule,
                "steps": clf.adaptation_["steps"],
                "threshold": clf.operating_threshold_,
            }
            proba = clf.predict_proba(X_test)
        positive = list(clf.classes_).index("PNEUMONIA")
        y_bin = (y_test == "PNEUMONIA").astype(int)
        score = proba[:, positive]
        metrics = binary_metrics(y_bin, score, threshold)
        result.update({k: round(float(v), 4) for k, v in metrics.items()})
        result["threshold"] = round(threshold, 4)
        result["at_0.5"] = {
            k: round(float(v), 4) for k, v in binary_metrics(y_bin, score, 0.5).items()
        }
        result["ci95"] = bootstrap_ci(y_bin, score, threshold, seed=0)
    if args.save:  # with the operating threshold chosen (two classes)
        if not args.subtypes and not args.site:  # else: the site's, recorded
            clf.operating_threshold_ = operating_threshold(
                threshold,
                pos_label="PNEUMONIA",
                source=f"{args.rule} rule on {len(tune_idx)} held-out training images",
            )
        clf.save(args.save + ".cxr")
        np.savez(
            args.save + ".npz",
            classes=clf.classes_.astype(str),
            X_threshold=X[tune_idx].astype(str),
            y_threshold=y[tune_idx].astype(str),
            proba_threshold=(
                clf.predict_proba(X[tune_idx]) if proba_tune is None else proba_tune
            ),
            y_test=y_test.astype(str),
            proba_test=proba,
            X_test=X_test.astype(str),
            threshold=np.nan if args.subtypes else threshold,
        )
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["train_loss_per_epoch"] = [
        round(float(e["train_loss"]), 4) for e in clf.history_
    ]
    result["epoch_seconds"] = [round(float(e["dur"]), 1) for e in clf.history_]
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
