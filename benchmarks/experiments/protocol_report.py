"""Figures of the shift-aware protocol from the files of ``protocol.py``.

    python benchmarks/experiments/protocol_report.py --out /tmp/protocol \
        [--baseline baseline] [--rule maximin_shift] [--markdown] [--ensemble NAME ...]

For every configuration (averaged over the seeds it was run with) and every
validation:

* ``external``: the external site as a whole, scored by the models of the
  ``matched`` jobs (``protocol.py --external``); first, because recipes are
  selected there; the rest are secondary checks;
* ``in_distribution``: the random-patient pool of the matched split (what
  the old holdout measured);
* ``matched``: the confounder-matched holdout;
* ``batch0`` / ``batch1``: the leave-batch-out folds;
* ``shift:NAME``: the matched holdout under each synthetic shift;

it prints ROC AUC and, at the threshold each decision rule picks on the
job's own threshold split, sensitivity, specificity and balanced accuracy.
The worst case (of the secondary checks) is the minimum over every
validation except ``external`` and ``in_distribution``. AUC differences
against ``--baseline`` come with paired bootstrap 95% intervals (the same
resampled images for both, ``cxrkit.metrics``' stratified bootstrap,
averaged over the seeds both were run with; select on at least 3).
``--ensemble NAME`` adds ``NAME+ens``: the mean probability over NAME's
seeds.

Decision rules (threshold chosen on the threshold split of the same job):

* ``sens98_id``: the highest threshold with sensitivity >= 0.98 on the whole
  threshold split (the old recipe's rule);
* ``half``: 0.5;
* ``maximin_id`` / ``maximin_shift``: the threshold that maximises
  ``min(sensitivity - 0.95, specificity - 0.85)``, on the whole threshold
  split, or on its confounder-matched part together with the synthetic
  shifts of it (``cxrkit.metrics.select_operating_threshold``);
* ``youden_shift``: the best Youden index on that shift-aware data;
* ``robust_shift``: the threshold that maximises the worst, over the
  unshifted matched part and each of its shifts, of
  ``min(sensitivity - 0.95, specificity - 0.85)``.

For research and education; not a medical device.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrkit.metrics import ModelComparison, select_robust_threshold

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_json

FLOORS = (0.95, 0.85)  # sensitivity, specificity


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of ``p`` for ``y == 1``; NaN when ``y`` holds one class."""
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def rates(y: np.ndarray, p: np.ndarray, t: float) -> dict[str, float]:
    pred = p >= t
    sens = float(pred[y == 1].mean())
    spec = float((~pred[y == 0]).mean())
    return {
        "sensitivity": sens,
        "specificity": spec,
        "balanced_accuracy": (sens + spec) / 2,
        "accuracy": float((pred == (y == 1)).mean()),
    }


def _candidates(p: np.ndarray) -> np.ndarray:
    u = np.unique(p)
    mids = (u[1:] + u[:-1]) / 2
    return np.concatenate([[0.0], mids, [1.0 + 1e-9]])


def rule_threshold(rule: str, y: np.ndarray, p: np.ndarray) -> float:
    """The threshold a decision rule picks on threshold data ``(y, p)``."""
    if rule == "half":
        return 0.5
    t = _candidates(p)
    pred = p[None, :] >= t[:, None]
    sens = (pred & (y == 1)).sum(1) / max(1, (y == 1).sum())
    spec = (~pred & (y == 0)).sum(1) / max(1, (y == 0).sum())
    if rule == "sens98":
        ok = np.flatnonzero(sens >= 0.98)
        return float(t[ok.max()]) if len(ok) else float(t[0])
    if rule == "maximin":
        slack = np.minimum(sens - FLOORS[0], spec - FLOORS[1])
        best = np.flatnonzero(slack == slack.max())
        return float(t[best[len(best) // 2]])
    if rule == "youden":
        j = sens + spec
        best = np.flatnonzero(j == j.max())
        return float(t[best[len(best) // 2]])
    raise ValueError(rule)


RULES = {
    "sens98_id": ("sens98", "threshold"),
    "half": ("half", "threshold"),
    "maximin_id": ("maximin", "threshold"),
    "maximin_shift": ("maximin", "shift_aware"),
    "youden_shift": ("youden", "shift_aware"),
    "robust_shift": ("robust", "shift_aware"),
}


def _threshold_data(f: dict, y: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "threshold":
        return y[f["idx_threshold"]], f["p_threshold"]
    keys = [k for k in f if k.startswith("p_threshold_matched@")]
    yy = y[f["idx_threshold_matched"]]
    return np.concatenate([yy] * len(keys)), np.concatenate([f[k] for k in keys])


def load_runs(out: Path, ensembles: list[str]) -> dict:
    """runs[config][split][seed] = dict of arrays (+ 'meta')."""
    runs: dict = defaultdict(lambda: defaultdict(dict))
    for path in sorted(out.glob("*.npz")):
        config, seed, split = path.stem.split("__")
        with np.load(path) as data:
            f = {k: data[k] for k in data.files}
        f["meta"] = json.loads(str(f["meta"]))
        runs[config][split][int(seed[1:])] = f
    for name in ensembles:
        for split, by_seed in list(runs[name].items()):
            fs = list(by_seed.values())
            ens = dict(fs[0])
            for k in fs[0]:
                if k.startswith("p_"):
                    ens[k] = np.mean([g[k] for g in fs], axis=0)
            runs[f"{name}+ens"][split][0] = ens
    return runs


def validations(runs_c: dict) -> dict[str, list[tuple]]:
    """validation -> [(seed, y, p, threshold-data-per-rule)]."""
    out: dict[str, list] = defaultdict(list)
    for split, by_seed in runs_c.items():
        for seed, f in by_seed.items():
            y = f["y"].astype(int)
            thresholds = {
                r: rule_threshold(kind, *_threshold_data(f, y, src))
                for r, (kind, src) in RULES.items()
                if kind != "robust"
            }
            keys = [k for k in f if k.startswith("p_threshold_matched@")]
            yy = y[f["idx_threshold_matched"]]
            with warnings.catch_warnings():  # floors missed: the report shows it
                warnings.simplefilter("ignore", UserWarning)
                thresholds["robust_shift"] = select_robust_threshold(
                    yy,
                    {k: f[k] for k in keys},
                    min_sensitivity=FLOORS[0],
                    min_specificity=FLOORS[1],
                ).threshold
            sets = []
            if split == "matched" and "p_external" in f:
                sets.append(("external", f["y_external"].astype(int), f["p_external"]))
            if split == "matched":
                sets.append(("in_distribution", y[f["idx_pool"]], f["p_pool"]))
                sets.append(("matched", y[f["idx_matched"]], f["p_matched"]))
                for k in f:
                    if k.startswith("p_matched@") and not k.endswith("@none"):
                        sets.append(
                            (f"shift:{k.split('@')[1]}", y[f["idx_matched"]], f[k])
                        )
                if "p_matched+tta" in f:
                    sets.append(
                        ("matched+tta", y[f["idx_matched"]], f["p_matched+tta"])
                    )
            else:
                sets.append((f"batch{split[3:]}", y[f["idx_batch"]], f["p_batch"]))
            for name, yy, pp in sets:
                out[name].append((seed, yy, pp.astype(np.float64), thresholds))
    return external_first(out)


def external_first(table: dict) -> dict:
    """The same mapping with ``"external"`` (when present) as its first key."""
    return {k: table[k] for k in sorted(table, key=lambda k: k != "external")}


def summarize(vals: dict) -> dict:
    table = {}
    for name, items in vals.items():
        row = {"auc": float(np.mean([auc(y, p) for _, y, p, _ in items]))}
        for rule in RULES:
            r = [rates(y, p, th[rule]) for _, y, p, th in items]
            row[rule] = {k: float(np.mean([x[k] for x in r])) for k in r[0]}
            row[rule]["threshold"] = float(np.mean([th[rule] for *_, th in items]))
        row["seeds"] = sorted(s for s, *_ in items)
        row["n"] = len(items[0][1])
        table[name] = row
    return table


def worst_case(table: dict) -> dict:
    names = [
        n
        for n in table
        if n not in ("external", "in_distribution") and not n.endswith("+tta")
    ]
    out = {"auc": min(table[n]["auc"] for n in names)}
    for rule in RULES:
        for k in ("sensitivity", "specificity", "balanced_accuracy"):
            out[f"{rule}.{k}"] = min(table[n][rule][k] for n in names)
    return out


def paired_auc_diff(a: list, b: list, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUC(a) - AUC(b) on the same images, mean over shared seeds, paired CI."""
    sa = {s: (y, p) for s, y, p, _ in a}
    sb = {s: (y, p) for s, y, p, _ in b}
    shared = sorted(set(sa) & set(sb))
    if not shared:  # e.g. an ensemble against single seeds: pair with every seed
        pairs = [(sa[x], sb[z]) for x in sa for z in sb]
    else:
        pairs = [(sa[s], sb[s]) for s in shared]
    y = pairs[0][0][0]
    probas = {}
    for i, ((_, pa), (_, pb)) in enumerate(pairs):
        probas[f"a{i}"], probas[f"b{i}"] = pa, pb
    comparison = ModelComparison.from_predictions(
        y, probas, n_bootstrap=n_boot, random_state=seed
    )
    diff = comparison.mean_difference(
        [f"a{i}" for i in range(len(pairs))], [f"b{i}" for i in range(len(pairs))]
    )
    return {"diff": diff.value, "ci95": [diff.low, diff.high]}


def auc_ci(items: list, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% interval of the ROC AUC averaged over the seeds of ``items``."""
    y = items[0][1]
    probas = {str(i): p for i, (_, _, p, _) in enumerate(items)}
    comparison = ModelComparison.from_predictions(
        y, probas, n_bootstrap=n_boot, random_state=seed
    )
    mean = comparison.mean_metric(list(probas))
    return [mean.low, mean.high]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--baseline", default="baseline")
    parser.add_argument("--rule", default="robust_shift", choices=sorted(RULES))
    parser.add_argument("--ensemble", nargs="*", default=[])
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)

    runs = load_runs(args.out, args.ensemble)
    vals = {c: validations(r) for c, r in runs.items()}
    result: dict = {"rule": args.rule, "configs": {}}
    for c, v in vals.items():
        table = summarize(v)
        entry = {"validations": table, "worst": worst_case(table)}
        if args.baseline in vals and c != args.baseline:
            entry["auc_diff_vs_baseline"] = {
                n: paired_auc_diff(v[n], vals[args.baseline][n], args.boot)
                for n in v
                if n in vals[args.baseline]
            }
        entry["auc_ci95"] = {n: auc_ci(v[n], args.boot) for n in v}
        metas = [f["meta"] for r in runs[c].values() for f in r.values() if "meta" in f]
        entry["fit_seconds"] = [m["fit_seconds"] for m in metas]
        result["configs"][c] = entry
    print_json(result)
    if args.markdown:
        print(markdown(result, args.rule, args.baseline), file=sys.stderr)
    return result


def _diff_text(diff: dict | None) -> str:
    if not diff:
        return "-"
    return f"{diff['diff']:+.4f} ({diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f})"


def markdown(result: dict, rule: str, baseline: str) -> str:
    """One row per configuration: the external site first, then the secondary checks.

    Rows are sorted by external ROC AUC when the site was scored, else by
    the worst AUC of the secondary checks.
    """
    nan = {"auc": float("nan")}
    lines = [
        f"rule: {rule}",
        "",
        "| config | external AUC | AUC - baseline, external (paired 95% CI) "
        "| external sens | external spec | in-dist AUC | matched AUC | worst AUC "
        "| AUC - baseline, matched (paired 95% CI) | worst AUC validation "
        "| worst sens | worst spec |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def order(kv: tuple) -> float:
        table = kv[1]["validations"]
        return -table.get("external", kv[1]["worst"])["auc"]

    for c, e in sorted(result["configs"].items(), key=order):
        t = e["validations"]
        diff = e.get("auc_diff_vs_baseline", {})
        external = t.get("external")
        at_rule = external[rule] if external else {}
        worst_n = min(
            (n for n in t if n not in ("external", "in_distribution")),
            key=lambda n: t[n]["auc"],
        )
        lines.append(
            f"| {c} | {t.get('external', nan)['auc']:.4f} "
            f"| {_diff_text(diff.get('external'))} "
            f"| {at_rule.get('sensitivity', float('nan')):.3f} "
            f"| {at_rule.get('specificity', float('nan')):.3f} "
            f"| {t.get('in_distribution', nan)['auc']:.4f} "
            f"| {t.get('matched', nan)['auc']:.4f} "
            f"| {e['worst']['auc']:.4f} | {_diff_text(diff.get('matched'))} "
            f"| {worst_n} "
            f"| {e['worst'][f'{rule}.sensitivity']:.3f} "
            f"| {e['worst'][f'{rule}.specificity']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
