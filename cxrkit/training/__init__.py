"""Training: batch augmentation, callbacks and memory settings for ``fit``.

* [`BatchAugmentation`][cxrkit.training.BatchAugmentation],
  [`AUGMENT_PRESETS`][cxrkit.training.AUGMENT_PRESETS] and
  [`build_augmentation`][cxrkit.training.build_augmentation]: the
  ``augment=`` of [`PneumoniaClassifier`][cxrkit.PneumoniaClassifier];
* [`WeightAveraging`][cxrkit.training.WeightAveraging] and
  [`print_epoch_table`][cxrkit.training.print_epoch_table]: skorch callbacks
  cxrkit adds;
* [`reuse_large_buffers`][cxrkit.training.reuse_large_buffers]: keeping large
  freed CPU buffers between batches.

Internal: how the classifier trains and predicts (``_fit``: building the
net, callbacks, datasets, devices, seeds) and resumable checkpoints
(``_checkpoint``). Named training configurations are in
[`cxrkit.recipes`][cxrkit.recipes].
"""

from cxrkit.training._allocator import reuse_large_buffers
from cxrkit.training._augmentation import (
    AUGMENT_PRESETS,
    BatchAugmentation,
    build_augmentation,
)
from cxrkit.training._callbacks import WeightAveraging, print_epoch_table

__all__ = [
    "AUGMENT_PRESETS",
    "BatchAugmentation",
    "WeightAveraging",
    "build_augmentation",
    "print_epoch_table",
    "reuse_large_buffers",
]
