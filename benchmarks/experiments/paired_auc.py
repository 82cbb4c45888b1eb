"""Paired ROC AUC difference of saved runs on the same test images.

    python benchmarks/experiments/paired_auc.py BASE.npz OTHER.npz [...]

Each file is a ``recipe.py --save`` (or ``site_shift_features.py``) ``.npz``
with ``X_test``, ``y_test`` and ``proba_test``; the runs are aligned by
path (made absolute, so runs saved from different folders pair) and
compared with ``cxrkit.metrics.ModelComparison`` (one shared matrix of
stratified bootstrap resamples, 2,000 by default): prints one JSON line with
each run's ROC AUC and its difference to the first, with a paired 95%
interval. When every run has a threshold (the rule's: the ``.npz`` records
it, or the ``.cxr`` beside it for runs saved before), also
sensitivity, specificity and accuracy at each run's own threshold and
their paired differences to the first (its calls at its threshold, on the
same resamples).

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cxrkit.metrics import ModelComparison

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json, run_threshold, test_images


def positive_scores(run: np.lib.npyio.NpzFile) -> np.ndarray:
    proba = np.asarray(run["proba_test"], dtype=float)
    return proba[:, 1] if proba.ndim == 2 else proba


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    args = parser.parse_args(argv)
    runs = [np.load(path) for path in args.runs]
    first = test_images(runs[0])
    order = np.argsort(first)
    paths = first[order]
    y = np.asarray(runs[0]["y_test"])[order]
    y = (y.astype(str) == "PNEUMONIA") | (y.astype(str) == "1")
    probas = {}
    for path, run in zip(args.runs, runs):
        by_path = dict(zip(test_images(run), positive_scores(run)))
        if sorted(by_path) != list(paths):
            raise SystemExit(
                f"{path}: tested on other images than {args.runs[0]} "
                f"({len(set(by_path) ^ set(paths))} differ); pair runs of one "
                "test folder"
            )
        probas[Path(path).stem] = np.array([by_path[p] for p in paths])
    comparison = ModelComparison.from_predictions(
        y.astype(int), probas, n_bootstrap=args.n_bootstrap, random_state=0
    )
    diffs = comparison.auc_differences()
    result = {
        name: {
            "roc_auc": round(report.metrics["roc_auc"].value, 4),
            "minus_first": None
            if name not in diffs
            else [
                round(diffs[name].value, 4),
                round(diffs[name].low, 4),
                round(diffs[name].high, 4),
            ],
        }
        for name, report in comparison.reports.items()
    }
    thresholds = [
        run_threshold(Path(path), run, required=False)
        for path, run in zip(args.runs, runs)
    ]
    if None not in thresholds:
        calls = {  # each run's calls at its own threshold, compared at 0.5
            name: (p >= t).astype(float)
            for (name, p), t in zip(probas.items(), thresholds)
        }
        at_threshold = ModelComparison.from_predictions(
            y.astype(int), calls, n_bootstrap=args.n_bootstrap, random_state=0
        )
        first = next(iter(calls))
        for name, threshold in zip(calls, thresholds):
            row = result[name]
            row["threshold"] = round(threshold, 4)
            for metric in ("sensitivity", "specificity", "accuracy"):
                row[metric] = round(at_threshold.reports[name].metrics[metric].value, 4)
                if name != first:
                    diff = at_threshold.mean_difference([name], [first], metric)
                    row[f"{metric}_minus_first"] = [
                        round(diff.value, 4),
                        round(diff.low, 4),
                        round(diff.high, 4),
                    ]
    print_json(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
