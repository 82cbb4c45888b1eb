"""Site adaptation: AdaBN, prior re-estimation (EM), recalibration, and the CLI."""

from __future__ import annotations

import copy
import types
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from sklearn.metrics import log_loss, roc_auc_score

from cxrkit import PneumoniaClassifier, cli
from cxrkit.adaptation import (
    _conformal_floor,
    _pulled_logistic,
    adapt_batchnorm,
    adapt_head,
    adapt_prior,
    adjust_probabilities,
    calibrate,
    conformalize,
    head_cross_val_proba,
    prediction_sets,
    sets_from_probabilities,
    training_prior,
)
from cxrkit.cli import main
from cxrkit.metrics import select_threshold
from cxrkit.models._registry import classifier_head


def _with_probabilities(clf: PneumoniaClassifier, proba: np.ndarray):
    """A copy of ``clf`` whose ``predict_proba`` returns ``proba`` (whatever X)."""
    stub = copy.deepcopy(clf)
    stub.predict_proba = lambda X: proba
    return stub


# ------------------------------------------------------ adjust_probabilities
probabilities = arrays(
    np.float64,
    st.tuples(st.integers(1, 20), st.integers(2, 4)),
    elements=st.floats(0.01, 1.0),
).map(lambda a: a / a.sum(axis=1, keepdims=True))


@settings(max_examples=50, deadline=None)
@given(probabilities, st.floats(0.2, 5.0))
def test_adjusted_probabilities_are_probabilities(proba, temperature):
    bias = np.linspace(-1, 1, proba.shape[1])
    out = adjust_probabilities(proba, {"temperature": temperature, "bias": bias})
    assert out.shape == proba.shape
    assert np.all(out >= 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-9)


@settings(max_examples=50, deadline=None)
@given(probabilities)
def test_identity_map_changes_nothing(proba):
    k = proba.shape[1]
    same = adjust_probabilities(proba, {"temperature": 1.0, "bias": [0.0] * k})
    np.testing.assert_allclose(same, proba, rtol=1e-9, atol=1e-12)
    assert adjust_probabilities(proba, None) is proba


@settings(max_examples=50, deadline=None)
@given(probabilities, st.floats(1.1, 5.0))
def test_temperature_above_one_flattens_and_keeps_the_order(proba, temperature):
    out = adjust_probabilities(
        proba, {"temperature": temperature, "bias": [0.0] * proba.shape[1]}
    )
    assert np.all(out.max(axis=1) <= proba.max(axis=1) + 1e-12)
    if proba.shape[1] == 2 and len(proba) > 1:  # one score per image: same order
        order = np.argsort(proba[:, 1], kind="stable")
        assert np.all(np.diff(out[order, 1]) >= -1e-12)


# ------------------------------------------------------------------- AdaBN
def test_batchnorm_statistics_become_the_sites(fitted_synthetic, synthetic):
    X, _, _ = synthetic
    site = (X[:64] * 0.5).astype(np.uint8)  # darker scanner
    before = {
        k: v.clone() for k, v in fitted_synthetic.net_.module_.state_dict().items()
    }
    with pytest.warns(UserWarning, match="out-of-distribution detector"):
        adapted = adapt_batchnorm(fitted_synthetic, site, batch_size=16)
    assert fitted_synthetic.ood_detector_ is not None  # the original keeps its own
    assert adapted.ood_detector_ is None  # fitted on other features: dropped

    # the original is untouched
    for k, v in fitted_synthetic.net_.module_.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the first batch-norm layer now holds the mean of its input over the site
    module = adapted.net_.module_
    first_bn = next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = first_bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        from cxrkit.images import ImageBatches

        x, _ = ImageBatches(site).__getitems__(list(range(len(site))))
        module(adapted.net_.model_input(x))
    hook.remove()
    site_mean = seen[0].mean(dim=(0, 2, 3))
    np.testing.assert_allclose(first_bn.running_mean, site_mean, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(
        first_bn.running_mean,
        before[next(k for k in before if k.endswith("running_mean"))],
    )
    assert adapted.adaptation_["steps"] == [{"step": "batchnorm", "n_images": 64}]
    assert not np.allclose(
        adapted.predict_proba(site), fitted_synthetic.predict_proba(site)
    )


def test_batchnorm_statistics_weigh_every_image_once(fitted_synthetic, synthetic):
    """Not every batch: a last batch of one image counts as one image, and the
    spread between batches is part of the variance."""
    X, _, _ = synthetic
    # two very different halves, as a folder read class by class gives them
    site = np.concatenate([X[:33] // 4, X[33:65]]).astype(np.uint8)
    stats = {}
    for batch_size in (64, 13, 65):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the OOD detector is dropped
            adapted = adapt_batchnorm(fitted_synthetic, site, batch_size=batch_size)
        first_bn = next(
            m
            for m in adapted.net_.module_.modules()
            if isinstance(m, torch.nn.BatchNorm2d)
        )
        stats[batch_size] = (first_bn.running_mean, first_bn.running_var)
    # the first layer's input does not depend on other batch-norm layers
    seen = []
    hook = first_bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        from cxrkit.images import ImageBatches

        x, _ = ImageBatches(site).__getitems__(list(range(len(site))))
        adapted.net_.module_.eval()(adapted.net_.model_input(x))
    hook.remove()
    expected_var = seen[0].transpose(0, 1).flatten(1).var(dim=1)  # unbiased
    for mean, var in stats.values():
        torch.testing.assert_close(
            mean, seen[0].mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(var, expected_var, rtol=1e-4, atol=1e-5)


def test_batchnorm_needs_batchnorm_layers(synthetic, fast):
    X, y, _ = synthetic
    clf = PneumoniaClassifier(model="simple_cnn", **fast).fit(X[:40], y[:40])
    with pytest.raises(ValueError, match="no batch-norm layers"):
        adapt_batchnorm(clf, X[:10])


# ------------------------------------------------------------- prior (EM)
def _label_shifted_probabilities(start: np.ndarray, site_prior: float, n: int, seed=0):
    """Calibrated probabilities (for prior ``start``) of a site with another prior.

    Scores s ~ N(+1, 1) for positives and N(-1, 1) for negatives: the
    log-likelihood ratio is 2s, so the posterior under prior ``start`` is
    sigmoid(2s + log(start[1] / start[0])).
    """
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < site_prior
    s = rng.normal(np.where(positive, 1.0, -1.0), 1.0)
    p1 = 1 / (1 + np.exp(-(2 * s + np.log(start[1] / start[0]))))
    return np.column_stack([1 - p1, p1]), positive


@pytest.mark.parametrize("site_prior", [0.2, 0.5, 0.8])
def test_em_recovers_the_site_prior(fitted_synthetic, site_prior):
    start = training_prior(fitted_synthetic)
    proba, positive = _label_shifted_probabilities(start, site_prior, 20_000)
    stub = _with_probabilities(fitted_synthetic, proba)
    adapted = adapt_prior(stub, np.zeros((1, 8, 8), np.uint8))
    estimated = adapted.adaptation_["steps"][-1]["site_prior"]["PNEUMONIA"]
    assert abs(estimated - positive.mean()) < 0.015
    # the corrected probabilities are calibrated for the site: their mean
    # matches the site's share of positives
    corrected = adjust_probabilities(proba, adapted.adaptation_)
    assert abs(corrected[:, 1].mean() - positive.mean()) < 0.015


def test_a_recorded_threshold_keeps_its_calls_through_the_prior(fitted_synthetic):
    """Label shift leaves each class's scores, so the sensitivity a recorded
    threshold promised holds if every image keeps its call."""
    from cxrkit.persistence import operating_threshold

    start = training_prior(fitted_synthetic)
    proba, _ = _label_shifted_probabilities(start, 0.8, 2000)
    stub = copy.deepcopy(fitted_synthetic)
    stub.predict_proba = types.MethodType(
        lambda self, X: adjust_probabilities(proba, self.adaptation_), stub
    )
    stub.operating_threshold_ = operating_threshold(
        0.7, pos_label="PNEUMONIA", source="validation"
    )
    adapted = adapt_prior(stub, np.zeros((1, 8, 8), np.uint8))
    carried = adapted.operating_threshold_["threshold"]
    assert carried != pytest.approx(0.7, abs=0.01)  # the probabilities moved
    after = adapted.predict_proba(None)[:, 1]
    assert not np.allclose(after, proba[:, 1])
    np.testing.assert_array_equal(after >= carried, proba[:, 1] >= 0.7)
    assert (
        "carried through the site's class prior"
        in (adapted.operating_threshold_["source"])
    )


def test_batchnorm_drops_a_recorded_threshold_with_a_warning(
    fitted_synthetic, synthetic
):
    from cxrkit.persistence import operating_threshold

    X, _, _ = synthetic
    model = copy.deepcopy(fitted_synthetic)
    model.ood_detector_ = None
    model.operating_threshold_ = operating_threshold(
        0.7, pos_label="PNEUMONIA", source="validation"
    )
    with pytest.warns(UserWarning, match="operating threshold .* dropped"):
        adapted = adapt_batchnorm(model, X[:20])
    assert adapted.operating_threshold_ is None
    assert model.operating_threshold_["threshold"] == 0.7  # the original keeps it


def test_training_prior_follows_class_weights(synthetic, fast):
    X, _, _ = synthetic
    Xs, ys = X[:60], np.array(["NORMAL"] * 15 + ["PNEUMONIA"] * 45)
    plain = PneumoniaClassifier(model="simple_cnn", **fast).fit(Xs, ys)
    balanced = PneumoniaClassifier(
        model="simple_cnn", class_weight="balanced", **fast
    ).fit(Xs, ys)
    np.testing.assert_allclose(training_prior(plain), [0.25, 0.75])
    np.testing.assert_allclose(training_prior(balanced), [0.5, 0.5])


# ------------------------------------------------------------- calibration
def test_temperature_scaling_undoes_overconfidence(fitted_synthetic):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 4000)
    truth = 1 / (1 + np.exp(-z))
    y = np.where(rng.random(4000) < truth, "PNEUMONIA", "NORMAL")
    overconfident = 1 / (1 + np.exp(-3 * z))  # logits 3x too large
    proba = np.column_stack([1 - overconfident, overconfident])
    stub = _with_probabilities(fitted_synthetic, proba)

    adapted = calibrate(stub, np.zeros((1, 8, 8), np.uint8), y, sensitivity=0.9)
    step = adapted.adaptation_["steps"][-1]
    assert step["temperature"] == pytest.approx(3.0, rel=0.1)
    assert step["log_loss_after"] < step["log_loss_before"]
    after = adjust_probabilities(proba, adapted.adaptation_)
    assert log_loss(y, after[:, 1]) < log_loss(y, proba[:, 1])
    assert roc_auc_score(y, after[:, 1]) == pytest.approx(roc_auc_score(y, proba[:, 1]))
    # the recorded threshold reaches the floor on the sample
    point = adapted.operating_threshold_
    assert point["criterion"] == "sensitivity >= 0.9"
    called = after[:, 1] >= point["threshold"]
    assert called[y == "PNEUMONIA"].mean() >= 0.9
    # the split-conformal quantile: the ceil((n + 1) 0.9)-th highest positive
    positives = np.sort(after[y == "PNEUMONIA", 1])[::-1]
    rank = int(np.ceil((len(positives) + 1) * 0.9))
    assert point["threshold"] == pytest.approx(positives[rank - 1])
    assert "95% CI" in point["source"] and "4000 images" in point["source"]


def test_the_sensitivity_floor_holds_for_new_patients_on_average():
    """The highest threshold that reaches the floor on the sample keeps less
    than the floor of new positives (its k-th positive below leaves
    (n - k) / (n + 1)); the split-conformal threshold keeps at least it.
    Positives' probabilities uniform on (0, 1): a threshold t keeps 1 - t."""
    rng = np.random.default_rng(0)
    n_pos, n_neg, floor = 30, 20, 0.95
    y_idx = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]
    kept_conformal, kept_in_sample = [], []
    for _ in range(2000):
        p1 = np.r_[rng.random(n_neg) * 0.5, rng.random(n_pos)]
        proba = np.column_stack([1 - p1, p1])
        point = _conformal_floor(proba, y_idx, ["NORMAL", "PNEUMONIA"], floor)
        assert point.sensitivity >= floor  # on the sample too
        kept_conformal.append(1 - point.threshold)
        old = select_threshold(y_idx, p1, sensitivity=floor)
        kept_in_sample.append(1 - old.threshold)
    assert np.mean(kept_conformal) >= floor  # 1 - 1/31 = 0.968 expected
    assert np.mean(kept_in_sample) < floor  # 1 - 2/31 = 0.935 expected


def test_too_few_positives_for_the_floor_warn_and_use_the_lowest():
    p1 = np.r_[np.linspace(0.05, 0.3, 10), np.linspace(0.4, 0.95, 15)]
    y_idx = np.r_[np.zeros(10, int), np.ones(15, int)]
    with pytest.warns(UserWarning, match="15 PNEUMONIA images cannot promise.*19"):
        point = _conformal_floor(
            np.column_stack([1 - p1, p1]), y_idx, ["NORMAL", "PNEUMONIA"], 0.95
        )
    assert point.threshold == pytest.approx(0.4)
    assert point.sensitivity == 1.0 and point.specificity == 1.0


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_a_separated_small_sample_keeps_probabilities_off_0_and_1(
    fitted_synthetic, method
):
    """Without the prior on the temperature, the maximum-likelihood fit on a
    sample that the model already separates sends the temperature towards 0
    and every probability to exactly 0 or 1 (and ties the images)."""
    p1 = np.r_[np.linspace(0.05, 0.4, 12), np.linspace(0.6, 0.97, 13)]
    y = np.array(["NORMAL"] * 12 + ["PNEUMONIA"] * 13)
    stub = _with_probabilities(fitted_synthetic, np.column_stack([1 - p1, p1]))
    adapted = calibrate(stub, np.zeros((1, 8, 8), np.uint8), y, method=method)
    assert 0.05 < adapted.adaptation_["steps"][-1]["temperature"] < 1
    after = adjust_probabilities(np.column_stack([1 - p1, p1]), adapted.adaptation_)
    assert np.all((after > 0) & (after < 1))
    assert np.all(np.diff(after[:, 1]) > 0)  # the order of the images is kept


def test_platt_scaling_fits_a_bias(fitted_synthetic):
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, 4000)
    y = np.where(rng.random(4000) < 1 / (1 + np.exp(-(z - 1.0))), "PNEUMONIA", "NORMAL")
    p1 = 1 / (1 + np.exp(-z))  # right slope, intercept off by 1
    stub = _with_probabilities(fitted_synthetic, np.column_stack([1 - p1, p1]))
    adapted = calibrate(stub, np.zeros((1, 8, 8), np.uint8), y, method="platt")
    assert adapted.adaptation_["temperature"] == pytest.approx(1.0, abs=0.15)
    assert adapted.adaptation_["bias"][1] == pytest.approx(-1.0, abs=0.2)
    assert adapted.operating_threshold_ is None  # no sensitivity asked for


def test_calibration_keeps_the_calls_of_a_recorded_threshold(fitted_synthetic):
    """Recalibrating without a new threshold changes probabilities, not calls."""
    from cxrkit.persistence import operating_threshold

    rng = np.random.default_rng(2)
    z = rng.normal(0, 2.0, 600)
    y = np.where(rng.random(600) < 1 / (1 + np.exp(-(z - 1.0))), "PNEUMONIA", "NORMAL")
    p1 = 1 / (1 + np.exp(-2 * z))
    proba = np.column_stack([1 - p1, p1])
    stub = _with_probabilities(fitted_synthetic, proba)
    stub.operating_threshold_ = operating_threshold(
        0.8, pos_label="PNEUMONIA", source="validation"
    )
    for method in ("temperature", "platt"):
        adapted = calibrate(stub, np.zeros((1, 8, 8), np.uint8), y, method=method)
        after = adjust_probabilities(proba, adapted.adaptation_)[:, 1]
        carried = adapted.operating_threshold_["threshold"]
        assert carried != pytest.approx(0.8, abs=1e-3)  # the scale moved
        np.testing.assert_array_equal(after >= carried, p1 >= 0.8)
        assert (
            "carried through site calibration" in adapted.operating_threshold_["source"]
        )


def test_accuracy_threshold_is_the_platt_scaled_bayes_rule(fitted_synthetic):
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2.0, 3000)
    y = np.where(rng.random(3000) < 1 / (1 + np.exp(-(z - 1.5))), "PNEUMONIA", "NORMAL")
    p1 = 1 / (1 + np.exp(-z))  # the site has fewer positives than the model thinks
    proba = np.column_stack([1 - p1, p1])
    stub = _with_probabilities(fitted_synthetic, proba)
    adapted = calibrate(
        stub, np.zeros((1, 8, 8), np.uint8), y, method="platt", threshold="accuracy"
    )
    point = adapted.operating_threshold_
    assert point["threshold"] == 0.5
    after = adjust_probabilities(proba, adapted.adaptation_)[:, 1]
    accuracy = np.mean((after >= 0.5) == (y == "PNEUMONIA"))
    # the best single cut of the raw score lies near z = 1.5, not at 0
    assert accuracy > np.mean((p1 >= 0.5) == (y == "PNEUMONIA")) + 0.02
    best = max(np.mean((z >= c) == (y == "PNEUMONIA")) for c in np.linspace(-2, 4, 121))
    assert accuracy >= best - 0.01
    assert point["sensitivity"] == pytest.approx(
        np.mean(after[y == "PNEUMONIA"] >= 0.5)
    )
    assert "3000 images" in point["source"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": "accuracy"}, "method='platt'"),
        ({"threshold": "accuracy", "method": "platt", "sensitivity": 0.9}, "not both"),
        ({"threshold": "youden", "method": "platt"}, "None or 'accuracy'"),
    ],
)
def test_threshold_options_name_the_fix(fitted_synthetic, synthetic, options, message):
    X, y, _ = synthetic
    with pytest.raises(ValueError, match=message):
        calibrate(fitted_synthetic, X[:10], y[:10], **options)


def test_steps_compose(fitted_synthetic, synthetic):
    X, y, _ = synthetic
    base = fitted_synthetic.predict_proba(X[:50])
    first = adapt_prior(fitted_synthetic, X[:50])
    second = calibrate(first, X[:50], y[:50])
    by_hand = adjust_probabilities(
        adjust_probabilities(base, first.adaptation_),
        {
            "temperature": second.adaptation_["steps"][-1]["temperature"],
            "bias": [0.0, 0.0],
        },
    )
    np.testing.assert_allclose(second.predict_proba(X[:50]), by_hand, atol=1e-6)
    assert [s["step"] for s in second.adaptation_["steps"]] == ["prior", "calibrate"]


def test_a_threshold_chosen_after_an_earlier_step_holds_for_the_adapted_model(
    fitted_synthetic,
):
    """The threshold's recorded figures are those of the adapted model's calls,
    also when the model was adapted before (the earlier map applied once)."""
    rng = np.random.default_rng(4)
    y_idx = rng.integers(0, 2, 200)
    p1 = 1 / (1 + np.exp(-rng.normal(2.0 * y_idx - 1, 1.0)))
    raw = np.column_stack([1 - p1, p1])
    y = np.array(["NORMAL", "PNEUMONIA"])[y_idx]
    stub = copy.deepcopy(fitted_synthetic)
    # predict_proba as the classifier's: the raw probabilities, then the
    # model's adaptation; bound to the instance, so that copies use their own
    stub.predict_proba = types.MethodType(
        lambda self, X: adjust_probabilities(raw, self.adaptation_), stub
    )
    stub.adaptation_ = {"temperature": 1.0, "bias": [0.0, 1.5], "steps": [{}]}
    for options in (
        {"method": "platt", "threshold": "accuracy"},
        {"sensitivity": 0.9},
        {"method": "platt", "sensitivity": 0.8},
    ):
        site = calibrate(stub, np.zeros((1, 8, 8), np.uint8), y, **options)
        point = site.operating_threshold_
        called = site.predict_proba(None)[:, 1] >= point["threshold"]
        assert point["sensitivity"] == pytest.approx(np.mean(called[y_idx == 1]))
        assert point["specificity"] == pytest.approx(np.mean(~called[y_idx == 0]))
    assert point["sensitivity"] >= 0.8


# ------------------------------------------------------------------ head
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(4, 30),
    pull=st.sampled_from([1e-3, 1e-2, 1.0, 100.0]),
)
def test_pulled_logistic_finds_the_penalised_optimum(seed, n, pull):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 5))
    y_idx = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    weight, bias = rng.normal(size=(2, 5)), rng.normal(size=2)
    w, b, before, after = _pulled_logistic(features, y_idx, weight, bias, pull)

    def objective(w, b):
        z = features @ w.T + b
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        counts = np.bincount(y_idx, minlength=2)
        per_image = (n / (2 * counts))[y_idx] / n
        penalty = ((w - weight) ** 2).sum() + ((b - bias) ** 2).sum()
        return -(per_image * logp[np.arange(n), y_idx]).sum() + pull * penalty

    assert after <= before + 1e-12
    np.testing.assert_allclose(
        [before, after], [objective(weight, bias), objective(w, b)]
    )
    # no small step in any direction does better: a minimum, not just a descent
    for _ in range(10):
        dw, db = rng.normal(size=w.shape) * 1e-3, rng.normal(size=b.shape) * 1e-3
        assert objective(w + dw, b + db) >= objective(w, b) - 1e-7


def _site(X, y):
    """A second site where the model's scores mislead: inverted films."""
    return (255 - X).astype(np.uint8), y


def test_head_refit_changes_the_head_only_and_ranks_the_site_better(
    fitted_synthetic, synthetic
):
    X, y, _ = synthetic
    X_site, y_site = _site(X[200:], y[200:])
    lab, rest = slice(0, 100), slice(100, 200)
    trained = {
        k: v.clone() for k, v in fitted_synthetic.net_.module_.state_dict().items()
    }
    adapted = adapt_head(fitted_synthetic, X_site[lab], y_site[lab])

    module = adapted.net_.module_
    head = classifier_head(module, "cnn4")
    name = next(n for n, m in module.named_modules() if m is head)
    changed = {
        k for k, v in module.state_dict().items() if not torch.equal(v, trained[k])
    }
    assert changed == {f"{name}.weight", f"{name}.bias"}
    for k, v in fitted_synthetic.net_.module_.state_dict().items():
        assert torch.equal(v, trained[k]), k  # the original is untouched
    step = adapted.adaptation_["steps"][-1]
    assert step["step"] == "head" and step["n_images"] == 100
    assert step["loss_after"] < step["loss_before"]
    positive = y_site[rest] == "PNEUMONIA"
    auc_before = roc_auc_score(
        positive, fitted_synthetic.predict_proba(X_site[rest])[:, 1]
    )
    auc_after = roc_auc_score(positive, adapted.predict_proba(X_site[rest])[:, 1])
    assert auc_after > auc_before + 0.02, (auc_before, auc_after)
    # the detector reads the head's inputs, which did not change: kept
    assert adapted.ood_detector_ is not None
    np.testing.assert_allclose(
        adapted.ood_score(X_site[rest]), fitted_synthetic.ood_score(X_site[rest])
    )


def test_a_strong_pull_keeps_the_trained_head(fitted_synthetic, synthetic):
    X, y, _ = synthetic
    X_site, y_site = _site(X[200:300], y[200:300])
    kept = adapt_head(fitted_synthetic, X_site, y_site, pull=1e6)
    loose = adapt_head(fitted_synthetic, X_site, y_site, pull=1e-3)
    before = fitted_synthetic.predict_proba(X_site)
    assert np.abs(kept.predict_proba(X_site) - before).max() < 1e-3
    assert np.abs(loose.predict_proba(X_site) - before).max() > 0.1


def test_out_of_fold_probabilities_come_from_heads_without_the_image(
    fitted_synthetic, synthetic
):
    X, y, _ = synthetic
    X_site, y_site = _site(X[200:300], y[200:300])
    # a head held at the trained one: out-of-fold = the model's probabilities
    kept = head_cross_val_proba(fitted_synthetic, X_site, y_site, pull=1e6)
    before = fitted_synthetic.predict_proba(X_site)
    assert np.abs(kept - before).max() < 1e-3
    # a free head fits its own images better than the images it did not see
    refit = adapt_head(fitted_synthetic, X_site, y_site, pull=1e-3)
    oof = head_cross_val_proba(fitted_synthetic, X_site, y_site, pull=1e-3)
    assert oof.shape == (100, 2)
    np.testing.assert_allclose(oof.sum(axis=1), 1.0)
    own = refit.predict_proba(X_site)
    assert log_loss(y_site, own[:, 1]) < log_loss(y_site, oof[:, 1]) - 0.05
    # calibrate fits on the probabilities given, and says so
    site = calibrate(refit, X_site, y_site, sensitivity=0.9, proba=oof)
    assert "out-of-fold probabilities" in site.operating_threshold_["source"]
    in_sample = calibrate(refit, X_site, y_site, sensitivity=0.9)
    assert site.adaptation_ != in_sample.adaptation_
    with pytest.raises(ValueError, match="one column per class"):
        calibrate(refit, X_site, y_site, proba=oof[:, 1])
    with pytest.raises(ValueError, match="cv must be an integer"):
        head_cross_val_proba(fitted_synthetic, X_site, y_site, cv=1)


def test_out_of_fold_probabilities_average_the_test_time_views(
    fitted_synthetic, synthetic, monkeypatch
):
    """With ``tta``, the out-of-fold probabilities that ``calibrate`` fits on
    are what the refitted model's ``predict_proba`` gives: the image and its
    views averaged, not the image alone."""
    X, y, _ = synthetic
    X_site, y_site = _site(X[200:300], y[200:300])
    clf = copy.deepcopy(fitted_synthetic).set_params(tta=3)
    plain = fitted_synthetic.predict_proba(X_site)
    expected = clf.predict_proba(X_site)
    assert np.abs(expected - plain).max() > 0.01
    kept = head_cross_val_proba(clf, X_site, y_site, pull=1e6)
    assert np.abs(kept - expected).max() < 1e-3
    # and the head refit on all of it scores the views with the new layer;
    # it is fitted on the images as given (their features alone): no pass of
    # predict_proba, so no views
    from cxrkit import adaptation

    run = adaptation.network_proba
    copies = []

    def counted(net, images, *, tta, random_state):
        copies.append(tta)
        return run(net, images, tta=tta, random_state=random_state)

    monkeypatch.setattr(adaptation, "network_proba", counted)
    refit = adapt_head(clf, X_site, y_site, pull=1e6)
    assert copies == []
    assert np.abs(refit.predict_proba(X_site) - expected).max() < 1e-3


def test_head_refit_refuses_a_bad_tta_by_name(fitted_synthetic, synthetic):
    from sklearn.utils._param_validation import InvalidParameterError

    X, y, _ = synthetic
    X_site, y_site = _site(X[200:300], y[200:300])
    clf = copy.deepcopy(fitted_synthetic)
    clf.tta = 2.5
    with pytest.raises(InvalidParameterError, match="'tta' parameter"):
        head_cross_val_proba(clf, X_site, y_site)


def test_head_refit_drops_the_threshold_and_saves(
    fitted_synthetic, synthetic, tmp_path
):
    X, y, _ = synthetic
    X_site, y_site = _site(X[200:], y[200:])
    with_threshold = copy.deepcopy(fitted_synthetic)
    with_threshold.operating_threshold_ = {
        "threshold": 0.3,
        "pos_label": "PNEUMONIA",
        "criterion": "test",
        "source": None,
    }
    with pytest.warns(UserWarning, match="operating threshold .* dropped"):
        adapted = adapt_head(with_threshold, X_site[:100], y_site[:100])
    assert adapted.operating_threshold_ is None
    site = calibrate(
        adapted, X_site[:100], y_site[:100], method="platt", threshold="accuracy"
    )
    assert [s["step"] for s in site.adaptation_["steps"]] == ["head", "calibrate"]
    loaded = PneumoniaClassifier.load(site.save(tmp_path / "site.cxr"))
    np.testing.assert_allclose(
        loaded.predict_proba(X_site[100:]), site.predict_proba(X_site[100:]), atol=1e-6
    )
    assert not np.allclose(
        loaded.predict_proba(X_site[100:]),
        calibrate(
            fitted_synthetic,
            X_site[:100],
            y_site[:100],
            method="platt",
            threshold="accuracy",
        ).predict_proba(X_site[100:]),
        atol=1e-3,
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda clf, X, y: adapt_head(clf, X[:10], ["NORMAL"] * 10), "one class only"),
        (lambda clf, X, y: adapt_head(clf, X[:10], y[:10], pull=0), "pull must be"),
        (lambda clf, X, y: adapt_head(clf, X[:10], y[:10], pull="1"), "pull must be"),
        (
            lambda clf, X, y: adapt_head(clf, X[:10], y[:9]),
            "gave 10 images but y has 9",
        ),
        (
            lambda clf, X, y: adapt_head(
                calibrate(clf, X[:40], y[:40]), X[:40], y[:40]
            ),
            "before adapt_prior and calibrate",
        ),
    ],
)
def test_head_refit_errors_name_the_fix(fitted_synthetic, synthetic, call, message):
    X, y, _ = synthetic
    with pytest.raises(ValueError, match=message):
        call(fitted_synthetic, X, y)


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (["NORMAL"] * 10, "one class only"),
        (["NORMAL"] * 5 + ["COVID"] * 5, "labels the model does not know"),
        (["NORMAL"] * 5 + ["PNEUMONIA"] * 4, "gave 10 images but y has 9"),
    ],
)
def test_calibration_input_errors_name_the_fix(fitted_synthetic, synthetic, y, message):
    X, _, _ = synthetic
    with pytest.raises(ValueError, match=message):
        calibrate(fitted_synthetic, X[:10], y)


def test_adapted_model_saves_and_loads(fitted_synthetic, synthetic, tmp_path):
    X, y, _ = synthetic
    adapted = calibrate(
        adapt_prior(adapt_batchnorm(fitted_synthetic, X[:64]), X[:64]),
        X[64:128],
        y[64:128],
        method="platt",
        sensitivity=0.9,
    )
    adapted = conformalize(adapted, X[128:228], y[128:228], coverage=0.8)
    loaded = PneumoniaClassifier.load(adapted.save(tmp_path / "site.cxr"))
    assert loaded.adaptation_ == adapted.adaptation_
    assert loaded.conformal_ == adapted.conformal_
    assert loaded.operating_threshold_ == adapted.operating_threshold_
    np.testing.assert_allclose(
        loaded.predict_proba(X[:20]), adapted.predict_proba(X[:20]), atol=1e-6
    )
    refit = copy.deepcopy(loaded).fit(X[:40], y[:40])
    assert refit.adaptation_ is None  # a new fit forgets the site
    assert refit.conformal_ is None


# --------------------------------------------------------------- conformal
def _two_class_probabilities(n: int, share: float, seed: int):
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < share
    s = rng.normal(np.where(positive, 0.7, -0.7), 1.0)  # much overlap
    p1 = 1 / (1 + np.exp(-2 * s))
    y = np.where(positive, "PNEUMONIA", "NORMAL")
    return np.column_stack([1 - p1, p1]), y


@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_conformal_sets_cover_each_class(fitted_synthetic, coverage):
    # a large calibration sample: the coverage of one draw of it varies by
    # about sqrt(coverage * (1 - coverage) / n_c) around its expectation
    proba, y = _two_class_probabilities(20_000, 0.75, seed=0)  # unbalanced
    stub = _with_probabilities(fitted_synthetic, proba)
    model = conformalize(stub, np.zeros((1, 8, 8), np.uint8), y, coverage=coverage)
    assert model.conformal_["n_images"] == {
        "NORMAL": int((y == "NORMAL").sum()),
        "PNEUMONIA": int((y == "PNEUMONIA").sum()),
    }
    fresh, y_new = _two_class_probabilities(40_000, 0.75, seed=1)
    sets = sets_from_probabilities(model, fresh)
    for i, label in enumerate(["NORMAL", "PNEUMONIA"]):
        covered = sets[y_new == label, i].mean()
        n_c = model.conformal_["n_images"][label]
        # coverage <= E[covered] <= coverage + 1/(n_c + 1), over calibration draws
        assert abs(covered - coverage) < 0.02 + 1 / (n_c + 1), label
    assert 0 < (sets.sum(axis=1) == 2).mean() < 1  # some images are referred


def test_conformal_needs_enough_images_per_class(fitted_synthetic):
    proba, y = _two_class_probabilities(200, 0.97, seed=0)
    stub = _with_probabilities(fitted_synthetic, proba)
    with pytest.raises(ValueError, match="cannot give 95% coverage"):
        conformalize(stub, np.zeros((1, 8, 8), np.uint8), y, coverage=0.95)


def test_adapting_after_conformal_drops_the_sets(fitted_synthetic, synthetic):
    X, y, _ = synthetic
    model = conformalize(fitted_synthetic, X[:200], y[:200], coverage=0.8)
    assert prediction_sets(model, X[:5]).shape == (5, 2)
    with pytest.warns(UserWarning, match="conformalize after the last"):
        later = adapt_prior(model, X[:50])
    assert later.conformal_ is None
    with pytest.raises(ValueError, match="no conformal prediction sets"):
        prediction_sets(later, X[:5])


# -------------------------------------------------------------------- CLI
def _write_folder(root, X, y):
    for i, (image, label) in enumerate(zip(X, y)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / label / f"{i}.png")
    return root


def test_cli_adapt_writes_an_adapted_model(
    fitted_synthetic, synthetic, tmp_path, capsys, monkeypatch
):
    X, y, _ = synthetic
    model = fitted_synthetic.save(tmp_path / "model.cxr")
    site = _write_folder(tmp_path / "site", X[:40], y[:40])
    labelled = _write_folder(tmp_path / "labelled", X[40:100], y[40:100])
    out = tmp_path / "site.cxr"
    code = main(
        [
            "adapt",
            str(model),
            "--out",
            str(out),
            "--site",
            str(site),
            "--batchnorm",
            "--prior",
            "--labelled",
            str(labelled),
            "--sensitivity",
            "0.9",
            "--coverage",
            "0.8",
            "-q",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "operating threshold" in printed and "60 images" in printed
    loaded = PneumoniaClassifier.load(out)
    assert [s["step"] for s in loaded.adaptation_["steps"]] == [
        "batchnorm",
        "prior",
        "calibrate",
    ]
    assert loaded.operating_threshold_["criterion"] == "sensitivity >= 0.9"
    assert loaded.conformal_["coverage"] == 0.8
    assert "conformal prediction sets" in printed

    code = main(
        [
            "adapt",
            str(model),
            "--out",
            str(out),
            "--labelled",
            str(labelled),
            "--method",
            "platt",
            "--max-accuracy",
            "-q",
        ]
    )
    assert code == 0
    loaded = PneumoniaClassifier.load(out)
    assert loaded.operating_threshold_["threshold"] == 0.5
    assert "fewest expected errors" in loaded.operating_threshold_["criterion"]

    code = main(
        [
            *("adapt", str(model), "--out", str(out), "--labelled", str(labelled)),
            *("--head", "--method", "platt", "--max-accuracy", "-q"),
        ]
    )
    assert code == 0
    loaded = PneumoniaClassifier.load(out)
    assert [s["step"] for s in loaded.adaptation_["steps"]] == ["head", "calibrate"]
    assert loaded.adaptation_["steps"][0]["n_images"] == 60
    assert loaded.operating_threshold_["threshold"] == 0.5
    # a model without test-time augmentation: 60 < HEAD_REFIT_MIN_IMAGES_NO_TTA
    # (100), a hint on stderr even with -q
    hint = capsys.readouterr().err
    assert "--head with 60 labelled images" in hint and "leaving out --head" in hint
    assert "without test-time augmentation" in hint and "25 or 50" in hint
    # at its threshold: none, whatever the one for test-time augmentation
    monkeypatch.setattr(cli, "HEAD_REFIT_MIN_IMAGES_NO_TTA", 60)
    monkeypatch.setattr(cli, "HEAD_REFIT_MIN_IMAGES", 1000)
    assert (
        main(
            [
                *("adapt", str(model), "--out", str(out), "--labelled", str(labelled)),
                *("--head", "--method", "platt", "--max-accuracy", "-q"),
            ]
        )
        == 0
    )
    assert "--head with" not in capsys.readouterr().err
    monkeypatch.undo()

    # a floor and sets after the refit: from out-of-fold probabilities
    code = main(
        [
            *("adapt", str(model), "--out", str(out), "--labelled", str(labelled)),
            *("--head", "--sensitivity", "0.9", "--coverage", "0.8", "-q"),
        ]
    )
    assert code == 0
    assert "--head with" not in capsys.readouterr().err  # a floor: the refit paid
    loaded = PneumoniaClassifier.load(out)
    assert [s["step"] for s in loaded.adaptation_["steps"]] == ["head", "calibrate"]
    assert "out-of-fold probabilities" in loaded.operating_threshold_["source"]
    assert loaded.conformal_["coverage"] == 0.8


@pytest.mark.parametrize(
    ("tta", "n_images", "hinted"),
    [(4, 49, True), (4, 50, False), (0, 99, True), (0, 100, False)],
)
def test_head_hint_below_the_images_the_refit_was_measured_to_pay_from(
    capsys, tta, n_images, hinted
):
    # docs/guide/adaptation.md: with test-time augmentation the refit paid
    # from 50 labelled images (fewer not measured), without it from 100
    cli._hint_head_refit(types.SimpleNamespace(quiet=True), n_images, tta)
    printed = capsys.readouterr()
    assert printed.out == ""
    assert ("consider leaving out --head" in printed.err) == hinted
    if hinted and tta:
        assert "with 50 and 100 images" in printed.err
        assert "with test-time augmentation (tta=4); fewer were not measured" in (
            printed.err
        )
    elif hinted:
        assert "had not raised accuracy with 25 or 50 images" in printed.err
        assert "without test-time augmentation (tta=0), and did with 100" in (
            printed.err
        )


def test_cli_adapt_head_hint_follows_the_models_test_time_augmentation(
    fitted_synthetic, synthetic, tmp_path, capsys, monkeypatch
):
    X, y, _ = synthetic
    with_views = copy.deepcopy(fitted_synthetic).set_params(tta=2)
    model = with_views.save(tmp_path / "model.cxr")
    labelled = _write_folder(tmp_path / "labelled", X[40:100], y[40:100])
    command = [
        *("adapt", str(model), "--out", str(tmp_path / "site.cxr")),
        *("--labelled", str(labelled), "--head", "--method", "platt"),
        *("--max-accuracy", "-q"),
    ]
    # just below the threshold for test-time augmentation: a hint
    monkeypatch.setattr(cli, "HEAD_REFIT_MIN_IMAGES", 61)
    assert main(command) == 0
    hint = capsys.readouterr().err
    assert "--head with 60 labelled images" in hint
    assert "with test-time augmentation (tta=4); fewer were not measured" in hint
    # at it: none, whatever the one without test-time augmentation
    monkeypatch.setattr(cli, "HEAD_REFIT_MIN_IMAGES", 60)
    monkeypatch.setattr(cli, "HEAD_REFIT_MIN_IMAGES_NO_TTA", 1000)
    assert main(command) == 0
    assert "--head with" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "nothing to do"),
        (["--prior"], "--site DIR"),
        (["--coverage", "0.9"], "--labelled DIR"),
        (["--head"], "--head refits the final layer"),
        (["--labelled", "x", "--head", "--pull", "0"], "--pull must be a positive"),
        (["--labelled", "x", "--max-accuracy"], "--method platt"),
        (
            [
                "--labelled",
                "x",
                "--method",
                "platt",
                "--max-accuracy",
                "--sensitivity",
                "0.9",
            ],
            "not both",
        ),
    ],
)
def test_cli_adapt_refuses_what_it_cannot_do(
    fitted_synthetic, tmp_path, capsys, extra, message
):
    model = fitted_synthetic.save(tmp_path / "model.cxr")
    code = main(["adapt", str(model), "--out", str(tmp_path / "o.cxr"), *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_report_shows_adaptation_and_conformal_sets(
    fitted_synthetic, synthetic, tmp_path
):
    import json

    from cxrkit.report import evaluation_report

    X, y, _ = synthetic
    model = conformalize(
        calibrate(fitted_synthetic, X[:100], y[:100]),
        X[100:300],
        y[100:300],
        coverage=0.8,
    )
    evaluation_report(
        model,
        X[300:],
        y[300:],
        tmp_path,
        n_bootstrap=50,
        n_misclassified=0,
        n_heatmaps=0,
    )
    summary = json.loads((tmp_path / "metrics.json").read_text())
    conformal = summary["conformal"]
    assert conformal["coverage"] == 0.8
    assert sum(conformal["set_sizes"].values()) == 100
    sets = prediction_sets(model, X[300:])
    normal = y[300:] == "NORMAL"
    assert conformal["covered"]["NORMAL"]["k"] == int(sets[normal, 0].sum())
    assert conformal["covered"]["NORMAL"]["m"] == int(normal.sum())
    assert [s["step"] for s in summary["adaptation"]["steps"]] == ["calibrate"]
    page = (tmp_path / "report.html").read_text()
    assert "Conformal prediction sets" in page and "every class (refer)" in page
    assert "Adapted to a site after training" in page
