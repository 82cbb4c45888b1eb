"""The served model: loaded once, shared by all requests, used under a lock."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from cxrkit._version import __version__
from cxrkit.metrics import apply_threshold, positive_label
from cxrkit.ood import no_detector_error, proba_and_ood_score
from cxrkit.persistence._model_files import INTENDED_USE, fitted_model, model_card

__all__ = ["INTENDED_USE", "ServedModel"]


#: Why no call is given for a flagged image (``refuse_ood``).
OOD_REFUSAL = (
    "no call: the image looks unlike the images the model was trained on, and "
    "this server does not answer for such images"
)


class ServedModel:
    """A fitted classifier with its threshold, identity and model card.

    The network is shared by every request; ``predict_proba`` and
    ``explain`` hold one lock, so a request never sees another's attribution
    hooks (which live on the shared network) and concurrent requests give
    the answers they would one at a time.

    Parameters
    ----------
    model_or_path : PneumoniaClassifier, str or path-like
        A fitted classifier, or a ``.cxr`` model file.
    threshold : float, optional
        Two classes: the positive class is called at probability ``>=
        threshold`` (default: the operating threshold recorded in the model
        file, else 0.5; see
        [`decision_rule`][cxrkit.persistence.decision_rule]). More classes:
        must be None (the most probable class is called).
    device : str
        Where a model file's weights go (``"auto"``: CUDA if present).
    refuse_ood : bool
        Give no call and no probabilities for images the model's
        out-of-distribution detector flags (see ``ood``).
    """

    def __init__(
        self,
        model_or_path: Any,
        threshold: float | None = None,
        device: str = "auto",
        *,
        refuse_ood: bool = False,
    ) -> None:
        from cxrkit import PneumoniaClassifier

        self.clf, path = fitted_model(
            model_or_path, device, estimator_class=PneumoniaClassifier
        )
        card = model_card(self.clf, path, threshold=threshold)
        self.model_id = (
            f"in-memory-{card['sha256'][:12]}"
            if path is None
            else f"{path.stem}-{card['sha256'][:12]}"
        )
        self.classes = np.asarray(self.clf.classes_)
        self.pos_label, self.threshold = card["positive_class"], card["threshold"]
        if len(self.classes) == 2:  # the page and the card name both
            self.pos_label = positive_label(self.classes, self.pos_label)
            # the most probable of two classes, as the threshold it amounts to
            self.threshold = 0.5 if self.threshold is None else self.threshold
        self.detector = getattr(self.clf, "ood_detector_", None)
        if refuse_ood and self.detector is None:
            raise ValueError(
                f"refuse_ood needs a model with an out-of-distribution detector; "
                f"{no_detector_error(self.clf)}"
            )
        self.refuse_ood = refuse_ood
        self.card = self._card(card)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ inference
    def assess(self, images: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Probabilities of ``(n, S, S)`` decoded images, in ``classes`` order,
        and per image ``ood_score``, the flag ``ood`` (None without a
        detector) and ``refused`` (why no call is given, or None).

        One forward pass gives both (``cxrkit.ood.proba_and_ood_score``).
        """
        with self._lock:
            proba, scores = proba_and_ood_score(self.clf, images)
        if scores is None:  # no detector
            return proba, [
                {"ood_score": None, "ood": None, "refused": None} for _ in images
            ]
        threshold = self.detector.threshold_
        return proba, [
            {
                "ood_score": round(float(s), 4),
                "ood": bool(s > threshold),
                "refused": OOD_REFUSAL if self.refuse_ood and s > threshold else None,
            }
            for s in scores
        ]

    def labels(self, proba: np.ndarray) -> np.ndarray:
        """The class called for each row of ``proba``, at the threshold."""
        return apply_threshold(
            proba, self.threshold, classes=self.classes, pos_label=self.pos_label
        )

    def explain(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Heatmaps ``(n, S, S)`` in [0, 1] of the ``targets`` classes."""
        # explain()'s recommended method, the one the report and `cxrkit
        # explain` draw; the card and every response name it
        from cxrkit.explain import explain

        with self._lock:
            return explain(self.clf, images, list(targets))

    # ----------------------------------------------------------- model card
    def _card(self, card: dict) -> dict:
        """The served part of the model card (see ``persistence.model_card``),
        with this server's decision rule, identity and refusal setting."""
        parameters = card["parameters"]
        return {
            "model_id": self.model_id,
            "file": card["file"],
            "sha256": card["sha256"],
            "estimator": card["estimator"],
            "architecture": parameters.get("model"),
            "pretrained": parameters.get("pretrained"),
            "image_size": parameters.get("image_size"),
            "classes": card["classes"],
            "positive_class": None
            if self.pos_label is None
            else np.asarray(self.pos_label).tolist(),
            "threshold": self.threshold,
            "explanation": card["explanation"],
            "explanation_caption": card["explanation_caption"],
            "ood": None
            if card["ood"] is None
            else {**card["ood"], "refused": self.refuse_ood},
            "trained": {
                k: card["trained"][k]
                for k in (
                    "images",
                    "internal_validation",
                    "epochs",
                    "skipped_files",
                    "saved_at",
                    "cxrkit_version",
                    "torch_version",
                )
            },
            "last_epoch": card["last_epoch"],
            "served_by": {"cxrkit_version": __version__},
            "intended_use": card["intended_use"],
        }
