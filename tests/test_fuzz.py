"""Fuzzing the readers and ``predict`` with hypothesis.

Generated images (random sizes, dtypes, modes, channel counts) and byte-level
corruptions of valid JPEG, PNG and DICOM files go to ``read_image``,
``load_images`` and ``predict``. The only outcomes allowed are a valid result
or one of cxrkit's documented exceptions (``ValueError``, ``TypeError``,
``FileNotFoundError``) with a message. ``CASES`` counts what was tried;
``test_fuzz_counts`` prints the totals (run with ``-s`` to see them).
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from cxrkit import PneumoniaClassifier, read_image
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.images import clear_image_cache, load_images

CASES: Counter = Counter()
DOCUMENTED = (ValueError, TypeError, FileNotFoundError)
FUZZ = settings(
    max_examples=300,
    deadline=2000,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
WORKDIR = Path(tempfile.mkdtemp(prefix="cxrkit_fuzz_"))


@pytest.fixture(scope="module")
def small_model() -> PneumoniaClassifier:
    X, y, _ = make_synthetic_cxr(48, image_size=32, random_state=0)
    return PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, y)


def _check_outcome(kind: str, call) -> object:
    CASES[kind] += 1
    try:
        result = call()
    except DOCUMENTED as exc:
        CASES[f"{kind}: refused"] += 1
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return None
    CASES[f"{kind}: read"] += 1
    return result


# ------------------------------------------------------------------ arrays
dtypes = st.sampled_from(
    [np.uint8, np.uint16, np.int16, np.int64, np.float32, np.float64, np.bool_]
)


@st.composite
def image_batches(draw):
    dtype = draw(dtypes)
    n = draw(st.integers(0, 3))
    h, w = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    channels = draw(st.sampled_from([(), (1,), (2,), (3,), (4,), (5,)]))
    lead = draw(st.sampled_from([(), (1,)]))  # sometimes one dimension too many
    shape = (*lead, n, h, w, *channels)
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-2, 300, width=32) | st.sampled_from(
            [np.nan, np.inf, -np.inf, 0.0, 1.0, 255.0]
        )
    else:
        elements = None
    return draw(arrays(dtype, shape, elements=elements))


@FUZZ
@given(X=image_batches())
def test_fuzz_arrays_through_predict(X, small_model):
    proba = _check_outcome("array batch", lambda: small_model.predict_proba(X))
    if proba is not None:
        assert proba.shape == (X.shape[0], 2)
        assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=1), 1)


# ------------------------------------------------------ generated image files
@st.composite
def image_files(draw):
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "LA", "I;16", "CMYK", "1"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "TIFF", "BMP"]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        img = img.convert(mode)
    buffer = io.BytesIO()
    try:
        img.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        return None  # this format cannot store this mode
    return buffer.getvalue()


@FUZZ
@given(data=image_files())
def test_fuzz_generated_image_files(data):
    if data is None:
        return
    path = WORKDIR / "generated"
    path.write_bytes(data)
    image = _check_outcome("generated file", lambda: read_image(path, size=32))
    assert image is not None, "a valid image file was refused"
    assert image.shape == (32, 32) and image.dtype == np.uint8


# ----------------------------------------------------- corrupted valid files
def _valid_files() -> dict[str, bytes]:
    gray = make_synthetic_cxr(1, image_size=40, random_state=1)[0][0]
    files = {}
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, format=fmt)
        files[fmt] = buffer.getvalue()
    try:
        from test_dicom import write_dicom
    except ImportError:  # pydicom missing: fuzz JPEG and PNG only
        return files
    path = write_dicom(
        WORKDIR / "valid.dcm",
        gray.astype(np.uint16) * 16,
        bits_stored=12,
        RescaleSlope=1.5,
        RescaleIntercept=-10,
        WindowCenter=2000,
        WindowWidth=3000,
    )
    files["DICOM"] = path.read_bytes()
    return files


VALID = _valid_files()


@st.composite
def corrupted(draw):
    kind = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[kind])
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif action == "truncate":
            del data[pos:]
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif action == "zero":
            data[pos : pos + draw(st.integers(1, 64))] = b"\0" * 8
    return kind, bytes(data)


@FUZZ
@given(case=corrupted())
def test_fuzz_corrupted_files_read_or_refused(case):
    kind, data = case
    suffix = {"PNG": ".png", "JPEG": ".jpeg", "DICOM": ".dcm"}[kind]
    path = WORKDIR / f"corrupt{suffix}"
    path.write_bytes(data)
    image = _check_outcome(f"corrupted {kind}", lambda: read_image(path, size=32))
    if image is not None:
        assert image.shape == (32, 32) and image.dtype == np.uint8


@settings(FUZZ, max_examples=40)
@given(cases=st.lists(corrupted(), min_size=1, max_size=4))
def test_fuzz_corrupted_files_through_predict(cases, small_model):
    clear_image_cache()
    paths = []
    for i, (kind, data) in enumerate(cases):
        path = WORKDIR / f"batch{i}.{kind.lower()}"
        path.write_bytes(data)
        paths.append(path)
    labels = _check_outcome("predict on files", lambda: small_model.predict(paths))
    if labels is not None:
        assert len(labels) == len(paths) and set(labels) <= set(small_model.classes_)
    else:  # the same batch with on_error="skip" keeps exactly the readable ones
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the skip warning
                images, kept = load_images(paths, 32, on_error="skip")
        except ValueError as exc:
            assert "none of the images" in str(exc)
        else:
            assert len(images) == kept.sum() < len(paths)


def test_fuzz_counts():
    """Print the number of cases tried (and fail if a fuzz test did not run)."""
    print("\nfuzz cases:", dict(sorted(CASES.items())))
    assert CASES["array batch"] >= 50
    assert sum(CASES[f"corrupted {kind}"] for kind in VALID) >= 50
