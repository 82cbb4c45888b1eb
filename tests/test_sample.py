"""The real sample in the package (``cxrkit.datasets.load_sample_cxr``)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, KERMANY

from cxrkit import PneumoniaClassifier, load_image_folder, patient_groups
from cxrkit.datasets import SAMPLE_CITATION, load_sample_cxr
from cxrkit.images import read_image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "cxrkit" / "datasets" / "sample"


def test_classes_balanced_one_image_per_patient(sample_cxr):
    X, y, groups = sample_cxr.data, sample_cxr.target, sample_cxr.groups
    assert X.shape == y.shape == groups.shape == (600,)
    assert sample_cxr.target_names.tolist() == ["NORMAL", "PNEUMONIA"]
    assert [int((y == c).sum()) for c in sample_cxr.target_names] == [300, 300]
    assert len(set(groups)) == 600  # one image per patient: no patient twice
    # the ids are those patient_groups reads from the original file names
    assert groups.tolist() == patient_groups(X).tolist()
    assert all(Path(p).is_file() for p in X)


def test_both_batches_and_both_subtypes(sample_cxr):
    y, subtype, batch = sample_cxr.target, sample_cxr.subtype, sample_cxr.batch
    assert set(subtype[y == "NORMAL"]) == {"NORMAL"}
    pneumonia = dict(zip(*np.unique(subtype[y == "PNEUMONIA"], return_counts=True)))
    assert set(pneumonia) == {"BACTERIA", "VIRUS"} and min(pneumonia.values()) > 50
    normal = dict(zip(*np.unique(batch[y == "NORMAL"], return_counts=True)))
    assert set(normal) == {"IM", "NORMAL2"} and min(normal.values()) > 50
    # the subtypes agree with those load_image_folder reads from the names
    names = [Path(p).name for p in sample_cxr.data]
    assert all((s.lower() in n) for s, n in zip(subtype, names) if s != "NORMAL"), (
        "subtype column disagrees with the file names"
    )


def test_only_the_training_split_was_drawn_from(sample_cxr):
    assert all(s.startswith("chest_xray/train/") for s in sample_cxr.source)
    for path, source, label in zip(
        sample_cxr.data, sample_cxr.source, sample_cxr.target
    ):
        assert Path(source).stem == Path(path).stem
        assert Path(source).parent.name == Path(path).parent.name == label


def test_bunch_describes_licence_and_citation(sample_cxr):
    assert sample_cxr.license == "CC BY 4.0"
    assert sample_cxr.citation == SAMPLE_CITATION
    assert "doi:10.17632/rscbjbr9sj.2" in SAMPLE_CITATION
    assert "Cell 172(5):1122-1131" in SAMPLE_CITATION
    assert "CC BY 4.0" in sample_cxr.DESCR and "Kermany" in sample_cxr.DESCR
    licence = (SAMPLE / "LICENSE.txt").read_text("utf-8")
    assert "CC BY 4.0" in licence and "creativecommons.org/licenses/by/4.0" in licence
    assert SAMPLE_CITATION.split(". ")[0] in licence


def test_return_X_y_and_images(sample_cxr):
    X, y = load_sample_cxr(return_X_y=True)
    assert X.tolist() == sample_cxr.data.tolist()
    assert y.tolist() == sample_cxr.target.tolist()
    images, y2 = load_sample_cxr(return_X_y=True, as_images=True)
    assert images.shape == (600, 128, 128) and images.dtype == np.uint8
    assert np.array_equal(images[7], read_image(X[7]))
    assert y2.tolist() == y.tolist()


def test_the_folder_reads_like_any_image_folder(sample_cxr):
    """load_image_folder on the sample gives the same images and labels."""
    X, y = load_image_folder(SAMPLE, classes=["NORMAL", "PNEUMONIA"])
    assert X.tolist() == sample_cxr.data.tolist()
    assert y.tolist() == sample_cxr.target.tolist()


def test_manifest_lists_every_file_and_nothing_else():
    with open(SAMPLE / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        *("file", "class", "subtype", "batch", "patient", "source", "dicom")
    ]
    listed = {r["file"] for r in rows} | {r["dicom"] for r in rows if r["dicom"]}
    shipped = {
        p.relative_to(SAMPLE).as_posix()
        for p in SAMPLE.rglob("*")
        if p.is_file() and p.parent != SAMPLE
    }
    assert listed == shipped


def test_sample_stays_small():
    """The issue's budget: the wheel grows by at most 5 MB."""
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 3_500_000


def test_dicom_copies_read_like_their_jpegs(sample_cxr):
    pytest.importorskip("pydicom")
    assert len(sample_cxr.dicom) == 4
    assert set(sample_cxr.dicom_target) == {"NORMAL", "PNEUMONIA"}
    jpegs = {Path(p).stem: p for p in sample_cxr.data}
    photometric = set()
    import pydicom

    for path in sample_cxr.dicom:
        ds = pydicom.dcmread(path)
        assert ds.PatientID.startswith("CXRKIT-SAMPLE-")  # made up
        photometric.add(ds.PhotometricInterpretation)
        gray = read_image(path)  # through cxrkit's DICOM path
        jpeg = read_image(jpegs[Path(path).stem])
        assert gray.shape == jpeg.shape == (128, 128)
        assert np.abs(gray.astype(int) - jpeg).max() <= 1
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}


def test_a_model_predicts_the_dicom_copies_as_their_jpegs(sample_cxr):
    pytest.importorskip("pydicom")
    X, y = sample_cxr.data, sample_cxr.target
    clf = PneumoniaClassifier(model="simple_cnn", **FAST).fit(X[::5], y[::5])
    jpegs = {Path(p).stem: p for p in X}
    same = [jpegs[Path(p).stem] for p in sample_cxr.dicom]
    np.testing.assert_allclose(
        clf.predict_proba(sample_cxr.dicom), clf.predict_proba(same), atol=0.02
    )


@pytest.mark.skipif(
    not (KERMANY / "train").is_dir() or importlib.util.find_spec("pydicom") is None,
    reason=f"needs the Kermany training images at {KERMANY / 'train'} and pydicom",
)
def test_build_script_draws_the_same_sample(tmp_path):
    """tools/make_sample.py, run again, chooses the same images and patients."""
    spec = importlib.util.spec_from_file_location(
        "make_sample", ROOT / "tools" / "make_sample.py"
    )
    make_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sample)
    assert make_sample.main([str(KERMANY), "--out", str(tmp_path)]) == 0
    rebuilt = (tmp_path / "manifest.csv").read_text("utf-8")
    assert rebuilt == (SAMPLE / "manifest.csv").read_text("utf-8")
    for row in csv.DictReader(rebuilt.splitlines()):  # the source exists in train
        assert (KERMANY / row["source"].removeprefix("chest_xray/")).is_file()
