"""Uploaded files: the size limit, the form, and decoding into images.

Nothing an uploader sends is written under a name they chose: each upload is
copied to a temporary file with a random name (deleted after decoding), so
that the library's readers (``cxrkit.images.read_image``, which reads DICOM
through ``cxrkit.images._dicom``) decode it with their checks and messages. With
``keep_dir``, a copy is kept as ``<sha256 of the content><ending>``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from cxrkit.images._reading import is_dicom_file, read_image
from cxrkit.persistence._provenance import file_sha256
from cxrkit.serve._errors import ClientError, error_body

__all__ = [
    "DecodedUpload",
    "UploadLimit",
    "decode_upload",
    "uploaded_files",
]

FIELD = "file"
_HOW = (
    f"send each image as a multipart/form-data field named {FIELD!r} "
    f"(curl -F {FIELD}=@image.png URL)"
)


class _TooLarge(Exception):
    pass


class UploadLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` as it arrives.

    A ``Content-Length`` over the limit is refused before any of the body is
    read; a body without one (chunked) is counted chunk by chunk and refused
    at the first chunk over the limit, so an oversized upload is never
    buffered whole. The refusal is a 413 JSON error.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        refused = False

        async def counted_receive() -> dict:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    raise _TooLarge
            return message

        async def send_unless_refused(message: dict) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted_receive, send_unless_refused)
        except Exception:
            if not refused:
                raise
        if refused:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        mb = self.max_bytes / 2**20
        body = error_body(
            f"the request body is over this server's upload limit of {mb:g} MB "
            "(cxrkit serve --max-upload-mb); send smaller files, or fewer at once"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _check_filename(name: str | None) -> str:
    """The upload's name, for responses; refused if it holds path components."""
    if not name:
        return "upload"
    if "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
        raise ClientError(
            400,
            f"the filename {name!r} has path components; send the file's name only "
            "(e.g. image.png). Uploads are never written under the name sent.",
        )
    return name


async def uploaded_files(request: Request, *, max_files: int) -> list[UploadFile]:
    """The files of the ``file`` field(s) of a multipart request.

    The caller closes them (``await file.close()``). Raises ``ClientError``
    for a request without them, with a message that says what to send.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if request.headers.get("content-length", "0") == "0" and not content_type:
            raise ClientError(400, f"the request body is empty; {_HOW}")
        raise ClientError(
            400,
            f"the request is {content_type or 'not multipart'}, not "
            f"multipart/form-data; {_HOW}",
        )
    try:
        form = await request.form(max_files=max_files, max_fields=max_files)
    except MultiPartException as exc:
        raise ClientError(
            400, f"the multipart body is malformed ({exc}); {_HOW}"
        ) from None
    files = form.getlist(FIELD)
    if not files:
        others = sorted(set(form.keys()))
        await form.close()
        got = f"it has fields {others}" if others else "the form is empty"
        raise ClientError(400, f"no field named {FIELD!r} in the form ({got}); {_HOW}")
    if any(not isinstance(f, UploadFile) for f in files):
        await form.close()
        raise ClientError(400, f"the field {FIELD!r} holds text, not a file; {_HOW}")
    try:
        for f in files:
            _check_filename(f.filename)
    except ClientError:
        await form.close()
        raise
    return files


@dataclass
class DecodedUpload:
    """One upload, decoded.

    Attributes
    ----------
    filename : str
        The name it was sent with (never used as a path).
    image : ndarray of shape (size, size), dtype uint8
        As the model reads it.
    display : ndarray of shape (h, w), dtype uint8 or None
        The whole image, at most ``display_size`` pixels on its long side,
        aspect kept (when asked for).
    """

    filename: str
    image: np.ndarray
    display: np.ndarray | None = None


def _dicom_pixels(path: str) -> int | None:
    """Rows x Columns x frames of a DICOM file's header, or None.

    The header only (``stop_before_pixels``): a server refuses a huge image
    before decoding it, as it does a PNG or JPEG (``read_image`` allows
    twice Pillow's limit). None when it is not DICOM or has no such header:
    ``read_image`` then says what is wrong.
    """
    if not is_dicom_file(path):
        return None
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        return int(ds.Rows) * int(ds.Columns) * max(frames, 1)
    except Exception:  # no pydicom, a damaged header: read_image says so
        return None


def _check_pixels(path: str, filename: str) -> None:
    """Refuse images over Pillow's decompression-bomb limit before decoding.

    ``read_image`` refuses twice the limit (Pillow's error) and decodes what
    lies between with a warning; a server refuses it all, from the header:
    Pillow's for the formats it knows, the DICOM header otherwise (whatever
    the file is named). A Deflated DICOM is inflated to read its header.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if not limit:
        return
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:  # over twice the limit
        size = str(exc).split(" exceeds")[0]
    except Exception:  # not an image Pillow knows: DICOM, or read_image says
        pixels = _dicom_pixels(path)
        if pixels is None or pixels <= limit:
            return
        size = f"{pixels} pixels"
    else:
        if width * height <= limit:
            return
        size = f"{width}x{height} pixels"
    raise ClientError(
        422,
        f"{filename}: the image is too large ({size}): over the decompression-bomb "
        f"limit of {limit} pixels; send a smaller image",
    )


def _ending(path: str) -> str:
    if is_dicom_file(path):
        return ".dcm"
    try:
        with Image.open(path) as img:
            return "." + (img.format or "bin").lower()
    except Exception:
        return ".bin"


def _keep(path: str, keep_dir: Path) -> None:
    target = keep_dir / f"{file_sha256(path)}{_ending(path)}"
    if not target.exists():
        shutil.copyfile(path, target)


def decode_upload(
    upload: UploadFile,
    size: int,
    *,
    display_size: int | None = None,
    keep_dir: Path | None = None,
) -> DecodedUpload:
    """Decode one upload (blocking: call it from a worker thread).

    Raises ``ClientError`` (400/415/422) naming the upload when it is empty,
    not an image, truncated, a decompression bomb, a DICOM without pixel
    data, or a DICOM this server cannot decode.
    """
    filename = _check_filename(upload.filename)
    # Only a DICOM ending is taken from the name (files without the DICM
    # preamble are recognised by it); everything else comes from the content.
    suffix = ".dcm" if filename.lower().endswith((".dcm", ".dicom")) else ""
    with tempfile.NamedTemporaryFile(prefix="cxrkit-upload-", suffix=suffix) as tmp:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, tmp)
        tmp.flush()
        if tmp.tell() == 0:
            raise ClientError(400, f"{filename} is empty (0 bytes); {_HOW}")
        if keep_dir is not None:
            _keep(tmp.name, keep_dir)
        try:
            # by content, not by name: a PNG sent as x.dcm is checked too
            _check_pixels(tmp.name, filename)
            image = read_image(tmp.name, size=size)
            display = None
            if display_size:
                full = Image.fromarray(read_image(tmp.name))
                full.thumbnail((display_size, display_size))
                display = np.asarray(full)
        except ImportError as exc:
            raise ClientError(
                415,
                f"{filename}: this server cannot decode it: "
                + str(exc).replace(tmp.name, filename),
            ) from None
        except (OSError, ValueError) as exc:
            message = str(exc).replace(tmp.name, filename)
            if "decompression" in message:
                message = (
                    f"{filename}: the image is too large: over the "
                    f"decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels; "
                    "send a smaller image"
                )
            raise ClientError(422, message) from None
    return DecodedUpload(filename, image, display)
