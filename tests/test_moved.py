"""The old flat module paths (cxrkit.io, cxrkit.transforms, ...) still import.

They give the same objects as the new paths, with a DeprecationWarning that names
the new one; a pickle that names a class by its old module still loads.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import warnings

import pytest

import cxrkit
from cxrkit._moved import MOVED_MODULES

#: Each old module's public names before the move (their __all__).
OLD_PUBLIC = {
    "cxrkit.io": ["IMAGE_EXTENSIONS", "ImageReadError", "read_image"],
    "cxrkit.dicom": ["read_dicom"],
    "cxrkit.data": ["find_images", "load_image_folder", "patient_groups"],
    "cxrkit.preprocess": ["PREPROCESSING", "model_images", "preprocess_images"],
    "cxrkit.cache": ["DecodedImages", "decode_images", "load_images"],
    "cxrkit.transforms": [
        "AUGMENT_PRESETS",
        "MEAN",
        "STD",
        "BatchAugmentation",
        "ImageBatches",
        "ImageDataset",
        "build_augmentation",
        "normalize",
    ],
    "cxrkit.accelerated": ["AcceleratedImageClassifierNet", "resolve_accelerator"],
    "cxrkit.net": ["ImageClassifierNet", "collate_batches"],
    "cxrkit.features": ["backbone_features"],
    "cxrkit.callbacks": ["WeightAveraging", "print_epoch_table"],
    "cxrkit.allocator": ["reuse_large_buffers"],
    "cxrkit.checkpoint": ["jsonable", "write_atomic"],
    "cxrkit._training": ["build_net"],
    "cxrkit.provenance": ["decision_rule", "training_data_summary"],
    "cxrkit.export": ["export_onnx", "onnx_metadata"],
    "cxrkit.pixels": ["to_grayscale_uint8"],
    "cxrkit.inputs": ["is_path_like_sequence"],
    "cxrkit.efficientnet_lite": ["efficientnet_lite0"],
}


def test_every_moved_module_is_tested():
    assert set(OLD_PUBLIC) == set(MOVED_MODULES)


@pytest.mark.parametrize("old", sorted(OLD_PUBLIC))
def test_old_path_imports_with_a_warning_and_gives_the_same_objects(old):
    sys.modules.pop(old, None)
    with pytest.warns(
        DeprecationWarning, match=MOVED_MODULES[old][0].replace(".", r"\.")
    ):
        module = importlib.import_module(old)
    for name in OLD_PUBLIC[old]:
        new = next(
            getattr(importlib.import_module(home), name)
            for home in MOVED_MODULES[old]
            if hasattr(importlib.import_module(home), name)
        )
        assert getattr(module, name) is new
    assert set(OLD_PUBLIC[old]) <= set(dir(module))


def test_from_import_of_an_old_path():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from cxrkit.io import read_image
        from cxrkit.transforms import MEAN, BatchAugmentation
    assert read_image is cxrkit.read_image
    assert MEAN == cxrkit.images.MEAN
    assert BatchAugmentation is cxrkit.training.BatchAugmentation


def test_unknown_name_of_an_old_path_names_the_new_one():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module("cxrkit.io")
    with pytest.raises(AttributeError, match=r"moved to cxrkit\.images"):
        module.no_such_name  # noqa: B018


def test_new_paths_do_not_warn():
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import cxrkit, cxrkit.images, cxrkit.models, cxrkit.training\n"
        "import cxrkit.persistence, cxrkit.cli, cxrkit.serve, cxrkit.report\n"
        "import sys\n"
        "old = [m for m in cxrkit._moved.MOVED_MODULES if m in sys.modules]\n"
        "assert not old, old\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_pickle_naming_the_old_module_loads():
    augmentation = cxrkit.training.BatchAugmentation(degrees=5)
    # protocol 0 names classes as text lines, so the module can be swapped
    data = pickle.dumps(augmentation, protocol=0)
    old = data.replace(b"cxrkit.training._augmentation\n", b"cxrkit.transforms\n")
    assert old != data
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("cxrkit.transforms", None)
        loaded = pickle.loads(old)
    assert type(loaded) is cxrkit.training.BatchAugmentation
    assert loaded.options == augmentation.options


def test_the_warning_follows_pythons_rules_for_deprecations(tmp_path):
    # Python shows a DeprecationWarning where a script (__main__) or a test
    # uses the old path, and hides it where an installed library does, so
    # the users of a program built on old paths are not shown it
    (tmp_path / "old_library.py").write_text("from cxrkit.io import read_image\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    hidden = subprocess.run(
        [sys.executable, "-c", "import old_library"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert hidden.stderr == ""
    shown = subprocess.run(
        [sys.executable, "-c", "import cxrkit.io"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert "cxrkit.io moved to cxrkit.images" in shown.stderr
