"""Adaptive occlusion: occlusion's map where it matters, from under half its passes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.explain._base import ImageInput, explain_batches, smoothed
from cxrkit.explain._incremental import PatchScorer
from cxrkit.explain._occlusion import fill_baseline, patch_grid
from cxrkit.models._inference_model import inference_model

__all__ = ["adaptive_occlusion"]

#: Input pixels per forward pass (images and patch positions together):
#: about 167 inputs of 112 px, 41 of 224 px. A few large passes cost a CPU
#: much less than many small ones.
PASS_PIXELS = 2**21


def _positive_int(name: str, value: Any, low: int) -> int:
    if not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def adaptive_occlusion(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    window: int | None = None,
    stride: int | None = None,
    coarse: int = 3,
    refine: int = 2,
    peaks: int = 2,
    fill: str = "mean_image",
    smooth: float = 1 / 32,
    batch_size: int = 32,
) -> np.ndarray:
    """Occlusion heatmaps, measured in full only around their peak.

    The same map as [`occlusion`][cxrkit.explain.occlusion] (a patch of
    ``window`` px, filled from the model's mean training image, slides in
    steps of ``stride``; each pixel gets the mean drop of the class logit
    over the patches that hid it, positive part, blurred), but not every
    patch position is evaluated. First every ``coarse``-th position along
    each axis (a 5 x 5 grid with the defaults); their drops, interpolated
    bilinearly (so that the interpolated maximum is never higher than a
    measured drop), give the drop at every other position. Then the
    positions within ``refine`` steps of the interpolated maximum, and of
    the next ``peaks - 1`` maxima outside those, are evaluated too, so the
    map is exact where its peaks are. With the defaults that is 25 + at
    most 48 forward passes per image (two 5 x 5 neighbourhoods, each holding
    at least one coarse position) instead of occlusion's 169: about a third
    of the time, and fast enough to be the heatmap a person waits for.

    The price: away from the peak the map is interpolated from the coarse
    grid, so a second region of evidence has the right place and height only
    roughly, and a narrow peak the coarse grid misses entirely is not
    refined. ``coarse=1`` (or a ``refine`` as large as the grid) evaluates
    every position: exactly ``occlusion``'s map.

    Written here rather than with Captum's ``Occlusion``, which evaluates
    every position of a regular grid: which positions to evaluate depends,
    per image, on the coarse result. For a timm EfficientNet (the
    recommended recipe's) the first layers of each occluded copy run only
    on a crop around its patch, pasted into the clean image's features: the
    same drops in about 40% of the time at 224 px.

    For research and education; not a medical device.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``.
    target : class label, sequence of labels, or None
        The class to explain; None explains the predicted class.
    window, stride : int, optional
        Patch side and step in model pixels, as in ``occlusion`` (default
        ``image_size // 4`` and a quarter of the window; ``stride`` at most
        ``window``).
    coarse : int
        Evaluate every ``coarse``-th position first (1: all of them).
    refine : int
        Then every position within ``refine`` steps (along each axis) of the
        interpolated maximum.
    peaks : int
        Refine around this many maxima: the highest interpolated drop, then
        the highest outside the positions near it, and so on.
    fill : {"mean_image", "gray"}
        What replaces the hidden pixels, as in ``occlusion``.
    smooth : float
        Standard deviation of the Gaussian blur, as a fraction of the model's
        ``image_size`` (0: none).
    batch_size : int
        Images per batch.

    Returns
    -------
    ndarray of shape (n, H, W), dtype float32
        Heatmaps in [0, 1], at the resolution of the images as given (arrays)
        or of the model (paths).

    See Also
    --------
    occlusion, explain, evidence_outside_lungs

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> adaptive_occlusion(clf, X[:2]).shape
    (2, 32, 32)
    >>> from cxrkit.explain import occlusion
    >>> exact = occlusion(clf, X[:2])
    >>> bool(np.allclose(adaptive_occlusion(clf, X[:2], coarse=1), exact, atol=1e-5))
    True
    """
    size = clf.image_size
    window, stride = patch_grid(size, window, stride)
    coarse = _positive_int("coarse", coarse, 1)
    refine = _positive_int("refine", refine, 0)
    peaks = _positive_int("peaks", peaks, 1)
    baseline = fill_baseline(clf, fill)
    starts = torch.arange(0, size - window + 1, stride)
    n = len(starts)
    grid = _Grid(n, coarse)
    hidden = torch.zeros(n * n, 1, size, size, dtype=torch.bool)
    for k in range(n * n):
        top, left = starts[k // n], starts[k % n]
        hidden[k, :, top : top + window, left : left + window] = True
    box = torch.ones(1, 1, window, window)

    def attribute(
        model: nn.Module, xb: torch.Tensor, tb: torch.Tensor | None
    ) -> torch.Tensor:
        fill_with = (
            torch.zeros_like(xb[0])
            if isinstance(baseline, float)
            else baseline.to(xb)[0]
        )
        masks = hidden.to(xb.device)
        model = inference_model(model)
        per_pass = max(1, PASS_PIXELS // xb[0].numel())
        scorer = PatchScorer(model, masks, fill_with, starts.tolist(), window, per_pass)
        with torch.no_grad():
            xb = xb.detach()
            maps = []
            # images in groups whose coarse inputs fit one pass
            group = max(1, per_pass // len(grid.first))
            for start in range(0, len(xb), group):
                x = xb[start : start + group]
                t = None if tb is None else tb[start : start + group]
                drops = _drops(scorer, x, t, grid, refine, peaks)
                maps.append(_spread(drops, box.to(xb), stride, size))
            return torch.cat(maps).clamp_min(0)

    attribute = smoothed(attribute, smooth)
    return explain_batches(clf, X, target, batch_size, attribute, needs_target=False)


class _Grid:
    """The ``n`` x ``n`` patch positions, and the coarse ones evaluated first."""

    def __init__(self, n: int, coarse: int) -> None:
        self.n = n
        axis = sorted(set(range(0, n, coarse)) | {n - 1})
        self.axis = torch.tensor(axis)
        self.first = (self.axis[:, None] * n + self.axis[None, :]).reshape(-1)
        # where each position lies between the coarse ones, in grid_sample's
        # [-1, 1] coordinates (align_corners=True: -1 and 1 are the end ones)
        where = np.interp(np.arange(n), axis, np.arange(len(axis)))
        coords = torch.from_numpy(where).float() / max(1, len(axis) - 1) * 2 - 1
        rows, cols = torch.meshgrid(coords, coords, indexing="ij")
        self.coords = torch.stack([cols, rows], dim=-1)[None]

    def interpolate(self, coarse_drops: torch.Tensor) -> torch.Tensor:
        """``(b, m, m)`` drops at the coarse positions -> ``(b, n, n)``.

        Bilinear: an interpolated drop never exceeds the coarse ones around
        it, so the map's maximum is always a measured drop (bicubic
        overshoots, and could put the peak where nothing was measured).
        """
        if coarse_drops.shape[-1] == 1:
            return coarse_drops.expand(-1, self.n, self.n).clone()
        return F.grid_sample(
            coarse_drops[:, None],
            self.coords.expand(len(coarse_drops), -1, -1, -1).to(coarse_drops),
            mode="bilinear",
            align_corners=True,
        )[:, 0]


def _class_scores(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, classes[:, None])[:, 0]


def _drops(
    scorer: PatchScorer,
    x: torch.Tensor,
    targets: torch.Tensor | None,
    grid: _Grid,
    refine: int,
    peaks: int,
) -> torch.Tensor:
    """``(b, n, n)`` drops of the class logit, exact at the coarse positions
    and around the interpolated peak, interpolated elsewhere."""
    b, n, m = len(x), grid.n, len(grid.axis)
    first = grid.first.to(x.device)
    logits = scorer.clean(x)
    if targets is None:  # the predicted class of each clean image
        targets = logits.argmax(dim=1)
    clean = _class_scores(logits, targets)
    image = torch.arange(b, device=x.device).repeat_interleave(len(first))
    scores = _class_scores(scorer.hidden(image, first.repeat(b)), targets[image])
    coarse_drops = (clean[:, None] - scores.reshape(b, -1)).reshape(b, m, m)
    drops = grid.interpolate(coarse_drops)
    known = torch.zeros(b, n * n, dtype=torch.bool, device=x.device)
    known[:, first] = True
    exact = drops.flatten(1).clone()
    exact[:, first] = coarse_drops.flatten(1)
    # the positions near each image's highest interpolated drops (the
    # highest, then the highest outside what is near it, ...), not yet
    # evaluated
    steps = torch.arange(n, device=x.device)
    near = torch.zeros_like(known)
    candidates = drops.flatten(1).clone()
    for _ in range(peaks):
        peak = candidates.argmax(dim=1)
        rows = (steps[None, :, None] - peak[:, None, None] // n).abs() <= refine
        cols = (steps[None, None, :] - peak[:, None, None] % n).abs() <= refine
        near |= (rows & cols).flatten(1)
        candidates[near] = float("-inf")
    near &= ~known
    image, position = near.nonzero(as_tuple=True)
    if len(image):
        scores = _class_scores(scorer.hidden(image, position), targets[image])
        exact[image, position] = clean[image] - scores
    return exact.reshape(b, n, n)


def _spread(drops: torch.Tensor, box: torch.Tensor, stride: int, size: int):
    """Occlusion's map: each pixel's mean drop over the patches that cover it
    (0 where none does), from ``(b, n, n)`` drops on the patch grid."""
    drops = drops[:, None]
    total = F.conv_transpose2d(drops, box, stride=stride)
    count = F.conv_transpose2d(torch.ones_like(drops[:1]), box, stride=stride)
    covered = torch.where(count > 0, total / count, 0)
    maps = drops.new_zeros(len(drops), 1, size, size)
    maps[..., : covered.shape[-2], : covered.shape[-1]] = covered
    return maps
