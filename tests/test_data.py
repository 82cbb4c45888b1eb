"""Folders as (X, y) and patient ids from Kermany file names."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cxrkit import load_image_folder, patient_groups
from cxrkit.images import patient_id

_n = st.integers(0, 99999)


@given(_n, st.sampled_from(["bacteria", "virus"]), _n, st.sampled_from(["jpeg", "png"]))
def test_person_names(person, kind, image, ext):
    assert (
        patient_id(f"x/PNEUMONIA/person{person}_{kind}_{image}.{ext}")
        == f"person{person}"
    )


@given(st.integers(0, 9999), st.integers(0, 9999), st.booleans())
def test_study_names(study, image, normal2):
    prefix = "NORMAL2-" if normal2 else ""
    name = f"{prefix}IM-{study:04d}-{image:04d}.jpeg"
    assert patient_id(name) == f"{prefix}IM-{study:04d}"


@given(st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=20))
def test_other_names_have_no_id(stem):
    if stem.lower().startswith(("person", "im", "normal2")):
        return
    assert patient_id(f"{stem}.png") is None


def test_same_patient_same_group_and_unparsed_warns():
    X = [
        "a/person7_bacteria_1.jpeg",
        "a/person7_virus_2.jpeg",
        "a/person70_virus_3.jpeg",
        "b/IM-0001-0001.jpeg",
        "b/IM-0001-0002.jpeg",
        "b/NORMAL2-IM-0001-0001.jpeg",
        "c/scan_a.png",
        "c/scan_b.png",
    ]
    with pytest.warns(UserWarning, match="2 of 8"):
        groups = patient_groups(X)
    assert groups[0] == groups[1] != groups[2]
    assert groups[3] == groups[4] != groups[5]
    assert groups[6] != groups[7]  # unparsed names: one group each


def test_real_kermany_train_patients(kermany_dir):
    X, y = load_image_folder(kermany_dir / "train")
    assert len(X) == 5216 and set(y) == {"NORMAL", "PNEUMONIA"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every real name parses
        groups = patient_groups(X)
    n_patients = len(set(groups))
    assert 1000 < n_patients < len(X)  # several images per patient
    # no patient id in both classes
    normal = set(groups[y == "NORMAL"])
    assert not normal & set(groups[y == "PNEUMONIA"])


def test_real_kermany_subtypes(kermany_dir):
    _X, y = load_image_folder(kermany_dir / "train", subtypes=True)
    counts = dict(zip(*np.unique(y, return_counts=True)))
    assert set(counts) == {"NORMAL", "BACTERIA", "VIRUS"}
    assert counts["NORMAL"] == 1341
    assert counts["BACTERIA"] + counts["VIRUS"] == 3875


def _tree(root, spec):
    for rel in spec:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith((".png", ".jpeg")):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
        else:
            path.write_text("x")


def test_folder_reads_classes_sorted_and_ignores_other_files(tmp_path):
    _tree(
        tmp_path,
        [
            "PNEUMONIA/b.jpeg",
            "PNEUMONIA/a.png",
            "NORMAL/sub/c.png",
            "NORMAL/.DS_Store",
            "NORMAL/notes.txt",
        ],
    )
    with pytest.warns(UserWarning, match="notes.txt"):
        X, y = load_image_folder(tmp_path)
    assert [p.rsplit("/", 1)[1] for p in X] == ["c.png", "a.png", "b.jpeg"]
    assert y.tolist() == ["NORMAL", "PNEUMONIA", "PNEUMONIA"]
    assert X.dtype == object


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (None, FileNotFoundError, "not found"),
        (["NORMAL/a.png"], ValueError, "at least 2"),
        (["NORMAL/a.png", "PNEUMONIA/readme.txt"], ValueError, "no image files"),
    ],
)
def test_folder_errors(tmp_path, spec, error, match):
    root = tmp_path / "data"
    if spec is not None:
        _tree(root, spec)
    with pytest.raises(error, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_image_folder(root)


def test_folder_classes_argument(tmp_path):
    _tree(tmp_path, ["A/a.png", "B/b.png", "C/c.png"])
    _X, y = load_image_folder(tmp_path, classes=["C", "A"])
    assert y.tolist() == ["C", "A"]
    with pytest.raises(FileNotFoundError, match="'D'"):
        load_image_folder(tmp_path, classes=["A", "D"])


def test_extra_suffix_in_real_name_parses():
    assert patient_id("person447_virus_921_1.jpeg") == "person447"


def test_find_images_in_files_and_folders(tmp_path):
    from pathlib import Path

    from cxrkit.images import find_images

    _tree(tmp_path, ["b/2.png", "b/.hidden/3.png", "b/.4.png", "a/1.jpeg", "notes.txt"])
    given = tmp_path / "notes.txt"  # a file named on purpose is kept as given
    with pytest.warns(UserWarning, match=r"ignored 1 file.*notes\.txt"):
        found = find_images([tmp_path / "b", given, tmp_path])  # tmp_path: warned
    names = [Path(p).relative_to(tmp_path).as_posix() for p in found]
    assert names == ["b/2.png", "notes.txt", "a/1.jpeg", "b/2.png"]
    assert find_images(tmp_path / "a").tolist() == [str(tmp_path / "a" / "1.jpeg")]
    with pytest.raises(FileNotFoundError, match="no such image file or folder"):
        find_images([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        find_images([tmp_path / "empty"])


def test_find_images_warns_about_files_it_leaves_out(tmp_path):
    """Files without an image ending are named in one warning, as
    load_image_folder does; broken links are kept so that reading names them."""
    import os

    from cxrkit.images import ImageReadError, find_images, load_images

    gray = np.zeros((8, 8), np.uint8)
    Image.fromarray(gray).save(tmp_path / "a.png")
    Image.fromarray(gray).save(tmp_path / "b.webp")
    Image.fromarray(gray).save(tmp_path / "c.gif")
    Image.fromarray(gray).save(tmp_path / "d.jfif", "JPEG")
    os.symlink(tmp_path / "gone.png", tmp_path / "e.png")
    with pytest.warns(UserWarning, match="ignored 3 file") as record:
        found = find_images(tmp_path)
    assert len(record) == 1
    message = str(record[0].message)
    assert all(name in message for name in ("b.webp", "c.gif", "d.jfif"))
    assert "convert" in message.lower()
    assert [os.path.basename(p) for p in found] == ["a.png", "e.png"]
    with pytest.raises(ImageReadError, match=r"e\.png.*broken symbolic link"):
        load_images(found, 8)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        _, kept = load_images(found, 8, on_error="skip")
    assert kept.tolist() == [True, False]
    # the same files in a class folder: the same warning from load_image_folder
    for label in ("A", "B"):
        (tmp_path / "tree" / label).mkdir(parents=True)
        Image.fromarray(gray).save(tmp_path / "tree" / label / "x.png")
    Image.fromarray(gray).save(tmp_path / "tree" / "A" / "y.webp")
    with pytest.warns(UserWarning, match=r"ignored 1 file.*y\.webp.*PNG or JPEG"):
        load_image_folder(tmp_path / "tree")


def test_find_images_names_what_a_folder_without_images_holds(tmp_path):
    from cxrkit.images import find_images

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "b.webp")
    with pytest.raises(ValueError, match=r"holds no image files.*1 other.*b\.webp"):
        find_images(tmp_path)
