"""Folders of chest X-rays as ``(X, y)``, and patient ids for grouped splits."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cxrkit.images._reading import IMAGE_EXTENSIONS, is_dicom_file

__all__ = ["find_images", "load_image_folder", "patient_groups", "patient_id"]

# Kermany et al. 2018 file names: the patient is `personN` (PNEUMONIA, with
# the subtype in the name) or the study `IM-XXXX` (NORMAL; the NORMAL2 batch
# numbers its studies separately). One real name has an extra suffix:
# person447_virus_921_1.jpeg.
_PERSON = re.compile(
    r"^(?P<patient>person\d+)_(?P<subtype>bacteria|virus)(?:_\d+)+$", re.IGNORECASE
)
_STUDY = re.compile(r"^(?P<patient>(?:NORMAL2-)?IM-\d+)(?:-\d+)+$", re.IGNORECASE)


def _stem(name: str | os.PathLike) -> str:
    """The file name without any of its endings (``a.tar.gz`` -> ``a``)."""
    return Path(os.fspath(name)).name.split(".", 1)[0]


def patient_id(name: str | os.PathLike) -> str | None:
    """The patient id in one Kermany-style file name, or None.

    Parameters
    ----------
    name : str or path-like
        A file name or path; only the name without its ending is read.

    Returns
    -------
    str or None
        ``"person12"`` for ``person12_virus_34.jpeg``, ``"IM-0115"`` for
        ``IM-0115-0001.jpeg``, ``"NORMAL2-IM-0427"`` for
        ``NORMAL2-IM-0427-0001.jpeg``; None when the name has neither form.

    Examples
    --------
    >>> patient_id("chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg")
    'person1'
    >>> patient_id("NORMAL2-IM-0427-0001.jpeg")
    'NORMAL2-IM-0427'
    >>> patient_id("scan.png") is None
    True
    """
    stem = _stem(name)
    for pattern in (_PERSON, _STUDY):
        match = pattern.match(stem)
        if match:
            return match.group("patient")
    return None


def patient_groups(X: Iterable[str | os.PathLike]) -> np.ndarray:
    """Patient id per image, for ``GroupKFold`` and ``GroupShuffleSplit``.

    Several radiographs of one patient in both the training and the
    validation part of a split leak information and inflate scores; pass these
    ids as ``groups`` so that each patient stays on one side.

    Parameters
    ----------
    X : iterable of paths
        Kermany-style names (``personN_bacteria_M``, ``personN_virus_M``,
        ``IM-XXXX-YYYY``, ``NORMAL2-IM-XXXX-YYYY``).

    Returns
    -------
    ndarray of shape (n,), dtype object
        One id per image. A name that cannot be parsed becomes its own group
        (its full path), and one warning says how many there were.

    Examples
    --------
    >>> patient_groups(["a/person3_virus_1.jpeg", "b/person3_bacteria_9.jpeg",
    ...                 "IM-0001-0001.jpeg"]).tolist()
    ['person3', 'person3', 'IM-0001']
    """
    paths = [os.fspath(p) for p in X]
    ids = [patient_id(p) for p in paths]
    unparsed = [p for p, i in zip(paths, ids) if i is None]
    if unparsed:
        warnings.warn(
            f"{len(unparsed)} of {len(paths)} file names have no Kermany patient "
            f"id (e.g. {Path(unparsed[0]).name!r}); each of them is its own group",
            UserWarning,
            stacklevel=2,
        )
    return np.array(
        [i if i is not None else p for p, i in zip(paths, ids)], dtype=object
    )


def _is_image_file(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    # DICOM files by their preamble whatever their name: PACS exports often
    # have none (IM0001) or name them by their UID (1.2.826.0.1...10001,
    # whose "suffix" is .10001). 132 bytes read per file of another ending.
    return is_dicom_file(path)


def _split_images(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """``files`` as (images, others), each file looked at once."""
    images, others = [], []
    for path in files:
        (images if _is_image_file(path) else others).append(path)
    return images, others


def _folder_files(folder: Path) -> list[Path]:
    """The files under ``folder``, searched recursively, sorted.

    Broken symbolic links are kept so that the reader names them rather than
    drops them; hidden files and folders (``.DS_Store``,
    ``.ipynb_checkpoints``) are not.
    """
    return sorted(
        p
        for p in folder.rglob("*")
        if (p.is_file() or (p.is_symlink() and not p.exists()))
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _warn_ignored(ignored: list[Path], stacklevel: int) -> None:
    """One warning naming the files left out: neither an image ending nor
    the DICOM preamble."""
    if not ignored:
        return
    shown = ", ".join(str(p) for p in ignored[:10])
    more = f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""
    warnings.warn(
        f"ignored {len(ignored)} file(s) without one of the image endings "
        f"cxrkit reads ({', '.join(sorted(IMAGE_EXTENSIONS))}) and without the "
        f"DICOM preamble: {shown}{more}. "
        "Convert any images among them to PNG or JPEG, or rename them if the "
        "ending is wrong (a .jfif file is a JPEG).",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def _subtype(path: Path, label: str) -> str:
    """BACTERIA / VIRUS from a Kermany file name; other labels unchanged."""
    match = _PERSON.match(_stem(path))
    if match:
        return match.group("subtype").upper()
    if label.upper() == "PNEUMONIA":
        raise ValueError(
            f"subtypes=True but {path} has no bacteria/virus subtype in its name "
            "(expected personN_bacteria_M or personN_virus_M); rename it or use "
            "subtypes=False"
        )
    return label


def load_image_folder(
    path: str | os.PathLike,
    *,
    classes: Iterable[str] | None = None,
    subtypes: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a class-per-subfolder tree of images as ``(X, y)``.

    Parameters
    ----------
    path : str or path-like
        A folder with one subfolder per class, as in the Kermany layout
        ``chest_xray/train/{NORMAL,PNEUMONIA}/*.jpeg``. Subfolders are searched
        recursively. Files ending in .jpeg, .jpg, .png, .bmp, .tif(f), .dcm,
        and DICOM files of any other name (by their preamble: ``IM0001``,
        a UID) are images. Hidden files (``.DS_Store``)
        are ignored; other files are ignored with one warning listing them.
    classes : iterable of str, optional
        Subfolders to read, in this order; by default all, sorted by name.
    subtypes : bool, default=False
        Label images whose file names follow Kermany's ``personN_bacteria_M``
        / ``personN_virus_M`` pattern ``"BACTERIA"`` or ``"VIRUS"`` instead
        of their folder name (three classes: NORMAL / BACTERIA / VIRUS). A
        ``PNEUMONIA`` image whose name has neither raises a ``ValueError``.

    Returns
    -------
    X : ndarray of shape (n,), dtype object
        Image paths as strings, sorted within each class.
    y : ndarray of shape (n,)
        The class (subfolder name) of each image.

    Raises
    ------
    FileNotFoundError
        ``path`` or a requested class folder does not exist.
    ValueError
        Fewer than two classes, or a class folder without images.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for label in ("NORMAL", "PNEUMONIA"):
    ...     (root / label).mkdir()
    ...     Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / label / "a.png")
    >>> X, y = load_image_folder(root)
    >>> y.tolist()
    ['NORMAL', 'PNEUMONIA']
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(
            f"image folder not found: {root} (expected a folder with one "
            "subfolder per class, e.g. chest_xray/train/NORMAL, .../PNEUMONIA)"
        )
    if not root.is_dir():
        raise ValueError(
            f"{root} is a file; pass the folder that holds the class subfolders"
        )
    subdirs = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    wanted = list(classes) if classes is not None else subdirs
    missing = [c for c in wanted if c not in subdirs]
    if missing:
        raise FileNotFoundError(
            f"class folder(s) {missing} not found in {root}; found {subdirs}"
        )
    if len(wanted) < 2:
        raise ValueError(
            f"{root} has {len(wanted)} class folder(s) ({wanted}); a classifier "
            "needs at least 2, one subfolder per class (e.g. NORMAL, PNEUMONIA)"
        )
    X, y, ignored = [], [], []
    for label in wanted:
        files = _folder_files(root / label)
        images, others = _split_images(files)
        ignored += others
        if not images:
            raise ValueError(
                f"class folder {root / label} holds no image files "
                f"(readable endings: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        X += [str(p) for p in images]
        y += [_subtype(p, label) for p in images] if subtypes else [label] * len(images)
    _warn_ignored(ignored, stacklevel=2)
    return np.array(X, dtype=object), np.array(y)


def find_images(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> np.ndarray:
    """Image files named by ``paths``: files as given, folders searched.

    Parameters
    ----------
    paths : path or iterable of paths
        Image files (kept as given, whatever their ending) and folders
        (searched recursively for the files ``load_image_folder`` reads:
        .jpeg, .jpg, .png, .bmp, .tif(f), .dcm and DICOM of any other name;
        hidden files and folders are skipped, other files are left out with
        one warning that lists them). Broken symbolic links with an image
        ending are kept, so that reading them names them as missing.

    Returns
    -------
    ndarray of shape (n,), dtype object
        Paths as strings: the files of each folder sorted, in the order given.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    ValueError
        A folder holds no image files.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "b").mkdir()
    >>> for name in ("b/2.png", "1.png", ".hidden.png"):
    ...     Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / name, "PNG")
    >>> [Path(p).name for p in find_images(root)]
    ['1.png', '2.png']
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[str] = []
    ignored: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_file():
            found.append(str(path))
        elif path.is_dir():
            files = _folder_files(path)
            kept, others = _split_images(files)
            images = sorted(str(p) for p in kept)
            if not images:
                listed = ""
                if others:
                    names = ", ".join(p.name for p in others[:3])
                    listed = f"; it holds {len(others)} other file(s), e.g. {names}"
                raise ValueError(
                    f"folder {path} holds no image files (readable endings: "
                    f"{', '.join(sorted(IMAGE_EXTENSIONS))}){listed}"
                )
            found += images
            ignored += others
        else:
            raise FileNotFoundError(f"no such image file or folder: {path}")
    _warn_ignored(ignored, stacklevel=2)
    return np.array(found, dtype=object)
