"""The model behind a DICOM node: its identity, its decision rule, its findings.

Every fact about the model (file, SHA-256, versions, parameters, threshold,
positive class) comes from its model card
([`model_card`][cxrkit.persistence.model_card]); this module only says how
a DICOM result presents them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrkit._version import __version__
from cxrkit.metrics import apply_threshold, positive_label
from cxrkit.ood import proba_and_ood_score, shares_one_pass
from cxrkit.persistence._model_files import fitted_model, model_card

__all__ = ["RESEARCH_ONLY", "Finding", "ModelIdentity", "ReportingModel"]

#: The statement every result carries.
RESEARCH_ONLY = (
    "Research use only. Not a medical device; not for diagnosis or any clinical "
    "decision. Produced by software (cxrkit), not reviewed by a physician."
)


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made a result: the part of the model card (see
    [`model_card`][cxrkit.persistence.model_card]) that DICOM results carry.

    Attributes
    ----------
    name : str
        The model file's name (``"in-memory"`` for a model that was never
        saved).
    version : str
        The cxrkit version that runs the model, and the one that saved it
        and when.
    sha256 : str
        SHA-256 of the model file (of the weights, for an in-memory model).
    architecture : str
        The ``model`` parameter, e.g. ``"resnet18"``.
    image_size : int
        The side of the images the model reads, in pixels.
    """

    name: str
    version: str
    sha256: str
    architecture: str
    image_size: int

    @classmethod
    def _from_card(cls, card: dict[str, Any]) -> ModelIdentity:
        """The identity a model card gives (``persistence.model_card``)."""
        version = f"cxrkit {__version__}"
        if card["file"] is not None:
            trained = card["trained"]
            version += (
                f"; model saved {trained['saved_at'] or 'at an unknown time'} by "
                f"cxrkit {trained['cxrkit_version'] or '(unknown)'}"
            )
        parameters = card["parameters"]
        return cls(
            name=card["file"] or "in-memory",
            version=version,
            sha256=card["sha256"],
            architecture=str(parameters.get("model")),
            image_size=int(parameters["image_size"]),
        )


@dataclass(frozen=True)
class Finding:
    """What the model says about one radiograph.

    Attributes
    ----------
    label : str
        The class called, as text (e.g. ``"PNEUMONIA"``).
    probability : float
        The probability of ``probability_of``.
    probability_of : str
        The positive class of two (the probability the threshold applies
        to); with more classes, the class called.
    threshold : float or None
        The operating threshold on ``probability`` (two classes; 0.5 stands
        for "the most probable class" when no threshold was recorded). None
        with more than two classes.
    threshold_source : str
        Where the threshold comes from, in words.
    ood_score : float or None
        How unlike the training images the radiograph is (higher: less
        alike), when the model has an out-of-distribution detector.
    ood : bool or None
        Whether the score is over the detector's threshold.
    """

    label: str
    probability: float
    probability_of: str
    threshold: float | None
    threshold_source: str
    ood_score: float | None = None
    ood: bool | None = None


class ReportingModel:
    """A fitted classifier with its identity and decision rule, for reports.

    Parameters
    ----------
    model_or_path : PneumoniaClassifier, str or path-like
        A fitted classifier, or a model file (``clf.save`` or ``cxrkit
        train``).
    threshold : float, optional
        Two classes: call the positive class at probability ``>=
        threshold``. Default: the operating threshold recorded with the
        model (see [`decision_rule`][cxrkit.persistence.decision_rule]),
        else the most probable class.
    device : str, default="auto"
        Where a model file's weights go.

    Attributes
    ----------
    clf : PneumoniaClassifier
    card : dict
        The model card (see [`model_card`][cxrkit.persistence.model_card])
        with this decision rule: where ``identity``, the threshold and the
        positive class come from.
    identity : ModelIdentity
    has_ood : bool
        Whether findings carry an out-of-distribution score and flag: the
        model has ``ood_score`` and ``is_ood`` and a fitted detector.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(20, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32,
    ...                           max_epochs=1, validation_fraction=None,
    ...                           random_state=0).fit(X, y)
    >>> model = ReportingModel(clf)
    >>> finding = model.assess(X[:1])[0]
    >>> finding.probability_of, finding.threshold
    ('PNEUMONIA', 0.5)
    """

    def __init__(
        self,
        model_or_path: Any,
        *,
        threshold: float | None = None,
        device: str = "auto",
    ) -> None:
        from cxrkit import PneumoniaClassifier

        self.clf, path = fitted_model(
            model_or_path, device, estimator_class=PneumoniaClassifier
        )
        self.card = model_card(self.clf, path, threshold=threshold)
        self.identity = ModelIdentity._from_card(self.card)
        self.classes = np.asarray(self.clf.classes_)
        self._threshold = self.card["threshold"]
        self._pos_label = self.card["positive_class"]
        if threshold is not None:
            self._source = "given when the model was started"
        elif self._threshold is not None:
            record = self.card["operating_threshold"]
            how = record.get("criterion") or record.get("source")
            self._source = "recorded with the model" + (f" ({how})" if how else "")
        else:
            self._source = "none recorded: the most probable class"
        self.has_ood = callable(getattr(self.clf, "is_ood", None)) and callable(
            getattr(self.clf, "ood_score", None)
        )

    # ------------------------------------------------------------ inference
    def _proba_and_ood(
        self, images: np.ndarray
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """Probabilities and, with a detector, OOD scores and flags: one
        forward pass for a cxrkit classifier (``proba_and_ood_score``)."""
        if shares_one_pass(self.clf):
            proba, scores = proba_and_ood_score(self.clf, images)
            return proba, (scores, scores > self.clf.ood_detector_.threshold_)
        proba = self.clf.predict_proba(images)
        if not self.has_ood:
            return proba, None
        try:
            scores = np.asarray(self.clf.ood_score(images), dtype=float)
            flags = np.asarray(self.clf.is_ood(images), dtype=bool)
        except AttributeError:  # the model has the methods but no fitted detector
            self.has_ood = False
            return proba, None
        return proba, (scores, flags)

    def assess(self, images: np.ndarray) -> list[Finding]:
        """The findings for decoded images.

        Parameters
        ----------
        images : ndarray of shape (n, size, size), dtype uint8
            As [`read_image`][cxrkit.images.read_image] with ``size=``
            ``identity.image_size`` reads them.

        Returns
        -------
        list of Finding
        """
        proba, ood = self._proba_and_ood(images)
        called = apply_threshold(
            proba, self._threshold, classes=self.classes, pos_label=self._pos_label
        )
        column = {c: k for k, c in enumerate(self.classes.tolist())}
        findings = []
        for i, label in enumerate(np.asarray(called).tolist()):
            if len(self.classes) == 2 and self._pos_label is not None:
                of = positive_label(self.classes, self._pos_label)
                threshold = 0.5 if self._threshold is None else self._threshold
            else:
                of, threshold = label, None
            findings.append(
                Finding(
                    label=str(label),
                    probability=float(proba[i, column[of]]),
                    probability_of=str(of),
                    threshold=threshold,
                    threshold_source=self._source,
                    ood_score=None if ood is None else float(ood[0][i]),
                    ood=None if ood is None else bool(ood[1][i]),
                )
            )
        return findings

    def heatmaps(self, images: np.ndarray, findings: list[Finding]) -> np.ndarray:
        """Heatmaps ``(n, size, size)`` in [0, 1] of the classes called, by
        ``cxrkit.explain``'s recommended method (what the report, ``cxrkit
        explain`` and ``cxrkit serve`` draw; the slowest step of a report,
        whose cost the user guide's *PACS integration* page gives).
        """
        from cxrkit.explain import explain

        by_name = {str(c): c for c in self.classes.tolist()}
        return explain(self.clf, images, [by_name[f.label] for f in findings])
