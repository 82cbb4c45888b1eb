"""The GPU path: precision, device-resident data, benchmarks/timings/gpu.py.

Tests marked ``cuda`` run only where CUDA is available; the rest check the
same code paths on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.models._net import data_device

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def small():
    return make_synthetic_cxr(64, image_size=32, random_state=3)


def test_float16_on_cpu_warns_and_trains_in_float32(small, fast):
    X, y, _ = small
    params = dict(model="simple_cnn", device="cpu", **fast)
    with pytest.warns(UserWarning, match="precision='16'.*CUDA"):
        half = PneumoniaClassifier(precision="16", **params).fit(X, y)
    full = PneumoniaClassifier(precision="32", **params).fit(X, y)
    np.testing.assert_array_equal(half.predict_proba(X), full.predict_proba(X))


def test_bfloat16_on_cpu_trains_and_predicts_float32(small, fast):
    X, y, _ = small
    clf = PneumoniaClassifier(
        model="simple_cnn", precision="bf16", device="cpu", **fast
    )
    proba = clf.fit(X, y).predict_proba(X)
    assert proba.dtype == np.float64 and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_cpu_data_stays_on_the_cpu():
    assert data_device(np.zeros((4, 8, 8), np.uint8), "cpu") == "cpu"


@cuda
@pytest.mark.parametrize("precision", ["32", "bf16", "16"])
def test_gpu_fit_in_each_precision_loads_and_predicts_on_cpu(
    precision, small, fast, tmp_path
):
    X, y, _ = small
    clf = PneumoniaClassifier(
        model="cnn4", device="cuda", precision=precision, augment="blur", **fast
    ).fit(X, y)
    assert next(clf.net_.module_.parameters()).is_cuda
    gpu = clf.predict_proba(X)
    assert np.isfinite(gpu).all()
    on_cpu = PneumoniaClassifier.load(clf.save(tmp_path / "m.cxr"), device="cpu")
    cpu = on_cpu.predict_proba(X)
    atol = 1e-4 if precision == "32" else 5e-2  # reduced-precision forward on GPU
    np.testing.assert_allclose(cpu, gpu, atol=atol)


@cuda
def test_gpu_training_images_live_on_the_device(small, monkeypatch, tmp_path):
    from cxrkit.images import ImageBatches
    from cxrkit.training import _fit

    X, y, _ = small
    made = []

    class Recording(ImageBatches):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.images.device.type)

    monkeypatch.setattr(_fit, "ImageBatches", Recording)
    clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1)
    clf.set_params(device="cuda", random_state=0).fit(X, y)
    assert made[0] == "cuda"  # the training images; prediction batches: CPU
    proba = clf.predict_proba(X[:4])
    assert made[-1] == "cpu"
    clf.set_params(tta=2)  # test-time copies: the images cross once
    with_views = clf.predict_proba(X[:4])
    assert made[-1] == "cuda" and np.isfinite(with_views).all()
    on_cpu = PneumoniaClassifier.load(clf.save(tmp_path / "m.cxr"), device="cpu")
    np.testing.assert_allclose(on_cpu.predict_proba(X[:4]), with_views, atol=1e-4)
    assert not np.allclose(proba, with_views)


def _image_tree(root: Path, n: int = 24) -> Path:
    X, y, _ = make_synthetic_cxr(n, image_size=40, random_state=0)
    for i, (image, label) in enumerate(zip(X, y)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / label / f"img{i}.png")
    return root


def test_gpu_benchmark_runs_on_cpu_with_tiny_settings(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "gpu", ROOT / "benchmarks" / "timings" / "gpu.py"
    )
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    data = _image_tree(tmp_path / "train")
    args = ["--data", str(data), "--device", "cpu", "--n", "16", "--epochs", "1"]
    args += ["--image-size", "32", "--batch-size", "8", "--workers", "0"]
    result = gpu.main(args)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(result))
    assert printed["n_images"] == 16 and printed["device"] == "cpu"
    for run in ("cxrkit", "plain"):
        assert printed[run]["train_images_per_s"] > 0
        assert printed[run]["predict_images_per_s"] > 0
        assert printed[run]["peak_gpu_memory_mb"] == {"train": None, "predict": None}
    assert printed["speedup_train"] > 0
