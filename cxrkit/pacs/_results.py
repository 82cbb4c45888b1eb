"""Results as DICOM: a Comprehensive SR per radiograph, and a heatmap capture.

Both are built with highdicom, which copies the patient and study modules
from the source instance, so that a PACS files them in the source's study.
Their UIDs are derived from the source's SOP Instance UID and the model
file's hash: the same model on the same instance always makes the same
result instance, so a result sent twice (after a restart) is stored once.

The report's content tree (codes: DCM, SNOMED CT, LOINC, UCUM; and cxrkit's
private scheme ``99CXRKIT`` where none of them has a concept)::

    CONTAINER  Diagnostic Imaging Report (LN 18748-4)
      HAS OBS CONTEXT  CODE Observer Type = Device
      HAS OBS CONTEXT  TEXT Device Observer Name = cxrkit
      CONTAINS  TEXT Summary: one line a person reads
      CONTAINS  CONTAINER Findings
        CONTAINS  CODE Finding = Pneumonia (SCT 233604007), Normal (SCT
                  17621005), or the class's name (99CXRKIT)
          HAS PROPERTIES  TEXT Class name = the model's class, as it names it
          INFERRED FROM  NUM Probability (DCM 122157), no units
            HAS PROPERTIES  TEXT Probability of class = PNEUMONIA
          INFERRED FROM  NUM Threshold Value (DCM 122411), no units
            HAS PROPERTIES  TEXT Threshold source
          INFERRED FROM  IMAGE Source image for image processing operation
        CONTAINS  NUM Out-of-distribution score (99CXRKIT)  [with a detector]
        CONTAINS  CODE Unlike the training images = Yes/No  [with a detector]
      CONTAINS  TEXT Algorithm Name, Algorithm Version, Algorithm Parameters
      CONTAINS  TEXT Model file SHA-256 (99CXRKIT)
      CONTAINS  TEXT Comment = the research-only statement

Both are encoded in UTF-8 (Specific Character Set ``ISO_IR 192``), whatever
the source's character set: they hold cxrkit's own text (class names, the
model file's name) beside the patient and study attributes copied from the
source, which are decoded from the source's character set first.

[`read_report`][cxrkit.pacs.read_report] reads it back.
"""

from __future__ import annotations

import copy
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxrkit._version import __version__
from cxrkit.explain import DEFAULT_METHOD
from cxrkit.pacs._model import RESEARCH_ONLY, Finding, ModelIdentity
from cxrkit.pacs._radiographs import MANUFACTURER
from cxrkit.plot import heatmap_overlay, method_title

__all__ = ["overlay_capture", "read_report", "result_uid", "structured_report"]

#: Series numbers of the results, high so that they list after the images.
SR_SERIES_NUMBER = 9901
OVERLAY_SERIES_NUMBER = 9902
#: Long side of the heatmap capture, in pixels: at most, and at least.
OVERLAY_SIZE = 1024
OVERLAY_MIN_SIZE = 512

_PRIVATE = "99CXRKIT"
_CLASS_NAME = Code("CLASS", _PRIVATE, "Class name")
_PROBABILITY_OF = Code("PROBOF", _PRIVATE, "Probability of class")
_THRESHOLD_SOURCE = Code("THRSRC", _PRIVATE, "Threshold source")
_MODEL_SHA256 = Code("SHA256", _PRIVATE, "Model file SHA-256")
_OOD_SCORE = Code("OODSCORE", _PRIVATE, "Out-of-distribution score")
_OOD_FLAG = Code("OOD", _PRIVATE, "Unlike the training images")
_YES = Code("373066001", "SCT", "Yes")
_NO = Code("373067005", "SCT", "No")
_KNOWN_FINDINGS = {
    "PNEUMONIA": Code("233604007", "SCT", "Pneumonia"),
    "NORMAL": codes.SCT.Normal,
}
_NO_UNITS = codes.UCUM.NoUnits
# The header keywords of the patient and study modules highdicom reads from
# the source (it needs them present; type 2: empty when unknown).
_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def result_uid(kind: str, *parts: Any) -> str:
    """A UID derived from ``kind`` and ``parts``: the same parts, the same UID.

    Examples
    --------
    >>> result_uid("sr", "1.2.3", "abc") == result_uid("sr", "1.2.3", "abc")
    True
    """
    return generate_uid(entropy_srcs=["cxrkit", kind, *map(str, parts)])


#: The results' Specific Character Set: UTF-8, which holds any text.
RESULT_CHARACTER_SET = "ISO_IR 192"


def _evidence(source: Dataset) -> Dataset:
    """A decoded copy of the source's header, with empty type-2 attributes
    where it has none.

    Every text value, in sequence items too, is decoded from the source's
    character set here (pydicom leaves an item's values as the bytes read
    until asked for them): highdicom copies them into the results, which are
    written in UTF-8, and bytes copied as read would keep the source's
    encoding under the results' declaration.
    """
    header = Dataset()
    for element in source:
        if element.keyword != "PixelData":
            header.add(copy.deepcopy(element))
    header.decode()
    header.file_meta = getattr(source, "file_meta", Dataset())
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def _finding_code(label: str) -> Code:
    known = _KNOWN_FINDINGS.get(label.upper())
    if known is not None:
        return known
    value = "C" + result_uid("class", label).rsplit(".", 1)[-1][-15:]
    return Code(value, _PRIVATE, label[:64])


def _summary(finding: Finding, identity: ModelIdentity) -> str:
    text = f"{finding.label}: P({finding.probability_of}) = {finding.probability:.3f}"
    if finding.threshold is not None:
        text += f", threshold {finding.threshold:.3f} ({finding.threshold_source})"
    if finding.ood:
        text += "; the image is unlike the model's training images"
    return f"{text}. Model {identity.name} ({identity.architecture}). {RESEARCH_ONLY}"


def _text(name: Code, value: str, relationship: str = "CONTAINS") -> Any:
    return hd.sr.TextContentItem(name, value, relationship_type=relationship)


def _number(name: Code, value: float, note: Any) -> Any:
    item = hd.sr.NumContentItem(
        name, float(value), _NO_UNITS, relationship_type="INFERRED FROM"
    )
    item.ContentSequence = [note]
    return item


def _content(source: Dataset, finding: Finding, identity: ModelIdentity) -> Any:
    finding_item = hd.sr.CodeContentItem(
        codes.DCM.Finding,
        _finding_code(finding.label),
        relationship_type="CONTAINS",
    )
    evidence = [
        _text(_CLASS_NAME, finding.label, "HAS PROPERTIES"),
        _number(
            codes.DCM.Probability,
            finding.probability,
            _text(_PROBABILITY_OF, finding.probability_of, "HAS PROPERTIES"),
        ),
    ]
    if finding.threshold is not None:
        evidence.append(
            _number(
                codes.DCM.ThresholdValue,
                finding.threshold,
                _text(_THRESHOLD_SOURCE, finding.threshold_source, "HAS PROPERTIES"),
            )
        )
    evidence.append(
        hd.sr.ImageContentItem(
            codes.DCM.SourceImageForImageProcessingOperation,
            source.SOPClassUID,
            source.SOPInstanceUID,
            relationship_type="INFERRED FROM",
        )
    )
    finding_item.ContentSequence = evidence
    findings = hd.sr.ContainerContentItem(
        codes.DCM.Findings, relationship_type="CONTAINS"
    )
    findings.ContentSequence = [finding_item]
    if finding.ood_score is not None:
        findings.ContentSequence.append(
            hd.sr.NumContentItem(
                _OOD_SCORE, finding.ood_score, _NO_UNITS, relationship_type="CONTAINS"
            )
        )
        findings.ContentSequence.append(
            hd.sr.CodeContentItem(
                _OOD_FLAG, _YES if finding.ood else _NO, relationship_type="CONTAINS"
            )
        )
    root = hd.sr.ContainerContentItem(
        codes.LN.DiagnosticImagingReport, is_content_continuous=False
    )
    root.ContentSequence = [
        hd.sr.CodeContentItem(
            codes.DCM.ObserverType,
            codes.DCM.Device,
            relationship_type="HAS OBS CONTEXT",
        ),
        _text(codes.DCM.DeviceObserverName, MANUFACTURER, "HAS OBS CONTEXT"),
        _text(codes.DCM.Summary, _summary(finding, identity)),
        findings,
        _text(codes.DCM.AlgorithmName, identity.name),
        _text(codes.DCM.AlgorithmVersion, identity.version),
        _text(
            codes.DCM.AlgorithmParameters,
            f"architecture={identity.architecture}; image_size={identity.image_size}",
        ),
        _text(_MODEL_SHA256, identity.sha256),
        _text(codes.DCM.Comment, RESEARCH_ONLY),
    ]
    return root


def _placement(
    kind: str,
    series_number: int,
    source: Dataset,
    finding: Finding,
    identity: ModelIdentity,
) -> dict[str, Any]:
    """Series and instance of a result: one series per study, model and kind;
    the instance's UID fixed by the source, the model and the threshold."""
    return {
        "series_instance_uid": result_uid(
            f"{kind}-series", source.StudyInstanceUID, identity.sha256
        ),
        "series_number": series_number,
        "sop_instance_uid": result_uid(
            kind, source.SOPInstanceUID, identity.sha256, finding.threshold
        ),
        "instance_number": int(source.get("InstanceNumber") or 1),
    }


def _result_header(identity: ModelIdentity) -> dict[str, Any]:
    return {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": identity.name[:64],
        "software_versions": f"cxrkit {__version__}",
    }


def structured_report(
    source: Dataset, finding: Finding, identity: ModelIdentity
) -> hd.sr.ComprehensiveSR:
    """A Comprehensive SR of one finding, in the source's study.

    Parameters
    ----------
    source : pydicom.Dataset
        The radiograph (its header is enough): the report references it
        and copies its patient and study modules.
    finding : Finding
    identity : ModelIdentity

    Returns
    -------
    highdicom.sr.ComprehensiveSR
        A pydicom ``Dataset``; its content is described in the module
        ``_results`` of ``cxrkit.pacs``. Unverified and preliminary
        (``VerificationFlag`` UNVERIFIED, ``PreliminaryFlag``
        PRELIMINARY): no person has read it. Encoded in UTF-8 (Specific
        Character Set ``ISO_IR 192``), whatever the source's.
    """
    evidence = _evidence(source)
    report = hd.sr.ComprehensiveSR(
        evidence=[evidence],
        content=_content(evidence, finding, identity),
        **_placement("sr", SR_SERIES_NUMBER, source, finding, identity),
        is_complete=True,
        series_description="cxrkit result (research use only)",
        **_result_header(identity),
    )
    # highdicom copies the source's character set (or none), but the report
    # holds cxrkit's text too (class names, the model file's name): UTF-8
    # encodes both; the copied values are str, re-encoded when written.
    report.SpecificCharacterSet = RESULT_CHARACTER_SET
    return report


def _caption_font(width: int) -> Any:
    try:
        return ImageFont.load_default(size=max(10, width // 36))
    except TypeError:  # Pillow without FreeType: the bitmap font, one size
        return ImageFont.load_default()


def _display(image: np.ndarray) -> Image.Image:
    """The image with its long side between the capture's bounds."""
    display = Image.fromarray(image)
    long_side = max(display.size)
    if long_side < OVERLAY_MIN_SIZE:  # room for legible text
        scale = OVERLAY_MIN_SIZE / long_side
        size = (round(display.width * scale), round(display.height * scale))
        return display.resize(size, Image.Resampling.BILINEAR)
    display.thumbnail((OVERLAY_SIZE, OVERLAY_SIZE))
    return display


def _render_overlay(
    image: np.ndarray, heatmap: np.ndarray, finding: Finding
) -> np.ndarray:
    """The heatmap over the image, with the call burned in above it."""
    rgb = heatmap_overlay(np.asarray(_display(image)), heatmap)
    height, width = rgb.shape[:2]
    font = _caption_font(width)
    lines = [
        f"cxrkit: {finding.label}",
        f"P({finding.probability_of}) = {finding.probability:.2f}",
    ]
    if finding.threshold is not None:
        lines[-1] += f", threshold {finding.threshold:.2f}"
    if finding.ood:
        lines.append("Unlike the training images: caution")
    lines += [
        f"Heatmap: {method_title(DEFAULT_METHOD)}",
        "What the model used, not where disease is",
        "Research use only; not for diagnosis",
    ]
    line_height = int(font.getbbox("Ag")[3] * 1.3) + 2
    band = line_height * len(lines) + 6
    canvas = Image.new("RGB", (width, height + band))
    canvas.paste(Image.fromarray(rgb), (0, band))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((4, 3 + k * line_height), line, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def overlay_capture(
    source: Dataset,
    image: np.ndarray,
    heatmap: np.ndarray,
    finding: Finding,
    identity: ModelIdentity,
) -> hd.sc.SCImage:
    """A Secondary Capture of the heatmap over the radiograph, for any viewer.

    The image (512 to 1024 pixels on its long side) with the heatmap in
    colour over it, and a band above it with the call, the probability,
    the threshold and the research-only statement burned in
    (``BurnedInAnnotation`` YES). It references the source instance
    (Source Image Sequence) and is filed in the source's study.

    Parameters
    ----------
    source : pydicom.Dataset
        The radiograph's header.
    image : ndarray of shape (H, W), dtype uint8
        The radiograph as cxrkit reads it (bone bright).
    heatmap : ndarray of shape (h, w)
        Values in [0, 1], any resolution (resized to the image).
    finding : Finding
    identity : ModelIdentity

    Returns
    -------
    highdicom.sc.SCImage
        An RGB Secondary Capture (a pydicom ``Dataset``), encoded in UTF-8
        (Specific Character Set ``ISO_IR 192``).
    """
    evidence = _evidence(source)
    pixels = _render_overlay(image, heatmap, finding)
    orientation = source.get("PatientOrientation")
    capture = hd.sc.SCImage.from_ref_dataset(
        evidence,
        pixels,
        "RGB",
        8,
        "PATIENT",
        **_placement("sc", OVERLAY_SERIES_NUMBER, source, finding, identity),
        # highdicom takes single-letter orientations only; the source's own
        # value (combined letters such as "FL", or empty) is set below.
        patient_orientation=("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description="cxrkit heatmap (research use only)",
        **_result_header(identity),
    )
    capture.SpecificCharacterSet = RESULT_CHARACTER_SET  # as in the report
    capture.PatientOrientation = orientation if orientation else ""
    capture.BurnedInAnnotation = "YES"
    capture.DerivationDescription = (
        f"{method_title(DEFAULT_METHOD)} heatmap of {identity.name} over the "
        "source image"
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    capture.SourceImageSequence = [reference]
    capture.ImageComments = RESEARCH_ONLY
    return capture


# ------------------------------------------------------------------ reading
def _concept(item: Dataset) -> tuple[str, str]:
    name = item.ConceptNameCodeSequence[0]
    return str(name.CodingSchemeDesignator), str(name.CodeValue)


def _walk(items: Any) -> Any:
    for item in items or ():
        yield item
        yield from _walk(item.get("ContentSequence"))


def _key(code: Code) -> tuple[str, str]:
    return code.scheme_designator, code.value


def _number_of(item: Dataset) -> float:
    measured = item.MeasuredValueSequence[0]
    if "FloatingPointValue" in measured:
        return float(measured.FloatingPointValue)
    return float(measured.NumericValue)


def read_report(report: Dataset) -> dict[str, Any]:
    """What a cxrkit structured report says, as a dict.

    Parameters
    ----------
    report : pydicom.Dataset
        An SR made by [`structured_report`][cxrkit.pacs.structured_report]
        (read from a PACS or a file).

    Returns
    -------
    dict
        ``label``, ``probability``, ``probability_of``, ``threshold`` (None
        without one), ``threshold_source``, ``ood_score`` and ``ood`` (None
        without a detector), ``source_sop_class_uid``,
        ``source_sop_instance_uid``, ``model_name``, ``model_version``,
        ``model_sha256``, ``statement``.

    Raises
    ------
    ValueError
        The data set is not a cxrkit report (no finding or no probability).
    """
    out: dict[str, Any] = dict.fromkeys(
        (
            "label",
            "probability",
            "probability_of",
            "threshold",
            "threshold_source",
            "ood_score",
            "ood",
            "source_sop_class_uid",
            "source_sop_instance_uid",
            "model_name",
            "model_version",
            "model_sha256",
            "statement",
        )
    )
    texts = {
        _key(_CLASS_NAME): "label",
        _key(_PROBABILITY_OF): "probability_of",
        _key(_THRESHOLD_SOURCE): "threshold_source",
        _key(codes.DCM.AlgorithmName): "model_name",
        _key(codes.DCM.AlgorithmVersion): "model_version",
        _key(_MODEL_SHA256): "model_sha256",
        _key(codes.DCM.Comment): "statement",
    }
    for item in _walk(report.get("ContentSequence")):
        if "ConceptNameCodeSequence" not in item:
            continue
        concept = _concept(item)
        kind = item.ValueType
        if kind == "TEXT" and concept in texts:
            out[texts[concept]] = str(item.TextValue)
        elif kind == "NUM" and concept == _key(codes.DCM.Probability):
            out["probability"] = _number_of(item)
        elif kind == "NUM" and concept == _key(codes.DCM.ThresholdValue):
            out["threshold"] = _number_of(item)
        elif kind == "NUM" and concept == _key(_OOD_SCORE):
            out["ood_score"] = _number_of(item)
        elif kind == "CODE" and concept == _key(_OOD_FLAG):
            out["ood"] = str(item.ConceptCodeSequence[0].CodeValue) == _YES.value
        elif kind == "IMAGE":
            sop = item.ReferencedSOPSequence[0]
            out["source_sop_class_uid"] = str(sop.ReferencedSOPClassUID)
            out["source_sop_instance_uid"] = str(sop.ReferencedSOPInstanceUID)
    if out["label"] is None or out["probability"] is None:
        raise ValueError(
            "the data set is not a cxrkit structured report (no finding or no "
            "probability in its content); read reports that cxrkit listen or "
            "cxrkit pacs made"
        )
    return out
