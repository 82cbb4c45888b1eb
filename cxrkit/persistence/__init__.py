"""Model files: saving and loading without pickle, provenance, ONNX export.

* [`save_model`][cxrkit.persistence.save_model] and
  [`load_model`][cxrkit.persistence.load_model]: ``.cxr`` files (safetensors
  weights and JSON, no pickle) that record the fitted state
  ([`FITTED_ATTRIBUTES`][cxrkit.persistence.FITTED_ATTRIBUTES]), the
  operating threshold and what the model was trained on;
* [`model_card`][cxrkit.persistence.model_card]: everything known about a
  fitted model, the one source of the report's Model section, the server's
  ``GET /model`` and the ONNX metadata;
* [`decision_rule`][cxrkit.persistence.decision_rule]: the operating
  threshold and positive class a fitted model predicts with, and
  [`training_data_summary`][cxrkit.persistence.training_data_summary];
* [`export_onnx`][cxrkit.persistence.export_onnx]: the network as ONNX, with
  the card and decision rule in its metadata.
"""

from cxrkit.persistence._model_files import (
    FITTED_ATTRIBUTES,
    FORMAT_VERSION,
    INTENDED_USE,
    FittedAttribute,
    load_model,
    model_card,
    model_file_class,
    read_model_metadata,
    reset_chosen_attributes,
    save_model,
)
from cxrkit.persistence._onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    export_onnx,
    onnx_metadata,
)
from cxrkit.persistence._provenance import (
    DecisionRule,
    decision_rule,
    file_sha256,
    operating_threshold,
    training_data_summary,
    weights_sha256,
)

__all__ = [
    "FITTED_ATTRIBUTES",
    "FORMAT_VERSION",
    "INPUT_NAME",
    "INTENDED_USE",
    "OUTPUT_NAME",
    "DecisionRule",
    "FittedAttribute",
    "decision_rule",
    "export_onnx",
    "file_sha256",
    "load_model",
    "model_card",
    "model_file_class",
    "onnx_metadata",
    "operating_threshold",
    "read_model_metadata",
    "reset_chosen_attributes",
    "save_model",
    "training_data_summary",
    "weights_sha256",
]


def __getattr__(name: str) -> object:
    # training_checkpoint and data_fingerprint were importable from
    # cxrkit.persistence before they moved to the training checkpoints.
    if name in ("training_checkpoint", "data_fingerprint"):
        import warnings

        from cxrkit.training import _checkpoint

        warnings.warn(
            f"cxrkit.persistence.{name} is internal and moved to "
            "cxrkit.training._checkpoint (this alias will be removed in a future "
            "release)",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(_checkpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
