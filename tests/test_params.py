"""Parameters are checked before any work: one bad value of each, and the rules
between them, are refused with a message naming the parameter, before a single
image is decoded."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

import cxrkit.classifier as classifier_module
from cxrkit import PneumoniaClassifier, load_image_folder

MISSING = ["/no/such/a.png", "/no/such/b.png", "/no/such/c.png", "/no/such/d.png"]
LABELS = ["NORMAL", "PNEUMONIA", "NORMAL", "PNEUMONIA"]

#: One bad value per parameter, and bad combinations: (parameters, the
#: parameter the message must name).
BAD = {
    "model": ({"model": "resnet-18"}, "model"),
    "model type": ({"model": 18}, "model"),
    "pretrained on a small CNN": (
        {"model": "cnn4", "pretrained": "imagenet"},
        "pretrained",
    ),
    "pretrained type": ({"pretrained": 1}, "pretrained"),
    "freeze": ({"freeze": "all"}, "freeze"),
    "image_size": ({"image_size": 8}, "image_size"),
    "image_size float": ({"image_size": 32.0}, "image_size"),
    "preprocess": ({"preprocess": "sharpen"}, "preprocess"),
    "preprocess type": ({"preprocess": 3}, "preprocess"),
    "augment": ({"augment": "heavy"}, "augment"),
    "augment type": ({"augment": 2.0}, "augment"),
    "flip": ({"flip": "yes"}, "flip"),
    "class_weight": ({"class_weight": "balance"}, "class_weight"),
    "class_weight values": ({"class_weight": {"NORMAL": -1.0}}, "class_weight"),
    "class_weight keys": ({"class_weight": {"VIRUS": 2.0}}, "class_weight"),
    "sampler": ({"sampler": "oversample"}, "sampler"),
    "lr": ({"lr": -1}, "lr"),
    "lr zero": ({"lr": 0.0}, "lr"),
    "weight_decay": ({"weight_decay": -1}, "weight_decay"),
    "batch_size": ({"batch_size": 0}, "batch_size"),
    "max_epochs": ({"max_epochs": 0}, "max_epochs"),
    "lr_schedule": ({"lr_schedule": "linear"}, "lr_schedule"),
    "label_smoothing": ({"label_smoothing": 1.5}, "label_smoothing"),
    "label_smoothing one": ({"label_smoothing": 1.0}, "label_smoothing"),
    "mixup": ({"mixup": -0.2}, "mixup"),
    "mixup type": ({"mixup": "yes"}, "mixup"),
    "ema_decay": ({"ema_decay": 1.0}, "ema_decay"),
    "tta": ({"tta": -1}, "tta"),
    "validation_fraction": ({"validation_fraction": 0.9}, "validation_fraction"),
    "early_stopping": ({"early_stopping": 0}, "early_stopping"),
    "early_stopping without validation": (
        {"early_stopping": 2, "validation_fraction": None},
        "early_stopping",
    ),
    "early_stopping with ema_decay": (
        {"early_stopping": 2, "ema_decay": 0.9},
        "early_stopping",
    ),
    "on_error": ({"on_error": "ignore"}, "on_error"),
    "checkpoint_dir": ({"checkpoint_dir": 3}, "checkpoint_dir"),
    "checkpoint_dir a file": ({"checkpoint_dir": __file__}, "checkpoint_dir"),
    "device": ({"device": "gpu0"}, "device"),
    "device type": ({"device": 0}, "device"),
    "device missing": ({"device": "cuda:99"}, "device"),
    "precision": ({"precision": "64"}, "precision"),
    "precision type": ({"precision": 16}, "precision"),
    "augment option": ({"augment": {"rotation": 5}}, "augment"),
    "augment option range": ({"augment": {"degrees": 500}}, "augment"),
    "accelerator": ({"accelerator": "yes"}, "accelerator"),
    "accelerator type": ({"accelerator": 1}, "accelerator"),
    "ood_alarm_rate": ({"ood_alarm_rate": 1.0}, "ood_alarm_rate"),
    "ood_alarm_rate type": ({"ood_alarm_rate": "5%"}, "ood_alarm_rate"),
    "random_state": ({"random_state": "seed"}, "random_state"),
    "verbose": ({"verbose": -1}, "verbose"),
}


def test_every_parameter_has_a_bad_value_here():
    named = {param for _, param in BAD.values()}
    assert named == set(PneumoniaClassifier().get_params())


def test_constraints_cover_every_parameter():
    params = set(PneumoniaClassifier().get_params())
    assert set(PneumoniaClassifier._parameter_constraints) == params


@pytest.fixture
def no_decoding(monkeypatch):
    """Decoding fails the test: parameters must be refused before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("images were decoded before the parameters were valid")

    monkeypatch.setattr(classifier_module, "model_images", refuse)


@pytest.mark.parametrize(("params", "name"), list(BAD.values()), ids=list(BAD))
def test_bad_parameter_refused_before_decoding(params, name, no_decoding):
    clf = PneumoniaClassifier(**params)
    with pytest.raises(InvalidParameterError, match=rf"The '{name}' parameter of"):
        clf.fit(MISSING, LABELS)  # files that do not exist: never opened


def test_early_stopping_with_ema_names_both_and_the_fix(no_decoding):
    # early stopping would put the raw weights of its best epoch in place of
    # the weight average
    clf = PneumoniaClassifier(early_stopping=2, ema_decay=0.9)
    with pytest.raises(InvalidParameterError) as error:
        clf.fit(MISSING, LABELS)
    message = str(error.value)
    assert "'early_stopping'" in message and "'ema_decay'" in message
    assert "early_stopping=None" in message and "ema_decay=None" in message


@pytest.fixture(scope="module")
def kermany_train(kermany_dir):
    return load_image_folder(kermany_dir / "train")


def test_bad_parameters_refused_quickly_on_the_training_folder(kermany_train):
    """Each of the bad values above, on the 5,216 Kermany training paths."""
    X, y = kermany_train
    assert len(X) == 5216
    slowest = 0.0
    for params, name in BAD.values():
        start = time.perf_counter()
        with pytest.raises(InvalidParameterError, match=rf"'{name}' parameter"):
            PneumoniaClassifier(**params).fit(X, y)
        slowest = max(slowest, time.perf_counter() - start)
    assert slowest < 0.5, f"slowest refusal took {slowest:.2f} s"


def test_missing_weights_file_refused_before_decoding(no_decoding):
    clf = PneumoniaClassifier(model="resnet18", pretrained="/no/such/weights.pth")
    with pytest.raises(FileNotFoundError, match="pretrained"):
        clf.fit(MISSING, LABELS)


def test_single_class_refused_before_decoding(no_decoding):
    with pytest.raises(ValueError, match="single class"):
        PneumoniaClassifier().fit(MISSING, ["NORMAL"] * 4)


def test_frozen_untrained_backbone_warns(no_decoding):
    clf = PneumoniaClassifier(model="resnet18", freeze="backbone")
    with pytest.warns(UserWarning, match="untrained resnet18") as record:
        with pytest.raises(ValueError, match="single class"):  # stops before decoding
            clf.fit(MISSING, ["NORMAL"] * 4)
    assert record[0].filename == __file__  # points at the caller's fit


def test_parameters_set_after_fit_are_checked_by_predict(fast):
    X = np.random.default_rng(0).integers(0, 255, (8, 32, 32), dtype=np.uint8)
    clf = PneumoniaClassifier(model="simple_cnn", validation_fraction=None, **fast)
    clf.fit(X, [0, 1] * 4)
    clf.set_params(tta=-1)
    with pytest.raises(InvalidParameterError, match="'tta' parameter"):
        clf.predict_proba(X)
