"""cxrkit: chest X-ray pneumonia classification with the scikit-learn interface.

For research and education; not a medical device.
"""

from cxrkit import _moved
from cxrkit._version import __version__
from cxrkit.classifier import PneumoniaClassifier
from cxrkit.images import (
    DecodedImages,
    ImageReadError,
    clear_image_cache,
    decode_images,
    load_image_folder,
    load_images,
    patient_groups,
    read_image,
)

# The old flat module paths (cxrkit.io, cxrkit.transforms, ...) still import.
_moved.install()

__all__ = [
    "DecodedImages",
    "ImageReadError",
    "PneumoniaClassifier",
    "__version__",
    "clear_image_cache",
    "decode_images",
    "load_image_folder",
    "load_images",
    "patient_groups",
    "read_image",
]
