"""Test-time augmentation as a fixed set of views of the image.

``PneumoniaClassifier(tta=k)`` averages the probabilities of each image and
of ``k`` transformed copies of it. The ``k`` transformations are drawn once
from the ``"light"`` augmentation preset (kornia's random affine, brightness
and contrast steps, one draw per copy, seeded by the classifier's
``random_state``) and then kept as plain tensors: for each copy a sampling
grid (the shift, rotation and zoom) and a brightness and a contrast factor.
Applied with ``grid_sample`` and kornia's two colour functions, the same
views run in ``predict_proba`` and inside the ONNX graph of
[`export_onnx`][cxrkit.persistence.export_onnx], so that an exported model
outputs the probabilities that its recorded threshold was chosen on.

Why this is written here: kornia's random augmentation modules draw their
values and apply them in one call, and do not export to ONNX; only the draw
is avoided. The replay applies the affine step as a sampling grid
precomputed in float64 (``warp_affine`` computes it in float32 on every
call) and the colour steps with kornia's own functions
(``adjust_brightness_accumulative``, ``adjust_contrast_with_mean_subtraction``),
which export; the tests check it against kornia's seeded output.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch
import torch.nn.functional as F
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
)
from kornia.geometry.conversions import normalize_homography
from torch import nn

from cxrkit.training._augmentation import build_augmentation, same_on_batch

__all__ = ["TestTimeViews", "shared_views", "view_seeds"]

# Drawing the views seeds torch's global generator (kornia draws from it):
# two threads drawing at once would mix their draws, so views are drawn
# under a lock, once per process and setting (``shared_views``).
_DRAW_LOCK = threading.Lock()


def _seed(random_state: object) -> int:
    """The views' seed: ``random_state`` when it is an int, else 0."""
    return int(random_state) if isinstance(random_state, (int, np.integer)) else 0


def view_seeds(copies: int, random_state: object) -> list[int]:
    """The seed of each copy's draw, from ``random_state`` (see `_seed`)."""
    rng = np.random.RandomState(_seed(random_state))
    return rng.randint(0, 2**31 - 1, size=copies).tolist()


class TestTimeViews(nn.Module):
    """The ``copies`` fixed views of a classifier's test-time augmentation.

    Parameters
    ----------
    image_size : int
        Side of the square model inputs.
    copies : int
        Number of transformed copies (the classifier's ``tta``), at least 1.
    random_state : int or other, default=0
        The classifier's ``random_state``; the copies' draws are seeded by
        it when it is an int, by 0 otherwise, so that a model's views are the
        same in every call and in its ONNX export.

    Examples
    --------
    >>> views = TestTimeViews(32, copies=2, random_state=0)
    >>> x = torch.rand(3, 1, 32, 32)
    >>> views.view(x, 0).shape, len(views)
    (torch.Size([3, 1, 32, 32]), 2)
    >>> bool(torch.allclose(views.view(x, 1), x, atol=1e-2))  # a transformed copy
    False
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, image_size: int, copies: int, random_state: object = 0) -> None:
        super().__init__()
        if copies < 1:
            raise ValueError(f"copies must be at least 1, got {copies}")
        augment = same_on_batch(build_augmentation("light"))
        probe = torch.zeros(1, 1, image_size, image_size)
        grids, factors = [], []
        with _DRAW_LOCK:
            draws = [
                _draw(augment, probe, seed) for seed in view_seeds(copies, random_state)
            ]
        for matrix, brightness_factor, contrast_factor in draws:
            # The transformation exactly, in float64 (kornia's own float32
            # arithmetic gives grey levels within 4e-5 of these at 224 px).
            size = (image_size, image_size)
            to_output = normalize_homography(matrix, size, size, align_corners=False)
            grid = F.affine_grid(
                torch.linalg.inv(to_output)[:, :2, :],
                [1, 1, image_size, image_size],
                align_corners=False,
            )
            grids.append(grid.float())
            factors.append([brightness_factor, contrast_factor])
        self.register_buffer("grids", torch.cat(grids))  # (copies, S, S, 2)
        self.register_buffer("factors", torch.tensor(factors))  # (copies, 2)

    def __len__(self) -> int:
        return len(self.grids)

    def view(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Copy ``k`` of a float batch ``(B, 1, S, S)`` in [0, 1], in [0, 1]."""
        grid = self.grids[k : k + 1].to(x).expand(x.shape[0], -1, -1, -1)
        x = F.grid_sample(
            x, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        # as kornia's ColorJitter: clamped before the colour steps, which
        # clamp their own outputs
        x = adjust_brightness_accumulative(x.clamp(0.0, 1.0), self.factors[k, 0])
        return adjust_contrast_with_mean_subtraction(x, self.factors[k, 1])


def _draw(
    augment: object, probe: torch.Tensor, seed: int
) -> tuple[torch.Tensor, float, float]:
    """One draw of the preset's steps, as a training batch gets it: the
    affine matrix (pixels, float64, ``(1, 3, 3)``) and the brightness and
    contrast factors. torch's global generator is seeded for the draw and
    set back after it."""
    affine, brightness, contrast = augment.steps
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        augment(probe)
    return (
        affine.transform_matrix[:1].double(),
        float(brightness._params["brightness_factor"][0]),
        float(contrast._params["contrast_factor"][0]),
    )


@functools.lru_cache(maxsize=16)
def _cached_views(image_size: int, copies: int, seed: int) -> TestTimeViews:
    return TestTimeViews(image_size, copies, seed)


def shared_views(
    image_size: int, copies: int, random_state: object = 0
) -> TestTimeViews:
    """The views of a classifier's ``tta``, drawn once per process and setting.

    The same as ``TestTimeViews(image_size, copies, random_state)``, kept in
    a cache (the draws are not repeated on every ``predict_proba`` call).
    Do not change the returned module: other calls share it.
    """
    return _cached_views(int(image_size), int(copies), _seed(random_state))
