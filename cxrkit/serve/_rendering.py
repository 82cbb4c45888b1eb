"""Images the server sends: PNG bytes, and a heatmap laid over its image
(``heatmap_overlay``, from ``cxrkit.plot``)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from cxrkit.plot import heatmap_overlay

__all__ = ["heatmap_overlay", "png_bytes"]


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit grayscale or RGB array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
