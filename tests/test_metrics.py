"""Clinical metrics: equal to scikit-learn's, and honest intervals."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import FAST
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import FixedThresholdClassifier, TunedThresholdClassifierCV

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.metrics import (
    ModelComparison,
    apply_threshold,
    clinical_report,
    positive_label,
    select_robust_threshold,
    select_threshold,
)
from cxrkit.metrics._bootstrap import stratified_weights
from cxrkit.metrics._weighted import Curve, clinical_statistic, one_vs_rest

CLASSES = np.array(["NORMAL", "PNEUMONIA"])


def _binary_data(n: int = 300, seed: int = 0, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    y = CLASSES[(rng.random(n) < 0.6).astype(int)]
    p = np.clip(rng.normal(0.35 + 0.3 * (y == "PNEUMONIA"), 0.2), 0, 1)
    if decimals is not None:  # many ties
        p = np.round(p, decimals)
    return y, p


def test_binary_point_estimates_equal_scikit_learn():
    y, p = _binary_data()
    report = clinical_report(y, p, threshold=0.4, n_bootstrap=50)
    pred = np.where(p >= 0.4, "PNEUMONIA", "NORMAL")
    m = {k: v.value for k, v in report.metrics.items()}
    pos, neg = "PNEUMONIA", "NORMAL"
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred, pos_label=pos))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=neg))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, pred, pos_label=pos))
    assert m["npv"] == pytest.approx(skm.precision_score(y, pred, pos_label=neg))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, pos_label=pos))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y == pos, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y == pos, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y == pos, p))
    np.testing.assert_array_equal(
        report.confusion_matrix, skm.confusion_matrix(y, pred, labels=CLASSES)
    )
    # A 2-column predict_proba gives the same report as the 1-D probability.
    same = clinical_report(y, np.c_[1 - p, p], threshold=0.4, n_bootstrap=50)
    assert same.to_dict() == report.to_dict()


def test_multiclass_per_class_and_macro_equal_scikit_learn():
    rng = np.random.default_rng(1)
    classes = np.array(["BACTERIA", "NORMAL", "VIRUS"])
    y = classes[rng.integers(0, 3, 240)]
    logits = rng.normal(size=(240, 3)) + 1.5 * (y[:, None] == classes)
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = classes[proba.argmax(axis=1)]
    report = clinical_report(y, proba, n_bootstrap=50)
    m = {k: v.value for k, v in report.metrics.items()}
    assert report.average == "macro" and set(report.per_class) == set(classes)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    )
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, proba, labels=classes))
    recalls = skm.recall_score(y, pred, average=None, labels=classes)
    for label, recall in zip(classes, recalls):
        assert report.per_class[label]["sensitivity"].value == pytest.approx(recall)
    assert "one vs rest, per class" in str(report)
    with pytest.raises(ValueError, match="threshold applies to two classes"):
        clinical_report(y, proba, threshold=0.5)


@pytest.mark.parametrize("decimals", [None, 1])
def test_each_bootstrap_resample_equals_scikit_learn_with_weights(decimals):
    """The vectorized resamples are scikit-learn's metrics with count weights."""
    y, p = _binary_data(120, seed=3, decimals=decimals)
    is_pos = y == "PNEUMONIA"
    pred = p >= 0.5
    weights = stratified_weights(is_pos.astype(int), 6, np.random.default_rng(0))
    reps = one_vs_rest(weights, is_pos, pred, Curve(is_pos, p))
    for b, w in enumerate(weights):
        expected = {
            "sensitivity": skm.recall_score(is_pos, pred, sample_weight=w),
            "specificity": skm.recall_score(is_pos, pred, pos_label=0, sample_weight=w),
            "ppv": skm.precision_score(is_pos, pred, sample_weight=w),
            "npv": skm.precision_score(is_pos, pred, pos_label=0, sample_weight=w),
            "f1": skm.f1_score(is_pos, pred, sample_weight=w),
            "roc_auc": skm.roc_auc_score(is_pos, p, sample_weight=w),
            "pr_auc": skm.average_precision_score(is_pos, p, sample_weight=w),
        }
        for key, value in expected.items():
            assert reps[key][b] == pytest.approx(value, abs=1e-12), key
    # accuracy and the Brier score of the same resamples
    scores = np.c_[1 - p, p]
    whole = clinical_statistic(is_pos.astype(int), pred.astype(int), scores, 1)(weights)
    for b, w in enumerate(weights):
        accuracy = skm.accuracy_score(is_pos, pred, sample_weight=w)
        brier = skm.brier_score_loss(is_pos, p, sample_weight=w)
        assert whole["accuracy"][b] == pytest.approx(accuracy, abs=1e-12)
        assert whole["brier"][b] == pytest.approx(brier, abs=1e-12)


def test_bootstrap_is_stratified_and_seeded():
    y_idx = np.array([0] * 7 + [1] * 13 + [2] * 5)
    weights = stratified_weights(y_idx, 400, np.random.default_rng(0))
    for k, size in enumerate([7, 13, 5]):
        np.testing.assert_array_equal(weights[:, y_idx == k].sum(axis=1), size)
    y, p = _binary_data(100)
    a = clinical_report(y, p, random_state=1, n_bootstrap=300).to_dict()
    b = clinical_report(y, p, random_state=1, n_bootstrap=300).to_dict()
    c = clinical_report(y, p, random_state=2, n_bootstrap=300).to_dict()
    assert a == b
    assert a["metrics"]["roc_auc"] != c["metrics"]["roc_auc"]


@st.composite
def _cases(draw):
    n_neg = draw(st.integers(20, 60))
    n_pos = draw(st.integers(20, 60))
    seed = draw(st.integers(0, 2**16))
    separation = draw(st.floats(0.0, 0.5))
    rng = np.random.default_rng(seed)
    y = np.array(["NORMAL"] * n_neg + ["PNEUMONIA"] * n_pos)
    p = np.clip(rng.normal(0.4 + separation * (y == "PNEUMONIA"), 0.25), 0, 1)
    return y, p


@settings(max_examples=15, deadline=None)
@given(_cases())
def test_intervals_contain_the_estimate_and_shrink_with_more_images(case):
    y, p = case
    small = clinical_report(y, p, n_bootstrap=400, random_state=0)
    # The same cases nine times over: the same estimates, a third of the width.
    large = clinical_report(np.tile(y, 9), np.tile(p, 9), n_bootstrap=400)
    for key in ("accuracy", "sensitivity", "specificity", "f1", "roc_auc", "brier"):
        e, big = small.metrics[key], large.metrics[key]
        assert e.low - 1e-9 <= e.value <= e.high + 1e-9, key
        assert big.value == pytest.approx(e.value), key
        assert big.high - big.low <= 0.75 * (e.high - e.low) + 1e-12, key


def test_report_prints_and_converts_to_json(tmp_path):
    y, p = _binary_data(80)
    report = clinical_report(y, p, n_bootstrap=100)
    text = str(report)
    sens = report.metrics["sensitivity"]
    assert "Sensitivity (recall)" in text and f"{sens.value:.3f}" in text
    assert f"{sens.low:.3f}-{sens.high:.3f}" in text
    data = json.loads(report.to_json(tmp_path / "m.json"))
    assert data == json.loads((tmp_path / "m.json").read_text())
    assert data["metrics"]["sensitivity"] == pytest.approx(sens._asdict())
    assert data["support"] == {
        "NORMAL": int(np.sum(y == "NORMAL")),
        "PNEUMONIA": int(np.sum(y == "PNEUMONIA")),
    }
    assert "<table" in report._repr_html_()


def test_undefined_metrics_are_nan_not_errors():
    y = np.array(["NORMAL"] * 10 + ["PNEUMONIA"] * 10)
    report = clinical_report(y, np.full(20, 0.2), n_bootstrap=50)  # none positive
    assert np.isnan(report.metrics["ppv"].value)
    assert report.to_dict()["metrics"]["ppv"]["value"] is None
    assert "n/a" in str(report)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pos_label": "COVID"}, "pos_label='COVID' is not one of the classes"),
        ({"classes": ["NORMAL"]}, "not in classes"),
        ({"threshold": 1.5}, "threshold must be in"),
    ],
)
def test_errors_name_the_input_and_the_fix(kwargs, message):
    y, p = _binary_data(40)
    with pytest.raises(ValueError, match=message):
        clinical_report(y, p, **kwargs)


def test_errors_for_bad_shapes_and_missing_classes():
    y, p = _binary_data(40)
    with pytest.raises(ValueError, match="columns must follow classes"):
        clinical_report(y, np.c_[p, p, p])
    with pytest.raises(ValueError, match="rows"):
        clinical_report(y, p[:-1])
    with pytest.raises(ValueError, match="no images of class"):
        clinical_report(["NORMAL"] * 5, np.full(5, 0.5), classes=CLASSES)


def test_select_threshold_targets_and_youden():
    y, p = _binary_data(200, seed=5)
    is_pos = y == "PNEUMONIA"
    sens = select_threshold(y, p, sensitivity=0.9)
    assert np.mean(p[is_pos] >= sens.threshold) == pytest.approx(sens.sensitivity)
    assert sens.sensitivity >= 0.9
    # The highest such threshold: the next higher score misses the target.
    higher = np.min(p[p > sens.threshold])
    assert np.mean(p[is_pos] >= higher) < 0.9
    spec = select_threshold(y, p, specificity=0.8)
    assert np.mean(p[~is_pos] < spec.threshold) >= 0.8
    lower = np.max(p[p < spec.threshold])
    assert np.mean(p[~is_pos] < lower) < 0.8
    youden = select_threshold(y, p)
    j = [np.mean(p[is_pos] >= t) + np.mean(p[~is_pos] < t) - 1 for t in np.unique(p)]
    assert youden.sensitivity + youden.specificity - 1 == pytest.approx(max(j))
    with pytest.raises(ValueError, match="not both"):
        select_threshold(y, p, sensitivity=0.9, specificity=0.9)
    with pytest.warns(UserWarning, match="inf"):
        y_top_negative = np.append(y, "NORMAL")
        select_threshold(y_top_negative, np.append(p, 1.0), specificity=1.0)


def test_scikit_learn_threshold_classifiers_with_pneumonia_classifier():
    """The documented use: FrozenEstimator + Fixed/TunedThresholdClassifierCV."""
    X, y, _ = make_synthetic_cxr(160, image_size=32, random_state=0)
    fitted_synthetic = PneumoniaClassifier(model="simple_cnn", **FAST).fit(
        X[40:], y[40:]
    )
    X_valid, y_valid = X[:40], y[:40]
    proba = fitted_synthetic.predict_proba(X_valid)[:, 1]
    point = select_threshold(y_valid, proba, sensitivity=0.95)
    fixed = FixedThresholdClassifier(
        FrozenEstimator(fitted_synthetic),
        threshold=point.threshold,
        pos_label="PNEUMONIA",
    ).fit(X_valid, y_valid)
    pred = fixed.predict(X_valid)
    np.testing.assert_array_equal(
        pred == "PNEUMONIA", proba >= point.threshold
    )  # the same >= convention
    report = clinical_report(y_valid, proba, threshold=point.threshold, n_bootstrap=0)
    assert report.metrics["sensitivity"].value == pytest.approx(
        skm.recall_score(y_valid, pred, pos_label="PNEUMONIA")
    )
    tuned = TunedThresholdClassifierCV(
        fitted_synthetic,
        scoring="balanced_accuracy",
        cv="prefit",
        refit=False,
        thresholds=np.unique(proba),
    ).fit(X_valid, y_valid)
    youden = select_threshold(y_valid, proba)
    # Balanced accuracy = (J + 1) / 2: both find the same best value.
    assert tuned.best_score_ == pytest.approx(
        (youden.sensitivity + youden.specificity) / 2
    )


def test_zero_width_bootstrap_intervals_get_an_exact_interval():
    y = np.array(["NORMAL"] * 8 + ["PNEUMONIA"] * 8)
    p = np.r_[np.linspace(0.1, 0.7, 8), np.linspace(0.6, 0.9, 8)]
    report = clinical_report(y, p, threshold=0.5)
    sens = report.metrics["sensitivity"]
    assert sens == (1.0, 1.0, 1.0)  # 8 of 8: every resample agrees
    (note,) = report.notes  # one note, however many intervals collapsed
    # Clopper-Pearson lower bound of 8/8 is 0.025 ** (1 / 8) = 0.631.
    assert f"Sensitivity (recall) 8 of 8: {0.025 ** (1 / 8):.3f}-1.000" in note
    assert note in str(report) and report.to_dict()["notes"] == report.notes


def test_positive_label_follows_scikit_learn():
    assert positive_label(["NORMAL", "PNEUMONIA"]) == "PNEUMONIA"
    assert positive_label(np.array([0, 1])) == 1
    assert positive_label([-1, 1]) == 1
    assert positive_label([False, True]) is True
    assert positive_label(["BACTERIA", "VIRUS"], pos_label="BACTERIA") == "BACTERIA"
    with pytest.raises(ValueError, match=r"\['BACTERIA', 'VIRUS'\].*pos_label="):
        positive_label(["BACTERIA", "VIRUS"])
    with pytest.raises(ValueError, match="pos_label='COVID' is not one of"):
        positive_label(["NORMAL", "PNEUMONIA"], pos_label="COVID")
    with pytest.raises(ValueError, match="two classes; there are 3"):
        positive_label(["a", "b", "c"])


def test_0_1_labels_need_no_pos_label():
    y, p = _binary_data(120)
    y01 = (y == "PNEUMONIA").astype(int)
    report = clinical_report(y01, p, n_bootstrap=50)
    named = clinical_report(y, p, n_bootstrap=50)
    assert report.pos_label == 1
    for key, e in named.metrics.items():
        assert report.metrics[key] == pytest.approx(e), key
    assert select_threshold(y01, p) == select_threshold(y, p)


def test_one_decision_rule_for_reports_and_apply_threshold():
    y, p = _binary_data(150, decimals=1)  # ties at the threshold
    proba = np.c_[1 - p, p]
    report = clinical_report(y, proba, threshold=0.5, n_bootstrap=0)
    fixed = np.where(p >= 0.5, "PNEUMONIA", "NORMAL")  # FixedThresholdClassifier
    np.testing.assert_array_equal(report.y_pred, fixed)
    np.testing.assert_array_equal(apply_threshold(proba, 0.5, classes=CLASSES), fixed)
    np.testing.assert_array_equal(
        report.confusion_matrix, skm.confusion_matrix(y, fixed, labels=CLASSES)
    )
    # Without a threshold: the most probable class, as clf.predict.
    np.testing.assert_array_equal(
        apply_threshold(proba, classes=CLASSES), CLASSES[proba.argmax(axis=1)]
    )
    normal = apply_threshold(proba, 0.3, classes=CLASSES, pos_label="NORMAL")
    np.testing.assert_array_equal(normal, np.where(1 - p >= 0.3, "NORMAL", "PNEUMONIA"))
    with pytest.raises(ValueError, match="threshold must be in"):
        apply_threshold(proba, 1.5, classes=CLASSES)
    with pytest.raises(ValueError, match="two classes"):
        apply_threshold(np.full((2, 3), 1 / 3), 0.5, classes=["a", "b", "c"])


@settings(max_examples=15, deadline=None)
@given(st.one_of(st.none(), st.integers(0, 2**32 - 1)), st.integers(20, 80))
def test_paired_differences_are_zero_for_the_same_ranking(seed, n):
    """Pairing holds by construction: one weights matrix for every model."""
    y, p = _binary_data(n, seed=n)
    comparison = ModelComparison.from_predictions(
        y, {"a": p, "same": p, "squared": p**2}, n_bootstrap=100, random_state=seed
    )
    diffs = comparison.auc_differences()
    assert diffs["same"] == (0.0, 0.0, 0.0)
    # p**2 ranks the images as p does: the same AUC on every resample.
    assert diffs["squared"].low == pytest.approx(0, abs=1e-12)
    assert diffs["squared"].high == pytest.approx(0, abs=1e-12)


def test_point_estimate_is_the_unit_weight_row_of_the_bootstrap():
    from cxrkit.metrics._bootstrap import bootstrap

    calls = []

    def statistic(weights):
        calls.append(weights)
        return {"mean": weights @ np.arange(4.0) / weights.sum(axis=1)}

    point, reps = bootstrap(
        statistic, np.array([0, 0, 1, 1]), n_resamples=5, random_state=0
    )
    np.testing.assert_array_equal(calls[0], np.ones((1, 4)))
    assert point["mean"] == 1.5 and reps["mean"].shape == (5,)


def _margin(y: np.ndarray, p: np.ndarray, t: float, floors=(0.95, 0.85)) -> float:
    """min(sens - floor, spec - floor) at threshold t, from sklearn's recall."""
    pred = (p >= t).astype(int)
    sens = skm.recall_score(y, pred, pos_label=1)
    spec = skm.recall_score(y, pred, pos_label=0)
    return min(sens - floors[0], spec - floors[1])


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 4),
    st.floats(0.5, 1.0),
    st.floats(0.5, 1.0),
)
def test_robust_threshold_is_the_best_worst_case(seed, n_versions, fl_sens, fl_spec):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(12, int), np.ones(15, int)]
    probas = {
        f"v{i}": np.clip(y * rng.uniform(0, 0.6) + rng.uniform(0, 0.6, len(y)), 0, 1)
        for i in range(n_versions)
    }
    floors = (fl_sens, fl_spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        point = select_robust_threshold(
            y, probas, min_sensitivity=fl_sens, min_specificity=fl_spec
        )

    def worst(t: float) -> float:
        return min(_margin(y, p, t, floors) for p in probas.values())

    # no threshold does better in its worst version: try every observed score,
    # 0 and 1 (each distinct set of calls is made at one of them)
    tried = np.unique(np.concatenate([*probas.values(), [0.0, 1.0]]))
    assert worst(point.threshold) >= max(worst(t) for t in tried) - 1e-9
    per_version = [
        (
            skm.recall_score(y, (p >= point.threshold).astype(int), pos_label=1),
            skm.recall_score(y, (p >= point.threshold).astype(int), pos_label=0),
        )
        for p in probas.values()
    ]
    assert point.sensitivity == pytest.approx(min(s for s, _ in per_version))
    assert point.specificity == pytest.approx(min(s for _, s in per_version))


def test_robust_threshold_moves_away_from_an_overconfident_holdout():
    # In distribution every NORMAL is near 0; brighter images move NORMAL up.
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    as_acquired = np.r_[np.linspace(0.0, 0.05, 20), np.linspace(0.6, 1.0, 20)]
    brighter = np.r_[np.linspace(0.05, 0.5, 20), np.linspace(0.7, 1.0, 20)]
    probas = {"none": as_acquired, "brighter": brighter}
    sens_only = select_threshold(y, as_acquired, sensitivity=0.98).threshold
    robust = select_robust_threshold(y, probas)
    assert sens_only == pytest.approx(0.6)
    assert 0.5 < robust.threshold < 0.7  # between the shifted NORMAL and PNEUMONIA
    assert robust.sensitivity == 1.0 and robust.specificity == 1.0


def test_robust_threshold_warns_when_no_threshold_keeps_the_floors():
    y = [0, 0, 1, 1]
    with pytest.warns(UserWarning, match="no threshold keeps"):
        point = select_robust_threshold(y, {"none": [0.9, 0.1, 0.2, 0.8]})
    assert point.sensitivity < 0.95 or point.specificity < 0.85


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"probas": {}}, "non-empty mapping"),
        ({"probas": [0.1, 0.9]}, "non-empty mapping"),
        ({"min_sensitivity": 0}, r"min_sensitivity must be in \(0, 1\]"),
        ({"min_specificity": 1.5}, r"min_specificity must be in \(0, 1\]"),
    ],
)
def test_robust_threshold_refuses_bad_input(kwargs, message):
    args = {"probas": {"none": [0.1, 0.9]}, **kwargs}
    with pytest.raises(ValueError, match=message):
        select_robust_threshold([0, 1], **args)


def _ece_by_hand(y_idx: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """Guo et al. (2017), written as a loop over bins."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_idx
    total = 0.0
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        inside = (confidence >= low) & (
            (confidence < high) if b < n_bins - 1 else (confidence <= high)
        )
        if inside.any():
            gap = abs(confidence[inside].mean() - correct[inside].mean())
            total += inside.mean() * gap
    return total


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(20, 200))
def test_expected_calibration_error_matches_the_definition(seed, n):
    rng = np.random.default_rng(seed)
    y = CLASSES[rng.integers(0, 2, n)]
    if len(np.unique(y)) < 2:
        y[0], y[1] = CLASSES
    p = rng.random(n)
    report = clinical_report(y, p, n_bootstrap=20, random_state=0)
    proba = np.column_stack([1 - p, p])
    expected = _ece_by_hand((y == "PNEUMONIA").astype(int), proba)
    assert report.metrics["ece"].value == pytest.approx(expected, abs=1e-9)
    assert 0 <= report.metrics["ece"].low <= report.metrics["ece"].high <= 1


def test_expected_calibration_error_sees_overconfidence():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 5000)
    y = CLASSES[(rng.random(5000) < 1 / (1 + np.exp(-z))).astype(int)]
    calibrated = clinical_report(y, 1 / (1 + np.exp(-z)), n_bootstrap=200)
    overconfident = clinical_report(y, 1 / (1 + np.exp(-4 * z)), n_bootstrap=200)
    assert calibrated.metrics["ece"].high < 0.03
    assert overconfident.metrics["ece"].low > 0.1


def test_seed_averaged_metric_and_paired_difference():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    probas = {
        f"{name}{seed}": 1 / (1 + np.exp(-(y * shift + rng.normal(0, 0.5, y.size))))
        for name, shift in (("a", 1.0), ("b", 0.6))
        for seed in range(3)
    }
    comparison = ModelComparison.from_predictions(
        y, probas, n_bootstrap=300, random_state=0
    )
    a, b = ["a0", "a1", "a2"], ["b0", "b1", "b2"]
    aucs = {k: skm.roc_auc_score(y, p) for k, p in probas.items()}
    mean_a = comparison.mean_metric(a)
    assert mean_a.value == pytest.approx(np.mean([aucs[k] for k in a]))
    assert mean_a.low < mean_a.value < mean_a.high
    diff = comparison.mean_difference(a, b)
    expected = np.mean([aucs[x] - aucs[z] for x, z in zip(a, b)])
    assert diff.value == pytest.approx(expected)
    assert diff.low < diff.value < diff.high
    # paired: the interval of the difference is narrower than the two
    # separate intervals put together
    mean_b = comparison.mean_metric(b)
    assert diff.high - diff.low < (mean_a.high - mean_a.low) + (
        mean_b.high - mean_b.low
    )
    same = comparison.mean_difference(a, a)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    spec = comparison.mean_metric(a, metric="specificity")
    assert 0 <= spec.value <= 1


def test_seed_averages_refuse_what_they_cannot_pair():
    y = np.repeat([0, 1], 10)
    p = np.linspace(0, 1, 20)
    comparison = ModelComparison.from_predictions(
        y, {"a": p, "b": p}, n_bootstrap=50, random_state=0
    )
    with pytest.raises(ValueError, match="must pair up"):
        comparison.mean_difference(["a"], ["a", "b"])
    with pytest.raises(ValueError, match=r"no model named \['c'\]"):
        comparison.mean_metric(["c"])
    with pytest.raises(ValueError, match="unknown metric 'auroc'"):
        comparison.mean_metric(["a"], metric="auroc")
    with pytest.raises(ValueError, match="names is empty"):
        comparison.mean_metric([])


def test_pos_label_is_refused_where_it_would_be_ignored():
    """With three classes the metrics are macro averages: a pos_label is an
    error, not silently dropped; a wrong one is refused by apply_threshold
    even where the most probable class decides."""
    y = np.array(["NORMAL", "BACTERIA", "VIRUS"] * 4)
    proba = np.full((12, 3), 1 / 3)
    with pytest.raises(ValueError, match="leave out pos_label='VIRUS'"):
        clinical_report(y, proba, pos_label="VIRUS", n_bootstrap=0)
    with pytest.raises(ValueError, match="'COVID' is not one of the classes"):
        apply_threshold([[0.2, 0.8]], classes=CLASSES, pos_label="COVID")
    assert apply_threshold([[0.2, 0.8]], classes=CLASSES, pos_label="NORMAL") == [
        "PNEUMONIA"
    ]


def test_errors_say_what_is_wrong_with_labels_probabilities_and_classes():
    y, p = _binary_data(20)
    with pytest.raises(ValueError, match=r"different types .*convert y_true"):
        clinical_report(
            np.where(y == "PNEUMONIA", "1", "0"), p, classes=[0, 1], n_bootstrap=0
        )
    with pytest.raises(ValueError, match=r"from -1.5 to 2.*logits"):
        clinical_report(y, np.linspace(-1.5, 2, 20), n_bootstrap=0)
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        clinical_report(y, np.r_[p[:-1], np.nan], n_bootstrap=0)
    three = np.array(["a", "b", "c"] * 2)
    with pytest.raises(ValueError, match=r"needs two classes; y_true has 3"):
        select_threshold(three, np.full((6, 3), 1 / 3))


def test_youden_on_scores_that_do_not_separate_says_so():
    y = np.array(["NORMAL"] * 10 + ["PNEUMONIA"] * 10)
    with pytest.warns(UserWarning, match="do not separate the classes"):
        point = select_threshold(y, np.full(20, 0.3))
    assert point.threshold == np.inf
    # a separating model gets no such warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            select_threshold(y, np.r_[np.full(10, 0.2), np.full(10, 0.7)]).threshold
            == 0.7
        )


def test_notes_say_when_a_metric_is_undefined_in_resamples_or_classes():
    """PPV is 0 of 0 in a resample that calls no image positive; a class
    never predicted has no PPV, and the macro average leaves it out."""
    y = np.array(["NORMAL"] * 90 + ["PNEUMONIA"] * 10)
    p = np.zeros(100)
    p[[0, 90]] = 0.9  # one false and one true positive
    report = clinical_report(y, p, n_bootstrap=400)
    note = [n for n in report.notes if n.startswith("Undefined")]
    assert len(note) == 1 and "PPV (precision)" in note[0], report.notes
    share = float(note[0].split("PPV (precision) ")[1].split("%")[0]) / 100
    assert 0.05 < share < 0.25  # about (1 - 1/90)^90 * (1 - 1/10)^10 = 0.13
    # no note where the metric is undefined in every resample (it is n/a)
    none_called = clinical_report(y, np.zeros(100), n_bootstrap=200)
    assert np.isnan(none_called.metrics["ppv"].value)
    assert not [n for n in none_called.notes if "Undefined" in n]
    # a well-separated model has no such note
    y2, p2 = _binary_data(300)
    assert not [n for n in clinical_report(y2, p2).notes if "Undefined" in n]

    y3 = np.array(["BACTERIA", "NORMAL", "VIRUS"] * 10)
    proba = np.tile([0.6, 0.4, 0.0], (30, 1))
    proba[1::3] = [0.3, 0.7, 0.0]  # VIRUS is never the most probable
    report = clinical_report(y3, proba, n_bootstrap=50)
    assert np.isnan(report.per_class["VIRUS"]["ppv"].value)
    assert report.metrics["ppv"].value == pytest.approx(
        skm.precision_score(
            y3,
            proba.argmax(1).choose(["BACTERIA", "NORMAL", "VIRUS"]),
            average="macro",
            zero_division=np.nan,
        )
    )
    macro = [n for n in report.notes if n.startswith("Macro")]
    assert len(macro) == 1 and "PPV (precision) over 2 of 3 classes" in macro[0]
    assert "undefined for VIRUS" in macro[0]
