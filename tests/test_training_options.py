"""Class-balanced sampling, weight averaging (EMA), mixup and test-time augmentation.

The augmentation itself is tested in test_transforms.py.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.models._net import ImageClassifierNet
from cxrkit.training import WeightAveraging, _fit
from cxrkit.training._fit import sampling


@pytest.fixture(scope="module")
def small():
    return make_synthetic_cxr(48, image_size=32, random_state=5)


def test_balanced_sampler_draws_classes_equally():
    y = np.array([0] * 900 + [1] * 100)
    sampler = sampling("balanced", y)["iterator_train__sampler"]
    torch.manual_seed(0)
    drawn = y[list(sampler)]
    assert len(drawn) == len(y)  # an epoch is as long as without the sampler
    assert 0.45 < drawn.mean() < 0.55  # the 10% minority is drawn half the time


def test_no_sampler_shuffles():
    assert sampling(None, np.array([0, 1])) == {"iterator_train__shuffle": True}


def test_balanced_sampler_fit_is_repeatable(small, fast):
    X, y, _ = small
    params = dict(model="simple_cnn", sampler="balanced", **fast)
    a = PneumoniaClassifier(**params).fit(X, y).predict_proba(X)
    b = PneumoniaClassifier(**params).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(a, b)


class _RecordWeights(Callback):
    """Keep the weight of the single linear layer after every training step."""

    def initialize(self):
        self.steps_ = []
        return self

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.steps_.append(net.module_[0].weight.detach().clone())


def test_weight_averaging_is_the_exponential_average_of_the_steps():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    record, decay = _RecordWeights(), 0.8
    torch.manual_seed(0)
    net = NeuralNetClassifier(
        torch.nn.Sequential(torch.nn.Linear(3, 2)),
        max_epochs=2,
        batch_size=16,
        lr=0.5,
        train_split=None,
        verbose=0,
        callbacks=[record, WeightAveraging(decay)],
    ).fit(X, y)
    steps = record.steps_
    assert len(steps) == 8
    expected = steps[0]  # the average starts at the first step's weights
    for w in steps[1:]:
        expected = decay * expected + (1 - decay) * w
    final = net.module_[0].weight.detach()
    torch.testing.assert_close(final, expected)
    assert not torch.allclose(final, steps[-1])  # not simply the last weights


def test_weight_averaging_rejects_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        WeightAveraging(1.0).initialize()


def test_ema_changes_the_fitted_model(small, fast):
    X, y, _ = small
    params = dict(model="simple_cnn", **{**fast, "max_epochs": 2})
    plain = PneumoniaClassifier(**params).fit(X, y).predict_proba(X)
    averaged = PneumoniaClassifier(ema_decay=0.9, **params).fit(X, y).predict_proba(X)
    assert not np.allclose(plain, averaged)


class _RecordSteps(Callback):
    """Keep each training step's labels and loss."""

    def initialize(self):
        self.steps_ = []
        return self

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training:
            self.steps_.append((batch[1].clone(), kwargs["loss"].detach().clone()))


@pytest.mark.parametrize("weight", [None, torch.tensor([3.0, 1.0])])
def test_mixup_mixes_inputs_and_weighs_the_loss(weight):
    # Float inputs (a frozen backbone's features) reach the module as they
    # are, so each step's loss can be recomputed by hand from the recorded mix.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    record = _RecordSteps()
    torch.manual_seed(0)
    net = ImageClassifierNet(
        torch.nn.Sequential(torch.nn.Linear(3, 2)),
        criterion=torch.nn.CrossEntropyLoss,
        criterion__weight=weight,
        criterion__label_smoothing=0.1,
        mixup=0.4,
        max_epochs=1,
        batch_size=8,
        lr=0.1,
        train_split=None,
        iterator_train__shuffle=False,
        callbacks=[record],
        verbose=0,
    ).initialize()
    seen, forward = [], net.infer

    def spy(x, **kw):  # the module before the step, then the mix it drew
        module = copy.deepcopy(net.module_)
        out = forward(x, **kw)
        seen.append((module, *net.mixing_))
        return out

    net.infer = spy
    net.partial_fit(X, y)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1)
    assert len(seen) == len(record.steps_) == 4
    for i, ((yb, loss), (module, lam, order)) in enumerate(
        zip(record.steps_, seen, strict=True)
    ):
        assert 0 < lam < 1 and sorted(order.tolist()) == list(range(8))
        xb = torch.from_numpy(X[8 * i : 8 * (i + 1)])
        with torch.no_grad():
            out = module(lam * xb + (1 - lam) * xb[order])
            unmixed = loss_fn(module(xb), yb)
        expected = lam * loss_fn(out, yb) + (1 - lam) * loss_fn(out, yb[order])
        torch.testing.assert_close(loss, expected)
        assert not torch.isclose(loss, unmixed)
    assert len({lam for _, lam, _ in seen}) == 4  # a new weight per batch
    # predictions are not mixed
    net.infer = forward
    with torch.no_grad():
        expected = torch.softmax(net.module_(torch.from_numpy(X)), 1).numpy()
    np.testing.assert_allclose(net.predict_proba(X), expected, rtol=1e-5)


def test_mixup_trains_images_and_frozen_features(small, fast):
    X, y, _ = small
    for params in ({"model": "simple_cnn"}, {"model": "cnn4", "freeze": "backbone"}):
        plain = PneumoniaClassifier(**params, **fast).fit(X, y)
        mixed = PneumoniaClassifier(**params, mixup=0.4, **fast).fit(X, y)
        again = PneumoniaClassifier(**params, mixup=0.4, **fast).fit(X, y)
        np.testing.assert_allclose(mixed.predict_proba(X), again.predict_proba(X))
        assert not np.allclose(mixed.predict_proba(X), plain.predict_proba(X))
        assert mixed.net_.mixup == 0.4


def test_image_mixup_mixes_normalised_images_in_training_only():
    # normalisation is affine, so mixing the normalised images mixes the images
    net = ImageClassifierNet(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)),
        criterion=torch.nn.CrossEntropyLoss,
        mixup=1.0,
        train_split=None,
        verbose=0,
    ).initialize()
    images = torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8)
    inputs = []
    net.module_.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    net.module_.train()
    net.infer(images)
    lam, order = net.mixing_
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    net.module_.eval()
    plain = net.model_input(images)
    torch.testing.assert_close(inputs[0], lam * plain + (1 - lam) * plain[order])
    net.infer(images)
    torch.testing.assert_close(inputs[1], plain)


def test_tta_is_repeatable_and_averages_copies(small, fast):
    X, y, _ = small
    clf = PneumoniaClassifier(model="simple_cnn", **fast).fit(X, y)
    plain = clf.predict_proba(X)
    clf.set_params(tta=3)
    with_tta = clf.predict_proba(X)
    np.testing.assert_allclose(with_tta, clf.predict_proba(X))  # seeded
    np.testing.assert_allclose(with_tta.sum(axis=1), 1.0)
    assert not np.allclose(with_tta, plain)
    clf.set_params(tta=0)
    np.testing.assert_allclose(clf.predict_proba(X), plain)


def test_tta_of_an_image_does_not_depend_on_the_other_images(small, fast):
    X, y, _ = small
    clf = PneumoniaClassifier(
        model="simple_cnn", tta=3, ood_alarm_rate=None, **fast
    ).fit(X, y)
    alone = clf.predict_proba(X[2:3])[0]
    among = clf.predict_proba(X[:5])[2]
    reversed_ = clf.predict_proba(X[5::-1])[3]
    np.testing.assert_allclose(among, alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(reversed_, alone, rtol=0, atol=1e-6)


def test_tta_places_the_images_once_where_the_net_runs(small, fast, monkeypatch):
    """The copies are views of the images already placed (on a GPU when they
    fit there, ``data_device``), not a new transfer of the images per copy."""
    X, y, _ = small
    clf = PneumoniaClassifier(
        model="simple_cnn", tta=3, ood_alarm_rate=None, device="cpu", **fast
    ).fit(X, y)
    expected = clf.predict_proba(X)
    asked, made = [], []
    monkeypatch.setattr(
        _fit, "data_device", lambda images, device: asked.append(device) or "cpu"
    )
    batches = _fit.ImageBatches

    def counted(*args, **kwargs):
        made.append(kwargs.get("device", "cpu"))
        return batches(*args, **kwargs)

    monkeypatch.setattr(_fit, "ImageBatches", counted)
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=0, atol=1e-6)
    assert asked == [str(clf.net_.device)] and made == ["cpu"]


class _CtrlC(Callback):
    """A Ctrl-C when the second epoch begins (skorch ends training cleanly)."""

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == 2:
            raise KeyboardInterrupt


def _interrupt_after_one_epoch(monkeypatch):
    build = _fit.training_callbacks
    monkeypatch.setattr(
        _fit, "training_callbacks", lambda *a, **k: [*build(*a, **k), _CtrlC()]
    )


def _averaged_steps(folder):
    saved = torch.load(folder / "weight_average.pt", weights_only=True)
    return int(saved["average"]["n_averaged"])


def test_weight_average_is_checkpointed_and_resumed(small, fast, tmp_path, monkeypatch):
    X, y, _ = small
    params = dict(
        model="simple_cnn",
        ema_decay=0.9,
        ood_alarm_rate=None,
        **{**fast, "max_epochs": 3},
    )
    whole = tmp_path / "whole"
    first = PneumoniaClassifier(checkpoint_dir=whole, **params).fit(X, y)
    again = PneumoniaClassifier(checkpoint_dir=whole, **params).fit(X, y)  # 0 left
    np.testing.assert_array_equal(again.predict_proba(X), first.predict_proba(X))
    unsaved = PneumoniaClassifier(**params).fit(X, y)
    np.testing.assert_allclose(first.predict_proba(X), unsaved.predict_proba(X))

    # Stopped after epoch 1 and resumed: the average goes on over all 3 epochs.
    stopped = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        _interrupt_after_one_epoch(patch)
        PneumoniaClassifier(checkpoint_dir=stopped, **params).fit(X, y)
    assert _averaged_steps(stopped) == _averaged_steps(whole) // 3
    resumed = PneumoniaClassifier(checkpoint_dir=stopped, **params).fit(X, y)
    assert len(resumed.history_) == 3
    assert _averaged_steps(stopped) == _averaged_steps(whole)


def test_options_survive_save_and_load(small, fast, tmp_path):
    X, y, _ = small
    clf = PneumoniaClassifier(
        model="simple_cnn", sampler="balanced", ema_decay=0.9, tta=2, mixup=0.3, **fast
    ).fit(X, y)
    same = PneumoniaClassifier.load(clf.save(tmp_path / "m.cxr"))
    assert (same.sampler, same.ema_decay, same.tta) == ("balanced", 0.9, 2)
    assert same.mixup == same.net_.mixup == 0.3
    np.testing.assert_allclose(same.predict_proba(X), clf.predict_proba(X), atol=1e-6)


def test_a_damaged_weight_average_restarts_with_a_warning(tmp_path):
    from types import SimpleNamespace

    from cxrkit.training._callbacks import AVERAGE_FILE, WeightAveraging

    net = SimpleNamespace(module_=torch.nn.Linear(2, 2), history=[{}, {}])
    (tmp_path / AVERAGE_FILE).write_bytes(b"not a torch file")
    callback = WeightAveraging(0.9, dirname=tmp_path).initialize()
    with pytest.warns(UserWarning, match="no readable weight average for the 2"):
        callback.on_train_begin(net)
    torch.testing.assert_close(  # the average starts from the weights resumed
        callback.averaged_.module.weight, net.module_.weight
    )


@pytest.mark.parametrize("size", [32, 224])
def test_test_time_views_replay_the_light_augmentation(size):
    """Each fixed view is what kornia's seeded ``"light"`` draw does to the
    batch (the ONNX graph runs the views, not kornia)."""
    from cxrkit.training._augmentation import build_augmentation, same_on_batch
    from cxrkit.training._tta import TestTimeViews, view_seeds

    views = TestTimeViews(size, copies=3, random_state=7)
    augment = same_on_batch(build_augmentation("light"))
    x = torch.rand(4, 1, size, size, generator=torch.Generator().manual_seed(0))
    x[0] = 0.0  # the clamps at both ends
    x[1] = 1.0
    for k, seed in enumerate(view_seeds(3, 7)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            expected = augment(x)
        got = views.view(x, k)
        assert not torch.allclose(got, x, atol=1e-2)  # the view changes the image
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    other = TestTimeViews(size, copies=3, random_state=8)
    assert not torch.allclose(other.grids, views.grids)


def test_test_time_views_drawn_in_two_threads_are_the_lone_draw():
    """Drawing seeds torch's global generator: draws in two threads at once
    must not mix (they are drawn under a lock)."""
    import threading

    from cxrkit.training._tta import TestTimeViews, shared_views

    lone = TestTimeViews(48, copies=4, random_state=0).grids
    differing = []

    def draw() -> None:
        for _ in range(25):
            grids = TestTimeViews(48, copies=4, random_state=0).grids
            differing.append(not torch.equal(grids, lone))

    threads = [threading.Thread(target=draw) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(differing) == 50 and not any(differing)
    # predict_proba draws once per process and setting
    assert shared_views(48, 4, 0) is shared_views(48, 4, np.int64(0))
    assert torch.equal(shared_views(48, 4, 0).grids, lone)
