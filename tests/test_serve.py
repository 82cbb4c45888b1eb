"""cxrkit serve: the JSON API, every bad input, limits, concurrency, the CLI."""

from __future__ import annotations

import asyncio
import importlib
import io
import struct
import sys
import tempfile
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cxrkit import PneumoniaClassifier  # noqa: E402
from cxrkit.cli import main  # noqa: E402
from cxrkit.datasets import make_synthetic_cxr  # noqa: E402
from cxrkit.explain import DEFAULT_METHOD, explain, method_caption  # noqa: E402
from cxrkit.images import read_image  # noqa: E402
from cxrkit.serve import create_app, serve  # noqa: E402
from cxrkit.serve._app import DISPLAY_SIZE  # noqa: E402
from cxrkit.serve._uploads import UploadLimit  # noqa: E402

SIZE = 32


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def images() -> np.ndarray:
    X, _, _ = make_synthetic_cxr(24, image_size=48, random_state=1)
    return X


@pytest.fixture(scope="module")
def clf() -> PneumoniaClassifier:
    X, y, _ = make_synthetic_cxr(40, image_size=SIZE, random_state=0)
    return PneumoniaClassifier(
        model="simple_cnn", image_size=SIZE, max_epochs=1, random_state=0
    ).fit(X, y)


@pytest.fixture(scope="module")
def model_file(clf, tmp_path_factory):
    return clf.save(tmp_path_factory.mktemp("serve") / "tiny.cxr")


@pytest.fixture(scope="module")
def client(model_file):
    with TestClient(create_app(model_file, max_upload_mb=1)) as c:
        yield c


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def decoded(data: bytes, tmp_path, name="x.png") -> np.ndarray:
    """The image as the library decodes that file (what the server must see)."""
    path = tmp_path / name
    path.write_bytes(data)
    return read_image(path, size=SIZE)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def dicom_without_pixels() -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # SR
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "SR"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_image(image: np.ndarray) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PixelData = image.astype(np.uint8).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def assert_clear_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    for word in words:
        assert word in message, message
    assert "Traceback" not in message and "cxrkit-upload-" not in message


# --------------------------------------------------------------- happy paths
def test_health_and_model_card(client, clf):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_id"].startswith("tiny-")
    card = client.get("/model").json()
    assert card["model_id"] == health["model_id"]
    assert card["classes"] == clf.classes_.tolist()
    assert card["positive_class"] == "PNEUMONIA" and card["threshold"] == 0.5
    assert card["architecture"] == "simple_cnn" and card["image_size"] == SIZE
    trained = card["trained"]
    assert trained["epochs"] == 1 and trained["images"] == clf.net_spec_.n_train
    assert trained["saved_at"] and trained["cxrkit_version"]
    assert "not a medical device" in card["intended_use"]


def test_page_is_offline_and_carries_the_notice(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "not a medical device" in page.text
    # every asset is served here: no CDN
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("/static/app.js", "/static/app.css"):
        assert asset in page.text
        response = client.get(asset)
        assert response.status_code == 200 and "https://" not in response.text


def test_openapi_describes_the_upload(client):
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/explain"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]
        assert "file" in body["multipart/form-data"]["schema"]["properties"]
    assert {"/health", "/model"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_predict_matches_the_classifier(client, clf, images, tmp_path):
    files = [("file", (f"img{i}.png", png(images[i]), "image/png")) for i in range(3)]
    answer = client.post("/predict", files=files).json()
    expected = clf.predict_proba(
        np.stack([decoded(png(images[i]), tmp_path) for i in range(3)])
    )
    got = np.array([p["probabilities"] for p in answer["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [p["filename"] for p in answer["predictions"]] == [
        "img0.png",
        "img1.png",
        "img2.png",
    ]
    pos = clf.classes_.tolist().index("PNEUMONIA")
    labels = np.where(expected[:, pos] >= 0.5, "PNEUMONIA", "NORMAL").tolist()
    assert [p["label"] for p in answer["predictions"]] == labels
    assert answer["classes"] == clf.classes_.tolist() and answer["threshold"] == 0.5
    assert answer["model_id"].startswith("tiny-")
    assert set(answer["timing_ms"]) == {"decode", "inference", "total"}
    assert "preview" not in answer["predictions"][0]


def test_predict_jpeg_and_dicom_with_preview(client, images, tmp_path):
    image = images[0]
    files = [
        ("file", ("a.jpeg", jpeg(image), "image/jpeg")),
        ("file", ("b.dcm", dicom_image(image), "application/dicom")),
    ]
    answer = client.post("/predict?preview=true", files=files).json()
    assert len(answer["predictions"]) == 2
    for p in answer["predictions"]:
        head, data = p["preview"].split(",", 1)
        assert head == "data:image/png;base64"
        import base64

        shown = Image.open(io.BytesIO(base64.b64decode(data)))
        assert shown.size == image.shape[::-1]  # small images are not enlarged


def test_threshold_decides_the_label(model_file, images):
    with TestClient(create_app(model_file, threshold=0.0)) as c:
        answer = c.post("/predict", files={"file": ("a.png", png(images[0]))}).json()
    assert answer["threshold"] == 0.0
    assert answer["predictions"][0]["label"] == "PNEUMONIA"


def test_explain_json_is_the_recommended_method_of_the_called_class(
    client, clf, images, tmp_path
):
    files = [("file", (f"{i}.png", png(images[i]))) for i in range(2)]
    answer = client.post("/explain?format=json", files=files).json()
    assert answer["method"] == DEFAULT_METHOD != "grad_cam"
    assert answer["method_caption"] == method_caption(DEFAULT_METHOD)
    card = client.get("/model").json()
    assert card["explanation"] == DEFAULT_METHOD
    assert card["explanation_caption"] == method_caption(DEFAULT_METHOD)
    X = np.stack([decoded(png(images[i]), tmp_path) for i in range(2)])
    labels = [e["label"] for e in answer["explanations"]]
    expected = explain(clf, X, labels)
    got = np.array([e["heatmap"] for e in answer["explanations"]])
    assert got.shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_explain_png_is_the_overlay_on_the_image(client, fullres_dir):
    path = next(  # big enough to be shrunk for display, small enough for 1 MB
        p
        for p in sorted(fullres_dir.rglob("*.jpeg"))
        if p.stat().st_size < 900_000 and min(Image.open(p).size) > DISPLAY_SIZE
    )
    response = client.post(
        "/explain", files={"file": (path.name, path.read_bytes(), "image/jpeg")}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-explained-class"] in ("NORMAL", "PNEUMONIA")
    assert response.headers["x-explanation-method"] == DEFAULT_METHOD
    assert response.headers["x-explanation-caption"] == method_caption(DEFAULT_METHOD)
    overlay = Image.open(io.BytesIO(response.content))
    original = Image.open(path)
    assert overlay.mode == "RGB" and max(overlay.size) == DISPLAY_SIZE
    # aspect ratio kept (to a pixel)
    assert (
        abs(overlay.size[0] / overlay.size[1] - original.size[0] / original.size[1])
        < 0.01
    )
    plain = client.post(
        "/explain?alpha=0", files={"file": (path.name, path.read_bytes())}
    )
    rgb = np.asarray(Image.open(io.BytesIO(plain.content)))
    assert (rgb[..., 0] == rgb[..., 2]).all()  # no heatmap colour at alpha 0
    assert not (np.asarray(overlay)[..., 0] == np.asarray(overlay)[..., 2]).all()


# ----------------------------------------------------------------- bad input
def _file(name: str, data: bytes) -> dict:
    return {"files": {"file": (name, data)}}


# case: (request arguments from a valid image, status, words the error names)
BAD_INPUTS = {
    "not an image": (
        lambda ok: _file("notes.png", b"these are not pixels"),
        422,
        ["notes.png", "not an image"],
    ),
    "truncated": (lambda ok: _file("cut.png", ok[:200]), 422, ["cut.png", "truncated"]),
    "decompression bomb": (
        lambda ok: _file("bomb.png", png_header_only(40000, 40000)),
        422,
        ["bomb.png", "1600000000 pixels", "decompression-bomb"],
    ),
    "empty body": (lambda ok: {}, 400, ["empty", "'file'"]),
    "empty file": (lambda ok: _file("e.png", b""), 400, ["e.png", "empty"]),
    "wrong field name": (
        lambda ok: {"files": {"image": ("a.png", ok)}},
        400,
        ["no field named 'file'", "['image']"],
    ),
    "text in the file field": (
        lambda ok: {"data": {"file": "abc"}, "files": {"x": ("x.png", ok)}},
        400,
        ["holds text"],
    ),
    "form-encoded": (lambda ok: {"data": {"file": "abc"}}, 400, ["multipart"]),
    "not multipart": (
        lambda ok: {"json": {"file": 1}},
        400,
        ["application/json", "multipart/form-data"],
    ),
    "dicom without pixel data": (
        lambda ok: _file("report.dcm", dicom_without_pixels()),
        422,
        ["report.dcm", "no pixel data"],
    ),
    "path in the filename": (
        lambda ok: _file("../../etc/cron.d/x.png", ok),
        400,
        ["path components", "../../etc/cron.d/x.png"],
    ),
    "windows path in the filename": (
        lambda ok: _file("..\\x.png", ok),
        400,
        ["path components"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("endpoint", ["/predict", "/explain"])
def test_bad_input_is_a_clear_4xx_and_the_server_goes_on(
    client, images, case, endpoint
):
    build, status, words = BAD_INPUTS[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        response = client.post(endpoint, **build(png(images[0])))
    assert_clear_error(response, status, *words)
    ok = client.post("/predict", files={"file": ("ok.png", png(images[0]))})
    assert ok.status_code == 200


def test_images_between_pillows_warning_and_error_are_refused(
    client, images, monkeypatch
):
    # read_image only warns below twice Pillow's limit; the server refuses
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 48 * 48 - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        response = client.post("/predict", files={"file": ("big.png", png(images[0]))})
        # the same PNG named as DICOM, and a real DICOM: checked by content
        renamed = client.post("/predict", files={"file": ("big.dcm", png(images[0]))})
        dicom = client.post(
            "/predict", files={"file": ("film.dcm", dicom_image(images[0]))}
        )
    assert_clear_error(response, 422, "big.png", "48x48", "decompression-bomb")
    assert_clear_error(renamed, 422, "big.dcm", "48x48", "decompression-bomb")
    assert_clear_error(dicom, 422, "film.dcm", "2304 pixels", "decompression-bomb")


def test_over_the_upload_limit_is_413(client):
    big = np.random.default_rng(0).integers(0, 255, (1100, 1100), dtype=np.uint8)
    response = client.post("/predict", files={"file": ("big.png", png(big))})
    assert_clear_error(response, 413, "upload limit of 1 MB", "--max-upload-mb")
    assert client.get("/health").status_code == 200


def test_upload_limit_refuses_while_streaming():
    """A chunked body is refused at the first chunk over the limit, unread beyond."""
    chunks_read = 0
    reached_app = []

    async def app(scope, receive, send):
        reached_app.append(True)
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    async def receive():
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    asyncio.run(UploadLimit(app, max_bytes=10_000)(scope, receive, send))
    assert chunks_read == 11  # 11 000 bytes: over the limit, nothing more read
    assert sent[0]["status"] == 413 and len(sent) == 2
    assert b"upload limit" in sent[1]["body"]

    # a declared Content-Length over the limit is refused before reading
    chunks_read = 0
    sent.clear()
    reached_app.clear()
    scope["headers"] = [(b"content-length", b"10001")]
    asyncio.run(UploadLimit(app, max_bytes=10_000)(scope, receive, send))
    assert chunks_read == 0 and not reached_app and sent[0]["status"] == 413


def test_explain_png_wants_one_image_and_alpha_in_range(client, images):
    two = [("file", ("a.png", png(images[0]))), ("file", ("b.png", png(images[1])))]
    assert_clear_error(
        client.post("/explain", files=two), 400, "one image", "format=json"
    )
    one = {"file": ("a.png", png(images[0]))}
    assert_clear_error(client.post("/explain?alpha=2", files=one), 422, "alpha")
    assert_clear_error(client.post("/explain?format=gif", files=one), 422, "format")


def test_unknown_route_and_internal_errors_are_json_without_traceback(
    model_file, images, caplog
):
    app = create_app(model_file)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert_clear_error(c.get("/nowhere"), 404, "Not Found", "/nowhere")

        def broken(images):
            raise RuntimeError("secret internal detail")

        app.state.served.assess = broken
        response = c.post("/predict", files={"file": ("a.png", png(images[0]))})
        assert_clear_error(response, 500, "internal error")
        assert "secret" not in response.text
        assert c.get("/health").status_code == 200
    assert "secret internal detail" in caplog.text  # logged on the server


def test_uploads_are_not_kept_unless_asked(model_file, images, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with TestClient(create_app(model_file)) as c:
        c.post("/predict", files={"file": ("a.png", png(images[0]))})
        c.post("/predict", files={"file": ("bad.png", b"not an image")})
    assert list(scratch.iterdir()) == []

    kept = tmp_path / "kept"
    with TestClient(create_app(model_file, keep_uploads=kept)) as c:
        c.post("/predict", files={"file": ("a.png", png(images[0]))})
        c.post("/predict", files={"file": ("a.png", png(images[0]))})  # same bytes
        c.post("/predict", files={"file": ("c.jpeg", jpeg(images[1]))})
    names = sorted(p.name for p in kept.iterdir())
    assert len(names) == 2 and all(len(n.split(".")[0]) == 64 for n in names)
    assert {n.split(".")[1] for n in names} == {"png", "jpeg"}
    assert list(scratch.iterdir()) == []


def test_concurrent_requests_answer_as_sequential_ones(model_file, images, run_server):
    url = run_server(create_app(model_file))
    bodies = [png(images[i]) for i in range(8)]

    def ask(i: int) -> tuple[list, list]:
        files = {"file": (f"{i}.png", bodies[i % 8])}
        with httpx.Client(base_url=url, timeout=60) as h:
            p = h.post("/predict", files=files)
            e = h.post("/explain?format=json", files=files)
        assert p.status_code == 200 and e.status_code == 200
        return p.json()["predictions"][0]["probabilities"], e.json()["explanations"]

    sequential = [ask(i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(ask, range(16)))
    assert concurrent == sequential


# ----------------------------------------------------------- setup and CLI
def test_bad_settings_are_refused(model_file, clf, tmp_path):
    with pytest.raises(ValueError, match="threshold"):
        create_app(model_file, threshold=1.5)
    with pytest.raises(ValueError, match="max_upload_mb"):
        create_app(model_file, max_upload_mb=0)
    with pytest.raises(ValueError, match="not fitted"):
        create_app(PneumoniaClassifier())
    card = TestClient(create_app(clf)).get("/model").json()  # a model in memory
    assert card["model_id"].startswith("in-memory-") and card["file"] is None


def test_binding_beyond_loopback_warns(monkeypatch, model_file):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        serve(model_file, host="127.0.0.1", port=1)
        serve(model_file, host="::1", port=1)
    assert not [w for w in seen if "authentication" in str(w.message)]
    with pytest.warns(UserWarning, match="NO authentication"):
        serve(model_file, host="0.0.0.0", port=1)
    assert [c["host"] for c in calls] == ["127.0.0.1", "::1", "0.0.0.0"]


def test_cli_serve(monkeypatch, model_file, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert main(["serve", str(model_file), "--port", "8123"]) == 0
    app, kw = calls[0]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8123
    assert "http://127.0.0.1:8123/" in capsys.readouterr().err
    assert TestClient(app).get("/health").json()["status"] == "ok"

    assert main(["serve", str(model_file), "--threshold", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxrkit serve: error:") and "threshold" in err
    assert main(["serve", "missing.cxr"]) == 2


def test_missing_extra_names_the_install(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("cxrkit.serve")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ImportError, match=r'pip install "cxrkit\[serve\]"'):
        importlib.import_module("cxrkit.serve")
