"""One input type: ``X`` is decoded once, and every layer sees the same pixels.

``cxrkit.images.decode_images`` decides whether ``X`` holds paths or images and
returns a ``DecodedImages``; ``cxrkit.images.model_images`` adds the
classifier's ``preprocess``. ``fit``, ``predict_proba``, ``ood_score`` and
``cxrkit.explain`` all go through it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cxrkit import PneumoniaClassifier
from cxrkit import classifier as classifier_module
from cxrkit.explain._base import model_inputs
from cxrkit.images import (
    DecodedImages,
    decode_images,
    load_images,
    model_images,
    normalize,
    preprocess_images,
)

PACKAGE = Path(__file__).resolve().parents[1] / "cxrkit"

#: Public entry points that may ask whether ``X`` holds paths or images.
ENTRY_POINTS = {
    ("cxrkit.images._cache", "decode_images"),
    ("cxrkit.persistence._provenance", "training_data_summary"),
    ("cxrkit.report._predictions", "write_predictions"),
    ("cxrkit.validation", "LeaveBatchOut.split"),
    ("cxrkit.validation", "ConfounderMatchedSplit.split"),
    ("cxrkit.report._evaluation", "evaluation_report"),
    ("cxrkit.demo", "run_demo"),
    ("cxrkit.validation", "shifted_predictions"),
}
#: Helpers below an entry point that still ask: none; a new one fails the test.
NOT_YET_MIGRATED: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _calls_and_imports(name: str) -> tuple[set[tuple[str, str]], set[str]]:
    """Where ``name`` is called (module, top-level function or Class.method),
    and the modules it is imported from."""
    calls, sources = set(), set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and any(
                alias.name == name for alias in node.names
            ):
                sources.add(node.module)
        for top in tree.body:
            owners = [(top.name, top)] if isinstance(top, ast.FunctionDef) else []
            if isinstance(top, ast.ClassDef):
                owners = [
                    (f"{top.name}.{f.name}", f)
                    for f in top.body
                    if isinstance(f, ast.FunctionDef)
                ]
            for owner, func in owners:
                for node in ast.walk(func):
                    if (
                        isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Name)
                        and node.func.id == name
                    ):
                        calls.add((module, owner))
    return calls, sources


def test_path_or_array_is_asked_only_at_entry_points():
    calls, sources = _calls_and_imports("is_path_like_sequence")
    assert sources == {"cxrkit.images._inputs"}, (
        "import it from its home, cxrkit.images._inputs"
    )
    unexpected = calls - ENTRY_POINTS - NOT_YET_MIGRATED
    assert not unexpected, (
        f"{sorted(unexpected)} ask whether X holds paths: take a DecodedImages "
        "(cxrkit.images.decode_images) from the public entry point instead"
    )
    assert calls >= ENTRY_POINTS
    migrated = NOT_YET_MIGRATED - calls
    assert not migrated, f"{sorted(migrated)} no longer ask: drop them from the list"


def test_call_finder_sees_methods_and_functions():
    calls, _ = _calls_and_imports("check_image_array")
    assert ("cxrkit.images._cache", "decode_images") in calls
    calls, _ = _calls_and_imports("is_path_like_sequence")
    assert ("cxrkit.validation", "LeaveBatchOut.split") in calls


def _write_images(folder: Path, n: int, *, bad: int | None = None) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"person{i}_bacteria_{i}.png"
        if i == bad:
            path.write_bytes(b"not an image")
        else:
            pixels = rng.integers(0, 256, (20 + i, 24), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def test_decoded_paths_keep_rows_and_subset(tmp_path):
    paths = _write_images(tmp_path, 5, bad=2)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        decoded = decode_images(paths, 16, on_error="skip")
    assert decoded.kept.tolist() == [0, 1, 3, 4]
    assert decoded.kept_mask.tolist() == [True, True, False, True, True]
    assert decoded.paths == (paths[0], paths[1], paths[3], paths[4])
    assert decoded.skipped == (paths[2],)
    assert len(decoded) == 4 and decoded.n_input == 5 and decoded.size == 16
    assert decoded.input_shape is None

    part = decoded.subset([3, 0])
    assert part.kept.tolist() == [4, 0]
    assert part.paths == (paths[4], paths[0])
    np.testing.assert_array_equal(part.pixels, decoded.pixels[[3, 0]])
    alone = decode_images([paths[4]], 16).pixels[0]
    np.testing.assert_array_equal(part.pixels[0], alone)

    with pytest.warns(UserWarning):
        images, kept = load_images(paths, 16, on_error="skip")
    np.testing.assert_array_equal(images, decoded.pixels)
    assert kept.tolist() == decoded.kept_mask.tolist()


def test_decoded_array_keeps_its_shape_and_is_not_decoded_again():
    X = np.random.default_rng(1).integers(0, 256, (4, 30, 20, 3), dtype=np.uint8)
    decoded = decode_images(X, 8)
    assert decoded.paths is None and decoded.input_shape == (30, 20)
    assert decoded.pixels.shape == (4, 8, 8)
    again = decode_images(decoded.subset([1, 2]), 8)
    assert again.kept.tolist() == [0, 1]  # rows of the X given now
    np.testing.assert_array_equal(again.pixels, decoded.pixels[[1, 2]])
    with pytest.raises(ValueError, match="decoded at 8 px, but 16 px"):
        decode_images(decoded, 16)


def test_model_images_preprocesses_once():
    clf = PneumoniaClassifier(image_size=16, preprocess="stretch")
    X = np.random.default_rng(2).integers(60, 120, (3, 16, 16), dtype=np.uint8)
    seen = model_images(clf, X)
    assert seen.preprocess == ("stretch",)
    np.testing.assert_array_equal(seen.pixels, preprocess_images(X, "stretch"))
    assert model_images(clf, seen).pixels is seen.pixels  # not applied twice
    raw = decode_images(X, 16)
    np.testing.assert_array_equal(model_images(clf, raw).pixels, seen.pixels)
    other = PneumoniaClassifier(image_size=16, preprocess="equalize")
    with pytest.raises(ValueError, match="preprocessed with"):
        model_images(other, seen)


class _Recorded(Exception):
    pass


@pytest.mark.parametrize("kind", ["paths", "array"])
def test_predict_ood_and_explain_see_the_same_pixels(tmp_path, monkeypatch, kind):
    if kind == "paths":
        X = _write_images(tmp_path, 3)
    else:
        X = np.random.default_rng(3).integers(0, 256, (3, 20, 24), dtype=np.uint8)
    clf = PneumoniaClassifier(image_size=16, preprocess="equalize")
    clf.net_ = object()  # fitted enough for the paths traced here
    clf.ood_detector_ = SimpleNamespace(score=np.asarray)
    seen = {}

    def record(where):
        def capture(_, images, **__):
            seen[where] = np.array(images)
            raise _Recorded

        return capture

    monkeypatch.setattr(classifier_module._fit, "predict_proba", record("p"))
    monkeypatch.setattr(classifier_module, "penultimate_features", record("ood"))
    with pytest.raises(_Recorded):
        clf.predict_proba(X)
    with pytest.raises(_Recorded):
        clf.ood_score(X)
    inputs, _ = model_inputs(clf, X)

    expected = preprocess_images(load_images(X, 16)[0], "equalize")
    np.testing.assert_array_equal(seen["p"], expected)
    np.testing.assert_array_equal(seen["ood"], expected)
    as_input = normalize(torch.from_numpy(expected)[:, None])
    torch.testing.assert_close(inputs, as_input)
    # a decoded X gives the same pixels as the raw X
    with pytest.raises(_Recorded):
        clf.predict_proba(decode_images(X, 16))
    np.testing.assert_array_equal(seen["p"], expected)
    assert isinstance(decode_images(X, 16), DecodedImages)
