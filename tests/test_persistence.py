"""Model files: no code runs on load, atomic writes, versions, resumable training."""

from __future__ import annotations

import copy
import json
import pickle

import joblib
import numpy as np
import pytest
import torch
from conftest import FAST
from PIL import Image
from skorch.callbacks import Callback

import cxrkit
from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.persistence import FITTED_ATTRIBUTES, FORMAT_VERSION
from cxrkit.persistence import _model_files as persistence_module
from cxrkit.training import _fit as _training


@pytest.fixture(scope="module")
def data():
    return make_synthetic_cxr(48, image_size=32, random_state=0)


@pytest.fixture(scope="module")
def model(data) -> PneumoniaClassifier:
    X, y, _ = data
    return PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, y)


class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_round_trip_records_versions_and_classes(tmp_path, data, model):
    X, _, _ = data
    path = model.save(tmp_path / "m.cxr")
    same = PneumoniaClassifier.load(path)
    assert np.array_equal(same.predict_proba(X), model.predict_proba(X))
    assert list(same.classes_) == list(model.classes_)
    meta = json.loads(torch.load(path, weights_only=True)["meta"])
    assert meta["cxrkit_version"] == cxrkit.__version__
    assert meta["torch_version"] == torch.__version__
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["classes"] == ["NORMAL", "PNEUMONIA"]


@pytest.mark.parametrize("writer", ["pickle", "torch.save", "joblib"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    evil = {"meta": "{}", "state_dict": _Payload(str(marker))}
    path = tmp_path / "model.cxr"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(evil))
    elif writer == "torch.save":
        torch.save(evil, path)
    else:
        joblib.dump(evil, path)
    with pytest.raises(ValueError, match="nothing in the file was executed"):
        PneumoniaClassifier.load(path)
    assert not marker.exists()
    # The payload is live: an unsafe loader does run it.
    if writer == "pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_pickled_classifier_is_not_a_model_file(tmp_path, model):
    path = tmp_path / "clf.joblib"
    joblib.dump(model, path)
    with pytest.raises(ValueError, match="not a cxrkit model file"):
        PneumoniaClassifier.load(path)


def test_interrupted_save_leaves_the_old_file(tmp_path, model, monkeypatch):
    path = model.save(tmp_path / "m.cxr")
    before = path.read_bytes()

    def half_written(obj, fh):
        fh.write(b"PK\x03\x04 half a model")
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write

    monkeypatch.setattr(persistence_module.torch, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.cxr"]  # no temp debris
    monkeypatch.undo()
    PneumoniaClassifier.load(path)


def _rewrite(path, change_meta=None, change_payload=None):
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["meta"])
    if change_meta:
        change_meta(meta)
    payload["meta"] = json.dumps(meta)
    if change_payload:
        change_payload(payload)
    torch.save(payload, path)


def test_file_from_a_newer_cxrkit_is_refused(tmp_path, model):
    path = model.save(tmp_path / "m.cxr")
    _rewrite(path, lambda m: m.update(format_version=99, cxrkit_version="9.0"))
    with pytest.raises(ValueError, match=r"format 99.*cxrkit 9\.0|9\.0.*format 99"):
        PneumoniaClassifier.load(path)
    with pytest.raises(ValueError, match="pip install -U cxrkit"):
        PneumoniaClassifier.load(path)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("text", "not a cxrkit model file"),
        ("empty", "not a cxrkit model file"),
        ("truncated", "not a cxrkit model file"),
        ("plain_dict", "no metadata"),
        ("bad_json", "damaged"),
        ("wrong_magic", "not a cxrkit model file"),
        ("no_classes", "damaged"),
        ("wrong_weights", "do not fit"),
    ],
)
def test_damaged_model_files_raise_value_errors(tmp_path, model, damage, match):
    path = model.save(tmp_path / "m.cxr")
    if damage == "text":
        path.write_text("not a model")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "plain_dict":
        torch.save({"weights": torch.zeros(3)}, path)
    elif damage == "bad_json":
        _rewrite(path, change_payload=lambda p: p.update(meta="{not json"))
    elif damage == "wrong_magic":
        _rewrite(path, lambda m: m.update(magic="other"))
    elif damage == "no_classes":
        _rewrite(path, lambda m: m.pop("classes"))
    elif damage == "wrong_weights":
        _rewrite(
            path, change_payload=lambda p: p.update(state_dict={"x": torch.ones(1)})
        )
    with pytest.raises(ValueError, match=match):
        PneumoniaClassifier.load(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        PneumoniaClassifier.load(tmp_path / "none.cxr")


def test_unknown_parameters_warn(tmp_path, model):
    path = model.save(tmp_path / "m.cxr")
    _rewrite(path, lambda m: m["params"].update(future_knob=3))
    with pytest.warns(UserWarning, match="future_knob"):
        PneumoniaClassifier.load(path)


# ------------------------------------------------------------- resumable training
class _CrashAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise RuntimeError("simulated crash (power cut)")


def _crashing(monkeypatch, epoch):
    original = _training.training_callbacks

    def with_crash(*args, **kwargs):
        return [*original(*args, **kwargs), _CrashAfter(epoch)]

    monkeypatch.setattr(_training, "training_callbacks", with_crash)


@pytest.mark.parametrize(
    "setting",
    [{"model": "simple_cnn"}, {"model": "cnn4", "freeze": "backbone"}],
    ids=["whole-model", "frozen-backbone"],
)
def test_interrupted_training_resumes_from_last_checkpoint(
    tmp_path, data, monkeypatch, setting
):
    X, y, _ = data
    params = {**FAST, "max_epochs": 4, **setting}
    clf = PneumoniaClassifier(checkpoint_dir=tmp_path / "ckpt", **params)
    _crashing(monkeypatch, epoch=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        clf.fit(X, y)
    # The crash came during epoch 2, before its checkpoint: epoch 1 is saved.
    saved = json.loads((tmp_path / "ckpt" / "history.json").read_text())
    assert [row["epoch"] for row in saved] == [1]
    monkeypatch.undo()

    resumed = PneumoniaClassifier(checkpoint_dir=tmp_path / "ckpt", **params).fit(X, y)
    history = resumed.history_
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]  # 3 more, not 4
    assert history[0]["train_loss"] == pytest.approx(saved[0]["train_loss"])
    if "freeze" in setting:
        return  # the head's own net trained (and resumed); its optimizer is gone
    # The learning rate continues the cosine schedule rather than restarting.
    fresh = PneumoniaClassifier(**params).fit(X, y)
    assert resumed.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(
        fresh.net_.optimizer_.param_groups[0]["lr"]
    )


def test_checkpoint_of_another_run_is_not_resumed(tmp_path, data):
    X, y, _ = data
    params = {**FAST, "model": "simple_cnn"}
    PneumoniaClassifier(checkpoint_dir=tmp_path, **params).fit(X, y)
    with pytest.raises(ValueError, match="different training run"):
        PneumoniaClassifier(checkpoint_dir=tmp_path, **params).fit(X[:40], y[:40])
    with pytest.raises(ValueError, match="different training run"):
        PneumoniaClassifier(checkpoint_dir=tmp_path, **{**params, "lr": 0.1}).fit(X, y)


# ------------------------------------------------- parameters and fitted state
def _same_params(a: dict, b: dict) -> bool:
    """get_params() equality, a RandomState compared by its state."""
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, np.random.RandomState):
            if not isinstance(other, np.random.RandomState):
                return False
            mine, theirs = value.get_state(), other.get_state()
            if mine[0] != theirs[0] or not all(
                np.array_equal(m, t) for m, t in zip(mine[1:], theirs[1:])
            ):
                return False
        elif value != other:
            return False
    return True


def _fitted_attributes(clf) -> set[str]:
    return {k for k in vars(clf) if k.endswith("_") and not k.startswith("__")}


@pytest.fixture(scope="module")
def rich_model(tmp_path_factory, data):
    """A model with non-default parameters, a RandomState and a skipped file."""
    X, y, _ = data
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, image in enumerate(X[:24]):
        path = folder / f"{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    (folder / "broken.png").write_bytes(b"not a png")
    paths.append(str(folder / "broken.png"))
    labels = [*y[:24], "NORMAL"]
    clf = PneumoniaClassifier(
        model="simple_cnn",
        image_size=32,
        class_weight="balanced",
        sampler="balanced",
        label_smoothing=0.1,
        lr_schedule="onecycle",
        ema_decay=0.9,
        tta=1,
        max_epochs=2,
        batch_size=8,
        validation_fraction=None,
        on_error="skip",
        random_state=np.random.RandomState(0),
    )
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        return clf.fit(paths, labels), paths


def test_load_round_trips_parameters_and_fitted_attributes(tmp_path, rich_model):
    clf, paths = rich_model
    same = PneumoniaClassifier.load(clf.save(tmp_path / "m.cxr"))
    assert _same_params(same.get_params(), clf.get_params())
    assert same.random_state is not clf.random_state  # a new RandomState
    assert _fitted_attributes(same) == _fitted_attributes(clf)
    assert same.skipped_files_ == clf.skipped_files_ == [paths[-1]]
    np.testing.assert_array_equal(same.mean_image_, clf.mean_image_)
    np.testing.assert_array_equal(same.classes_, clf.classes_)
    assert same.classes_.dtype == clf.classes_.dtype
    assert same.device_ == clf.device_
    assert same.history_.to_list() == clf.history_.to_list()
    # the net is built as in fit: loss with the class weights, optimizer,
    # schedule and the other callbacks
    torch.testing.assert_close(same.net_.criterion_.weight, clf.net_.criterion_.weight)
    assert same.net_.criterion_.label_smoothing == pytest.approx(0.1)
    assert type(same.net_.optimizer_) is type(clf.net_.optimizer_)
    names = [type(c).__name__ for c in same.net_.callbacks]
    assert names == [type(c).__name__ for c in clf.net_.callbacks]
    assert (
        same.net_.get_params()["iterator_train__drop_last"]
        == (clf.net_.get_params()["iterator_train__drop_last"])
    )
    kept = paths[:-1]
    np.testing.assert_allclose(same.predict_proba(kept), clf.predict_proba(kept))
    # saving the loaded model writes the same description again
    again = json.loads(torch.load(same.save(tmp_path / "n.cxr"))["meta"])
    first = json.loads(torch.load(tmp_path / "m.cxr")["meta"])
    # ...except when it was saved
    assert again.pop("saved_at") >= first.pop("saved_at")
    assert again == first


def _same_state(a, b) -> bool:
    """Equality of two values of one fitted attribute, whatever its kind."""
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if hasattr(a, "to_state"):  # e.g. the OOD detector
        (meta_a, tensors_a), (meta_b, tensors_b) = a.to_state(), b.to_state()
        return (
            meta_a == meta_b
            and tensors_a.keys() == tensors_b.keys()
            and all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)
        )
    if hasattr(a, "module_"):  # the skorch net: its weights
        mine, theirs = a.module_.state_dict(), b.module_.state_dict()
        return mine.keys() == theirs.keys() and all(
            torch.equal(mine[k], theirs[k]) for k in mine
        )
    if hasattr(a, "to_list"):  # skorch History
        return a.to_list() == b.to_list()
    return a == b


def test_every_declared_fitted_attribute_survives_save_and_load(tmp_path, rich_model):
    clf, _ = rich_model
    declared = [attribute.name for attribute in FITTED_ATTRIBUTES]
    # fit sets exactly the declared state: an attribute fit sets is declared
    assert _fitted_attributes(clf) | {"_net_spec"} == set(declared)
    clf = copy.deepcopy(clf)
    for attribute in FITTED_ATTRIBUTES:
        if getattr(clf, attribute.name) is None:  # chosen after fit: give it one
            assert attribute.storage == "json", attribute
            setattr(clf, attribute.name, {"set_for": attribute.name, "value": 0.25})
    same = PneumoniaClassifier.load(clf.save(tmp_path / "m.cxr"))
    for name in declared:
        value = getattr(clf, name)
        assert value is not None and (not isinstance(value, list) or value), name
        assert _same_state(getattr(same, name), value), name
    assert same.net_spec_ == clf.net_spec_ and same.net_spec_.n_train > 0


def test_files_without_an_attribute_load_its_default(tmp_path, data, model):
    path = model.save(tmp_path / "m.cxr")
    payload = torch.load(path)
    meta = json.loads(payload["meta"])
    stored = [a for a in FITTED_ATTRIBUTES if a.storage != "core"]
    for attribute in stored:  # as a file written before they existed
        meta.pop(attribute.key, None)
        payload.pop(attribute.key, None)
    payload["meta"] = json.dumps(meta)
    torch.save(payload, path)
    same = PneumoniaClassifier.load(path)
    for attribute in stored:
        assert getattr(same, attribute.name) == attribute.default, attribute.name
    X, _, _ = data
    np.testing.assert_allclose(same.predict_proba(X[:4]), model.predict_proba(X[:4]))


def test_net_spec_is_read_only_and_needs_a_fit(model):
    assert model.net_spec_.n_classes == len(model.classes_)
    with pytest.raises(AttributeError):
        model.net_spec_ = model.net_spec_
    assert not hasattr(PneumoniaClassifier(), "net_spec_")


def test_pretrained_is_kept_and_not_read_on_load(tmp_path, data):
    import torchvision

    X, y, _ = data
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    clf = PneumoniaClassifier(
        model="resnet18",
        pretrained=str(weights),
        validation_fraction=None,
        **{**FAST, "image_size": 16},
    ).fit(X[:16], y[:16])
    path = clf.save(tmp_path / "m.cxr")
    weights.unlink()  # the weights are in the model file
    same = PneumoniaClassifier.load(path)
    assert same.pretrained == str(weights)
    assert same.get_params() == clf.get_params()
    np.testing.assert_allclose(same.predict_proba(X[:4]), clf.predict_proba(X[:4]))


def test_load_device_means_what_the_estimator_device_means(tmp_path, model):
    from cxrkit.training._fit import resolve_device

    path = model.save(tmp_path / "m.cxr")
    assert PneumoniaClassifier.load(path).device_ == resolve_device("auto")
    assert PneumoniaClassifier.load(path, device="cpu").device_ == "cpu"
    with pytest.raises(ValueError, match="'device' parameter"):
        PneumoniaClassifier.load(path, device="gpu0")


def test_format_1_files_still_load(tmp_path, data, model):
    X, _, _ = data
    path = model.save(tmp_path / "m.cxr")

    def as_format_1(meta):
        meta["format_version"] = 1
        for key in ("net", "skipped_files", "estimator"):
            del meta[key]

    _rewrite(path, as_format_1)
    same = PneumoniaClassifier.load(path)
    assert same.skipped_files_ == []
    assert same.get_params() == model.get_params()
    np.testing.assert_array_equal(same.predict_proba(X), model.predict_proba(X))


def test_files_without_a_mean_image_load_without_one(tmp_path, data, model):
    # files saved before cxrkit kept mean_image_ (occlusion's fill)
    X, _, _ = data
    path = model.save(tmp_path / "m.cxr")
    _rewrite(path, change_payload=lambda payload: payload.pop("mean_image"))
    same = PneumoniaClassifier.load(path)
    assert same.mean_image_ is None
    np.testing.assert_array_equal(same.predict_proba(X), model.predict_proba(X))


def test_edited_parameters_are_a_damaged_file(tmp_path, model):
    path = model.save(tmp_path / "m.cxr")
    _rewrite(path, lambda m: m["params"].update(lr=-1.0))
    with pytest.raises(ValueError, match=r"damaged.*'lr' parameter"):
        PneumoniaClassifier.load(path)


def test_load_model_builds_the_class_the_file_names(tmp_path, model):
    path = model.save(tmp_path / "m.cxr")
    assert type(persistence_module.load_model(path)) is PneumoniaClassifier
    _rewrite(path, lambda m: m.update(estimator="os.system"))
    with pytest.raises(ValueError, match="cannot build"):
        persistence_module.load_model(path)


def test_moved_checkpoint_names_warn():
    import cxrkit.persistence
    from cxrkit.training import _checkpoint as checkpoint

    with pytest.warns(FutureWarning, match=r"moved to cxrkit\.training\._checkpoint"):
        moved = cxrkit.persistence.training_checkpoint
    assert moved is checkpoint.training_checkpoint


def test_server_and_dicom_node_take_their_model_the_same_way(
    fitted_synthetic, tmp_path
):
    from cxrkit.pacs import ReportingModel
    from cxrkit.persistence._model_files import fitted_model
    from cxrkit.serve._model import ServedModel

    path = tmp_path / "m.cxr"
    fitted_synthetic.save(path)
    loaded, where = fitted_model(path, "cpu", estimator_class=PneumoniaClassifier)
    assert where == path and isinstance(loaded, PneumoniaClassifier)
    same, none = fitted_model(fitted_synthetic)
    assert same is fitted_synthetic and none is None
    for wrap in (ServedModel, ReportingModel):
        with pytest.raises(ValueError, match="the model is not fitted; give a fitted"):
            wrap(PneumoniaClassifier())


def test_the_card_caption_says_what_a_heatmap_of_a_tta_model_explains(model):
    from cxrkit.persistence import model_card

    plain = model_card(model)["explanation_caption"]
    with_views = model_card(copy.deepcopy(model).set_params(tta=4))
    assert "copies" not in plain
    assert with_views["explanation_caption"].startswith(plain)
    assert with_views["explanation_caption"].endswith(
        "the probability also averages 4 copies of it, each shifted, rotated, "
        "zoomed and changed in brightness and contrast."
    )
