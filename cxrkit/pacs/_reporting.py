"""From DICOM files to results: read, check, predict, build the result instances.

Shared by the listener and the DICOMweb client, so that both paths give the
same results for the same file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from cxrkit.images._reading import read_image
from cxrkit.pacs._model import Finding, ReportingModel
from cxrkit.pacs._radiographs import check_radiograph, instance_key
from cxrkit.pacs._results import overlay_capture, structured_report

__all__ = ["Report", "Reporter"]


@dataclass
class Report:
    """The outcome for one source instance.

    Attributes
    ----------
    key : str
        [`instance_key`][cxrkit.pacs.instance_key] of the
        source: what logs name it by.
    header : pydicom.Dataset or None
        The source's header (holds patient identifiers: never logged).
    finding : Finding or None
        None when the instance could not be read or reported.
    results : list of pydicom.Dataset
        The structured report, and the heatmap capture when asked for.
    error : str or None
        Why there is no finding, in words free of patient identifiers.
    detail : str or None
        The full error, which may quote the header; kept beside the file.
    """

    key: str
    header: Dataset | None
    finding: Finding | None = None
    results: list[Dataset] = field(default_factory=list)
    error: str | None = None
    detail: str | None = None


class Reporter:
    """Turns radiograph files into findings and result instances.

    Parameters
    ----------
    model : ReportingModel
    overlay : bool, default=False
        Also make a heatmap Secondary Capture per instance (``cxrkit.explain``'s
        recommended method).
    """

    def __init__(self, model: ReportingModel, *, overlay: bool = False) -> None:
        self.model = model
        self.overlay = overlay

    def _read(self, path: Path, image: np.ndarray | None) -> tuple[Dataset, np.ndarray]:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        check_radiograph(header)
        if image is None:
            image = read_image(path, size=self.model.identity.image_size)
        return header, image

    def report_files(
        self,
        paths: Sequence[str | os.PathLike],
        images: Sequence[np.ndarray | None] | None = None,
    ) -> list[Report]:
        """One ``Report`` per file, in order; a bad file does not stop the rest.

        Parameters
        ----------
        paths : sequence of paths
            DICOM files of radiographs.
        images : sequence of ndarray or None, optional
            The files already decoded at the model's size (None where not).
        """
        paths = [Path(p) for p in paths]
        images = list(images) if images is not None else [None] * len(paths)
        reports: list[Report] = []
        decoded: list[np.ndarray] = []
        for path, image in zip(paths, images):
            try:
                header, image = self._read(path, image)
            except Exception as exc:  # any damage: this file fails, not the batch
                reports.append(
                    Report(
                        path.stem,
                        None,
                        error=f"could not read the instance ({type(exc).__name__})",
                        detail=f"{type(exc).__name__}: {exc}",
                    )
                )
                continue
            reports.append(Report(instance_key(header.SOPInstanceUID), header))
            decoded.append(image)
        good = [(r, p) for r, p in zip(reports, paths) if r.header is not None]
        if not good:
            return reports
        batch = np.stack(decoded)
        findings = self.model.assess(batch)
        heatmaps = self.model.heatmaps(batch, findings) if self.overlay else None
        for k, ((report, path), finding) in enumerate(zip(good, findings)):
            report.finding = finding
            try:
                report.results.append(
                    structured_report(report.header, finding, self.model.identity)
                )
                if heatmaps is not None:
                    report.results.append(
                        overlay_capture(
                            report.header,
                            read_image(path),
                            heatmaps[k],
                            finding,
                            self.model.identity,
                        )
                    )
            except Exception as exc:  # a header highdicom refuses
                report.results = []
                report.error = f"could not build the results ({type(exc).__name__})"
                report.detail = f"{type(exc).__name__}: {exc}"
        return reports
