"""Compare recipes on an external site, over seeds, with paired intervals; print JSON.

    python benchmarks/experiments/external.py RUNS/*.npz --baseline cpu [--markdown]

Each ``RUNS/NAME_sSEED.npz`` is what ``benchmarks/experiments/recipe.py --test SITE
--save RUNS/NAME_sSEED`` wrote (its ``.cxr`` beside it records the threshold
the recipe's rule chose on held-out *training* patients). Runs are grouped by
``NAME``; for every recipe and seed, one JSON line with ROC AUC and, at the
run's own threshold, sensitivity, specificity and accuracy, each with a
stratified bootstrap 95% interval (``cxrkit.metrics.clinical_report``), and
the ROC AUC difference to ``--baseline`` of the same seed with a *paired*
interval (``cxrkit.metrics.ModelComparison``: both on the same resamples).
Then one line per recipe: the mean over seeds and the seed spread (min and
max), and the seed ensemble (mean probability over the seeds) as a recipe of
its own (``seed_ensemble``). Ensembles of two recipes: ``--ensemble A+B``,
the mean probability of the two runs of each seed.

An ensemble's threshold (a seed ensemble's too) is the one the recipes'
default rule (``robust_shift`` of ``recipe.py``) chooses for the ensemble
itself: on the members' mean probability of the same held-out training
patients (the ``X_threshold`` of their ``.npz``), as acquired and under
``cxrkit.validation.SHIFTS``, with ``--min-sensitivity`` and
``--min-specificity``. That needs each member's ``.cxr``; the mean of the
members' own thresholds is not a threshold either of them chose.

``--shifts`` adds the synthetic protocol beside the site: each run's ROC
AUC on its threshold split (held-out training patients) as acquired and
under each shift, and the worst of them.

The site's figures were used for choices, so they are not an independent
claim; the held-out part of the test split is.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrkit import PneumoniaClassifier
from cxrkit.metrics import ModelComparison, clinical_report, select_robust_threshold
from cxrkit.validation import shifted_predictions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json, run_threshold, test_images

_RUN = re.compile(r"(?P<name>.+)_s(?P<seed>\d+)$")


def load_runs(paths: list[str]) -> tuple[np.ndarray, dict[str, dict[int, dict]]]:
    """Test labels and, per recipe and seed, P(PNEUMONIA) and the threshold."""
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    y_ref = None
    for path in map(Path, paths):
        match = _RUN.match(path.stem)
        if not match:
            raise SystemExit(f"{path}: expected a name NAME_sSEED.npz")
        data = np.load(path)
        classes = list(data["classes"])
        y = (data["y_test"] == "PNEUMONIA").astype(int)
        images = test_images(data)
        order = np.argsort(images)
        if y_ref is None:
            y_ref, x_ref = y[order], images[order]
        elif not np.array_equal(images[order], x_ref):
            raise SystemExit(f"{path}: tested on other images than the first run")
        runs[match["name"]][int(match["seed"])] = {
            "p": data["proba_test"][order, classes.index("PNEUMONIA")],
            "threshold": run_threshold(path, data),
            "paths": [path],  # the runs whose mean it is
        }
    return y_ref, runs


def threshold_split(
    path: Path, cache: dict
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A run's threshold split: paths, labels, and its model's predictions of
    them as acquired and under every shift; computed once per run (``cache``)."""
    if path in cache:
        return cache[path]
    data = np.load(path)
    model_file = path.with_suffix(".cxr")
    if "X_threshold" not in data or not model_file.exists():
        raise SystemExit(
            f"{path}: an ensemble's threshold and --shifts need the run's "
            "threshold split and model file; save the run with recipe.py --save"
        )
    model = PneumoniaClassifier.load(model_file, device="cpu")
    if list(model.classes_) != ["NORMAL", "PNEUMONIA"]:
        raise SystemExit(f"{model_file}: classes {list(model.classes_)}")
    X = data["X_threshold"]
    cache[path] = X, data["y_threshold"], shifted_predictions(model, X)
    return cache[path]


def _shift_aucs(members: list[tuple]) -> dict[str, float]:
    """ROC AUC of the members' mean probability on their threshold split,
    as acquired and under each shift, and the worst of them."""
    _, y, _ = members[0]
    positive = np.asarray(y) == "PNEUMONIA"
    aucs = {}
    for version in members[0][2]:
        p = np.mean([shifted[version][:, 1] for *_, shifted in members], axis=0)
        aucs[version] = round(float(roc_auc_score(positive, p)), 4)
    return {**aucs, "worst": min(aucs.values())}


def ensemble_threshold(
    paths: list[Path], min_sensitivity: float, min_specificity: float, cache: dict
) -> float:
    """The robust-shift rule on the members' mean probability of their
    threshold split (as acquired and under every shift), as ``recipe.py``
    chooses a single recipe's threshold. ``cache`` keeps each member's
    predictions for the other ensembles it is in."""
    members = [threshold_split(path, cache) for path in paths]
    X, y, _ = members[0]
    for path, (X_other, _, _) in zip(paths[1:], members[1:]):
        if not np.array_equal(X_other, X):
            raise SystemExit(f"{path}: another threshold split than {paths[0]}")
    mean = {
        version: np.mean([shifted[version] for _, _, shifted in members], axis=0)
        for version in members[0][2]
    }
    point = select_robust_threshold(
        y,
        mean,
        min_sensitivity=min_sensitivity,
        min_specificity=min_specificity,
        classes=["NORMAL", "PNEUMONIA"],
    )
    return float(point.threshold)


def _figures(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    report = clinical_report(y, p, threshold=threshold, n_bootstrap=2000)
    out = {"threshold": round(threshold, 4)}
    for key in ("roc_auc", "sensitivity", "specificity", "accuracy"):
        e = report.metrics[key]
        out[key] = [round(e.value, 4), round(e.low, 4), round(e.high, 4)]
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME_sSEED.npz files of recipe.py")
    parser.add_argument("--baseline", required=True, help="recipe NAME to compare to")
    parser.add_argument(
        "--ensemble",
        nargs="*",
        default=[],
        metavar="A+B",
        help="also score the mean probability of these recipes, seed by seed",
    )
    parser.add_argument(
        "--min-sensitivity",
        type=float,
        default=0.95,
        help="the ensemble rule's floor (recipe.py's default)",
    )
    parser.add_argument(
        "--min-specificity",
        type=float,
        default=0.85,
        help="the ensemble rule's floor (recipe.py's default)",
    )
    parser.add_argument(
        "--shifts",
        action="store_true",
        help="also the synthetic protocol beside the site: each run's ROC AUC "
        "on its threshold split as acquired and under every shift (needs the "
        ".cxr files)",
    )
    parser.add_argument("--markdown", action="store_true", help="also print a table")
    args = parser.parse_args(argv)
    y, runs = load_runs(args.runs)
    if args.baseline not in runs:
        raise SystemExit(f"no runs of the baseline {args.baseline!r}: {sorted(runs)}")
    cache: dict = {}  # each run's predictions of its threshold split
    for combo in args.ensemble:
        parts = combo.split("+")
        seeds = set.intersection(*(set(runs[n]) for n in parts))
        runs[combo] = {
            s: {
                "p": np.mean([runs[n][s]["p"] for n in parts], axis=0),
                "paths": [runs[n][s]["paths"][0] for n in parts],
                "threshold": ensemble_threshold(
                    [runs[n][s]["paths"][0] for n in parts],
                    args.min_sensitivity,
                    args.min_specificity,
                    cache,
                ),
            }
            for s in sorted(seeds)
        }
    rows = []
    for name, by_seed in runs.items():
        per_seed = []
        for seed, run in sorted(by_seed.items()):
            row = {
                "recipe": name,
                "seed": seed,
                **_figures(y, run["p"], run["threshold"]),
            }
            if name != args.baseline and seed in runs[args.baseline]:
                base = runs[args.baseline][seed]["p"]
                diff = ModelComparison.from_predictions(
                    y, {"base": base, name: run["p"]}, n_bootstrap=2000
                ).auc_differences()[name]
                row["auc_minus_baseline"] = [
                    round(diff.value, 4),
                    round(diff.low, 4),
                    round(diff.high, 4),
                ]
            if args.shifts:
                row["threshold_split_auc"] = _shift_aucs(
                    [threshold_split(path, cache) for path in run["paths"]]
                )
            per_seed.append(row)
            rows.append(row)
            print_json(row)
        summary = {"recipe": name, "seeds": sorted(by_seed)}
        for key in ("roc_auc", "sensitivity", "specificity", "accuracy"):
            values = [r[key][0] for r in per_seed]
            summary[key] = {
                "mean": round(float(np.mean(values)), 4),
                "min": min(values),
                "max": max(values),
            }
        if len(by_seed) > 1:
            mean_p = np.mean([r["p"] for r in by_seed.values()], axis=0)
            mean_t = ensemble_threshold(
                [path for r in by_seed.values() for path in r["paths"]],
                args.min_sensitivity,
                args.min_specificity,
                cache,
            )
            summary["seed_ensemble"] = _figures(y, mean_p, mean_t)
        rows.append(summary)
        print_json(summary)
    if args.markdown:
        print(
            "\n| recipe | seeds | ROC AUC mean (min-max) | sensitivity | specificity "
            "| accuracy |\n|---|---|---|---|---|---|"
        )
        for r in rows:
            if "seeds" in r:
                cells = [
                    f"{r[k]['mean']:.3f} ({r[k]['min']:.3f}-{r[k]['max']:.3f})"
                    for k in ("roc_auc", "sensitivity", "specificity", "accuracy")
                ]
                print(
                    f"| {r['recipe']} | {len(r['seeds'])} | " + " | ".join(cells) + " |"
                )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
