"""Heatmaps on chest X-rays: one overlay with a colour bar, or a labelled grid.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no
display needed); save them with ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from cxrkit.images._cache import decode_images
from cxrkit.images._reading import to_grayscale_uint8

__all__ = [
    "heatmap_overlay",
    "method_title",
    "plot_explanations",
    "plot_heatmap",
    "plot_heatmap_grid",
]

_CAPTION_TAIL = "what the model used, not a diagnosis (research use only)"


def _grid_caption(method_name: str | None) -> str:
    """The line above a grid of heatmaps: the method, what it shows, the caveat."""
    if not method_name:
        return f"Heatmaps: {_CAPTION_TAIL}"
    from cxrkit.explain import method_caption  # plot sits below explain

    return f"{method_caption(method_name)} Research use only."


def _gray(image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(
            f"image has shape {image.shape}; expected one image (H, W) or (H, W, C)"
        )
    return to_grayscale_uint8(image)


def _draw(ax: Axes, image: np.ndarray, heatmap: np.ndarray, alpha: float, cmap: str):
    heatmap = np.asarray(heatmap, dtype=float)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap has shape {heatmap.shape}; expected (H, W)")
    h, w = image.shape
    # both layers span the same extent, so a heatmap of another resolution
    # (e.g. the model's) still lies on the image it explains
    extent = (0, w, h, 0)
    ax.imshow(image, cmap="gray", extent=extent, interpolation="antialiased")
    mappable = ax.imshow(
        heatmap,
        cmap=cmap,
        alpha=alpha,
        vmin=0,
        vmax=1,
        extent=extent,
        interpolation="bilinear",
    )
    ax.set_axis_off()
    return mappable


def plot_heatmap(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    ax: Axes | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    colorbar: bool = True,
    title: str | None = None,
) -> Axes:
    """Overlay a heatmap in [0, 1] on a grayscale X-ray, with a colour bar.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C)
        The radiograph (shown in grayscale).
    heatmap : ndarray of shape (h, w)
        Values in [0, 1], e.g. one row of [`grad_cam`][cxrkit.explain.grad_cam];
        stretched over the image when its size differs.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    alpha : float
        Opacity of the heatmap.
    cmap : str
        Matplotlib colour map of the heatmap.
    colorbar : bool
        Add a colour bar labelled "relevance".
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np
    >>> ax = plot_heatmap(np.zeros((32, 32)), np.eye(32), title="example")
    >>> ax.get_title()
    'example'
    """
    if ax is None:
        ax = Figure(figsize=(4.5, 4), layout="constrained").subplots()
    mappable = _draw(ax, _gray(image), heatmap, alpha, cmap)
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax, fraction=0.046, label="relevance")
    if title is not None:
        ax.set_title(title)
    return ax


def _caption(
    y_true: Any, y_pred: Any, proba: Any, i: int, names: Any = None, label: str = "p"
) -> str:
    lines = [] if names is None else [str(names[i])]
    if y_true is not None:
        lines.append(f"true: {y_true[i]}")
    if y_pred is not None:
        text = f"pred: {y_pred[i]}"
        if proba is not None:  # of the class called, or (label) of another
            p = f"{float(proba[i]):.2f}"
            text += f" (p={p})" if label == "p" else f", {label}={p}"
        lines.append(text)
    elif proba is not None:
        lines.append(f"{label}={float(proba[i]):.2f}")
    return "\n".join(lines)


#: How figures name each heatmap method of ``cxrkit.explain.METHODS``.
def method_title(method: str | Callable[..., Any]) -> str:
    """The name of a heatmap method as a figure shows it.

    Parameters
    ----------
    method : str or callable
        A key of ``cxrkit.explain.METHODS``, or one of its functions.

    Returns
    -------
    str

    Examples
    --------
    >>> method_title("grad_cam"), method_title("occlusion")
    ('Grad-CAM', 'Occlusion')
    """
    from cxrkit.explain._explain import DESCRIPTIONS  # the one table of names

    name = method if isinstance(method, str) else getattr(method, "__name__", "")
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name][0]
    return name.replace("_", " ").capitalize() or "Heatmap"


def plot_heatmap_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    heatmaps: np.ndarray,
    *,
    y_true: Sequence[Any] | None = None,
    y_pred: Sequence[Any] | None = None,
    proba: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
    ncols: int = 4,
    fig: Figure | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    title: str | None = None,
    proba_label: str = "p",
) -> Figure:
    """A grid of X-rays with their heatmaps, true and predicted labels.

    Parameters
    ----------
    images : ndarray of shape (n, H, W) or (n, H, W, C), or a list of images
    heatmaps : ndarray of shape (n, h, w)
        Values in [0, 1].
    y_true, y_pred : sequences of labels, optional
        Shown above each image; a wrong prediction's title is red.
    proba : sequence of float, optional
        Probability of the predicted (or explained) class, shown as ``p=``.
    names : sequence of str, optional
        A first line above each image, e.g. its file name.
    ncols : int, default=4
        Images per row.
    fig : matplotlib Figure, optional
        Drawn into (cleared first); a new figure when None.
    alpha : float, default=0.45
        As in [`plot_heatmap`][cxrkit.plot.plot_heatmap].
    cmap : str, default="jet"
        As in [`plot_heatmap`][cxrkit.plot.plot_heatmap].
    title : str, optional
        Above the grid; name the heatmap method here (e.g. from
        [`method_title`][cxrkit.plot.method_title]).
    proba_label : str, default="p"
        How each panel names ``proba``, e.g. ``"P(PNEUMONIA)"`` when it is
        the positive class's probability rather than the predicted class's.

    Returns
    -------
    matplotlib.figure.Figure
        With one shared colour bar.

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_heatmap_grid(np.zeros((3, 32, 32)), np.ones((3, 8, 8)) / 2,
    ...                         y_true=["A", "B", "B"], y_pred=["A", "A", "B"],
    ...                         proba=[0.9, 0.6, 0.8], ncols=2)
    >>> len([ax for ax in fig.axes if ax.images])
    3
    """
    heatmaps = np.asarray(heatmaps)
    n = len(images)
    if heatmaps.ndim != 3 or len(heatmaps) != n:
        raise ValueError(
            f"heatmaps has shape {heatmaps.shape}; expected (n, h, w) with one "
            f"heatmap per image ({n} images)"
        )
    for name, values in (
        ("y_true", y_true),
        ("y_pred", y_pred),
        ("proba", proba),
        ("names", names),
    ):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries for {n} images")
    if n == 0:
        raise ValueError("images is empty: nothing to plot")
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    if fig is None:
        fig = Figure(figsize=(2.6 * ncols + 0.8, 2.9 * nrows), layout="constrained")
    else:
        fig.clear()
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    mappable = None
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_axis_off()
            continue
        mappable = _draw(ax, _gray(images[i]), heatmaps[i], alpha, cmap)
        wrong = y_true is not None and y_pred is not None and y_true[i] != y_pred[i]
        ax.set_title(
            _caption(y_true, y_pred, proba, i, names, proba_label),
            fontsize=9,
            color="tab:red" if wrong else "black",
        )
    fig.colorbar(mappable, ax=axes.tolist(), fraction=0.03, label="relevance")
    if title is not None:
        fig.suptitle(title, fontsize=10, wrap=True)  # a caption can be long
    return fig


def plot_explanations(
    clf: Any,
    X: Any,
    y: Sequence[Any] | None = None,
    *,
    method: Callable[..., np.ndarray] | None = None,
    heatmaps: np.ndarray | None = None,
    ncols: int = 4,
    fig: Figure | None = None,
    method_name: str | None = None,
) -> Figure:
    """Explain a fitted classifier's predictions on ``X`` and draw the grid.

    Computes the heatmaps of the predicted class (with
    [`explain`][cxrkit.explain.explain]'s recommended method unless ``method``
    says otherwise), the predictions and their probabilities, then calls
    [`plot_heatmap_grid`][cxrkit.plot.plot_heatmap_grid]; for paths, each
    panel also shows the file name.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted classifier.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        A few images (each gets a panel).
    y : sequence of labels, optional
        True labels, shown with the predictions.
    method : callable, optional
        ``method(clf, X)`` returning heatmaps, e.g.
        [`grad_cam`][cxrkit.explain.grad_cam]; default
        [`explain`][cxrkit.explain.explain].
    heatmaps : ndarray of shape (n, h, w), optional
        Heatmaps already computed for ``X`` (say, ``explain(clf, X)`` kept
        from an earlier step): drawn as they are, so that a slow method
        (occlusion) does not run twice. Give ``method`` or ``heatmaps``, not
        both.
    ncols : int, default=4
        Images per row.
    fig : matplotlib Figure, optional
    method_name : str, optional
        The method that drew ``heatmaps`` (a key of
        ``cxrkit.explain.METHODS``), named above the grid; by default the
        name of ``method``, or of ``explain``'s recommended method.

    Returns
    -------
    matplotlib.figure.Figure
        Titled with the heatmap method's name.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(16, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> fig = plot_explanations(clf, X[:4], y[:4])
    >>> len([ax for ax in fig.axes if ax.images])
    4
    >>> from cxrkit.explain import grad_cam
    >>> maps = grad_cam(clf, X[:4])
    >>> fig = plot_explanations(clf, X[:4], y[:4], heatmaps=maps)  # not recomputed
    """
    if heatmaps is None:
        if method is None:
            from cxrkit.explain import DEFAULT_METHOD
            from cxrkit.explain import explain as method

            method_name = method_name or DEFAULT_METHOD
        heatmaps = method(clf, X)
        method_name = method_name or getattr(method, "__name__", None)
    elif method is not None:
        raise ValueError(
            "got both method and heatmaps; pass heatmaps to draw maps already "
            "computed, or method to compute them"
        )
    decoded = decode_images(X, clf.image_size)
    proba = clf.predict_proba(decoded)
    y_pred = clf.classes_[proba.argmax(axis=1)]
    names = None
    if decoded.paths is None:
        images = np.asarray(X)
    else:
        images = decoded.pixels
        names = [Path(p).name for p in decoded.paths]
    fig = plot_heatmap_grid(
        images,
        heatmaps,
        y_true=None if y is None else list(y),
        y_pred=list(y_pred),
        proba=proba.max(axis=1),
        names=names,
        ncols=ncols,
        fig=fig,
    )
    fig.suptitle(_grid_caption(method_name), fontsize=8, wrap=True)
    return fig


def heatmap_overlay(
    image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
    """A heatmap in colour over a grayscale image, as an RGB ``uint8`` array.

    The heatmap (any resolution, values in [0, 1]) is resized bilinearly to
    the image. Its colour is mixed in with weight ``alpha * heat``, so the
    image shows unchanged where the heatmap is 0 (``plot_heatmap`` draws the
    same overlay on matplotlib axes, for figures).

    Examples
    --------
    >>> import numpy as np
    >>> image = np.full((4, 6), 100, np.uint8)
    >>> heat = np.zeros((2, 2)); heat[0, 0] = 1
    >>> out = heatmap_overlay(image, heat)
    >>> out.shape, out.dtype.name, out[-1, -1].tolist()
    ((4, 6, 3), 'uint8', [100, 100, 100])
    """
    height, width = image.shape
    heat = Image.fromarray(np.asarray(heatmap, dtype=np.float32))
    heat = np.clip(np.asarray(heat.resize((width, height), Image.BILINEAR)), 0, 1)
    colour = colormaps[cmap](heat)[..., :3] * 255
    weight = (alpha * heat)[..., None]
    gray = np.repeat(image[..., None].astype(np.float32), 3, axis=2)
    return np.rint(gray * (1 - weight) + colour * weight).astype(np.uint8)
