"""PACS integration: cxrkit as a DICOM node and as a DICOMweb client.

* [`Listener`][cxrkit.pacs.Listener] (``cxrkit listen``): a DICOM Storage
  SCP that accepts chest radiographs (CR, DX, Secondary Capture of a
  radiograph), classifies each with the model's operating threshold, and
  sends a structured report (and optionally a heatmap capture) to a PACS by
  C-STORE or STOW-RS. What it acknowledges is on disk first; it resumes
  after a stop or a crash.
* [`process_dicomweb`][cxrkit.pacs.process_dicomweb] (``cxrkit pacs``):
  query a DICOMweb server (QIDO-RS), fetch the radiographs (WADO-RS),
  predict, store the results back (STOW-RS).
* [`structured_report`][cxrkit.pacs.structured_report],
  [`overlay_capture`][cxrkit.pacs.overlay_capture] and
  [`read_report`][cxrkit.pacs.read_report]: the result instances, built
  with highdicom.

Needs ``pip install "cxrkit[pacs]"`` (pynetdicom, pydicom, highdicom,
dicomweb-client). Patient identifiers never go into logs unless asked for
(``log_identifiers``); instances are named by the SHA-256 of their SOP
Instance UID. For research and education only; not a medical device.
"""

try:
    import dicomweb_client  # noqa: F401
    import highdicom  # noqa: F401
    import pydicom  # noqa: F401
    import pynetdicom  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"cxrkit.pacs needs pynetdicom, pydicom, highdicom and dicomweb-client "
        f'({exc}): pip install "cxrkit[pacs]"'
    ) from exc

from cxrkit.pacs._conversion import image_to_dicom
from cxrkit.pacs._destinations import (
    DeliveryError,
    DicomNode,
    DicomwebDestination,
    DimseDestination,
    FolderDestination,
    parse_dicom_node,
)
from cxrkit.pacs._dicomweb import DicomwebResult, process_dicomweb, results_table
from cxrkit.pacs._listener import Listener, ListenerStats, listen
from cxrkit.pacs._model import RESEARCH_ONLY, Finding, ModelIdentity, ReportingModel
from cxrkit.pacs._orthanc import LocalOrthanc
from cxrkit.pacs._radiographs import (
    ACCEPTED_SOP_CLASSES,
    NotARadiographError,
    check_radiograph,
    instance_key,
)
from cxrkit.pacs._results import overlay_capture, read_report, structured_report
from cxrkit.pacs._tls import client_tls_context, server_tls_context

__all__ = [
    "ACCEPTED_SOP_CLASSES",
    "RESEARCH_ONLY",
    "DeliveryError",
    "DicomNode",
    "DicomwebDestination",
    "DicomwebResult",
    "DimseDestination",
    "Finding",
    "FolderDestination",
    "Listener",
    "ListenerStats",
    "LocalOrthanc",
    "ModelIdentity",
    "NotARadiographError",
    "ReportingModel",
    "check_radiograph",
    "client_tls_context",
    "image_to_dicom",
    "instance_key",
    "listen",
    "overlay_capture",
    "parse_dicom_node",
    "process_dicomweb",
    "read_report",
    "results_table",
    "server_tls_context",
    "structured_report",
]
