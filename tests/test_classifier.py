"""PneumoniaClassifier: sklearn manners, persistence, determinism, real images."""

from __future__ import annotations

import copy
import json
import pickle
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.class_weight import compute_class_weight
from skorch.callbacks import Callback

import cxrkit.classifier as classifier_module
from cxrkit import PneumoniaClassifier, load_image_folder, patient_groups
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.training import _fit


@pytest.fixture(scope="module")
def small():
    return make_synthetic_cxr(48, image_size=32, random_state=3)


@pytest.fixture(scope="module")
def fitted_small(small, fast):
    X, y, _ = small
    return PneumoniaClassifier(model="simple_cnn", **fast).fit(X, y)


@pytest.fixture(scope="module")
def kermany_like(tmp_path_factory, small):
    """A Kermany-style folder of PNGs: 12 patients, 2 images each."""
    X, y, _ = small
    root = tmp_path_factory.mktemp("chest_xray")
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label).mkdir()
    n_normal = n_pneu = 0
    for img, label in zip(X, y):
        if label == "NORMAL":
            name = f"IM-{n_normal // 2:04d}-{n_normal % 2 + 1:04d}.png"
            n_normal += 1
        else:
            name = f"person{n_pneu // 2}_bacteria_{n_pneu}.png"
            n_pneu += 1
        Image.fromarray(img).save(root / label / name)
    return root


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    "roundtrip",
    [
        pytest.param(lambda c, tmp: pickle.loads(pickle.dumps(c)), id="pickle"),
        pytest.param(lambda c, tmp: copy.deepcopy(c), id="deepcopy"),
        pytest.param(
            lambda c, tmp: joblib.load(joblib.dump(c, tmp / "m.joblib")[0]),
            id="joblib",
        ),
        pytest.param(
            lambda c, tmp: PneumoniaClassifier.load(c.save(tmp / "m.cxr")),
            id="save-load",
        ),
    ],
)
def test_roundtrip_gives_identical_probabilities(
    fitted_small, small, roundtrip, tmp_path
):
    X, _, _ = small
    copy_ = roundtrip(fitted_small, tmp_path)
    np.testing.assert_array_equal(copy_.predict_proba(X), fitted_small.predict_proba(X))
    np.testing.assert_array_equal(copy_.classes_, fitted_small.classes_)


def test_clone_is_unfitted_with_same_params(fitted_small):
    cloned = clone(fitted_small)
    assert cloned.get_params() == fitted_small.get_params()
    assert not hasattr(cloned, "net_")


def test_fit_leaves_params_unchanged(small, fast):
    X, y, _ = small
    clf = PneumoniaClassifier(model="simple_cnn", class_weight="balanced", **fast)
    before = repr(clf.get_params())
    clf.fit(X, y)
    assert repr(clf.get_params()) == before


def test_random_state_makes_fit_repeatable(small, fast):
    X, y, _ = small
    params = {**fast, "max_epochs": 2}
    a = PneumoniaClassifier(model="simple_cnn", **params).fit(X, y).predict_proba(X)
    b = PneumoniaClassifier(model="simple_cnn", **params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    other = PneumoniaClassifier(model="simple_cnn", **{**params, "random_state": 1})
    assert not np.allclose(other.fit(X, y).predict_proba(X), a)


def test_fit_does_not_touch_global_torch_rng(small, fast):
    X, y, _ = small
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    PneumoniaClassifier(model="simple_cnn", **fast).fit(X, y)
    np.testing.assert_array_equal(torch.rand(3), expected)


def test_predict_is_deterministic_order_and_subset_invariant(fitted_small, small):
    X, _, _ = small
    proba = fitted_small.predict_proba(X)
    np.testing.assert_array_equal(fitted_small.predict_proba(X), proba)  # no aug
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(
        fitted_small.predict_proba(X[order]), proba[order], atol=1e-6
    )
    for subset in (slice(0, 1), slice(3, 10), slice(1, None, 2)):
        np.testing.assert_allclose(
            fitted_small.predict_proba(X[subset]), proba[subset], atol=1e-6
        )
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


# -------------------------------------------------------------- class weights
@pytest.mark.parametrize(
    "class_weight", [None, "balanced", {"NORMAL": 3.0, "PNEUMONIA": 1.0}]
)
def test_class_weight_reaches_the_loss(class_weight, fast):
    X, y, _ = make_synthetic_cxr(
        40, image_size=32, positive_fraction=0.25, random_state=0
    )
    clf = PneumoniaClassifier(
        model="simple_cnn", class_weight=class_weight, validation_fraction=None, **fast
    )
    clf.fit(X, y)
    expected = compute_class_weight(class_weight, classes=clf.classes_, y=y)
    np.testing.assert_allclose(clf.net_.criterion_.weight.numpy(), expected, rtol=1e-6)
    if class_weight == "balanced":
        assert expected[0] != pytest.approx(expected[1])  # imbalanced data


# ------------------------------------------------------------ labels, classes
def test_multiclass_with_integer_labels(fast):
    X, y, _ = make_synthetic_cxr(60, image_size=32, random_state=0)
    labels = np.where(y == "NORMAL", 0, 1 + (np.arange(len(y)) % 2))  # 3 classes
    clf = PneumoniaClassifier(model="cnn4", **fast).fit(X, labels)
    assert clf.classes_.tolist() == [0, 1, 2]
    assert clf.predict_proba(X).shape == (60, 3)
    assert set(clf.predict(X)) <= {0, 1, 2}
    assert clf.predict(X).dtype == labels.dtype


@pytest.mark.parametrize(
    "shape", [(6, 40, 30), (6, 40, 30, 1), (6, 40, 30, 3), (6, 40, 30, 4)]
)
def test_array_shapes_accepted(fitted_small, shape):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=shape, dtype=np.uint8)
    assert fitted_small.predict_proba(X).shape == (6, 2)


# -------------------------------------------------------------- bad input
def test_predict_before_fit_raises_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        PneumoniaClassifier().predict(np.zeros((2, 32, 32)))


@pytest.mark.parametrize(
    ("X", "y", "error", "match"),
    [
        (np.zeros((4, 32, 32)), ["a", "b", "a"], ValueError, "4 images but y has 3"),
        (np.zeros((4, 32, 32)), ["a"] * 4, ValueError, "single class"),
        (np.zeros((4, 32)), ["a", "b"] * 2, ValueError, r"X\[np.newaxis\]"),
        (np.full((4, 32, 32), np.nan), ["a", "b"] * 2, ValueError, "NaN"),
        (np.zeros((4, 3, 32, 32)), ["a", "b"] * 2, ValueError, "channel-first"),
        (np.zeros((4, 32, 32)), None, ValueError, "requires y"),
        ("folder/", ["a"], TypeError, "single path"),
    ],
)
def test_bad_input_messages(X, y, error, match, fast):
    clf = PneumoniaClassifier(model="simple_cnn", **fast)
    with pytest.raises(error, match=match):
        clf.fit(X, y)


@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        ("model", "resnet9000", "'model' parameter"),
        ("lr_schedule", "linear", "lr_schedule"),
        ("image_size", 8, "image_size"),
        ("validation_fraction", 0.9, "validation_fraction"),
        ("augment", "extreme", "augment"),
        ("augment", {"rotation": 5}, "rotation"),
        ("precision", "64", "precision"),
        ("sampler", "oversample", "sampler"),
        ("ema_decay", 1.5, "ema_decay"),
        ("tta", -1, "tta"),
    ],
)
def test_bad_params_named_in_error(small, param, value, match, fast):
    X, y, _ = small
    clf = PneumoniaClassifier(model="simple_cnn", **fast).set_params(**{param: value})
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)


def test_early_stopping_needs_validation(small, fast):
    X, y, _ = small
    clf = PneumoniaClassifier(early_stopping=2, validation_fraction=None, **fast)
    with pytest.raises(ValueError, match="validation"):
        clf.fit(X, y)


def test_a_validation_fraction_rounded_far_off_is_announced():
    from cxrkit.training._fit import validation_split

    y = np.repeat([0, 1], 20)
    groups = np.arange(40).astype(str)
    with pytest.warns(UserWarning, match="rounded to 1/2"):
        _, valid = validation_split(y, groups, 0.4, seed=0)
    assert len(valid) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fraction in (0.1, 0.2, 0.25, 0.3):
            validation_split(y, groups, fraction, seed=0)


# ----------------------------------------------------------- paths, groups
def test_validation_split_is_patient_grouped(kermany_like, fast):
    X, y = load_image_folder(kermany_like)
    clf = PneumoniaClassifier(model="simple_cnn", validation_fraction=0.25, **fast)
    clf.fit(X, y)
    valid_ds = clf.net_.train_split.keywords["valid_ds"]
    assert 0 < len(valid_ds) < len(X)
    # every image of a validation patient is in validation: 2 per patient
    assert len(valid_ds) % 2 == 0
    assert set(valid_ds.y.tolist()) == {0, 1}
    assert "valid_auc" in clf.history_[-1]


def test_resumed_run_without_random_state_keeps_its_validation_split(
    small, fast, tmp_path, monkeypatch
):
    class CtrlC(Callback):  # when epoch 2 begins: epoch 1 is checkpointed
        def on_epoch_begin(self, net, **kwargs):
            if len(net.history) == 2:
                raise KeyboardInterrupt

    splits = []

    def spy(*args, **kwargs):
        splits.append(_fit.validation_split(*args, **kwargs))
        return splits[-1]

    monkeypatch.setattr(classifier_module, "validation_split", spy)
    X, y, _ = small
    params = dict(
        model="simple_cnn",
        validation_fraction=0.25,
        ood_alarm_rate=None,
        checkpoint_dir=tmp_path,
        **{**fast, "max_epochs": 2, "random_state": None},
    )
    build = _fit.training_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(
            _fit, "training_callbacks", lambda *a, **k: [*build(*a, **k), CtrlC()]
        )
        PneumoniaClassifier(**params).fit(X, y)  # stopped after epoch 1
    resumed = PneumoniaClassifier(**params).fit(X, y)
    assert len(resumed.history_) == 2
    (train_1, valid_1), (train_2, valid_2) = splits
    np.testing.assert_array_equal(valid_2, valid_1)
    np.testing.assert_array_equal(train_2, train_1)


def test_a_checkpoint_written_before_runs_recorded_their_seed_still_resumes(
    tmp_path,
):
    from cxrkit.training._checkpoint import training_checkpoint

    run = {"params": {"lr": 0.1}, "classes": ["NORMAL", "PNEUMONIA"], "data": "ab"}
    (tmp_path / "cxrkit_run.json").write_text(json.dumps(run))  # no "seed"
    (tmp_path / "history.json").write_text("[{}]")  # one epoch done
    _, done = training_checkpoint(tmp_path, {**run, "seed": 123})
    assert done == 1
    with pytest.raises(ValueError, match="different training run"):
        training_checkpoint(tmp_path, {**run, "data": "cd", "seed": 123})


def test_grid_search_group_kfold_on_paths(kermany_like, fast):
    X, y = load_image_folder(kermany_like)
    groups = patient_groups(X)
    search = GridSearchCV(
        PneumoniaClassifier(model="simple_cnn", validation_fraction=None, **fast),
        {"lr": [1e-3, 3e-3]},
        scoring="roc_auc",
        cv=GroupKFold(3),
    )
    search.fit(X, y, groups=groups)
    assert set(search.cv_results_["param_lr"]) == {1e-3, 3e-3}
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.predict_proba(X).shape == (len(X), 2)


def test_cross_val_score_and_pipeline(small, fast):
    X, y, _ = small
    pipe = make_pipeline(
        FunctionTransformer(lambda a: 255 - a),  # any image-to-image step
        PneumoniaClassifier(model="simple_cnn", **fast),
    )
    scores = cross_val_score(pipe, X, y, cv=2, scoring="accuracy")
    assert scores.shape == (2,)
    assert np.all((scores >= 0) & (scores <= 1))


def test_images_decoded_once_per_fit_and_cached_across_fits(kermany_like, fast):
    from cxrkit.images import clear_image_cache
    from cxrkit.images._cache import image_cache

    X, y = load_image_folder(kermany_like)
    clear_image_cache()
    clf = PneumoniaClassifier(model="simple_cnn", **{**fast, "max_epochs": 3})
    clf.fit(X, y)
    assert image_cache.misses == len(X)  # once, not once per epoch
    clone(clf).fit(X, y)
    assert image_cache.misses == len(X)
    assert image_cache.hits == len(X)


# ------------------------------------------------------------- learning
def test_learns_synthetic_lesions(fitted_synthetic):
    X, y, _ = make_synthetic_cxr(120, image_size=64, random_state=11)
    proba = fitted_synthetic.predict_proba(X)[:, 1]
    assert roc_auc_score(y == "PNEUMONIA", proba) > 0.95


@pytest.mark.slow
def test_real_images_fit_and_predict(kermany_dir: Path):
    """About 200 real radiographs of train, 2 epochs; predict the val split."""
    X, y = load_image_folder(kermany_dir / "train")
    rng = np.random.default_rng(0)
    idx = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), 100, replace=False) for c in np.unique(y)]
    )
    clf = PneumoniaClassifier(
        model="cnn4",
        image_size=64,
        max_epochs=2,
        class_weight="balanced",
        random_state=0,
    ).fit(X[idx], y[idx])
    X_val, _ = load_image_folder(kermany_dir / "val")
    proba = clf.predict_proba(X_val)
    assert proba.shape == (16, 2)
    assert np.all(np.isfinite(proba))
    assert set(clf.predict(X_val)) <= {"NORMAL", "PNEUMONIA"}
    assert len(clf.history_) == 2
    # the training loss falls on real images
    assert clf.history_[-1, "train_loss"] < clf.history_[0, "train_loss"]
