"""Public datasets on disk: PneumoniaMNIST's file, and fetchers for the full sets.

The fetchers download public datasets when a network is reachable and fail
with a message that says where to get the files by hand when it is not
(hospital networks are often offline).
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

__all__ = [
    "fetch_kermany",
    "fetch_pneumoniamnist",
    "get_data_home",
    "load_pneumoniamnist",
]

KERMANY_URL = (
    "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
    "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded"
)
PNEUMONIAMNIST_URL = "https://zenodo.org/records/10519652/files/pneumoniamnist.npz"
_MNIST_LABELS = np.array(["NORMAL", "PNEUMONIA"])


def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """The folder where fetched datasets are stored.

    ``data_home``, else the ``CXRKIT_DATA`` environment variable, else
    ``~/cxrkit_data``. Created when missing.
    """
    home = Path(
        data_home or os.environ.get("CXRKIT_DATA", "~/cxrkit_data")
    ).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def load_pneumoniamnist(
    path: str | os.PathLike, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """PneumoniaMNIST (MedMNIST v2) images and labels from its ``.npz`` file.

    Parameters
    ----------
    path : str or path-like
        The ``pneumoniamnist.npz`` file (see
        [`fetch_pneumoniamnist`][cxrkit.datasets.fetch_pneumoniamnist]).
    split : {"train", "val", "test"}
        Which arrays to read.

    Returns
    -------
    X : ndarray of shape (n, 28, 28), dtype uint8
    y : ndarray of shape (n,)
        ``"NORMAL"`` or ``"PNEUMONIA"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"PneumoniaMNIST file not found: {path}. Download pneumoniamnist.npz "
            f"from {PNEUMONIAMNIST_URL} or call fetch_pneumoniamnist()."
        )
    with np.load(path) as data:
        key = f"{split}_images"
        if key not in data:
            available = sorted(k[:-7] for k in data.files if k.endswith("_images"))
            raise ValueError(f"split {split!r} is not in {path}; it has {available}")
        X = data[key]
        labels = data[f"{split}_labels"].ravel().astype(int)
    return X, _MNIST_LABELS[labels]


def _download(url: str, dest: Path, what: str, manual: str) -> Path:
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as fh:
            shutil.copyfileobj(response, fh)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download {what} from {url} ({exc}). Without internet "
            f"access, {manual}"
        ) from exc
    os.replace(tmp, dest)
    return dest


def fetch_pneumoniamnist(data_home: str | os.PathLike | None = None) -> Path:
    """Download PneumoniaMNIST (about 4 MB) once and return the file's path.

    Raises
    ------
    ConnectionError
        No network: the message says where to download the file by hand.
    """
    dest = get_data_home(data_home) / "pneumoniamnist.npz"
    if dest.is_file():
        return dest
    return _download(
        PNEUMONIAMNIST_URL,
        dest,
        "PneumoniaMNIST",
        f"download it elsewhere, copy it to {dest} and use load_pneumoniamnist(path).",
    )


def fetch_kermany(data_home: str | os.PathLike | None = None) -> Path:
    """Download the Kermany et al. chest X-ray dataset (about 1.2 GB) once.

    Returns
    -------
    pathlib.Path
        The ``chest_xray`` folder with ``train``, ``val`` and ``test``, ready
        for [`load_image_folder`][cxrkit.load_image_folder].

    Raises
    ------
    ConnectionError
        No network: the message says where to download it by hand.
    """
    home = get_data_home(data_home)
    folder = home / "chest_xray"
    if (folder / "train").is_dir():
        return folder
    archive = home / "ChestXRay2017.zip"
    if not archive.is_file():
        _download(
            KERMANY_URL,
            archive,
            "the Kermany chest X-ray dataset",
            "download ChestXRay2017.zip from Mendeley Data "
            f"(doi:10.17632/rscbjbr9sj.2), unzip it and pass its chest_xray "
            f"folder to load_image_folder (or put the zip at {archive}).",
        )
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(home)
    if not (folder / "train").is_dir():
        raise FileNotFoundError(
            f"{archive} did not unpack to {folder}/train; unzip it by hand and "
            "pass the chest_xray folder to load_image_folder"
        )
    return folder
