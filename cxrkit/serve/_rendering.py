"""Images the server sends: PNG bytes, and a heatmap laid over its image."""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from PIL import Image

__all__ = ["heatmap_overlay", "png_bytes"]


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit grayscale or RGB array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def heatmap_overlay(
    image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
    """A heatmap in colour over a grayscale image, as an RGB ``uint8`` array.

    The heatmap (any resolution, values in [0, 1]) is resized bilinearly to
    the image. Its colour is mixed in with weight ``alpha * heat``, so the
    image shows unchanged where the heatmap is 0 (``cxrkit.plot`` draws the
    same overlay with matplotlib axes, for figures).

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
