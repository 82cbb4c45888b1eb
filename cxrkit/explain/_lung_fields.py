"""How much of a model's evidence lies outside the lung fields: a shortcut check.

A pneumonia classifier that looks at the lungs should put most of its heat
there. Heat on the neck, the shoulders, the abdomen, text markers or the
image border is evidence the model uses that no radiologist would: a
shortcut (DeGrave et al., Nature Machine Intelligence, 2021). The check
needs lung masks: the user's own, one per image, or the lung field of a
typical radiograph that ships with cxrkit (``lung_field_prior``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from cxrkit.explain._base import ImageInput

__all__ = [
    "LungEvidence",
    "evidence_outside_lungs",
    "heat_share",
    "lung_field_prior",
]

#: Half a typical radiograph's lung field: a prior cell is lung at >= this share.
PRIOR_THRESHOLD = 0.5
#: Mean share of heat outside the lung field from which ``summary`` warns.
SHORTCUT_SHARE = 0.5
#: Width of the image border, as a fraction of the side (heat there is never
#: about the lungs: text markers, collimation edges, the patient's outline).
BORDER = 1 / 16


#: Each lung field of ``lung_field_prior``: centre (x, y), half-width,
#: half-height above and below the centre, widening towards the base,
#: superellipse exponent and edge softness, in units of the image side.
#: Fitted by least squares to the share of 6,396 frontal radiographs whose
#: human-drawn lung mask covers each cell of a 32 x 32 grid (V7 Labs'
#: COVID-19 X-ray dataset, CC BY 4.0; most of its images are Kermany et
#: al.'s): mean absolute difference 0.07, and the fields at ``>= 0.5``
#: overlap the masks' with intersection over union 0.83.
#: ``tools/make_lung_prior.py`` refits them from the masks.
LUNG_FIELDS = (
    (0.304, 0.505, 0.134, 0.326, 0.262, 0.148, 4.944, 0.16),  # image left
    (0.695, 0.549, 0.137, 0.365, 0.256, 0.13, 4.914, 0.156),  # image right
)


def lung_field_prior(size: int = 32) -> np.ndarray:
    """Where the lungs of a typical frontal chest X-ray lie, at ``size`` px.

    A smooth map of two lung fields beside the mediastinum, computed from a
    few numbers (``LUNG_FIELDS``) fitted to the share of 6,396 annotated
    frontal radiographs whose lung field covers each pixel, each image
    squashed to a square as cxrkit squashes its inputs: the lung masks of
    V7 Labs' COVID-19 X-ray dataset (human annotators, reviewed by V7;
    CC BY 4.0), drawn on the Kermany et al. (2018) images and about 500
    adult COVID-19 cases.

    Parameters
    ----------
    size : int
        Side of the square map.

    Returns
    -------
    ndarray of shape (size, size), dtype float32
        Values in [0, 1]; ``>= 0.5`` is the lung field of most radiographs
        (about a third of the image).

    Examples
    --------
    >>> prior = lung_field_prior(64)
    >>> prior.shape, round(float((prior >= 0.5).mean()), 2)
    ((64, 64), 0.31)
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    centres = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(centres, centres, indexing="ij")
    prior = np.zeros((size, size))
    for cx, cy, half_width, top, bottom, widening, power, edge in LUNG_FIELDS:
        dy = y - cy
        half_height = np.where(dy < 0, top, bottom)
        width = half_width * np.clip(1 + widening * dy / half_height, 0.05, None)
        radius = np.abs((x - cx) / width) ** power + np.abs(dy / half_height) ** power
        prior += 1 / (1 + np.exp((radius ** (1 / power) - 1) / edge))
    return np.clip(prior, 0, 1).astype(np.float32)


def heat_share(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The share of each heatmap's total heat that lies inside its mask.

    Parameters
    ----------
    heatmaps : ndarray of shape (n, H, W)
        Non-negative maps, e.g. from [`explain`][cxrkit.explain.explain].
    masks : ndarray of shape (n, H, W) or (H, W), bool
        One region per heatmap, or one for all.

    Returns
    -------
    ndarray of shape (n,)
        In [0, 1]; NaN for a map with no heat at all.

    Examples
    --------
    >>> maps = np.zeros((1, 4, 4)); maps[0, 0, 0] = 3; maps[0, 3, 3] = 1
    >>> mask = np.zeros((4, 4), bool); mask[:2, :2] = True
    >>> heat_share(maps, mask).tolist()
    [0.75]
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if heatmaps.ndim != 3 or masks.shape[-2:] != heatmaps.shape[-2:]:
        raise ValueError(
            f"heatmaps {heatmaps.shape} must be (n, H, W) and masks (n, H, W) or "
            f"(H, W) of the same size, got masks {masks.shape}; resize the masks "
            "to the heatmaps' resolution"
        )
    if masks.ndim == 3 and len(masks) != len(heatmaps):
        raise ValueError(f"{len(masks)} masks for {len(heatmaps)} heatmaps")
    if np.any(heatmaps < 0) or not np.all(np.isfinite(heatmaps)):
        raise ValueError("heatmaps must be finite and non-negative")
    total = heatmaps.sum(axis=(1, 2))
    inside = (heatmaps * masks).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def border_mask(size: tuple[int, int], width: float = BORDER) -> np.ndarray:
    """Pixels within ``width`` (a fraction of the side) of the image's edge."""
    h, w = size
    band = max(1, round(width * min(h, w)))
    mask = np.ones((h, w), dtype=bool)
    mask[band : h - band, band : w - band] = False
    return mask


@dataclass(frozen=True)
class LungEvidence:
    """Where a model's heat lies over a set of images: the result of
    [`evidence_outside_lungs`][cxrkit.explain.evidence_outside_lungs].

    Attributes
    ----------
    outside : ndarray of shape (n,)
        Each image's share of heat outside the lung field (NaN: no heat).
    border : ndarray of shape (n,)
        Each image's share of heat on the image border (outer 1/16 of the side).
    area_outside : float
        The share of the image area outside the lung field: what a map with
        heat spread evenly would score (mean over images for own masks).
    method : str
        The heatmap method.
    masks : str
        ``"prior"`` (the lung field of a typical radiograph) or ``"given"``.
    heatmaps : ndarray of shape (n, H, W)
        The heatmaps measured.
    """

    outside: np.ndarray
    border: np.ndarray
    area_outside: float
    method: str
    masks: str
    heatmaps: np.ndarray

    @property
    def mean_outside(self) -> float:
        """Mean share of heat outside the lung field over the images."""
        return float(np.nanmean(self.outside))

    @property
    def mean_border(self) -> float:
        """Mean share of heat on the image border over the images."""
        return float(np.nanmean(self.border))

    def summary(self) -> str:
        """One sentence a user can act on."""
        fields = (
            "the lung field of a typical radiograph"
            if self.masks == "prior"
            else "the given lung masks"
        )
        return (
            f"{100 * self.mean_outside:.0f}% of the heat ({self.method}) lies "
            f"outside {fields} (evenly spread heat: "
            f"{100 * self.area_outside:.0f}%), {100 * self.mean_border:.0f}% on "
            f"the image border, over {len(self.outside)} images. "
            + (
                "Much of the model's evidence is outside the lungs: look for a "
                "shortcut (markers, devices, patient position, image borders)."
                if self.mean_outside >= SHORTCUT_SHARE
                else "Most of the evidence lies in the lungs; this does not show "
                "that the model is right."
            )
        )


def evidence_outside_lungs(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    lung_masks: np.ndarray | None = None,
    method: str | None = None,
    heatmaps: np.ndarray | None = None,
    **options: Any,
) -> LungEvidence:
    """How much of a model's evidence lies outside the lung fields, over images.

    Explains ``X`` (or takes ``heatmaps`` already computed) and measures,
    per image, the share of the heat outside the lung field and on the image
    border. A model that reads the lungs puts most of its heat inside them;
    heat spread evenly would leave about two thirds outside the typical lung
    field. A share near or above that, or heat piled on the border, says the
    model relies on something else: look at the heatmaps before anyone
    relies on the model.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``: a few dozen is enough.
    target : class label, sequence of labels, or None
        The class to explain; None explains the predicted class.
    lung_masks : ndarray of shape (n, H, W), bool, optional
        The lungs of each image, at any resolution (resized to the
        heatmaps'). Default: the lung field of a typical radiograph,
        [`lung_field_prior`][cxrkit.explain.lung_field_prior] ``>= 0.5``.
    method : str, optional
        A key of ``cxrkit.explain.METHODS``; default ``DEFAULT_METHOD``.
    heatmaps : ndarray of shape (n, h, w), optional
        Heatmaps already computed for ``X`` (then ``method`` only names them).
    **options
        Passed to the method.

    Returns
    -------
    LungEvidence
        Per-image shares, their means and ``summary()``.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> evidence = evidence_outside_lungs(clf, X[:4], method="grad_cam")
    >>> evidence.outside.shape, 0 <= evidence.mean_outside <= 1
    ((4,), True)
    """
    from cxrkit.explain._explain import DEFAULT_METHOD, explain

    method = DEFAULT_METHOD if method is None else method
    if heatmaps is None:
        heatmaps = explain(clf, X, target, method=method, **options)
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps has shape {heatmaps.shape}; expected (n, h, w)")
    size = heatmaps.shape[1:]
    if lung_masks is None:
        # Computed at the heatmaps' own size (resized only when they are not
        # square), so the field's edge is as sharp as theirs.
        prior = lung_field_prior(max(size))
        if size[0] != size[1]:
            prior = np.asarray(
                Image.fromarray(prior).resize(size[::-1], Image.Resampling.BILINEAR)
            )
        masks = prior >= PRIOR_THRESHOLD
        area_outside = float(1 - masks.mean())
        kind = "prior"
    else:
        masks = _resized_masks(lung_masks, len(heatmaps), size)
        area_outside = float(1 - masks.mean())
        kind = "given"
    outside = 1 - heat_share(heatmaps, masks)
    border = heat_share(heatmaps, border_mask(size))
    return LungEvidence(outside, border, area_outside, method, kind, heatmaps)


def _resized_masks(masks: Any, n: int, size: tuple[int, int]) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3 or len(masks) != n:
        raise ValueError(
            f"lung_masks has shape {masks.shape}; expected (n, H, W) with one mask "
            f"per image ({n})"
        )
    if not masks.reshape(n, -1).astype(bool).any(axis=1).all():
        raise ValueError("every lung mask must mark at least one pixel")
    if masks.shape[1:] == size:
        return masks.astype(bool)
    return np.stack(
        [
            np.asarray(
                Image.fromarray(m.astype(np.uint8) * 255).resize(
                    size[::-1], Image.Resampling.BILINEAR
                )
            )
            >= 128
            for m in masks
        ]
    )
