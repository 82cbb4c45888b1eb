"""Adapting saved models to a site: unlabelled steps, and a labelled learning curve.

    python benchmarks/experiments/site_adaptation.py --site DIR RUNS/NAME_s0.cxr [...] \
        [--n-labelled 0 25 50 100] [--draws 20] [--sensitivity 0.95]

For every model file (``benchmarks/experiments/recipe.py --save`` writes one with the
threshold its rule chose on training patients), one JSON line per setting:

* ``unlabelled``: the model as trained, after ``adapt_batchnorm`` (AdaBN) on
  all of the site's images, after ``adapt_prior`` (EM), and after both,
  scored on the whole site at the model's recorded threshold (no label of
  the site is used to adapt);
* ``labelled``: for each ``--n-labelled`` size, ``--draws`` random draws of
  whole patients (stratified by class, about that many images), the
  documented workflow ``calibrate(clf, X_lab, y_lab,
  sensitivity=...)`` (temperature scaling and the highest threshold that
  reaches the sensitivity floor on the sample), scored on the rest of the
  site (``--rule accuracy``: Platt scaling and the threshold with the fewest
  expected errors instead); mean, min and max over draws of accuracy,
  sensitivity, specificity,
  ROC AUC and expected calibration error before and after. ``0`` keeps the
  model's own threshold.

``--unlabelled-first batchnorm|prior|none`` applies that unlabelled step
before the labelled curve. ``--head`` refits the final layer on each draw
first (``adapt_head(clf, X_lab, y_lab, pull=--pull)``, then the same
``calibrate`` on the same images, on their out-of-fold probabilities,
``head_cross_val_proba``, as are the ``--coverage`` sets); the network then
runs on every draw
(``roc_auc_before`` is the unadapted model's on the same rest). It also
runs ``calibrate`` alone on the same draw, and reports the paired
differences (``*_gain``: with the refit minus without) with a bootstrap
95% interval of their mean over the draws (``*_gain_ci95``).
``--versus-tta N`` (without ``--head``) pairs the other way: the same
draws, calibrated and scored the same way, with the model's test-time
augmentation set to ``N`` copies (0: the image alone), and the gains of
the model as saved over that (``*_gain``, ``*_gain_ci95``).
``--coverage 0.9`` also makes conformal prediction sets on each draw
(``conformalize``, after ``calibrate``) and scores each class's coverage
and the share of sets to refer on the rest.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrkit import (
    DecodedImages,
    PneumoniaClassifier,
    decode_images,
    load_image_folder,
    patient_groups,
)
from cxrkit.adaptation import (
    DEFAULT_PULL,
    adapt_batchnorm,
    adapt_head,
    adapt_prior,
    calibrate,
    conformalize,
    head_cross_val_proba,
    prediction_sets,
)
from cxrkit.metrics import clinical_report
from cxrkit.training._fit import adjust_probabilities

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json

KEYS = ("accuracy", "sensitivity", "specificity", "roc_auc", "ece")
#: The figures whose paired difference --head reports (with minus without).
GAINS = ("accuracy", "sensitivity", "specificity", "roc_auc")


def _scores(y: np.ndarray, proba: np.ndarray, clf: PneumoniaClassifier) -> dict:
    recorded = clf.operating_threshold_
    threshold = None if recorded is None else recorded["threshold"]
    report = clinical_report(
        y, proba, threshold=threshold, classes=clf.classes_, n_bootstrap=0
    )
    scores = {k: report.metrics[k].value for k in KEYS}
    if len(clf.classes_) == 2:
        # Sharpening (a temperature below 1) rounds the most confident
        # PNEUMONIA probabilities to exactly 1.0 in float64, which ties them
        # in the ROC AUC above; their NORMAL probabilities keep the order.
        pos = list(clf.classes_).index("PNEUMONIA")
        logp = np.log(np.clip(proba, 1e-300, None))
        scores["roc_auc_log_odds"] = float(
            roc_auc_score(y == "PNEUMONIA", logp[:, pos] - logp[:, 1 - pos])
        )
    return scores


def _calibrated(
    clf: PneumoniaClassifier, X, y: np.ndarray, args, proba=None
) -> PneumoniaClassifier:
    """``calibrate`` by ``--rule``: the fewest expected errors, or the floor;
    on ``proba`` (out-of-fold probabilities) where given."""
    if args.rule == "accuracy":
        return calibrate(clf, X, y, method="platt", threshold="accuracy", proba=proba)
    return calibrate(
        clf, X, y, sensitivity=args.sensitivity, n_bootstrap=0, proba=proba
    )


def _mean_interval(values: np.ndarray, seed: int, n: int = 2000) -> list[float]:
    """Bootstrap 95% interval of the mean over draws (percentile method)."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, len(values))).mean(axis=1)
    return [round(float(q), 4) for q in np.percentile(means, [2.5, 97.5])]


def _draw_patients(
    y: np.ndarray, groups: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of whole patients, about ``n`` images, in the site's class mix."""
    chosen: list[int] = []
    for label in np.unique(y):
        want = round(n * np.mean(y == label))
        patients = rng.permutation(np.unique(groups[y == label]))
        taken = 0
        for patient in patients:
            if taken >= want:
                break
            idx = np.flatnonzero((groups == patient) & (y == label))
            chosen.extend(idx.tolist())
            taken += len(idx)
    return np.array(sorted(chosen))


class _CachedProbabilities(PneumoniaClassifier):
    """A model whose network outputs on the site are computed once.

    ``X`` is a list of indices into the site; ``predict_proba`` applies the
    model's adaptation as ``PneumoniaClassifier.predict_proba`` does, so
    ``calibrate`` runs exactly as on images, without 20 draws x 4 sizes of
    network passes.
    """

    def predict_proba(self, X):
        return adjust_probabilities(
            self.raw_[np.asarray(X, dtype=int)], self.adaptation_
        )


def _cached(
    clf: PneumoniaClassifier, X: DecodedImages, tta: int | None = None
) -> _CachedProbabilities:
    """``clf``'s outputs on ``X`` computed once; with ``tta``, as that many
    test-time views would give them (``clf`` itself is not changed)."""
    out = copy.deepcopy(clf)
    if tta is not None:
        out.set_params(tta=tta)
    out.adaptation_, adaptation = None, clf.adaptation_
    out.raw_ = out.predict_proba(X)
    out.__class__ = _CachedProbabilities
    out.adaptation_ = adaptation
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help=".cxr files")
    parser.add_argument("--site", required=True, help="the site's labelled folder")
    parser.add_argument("--n-labelled", nargs="*", type=int, default=[0, 25, 50, 100])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--sensitivity", type=float, default=0.95)
    parser.add_argument(
        "--rule",
        choices=["sensitivity", "accuracy"],
        default="sensitivity",
        help="the labelled threshold: the --sensitivity floor on the sample "
        "(after temperature scaling), or the fewest expected errors "
        "(Platt scaling, threshold='accuracy')",
    )
    parser.add_argument(
        "--unlabelled-first", choices=["none", "batchnorm", "prior"], default="none"
    )
    parser.add_argument(
        "--coverage",
        type=float,
        default=None,
        help="also conformalize on each labelled draw (after calibrate) and score "
        "each class's coverage and the set sizes on the rest",
    )
    parser.add_argument(
        "--head",
        action="store_true",
        help="refit the final layer on each labelled draw before calibrate",
    )
    parser.add_argument("--pull", type=float, default=DEFAULT_PULL)
    parser.add_argument(
        "--versus-tta",
        type=int,
        default=None,
        metavar="N",
        help="pair each draw with the same model predicting with tta=N "
        "(recalibration alone; not with --head)",
    )
    parser.add_argument(
        "--skip-unlabelled", action="store_true", help="only the labelled curve"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.versus_tta is not None and args.head:
        parser.error("--versus-tta pairs recalibration alone; leave out --head")
    warnings.filterwarnings("ignore", message=".*no Kermany patient id.*")
    # --head drops each model's training threshold; calibrate chooses the site's
    warnings.filterwarnings("ignore", message=".*recorded operating threshold.*")
    X, y = load_image_folder(args.site)
    groups = patient_groups(X)
    decoded: dict[int, DecodedImages] = {}  # the site decoded once per image size
    rows = []
    for path in args.models:
        clf = PneumoniaClassifier.load(path, device="cpu")
        if clf.image_size not in decoded:
            decoded[clf.image_size] = decode_images(X, clf.image_size)
        images = decoded[clf.image_size]
        unlabelled = {"as trained": clf}
        if not args.skip_unlabelled or args.unlabelled_first != "none":
            unlabelled["batchnorm"] = adapt_batchnorm(clf, images)
            unlabelled["prior"] = adapt_prior(clf, images)
            unlabelled["batchnorm+prior"] = adapt_prior(unlabelled["batchnorm"], images)
        for name, model in unlabelled.items():
            if args.skip_unlabelled:
                break
            row = {"model": path, "setting": "unlabelled", "steps": name}
            scores = _scores(y, model.predict_proba(images), model)
            row.update({k: round(v, 4) for k, v in scores.items()})
            if "prior" in name:
                row["site_prior"] = model.adaptation_["steps"][-1]["site_prior"]
            rows.append(row)
            print_json(row)

        start = unlabelled[
            {"none": "as trained", "batchnorm": "batchnorm", "prior": "prior"}[
                args.unlabelled_first
            ]
        ]
        cached = _cached(start, images)
        versus = None
        if args.versus_tta is not None:
            if start.tta == args.versus_tta:
                raise SystemExit(
                    f"{path} already predicts with tta={start.tta}: --versus-tta "
                    f"{args.versus_tta} would compare it with itself"
                )
            versus = _cached(start, images, tta=args.versus_tta)
        everything = np.arange(len(y))
        rng = np.random.default_rng(args.seed)
        for n in args.n_labelled:
            results = []
            for _ in range(args.draws if n else 1):
                if not n:  # the model's own threshold, on the whole site
                    results.append(_scores(y, cached.predict_proba(everything), cached))
                    continue
                lab = _draw_patients(y, groups, n, rng)
                rest = np.setdiff1d(everything, lab)
                # cached: indices into the site; with --head, the refitted
                # network runs on the images themselves
                model, lab_x, rest_x, oof = cached, lab, rest, None
                if args.head:
                    lab_x, rest_x = images.subset(lab), images.subset(rest)
                    model = adapt_head(start, lab_x, y[lab], pull=args.pull)
                    # calibrate on the refitted sample's out-of-fold scores
                    oof = head_cross_val_proba(start, lab_x, y[lab], pull=args.pull)
                adapted = _calibrated(model, lab_x, y[lab], args, oof)
                scored = _scores(y[rest], adapted.predict_proba(rest_x), adapted)
                if args.head or versus is not None:  # the same draw: paired
                    # without the refit, or with the other test-time views
                    alone = _calibrated(
                        cached if versus is None else versus, lab, y[lab], args
                    )
                    without = _scores(y[rest], alone.predict_proba(rest), alone)
                    for key in GAINS:
                        scored[f"{key}_gain"] = scored[key] - without[key]
                before = _scores(y[rest], cached.predict_proba(rest), cached)
                scored["ece_before"] = before["ece"]
                scored["roc_auc_before"] = before["roc_auc"]
                scored["threshold"] = adapted.operating_threshold_["threshold"]
                scored["labelled_images"] = len(lab)
                if args.coverage:
                    sets = prediction_sets(
                        conformalize(
                            adapted,
                            lab_x,
                            y[lab],
                            coverage=args.coverage,
                            proba=None
                            if oof is None
                            else adjust_probabilities(oof, adapted.adaptation_),
                        ),
                        rest_x,
                    )
                    for i, label in enumerate(clf.classes_):
                        mine = y[rest] == label
                        scored[f"coverage_{label}"] = float(sets[mine, i].mean())
                    scored["refer"] = float((sets.sum(axis=1) == sets.shape[1]).mean())
                    scored["empty"] = float((sets.sum(axis=1) == 0).mean())
                results.append(scored)
            summary = {
                "model": path,
                "setting": "labelled",
                "unlabelled_first": args.unlabelled_first,
                "rule": args.rule,
                "head": args.pull if args.head else None,
                "tta": start.tta,
                # n = 0 scores the model's own threshold: nothing is paired
                "versus_tta": args.versus_tta if n else None,
                "n_labelled": n,
                "draws": len(results),
            }
            for key in results[0]:
                values = np.array([r[key] for r in results], dtype=float)
                summary[key] = [
                    round(float(values.mean()), 4),
                    round(float(values.min()), 4),
                    round(float(values.max()), 4),
                ]
                if key.endswith("_gain"):
                    summary[f"{key}_ci95"] = _mean_interval(values, args.seed)
            rows.append(summary)
            print_json(summary)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
