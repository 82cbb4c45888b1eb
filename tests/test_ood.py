"""Out-of-distribution scores and flags: the detector, the estimator's
``ood_score``/``is_ood``, model files, the CLI, the report and the server."""

from __future__ import annotations

import copy
import csv
import io
import json
import pickle

import numpy as np
import pytest
import torch
from conftest import FAST, network_images
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from cxrkit import PneumoniaClassifier, load_images
from cxrkit.cli import main
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.images import preprocess_images
from cxrkit.models import classifier_head
from cxrkit.ood import (
    FeatureDistanceDetector,
    NoOODDetectorError,
    fit_ood_detector,
    penultimate_features,
    proba_and_ood_score,
    tolerance_limit,
)
from cxrkit.report import evaluation_report, predictions


@pytest.fixture(scope="module")
def data():
    return make_synthetic_cxr(60, image_size=32, random_state=0)


@pytest.fixture(scope="module")
def model(data) -> PneumoniaClassifier:
    X, y, _ = data
    return PneumoniaClassifier(model="cnn4", **FAST).fit(X, y)


@pytest.fixture(scope="module")
def unusual() -> np.ndarray:
    """Images nothing like the synthetic films: noise, flat grey, stripes."""
    noise = np.random.default_rng(1).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    flat = np.stack([np.zeros((32, 32)), np.full((32, 32), 255)])
    stripes = np.tile(np.repeat([0, 255], 4), (1, 32, 4))  # vertical bars
    return np.concatenate([noise, flat, stripes]).astype(np.uint8)


# ------------------------------------------------------------- the detector
@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_detector_flags_far_points_and_about_the_alarm_rate_of_near_ones(method):
    # around (3, ..., 3), like post-ReLU features; "knn" compares directions
    rng = np.random.default_rng(0)
    train = rng.normal(loc=3, size=(600, 6))
    y = rng.integers(0, 2, 600)
    groups = np.repeat(np.arange(200), 3)  # three images per patient
    detector = FeatureDistanceDetector(method).fit(train, y, groups)
    assert detector.threshold_source_ == "held-out patients"
    assert detector.flag(rng.normal(loc=-3, size=(20, 6))).all()
    new = detector.flag(rng.normal(loc=3, size=(4000, 6))).mean()
    assert 0.01 < new < 0.08  # set for at most 5%, with 95% confidence


def test_threshold_from_held_out_scores_exceeds_the_in_sample_one():
    # kNN: in sample, an image is its own nearest neighbour (distance 0)
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 5))
    detector = FeatureDistanceDetector("knn", k=1).fit(train)
    assert np.quantile(detector.score(train), 0.95) < 1e-3
    assert detector.threshold_ > 0.1


def test_tiny_sets_fall_back_to_in_sample_scores():
    rng = np.random.default_rng(0)
    detector = FeatureDistanceDetector().fit(rng.normal(size=(6, 3)))
    assert detector.threshold_source_ == "training images"
    assert np.isfinite(detector.threshold_)


@pytest.mark.parametrize(
    ("features", "match"),
    [
        (np.zeros((1, 4)), "at least 2 rows"),
        (np.zeros(4), "2-D"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
    ],
)
def test_detector_rejects_unusable_features(features, match):
    with pytest.raises(ValueError, match=match):
        FeatureDistanceDetector().fit(features)


def test_detector_checks_its_settings_and_inputs():
    with pytest.raises(ValueError, match="method"):
        FeatureDistanceDetector("energy")
    with pytest.raises(ValueError, match="alarm_rate"):
        FeatureDistanceDetector(alarm_rate=1.0)
    with pytest.raises(ValueError, match="not fitted"):
        FeatureDistanceDetector().score(np.zeros((2, 3)))
    detector = FeatureDistanceDetector().fit(np.eye(12))
    with pytest.raises(ValueError, match=r"shape \(n, 12\)"):
        detector.score(np.zeros((2, 3)))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300, unique=True
    ),
    st.floats(0.5, 0.99),
)
def test_tolerance_limit_is_a_score_at_or_above_the_quantile(scores, coverage):
    limit = tolerance_limit(np.array(scores), coverage)
    assert limit in scores
    assert limit >= np.quantile(scores, coverage, method="inverted_cdf")


# ------------------------------------------------------------ the estimator
def test_ood_score_and_is_ood(model, data, unusual):
    X, _, _ = data
    scores = model.ood_score(X)
    assert scores.shape == (len(X),) and scores.dtype == np.float64
    flags = model.is_ood(X)
    np.testing.assert_array_equal(flags, scores > model.ood_detector_.threshold_)
    assert flags.mean() <= 0.1
    assert model.is_ood(unusual).all()
    assert model.ood_score(unusual).min() > scores.max()


@pytest.mark.parametrize("tta", [0, 2])
def test_one_pass_gives_what_predict_proba_and_ood_score_give(model, data, tta):
    X, _, _ = data
    model.set_params(tta=tta)  # predict-time only; set back below
    try:
        with network_images(model) as apart:
            proba, scores = model.predict_proba(X), model.ood_score(X)
        with network_images(model) as together:
            both = proba_and_ood_score(model, X)
    finally:
        model.set_params(tta=0)
    np.testing.assert_allclose(both[0], proba, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(both[1], scores, rtol=1e-5, atol=1e-6)
    # the images go through the network once (and each TTA copy once)
    assert together.n == (1 + tta) * len(X)
    assert apart.n == together.n + len(X)


def test_one_pass_asks_a_subclass_that_scores_its_own_way(model, data):
    X, _, _ = data

    class Shifted(PneumoniaClassifier):
        def ood_score(self, X):
            return super().ood_score(X) + 1.0

    clf = copy.copy(model)
    clf.__class__ = Shifted
    proba, scores = proba_and_ood_score(clf, X[:4])
    np.testing.assert_allclose(scores, model.ood_score(X[:4]) + 1.0, rtol=1e-6)
    np.testing.assert_allclose(proba, model.predict_proba(X[:4]))


def test_one_pass_without_a_detector_gives_no_scores(data):
    X, y, _ = data
    clf = PneumoniaClassifier(model="cnn4", ood_alarm_rate=None, **FAST).fit(X, y)
    proba, scores = proba_and_ood_score(clf, X[:5])
    assert scores is None
    np.testing.assert_allclose(proba, clf.predict_proba(X[:5]))


def test_report_predictions_run_the_network_once_per_image(model, data):
    X, _, _ = data
    with network_images(model) as passes:
        proba, (scores, threshold) = predictions(model, X, batch_size=25)
    assert passes.n == len(X)  # each image once
    # the counting hook on the network makes these predictions run the
    # module itself, not its copy with batch norm folded into the convs that
    # predictions run otherwise: the same up to float rounding
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, model.ood_score(X), rtol=1e-4, atol=1e-5)
    assert threshold == model.ood_detector_.threshold_


def test_scores_use_the_preprocessed_inputs_predict_proba_sees(data):
    X, y, _ = data
    clf = PneumoniaClassifier(model="cnn4", preprocess="equalize", **FAST).fit(X, y)
    images = load_images(X, clf.image_size)[0]
    seen = penultimate_features(clf, preprocess_images(images, "equalize"))
    np.testing.assert_allclose(
        clf.ood_score(X), clf.ood_detector_.score(seen), rtol=1e-5
    )
    raw = clf.ood_detector_.score(penultimate_features(clf, images))
    assert not np.allclose(clf.ood_score(X), raw)


def test_features_are_the_head_input(model, data):
    X, _, _ = data
    images = load_images(X[:4], model.image_size)[0]
    features = torch.from_numpy(penultimate_features(model, images))
    head = classifier_head(model.net_.module_, "cnn4")
    proba = torch.softmax(head(features), dim=1).detach().numpy()
    np.testing.assert_allclose(proba, model.predict_proba(X[:4]), atol=1e-5)


def test_no_detector_raises_a_clear_error(data):
    X, y, _ = data
    clf = PneumoniaClassifier(model="simple_cnn", ood_alarm_rate=None, **FAST)
    clf.fit(X, y)
    assert clf.ood_detector_ is None
    for method in (clf.ood_score, clf.is_ood):
        with pytest.raises(NoOODDetectorError, match=r"ood_alarm_rate=None.*fit_ood"):
            method(X[:2])
    fit_ood_detector(clf, X, y)
    assert clf.ood_detector_.n_classes_ == 2
    assert clf.ood_score(X[:2]).shape == (2,)


def test_refitting_with_bad_inputs_refuses_and_keeps_the_detector(model, data):
    X, y, _ = data
    clf = copy.deepcopy(model)
    detector = clf.ood_detector_
    assert detector is not None
    with pytest.raises(ValueError, match="y has 10 entries"):
        fit_ood_detector(clf, X[:40], y[:10])
    with pytest.raises(ValueError, match="groups has 3 entries"):
        fit_ood_detector(clf, X[:40], groups=[0, 1, 2])
    with pytest.raises(ValueError, match="no out-of-distribution detector fitted"):
        fit_ood_detector(clf, X[:1])  # one image cannot make a detector
    assert clf.ood_detector_ is detector


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "5%"])
def test_alarm_rate_is_validated(data, bad):
    X, y, _ = data
    with pytest.raises(InvalidParameterError, match="ood_alarm_rate"):
        PneumoniaClassifier(ood_alarm_rate=bad, **FAST).fit(X, y)


def test_alarm_rate_sets_the_threshold(data):
    X, y, _ = data
    strict = PneumoniaClassifier(model="cnn4", ood_alarm_rate=0.3, **FAST).fit(X, y)
    model = PneumoniaClassifier(model="cnn4", **FAST).fit(X, y)
    assert strict.ood_detector_.threshold_ < model.ood_detector_.threshold_
    new, _, _ = make_synthetic_cxr(200, image_size=32, random_state=1)
    assert 0.15 < strict.is_ood(new).mean() < 0.5
    assert model.is_ood(new).mean() < 0.15


def test_clone_and_pickle_keep_the_detector(model, data):
    X, _, _ = data
    assert clone(model).get_params()["ood_alarm_rate"] == 0.05
    same = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(same.ood_score(X), model.ood_score(X))


# ---------------------------------------------------------------- model files
@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_model_file_keeps_every_fitted_part_of_the_detector(
    tmp_path, model, data, method
):
    X, _, _ = data
    if method == "knn":
        model = fit_ood_detector(pickle.loads(pickle.dumps(model)), X, method="knn")
    same = PneumoniaClassifier.load(model.save(tmp_path / "m.cxr"))
    a, b = model.ood_detector_, same.ood_detector_
    for name in vars(a):
        va, vb = getattr(a, name), getattr(b, name)
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb)
        else:
            assert va == vb, name
    np.testing.assert_array_equal(same.ood_score(X), model.ood_score(X))
    np.testing.assert_array_equal(same.is_ood(X), model.is_ood(X))


def test_files_without_a_detector_load_and_say_how_to_fit_one(tmp_path, model, data):
    X, y, _ = data
    path = model.save(tmp_path / "m.cxr")
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload.pop("meta"))
    del meta["ood_detector"], meta["params"]["ood_alarm_rate"]
    payload.pop("ood_detector")
    torch.save({"meta": json.dumps(meta), **payload}, path)  # an older file

    old = PneumoniaClassifier.load(path)
    assert old.ood_detector_ is None
    np.testing.assert_array_equal(old.predict_proba(X), model.predict_proba(X))
    with pytest.raises(NoOODDetectorError, match=r"saved without one.*fit_ood"):
        old.ood_score(X)
    fit_ood_detector(old, X, y).save(path)
    assert PneumoniaClassifier.load(path).ood_score(X).shape == (len(X),)


def test_a_damaged_detector_is_a_damaged_file(tmp_path, model):
    path = model.save(tmp_path / "m.cxr")
    payload = torch.load(path, weights_only=True)
    payload["ood_detector"].pop("precision")
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"damaged.*out-of-distribution"):
        PneumoniaClassifier.load(path)


# ----------------------------------------------------------- CLI and report
@pytest.fixture(scope="module")
def folder(tmp_path_factory, data, unusual):
    """Six synthetic films and the unusual images, as PNG files."""
    X, _, _ = data
    root = tmp_path_factory.mktemp("ood-images")
    for i, image in enumerate(X[:6]):
        Image.fromarray(image).save(root / f"film{i}.png")
    for i, image in enumerate(unusual):
        Image.fromarray(image).save(root / f"unusual{i}.png")
    return root


def _rows(text: str) -> dict[str, dict]:
    return {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(io.StringIO(text))}


def test_cli_predict_writes_ood_columns_and_refuses_when_asked(
    tmp_path, model, folder, capsys
):
    path = str(model.save(tmp_path / "m.cxr"))
    assert main(["predict", path, str(folder)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["unusual0.png"]["ood"] == "True" and rows["film0.png"]["ood"] == "False"
    assert float(rows["unusual0.png"]["ood_score"]) > float(
        rows["film0.png"]["ood_score"]
    )
    assert rows["unusual0.png"]["predicted"] in ("NORMAL", "PNEUMONIA")

    assert main(["predict", path, str(folder), "--refuse-ood"]) == 0
    rows = _rows(capsys.readouterr().out)
    unusual, film = rows["unusual0.png"], rows["film0.png"]
    assert unusual["predicted"] == "" and unusual["p_PNEUMONIA"] == ""
    assert "unlike the training images" in unusual["reason"]
    assert film["predicted"] in ("NORMAL", "PNEUMONIA") and film["reason"] == ""


def test_cli_refusal_needs_a_detector(tmp_path, data, folder, capsys):
    X, y, _ = data
    clf = PneumoniaClassifier(model="simple_cnn", ood_alarm_rate=None, **FAST)
    path = str(clf.fit(X, y).save(tmp_path / "m.cxr"))
    assert main(["predict", path, str(folder)]) == 0
    assert _rows(capsys.readouterr().out)["film0.png"]["ood"] == ""
    assert main(["predict", path, str(folder), "--refuse-ood"]) == 2
    err = capsys.readouterr().err
    assert "no out-of-distribution detector" in err and "fit_ood_detector" in err


def test_report_counts_and_lists_flagged_images(tmp_path, model, folder):
    paths = np.array(sorted(str(p) for p in folder.iterdir()), dtype=object)
    y = np.array(["NORMAL", "PNEUMONIA"] * (len(paths) // 2))
    evaluation_report(model, paths, y, tmp_path, n_bootstrap=50, n_heatmaps=0)
    summary = json.loads((tmp_path / "metrics.json").read_text())["ood"]
    flagged = {r["name"] for r in summary["flagged"]}
    assert {f"unusual{i}.png" for i in range(6)} <= flagged
    assert summary["n"] == 12 and summary["n_flagged"] == len(flagged)
    page = (tmp_path / "report.html").read_text()
    assert f"{summary['n_flagged']} of 12 images" in page
    assert "unusual3.png" in page and "look unlike the images" in page
    rows = _rows((tmp_path / "predictions.csv").read_text())
    assert rows["unusual3.png"]["ood"] == "True"


def test_report_says_when_a_model_has_no_detector(tmp_path, data):
    X, y, _ = data
    clf = PneumoniaClassifier(model="simple_cnn", ood_alarm_rate=None, **FAST)
    clf.fit(X, y)
    evaluation_report(clf, X, y, tmp_path, n_bootstrap=50, n_heatmaps=0)
    assert json.loads((tmp_path / "metrics.json").read_text())["ood"] is None
    assert "Not checked" in (tmp_path / "report.html").read_text()


# --------------------------------------------------------------- the server
def _post(client, images: dict[str, np.ndarray], route: str = "/predict"):
    files = []
    for name, image in images.items():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        files.append(("file", (name, buffer.getvalue(), "image/png")))
    return client.post(route, files=files)


def test_server_answers_carry_the_flag_and_can_refuse(model, data, unusual):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cxrkit.serve import create_app

    X, _, _ = data
    images = {"film.png": X[0], "noise.png": unusual[0]}
    with TestClient(create_app(model, device="cpu")) as client:
        card = client.get("/model").json()["ood"]
        answer = _post(client, images).json()
    assert card["method"] == "mahalanobis" and card["refused"] is False
    assert answer["ood_threshold"] == card["threshold"]
    film, noise = answer["predictions"]
    assert film["ood"] is False and noise["ood"] is True
    assert noise["ood_score"] > card["threshold"] > film["ood_score"]
    assert noise["label"] in ("NORMAL", "PNEUMONIA") and noise["refused"] is None

    with TestClient(create_app(model, device="cpu", refuse_ood=True)) as client:
        assert client.get("/model").json()["ood"]["refused"] is True
        film, noise = _post(client, images).json()["predictions"]
        explained = _post(client, images, "/explain?format=json").json()
        refused_png = _post(client, {"noise.png": unusual[0]}, "/explain")
        film_png = _post(client, {"film.png": X[0]}, "/explain")
    assert noise["label"] is None and noise["probabilities"] is None
    assert "unlike the images the model was trained on" in noise["refused"]
    assert film["label"] in ("NORMAL", "PNEUMONIA") and film["refused"] is None
    heatmaps = [e["heatmap"] for e in explained["explanations"]]
    assert heatmaps[0] is not None and heatmaps[1] is None
    assert refused_png.status_code == 422 and "noise.png" in refused_png.json()["error"]
    assert film_png.status_code == 200


def test_server_runs_the_network_once_per_image(model, data):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cxrkit.serve import create_app

    X, _, _ = data
    app = create_app(model, device="cpu")
    with TestClient(app) as client, network_images(app.state.served.clf) as passes:
        answer = _post(client, {"a.png": X[0], "b.png": X[1]}).json()
    assert passes.n == 2  # probabilities and scores from the same pass
    expected = model.ood_score(X[:2])
    got = [p["ood_score"] for p in answer["predictions"]]
    # the server rounds to 4 decimals; float32 sums differ by ~2e-5 relative
    # with the thread count an earlier test leaves
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_server_refusal_needs_a_detector(data):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cxrkit.serve import create_app

    X, y, _ = data
    clf = PneumoniaClassifier(model="simple_cnn", ood_alarm_rate=None, **FAST)
    clf.fit(X, y)
    with pytest.raises(ValueError, match=r"refuse_ood needs.*fit_ood_detector"):
        create_app(clf, refuse_ood=True)
    with TestClient(create_app(clf, device="cpu")) as client:
        assert client.get("/model").json()["ood"] is None
        answer = _post(client, {"film.png": X[0]}).json()
    assert answer["ood_threshold"] is None
    assert answer["predictions"][0]["ood"] is None
