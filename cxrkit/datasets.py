"""Datasets: synthetic chest-like images with lesion masks, PneumoniaMNIST, fetchers.

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
from sklearn.utils import check_random_state

__all__ = [
    "fetch_kermany",
    "fetch_pneumoniamnist",
    "get_data_home",
    "load_pneumoniamnist",
    "make_synthetic_cxr",
]

KERMANY_URL = (
    "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
    "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded"
)
PNEUMONIAMNIST_URL = "https://zenodo.org/records/10519652/files/pneumoniamnist.npz"
_MNIST_LABELS = np.array(["NORMAL", "PNEUMONIA"])


def make_synthetic_cxr(
    n_samples: int = 200,
    *,
    image_size: int = 64,
    positive_fraction: float = 0.5,
    lesion_size: tuple[float, float] = (0.07, 0.1),
    noise: float = 0.05,
    random_state: int | np.random.RandomState | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic chest-like radiographs, with the lesion mask of each.

    Each image has a bright body, two dark lung fields, ribs and noise, with
    random pose and exposure. A ``"PNEUMONIA"`` image also has a bright,
    blurry opacity inside one lung; its ``mask`` marks the opacity. For
    demos, tests and checking that explanations point at the lesion; not a
    model of real disease.

    Parameters
    ----------
    n_samples : int
        Number of images.
    image_size : int
        Side of the square images (at least 16).
    positive_fraction : float
        Expected fraction of ``"PNEUMONIA"`` images.
    lesion_size : (float, float)
        Range of the opacity's radius, as a fraction of the image side.
    noise : float
        Standard deviation of the Gaussian pixel noise (intensity in [0, 1]).
    random_state : int, RandomState or None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, image_size, image_size), dtype uint8
    y : ndarray of shape (n_samples,)
        ``"NORMAL"`` or ``"PNEUMONIA"``.
    masks : ndarray of shape (n_samples, image_size, image_size), dtype bool
        The lesion of each image (all False for ``"NORMAL"``).

    Examples
    --------
    >>> X, y, masks = make_synthetic_cxr(10, image_size=32, random_state=0)
    >>> X.shape, X.dtype, sorted(set(y.tolist()))
    ((10, 32, 32), dtype('uint8'), ['NORMAL', 'PNEUMONIA'])
    >>> bool(masks[y == "NORMAL"].any())
    False
    """
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    if not 0 <= positive_fraction <= 1:
        raise ValueError(
            f"positive_fraction must be in [0, 1], got {positive_fraction}"
        )
    rng = check_random_state(random_state)
    n = int(n_samples)
    positive = rng.random_sample(n) < positive_fraction
    if n >= 2 and 0 < positive_fraction < 1:  # both classes, always
        positive[0], positive[1] = False, True
    grid = (np.arange(image_size) + 0.5) / image_size
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    X = np.empty((n, image_size, image_size), dtype=np.uint8)
    masks = np.zeros((n, image_size, image_size), dtype=bool)
    for i in range(n):
        cx = 0.5 + rng.uniform(-0.04, 0.04)
        cy = 0.52 + rng.uniform(-0.04, 0.04)
        body = np.exp(-(((xx - cx) / 0.42) ** 8 + ((yy - cy) / 0.55) ** 8))
        img = 0.15 + 0.6 * body
        lungs = []
        for side in (-1, 1):
            lx = cx + side * rng.uniform(0.16, 0.2)
            rx, ry = rng.uniform(0.11, 0.14), rng.uniform(0.25, 0.3)
            lung = ((xx - lx) / rx) ** 2 + ((yy - cy + 0.02) / ry) ** 2 <= 1
            lungs.append((lung, lx, rx, ry))
            img = np.where(lung, img - rng.uniform(0.3, 0.4), img)
        ribs = 0.06 * (np.sin(yy * rng.uniform(30, 38) * np.pi) > 0.6)
        img = img + ribs * (body > 0.5)
        if positive[i]:
            lung, lx, rx, ry = lungs[rng.randint(2)]
            ox = lx + rng.uniform(-0.4, 0.4) * rx
            oy = cy + rng.uniform(-0.45, 0.45) * ry
            r = rng.uniform(*lesion_size)
            dist2 = ((xx - ox) ** 2 + (yy - oy) ** 2) / r**2
            opacity = np.exp(-dist2) * lung
            img = img + rng.uniform(0.35, 0.5) * opacity
            masks[i] = (dist2 <= 1.0) & lung
        img = img * rng.uniform(0.85, 1.15) + rng.normal(0, noise, img.shape)
        X[i] = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    y = np.where(positive, "PNEUMONIA", "NORMAL")
    return X, y, masks


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
