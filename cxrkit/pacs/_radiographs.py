"""Which DICOM instances cxrkit reads as chest radiographs, and what it answers.

A DICOM node receives whatever a PACS routes to it. cxrkit reads:

* Computed Radiography (CR) and Digital X-Ray *for presentation* (DX)
  images. DX *for processing* is raw detector data, before the vendor's
  processing that makes a displayable film; a model trained on displayed
  films would read it wrongly, so it is not accepted;
* Secondary Capture (SC) images that say they are radiographs: Modality CR
  or DX (a film captured from another system), or Body Part Examined chest
  (a digitised film, as in the sample shipped with cxrkit).

An instance whose Body Part Examined is given and is not the chest is
refused, and so is one whose View Position is a lateral or oblique view
(the models are trained on frontal, AP or PA, films), and anything cxrkit
made itself (Manufacturer ``cxrkit``:
the heatmap captures it sends back). The refusal is a C-STORE failure status
with an Error Comment; the DICOM standard's status classes (PS3.4 Annex
B.2.3) are used as follows:

=========  =========================================================
``A700``   Refused, out of resources: the queue stayed full (retry)
``A900``   Not a chest radiograph (or several frames, no pixel data)
``C000``   Cannot understand: the pixel data cannot be decoded
=========  =========================================================
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydicom.dataset import Dataset

__all__ = [
    "ACCEPTED_SOP_CLASSES",
    "MANUFACTURER",
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_NOT_A_RADIOGRAPH",
    "STATUS_OUT_OF_RESOURCES",
    "NotARadiographError",
    "check_radiograph",
    "decodable_transfer_syntaxes",
    "instance_key",
]

#: SOP classes accepted, with their short name.
ACCEPTED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX for presentation",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: What cxrkit writes in Manufacturer; instances with it are never read.
MANUFACTURER = "cxrkit"
#: Words of Body Part Examined that mean the chest (upper case).
_CHEST_WORDS = ("CHEST", "THORAX", "LUNG")
#: Words of View Position that mean a lateral or oblique view: DICOM's
#: codes (PS3.3 C.8.11.5.1.1: LL, RL and the lateral obliques LLO, RLO)
#: and what some systems write instead (LATERAL, LAT, LEFT LATERAL, the
#: anterior and posterior obliques). A frontal film is AP or PA; a
#: decubitus film (LLD, RLD, "LATERAL DECUBITUS") is frontal too, and an
#: empty View Position is read, as many senders leave it empty.
_NOT_FRONTAL = frozenset(
    {"LL", "RL", "LLO", "RLO", "LAO", "RAO", "LPO", "RPO"}
    | {"LAT", "LATERAL", "LLAT", "RLAT", "OBLIQUE"}
)

STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_NOT_A_RADIOGRAPH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000


class NotARadiographError(ValueError):
    """An instance cxrkit does not read, with the C-STORE status to answer.

    Parameters
    ----------
    message : str
        What the instance is and why it is not read.
    status : int
        The DICOM status for a C-STORE response.
    """

    def __init__(self, message: str, status: int = STATUS_NOT_A_RADIOGRAPH) -> None:
        super().__init__(message)
        self.status = status


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip().upper()


def _is_chest(body_part: str) -> bool:
    return any(word in body_part for word in _CHEST_WORDS)


def check_radiograph(ds: Dataset) -> None:
    """Raise unless ``ds`` is a chest radiograph cxrkit reads.

    The header is checked, not the pixels (see the module ``_radiographs``
    of ``cxrkit.pacs`` for the rules).

    Parameters
    ----------
    ds : pydicom.Dataset
        An instance's data set (pixel data need not be loaded).

    Raises
    ------
    NotARadiographError
        With the message and the C-STORE ``status`` to answer.

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
    >>> ds.BodyPartExamined = "HAND"
    >>> check_radiograph(ds)
    Traceback (most recent call last):
    ...
    cxrkit.pacs._radiographs.NotARadiographError: body part HAND, not the chest
    >>> ds.BodyPartExamined = "CHEST"
    >>> check_radiograph(ds)  # no pixel data: only the header is checked
    """
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in ACCEPTED_SOP_CLASSES:
        raise NotARadiographError(
            f"SOP class {sop_class or '(none)'} is not a radiograph class "
            "cxrkit reads (CR, DX for presentation, Secondary Capture)"
        )
    if _text(ds, "Manufacturer") == MANUFACTURER.upper():
        raise NotARadiographError("an image cxrkit made (Manufacturer cxrkit)")
    body_part = _text(ds, "BodyPartExamined")
    if body_part and not _is_chest(body_part):
        raise NotARadiographError(f"body part {body_part}, not the chest")
    view = _text(ds, "ViewPosition")
    words = set(view.replace("_", " ").replace("-", " ").split())
    if words & _NOT_FRONTAL and "DECUBITUS" not in words:
        raise NotARadiographError(
            f"view position {view}, a lateral or oblique view: the model reads "
            "frontal (AP or PA) chest films"
        )
    if sop_class == _SECONDARY_CAPTURE:
        modality = _text(ds, "Modality")
        if modality not in ("CR", "DX") and not _is_chest(body_part):
            raise NotARadiographError(
                f"a secondary capture of modality {modality or '(none)'} without "
                "Body Part Examined CHEST: not known to be a chest radiograph"
            )
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise NotARadiographError("a damaged Number of Frames") from None
    if frames > 1:
        raise NotARadiographError(f"{frames} frames; a radiograph has one")


def instance_key(sop_instance_uid: Any) -> str:
    """The name cxrkit gives an instance on disk and in logs.

    The SHA-256 of its SOP Instance UID, in hex: the same instance always
    gets the same name (a repeated send replaces the copy), and the name
    says nothing about the patient.

    Examples
    --------
    >>> instance_key("1.2.3")[:16]
    'c47f5b18b8a430e6'
    """
    return hashlib.sha256(str(sop_instance_uid).strip().encode("ascii")).hexdigest()


def decodable_transfer_syntaxes() -> list[str]:
    """Transfer syntaxes whose pixel data this installation can decode.

    The uncompressed ones always; a compressed one when pydicom has a
    decoder for it here (Pillow: JPEG baseline and JPEG 2000; pyjpegls:
    JPEG-LS; numpy: RLE; JPEG Extended, usually 12-bit, only with
    pylibjpeg-libjpeg or GDCM, as Pillow reads 8 bits). A listener offers
    only these, so it never acknowledges an instance it cannot read.
    """
    from pydicom import uid
    from pydicom.pixels import get_decoder

    syntaxes = [
        uid.ExplicitVRLittleEndian,
        uid.ImplicitVRLittleEndian,
        uid.DeflatedExplicitVRLittleEndian,
        uid.ExplicitVRBigEndian,
    ]
    for syntax in (
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLosslessSV1,
        uid.JPEGLossless,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
        uid.JPEG2000Lossless,
        uid.JPEG2000,
        uid.RLELossless,
    ):
        try:
            plugins = set(get_decoder(syntax).available_plugins)
        except NotImplementedError:
            plugins = set()
        if syntax == uid.JPEGExtended12Bit:
            # Pillow reports itself available but decodes 8-bit samples
            # only, and this syntax's samples are often 12-bit: offered with
            # a decoder that reads them, else the sender has to send such a
            # film in a syntax offered
            plugins -= {"pillow"}
        if plugins:
            syntaxes.append(syntax)
    return syntaxes
