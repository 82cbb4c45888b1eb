"""One entry point to every heatmap method, with the recommended one as default."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cxrkit.explain._adaptive_occlusion import adaptive_occlusion
from cxrkit.explain._base import ImageInput
from cxrkit.explain._grad_cam import grad_cam
from cxrkit.explain._grad_cam_plus_plus import grad_cam_plus_plus
from cxrkit.explain._guided_grad_cam import guided_grad_cam
from cxrkit.explain._hires_cam import hires_cam
from cxrkit.explain._input_x_gradient import input_x_gradient
from cxrkit.explain._integrated_gradients import integrated_gradients
from cxrkit.explain._layer_cam import layer_cam
from cxrkit.explain._occlusion import occlusion
from cxrkit.explain._xgrad_cam import xgrad_cam

__all__ = ["DEFAULT_METHOD", "METHODS", "explain", "method_caption"]

#: Heatmap methods by name; each takes ``(clf, X, target=None, **options)``.
METHODS: dict[str, Callable[..., np.ndarray]] = {
    "grad_cam": grad_cam,
    "hires_cam": hires_cam,
    "grad_cam_plus_plus": grad_cam_plus_plus,
    "xgrad_cam": xgrad_cam,
    "layer_cam": layer_cam,
    "input_x_gradient": input_x_gradient,
    "guided_grad_cam": guided_grad_cam,
    "occlusion": occlusion,
    "adaptive_occlusion": adaptive_occlusion,
    "integrated_gradients": integrated_gradients,
}

#: The method ``explain`` uses when none is named, and the one the report,
#: ``cxrkit explain`` and ``cxrkit serve`` draw: occlusion pointed at
#: synthetic lesions best, and adaptive occlusion gives its map around the
#: peaks from fewer forward passes. On real radiographs no method measured
#: pointed at pneumonia opacities reliably (docs: Benchmarks, explanations).
DEFAULT_METHOD = "adaptive_occlusion"


#: Display name and what a method's heat means, shown beside its heatmaps.
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "grad_cam": ("Grad-CAM", "the last block's features, weighted by gradients"),
    "hires_cam": ("HiResCAM", "the last block's gradients times features"),
    "grad_cam_plus_plus": ("Grad-CAM++", "the last block's features, reweighted"),
    "xgrad_cam": ("XGrad-CAM", "the last block's features, reweighted"),
    "layer_cam": ("LayerCAM", "positive gradients times features"),
    "input_x_gradient": ("Input x gradient", "each pixel's first-order share"),
    "guided_grad_cam": ("Guided Grad-CAM", "Grad-CAM times guided gradients"),
    "occlusion": ("Occlusion", "where hiding a patch lowers the class score"),
    "adaptive_occlusion": (
        "Occlusion (adaptive)",
        "where hiding a patch lowers the class score, measured in full near the peak",
    ),
    "integrated_gradients": ("Integrated gradients", "path-integrated gradients"),
}

#: The caveat every heatmap carries.
CAVEAT = "It shows what the model used, not where disease is."


def method_caption(method: str, tta: int = 0) -> str:
    """The name of a heatmap method and a one-line caveat, for beside its maps.

    ``tta``: the model's test-time augmentation; its heatmaps explain the
    image as given, while its probabilities also average ``tta`` transformed
    copies, which the caption then says.

    Examples
    --------
    >>> method_caption("occlusion")
    'Occlusion: where hiding a patch lowers the class score. It shows what the \
model used, not where disease is.'
    >>> print(method_caption("occlusion", tta=4))  # doctest: +NORMALIZE_WHITESPACE
    Occlusion: where hiding a patch lowers the class score. It shows what the
    model used, not where disease is. It explains the image as given; the
    probability also averages 4 copies of it, each shifted, rotated, zoomed and
    changed in brightness and contrast.
    """
    name, meaning = DESCRIPTIONS.get(method, (method, "heatmap"))
    caption = f"{name}: {meaning}. {CAVEAT}"
    if tta:
        caption += (
            " It explains the image as given; the probability also averages "
            f"{tta} copies of it, each shifted, rotated, zoomed and changed in "
            "brightness and contrast."
        )
    return caption


def explain(
    clf: Any,
    X: ImageInput,
    target: Any = None,
    *,
    method: str = DEFAULT_METHOD,
    **options: Any,
) -> np.ndarray:
    """Heatmaps by the named method; by default adaptive occlusion.

    The default gives exact occlusion's map around its peaks from fewer
    forward passes; exact occlusion pointed at synthetic lesions best of
    the methods measured, and the default as often but for 2 of 28 large
    lesions. On real radiographs no method measured pointed at pneumonia
    opacities reliably: with the recommended recipe's models, its peak lay
    in a radiologist's box on 1 or 2 of 23 boxed films, where a random
    pixel lies in one on about 3 (docs: Benchmarks, explanations). Read a
    heatmap as what the model used, not as where disease is.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Images, as for ``clf.predict``.
    target : class label, sequence of labels, or None
        The class to explain; None explains the predicted class.
    method : str
        A key of ``METHODS``.
    **options
        Passed to the method (e.g. ``layer=``, ``batch_size=``).

    Returns
    -------
    ndarray of shape (n, H, W), dtype float32
        Heatmaps in [0, 1].

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> explain(clf, X[:2]).shape
    (2, 32, 32)
    """
    try:
        function = METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"method must be one of {sorted(METHODS)}; got {method!r}"
        ) from None
    return function(clf, X, target, **options)
