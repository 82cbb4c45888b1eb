"""Images in: reading files and DICOM, finding them in folders, decoding once.

Everything between a user's ``X`` (paths, or arrays) and a network's input
tensor lives here:

* reading one file: [`read_image`][cxrkit.images.read_image] (JPEG, PNG,
  TIFF, DICOM, ...) and [`read_dicom`][cxrkit.images.read_dicom];
* folders of images: [`load_image_folder`][cxrkit.images.load_image_folder],
  [`patient_groups`][cxrkit.images.patient_groups];
* decoding ``X`` once into one object that everything below the public
  entry points takes: [`decode_images`][cxrkit.images.decode_images] and
  [`DecodedImages`][cxrkit.images.DecodedImages], with the process-wide
  cache ([`clear_image_cache`][cxrkit.images.clear_image_cache]);
* a model's deterministic preprocessing
  ([`PREPROCESSING`][cxrkit.images.PREPROCESSING],
  [`model_images`][cxrkit.images.model_images]);
* the model's input contract ([`normalize`][cxrkit.images.normalize],
  ``MEAN``, ``STD``) and the torch datasets of decoded images
  ([`ImageBatches`][cxrkit.images.ImageBatches],
  [`ImageDataset`][cxrkit.images.ImageDataset]).

The most used names are also at the top level (``cxrkit.read_image``,
``cxrkit.load_image_folder``, ``cxrkit.decode_images``, ...).
"""

from cxrkit.images._batches import ImageBatches, ImageDataset
from cxrkit.images._cache import (
    DecodedImages,
    clear_image_cache,
    decode_images,
    load_images,
)
from cxrkit.images._dicom import read_dicom
from cxrkit.images._folders import (
    find_images,
    load_image_folder,
    patient_groups,
    patient_id,
)
from cxrkit.images._normalize import MEAN, STD, normalize
from cxrkit.images._preprocess import (
    PREPROCESSING,
    check_preprocess,
    model_images,
    preprocess_images,
)
from cxrkit.images._reading import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    read_image,
    to_grayscale_uint8,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MEAN",
    "PREPROCESSING",
    "STD",
    "DecodedImages",
    "ImageBatches",
    "ImageDataset",
    "ImageReadError",
    "check_preprocess",
    "clear_image_cache",
    "decode_images",
    "find_images",
    "load_image_folder",
    "load_images",
    "model_images",
    "normalize",
    "patient_groups",
    "patient_id",
    "preprocess_images",
    "read_dicom",
    "read_image",
    "to_grayscale_uint8",
]
