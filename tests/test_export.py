"""ONNX export: parity with onnxruntime on real radiographs, dynamic batch,
metadata, the deployment example script, ``cxrkit export``."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import FixedThresholdClassifier

import cxrkit
from cxrkit import PneumoniaClassifier, load_image_folder, load_images
from cxrkit.cli import main
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.images import MEAN, PREPROCESSING, STD, ImageDataset, preprocess_images
from cxrkit.persistence import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_metadata

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # max absolute probability difference (issue 14)


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _normalised(images: np.ndarray) -> np.ndarray:
    """cxrkit's own preprocessing of a decoded uint8 batch, as one array."""
    return torch.stack([x for x, _ in ImageDataset(images)]).numpy()


@pytest.fixture(scope="module")
def real_model(kermany_dir) -> PneumoniaClassifier:
    """cnn4 (batch norm) trained one epoch on 48 real radiographs at 64 px."""
    X, y = load_image_folder(kermany_dir / "train")
    rng = np.random.default_rng(0)
    pick = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), 24, replace=False) for c in np.unique(y)]
    )
    clf = PneumoniaClassifier(
        model="cnn4", image_size=64, max_epochs=1, batch_size=16, random_state=0
    )
    return clf.fit(X[pick], y[pick])


@pytest.fixture(scope="module")
def real_onnx(real_model, tmp_path_factory) -> Path:
    return real_model.export_onnx(tmp_path_factory.mktemp("onnx") / "cnn4.onnx")


@pytest.fixture(scope="module")
def held_out(kermany_dir, fullres_dir) -> list[str]:
    """The 16 images of Kermany's val split and 4 full-resolution originals."""
    val, _ = load_image_folder(kermany_dir / "val")
    full, _ = load_image_folder(fullres_dir / "train")
    return [*map(str, val), *map(str, full[::30])]


def test_onnxruntime_matches_predict_proba_on_real_images(
    real_model, real_onnx, held_out
):
    images, _ = load_images(held_out, real_model.image_size)
    (onnx_proba,) = _session(real_onnx).run(None, {INPUT_NAME: _normalised(images)})
    proba = real_model.predict_proba(held_out)
    assert onnx_proba.shape == proba.shape == (len(held_out), 2)
    assert np.abs(onnx_proba - proba).max() <= TOLERANCE
    assert proba[:, 1].std() > 0.0  # not a constant output


def test_batch_axis_is_dynamic(real_onnx, real_model, held_out):
    session = _session(real_onnx)
    (batch_dim, *image_dims) = session.get_inputs()[0].shape
    assert isinstance(batch_dim, str) and image_dims == [1, 64, 64]
    x = _normalised(load_images(held_out[:5], real_model.image_size)[0])
    (five,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    ones = [session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 1]})[0] for i in range(5)]
    assert five.shape == (5, 2)
    assert all(one.shape == (1, 2) for one in ones)
    np.testing.assert_allclose(np.concatenate(ones), five, atol=1e-6)


def test_metadata_documents_the_preprocessing(real_onnx, real_model):
    meta = _session(real_onnx).get_modelmeta().custom_metadata_map
    assert meta["image_size"] == "64"
    assert meta["channels"] == "1"
    assert float(meta["mean"]) == MEAN and float(meta["std"]) == STD
    assert json.loads(meta["classes"]) == real_model.classes_.tolist()
    assert meta["model"] == "cnn4"
    assert meta["cxrkit_version"] == cxrkit.__version__
    assert meta["input_name"] == INPUT_NAME and meta["output_name"] == OUTPUT_NAME
    assert meta["decision_rule"] == "argmax"
    assert "threshold" not in meta
    assert meta["preprocess"] == "none"
    assert meta["test_time_augmentation"] == "none"


def _example():
    """examples/onnx_inference.py as a module."""
    spec = importlib.util.spec_from_file_location(
        "onnx_inference", ROOT / "examples" / "onnx_inference.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_example_script_reproduces_cxrkit_from_metadata_alone(
    real_onnx, real_model, held_out
):
    """The docs' snippet (numpy + Pillow + onnxruntime) gives cxrkit's output,
    full-resolution JPEGs (decoded at reduced scale) included."""
    example = _example()
    session = _session(real_onnx)
    proba, labels = example.predict(session, held_out)
    assert np.abs(proba - real_model.predict_proba(held_out)).max() <= TOLERANCE
    assert labels.tolist() == real_model.predict(held_out).tolist()
    meta = session.get_modelmeta().custom_metadata_map
    with pytest.raises(ValueError, match="unknown preprocess step 'sharpen'"):
        example.preprocess(held_out[0], {**meta, "preprocess": "sharpen"})


@pytest.mark.parametrize("step", sorted(PREPROCESSING))
def test_example_applies_each_preprocess_step_as_cxrkit(step, sample_cxr):
    """The example's numpy/Pillow version of each step is cxrkit's, exactly."""
    if step == "clahe":
        pytest.importorskip("cv2")
    from PIL import Image

    example = _example()
    images, _ = load_images(list(sample_cxr.data[:12]), 64)
    ours = preprocess_images(images, step)
    theirs = [
        np.asarray(example.preprocess_step(Image.fromarray(im), step)) for im in images
    ]
    np.testing.assert_array_equal(ours, np.stack(theirs))


def test_metadata_says_what_every_preprocess_step_does(small_model):
    from cxrkit.persistence._onnx import _STEP_TEXT

    assert set(_STEP_TEXT) == set(PREPROCESSING)
    with_steps = copy.copy(small_model)
    with_steps.preprocess = "crop+equalize"
    text = onnx_metadata(with_steps)["preprocessing"]
    assert "crop: an 8% band" in text and "equalize: global histogram" in text


def test_cpu_recipe_with_equalisation_runs_in_the_example(sample_cxr, tmp_path, capsys):
    """The recommended recipe (preprocess="equalize") exported by cxrkit export
    and run by examples/onnx_inference.py: cxrkit's probabilities within 1e-4."""
    from cxrkit.recipes import RECIPES, make_classifier

    assert RECIPES["cpu"]["preprocess"] == "equalize"
    X, y = sample_cxr.data, sample_cxr.target
    pick = np.r_[
        np.flatnonzero(y == "NORMAL")[:16], np.flatnonzero(y == "PNEUMONIA")[:16]
    ]
    clf = make_classifier("cpu", image_size=32, max_epochs=1, random_state=0)
    clf.fit(X[pick], y[pick])
    model = clf.save(tmp_path / "cpu.cxr", threshold=0.4)
    onnx_path = tmp_path / "cpu.onnx"
    assert main(["export", str(model), str(onnx_path)]) == 0
    assert "examples/onnx_inference.py does" in capsys.readouterr().out
    held_out = [str(p) for p in X[np.r_[40:50, 400:410]]]
    proba, labels = _example().predict(_session(onnx_path), held_out)
    loaded = PneumoniaClassifier.load(model)
    assert np.abs(proba - loaded.predict_proba(held_out)).max() <= TOLERANCE
    assert labels.tolist() == loaded.predict(held_out).tolist()


def test_preprocess_steps_are_recorded(small_model):
    with_steps = copy.copy(small_model)
    with_steps.preprocess = "equalize+crop"  # PneumoniaClassifier(preprocess=...)
    meta = onnx_metadata(with_steps)
    assert meta["preprocess"] == "equalize+crop"
    assert "equalize+crop" in meta["preprocessing"]


@pytest.fixture(scope="module")
def synthetic_data():
    return make_synthetic_cxr(40, image_size=32, random_state=0)


@pytest.fixture(scope="module")
def small_model(synthetic_data) -> PneumoniaClassifier:
    X, y, _ = synthetic_data
    return PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, y)


@pytest.mark.parametrize(
    "model",
    ["simple_cnn", "resnet18", "efficientnet_b0"],
)
def test_registry_models_export_with_parity(model, synthetic_data, tmp_path):
    X, y, _ = synthetic_data
    clf = PneumoniaClassifier(model=model, **FAST).fit(X, y)
    session = _session(clf.export_onnx(tmp_path / "m.onnx"))
    x = _normalised(load_images(X[:5], clf.image_size)[0])
    (proba,) = session.run(None, {INPUT_NAME: x})
    assert np.abs(proba - clf.predict_proba(X[:5])).max() <= TOLERANCE


def test_an_adapted_model_exports_its_adapted_probabilities(
    small_model, synthetic_data, tmp_path
):
    """A threshold chosen on recalibrated probabilities applies to the graph's
    output: the adaptation is in the graph."""
    from cxrkit.adaptation import calibrate

    X, y, _ = synthetic_data
    adapted = calibrate(small_model, X[:40], y[:40], method="platt", sensitivity=0.9)
    step = adapted.adaptation_
    assert step["temperature"] != pytest.approx(1.0) or any(step["bias"])
    session = _session(adapted.export_onnx(tmp_path / "m.onnx"))
    x = _normalised(load_images(X[:20], adapted.image_size)[0])
    (proba,) = session.run(None, {INPUT_NAME: x})
    expected = adapted.predict_proba(X[:20])
    assert np.abs(expected - small_model.predict_proba(X[:20])).max() > 10 * TOLERANCE
    assert np.abs(proba - expected).max() <= TOLERANCE
    meta = _session(tmp_path / "m.onnx").get_modelmeta().custom_metadata_map
    assert float(meta["threshold"]) == adapted.operating_threshold_["threshold"]


def test_export_leaves_the_fitted_model_unchanged(
    small_model, synthetic_data, tmp_path
):
    X = synthetic_data[0][:8]
    module = small_model.net_.module_
    module.train()  # as skorch leaves it after a fit without validation
    before = {k: v.clone() for k, v in module.state_dict().items()}
    small_model.export_onnx(tmp_path / "m.onnx")
    assert module.training
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    module.eval()
    assert small_model.predict_proba(X).shape == (8, 2)


def test_threshold_of_a_threshold_classifier_goes_into_metadata(
    small_model, synthetic_data, tmp_path
):
    X, y, _ = synthetic_data
    fixed = FixedThresholdClassifier(FrozenEstimator(small_model), threshold=0.3)
    path = export_onnx(fixed.fit(X, y), tmp_path / "m.onnx")
    meta = _session(path).get_modelmeta().custom_metadata_map
    assert meta["decision_rule"] == "threshold"
    assert float(meta["threshold"]) == 0.3
    assert meta["positive_class"] == "PNEUMONIA"
    assert meta["positive_column"] == "1"


def test_cli_export_writes_a_model_with_its_threshold(small_model, tmp_path, capsys):
    model_file = small_model.save(tmp_path / "m.cxr")
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_file), str(out), "--threshold", "0.25"]) == 0
    assert "ONNX model written" in capsys.readouterr().out
    meta = _session(out).get_modelmeta().custom_metadata_map
    assert float(meta["threshold"]) == 0.25


def test_cli_export_reports_user_errors(small_model, tmp_path, capsys):
    model_file = small_model.save(tmp_path / "m.cxr")
    assert main(["export", str(tmp_path / "none.cxr"), str(tmp_path / "m.onnx")]) == 2
    assert "model file not found" in capsys.readouterr().err
    args = ["export", str(model_file), str(tmp_path / "no" / "m.onnx")]
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_extra_names_the_install_command(small_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r'pip install "cxrkit\[onnx\]"'):
        small_model.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_bad_inputs_are_named(small_model, synthetic_data, tmp_path):
    with pytest.raises(NotFittedError):
        PneumoniaClassifier().export_onnx(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="is a folder"):
        small_model.export_onnx(tmp_path)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        small_model.export_onnx(tmp_path / "m.onnx", threshold=2.0)
    with pytest.raises(TypeError, match="pass a fitted PneumoniaClassifier"):
        export_onnx(object(), tmp_path / "m.onnx")
    X, _, _ = synthetic_data
    three = PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, np.arange(40) % 3)
    with pytest.raises(ValueError, match="applies to two classes"):
        three.export_onnx(tmp_path / "m.onnx", threshold=0.5)


@pytest.mark.parametrize("adapted", [False, True])
def test_test_time_augmentation_is_in_the_graph(
    small_model, synthetic_data, tmp_path, adapted
):
    """A model with ``tta`` exports the averaged probabilities its threshold
    was chosen on, with or without a site adaptation on top."""
    from cxrkit.adaptation import calibrate

    X, y, _ = synthetic_data
    clf = copy.deepcopy(small_model).set_params(tta=3, random_state=5)
    if adapted:
        clf = calibrate(clf, X, y, method="platt")
    x = _normalised(load_images(X[:20], clf.image_size)[0])
    (proba,) = _session(clf.export_onnx(tmp_path / "m.onnx")).run(None, {INPUT_NAME: x})
    expected = clf.predict_proba(X[:20])
    plain = copy.deepcopy(clf).set_params(tta=0)
    assert np.abs(expected - plain.predict_proba(X[:20])).max() > 10 * TOLERANCE
    assert np.abs(proba - expected).max() <= TOLERANCE
    meta = _session(tmp_path / "m.onnx").get_modelmeta().custom_metadata_map
    assert "3 fixed views" in meta["test_time_augmentation"]


# ------------------------------------------------- benchmarks/timings/inference.py
@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location(
        "inference_benchmark", ROOT / "benchmarks" / "timings" / "inference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inference_benchmark_runs_and_agrees_with_torch(benchmark, kermany_dir, capsys):
    threads = torch.get_num_threads()
    try:
        tiny = "--image-size 32 --n-images 16 --batch-size 8 --repeats 1 --threads 1"
        data = ["--data", str(kermany_dir / "val"), "--model", "simple_cnn"]
        result = benchmark.main([*data, *tiny.split()])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(capsys.readouterr().out) == result
    (run,) = result["runs"]
    assert run["rounds"] == 2
    assert max(run["max_abs_probability_difference_vs_torch_no_grad"].values()) < 1e-4
    assert all(v > 0 for v in run["images_per_s_median"].values())
    assert 0 < run["cxrkit_overhead_share_of_network_time"]


def test_inference_benchmark_times_methods_in_a_new_order_each_round(benchmark):
    # a fixed order would time each method right after the same other one
    # and charge it that one's after-effects (onnxruntime's spinning threads)
    calls = []
    methods = {name: (lambda idx, name=name: calls.append(name)) for name in "abcde"}
    seconds = benchmark._paired_rounds(methods, [np.arange(2)] * 5, repeats=2)
    assert all(len(times) == 10 for times in seconds.values())
    rounds = [calls[i : i + 5] for i in range(0, len(calls), 5)]
    assert len(rounds) == 10
    assert all(sorted(r) == list("abcde") for r in rounds)
    before_a = {r[r.index("a") - 1] if r.index("a") else None for r in rounds}
    assert len(before_a) > 2


def test_tta_benchmark_times_both_paths_and_checks_the_graph(
    small_model, kermany_dir, tmp_path, capsys
):
    spec = importlib.util.spec_from_file_location(
        "tta_benchmark", ROOT / "benchmarks" / "timings" / "tta.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "m.cxr"
    copy.deepcopy(small_model).set_params(tta=2).save(path)
    threads = torch.get_num_threads()
    try:
        args = ["--model-file", str(path), "--data", str(kermany_dir / "train")]
        result = module.main([*args, "--n-images", "8", "--rounds", "1"])
    finally:
        torch.set_num_threads(threads)
    assert result["tta"] == 2
    assert set(result["images_per_s_median"]) == {
        "cxrkit_tta0",
        "cxrkit_tta2",
        "onnx_tta0",
        "onnx_tta2",
    }
    assert max(result["max_abs_onnx_minus_predict_proba"].values()) <= TOLERANCE
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


def test_a_bad_tta_set_after_fit_is_refused_by_name(small_model, tmp_path):
    from sklearn.utils._param_validation import InvalidParameterError

    clf = copy.deepcopy(small_model)
    clf.tta = 2.5  # set as an attribute, after fit: checked as predict_proba does
    with pytest.raises(InvalidParameterError, match="'tta' parameter"):
        clf.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
