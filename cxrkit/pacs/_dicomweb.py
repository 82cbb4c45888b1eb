"""The DICOMweb client: find studies (QIDO-RS), fetch (WADO-RS), report (STOW-RS)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from cxrkit.pacs._destinations import DeliveryError, DicomwebDestination
from cxrkit.pacs._model import Finding, ReportingModel
from cxrkit.pacs._radiographs import (
    ACCEPTED_SOP_CLASSES,
    NotARadiographError,
    check_radiograph,
    instance_key,
)
from cxrkit.pacs._reporting import Reporter

__all__ = ["DicomwebResult", "process_dicomweb", "results_table"]

_log = logging.getLogger("cxrkit.pacs")

# DICOM JSON tags (PS3.18 F.2) of the attributes read from QIDO-RS answers.
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_SOP_CLASS = "00080016"
_MODALITY = "00080060"


def _value(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value")
    return str(values[0]) if values else None


@dataclass(frozen=True)
class DicomwebResult:
    """The outcome for one instance found on a DICOMweb server.

    Attributes
    ----------
    key : str
        The hash of the SOP Instance UID (names the instance without
        identifying anyone).
    study_instance_uid, series_instance_uid, sop_instance_uid : str
        Where it is on the server (identifiers: do not log them unless asked).
    finding : Finding or None
        None when the instance could not be reported (see ``error``).
    stored : list of str
        SOP Instance UIDs of the results stored back (empty with
        ``store=False``).
    error : str or None
        Why it was not reported (or its results not stored), in words free
        of identifiers; None when it was.
    """

    key: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    finding: Finding | None
    stored: tuple[str, ...] = ()
    error: str | None = None


#: Results asked for per QIDO-RS request.
_PAGE = 100


def _search_all(
    search: Any, key: str, *, limit: int | None = None, **kwargs: Any
) -> list[dict[str, Any]]:
    """All matches of a QIDO-RS search, page by page, once each.

    Paging stops at an empty page, or at a page with nothing new. A page
    shorter than asked for is not the last one: a server may answer fewer
    results than ``limit`` (its own maximum, PS3.18 8.3.4.4.1) while more
    remain. Some servers ignore ``offset`` for some filters (Orthanc 1.10's
    DICOMweb plugin with ``ModalitiesInStudy``) and answer every page with
    the first results again, which would make dicomweb-client's
    ``get_remaining`` loop for ever: such a page has nothing new.
    """
    found: dict[str, dict[str, Any]] = {}
    offset = 0
    while limit is None or len(found) < limit:
        page = search(limit=_PAGE, offset=offset, **kwargs)
        new = {_value(item, key): item for item in page} if page else {}
        new = {uid: item for uid, item in new.items() if uid and uid not in found}
        found.update(new)
        if not new:
            break
        offset += len(page)
    items = list(found.values())
    return items if limit is None else items[:limit]


def _search_filters(
    study_date: str | None, modality: str | None, accession_number: str | None
) -> dict[str, str]:
    filters = {}
    if study_date:
        filters["StudyDate"] = study_date
    if modality:
        filters["ModalitiesInStudy"] = modality
    if accession_number:
        filters["AccessionNumber"] = accession_number
    return filters


def _radiograph_instances(
    client: Any, studies: list[str], modality: str | None
) -> Iterator[tuple[str, str, str]]:
    """(study, series, instance) UIDs of the radiographs of ``studies``."""
    for study in studies:
        for series in _search_all(
            client.search_for_series, _SERIES_UID, study_instance_uid=study
        ):
            series_uid = _value(series, _SERIES_UID)
            series_modality = _value(series, _MODALITY)
            if series_uid is None or series_modality == "SR":
                continue
            if modality and series_modality != modality:
                continue
            for instance in _search_all(
                client.search_for_instances,
                _SOP_UID,
                study_instance_uid=study,
                series_instance_uid=series_uid,
            ):
                sop_uid = _value(instance, _SOP_UID)
                if sop_uid and _value(instance, _SOP_CLASS) in ACCEPTED_SOP_CLASSES:
                    yield study, series_uid, sop_uid


def process_dicomweb(
    model: Any,
    url: str,
    *,
    study_date: str | None = None,
    modality: str | None = None,
    accession_number: str | None = None,
    study_instance_uid: str | None = None,
    limit: int | None = None,
    store: bool = True,
    overlay: bool = False,
    threshold: float | None = None,
    batch_size: int = 16,
    client: Any = None,
    device: str = "auto",
) -> list[DicomwebResult]:
    """Find radiographs on a DICOMweb server, predict, and store the results back.

    Studies are searched with QIDO-RS (by date, modality, accession number
    or Study Instance UID), their radiographs fetched with WADO-RS (only
    the classes a listener accepts: CR, DX for presentation, Secondary
    Capture of a radiograph), read by the model, and the structured report
    (and the heatmap capture, with ``overlay``) of each is stored with
    STOW-RS, exactly as [`Listener`][cxrkit.pacs.Listener] makes them: the
    same model on the same instance gives the same result instance.

    Needs ``pip install "cxrkit[pacs]"``. Fetched instances are written to a
    temporary folder only while they are read, named by the hash of their
    SOP Instance UID, and deleted afterwards.

    Parameters
    ----------
    model : PneumoniaClassifier, str, path-like or ReportingModel
        A fitted classifier or a model file.
    url : str
        The DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
    study_date : str, optional
        A DICOM date or range: ``20240131``, ``20240101-20240131``.
    modality : str, optional
        Studies with a series of this modality (``CR``, ``DX``), and only
        those series.
    accession_number, study_instance_uid : str, optional
        One study.
    limit : int, optional
        At most this many studies.
    store : bool, default=True
        Store the results back (STOW-RS); False only predicts.
    overlay : bool, default=False
        Also make a heatmap Secondary Capture per instance.
    threshold : float, optional
        Override the model's operating threshold (two classes).
    batch_size : int, default=16
        Instances predicted together.
    client : dicomweb_client.DICOMwebClient, optional
        A client made beforehand (authentication, TLS, headers).
    device : str, default="auto"
        Where a model file's weights go.

    Returns
    -------
    list of DicomwebResult
        One per radiograph found, in the server's order. One that could not
        be reported has a finding of None (or, when its results were
        refused, its finding) and an ``error`` that says why, in words free
        of identifiers: it could not be retrieved (WADO-RS: ``HTTP 404``
        when it was deleted since the search, ``HTTP 406`` when the server
        cannot send it in a transfer syntax asked for, or the server could
        not be reached), it is not a chest radiograph cxrkit reads, it could
        not be read, or the server refused its results. Such an instance
        does not stop the others.

    Raises
    ------
    ValueError
        No search criterion: give at least one, so that a whole archive is
        never processed by accident.
    DeliveryError
        Storing results failed for a reason that may pass (the server could
        not be reached, or asked to try later): the run stops there rather
        than predict what it cannot store. The results stored before stay
        on the server; running again stores the same result instances (their
        UIDs are derived from the radiograph and the model), once.
    """
    from dicomweb_client import DICOMwebClient

    filters = _search_filters(study_date, modality, accession_number)
    if not filters and not study_instance_uid:
        raise ValueError(
            "no search criterion: give study_date, modality, accession_number "
            "or study_instance_uid (on the command line: --date, --modality, "
            "--accession or --study), so that a whole archive is never "
            "processed by accident"
        )
    if not isinstance(model, ReportingModel):
        model = ReportingModel(model, threshold=threshold, device=device)
    client = client if client is not None else DICOMwebClient(url)
    if study_instance_uid:
        studies = [study_instance_uid]
    else:
        found = _search_all(
            client.search_for_studies, _STUDY_UID, limit=limit, search_filters=filters
        )
        studies = [_value(study, _STUDY_UID) for study in found]
    _log.info("%d study(ies) found on %s", len(studies), url)
    instances = list(_radiograph_instances(client, studies, modality))
    destination = DicomwebDestination(url, client=client) if store else None
    reporter = Reporter(model, overlay=overlay)
    results: list[DicomwebResult] = []
    with tempfile.TemporaryDirectory(prefix="cxrkit-dicomweb-") as folder:
        for start in range(0, len(instances), batch_size):
            chunk = instances[start : start + batch_size]
            fetched = [
                _fetch(client, *uids, Path(folder) / f"{instance_key(uids[2])}.dcm")
                for uids in chunk
            ]
            reports = iter(
                reporter.report_files([p for p, _ in fetched if p is not None])
            )
            for uids, (path, error) in zip(chunk, fetched):
                if path is None:
                    results.append(
                        DicomwebResult(instance_key(uids[2]), *uids, None, error=error)
                    )
                    continue
                report = next(reports)
                path.unlink(missing_ok=True)
                results.append(_outcome(uids, report, destination))
    return results


def _why(exc: Exception) -> str:
    """An exception in words free of identifiers (a request's URL has UIDs)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return f"HTTP {status}" if status is not None else type(exc).__name__


def _fetch(
    client: Any, study: str, series: str, sop: str, path: Path
) -> tuple[Path | None, str | None]:
    """Retrieve one instance to ``path``: ``(path, None)``, or ``(None, why)``.

    Any failure is this instance's only: a bad instance does not stop the
    others, as in ``Reporter.report_files``.
    """
    key = instance_key(sop)[:16]

    def failed(error: str) -> tuple[None, str]:
        _log.error("instance %s not reported: %s", key, error)
        return None, error

    try:
        ds: Dataset = client.retrieve_instance(study, series, sop)
    except Exception as exc:  # HTTP errors, the connection, the payload
        return failed(f"could not retrieve the instance ({_why(exc)})")
    try:
        check_radiograph(ds)
    except NotARadiographError as exc:
        _log.info("instance %s skipped: %s", key, exc)
        return None, "not a chest radiograph cxrkit reads"
    except Exception as exc:  # a damaged element in the header
        return failed(f"the header cannot be decoded ({type(exc).__name__})")
    try:
        ds.save_as(path, enforce_file_format=True)
    except Exception as exc:  # a data set pydicom cannot write, a full disk
        path.unlink(missing_ok=True)
        return failed(f"could not write the instance ({type(exc).__name__})")
    return path, None


def _outcome(
    uids: tuple[str, str, str], report: Any, destination: Any
) -> DicomwebResult:
    key = instance_key(uids[2])
    if report.error is not None:
        _log.error("instance %s not reported: %s", key[:16], report.error)
        return DicomwebResult(key, *uids, report.finding, error=report.error)
    stored: tuple[str, ...] = ()
    if destination is not None:
        try:
            destination.store(report.results)
        except DeliveryError as exc:
            if exc.transient:
                raise
            _log.error("instance %s: results refused: %s", key[:16], exc)
            return DicomwebResult(key, *uids, report.finding, error=str(exc))
        stored = tuple(str(ds.SOPInstanceUID) for ds in report.results)
    finding = report.finding
    _log.info(
        "instance %s: %s, P(%s)=%.3f; %d result(s) stored",
        key[:16],
        finding.label,
        finding.probability_of,
        finding.probability,
        len(stored),
    )
    return DicomwebResult(key, *uids, finding, stored)


def results_table(
    results: list[DicomwebResult], *, identifiers: bool = False
) -> list[dict[str, Any]]:
    """One row per result, for a CSV file: the call, never identifiers unless asked.

    Parameters
    ----------
    results : list of DicomwebResult
    identifiers : bool, default=False
        Add the Study and SOP Instance UIDs.

    Returns
    -------
    list of dict
        ``instance`` (the hash of the SOP Instance UID), then, with
        ``identifiers``, ``study_instance_uid`` and ``sop_instance_uid``;
        ``label``, ``probability_of``, ``probability``, ``threshold``,
        ``ood_score``, ``ood``, ``results_stored``, ``error``.
    """
    rows = []
    for result in results:
        row: dict[str, Any] = {"instance": result.key}
        if identifiers:
            row["study_instance_uid"] = result.study_instance_uid
            row["sop_instance_uid"] = result.sop_instance_uid
        finding = result.finding
        row.update(
            label=None if finding is None else finding.label,
            probability_of=None if finding is None else finding.probability_of,
            probability=None if finding is None else round(finding.probability, 6),
            threshold=None if finding is None else finding.threshold,
            ood_score=None if finding is None else finding.ood_score,
            ood=None if finding is None else finding.ood,
            results_stored=len(result.stored),
            error=result.error,
        )
        rows.append(row)
    return rows
