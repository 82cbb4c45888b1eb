"""Score saved ablation runs with paired intervals; add TTA and ensembles.

    python benchmarks/experiments/posthoc.py --dir DIR --train TRAIN90 \
        [--baseline baseline] [--tta NAME ...] [--tta-copies 4] [--ensemble A+B ...]

``DIR`` holds the ``NAME.npz`` / ``NAME.cxr`` pairs that
``benchmarks/experiments/ablations.py`` (``recipe.py --save``) wrote. For every run, and
for every ensemble (mean probability of the named runs) and test-time
augmentation (``tta`` copies, re-predicted from the saved model) asked for,
one JSON line: ROC AUC with its 95% interval, the AUC difference to
``--baseline`` with a *paired* interval (the same bootstrap resamples for
both), and sensitivity / specificity / accuracy with intervals at the
threshold chosen on the run's threshold split (the highest reaching
sensitivity ``--target-sensitivity``). All runs must share the threshold split
(``recipe.py --split-seed``, 0 by default). ``--markdown`` prints a table.
For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from cxrkit import PneumoniaClassifier, load_image_folder, patient_groups
from cxrkit.images import load_images
from cxrkit.metrics import clinical_report, select_threshold
from cxrkit.report import ModelComparison

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json


def _threshold_paths(train: str, split_seed: int = 0) -> np.ndarray:
    """The threshold split of ``recipe.py`` (for runs saved without it)."""
    X, y = load_image_folder(train)
    splitter = StratifiedGroupKFold(10, shuffle=True, random_state=split_seed)
    _, tune_idx = next(splitter.split(X, y, patient_groups(X)))
    return X[tune_idx]


#: Acquisition-like changes applied to the test images (uint8, 0-255) for
#: ``--shifts``: exposure (gamma), flatter contrast, and softer focus.
SHIFTS = {
    "darker": lambda x: 255.0 * (x / 255.0) ** 1.5,
    "brighter": lambda x: 255.0 * (x / 255.0) ** (1 / 1.5),
    "low_contrast": lambda x: 0.6 * x + 0.4 * x.mean(axis=(1, 2), keepdims=True),
    "blur": lambda x: ndimage.gaussian_filter(x, sigma=(0, 1.5, 1.5)),
}


def shifted_scores(
    clf: PneumoniaClassifier, X_test: np.ndarray, y_test: np.ndarray, threshold: float
) -> dict:
    """ROC AUC, sensitivity and specificity on shifted copies of the test images."""
    images, _ = load_images(X_test, clf.image_size)
    positive = list(clf.classes_).index("PNEUMONIA")
    sick = y_test == "PNEUMONIA"
    out = {}
    for name, shift in SHIFTS.items():
        moved = np.clip(shift(images.astype(np.float64)), 0, 255).round()
        score = clf.predict_proba(moved.astype(np.uint8))[:, positive]
        out[name] = {
            "roc_auc": round(roc_auc_score(sick, score), 4),
            "sensitivity": round(float((score[sick] >= threshold).mean()), 4),
            "specificity": round(float((score[~sick] < threshold).mean()), 4),
        }
    return out


def load_runs(folder: Path) -> dict[str, dict]:
    runs = {}
    for path in sorted(folder.glob("*.npz")):
        # Files this project wrote itself; early runs stored object arrays.
        data = np.load(path, allow_pickle=True)
        runs[path.stem] = {key: data[key] for key in data.files}
    return runs


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--train", help="the --train of the runs (for TTA)")
    parser.add_argument("--baseline", default="baseline")
    parser.add_argument("--tta", nargs="*", default=[], metavar="NAME")
    parser.add_argument("--tta-copies", type=int, default=4)
    parser.add_argument("--ensemble", nargs="*", default=[], metavar="A+B")
    parser.add_argument("--target-sensitivity", type=float, default=0.97)
    parser.add_argument(
        "--shifts",
        action="store_true",
        help="also score each saved model on darker, brighter, flatter and "
        "blurred copies of the test images (a robustness check, not a test set)",
    )
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*no Kermany patient id.*")

    folder = Path(args.dir)
    runs = load_runs(folder)
    if args.baseline not in runs:
        parser.error(f"no {args.baseline}.npz in {folder}")
    base = runs[args.baseline]
    for name in args.ensemble:
        members = [runs[m] for m in name.split("+")]
        runs[name] = {
            **members[0],
            "proba_threshold": np.mean([m["proba_threshold"] for m in members], 0),
            "proba_test": np.mean([m["proba_test"] for m in members], 0),
        }
    for name in args.tta:
        clf = PneumoniaClassifier.load(folder / f"{name}.cxr")
        clf.set_params(tta=args.tta_copies)
        run = runs[name]
        X_thr = run.get("X_threshold")
        if X_thr is None:
            X_thr = _threshold_paths(args.train)
        runs[f"{name}+tta{args.tta_copies}"] = {
            **run,
            "proba_threshold": clf.predict_proba(X_thr),
            "proba_test": clf.predict_proba(run["X_test"]),
        }

    classes = base["classes"]
    comparison = ModelComparison.from_predictions(
        base["y_test"],
        {args.baseline: base["proba_test"]}
        | {k: v["proba_test"] for k, v in runs.items() if k != args.baseline},
        classes=classes,
        n_bootstrap=2000,
    )
    diffs = comparison.auc_differences()
    rows = []
    for name, run in runs.items():
        if not np.array_equal(run["y_test"], base["y_test"]):
            raise ValueError(f"{name} was scored on other test images than baseline")
        point = select_threshold(
            run["y_threshold"],
            run["proba_threshold"],
            sensitivity=args.target_sensitivity,
            classes=classes,
        )
        report = clinical_report(
            run["y_test"], run["proba_test"], threshold=point.threshold, classes=classes
        )
        row = {"run": name, "threshold": round(point.threshold, 4)}
        for key in ("roc_auc", "sensitivity", "specificity", "accuracy"):
            e = report.metrics[key]
            row[key] = [round(e.value, 4), round(e.low, 4), round(e.high, 4)]
        if name in diffs:
            d = diffs[name]
            row["roc_auc_minus_baseline"] = [
                round(d.value, 4),
                round(d.low, 4),
                round(d.high, 4),
            ]
        model_file = folder / f"{name}.cxr"
        if args.shifts and model_file.exists():
            row["shifted"] = shifted_scores(
                PneumoniaClassifier.load(model_file),
                run["X_test"],
                run["y_test"],
                point.threshold,
            )
        rows.append(row)
        print_json(row)
    if args.markdown:
        print(
            "\n| run | ROC AUC (95% CI) | AUC - baseline (paired 95% CI) | "
            "threshold | sensitivity | specificity | accuracy |\n"
            "|---|---|---|---|---|---|---|"
        )
        for r in rows:
            auc, dif = r["roc_auc"], r.get("roc_auc_minus_baseline")
            cells = [
                r["run"],
                f"{auc[0]:.4f} ({auc[1]:.4f}-{auc[2]:.4f})",
                f"{dif[0]:+.4f} ({dif[1]:+.4f} - {dif[2]:+.4f})" if dif else "-",
                f"{r['threshold']:.3f}",
                *(
                    f"{r[k][0]:.3f} ({r[k][1]:.3f}-{r[k][2]:.3f})"
                    for k in ("sensitivity", "specificity", "accuracy")
                ),
            ]
            print("| " + " | ".join(cells) + " |")
        shifted = [r for r in rows if "shifted" in r]
        if shifted:
            print(
                "\n| run | "
                + " | ".join(f"{k}: AUC / sens / spec" for k in SHIFTS)
                + " |\n|---|"
                + "---|" * len(SHIFTS)
            )
            for r in shifted:
                cells = [
                    "{roc_auc:.3f} / {sensitivity:.3f} / {specificity:.3f}".format(
                        **r["shifted"][k]
                    )
                    for k in SHIFTS
                ]
                print(f"| {r['run']} | " + " | ".join(cells) + " |")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
