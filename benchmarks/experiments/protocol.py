"""Run training recipes through the shift-aware validation protocol; save probabilities.

    python benchmarks/experiments/protocol.py --train ../shared/data/chest_xray/train \
        --out /tmp/protocol --configs benchmarks/experiments/protocol_configs.json \
        [--only baseline clahe] [--seeds 0 1 2] [--splits matched lbo0 lbo1] \
        [--workers 2] [--threads 1] [--device auto] [--external DIR | --no-external]

Each job (configuration x seed x split) does what ``recipe.py`` does for a
user, on a part of ``--train``:

* ``external`` (first: recipes are selected there): every job's model
  predicts every image of an external site, ``--external DIR`` (by default
  ``../shared/data/chest_xray/external`` when it exists; ``--no-external``
  skips it). The site is scored as a whole; nothing is fitted, picked or
  thresholded on it.
* ``matched``: ``cxrkit.validation.ConfounderMatchedSplit`` (a third of the
  patients; the matched holdout, and the whole pool as an ordinary
  in-distribution holdout); ``lbo0`` / ``lbo1``: the two folds of
  ``cxrkit.validation.LeaveBatchOut(2)``. The splits do not depend on the
  seed, so configurations are compared on the same images.
* From the training part, a patient-grouped 10% threshold split is held out
  (and its confounder-matched subset marked), as the recipe does; the model
  is fitted on the rest.
* Probabilities of PNEUMONIA are saved for the threshold split and for every
  holdout, and for the synthetic shift battery (``cxrkit.validation.SHIFTS``)
  applied to the matched holdout and to the matched threshold subset.

Decision rules and figures are computed afterwards from the saved files by
``protocol_report.py``, so that rules can be compared without training
again. Each job prints one JSON line and writes
``OUT/CONFIG__sSEED__SPLIT.npz``.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import EXTERNAL, peak_rss_mb, print_json

SPLITS = ("matched", "lbo0", "lbo1")


def _split(split: str, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple:
    from cxrkit.validation import ConfounderMatchedSplit, LeaveBatchOut

    if split == "matched":
        cv = ConfounderMatchedSplit(random_state=0)
        train, matched = next(cv.split(X, y, groups))
        return train, {"pool": cv.pool_, "matched": matched}, matched
    if split.startswith("lbo"):
        train, batch = list(LeaveBatchOut(2).split(X, y, groups))[int(split[3:])]
        return train, {"batch": batch}, None
    raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")


def score_external(clf, external_dir: str) -> dict[str, np.ndarray]:
    """P(PNEUMONIA) of a fitted model on every image of an external site.

    The site is a validation only: it is scored as a whole, never fitted on
    and never sampled from, and no threshold is chosen on it (the decision
    rules of ``protocol_report.py`` choose theirs on the job's threshold
    split, as for every other validation).

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted binary model with a ``"PNEUMONIA"`` class.
    external_dir : str
        A NORMAL / PNEUMONIA class-per-subfolder tree.

    Returns
    -------
    dict of str to ndarray
        ``X_external`` (file names, sorted, so runs can be checked to hold
        the same images), ``y_external`` (1 = PNEUMONIA) and ``p_external``.
    """
    from cxrkit import load_image_folder

    X, y = load_image_folder(external_dir)
    order = np.argsort(X)
    X, y = X[order], y[order]
    positive = list(clf.classes_).index("PNEUMONIA")
    return {
        "X_external": np.array([Path(x).name for x in X]),
        "y_external": (y == "PNEUMONIA").astype(np.int8),
        "p_external": clf.predict_proba(X)[:, positive].astype(np.float32),
    }


def run_job(
    train_dir: str,
    name: str,
    params: dict,
    seed: int,
    split: str,
    out: str,
    threads: int,
    device: str,
    limit: int | None = None,
    external: str | None = None,
) -> dict:
    """Fit one configuration on one split; save the probabilities; return a summary."""
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message=".*no Kermany patient id.*")
    from cxrkit import PneumoniaClassifier, load_image_folder, load_images
    from cxrkit.recipes import RECIPES
    from cxrkit.validation import SHIFTS, ConfounderMatchedSplit, shift_images

    X, y = load_image_folder(train_dir)
    if limit:  # a quick check of the script: every k-th image
        keep = np.linspace(0, len(X) - 1, limit).astype(int)
        X, y = X[keep], y[keep]
    from cxrkit import patient_groups

    groups = patient_groups(X)
    train_part, holdouts, shift_set = _split(split, X, y, groups)

    thr_cv = ConfounderMatchedSplit(holdout_fraction=0.1, n_bins=5, random_state=1)
    _, thr_matched = next(
        thr_cv.split(X[train_part], y[train_part], groups[train_part])
    )
    thr_pool = train_part[thr_cv.pool_]
    thr_matched = train_part[thr_matched]
    fit_idx = np.setdiff1d(train_part, thr_pool)

    recipe = dict(RECIPES[params.get("recipe", "cpu")])
    recipe.update({k: v for k, v in params.items() if k not in ("recipe", "tta_eval")})
    recipe.update(random_state=seed, device=device)
    clf = PneumoniaClassifier(**recipe)
    start = time.perf_counter()
    clf.fit(X[fit_idx], y[fit_idx])
    fit_seconds = time.perf_counter() - start
    positive = list(clf.classes_).index("PNEUMONIA")

    saved: dict[str, np.ndarray] = {"y": (y == "PNEUMONIA").astype(np.int8)}
    sets = {"threshold": thr_pool, "threshold_matched": thr_matched, **holdouts}
    start = time.perf_counter()
    if external:  # the external site first: the validation recipes are chosen on
        saved.update(score_external(clf, external))
    for key, idx in sets.items():
        saved[f"idx_{key}"] = idx
        if key != "threshold_matched":  # a subset of "threshold"
            saved[f"p_{key}"] = clf.predict_proba(X[idx])[:, positive].astype(
                np.float32
            )
    shifted_sets = {"threshold_matched": thr_matched}
    if shift_set is not None:
        shifted_sets["matched"] = shift_set
    for key, idx in shifted_sets.items():
        originals, _ = load_images(X[idx], 224)
        for shift in ("none", *SHIFTS):
            images = originals if shift == "none" else shift_images(originals, shift)
            p = clf.predict_proba(images)[:, positive]
            saved[f"p_{key}@{shift}"] = p.astype(np.float32)
    if params.get("tta_eval"):
        clf.set_params(tta=int(params["tta_eval"]))
        for key, idx in sets.items():
            if key != "threshold_matched":
                p = clf.predict_proba(X[idx])[:, positive]
                saved[f"p_{key}+tta"] = p.astype(np.float32)
    predict_seconds = time.perf_counter() - start

    summary = {
        "config": name,
        "seed": seed,
        "split": split,
        "n_external": len(saved.get("y_external", ())),
        "params": {k: v for k, v in recipe.items() if k != "verbose"},
        "n_fit": len(fit_idx),
        "n_threshold": len(thr_pool),
        "n_threshold_matched": len(thr_matched),
        **{f"n_{k}": len(v) for k, v in holdouts.items()},
        "epochs_run": len(clf.history_),
        "fit_seconds": round(fit_seconds, 1),
        "predict_seconds": round(predict_seconds, 1),
        "epoch_seconds": [round(float(e["dur"]), 1) for e in clf.history_],
        "train_loss": [round(float(e["train_loss"]), 4) for e in clf.history_],
        "peak_rss_mb": round(peak_rss_mb()),
        "device": clf.device_,
    }
    path = Path(out) / f"{name}__s{seed}__{split}.npz"
    np.savez_compressed(path, meta=json.dumps(summary), **saved)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--configs", required=True, help="JSON file: name -> params")
    parser.add_argument("--only", nargs="*", help="configuration names to run")
    parser.add_argument(
        "--seeds",
        nargs="*",
        type=int,
        default=[0, 1, 2],
        help="training seeds (default 0 1 2: recipes are compared over 3 or more)",
    )
    parser.add_argument("--splits", nargs="*", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per job")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, help="override max_epochs (smoke runs)")
    parser.add_argument("--image-size", type=int, help="override (smoke runs)")
    parser.add_argument("--limit", type=int, help="use only this many images (smoke)")
    parser.add_argument("--skip-done", action="store_true")
    parser.add_argument(
        "--external",
        default=str(EXTERNAL) if EXTERNAL.is_dir() else None,
        metavar="DIR",
        help="an external site (NORMAL/PNEUMONIA folders) every model is scored "
        "on as a whole, never fitted on; default: ../shared/data/chest_xray/"
        "external when it exists",
    )
    parser.add_argument(
        "--no-external", action="store_true", help="score no external site"
    )
    args = parser.parse_args(argv)
    if args.no_external:
        args.external = None

    configs = json.loads(Path(args.configs).read_text())
    names = args.only or [n for n in configs if not n.startswith("_")]
    os.makedirs(args.out, exist_ok=True)
    jobs = []
    # Split first, then seed: if the run is cut short, every configuration
    # has its matched holdout and first seed.
    for split in args.splits:
        for seed in args.seeds:
            for name in names:
                params = dict(configs[name])
                if args.epochs:
                    params["max_epochs"] = args.epochs
                if args.image_size:
                    params["image_size"] = args.image_size
                done = Path(args.out) / f"{name}__s{seed}__{split}.npz"
                if args.skip_done and done.exists():
                    continue
                jobs.append((name, params, seed, split))
    common = (args.out, args.threads, args.device, args.limit, args.external)
    if args.workers <= 1:
        for name, params, seed, split in jobs:
            result = run_job(args.train, name, params, seed, split, *common)
            print_json(result)
        return
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = {
            pool.submit(run_job, args.train, name, params, seed, split, *common): (
                name,
                seed,
                split,
            )
            for name, params, seed, split in jobs
        }
        for future in as_completed(futures):
            try:
                print_json(future.result())
            except Exception as exc:  # report and go on with the other jobs
                name, seed, split = futures[future]
                print(
                    json.dumps(
                        {
                            "config": name,
                            "seed": seed,
                            "split": split,
                            "error": repr(exc),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main(sys.argv[1:])
