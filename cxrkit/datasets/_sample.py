"""The real sample that ships with cxrkit: 600 Kermany chest X-rays, 128 px.

The files live in ``cxrkit/datasets/sample/``; ``tools/make_sample.py`` in
the repository made them from the dataset's training split.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

__all__ = ["SAMPLE_CITATION", "load_sample_cxr"]

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

#: The paper and data set to cite when you use the sample.
SAMPLE_CITATION = (
    "Kermany D. S. et al. (2018). Identifying Medical Diagnoses and Treatable "
    "Diseases by Image-Based Deep Learning. Cell 172(5):1122-1131. "
    "Data: Mendeley Data, doi:10.17632/rscbjbr9sj.2"
)


def _read_manifest(folder: Path) -> list[dict[str, str]]:
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"the sample's manifest is missing: {manifest}. Reinstall cxrkit, "
            "or rebuild the sample from the Kermany data with "
            "`python tools/make_sample.py path/to/chest_xray` in cxrkit's "
            "repository"
        )
    with open(manifest, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_sample_cxr(*, return_X_y: bool = False, as_images: bool = False):
    """Load the real chest X-ray sample shipped with cxrkit (Kermany et al.).

    600 paediatric chest radiographs from the training split of Kermany et
    al. (2018): 300 NORMAL (both of the dataset's batches, ``IM-`` and
    ``NORMAL2-IM-``) and 300 PNEUMONIA (bacterial and viral), one image per
    patient, as 128 x 128 grayscale JPEGs under their original file names
    (so [`patient_groups`][cxrkit.patient_groups] reads them). Four of them
    also come as DICOM files with made-up identifiers, to try the DICOM path
    (``pip install cxrkit[dicom]``). Nothing is downloaded.

    Enough to try every step of cxrkit on real films in a few minutes; a
    model trained on a few hundred small images is a demonstration, not a
    result. The full dataset is
    [`fetch_kermany`][cxrkit.datasets.fetch_kermany]'s. Licence: CC BY 4.0;
    cite ``SAMPLE_CITATION``.

    Parameters
    ----------
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.
    as_images : bool, default=False
        ``data`` as an array of decoded images of shape (600, 128, 128),
        dtype uint8, instead of file paths.

    Returns
    -------
    data : sklearn.utils.Bunch
        Dictionary-like object with the attributes:

        data : ndarray of shape (600,), dtype object, or (600, 128, 128)
            The image paths (sorted within each class), or the images.
        target : ndarray of shape (600,)
            ``"NORMAL"`` or ``"PNEUMONIA"``.
        target_names : ndarray of shape (2,)
            The classes.
        groups : ndarray of shape (600,), dtype object
            The patient of each image (all different: one image per patient).
        subtype : ndarray of shape (600,)
            ``"NORMAL"``, ``"BACTERIA"`` or ``"VIRUS"``.
        batch : ndarray of shape (600,)
            The NORMAL images' batch, ``"IM"`` or ``"NORMAL2"``; ``""`` for
            PNEUMONIA.
        filenames : ndarray of shape (600,), dtype object
            The image paths (also when ``as_images=True``).
        source : ndarray of shape (600,), dtype object
            Each image's file in the Kermany release
            (``chest_xray/train/NORMAL/IM-0115-0001.jpeg``).
        dicom : ndarray of shape (4,), dtype object
            Paths of the DICOM copies of four of the images.
        dicom_target : ndarray of shape (4,)
            Their classes.
        DESCR : str
            What the sample is and how it was made.
        citation : str
            The paper and data set to cite.
        license : str
            ``"CC BY 4.0"``.

    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> from cxrkit.datasets import load_sample_cxr
    >>> sample = load_sample_cxr()
    >>> sample.data.shape, sample.target_names.tolist()
    ((600,), ['NORMAL', 'PNEUMONIA'])
    >>> [int((sample.target == c).sum()) for c in sample.target_names]
    [300, 300]
    >>> len(set(sample.groups)), sample.license
    (600, 'CC BY 4.0')
    >>> X, y = load_sample_cxr(return_X_y=True, as_images=True)
    >>> X.shape, X.dtype
    ((600, 128, 128), dtype('uint8'))
    """
    rows = _read_manifest(SAMPLE_DIR)

    def column(name: str, dtype: object = None) -> np.ndarray:
        return np.array([row[name] for row in rows], dtype=dtype)

    paths = np.array([str(SAMPLE_DIR / row["file"]) for row in rows], dtype=object)
    target = column("class")
    if as_images:
        from cxrkit.images._reading import read_image

        data = np.stack([read_image(path) for path in paths])
    else:
        data = paths
    if return_X_y:
        return data, target
    with_dicom = [row for row in rows if row["dicom"]]
    return Bunch(
        data=data,
        target=target,
        target_names=np.unique(target),
        groups=column("patient", object),
        subtype=column("subtype"),
        batch=column("batch"),
        filenames=paths,
        source=column("source", object),
        dicom=np.array(
            [str(SAMPLE_DIR / row["dicom"]) for row in with_dicom], dtype=object
        ),
        dicom_target=np.array([row["class"] for row in with_dicom]),
        DESCR=(SAMPLE_DIR / "README.txt").read_text(encoding="utf-8"),
        citation=SAMPLE_CITATION,
        license="CC BY 4.0",
    )
