"""cxrkit: chest X-ray pneumonia classification with the scikit-learn interface.

For research and education; not a medical device.
"""

from cxrkit._version import __version__
from cxrkit.cache import DecodedImages, clear_image_cache, decode_images, load_images
from cxrkit.classifier import PneumoniaClassifier
from cxrkit.data import load_image_folder, patient_groups
from cxrkit.io import ImageReadError, read_image

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
