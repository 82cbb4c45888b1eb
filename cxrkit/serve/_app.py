"""The FastAPI application: routes, over ``ServedModel`` and the upload readers."""

from __future__ import annotations

import base64
import logging
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxrkit._version import __version__
from cxrkit.serve._errors import ClientError
from cxrkit.serve._model import INTENDED_USE, ServedModel
from cxrkit.serve._rendering import heatmap_overlay, png_bytes
from cxrkit.serve._uploads import (
    FIELD,
    DecodedUpload,
    UploadLimit,
    decode_upload,
    uploaded_files,
)

__all__ = ["create_app"]

_log = logging.getLogger("cxrkit.serve")

#: Files accepted in one request.
MAX_FILES = 64
#: Long side of the images the page shows (and of /explain's PNG), in pixels.
DISPLAY_SIZE = 768

# OpenAPI description of the multipart body, for /docs: the endpoints read
# the form themselves, to answer a missing or misnamed field with a message
# that says what to send instead of a generic validation error.
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {
                        FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "PNG, JPEG or DICOM; repeat the field "
                            "for several images",
                        }
                    },
                }
            }
        },
    }
}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def _decoded(
    request: Request,
    served: ServedModel,
    *,
    display: bool,
    keep_dir: Path | None,
) -> tuple[list[DecodedUpload], float]:
    """The request's uploads, decoded in a worker thread; and seconds spent."""
    files = await uploaded_files(request, max_files=MAX_FILES)
    start = time.perf_counter()
    size = served.clf.image_size

    def decode_all(uploads: list[UploadFile]) -> list[DecodedUpload]:
        return [
            decode_upload(
                f,
                size,
                display_size=DISPLAY_SIZE if display else None,
                keep_dir=keep_dir,
            )
            for f in uploads
        ]

    try:
        decoded = await run_in_threadpool(decode_all, files)
    finally:
        for f in files:
            await f.close()
    return decoded, time.perf_counter() - start


def create_app(
    model_or_path: Any,
    threshold: float | None = None,
    max_upload_mb: float = 50,
    keep_uploads: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    refuse_ood: bool = False,
) -> FastAPI:
    """A web page and JSON API over a fitted classifier (``cxrkit serve``).

    Needs ``pip install "cxrkit[serve]"``. Run it with uvicorn
    (``cxrkit.serve.serve`` does), or test it with FastAPI's ``TestClient``.

    Endpoints:

    * ``GET /``: the page (choose or drop a PNG, JPEG or DICOM file);
    * ``POST /predict``: multipart field ``file`` (repeat it for several
      images); JSON with each image's probabilities in ``classes`` order, the
      class called at the threshold, its out-of-distribution score and flag
      (``ood_score``, ``ood``: the image looks unlike the training images and
      the call is unreliable; None for a model without a detector), the model
      id and the timing. ``?preview=true`` adds each image as the server
      decoded it (PNG data URL);
    * ``POST /explain``: the same field; ``?format=png`` (default, one image)
      the heatmap over the image, ``?format=json`` the heatmaps as numbers;
    * ``GET /health``, ``GET /model`` (the model card), ``GET /docs``
      (OpenAPI).

    Every bad request gets a 4xx JSON ``{"error": "..."}`` naming the
    problem; an unexpected failure a 500 without a traceback (logged on the
    server).

    Parameters
    ----------
    model_or_path : PneumoniaClassifier, str or path-like
        A fitted classifier, or a model file written by ``clf.save``.
    threshold : float, optional
        Two classes: call the positive class at probability ``>= threshold``
        (default: the threshold recorded in the model file, else 0.5).
    max_upload_mb : float, default=50
        Largest request body, in MB (2**20 bytes); larger ones are refused
        while they arrive.
    keep_uploads : str or path-like, optional
        Keep a copy of every upload in this folder, named by the SHA-256 of
        its content. By default nothing is kept.
    device : str, default="auto"
        Where a model file's weights go (``"auto"``: CUDA if present).
    refuse_ood : bool, default=False
        Answer no call and no probabilities (``label`` and ``probabilities``
        None, ``refused`` saying why) for images flagged as unlike the
        training images, and no heatmap for them; needs a model with an
        out-of-distribution detector (``clf.ood_detector_``).

    Returns
    -------
    fastapi.FastAPI

    Examples
    --------
    >>> from fastapi.testclient import TestClient
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32,
    ...                           max_epochs=1, random_state=0).fit(X, y)
    >>> client = TestClient(create_app(clf))
    >>> client.get("/health").json()["status"]
    'ok'
    >>> client.post("/predict").status_code  # no file: a clear 400
    400
    """
    if not max_upload_mb > 0:
        raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
    keep_dir = None
    if keep_uploads is not None:
        keep_dir = Path(keep_uploads)
        keep_dir.mkdir(parents=True, exist_ok=True)
    served = ServedModel(
        model_or_path, threshold=threshold, device=device, refuse_ood=refuse_ood
    )

    app = FastAPI(
        title="cxrkit serve",
        version=__version__,
        description=f"{served.model_id}. {INTENDED_USE}",
    )
    app.add_middleware(UploadLimit, max_bytes=int(max_upload_mb * 2**20))
    app.state.served = served

    @app.exception_handler(ClientError)
    async def client_error(request: Request, exc: ClientError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(
        request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse({"error": f"invalid request: {problems}"}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": f"{exc.detail}: {request.method} {request.url.path}"},
            exc.status_code,
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("error serving %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": "internal error (logged on the server); the server goes on"},
            500,
        )

    app.mount(
        "/static",
        StaticFiles(directory=resources.files("cxrkit.serve") / "static"),
        name="static",
    )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = (resources.files("cxrkit.serve") / "static" / "index.html").read_text()
        return HTMLResponse(html)

    @app.get("/health")
    def health() -> dict:
        """Whether the server is up, and which model it serves."""
        return {"status": "ok", "model_id": served.model_id}

    @app.get("/model")
    def model_card() -> dict:
        """The model card: what the model is, what it was trained on, when, with
        which cxrkit; its classes and operating threshold."""
        return served.card

    @app.post("/predict", openapi_extra=_UPLOAD_BODY)
    async def predict(
        request: Request,
        preview: bool = Query(False, description="add each image as decoded"),
    ) -> dict:
        """Class probabilities (in ``classes`` order) and the class called at
        the threshold, for each uploaded image."""
        start = time.perf_counter()
        decoded, decode_s = await _decoded(
            request, served, display=preview, keep_dir=keep_dir
        )
        infer_start = time.perf_counter()
        images = np.stack([d.image for d in decoded])
        proba, checks = await run_in_threadpool(served.assess, images)
        labels = served.labels(proba)
        infer_s = time.perf_counter() - infer_start
        results = []
        for d, p, label, check in zip(decoded, proba, labels.tolist(), checks):
            result = {
                "filename": d.filename,
                "probabilities": [round(float(x), 6) for x in p],
                "label": label,
                **check,
            }
            if check["refused"]:
                result.update(probabilities=None, label=None)
            if preview:
                encoded = base64.b64encode(png_bytes(d.display)).decode()
                result["preview"] = f"data:image/png;base64,{encoded}"
            results.append(result)
        return {
            "model_id": served.model_id,
            "classes": served.classes.tolist(),
            "positive_class": served.card["positive_class"],
            "threshold": served.threshold,
            "ood_threshold": (served.card["ood"] or {}).get("threshold"),
            "predictions": results,
            "timing_ms": {
                "decode": _ms(decode_s),
                "inference": _ms(infer_s),
                "total": _ms(time.perf_counter() - start),
            },
            "notice": INTENDED_USE,
        }

    @app.post("/explain", openapi_extra=_UPLOAD_BODY)
    async def explain(
        request: Request,
        format: Literal["png", "json"] = Query("png"),
        alpha: float = Query(0.5, ge=0, le=1, description="heatmap opacity"),
    ) -> Response:
        """Heatmaps of the class called for each image: ``format=png`` the
        heatmap over one image, ``format=json`` the heatmaps as numbers in
        [0, 1] at the model's input size."""
        start = time.perf_counter()
        decoded, _ = await _decoded(
            request, served, display=format == "png", keep_dir=keep_dir
        )
        if format == "png" and len(decoded) != 1:
            raise ClientError(
                400,
                f"format=png explains one image, got {len(decoded)}; send one "
                "file, or ask for format=json",
            )
        images = np.stack([d.image for d in decoded])
        proba, checks = await run_in_threadpool(served.assess, images)
        labels = served.labels(proba)
        refused = [c["refused"] for c in checks]
        if format == "png" and refused[0]:
            raise ClientError(422, f"{decoded[0].filename}: {refused[0]}")
        heatmaps = await run_in_threadpool(served.explain, images, labels)
        method = served.card["explanation"]
        caption = served.card["explanation_caption"]
        if format == "png":
            overlay = heatmap_overlay(decoded[0].display, heatmaps[0], alpha=alpha)
            return Response(
                png_bytes(overlay),
                media_type="image/png",
                headers={
                    "X-Model-Id": served.model_id,
                    "X-Explained-Class": str(labels[0]),
                    "X-Explanation-Method": method,
                    "X-Explanation-Caption": caption,
                },
            )
        return JSONResponse(
            {
                "model_id": served.model_id,
                "method": method,
                "method_caption": caption,
                "explanations": [
                    {
                        "filename": d.filename,
                        "label": None if why else label,
                        "shape": list(h.shape),
                        "heatmap": None if why else np.round(h, 4).tolist(),
                        "refused": why,
                    }
                    for d, label, h, why in zip(
                        decoded, labels.tolist(), heatmaps, refused
                    )
                ],
                "timing_ms": {"total": _ms(time.perf_counter() - start)},
                "notice": INTENDED_USE,
            }
        )

    return app
