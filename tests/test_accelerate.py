"""Training through Hugging Face Accelerate (``accelerator=``), on one CPU process.

Accelerate's single-process mode (``Accelerator(cpu=True)``) runs the whole
path of a multi-GPU fit (skorch's ``AccelerateMixin``: prepared model, loss,
optimizer and data loaders, the accelerator's autocast and backward) without
a GPU; it must train the same model as the plain estimator.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
from sklearn.base import clone

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.models import AcceleratedImageClassifierNet, resolve_accelerator
from cxrkit.training._fit import NetSpec, training_callbacks

accelerate = pytest.importorskip("accelerate")


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps its state per process: start and leave each test clean."""
    accelerate.state.AcceleratorState._reset_state(reset_partial_state=True)
    yield
    accelerate.state.AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def small():
    return make_synthetic_cxr(48, image_size=32, random_state=3)


def _params(**extra) -> dict:
    base = {
        "model": "simple_cnn",
        "image_size": 32,
        "batch_size": 16,
        "max_epochs": 2,
        "validation_fraction": None,
        "random_state": 0,
    }
    return {**base, **extra}


@pytest.mark.parametrize("mixup", [None, 0.4])
def test_accelerated_fit_trains_the_plain_estimators_model(small, mixup):
    X, y, _ = small
    plain = PneumoniaClassifier(**_params(mixup=mixup)).fit(X, y)
    accelerated = PneumoniaClassifier(
        **_params(mixup=mixup, accelerator=accelerate.Accelerator(cpu=True))
    ).fit(X, y)
    assert isinstance(accelerated.net_, AcceleratedImageClassifierNet)
    assert isinstance(clone(accelerated).accelerator, accelerate.Accelerator)
    assert accelerated.device_ == "cpu"
    # Same seed, same batches, same augmentation draws, same steps: the same
    # weights up to float rounding (seen: about 1e-7).
    np.testing.assert_allclose(
        accelerated.predict_proba(X), plain.predict_proba(X), atol=1e-5
    )
    np.testing.assert_array_equal(accelerated.predict(X), plain.predict(X))
    train_loss = [e["train_loss"] for e in accelerated.history_]
    np.testing.assert_allclose(train_loss, [e["train_loss"] for e in plain.history_])
    if mixup:  # the accelerated steps mixed: not the model trained without
        unmixed = PneumoniaClassifier(**_params()).fit(X, y)
        assert not np.allclose(accelerated.predict_proba(X), unmixed.predict_proba(X))


@pytest.mark.parametrize("verbose", [0, 1])
def test_accelerator_true_makes_one_from_the_launch_settings(small, verbose, capsys):
    X, y, _ = small
    clf = PneumoniaClassifier(
        **_params(max_epochs=1, accelerator=True, verbose=verbose)
    ).fit(X, y)
    assert isinstance(clf.net_.accelerator, accelerate.Accelerator)
    printed = capsys.readouterr().out
    assert ("train_loss" in printed) == bool(verbose)  # the epoch table
    assert clf.predict_proba(X).shape == (len(X), 2)


def test_accelerated_model_file_predicts_without_the_accelerator(small, tmp_path):
    X, y, _ = small
    accelerator = accelerate.Accelerator(cpu=True)
    clf = PneumoniaClassifier(**_params(max_epochs=1, accelerator=accelerator))
    clf.fit(X, y)
    same = PneumoniaClassifier.load(clf.save(tmp_path / "model.cxr"), device="cpu")
    # The Accelerator is this run's processes and devices, not a setting.
    assert same.get_params()["accelerator"] is None
    expected = {**clf.get_params(), "accelerator": None}
    assert same.get_params() == expected
    assert type(same.net_).__name__ == "ImageClassifierNet"
    np.testing.assert_allclose(same.predict_proba(X), clf.predict_proba(X), atol=1e-6)


def test_accelerator_true_is_kept_in_model_files(small, tmp_path):
    X, y, _ = small
    clf = PneumoniaClassifier(**_params(max_epochs=1, accelerator=True)).fit(X, y)
    same = PneumoniaClassifier.load(clf.save(tmp_path / "model.cxr"), device="cpu")
    assert same.get_params() == clf.get_params()


def test_clone_and_pickle_keep_an_accelerator_parameter(small):
    X, y, _ = small
    clf = PneumoniaClassifier(**_params(max_epochs=1, accelerator=True))
    assert clone(clf).get_params() == clf.get_params()
    assert pickle.loads(pickle.dumps(clf)).get_params() == clf.get_params()
    fitted = clf.fit(X, y)
    # As in skorch, a net trained through an Accelerator does not pickle:
    # the error says what to do instead.
    with pytest.raises(TypeError, match=r"clf\.save\(path\)"):
        pickle.dumps(fitted)


@pytest.mark.parametrize(
    ("setting", "name"),
    [
        ({"precision": "bf16"}, "precision"),
        ({"device": "cpu"}, "device"),
        ({"freeze": "backbone"}, "freeze"),
    ],
)
def test_what_the_accelerator_decides_is_refused_twice(setting, name):
    clf = PneumoniaClassifier(accelerator=True, **setting)
    with pytest.raises(ValueError, match=rf"'{name}' parameter .* with an accelerator"):
        clf.fit(["a.png", "b.png"], ["NORMAL", "PNEUMONIA"])


class _TwoProcesses:
    """Stands for an Accelerator under ``accelerate launch --num_processes 2``."""

    num_processes = 2
    device = "cpu"

    def prepare(self, *args): ...
    def backward(self, loss): ...
    def autocast(self): ...
    def unwrap_model(self, model): ...


@pytest.mark.parametrize("setting", [{"early_stopping": 2}, {"ema_decay": 0.9}])
def test_what_several_processes_cannot_do_yet_is_refused(setting):
    (name,) = setting
    clf = PneumoniaClassifier(accelerator=_TwoProcesses(), **setting)
    with pytest.raises(ValueError, match=rf"'{name}' parameter .* 2 processes"):
        clf.fit(["a.png", "b.png"], ["NORMAL", "PNEUMONIA"])


def test_the_net_refuses_its_own_mixed_precision_with_an_accelerator():
    from torch import nn

    net = AcceleratedImageClassifierNet(
        nn.Linear(4, 2),
        accelerator=accelerate.Accelerator(cpu=True),
        precision="bf16",
        criterion=nn.CrossEntropyLoss,
    )
    with pytest.raises(ValueError, match="mixed precision is the accelerator's"):
        net.initialize()


def test_missing_accelerate_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)  # import fails
    with pytest.raises(ImportError, match=r'pip install "cxrkit\[accelerate\]"'):
        resolve_accelerator(True)
    assert resolve_accelerator(None) is None
    assert resolve_accelerator(False) is None


@pytest.mark.parametrize(("processes", "steps"), [(1, 12), (2, 6), (5, 3)])
def test_one_cycle_spans_the_steps_of_each_process(processes, steps):
    params = {
        "lr": 1e-3,
        "max_epochs": 2,
        "batch_size": 10,
        "lr_schedule": "onecycle",
        "ema_decay": None,
        "early_stopping": None,
        "verbose": 0,
    }
    spec = NetSpec(n_classes=2, class_weights=(1.0, 1.0), n_train=125)
    (schedule,) = training_callbacks(params, spec, processes=processes)
    # 12 batches of 10 per epoch (the last 5 images dropped), dealt out
    # between the processes, a process's share rounded up.
    assert schedule.kwargs["steps_per_epoch"] == steps
