"""Build the real sample that ships inside cxrkit (``cxrkit/datasets/sample/``).

Usage, from the repository root::

    python tools/make_sample.py                       # ../shared/data/chest_xray
    python tools/make_sample.py path/to/chest_xray    # a Kermany download

Reads only ``chest_xray/train`` of the Kermany et al. (2018) dataset (CC BY
4.0) and writes, replacing what was there:

* ``NORMAL/`` and ``PNEUMONIA/``: 300 + 300 grayscale JPEGs, 128 x 128 px,
  under their original file names (so ``cxrkit.patient_groups`` reads them);
* ``dicom/``: DICOM copies of four of them (one per batch or subtype), with
  made-up identifiers (needs pydicom: ``pip install cxrkit[dicom]``);
* ``manifest.csv``: file, class, subtype, patient, source file, DICOM copy;
* ``LICENSE.txt`` and ``README.txt`` (licence, citation, how it was made;
  ``README.txt`` is the description ``load_sample_cxr`` returns).

How the images are chosen, deterministically (``SEED``): byte-identical
duplicates of the train split are left out; one image per patient; the 300
NORMAL images come from both batches (``IM-`` and ``NORMAL2-IM-``) and the
300 PNEUMONIA images from both subtypes (bacteria, virus), each in
proportion to its number of images in ``train``. Patients are drawn at
random within each part, then one image of each. The same source and
library versions give the same files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from cxrkit import load_image_folder, patient_groups
from cxrkit.datasets._sample import SAMPLE_CITATION as CITATION

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "chest_xray"
OUT = ROOT / "cxrkit" / "datasets" / "sample"
SEED = 0
PER_CLASS = 300
SIZE = 128  # pixels, square (the source images are 224 x 224)
QUALITY = 85  # JPEG quality
# Four DICOM copies: the first image drawn of each part.
N_DICOM_PER_PART = 1
# DICOM copies are 12-bit; bone is bright after the VOI window in all of
# them, and the one of this part is stored MONOCHROME1 (bone dark) to
# exercise the inversion.
MONOCHROME1_PART = "VIRUS"

LICENSE_TEXT = f"""\
The images in this folder are a subset of the "Labeled Optical Coherence
Tomography (OCT) and Chest X-Ray Images for Classification" dataset
(chest_xray/train), by Daniel Kermany, Kang Zhang and Michael Goldbaum,
published on Mendeley Data (version 2, doi:10.17632/rscbjbr9sj.2) under the
Creative Commons Attribution 4.0 International licence (CC BY 4.0):
https://creativecommons.org/licenses/by/4.0/

Changes: 600 of the training images chosen by tools/make_sample.py of the
cxrkit repository, converted to grayscale and resized to {SIZE} x {SIZE}
pixels (JPEG quality {QUALITY}); four of them also converted to DICOM with
made-up identifiers. The file names are those of the source.

Cite:
{CITATION}
"""

README_TEXT = f"""\
Real sample of chest X-rays (Kermany et al. 2018)
-------------------------------------------------

600 paediatric anterior-posterior chest radiographs from the training split
of the Kermany et al. (2018) dataset (Guangzhou Women and Children's Medical
Center): 300 NORMAL and 300 PNEUMONIA, one image per patient, so 600
patients. NORMAL images come from both of the dataset's batches (IM- and
NORMAL2-IM-), PNEUMONIA images from both subtypes (bacteria, virus), each in
proportion to its share of the training split. Grayscale JPEG, {SIZE} x {SIZE}
pixels (the originals were squashed to a square). Four images also come as
DICOM files with made-up identifiers.

Made by tools/make_sample.py in cxrkit's repository, seeded. For trying
cxrkit, its demo, tests and teaching: a model trained on a few hundred
small images is a demonstration, not a result, and nothing here is fit for
diagnosis. The full dataset (5,856 images) is on Mendeley Data
(doi:10.17632/rscbjbr9sj.2); see cxrkit.datasets.fetch_kermany.

Licence: CC BY 4.0 (see LICENSE.txt). Cite:
{CITATION}
"""


def _part(name: str, label: str) -> str:
    """The batch or subtype of a Kermany training image, from its name."""
    if label == "NORMAL":
        return "NORMAL2" if name.upper().startswith("NORMAL2-") else "IM"
    return "VIRUS" if "_virus_" in name.lower() else "BACTERIA"


def _shares(counts: Counter, total: int) -> dict[str, int]:
    """``total`` split across parts in proportion to ``counts`` (sums exactly)."""
    parts = sorted(counts)
    raw = (
        np.array([counts[p] for p in parts], dtype=float) * total / sum(counts.values())
    )
    n = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - n), kind="stable")[: total - n.sum()]:
        n[i] += 1
    return dict(zip(parts, n.tolist()))


def choose(train: Path, seed: int = SEED) -> list[dict[str, str]]:
    """The sample's rows (without the DICOM column), in the order drawn."""

    X, y = load_image_folder(train, classes=["NORMAL", "PNEUMONIA"])
    groups = patient_groups(X)
    digests = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in X]
    copies = Counter(digests)
    rng = np.random.default_rng(seed)
    rows = []
    for label in ("NORMAL", "PNEUMONIA"):
        in_class = np.flatnonzero(y == label)
        counts = Counter(_part(Path(X[i]).name, label) for i in in_class)
        chosen_patients: set[str] = set()
        for part, n in _shares(counts, PER_CLASS).items():
            images = defaultdict(list)  # patient -> image indices in this part
            for i in in_class:
                if (
                    _part(Path(X[i]).name, label) == part
                    and copies[digests[i]] == 1
                    and groups[i] not in chosen_patients
                ):
                    images[groups[i]].append(i)
            patients = sorted(images)
            picked = rng.choice(len(patients), size=n, replace=False)
            for k in picked:
                patient = patients[k]
                i = images[patient][rng.integers(len(images[patient]))]
                chosen_patients.add(patient)
                name = Path(X[i]).name
                rows.append(
                    {
                        "file": f"{label}/{Path(name).stem}.jpeg",
                        "class": label,
                        "subtype": label if label == "NORMAL" else part,
                        "batch": part if label == "NORMAL" else "",
                        "patient": patient,
                        "source": f"chest_xray/train/{label}/{name}",
                        "_path": str(X[i]),
                        "_part": part,
                    }
                )
    return rows


def _small(path: str) -> Image.Image:
    with Image.open(path) as image:
        gray = image.convert("L")
    return gray.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def write_dicom(pixels: np.ndarray, dest: Path, number: int, row: dict) -> None:
    """A 12-bit Secondary Capture copy of ``pixels`` with made-up identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    def uid(what: str) -> str:  # deterministic: the same files on every build
        return generate_uid(entropy_srcs=["cxrkit sample", row["file"], what])

    stored = pixels.astype(np.uint16) * 16  # 0..4080 in 12 bits
    monochrome1 = row["_part"] == MONOCHROME1_PART
    if monochrome1:
        stored = 4095 - stored
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid("instance")
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    # Made up: no real person, date or institution.
    ds.PatientName = f"CXRKIT^SAMPLE{number:02d}"
    ds.PatientID = f"CXRKIT-SAMPLE-{number:02d}"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "identifiers made up by cxrkit tools/make_sample.py"
    ds.StudyDescription = "cxrkit sample (not a patient record)"
    ds.ImageComments = (
        f"{row['source']}, Kermany et al. 2018, CC BY 4.0 "
        "(doi:10.17632/rscbjbr9sj.2); converted by cxrkit"
    )
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 2040, 4081  # maps 0..4080 onto 0..255
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(dest, enforce_file_format=True)


def build(source: Path, out: Path = OUT) -> list[dict[str, str]]:
    """Write the sample to ``out`` (its previous content is removed)."""
    train = source / "train"
    if not (train / "NORMAL").is_dir() or not (train / "PNEUMONIA").is_dir():
        raise SystemExit(f"{train} has no NORMAL/ and PNEUMONIA/ folders")
    rows = choose(train)
    for sub in ("NORMAL", "PNEUMONIA", "dicom"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    dicom_parts: Counter = Counter()
    for row in rows:
        small = _small(row["_path"])
        small.save(out / row["file"], "JPEG", quality=QUALITY, optimize=True)
        row["dicom"] = ""
        if dicom_parts[row["_part"]] < N_DICOM_PER_PART:
            dicom_parts[row["_part"]] += 1
            row["dicom"] = f"dicom/{Path(row['file']).stem}.dcm"
            # the DICOM holds the pixels of the shipped JPEG, decoded
            with Image.open(out / row["file"]) as shipped:
                pixels = np.asarray(shipped.convert("L"))
            write_dicom(pixels, out / row["dicom"], sum(dicom_parts.values()), row)
    rows.sort(key=lambda r: r["file"])
    fields = ["file", "class", "subtype", "batch", "patient", "source", "dicom"]
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out / "LICENSE.txt").write_text(LICENSE_TEXT, encoding="utf-8")
    (out / "README.txt").write_text(README_TEXT, encoding="utf-8")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source",
        nargs="?",
        type=Path,
        default=DEFAULT_SOURCE,
        help="the Kermany chest_xray folder; only its train/ is read "
        "(default: ../shared/data/chest_xray)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = build(args.source, args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    parts = Counter(r["_part"] for r in rows)
    print(
        f"{len(rows)} images of {len({r['patient'] for r in rows})} patients "
        f"({dict(sorted(parts.items()))}), "
        f"{sum(bool(r['dicom']) for r in rows)} DICOM copies, "
        f"{size / 1e6:.2f} MB in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
