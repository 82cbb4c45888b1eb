"""Out-of-distribution detection: how unlike the training images an input is.

A classifier trained on paediatric chest films answers for any image it is
given: an adult film, a lateral view, a hand, a photograph. This module
gives each input a score, higher for inputs less like the training images,
and a flag at a threshold fitted with the model.

The score is a distance in the model's own penultimate features (the input
of its final linear layer, computed by the trained network in evaluation
mode on the same resized, preprocessed images ``predict_proba`` sees):

* ``"mahalanobis"`` (the default): the smallest Mahalanobis distance to a
  class mean, with one covariance shared by the classes (Lee, Lee, Lee and
  Shin, "A simple unified framework for detecting out-of-distribution
  samples and adversarial attacks", NeurIPS 2018), the covariance estimated
  with Ledoit-Wolf shrinkage (Ledoit and Wolf, J. Multivariate Analysis
  88(2), 2004);
* ``"knn"``: the Euclidean distance from an image's L2-normalised features
  to the ``k``-th nearest normalised feature vector of the training images
  (Sun, Ming, Zhu and Li, "Out-of-distribution detection with deep nearest
  neighbors", ICML 2022). It assumes no shape of the feature distribution,
  but the model file keeps every training image's features.

The user guide (page "Validating for another population") compares the two
on adult films, photographs and transformed images: both separated adult
films from a second paediatric site about as well; the default flagged far
more of the rotated, cropped and upside-down films, kNN more of the adult
films.

The threshold is set on scores of training images *held out by patient*:
the training features are split into 5 patient-grouped folds, each fold is
scored by a detector fitted on the other 4, and the detector kept is then
fitted on all of them. Scores of the images a detector was fitted on are
optimistic (for ``"knn"`` an image is its own nearest neighbour), and a
threshold taken from them flags far more than ``alarm_rate`` of new images of
the same population. Of the held-out scores, the threshold is the order
statistic that exceeds their ``1 - alarm_rate`` quantile with 95% confidence
(a one-sided nonparametric tolerance limit; Wilks, "Determination of sample
sizes for setting tolerance limits", Ann. Math. Statist. 12(1), 1941): so that at most
``alarm_rate`` of new images like the training images are flagged, allowing
for the noise of a quantile estimated from a few thousand images (with 1,200
images it is about the 96th percentile, with 5,000 the 95.5th). The network
itself has seen every training image, and a new site differs; the user guide
gives the rates measured.

Fitting costs one forward pass over the training images (after training),
and the model file keeps the normalised training features (``"knn"``) or the
class means and a precision matrix (``"mahalanobis"``).

The flag is a heuristic: an image can be unlike the training images and
still be read well, or like them and read badly. For research and
education; not a medical device.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GroupKFold
from sklearn.utils.validation import check_is_fitted

from cxrkit.images._batches import ImageBatches
from cxrkit.images._preprocess import model_images
from cxrkit.models._features import head_inputs, headless
from cxrkit.training._fit import default_groups

__all__ = [
    "DEFAULT_K",
    "OOD_METHODS",
    "FeatureDistanceDetector",
    "NoOODDetectorError",
    "detector_for",
    "fit_ood_detector",
    "no_detector_error",
    "penultimate_features",
    "proba_and_ood_score",
    "tolerance_limit",
]

#: Scores a detector can compute; the first is the default.
OOD_METHODS = ("mahalanobis", "knn")
#: The fitted arrays of each method (attributes with a trailing underscore).
_ARRAYS = {"mahalanobis": ("means", "precision"), "knn": ("bank",)}
#: Neighbours of the ``"knn"`` score.
DEFAULT_K = 10
#: Patient-grouped folds used to set the threshold on held-out images.
_N_FOLDS = 5
#: Fewest images for a held-out threshold (below: the in-sample scores).
_MIN_IMAGES = 2 * _N_FOLDS
#: Confidence that the threshold flags at most ``alarm_rate`` of new images.
_CONFIDENCE = 0.95


class NoOODDetectorError(NotFittedError):
    """The model has no out-of-distribution detector (``ood_detector_`` is None).

    Raised by ``ood_score`` and ``is_ood`` of a model fitted with
    ``ood_alarm_rate=None`` or read from a file saved before cxrkit fitted
    one: that part of the model is not fitted. A scikit-learn
    ``NotFittedError`` (so a ``ValueError`` and an ``AttributeError``).
    """


class FeatureDistanceDetector:
    """A distance in feature space to the training images, with a threshold.

    Parameters
    ----------
    method : {"mahalanobis", "knn"}, default="mahalanobis"
        See the module's description.
    k : int, default=10
        Neighbours of the ``"knn"`` score (fewer when fewer training images).
    alarm_rate : float, default=0.05
        Share of held-out training images (by patient) flagged at the fitted
        threshold.

    Attributes
    ----------
    threshold_ : float
        Scores above it are flagged.
    n_features_in_ : int
    n_train_ : int
        Training images the detector was fitted on.
    n_classes_ : int
        Classes with a mean of their own (``"mahalanobis"``; 1 without ``y``).
    threshold_source_ : str
        ``"held-out patients"``, or ``"training images"`` when there were
        too few images or patients to hold any out.
    bank_ : ndarray of shape (n_train_, n_features_in_), dtype float32
        ``"knn"``: the normalised training features.
    means_ : ndarray of shape (n_classes, n_features_in_)
        ``"mahalanobis"``: the class means.
    precision_ : ndarray of shape (n_features_in_, n_features_in_)
        ``"mahalanobis"``: the inverse of the shared covariance.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(200, 8))
    >>> detector = FeatureDistanceDetector().fit(train)
    >>> far = rng.normal(loc=6, size=(3, 8))
    >>> detector.flag(far).tolist()
    [True, True, True]
    >>> float(np.mean(detector.flag(rng.normal(size=(500, 8))))) < 0.15
    True
    """

    def __init__(
        self,
        method: str = "mahalanobis",
        *,
        k: int = DEFAULT_K,
        alarm_rate: float = 0.05,
    ) -> None:
        if method not in OOD_METHODS:
            raise ValueError(
                f"method must be one of {list(OOD_METHODS)}, got {method!r}"
            )
        if not 0 < alarm_rate < 1:
            raise ValueError(f"alarm_rate must be in (0, 1), got {alarm_rate!r}")
        if int(k) < 1:
            raise ValueError(f"k must be 1 or more, got {k!r}")
        self.method = method
        self.k = int(k)
        self.alarm_rate = float(alarm_rate)

    # ---------------------------------------------------------------- fit
    def fit(
        self,
        features: np.ndarray,
        y: np.ndarray | None = None,
        groups: Sequence | np.ndarray | None = None,
    ) -> FeatureDistanceDetector:
        """Fit on training features; set the threshold on held-out patients.

        Parameters
        ----------
        features : ndarray of shape (n, n_features)
        y : ndarray of shape (n,), optional
            Class of each image: ``"mahalanobis"`` fits one mean per class
            (one mean for all without ``y``); ``"knn"`` ignores it.
        groups : array-like of shape (n,), optional
            Patient of each image; each image its own patient by default.

        Returns
        -------
        self
        """
        features = _finite_2d(features, "features")
        n = len(features)
        y = np.zeros(n, dtype=int) if y is None else np.asarray(y)
        groups = np.arange(n) if groups is None else np.asarray(groups)
        if len(y) != n or len(groups) != n:
            raise ValueError(
                f"features, y and groups must have one row per image; got {n}, "
                f"{len(y)} and {len(groups)}"
            )
        _, codes = np.unique(groups.astype(str), return_inverse=True)
        held_out = n >= _MIN_IMAGES and codes.max() + 1 >= _N_FOLDS
        if held_out:
            scores = np.empty(n)
            for fit_idx, test_idx in GroupKFold(n_splits=_N_FOLDS).split(
                features, groups=codes
            ):
                self._fit_distance(features[fit_idx], y[fit_idx])
                scores[test_idx] = self._distance(features[test_idx])
        self._fit_distance(features, y)
        if not held_out:
            scores = self._distance(features)
        self.threshold_ = tolerance_limit(scores, 1 - self.alarm_rate)
        self.threshold_source_ = "held-out patients" if held_out else "training images"
        self.n_features_in_ = features.shape[1]
        self.n_train_ = n
        self.n_classes_ = len(np.unique(y))
        return self

    def _fitted(self) -> FeatureDistanceDetector:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit first"
            )
        return self

    def _fit_distance(self, features: np.ndarray, y: np.ndarray) -> None:
        if self.method == "knn":
            self.bank_ = _l2_normalise(features)
            return
        labels, index = np.unique(y, return_inverse=True)
        means = np.stack([features[index == c].mean(0) for c in range(len(labels))])
        shrunk = LedoitWolf(assume_centered=True).fit(features - means[index])
        self.means_ = means.astype(np.float32)
        self.precision_ = shrunk.precision_.astype(np.float32)

    # -------------------------------------------------------------- score
    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance of each row to the training features (higher: less alike).

        Parameters
        ----------
        features : ndarray of shape (n, n_features)

        Returns
        -------
        ndarray of shape (n,), dtype float64
        """
        self._fitted()
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.n_features_in_:
            raise ValueError(
                f"features must have shape (n, {self.n_features_in_}), got "
                f"{features.shape}"
            )
        return self._distance(features)

    def _distance(self, features: np.ndarray) -> np.ndarray:
        if self.method == "knn":
            return _kth_distance(_l2_normalise(features), self.bank_, self.k)
        squared = [
            ((features - mean) @ self.precision_ * (features - mean)).sum(axis=1)
            for mean in self.means_
        ]
        return np.sqrt(np.maximum(np.min(squared, axis=0), 0)).astype(np.float64)

    def flag(self, features: np.ndarray) -> np.ndarray:
        """``score(features) > threshold_``: boolean, one per row."""
        return self.score(features) > self._fitted().threshold_

    # ------------------------------------------------- model-file encoding
    def to_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """What a model file keeps: JSON settings, and the arrays as tensors."""
        self._fitted()
        meta = {
            "method": self.method,
            "k": self.k,
            "alarm_rate": self.alarm_rate,
            "threshold": self.threshold_,
            "threshold_source": self.threshold_source_,
            "n_features_in": self.n_features_in_,
            "n_train": self.n_train_,
            "n_classes": self.n_classes_,
        }
        tensors = {
            name: torch.as_tensor(np.ascontiguousarray(getattr(self, name + "_")))
            for name in _ARRAYS[self.method]
        }
        return meta, tensors

    @classmethod
    def from_state(
        cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]
    ) -> FeatureDistanceDetector:
        """The detector written by ``to_state``."""
        detector = cls(meta["method"], k=meta["k"], alarm_rate=meta["alarm_rate"])
        detector.threshold_ = float(meta["threshold"])
        detector.threshold_source_ = str(meta["threshold_source"])
        detector.n_features_in_ = int(meta["n_features_in"])
        detector.n_train_ = int(meta["n_train"])
        detector.n_classes_ = int(meta["n_classes"])
        for name in _ARRAYS[detector.method]:
            array = tensors[name].numpy()
            if array.ndim != 2 or array.shape[1] != detector.n_features_in_:
                raise ValueError(f"{name} has shape {array.shape}")
            setattr(detector, name + "_", array)
        return detector

    def __repr__(self) -> str:
        fitted = (
            f", threshold_={self.threshold_:.4g}" if hasattr(self, "threshold_") else ""
        )
        return (
            f"{type(self).__name__}(method={self.method!r}, k={self.k}, "
            f"alarm_rate={self.alarm_rate}{fitted})"
        )


def tolerance_limit(scores: np.ndarray, coverage: float) -> float:
    """The smallest order statistic above the ``coverage`` quantile with 95%
    confidence (Wilks' one-sided nonparametric tolerance limit).

    Among ``n`` scores, the number below the true ``coverage`` quantile is
    ``Binomial(n, coverage)``; the ``j``-th smallest score lies above that
    quantile when fewer than ``j`` do, which has probability at least 95%
    for ``j - 1`` its 95th percentile. With too few scores, the largest.

    Examples
    --------
    >>> scores = np.arange(1, 1001) / 1000
    >>> tolerance_limit(scores, 0.95)  # the 962nd of 1000
    0.962
    """
    from scipy.stats import binom

    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(ordered)
    j = int(binom.ppf(_CONFIDENCE, n, coverage)) + 1
    return float(ordered[min(j, n) - 1])


def _finite_2d(features: Any, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(
            f"{name} must be a 2-D array with at least 2 rows, got shape "
            f"{features.shape}"
        )
    if not np.isfinite(features).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return features


def _l2_normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def _kth_distance(
    queries: np.ndarray, bank: np.ndarray, k: int, chunk: int = 1024
) -> np.ndarray:
    """Euclidean distance of each unit-norm query to its k-th nearest bank row."""
    k = min(k, len(bank))
    out = np.empty(len(queries))
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        squared = np.maximum(2.0 - 2.0 * (q @ bank.T), 0.0)
        kth = np.partition(squared, k - 1, axis=1)[:, k - 1]
        out[start : start + chunk] = np.sqrt(kth)
    return out


# ------------------------------------------------------ with a classifier
@torch.no_grad()
def penultimate_features(clf: Any, images: np.ndarray) -> np.ndarray:
    """The input of a fitted classifier's final linear layer, per image.

    Parameters
    ----------
    clf : PneumoniaClassifier
        Fitted.
    images : ndarray of shape (n, image_size, image_size), dtype uint8
        Decoded, resized and preprocessed as ``predict_proba`` does it
        (the ``pixels`` of ``cxrkit.images.model_images(clf, X)``).

    Returns
    -------
    ndarray of shape (n, n_features), dtype float32

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(20, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="cnn4", image_size=32, max_epochs=1,
    ...                           random_state=0, ood_alarm_rate=None).fit(X, y)
    >>> penultimate_features(clf, X[:3]).shape
    (3, 256)
    """
    net = clf.net_
    # The net's own forward pass: normalisation, device, channels-last and
    # autocast as in predict_proba; evaluation mode, no augmentation.
    with headless(net.module_, clf.model):
        out = net.forward(ImageBatches(np.asarray(images)), training=False)
    return out.float().cpu().numpy()


def proba_and_ood_score(clf: Any, X: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """``clf.predict_proba(X)`` and ``clf.ood_score(X)`` from one forward pass.

    Showing a probability with its out-of-distribution score would otherwise
    run the network twice over the same images (and read image files twice):
    here the features the detector scores are taken, by a forward hook on
    the final linear layer, from the pass that computes the probabilities.
    Both results equal those of the two methods.

    Parameters
    ----------
    clf : PneumoniaClassifier
        Fitted.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Or a [`DecodedImages`][cxrkit.DecodedImages] of them.

    Returns
    -------
    proba : ndarray of shape (n, n_classes)
        As ``clf.predict_proba(X)``.
    ood_score : ndarray of shape (n,), or None
        As ``clf.ood_score(X)``; None when the model has no detector
        (``ood_alarm_rate=None``), where ``ood_score`` raises.

    Other classifiers, and subclasses that compute either result their own
    way, get the two methods called in turn.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(40, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32,
    ...                           max_epochs=1, random_state=0).fit(X, y)
    >>> proba, scores = proba_and_ood_score(clf, X[:3])
    >>> bool(np.allclose(proba, clf.predict_proba(X[:3])))
    True
    >>> bool(np.allclose(scores, clf.ood_score(X[:3])))
    True
    """
    if not shares_one_pass(clf):
        # no detector, another classifier, or a subclass with its own
        # methods: ask them (without a detector, predict_proba is all the
        # passes there are)
        proba = clf.predict_proba(X)
        if getattr(clf, "ood_detector_", None) is None:
            return proba, None
        return proba, np.asarray(clf.ood_score(X), dtype=np.float64)
    images = clf._model_images(X)
    with head_inputs(clf.net_.module_, clf.model) as seen:
        proba = clf._proba_of(images)
    # The images as they are come first; test-time augmented copies follow.
    features = torch.cat(seen)[: len(images)].numpy()
    return proba, clf.ood_detector_.score(features)


def shares_one_pass(clf: Any) -> bool:
    """Whether one forward pass gives ``clf``'s probabilities and OOD scores.

    True for a fitted cxrkit classifier with a detector whose
    ``predict_proba`` and ``ood_score`` are cxrkit's own (a subclass may
    compute them otherwise); `proba_and_ood_score` asks the two methods
    otherwise. The classifier answers (``_shares_one_pass``): this module
    sits below it and does not import it.
    """
    answer = getattr(clf, "_shares_one_pass", None)
    return bool(answer is not None and answer())


def fit_ood_detector(
    clf: Any,
    X: Sequence[str | os.PathLike] | np.ndarray,
    y: Sequence | np.ndarray | None = None,
    *,
    groups: Sequence | np.ndarray | None = None,
    alarm_rate: float | None = None,
    method: str = OOD_METHODS[0],
) -> Any:
    """Fit the out-of-distribution detector of an already fitted classifier.

    ``PneumoniaClassifier.fit`` does this itself (``ood_alarm_rate``); use
    this function for a model fitted with ``ood_alarm_rate=None``, or read
    from a file saved before cxrkit fitted a detector: pass the images it was
    trained on (or others from the same population), then ``clf.save`` again.

    Parameters
    ----------
    clf : PneumoniaClassifier
        Fitted; its ``ood_detector_`` is replaced.
    X : sequence of paths, or ndarray of images
        Training images.
    y : array-like, optional
        Their classes: ``method="mahalanobis"`` fits a mean per class (as
        ``fit`` does), or one mean for all without ``y``.
    groups : array-like, optional
        Patient of each image; by default parsed from Kermany-style paths
        (as ``fit`` does), else each image its own patient.
    alarm_rate : float, optional
        Share of held-out training images flagged; default
        ``clf.ood_alarm_rate``, else 0.05.
    method : {"mahalanobis", "knn"}, default="mahalanobis"

    Returns
    -------
    clf

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(40, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0, ood_alarm_rate=None).fit(X, y)
    >>> clf.ood_detector_ is None
    True
    >>> clf = fit_ood_detector(clf, X)
    >>> clf.ood_score(X[:2]).shape
    (2,)
    """
    check_is_fitted(clf, "net_")
    if alarm_rate is None:
        alarm_rate = getattr(clf, "ood_alarm_rate", None) or 0.05
    decoded = model_images(clf, X)
    images = decoded.pixels
    groups = default_groups(decoded) if groups is None else np.asarray(groups)
    for name, values in (("y", y), ("groups", groups)):
        if values is not None and len(values) != len(images):
            raise ValueError(
                f"X gave {len(images)} images but {name} has {len(values)} "
                f"entries: give one {'label' if name == 'y' else 'patient'} per image"
            )
    if y is not None:
        _, y = np.unique(np.asarray(y), return_inverse=True)
    # Asked for explicitly, so a detector that cannot be fitted is an error
    # (in fit it is a warning), and the model keeps the detector it had.
    clf.ood_detector_ = detector_for(
        clf, images, y, groups, alarm_rate=alarm_rate, method=method, strict=True
    )
    return clf


def detector_for(
    clf: Any,
    images: np.ndarray,
    y_enc: np.ndarray | None,
    groups: Sequence | np.ndarray | None,
    *,
    alarm_rate: float,
    method: str = OOD_METHODS[0],
    features: np.ndarray | None = None,
    strict: bool = False,
) -> FeatureDistanceDetector | None:
    """The fitted detector of ``clf`` on its decoded training images.

    ``features`` are their penultimate features when the caller has them
    already (a frozen backbone's, from ``fit``); otherwise they are computed.
    None, with a warning, when the features cannot make one (fewer than 2
    images, or non-finite features of a diverged network); with ``strict``,
    the ``ValueError`` instead.
    """
    if features is None:
        features = penultimate_features(clf, images)
    try:
        return FeatureDistanceDetector(method, alarm_rate=alarm_rate).fit(
            features, y_enc, groups
        )
    except ValueError as exc:
        if strict:
            raise ValueError(f"no out-of-distribution detector fitted: {exc}") from None
        warnings.warn(
            f"no out-of-distribution detector fitted ({exc}); ood_score and is_ood "
            "will raise",
            UserWarning,
            stacklevel=3,
        )
        return None


def no_detector_error(clf: Any) -> NoOODDetectorError:
    """The error of ``ood_score`` for a model without a detector."""
    why = (
        "it was fitted with ood_alarm_rate=None"
        if getattr(clf, "ood_alarm_rate", 0.05) is None
        else "it was saved without one (cxrkit fits one in fit since 0.x), or "
        "its training features could not make one"
    )
    return NoOODDetectorError(
        f"this {type(clf).__name__} has no out-of-distribution detector: {why}. "
        "Fit one on its training images with cxrkit.ood.fit_ood_detector(clf, "
        "X_train) (then clf.save(path) keeps it), or refit with "
        "ood_alarm_rate=0.05."
    )
