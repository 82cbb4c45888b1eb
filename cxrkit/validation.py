"""Shift-aware validation: holdouts that shortcuts and acquisition shift cannot pass.

A random patient split of one hospital's folder shares scanner, period,
resizing and the traits that differ between its class folders with the
training part, so a model that leans on those traits still scores almost
perfectly there, and then fails on another population. In the Kermany
training split, six simple acquisition statistics of the images (sharpness,
dark and bright levels, exposure, dark border, saturation; no lung content)
predict the class far better than chance (the user guide's *Validation*
page gives the figures): PNEUMONIA originals are smaller and wider than
NORMAL ones, so once squashed to a square they are blurrier and
geometrically compressed.

This module gives three ways to validate that do not reward those shortcuts:

* [`ConfounderMatchedSplit`][cxrkit.validation.ConfounderMatchedSplit]: a
  patient-grouped holdout in which NORMAL and PNEUMONIA images are matched on
  [`acquisition_traits`][cxrkit.validation.acquisition_traits], so that the
  traits no longer predict the class there;
* [`LeaveBatchOut`][cxrkit.validation.LeaveBatchOut]: whole acquisition
  batches (contiguous runs of study / patient numbers) held out;
* [`shift_images`][cxrkit.validation.shift_images]: a battery of synthetic
  acquisition shifts (gamma, contrast, blur, noise, lower resolution, JPEG,
  zoom, histogram offset) to apply to a holdout, and
  [`shifted_predictions`][cxrkit.validation.shifted_predictions], a model's
  probabilities on a holdout under every shift: choose the operating
  threshold on those with
  [`select_robust_threshold`][cxrkit.metrics.select_robust_threshold].

The splitters follow scikit-learn's ``split(X, y, groups)`` protocol, so they
work as ``cv=`` in ``GridSearchCV`` or ``cross_validate``. Select recipes by
their worst case across these, not by in-distribution AUC.

For research and education; not a medical device.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state

from cxrkit.images._cache import load_images
from cxrkit.images._folders import patient_id
from cxrkit.images._inputs import is_path_like_sequence

__all__ = [
    "SHIFTS",
    "TRAITS",
    "ConfounderMatchedSplit",
    "LeaveBatchOut",
    "acquisition_order",
    "acquisition_traits",
    "shift_images",
    "shifted_predictions",
]

#: Side at which traits are measured when ``X`` holds paths: the size of
#: the 224 px Kermany copies the traits were first measured on; traits of one
#: dataset must all be measured at one size (sharpness depends on it).
TRAIT_IMAGE_SIZE = 224

TRAITS = (
    "sharpness",
    "dark_level",
    "bright_level",
    "exposure",
    "dark_border",
    "saturation",
)
"""Names of the columns returned by `acquisition_traits`, in order."""


def acquisition_traits(images: np.ndarray) -> np.ndarray:
    """Per-image statistics of how a radiograph was acquired and processed.

    None of them looks at lung content on purpose: they describe the
    original resolution, exposure and processing of the image, which differ
    between the class folders of the Kermany data and are shortcuts a model
    can learn instead of pneumonia.

    Parameters
    ----------
    images : ndarray of shape (n, H, W), dtype uint8
        Grey images, all of the same size (decode them with
        [`cxrkit.load_images`][cxrkit.load_images]; sharpness depends on the
        size, so compare traits measured at one size only).

    Returns
    -------
    ndarray of shape (n, 6)
        Columns in the order of [`TRAITS`][cxrkit.validation.TRAITS]:

        * ``sharpness``: log of the mean absolute Laplacian (grey levels): a
          proxy for the resolution of the original before it was resized;
        * ``dark_level`` / ``bright_level``: 1st and 99th percentile;
        * ``exposure``: mean grey level;
        * ``dark_border``: fraction of the outer 5% band below grey level 20
          (collimation, black borders);
        * ``saturation``: fraction of pixels at 250 or above (burnt-in text,
          markers, clipping).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
    >>> acquisition_traits(images).shape
    (3, 6)
    >>> flat = acquisition_traits(np.full((1, 32, 32), 128, np.uint8))[0]
    >>> dict(zip(TRAITS, flat.round(2).tolist()))["exposure"]
    128.0
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be a uint8 array of shape (n, H, W), got dtype "
            f"{images.dtype} and shape {images.shape}; decode paths with "
            "cxrkit.load_images(X, size)"
        )
    n, h, w = images.shape
    f = images.astype(np.float32)
    sharp = np.array([np.abs(ndimage.laplace(im)).mean() for im in f])
    dark, bright = np.percentile(f.reshape(n, -1), [1, 99], axis=1)
    b = max(1, round(0.05 * min(h, w)))
    band = np.ones((h, w), dtype=bool)
    band[b:-b, b:-b] = False
    return np.column_stack(
        [
            np.log(sharp + 1e-3),
            dark,
            bright,
            f.mean(axis=(1, 2)),
            (f[:, band] < 20).mean(axis=1),
            (f >= 250).mean(axis=(1, 2)),
        ]
    )


def _traits_of(X: object, files: bool) -> np.ndarray:
    """Traits of ``X``: files (``files``) are decoded at ``TRAIT_IMAGE_SIZE``
    (cached), arrays of images read at their own size."""
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == len(TRAITS):
        return X.astype(np.float64)  # precomputed traits
    size = TRAIT_IMAGE_SIZE if files else np.asarray(X).shape[1]
    images, _ = load_images(X, size)
    return acquisition_traits(images)


def _check_groups(
    paths: Sequence[str | os.PathLike] | None, n: int, y: object, groups: object
) -> tuple[np.ndarray, ...]:
    """Labels and patient codes of ``n`` images; ``paths`` are their files
    (None for arrays), where patient ids are parsed when ``groups`` is None."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y must be 1-D with one label per image in X ({n})")
    if groups is None:
        if paths is None:
            raise ValueError(
                "groups is None and X is not a sequence of Kermany-style paths; "
                "pass groups=patient ids so that no patient is on both sides"
            )
        groups = [patient_id(p) or os.fspath(p) for p in paths]
    groups = np.asarray(groups)
    if len(groups) != len(y):
        raise ValueError(f"groups has {len(groups)} entries for {len(y)} images")
    _, group_codes = np.unique(groups.astype(str), return_inverse=True)
    return y, group_codes


class ConfounderMatchedSplit:
    """One patient-grouped holdout matched on acquisition traits.

    A pool of whole patients (about ``holdout_fraction`` of the images,
    rounded to ``1 / k`` as described below; stratified by class) is held
    out. Within the pool, a logistic model of the class given the
    [`acquisition_traits`][cxrkit.validation.acquisition_traits] (fitted on
    every image, it only describes the data) gives each image a propensity;
    the pool is cut into ``n_bins`` quantile bins of it, and each bin keeps as
    many images of each class (drawn at random). In the holdout that remains,
    the traits no longer tell the classes apart (check
    ``trait_auc_`` after ``split``), so a model that learned them instead of
    pneumonia scores no better than chance on that part of its signal.

    Pool images left out by the matching are used neither for training nor
    for validation (their patients are partly in the holdout); pool patients
    none of whose images were kept go back to training.

    Parameters
    ----------
    holdout_fraction : float, default=1/3
        Approximate fraction of the images in the pool (before matching).
        The pool is one of ``k = max(2, round(1 / holdout_fraction))``
        shuffled folds of scikit-learn's ``StratifiedGroupKFold`` (whole
        patients, each class in about the same proportion), so it holds
        about ``1 / k`` of the images: 0.25 and 1/3 are kept, 0.3 becomes
        1/3, and every fraction from 0.4 up becomes 1/2. A ``UserWarning``
        is issued when ``1 / k`` differs from ``holdout_fraction`` by more
        than 0.05.
    n_bins : int, default=10
        Number of propensity bins; more bins match more finely and keep
        fewer images.
    random_state : int, RandomState or None, default=0
        Seeds the patient pool and the draws within bins.

    Attributes
    ----------
    trait_auc_ : dict
        After ``split``: ROC AUC of the trait propensity for the class on the
        whole data (``"all"``), the pool (``"pool"``) and the matched holdout
        (``"holdout"``); 0.5 means the traits carry no class information.
    n_dropped_ : int
        Pool images left out by the matching.
    pool_ : ndarray
        Indices of the whole patient pool before matching (an ordinary
        random-patient holdout, for comparison with the matched one).

    Examples
    --------
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(120, image_size=32, random_state=0)
    >>> cv = ConfounderMatchedSplit(n_bins=4, random_state=0)
    >>> train, test = next(cv.split(X, y, groups=np.arange(len(y))))
    >>> len(set(train) & set(test))
    0
    >>> n_normal, n_pneumonia = np.unique(y[test], return_counts=True)[1]
    >>> bool(n_normal == n_pneumonia)  # matched within bins: balanced
    True
    """

    def __init__(
        self,
        holdout_fraction: float = 1 / 3,
        n_bins: int = 10,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.holdout_fraction = holdout_fraction
        self.n_bins = n_bins
        self.random_state = random_state

    def get_n_splits(self, X: object = None, y: object = None, groups=None) -> int:
        """Always 1 (one matched holdout)."""
        return 1

    def split(
        self, X: object, y: object, groups: object = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield one ``(train, holdout)`` pair of index arrays.

        Parameters
        ----------
        X : sequence of paths, array of images (n, H, W), or array of traits
            (n, 6) from [`acquisition_traits`][cxrkit.validation.acquisition_traits].
        y : array-like of shape (n,)
            Two classes.
        groups : array-like of shape (n,), optional
            Patient ids; parsed from Kermany-style paths when None.
        """
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(
                f"holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}"
            )
        if int(self.n_bins) < 1:
            raise ValueError(f"n_bins must be a positive integer, got {self.n_bins!r}")
        files = is_path_like_sequence(X)  # asked once, here
        y, group_codes = _check_groups(X if files else None, len(X), y, groups)
        classes, y_enc = np.unique(y, return_inverse=True)
        if len(classes) != 2:
            raise ValueError(
                f"ConfounderMatchedSplit needs exactly 2 classes, got {len(classes)}"
            )
        rng = check_random_state(self.random_state)
        traits = _traits_of(X, files)
        propensity_model = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000)
        )
        score = propensity_model.fit(traits, y_enc).decision_function(traits)

        n_folds = max(2, round(1 / self.holdout_fraction))
        if abs(1 / n_folds - self.holdout_fraction) > 0.05 + 1e-9:
            warnings.warn(
                f"holdout_fraction={self.holdout_fraction} is rounded to 1/{n_folds}: "
                f"the pool is 1 of {n_folds} patient-grouped folds, about "
                f"{1 / n_folds:.2f} of the images",
                UserWarning,
                stacklevel=2,
            )
        splitter = StratifiedGroupKFold(
            n_folds, shuffle=True, random_state=rng.randint(2**31 - 1)
        )
        _, pool = next(splitter.split(traits, y_enc, group_codes))
        edges = np.quantile(score[pool], np.linspace(0, 1, int(self.n_bins) + 1))
        bins = np.clip(np.searchsorted(edges, score[pool], side="right") - 1, 0, None)
        bins = np.minimum(bins, int(self.n_bins) - 1)
        keep: list[np.ndarray] = []
        for b in range(int(self.n_bins)):
            members = pool[bins == b]
            per_class = [members[y_enc[members] == k] for k in (0, 1)]
            m = min(len(p) for p in per_class)
            keep += [rng.choice(p, m, replace=False) for p in per_class if m]
        holdout = np.sort(np.concatenate(keep)) if keep else np.array([], dtype=int)
        if len(holdout) == 0:
            raise ValueError(
                "the matched holdout is empty: the classes do not overlap in their "
                "acquisition traits; use fewer n_bins or a larger holdout_fraction"
            )
        # Whole patients leave training; pool patients none of whose images
        # were kept go back to it.
        self.pool_ = np.sort(pool)
        held = np.isin(group_codes, np.unique(group_codes[holdout]))
        train = np.flatnonzero(~held)
        self.n_dropped_ = int(held.sum() - len(holdout))

        self.trait_auc_ = {
            name: float(roc_auc_score(y_enc[idx], score[idx]))
            for name, idx in (
                ("all", np.arange(len(y))),
                ("pool", pool),
                ("holdout", holdout),
            )
        }
        yield train, holdout


def acquisition_order(X: Sequence[str | os.PathLike]) -> np.ndarray:
    """A sortable acquisition key per file: naming scheme, then study number.

    Kermany file names number studies and patients in the order they were
    collected (``IM-0115-0001``, ``NORMAL2-IM-0427-0001``,
    ``person1_bacteria_1``); contiguous runs of those numbers are acquisition
    batches. Names of another form sort after these, by name.

    Parameters
    ----------
    X : sequence of paths

    Returns
    -------
    ndarray of shape (n,), dtype object
        Tuples ``(scheme, number, name)``.

    Examples
    --------
    >>> acquisition_order(["person10_virus_1.jpeg", "IM-0003-0001.jpeg"]).tolist()
    [('person', 10, 'person10_virus_1'), ('IM', 3, 'IM-0003-0001')]
    """
    keys = []
    for p in X:
        stem = Path(os.fspath(p)).name.split(".", 1)[0]
        match = re.match(r"^(NORMAL2-IM|IM)-(\d+)", stem, re.IGNORECASE) or re.match(
            r"^(person)(\d+)_", stem, re.IGNORECASE
        )
        if match:
            keys.append((match.group(1), int(match.group(2)), stem))
        else:
            keys.append(("~", 0, stem))
    out = np.empty(len(keys), dtype=object)
    out[:] = keys
    return out


def _one_batch_per_patient(
    votes: dict[int, dict[int, int]], y: np.ndarray, group_codes: np.ndarray, k: int
) -> np.ndarray:
    """The batch of each image, one per patient.

    ``votes[g][c]`` is the batch that patient ``g``'s images of class ``c``
    (an index into ``np.unique(y)``) fall in when each class is cut alone. A
    patient with images of several classes joins the batch that moves the
    fewest of its images away from their class's own cut, but never one that
    would leave a batch without images of a class where another choice does
    not; ties go to the batch that leaves each class's batches closest in
    size, then to the earliest. Deterministic: patients are settled in the
    order of their codes.
    """
    labels, y_code = np.unique(y, return_inverse=True)
    images = np.zeros((group_codes.max() + 1, len(labels)), dtype=int)
    np.add.at(images, (group_codes, y_code), 1)
    cells = np.zeros((len(labels), k), dtype=int)  # images per (class, batch)
    for g, per_class in votes.items():
        for c, b in per_class.items():
            cells[c, b] += images[g, c]
    chosen = {}
    for g in sorted(votes):
        per_class = votes[g]
        if len(set(per_class.values())) == 1:
            chosen[g] = next(iter(per_class.values()))
            continue

        def cost(b: int, g: int = g, per_class: dict = per_class) -> tuple:
            moved = [c for c, own in per_class.items() if own != b]
            emptied = sum(cells[c, per_class[c]] == images[g, c] for c in moved)
            after = cells.copy()
            for c in moved:
                after[c, per_class[c]] -= images[g, c]
                after[c, b] += images[g, c]
            spread = int((after.max(axis=1) - after.min(axis=1)).sum())
            return emptied, sum(images[g, c] for c in moved), spread, b

        b = min(range(k), key=cost)
        for c, own in per_class.items():
            cells[c, own] -= images[g, c]
            cells[c, b] += images[g, c]
        chosen[g] = b
    empty = np.argwhere(cells == 0)
    if len(empty):
        c, b = empty[0]
        raise ValueError(
            f"batch {b} has no images of class {labels.tolist()[c]!r} once "
            "each patient with images of several classes is kept in one batch; "
            "use a smaller n_splits"
        )
    return np.array([chosen[g] for g in group_codes], dtype=int)


class LeaveBatchOut:
    """Hold out whole acquisition batches, one per class in each split.

    Within each class, images are put in acquisition order
    ([`acquisition_order`][cxrkit.validation.acquisition_order]: naming
    scheme, then study / patient number) and cut into ``n_splits`` contiguous
    runs at patient boundaries (at naming-scheme boundaries where a class has
    enough schemes); split ``k`` holds out run ``k`` of every class. A
    patient with images of several classes is kept whole: all its images
    join the one batch where most of them fall, unless that would leave a
    batch without images of a class (ties: the batch that keeps each
    class's batches closest in size, then the earlier one), so no
    patient is ever on both sides of a split, at the cost of a run that is
    contiguous but for that patient. The splits are deterministic (no
    randomness). On the
    Kermany training split with ``n_splits=2`` that is the ``IM-`` studies
    with the lower half of the ``personN`` patients, then the
    ``NORMAL2-IM-`` studies with the upper half. Unlike a random patient
    split, the model never sees the held-out batches' period or series.

    Parameters
    ----------
    n_splits : int, default=2

    Examples
    --------
    >>> X = ["IM-0001-0001.jpeg", "IM-0002-0001.jpeg", "NORMAL2-IM-0001-0001.jpeg",
    ...      "NORMAL2-IM-0002-0001.jpeg", "person1_virus_1.jpeg",
    ...      "person2_virus_2.jpeg", "person3_virus_3.jpeg", "person4_virus_4.jpeg"]
    >>> y = ["N"] * 4 + ["P"] * 4
    >>> [test.tolist() for _, test in LeaveBatchOut(2).split(X, y)]
    [[0, 1, 4, 5], [2, 3, 6, 7]]
    """

    def __init__(self, n_splits: int = 2) -> None:
        self.n_splits = n_splits

    def get_n_splits(self, X: object = None, y: object = None, groups=None) -> int:
        """The number of splits, ``n_splits``."""
        return int(self.n_splits)

    def split(
        self, X: Sequence[str | os.PathLike], y: object, groups: object = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train, holdout)`` index arrays, one pair per batch.

        Parameters
        ----------
        X : sequence of paths
            Kermany-style file names carry the acquisition order.
        y : array-like of shape (n,)
        groups : array-like of shape (n,), optional
            Patient ids (parsed from the names when None): a patient is never
            cut between two batches, even one with images of several classes.

        Raises
        ------
        ValueError
            When a class has fewer patients than ``n_splits``, or when keeping
            patients of several classes whole leaves a batch without images of
            a class.
        """
        k = int(self.n_splits)
        if k < 2:
            raise ValueError(f"n_splits must be at least 2, got {self.n_splits!r}")
        if not is_path_like_sequence(X):
            raise TypeError(
                "LeaveBatchOut needs file paths: the acquisition order is read "
                "from the file names"
            )
        y, group_codes = _check_groups(X, len(X), y, groups)
        order = acquisition_order(X)
        # each patient's batch in each class it has images of
        votes: dict[int, dict[int, int]] = {}
        for c, label in enumerate(np.unique(y)):
            idx = np.flatnonzero(y == label)
            # one key per patient: its earliest image in acquisition order
            first: dict[int, tuple] = {}
            for i in idx:
                g = group_codes[i]
                first[g] = min(first.get(g, order[i]), order[i])
            patients = sorted(first, key=first.__getitem__)
            if len(patients) < k:
                raise ValueError(
                    f"class {label!r} has {len(patients)} patient(s), fewer than "
                    f"n_splits={k}"
                )
            sizes = np.bincount(group_codes[idx], minlength=group_codes.max() + 1)
            counts = np.array([sizes[g] for g in patients])
            cum = np.cumsum(counts)
            # Whole naming schemes (IM-, NORMAL2-IM-) are batches where a class
            # has enough of them; otherwise contiguous runs of equal size.
            scheme = np.array([first[g][0] for g in patients])
            middle = cum - counts / 2  # of each patient, in images
            starts = np.flatnonzero(np.r_[True, scheme[1:] != scheme[:-1]])
            ends = np.r_[starts[1:], len(patients)]
            scheme_mid = np.repeat(
                [(cum[e - 1] - counts[b:e].sum() / 2) for b, e in zip(starts, ends)],
                ends - starts,
            )
            cut = np.minimum((scheme_mid * k // cum[-1]).astype(int), k - 1)
            if len(np.unique(cut)) < k:
                cut = np.minimum((middle * k // cum[-1]).astype(int), k - 1)
            for g, b in zip(patients, cut):
                votes.setdefault(g, {})[c] = b
        batch = _one_batch_per_patient(votes, y, group_codes, k)
        for b in range(k):
            yield np.flatnonzero(batch != b), np.flatnonzero(batch == b)


# --------------------------------------------------------------- shifts
def _pil_map(
    images: np.ndarray, fn: Callable[[Image.Image], Image.Image]
) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(im))) for im in images])


def _gamma(images: np.ndarray, gamma: float) -> np.ndarray:
    lut = np.round(255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)
    return lut[images]


def _contrast(images: np.ndarray, factor: float) -> np.ndarray:
    mean = images.reshape(len(images), -1).mean(axis=1)[:, None, None]
    return np.clip(np.rint(mean + factor * (images - mean)), 0, 255).astype(np.uint8)


def _downscale(images: np.ndarray, factor: float) -> np.ndarray:
    h, w = images.shape[1:]
    small = (max(1, round(w * factor)), max(1, round(h * factor)))
    return _pil_map(
        images,
        lambda im: im.resize(small, Image.Resampling.BILINEAR, reducing_gap=3.0).resize(
            (w, h), Image.Resampling.BILINEAR
        ),
    )


def _jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    def recompress(im: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        im.save(buffer, format="JPEG", quality=quality)
        return Image.open(buffer).convert("L")

    return _pil_map(images, recompress)


def _zoom(images: np.ndarray, keep: float) -> np.ndarray:
    h, w = images.shape[1:]
    dy, dx = round(h * (1 - keep) / 2), round(w * (1 - keep) / 2)
    return _pil_map(
        images,
        lambda im: im.crop((dx, dy, w - dx, h - dy)).resize(
            (w, h), Image.Resampling.BILINEAR
        ),
    )


def _noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = images + rng.normal(0.0, sigma, images.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _offset(images: np.ndarray, delta: int) -> np.ndarray:
    return np.clip(images.astype(np.int16) + delta, 0, 255).astype(np.uint8)


SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "darker": lambda x, rng: _gamma(x, 1.5),
    "brighter": lambda x, rng: _gamma(x, 1 / 1.5),
    "low_contrast": lambda x, rng: _contrast(x, 0.6),
    "blur": lambda x, rng: _pil_map(
        x, lambda im: im.filter(ImageFilter.GaussianBlur(1.5))
    ),
    "noise": lambda x, rng: _noise(x, 8.0, rng),
    "low_resolution": lambda x, rng: _downscale(x, 0.4),
    "jpeg": lambda x, rng: _jpeg(x, 15),
    "zoom": lambda x, rng: _zoom(x, 0.85),
    "histogram_shift": lambda x, rng: _offset(x, 25),
}
"""The synthetic shift battery: name -> function of ``(images, rng)``.

Each changes how the images look, not what they show; severities are fixed
so that results are comparable between models and runs (see
`shift_images` for what each does).
"""


def shift_images(
    images: np.ndarray, shift: str, *, random_state: int | None = 0
) -> np.ndarray:
    """Apply one shift of the battery [`SHIFTS`][cxrkit.validation.SHIFTS].

    Apply it to images at their source size (e.g. the 224 px copies), before
    the classifier resizes them: a model then sees what it would see from a
    scanner or pipeline that produced such images.

    Parameters
    ----------
    images : ndarray of shape (n, H, W), dtype uint8
    shift : str
        A key of ``SHIFTS``: ``"darker"``, ``"brighter"`` (gamma 1.5 and
        1/1.5), ``"low_contrast"`` (60% of the contrast around the image
        mean), ``"blur"`` (Gaussian, sigma 1.5 px), ``"noise"`` (Gaussian,
        sigma 8 grey levels), ``"low_resolution"`` (down to 40% and back up),
        ``"jpeg"`` (quality 15), ``"zoom"`` (centre 85% enlarged to full
        size), ``"histogram_shift"`` (+25 grey levels).
    random_state : int or None
        Seeds the random shifts (``"noise"``).

    Returns
    -------
    ndarray of the same shape, dtype uint8

    Examples
    --------
    >>> images = np.full((2, 16, 16), 100, np.uint8)
    >>> shift_images(images, "histogram_shift")[0, 0, 0]
    np.uint8(125)
    >>> sorted(SHIFTS)[:3]
    ['blur', 'brighter', 'darker']
    """
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; choose one of {sorted(SHIFTS)}")
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be a uint8 array of shape (n, H, W), got dtype "
            f"{images.dtype} and shape {images.shape}"
        )
    return SHIFTS[shift](images, np.random.default_rng(random_state))


def shifted_predictions(
    clf: Any,
    X: Sequence[str | os.PathLike] | np.ndarray,
    *,
    shifts: Sequence[str] | None = None,
    image_size: int = TRAIT_IMAGE_SIZE,
    random_state: int | None = 0,
) -> dict[str, np.ndarray]:
    """``clf.predict_proba`` of images as acquired and under each shift.

    The input of
    [`select_robust_threshold`][cxrkit.metrics.select_robust_threshold]:
    the same validation images (ideally a
    [`ConfounderMatchedSplit`][cxrkit.validation.ConfounderMatchedSplit]
    holdout) in every version of the shift battery.

    Parameters
    ----------
    clf : fitted classifier
        Anything with ``predict_proba`` on uint8 image arrays, e.g. a fitted
        [`PneumoniaClassifier`][cxrkit.PneumoniaClassifier].
    X : sequence of paths, or ndarray of shape (n, H, W), dtype uint8
        The images. Paths are decoded at ``image_size`` first: shifts apply
        at the size the images came in (224 px for the Kermany copies),
        before the classifier resizes them.
    shifts : sequence of str, optional
        Keys of [`SHIFTS`][cxrkit.validation.SHIFTS] (default: all).
    image_size : int, default=224
        Side at which paths are decoded.
    random_state : int or None, default=0
        Seeds the random shifts.

    Returns
    -------
    dict of str to ndarray of shape (n, n_classes)
        ``"none"`` (as acquired) first, then one entry per shift.

    Examples
    --------
    >>> from sklearn.dummy import DummyClassifier
    >>> class Mean(DummyClassifier):  # stands in for a fitted image model
    ...     def predict_proba(self, X):
    ...         p = np.asarray(X).mean(axis=(1, 2)) / 255
    ...         return np.column_stack([1 - p, p])
    >>> images = np.full((3, 32, 32), 100, np.uint8)
    >>> probas = shifted_predictions(Mean(), images, shifts=["histogram_shift"])
    >>> list(probas), round(float(probas["histogram_shift"][0, 1]), 3)
    (['none', 'histogram_shift'], 0.49)
    """
    names = list(SHIFTS) if shifts is None else list(shifts)
    unknown = sorted(set(names) - set(SHIFTS))
    if unknown:
        raise ValueError(f"unknown shifts {unknown}; choose from {sorted(SHIFTS)}")
    if is_path_like_sequence(X):
        images, _ = load_images(X, image_size)
    else:
        images = np.asarray(X)
    probas = {"none": np.asarray(clf.predict_proba(images))}
    for name in names:
        shifted = shift_images(images, name, random_state=random_state)
        probas[name] = np.asarray(clf.predict_proba(shifted))
    return probas
