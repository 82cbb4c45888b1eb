"""Wrap an ordinary image file as a DICOM radiograph, to try a node or a PACS."""

from __future__ import annotations

import datetime
import os

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxrkit.images._reading import read_image

__all__ = ["image_to_dicom"]

_MODALITY_CLASSES = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray for presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",
}


def image_to_dicom(
    image: str | os.PathLike | np.ndarray,
    *,
    modality: str = "DX",
    patient_id: str = "CXRKIT-TEST",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    study_date: str | None = None,
    accession_number: str = "",
    instance_number: int = 1,
) -> Dataset:
    """A DX or CR instance holding an image, with made-up identifiers.

    For trying a listener or a PACS with the sample shipped with cxrkit:
    ``storescu`` or any DICOM sender can then send the files. The pixels
    are the image as cxrkit reads it at full size (8-bit grayscale, bone
    bright, ``MONOCHROME2``, an identity window), so ``read_image`` gives
    the same array for both files. (A model's probability can still differ
    a little: cxrkit shrinks a large JPEG while decoding it, a DICOM
    after.)

    Parameters
    ----------
    image : path or ndarray of shape (H, W), dtype uint8
        An image file cxrkit reads, or a grayscale image.
    modality : {"DX", "CR"}, default="DX"
    patient_id : str, default="CXRKIT-TEST"
        Made up; the patient's name is ``CXRKIT^TEST``.
    study_instance_uid, series_instance_uid : str, optional
        New UIDs by default.
    study_date : str, optional
        ``YYYYMMDD``; default today.
    accession_number : str, default=""
    instance_number : int, default=1

    Returns
    -------
    pydicom.Dataset
        With file meta information; save it with
        ``ds.save_as(path, enforce_file_format=True)``.

    Examples
    --------
    >>> import numpy as np
    >>> ds = image_to_dicom(np.zeros((4, 5), np.uint8), study_date="20240131")
    >>> ds.Modality, ds.Rows, ds.Columns, ds.BodyPartExamined
    ('DX', 4, 5, 'CHEST')
    """
    if modality not in _MODALITY_CLASSES:
        raise ValueError(
            f"modality {modality!r}: choose one of {sorted(_MODALITY_CLASSES)}"
        )
    pixels = (
        read_image(image)
        if isinstance(image, (str, os.PathLike))
        else np.asarray(image)
    )
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(
            f"image has shape {pixels.shape} and dtype {pixels.dtype}; give a "
            "grayscale uint8 image (H, W) or an image file"
        )
    now = datetime.datetime.now()
    sop_class = _MODALITY_CLASSES[modality]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.PatientName = "CXRKIT^TEST"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.StudyDate = study_date or now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.StudyID = ""
    ds.AccessionNumber = accession_number
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.Manufacturer = ""
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    ds.ImageType = ["DERIVED", "PRIMARY"]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    # The identity window: cxrkit reads the grey levels as they are (without a
    # window, it would stretch each image's own range to 0-255).
    ds.WindowCenter, ds.WindowWidth = 127.5, 255
    ds.VOILUTFunction = "LINEAR_EXACT"
    data = np.ascontiguousarray(pixels).tobytes()
    ds.PixelData = data + b"\0" * (len(data) % 2)  # an even length, as DICOM asks
    return ds
