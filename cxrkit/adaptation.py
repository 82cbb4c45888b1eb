"""Adapting a fitted classifier to a new site's images.

A model trained at one hospital meets another's scanners, protocols and
patient mix. Three steps adapt it, each returning a new
[`PneumoniaClassifier`][cxrkit.PneumoniaClassifier] that predicts, saves and
loads like any other (the original is left unchanged):

* [`adapt_batchnorm`][cxrkit.adaptation.adapt_batchnorm], unlabelled:
  re-estimates the batch-normalisation statistics on the site's images
  (AdaBN; Li et al., "Revisiting Batch Normalization For Practical Domain
  Adaptation", ICLR workshop 2017).
* [`adapt_prior`][cxrkit.adaptation.adapt_prior], unlabelled: re-estimates
  the site's class prior by expectation-maximisation and corrects the
  probabilities for it (Saerens, Latinne & Decaestecker, "Adjusting the
  outputs of a classifier to new a priori probabilities", Neural
  Computation 14(1), 2002).
* [`adapt_head`][cxrkit.adaptation.adapt_head], labelled: refits the
  final linear layer on a small labelled sample of the site, pulled
  towards the trained one (L2-SP; Li, Grandvalet & Davoine, "Explicit
  Inductive Bias for Transfer Learning with Convolutional Networks", ICML
  2018); the only step here that can reorder the site's images.
* [`calibrate`][cxrkit.adaptation.calibrate], labelled: temperature or
  Platt scaling on a small labelled sample of the site (Guo et al., "On
  Calibration of Modern Neural Networks", ICML 2017; Platt 1999), and an
  operating threshold that keeps a sensitivity floor for new patients on
  average, recorded with its bootstrap confidence interval on the sample;
  after ``adapt_head`` on the same sample, on the out-of-fold
  probabilities of [`head_cross_val_proba`][cxrkit.adaptation.head_cross_val_proba].
* [`conformalize`][cxrkit.adaptation.conformalize], labelled: class-
  conditional split conformal prediction sets with a coverage guarantee
  for each class, read by
  [`prediction_sets`][cxrkit.adaptation.prediction_sets]; a set of both
  classes means "refer", an empty set "unlike either class".

The probability corrections are one affine map of the log-probabilities,
``softmax(log(p) / temperature + bias)``, kept in the fitted attribute
``adaptation_`` with the list of steps that made it; ``predict_proba``
applies it, so ``predict``, the report, the CLI, ``serve`` and the model
file all see the adapted model. Temperature and Platt scaling keep the
order of the images, so they change calibration and the threshold, never
the ROC AUC; batch-norm statistics and a refitted head change the scores
themselves.

For research and education; not a medical device.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn
from torch.utils.data import DataLoader

from cxrkit.images._batches import ImageBatches
from cxrkit.images._folders import patient_groups
from cxrkit.images._preprocess import model_images
from cxrkit.metrics import (
    OperatingPoint,
    clinical_report,
    positive_label,
)
from cxrkit.models._features import head_inputs
from cxrkit.models._net import collate_batches
from cxrkit.models._registry import classifier_head
from cxrkit.ood import penultimate_features
from cxrkit.persistence._provenance import operating_threshold
from cxrkit.training._fit import adjust_probabilities
from cxrkit.training._fit import predict_proba as network_proba

if TYPE_CHECKING:
    from cxrkit.classifier import ImageInput, PneumoniaClassifier

__all__ = [
    "DEFAULT_PULL",
    "adapt_batchnorm",
    "adapt_head",
    "adapt_prior",
    "adjust_probabilities",
    "calibrate",
    "conformalize",
    "head_cross_val_proba",
    "prediction_sets",
    "sets_from_probabilities",
    "training_prior",
]

_TINY = 1e-12  # log(0) guard, as in adjust_probabilities
#: How strongly ``adapt_head`` pulls the head towards the trained one.
DEFAULT_PULL = 0.01


def _state(clf: PneumoniaClassifier) -> dict[str, Any]:
    """The model's adaptation record, or the identity map when there is none."""
    current = getattr(clf, "adaptation_", None)
    if current is None:
        return {"temperature": 1.0, "bias": [0.0] * len(clf.classes_), "steps": []}
    return copy.deepcopy(current)


def _site_images(clf: PneumoniaClassifier, X: ImageInput) -> np.ndarray:
    return model_images(clf, X, verbose=clf.verbose).pixels


def _adapted(
    clf: PneumoniaClassifier, state: dict[str, Any], step: dict[str, Any]
) -> PneumoniaClassifier:
    out = copy.deepcopy(clf)
    state["steps"] = [*state["steps"], step]
    out.adaptation_ = state
    if getattr(out, "conformal_", None) is not None:
        warnings.warn(
            "the model's conformal prediction sets were computed on its earlier "
            "probabilities and no longer hold; they are dropped: call "
            "conformalize after the last adaptation step",
            UserWarning,
            stacklevel=3,
        )
        out.conformal_ = None
    return out


@torch.no_grad()
def adapt_batchnorm(
    clf: PneumoniaClassifier, X: ImageInput, *, batch_size: int = 64
) -> PneumoniaClassifier:
    """Re-estimate batch-normalisation statistics on a site's images (AdaBN).

    The network's weights stay; the running mean and variance of every
    batch-norm layer become those of the site's images (over all of them,
    each image counting once), so that the features the classifier reads
    are normalised for the new scanners and protocols. No labels are needed.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted model with batch-norm layers (``resnet18``, ``cnn4``,
        ``efficientnet_*``, ...).
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        The site's images, as many as you have (a few hundred give stable
        statistics); no labels.
    batch_size : int, default=64

    Returns
    -------
    PneumoniaClassifier
        A copy with the site's statistics; ``adaptation_["steps"]`` records
        the step. A recorded operating threshold, chosen for the old scores,
        is dropped with a warning, as is the out-of-distribution detector.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(40, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="cnn4", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> site = adapt_batchnorm(clf, X[:20] * 0.8)
    >>> site.adaptation_["steps"][0]["step"], site.adaptation_["steps"][0]["n_images"]
    ('batchnorm', 20)
    """
    check_is_fitted(clf, "net_")
    images = _site_images(clf, X)
    if len(images) == 0:
        raise ValueError("X holds no images: give the site's images to adapt to")
    out = _adapted(clf, _state(clf), {"step": "batchnorm", "n_images": len(images)})
    net = out.net_
    module = net.module_
    layers = [
        m
        for m in module.modules()
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d)
    ]
    if not layers:
        raise ValueError(
            f"model {clf.model!r} has no batch-norm layers to adapt; use "
            "adapt_prior or calibrate instead"
        )
    if getattr(out, "ood_detector_", None) is not None:
        warnings.warn(
            "the out-of-distribution detector was fitted on the features of the "
            "unadapted network and no longer matches them; it is dropped: fit a "
            "new one on the training images with cxrkit.ood.fit_ood_detector",
            UserWarning,
            stacklevel=3,  # past torch.no_grad's wrapper
        )
        out.ood_detector_ = None
    if getattr(out, "operating_threshold_", None) is not None:
        warnings.warn(
            "the recorded operating threshold was chosen for the unadapted "
            "network's scores and no longer holds; it is dropped: choose one "
            "on labelled site images with calibrate (sensitivity= or "
            "threshold='accuracy')",
            UserWarning,
            stacklevel=3,  # past torch.no_grad's wrapper
        )
        out.operating_threshold_ = None
    # Each layer's statistics are summed over every image of the site (count,
    # sum and sum of squares per channel), so that each image counts once.
    # torch's own cumulative average (momentum=None) averages per-batch means
    # and variances: a last batch of one image weighed as much as a full one,
    # and the spread between batches was lost.
    sums: dict[nn.Module, list] = {}

    def accumulate(layer: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach().double()
        dims = [0, *range(2, x.ndim)]
        total = sums.setdefault(layer, [0, 0.0, 0.0])
        total[0] += x.numel() // x.shape[1]
        total[1] = total[1] + x.sum(dims)
        total[2] = total[2] + (x * x).sum(dims)

    module.eval()  # dropout off; only the batch-norm layers normalise by batch
    hooks = [m.register_forward_pre_hook(accumulate) for m in layers]
    try:
        for m in layers:
            m.train()
        # In a shuffled order (seeded), so that a folder read class by class
        # does not give batches of one class to the layers' batch statistics.
        order = np.random.default_rng(0).permutation(len(images))
        loader = DataLoader(
            ImageBatches(images[order]),
            batch_size=batch_size,
            collate_fn=collate_batches,
        )
        for x, _ in loader:
            module(net.model_input(x))
    finally:
        for hook in hooks:
            hook.remove()
        module.eval()
    for m in layers:
        count, total, squares = sums[m]
        mean = total / count
        variance = (squares / count - mean * mean).clamp(min=0)
        m.running_mean.copy_(mean)
        m.running_var.copy_(variance * count / max(count - 1, 1))  # unbiased, as torch
    return out


def training_prior(clf: PneumoniaClassifier) -> np.ndarray:
    """The class prior a fitted model's probabilities are tuned to.

    The training images per class, times the class weights of the loss:
    with ``class_weight="balanced"`` the classes count equally, so the
    prior is uniform whatever the training folder held.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted model.

    Returns
    -------
    ndarray of shape (n_classes,)
        Sums to 1, in the order of ``classes_``.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(40, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           class_weight="balanced", random_state=0).fit(X, y)
    >>> training_prior(clf).round(3).tolist()
    [0.5, 0.5]
    """
    check_is_fitted(clf, "net_")
    counts = np.array(
        [
            clf.training_data_["classes"][str(c)]["images"]
            for c in clf.classes_.tolist()
        ],
        dtype=np.float64,
    )
    weighted = counts * np.asarray(clf.net_spec_.class_weights, dtype=np.float64)
    return weighted / weighted.sum()


def adapt_prior(
    clf: PneumoniaClassifier,
    X: ImageInput,
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> PneumoniaClassifier:
    """Re-estimate a site's class prior and correct the probabilities for it.

    Expectation-maximisation of Saerens et al. (2002): starting from the
    prior the model was trained for
    ([`training_prior`][cxrkit.adaptation.training_prior]), alternately
    re-weight each image's probabilities by the ratio of the site's prior
    to it, and take the site's prior as the mean re-weighted
    probability. The correction adds ``log(site prior / training prior)``
    to the log-probabilities. It assumes that only the mix of classes
    differs between the sites ("label shift"), and that the probabilities
    are calibrated; label smoothing and class weights make them less so.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted model.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        The site's images, without labels.
    max_iter : int, default=1000
    tol : float, default=1e-6
        Stop when no class's prior moves by more than this.

    Returns
    -------
    PneumoniaClassifier
        A copy whose ``adaptation_["steps"]`` records the estimated prior.
        A recorded operating threshold is moved with the probabilities, so
        that every image keeps its call: under label shift each class's
        scores stay as they were, and so do its sensitivity and specificity.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(60, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=2,
    ...                           random_state=0).fit(X, y)
    >>> site = adapt_prior(clf, X[y == "PNEUMONIA"])
    >>> step = site.adaptation_["steps"][-1]
    >>> step["step"], sorted(step["site_prior"])
    ('prior', ['NORMAL', 'PNEUMONIA'])
    """
    check_is_fitted(clf, "net_")
    proba = clf.predict_proba(X)  # the model as it stands, earlier steps included
    if len(proba) == 0:
        raise ValueError("X holds no images: give the site's images to adapt to")
    start = training_prior(clf)
    if getattr(clf, "adaptation_", None) is not None:  # a prior already moved
        start = adjust_probabilities(
            start[None, :], {**clf.adaptation_, "temperature": 1.0}
        )[0]
    prior = start.copy()
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        weighted = proba * (prior / start)
        weighted /= weighted.sum(axis=1, keepdims=True)
        new = weighted.mean(axis=0)
        moved = float(np.abs(new - prior).max())
        prior = new
        if moved < tol:
            break
    state = _state(clf)
    shift = np.log(np.clip(prior, _TINY, None) / start)
    state["bias"] = (np.asarray(state["bias"]) + shift).tolist()
    names = [str(c) for c in clf.classes_]
    step = {
        "step": "prior",
        "n_images": len(proba),
        "site_prior": dict(zip(names, np.round(prior, 6).tolist())),
        "model_prior": dict(zip(names, np.round(start, 6).tolist())),
        "iterations": iterations,
    }
    out = _adapted(clf, state, step)
    # A change of class mix leaves each class's scores as they were (label
    # shift), so a recorded threshold keeps its sensitivity and specificity
    # if every image keeps its call: it is moved with the probabilities.
    out.operating_threshold_ = _carried_threshold(
        clf, 1.0, shift, through="the site's class prior"
    )
    return out


def _pulled_logistic(
    features: np.ndarray,
    y_idx: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    pull: float,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Class-balanced softmax regression on ``features``, with the penalty
    ``pull * |theta - theta_0|^2`` towards the trained ``(weight, bias)``.

    Written here because scikit-learn's ``LogisticRegression`` shrinks the
    coefficients towards zero, and a site sample of 50 images needs them
    shrunk towards the head that 5,000 training images gave (L2-SP).
    Minimised by L-BFGS on the exact gradient, in float64.
    """
    n, d = features.shape
    k = weight.shape[0]
    # "balanced" weights, as the loss of the recipes: each present class counts
    # equally, whatever the sample's mix (calibrate then learns the site's mix)
    sample = compute_sample_weight("balanced", y_idx) / n
    onehot = np.eye(k)[y_idx]
    theta0 = np.concatenate([weight.ravel(), bias])

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: k * d].reshape(k, d), theta[k * d :]
        logp = log_softmax(features @ w.T + b, axis=1)
        data = float(-(sample * (logp * onehot).sum(axis=1)).sum())
        g = sample[:, None] * (np.exp(logp) - onehot)
        delta = theta - theta0
        grad = np.concatenate([(g.T @ features).ravel(), g.sum(axis=0)])
        return data + pull * float(delta @ delta), grad + 2 * pull * delta

    before = loss(theta0)[0]
    theta = minimize(loss, theta0, jac=True, method="L-BFGS-B").x
    after = loss(theta)[0]
    return theta[: k * d].reshape(k, d), theta[k * d :], before, after


def adapt_head(
    clf: PneumoniaClassifier,
    X: ImageInput,
    y: Sequence | np.ndarray,
    *,
    pull: float = DEFAULT_PULL,
) -> PneumoniaClassifier:
    """Refit the final linear layer on a labelled site sample, near the trained one.

    The network's features stay; its last layer is refitted to the site's
    labelled images by class-balanced cross-entropy plus ``pull`` times the
    squared distance of its weights to the trained layer's (L2-SP, Li et
    al. 2018). The trained layer learned from thousands of training images
    and is kept as the prior; the site's sample moves it where that
    site's images disagree. Unlike temperature or Platt scaling this can
    reorder the site's images, so ROC AUC can change (up or down: measure
    it on other patients of the site).

    The refitted layer gives new scores, so a recorded operating threshold
    no longer holds and is dropped (with a warning): follow with
    [`calibrate`][cxrkit.adaptation.calibrate], which also learns the
    site's class mix that the balanced loss leaves out. On the same images,
    use ``method="platt", threshold="accuracy"``. A ``sensitivity`` floor
    must not be chosen on this model's probabilities of its own sample: the
    refitted layer separates it, so a threshold set on its positive images
    is far too high for new patients (on the Kermany test site, with 25
    images, sensitivity 0.75 on the rest of the site). Choose it on the
    out-of-fold probabilities of
    [`head_cross_val_proba`][cxrkit.adaptation.head_cross_val_proba]
    (``calibrate(..., proba=...)``), or on other labelled patients. Run it before
    ``adapt_prior`` and ``calibrate`` (they correct the head's outputs);
    after ``adapt_batchnorm`` is fine. The out-of-distribution detector reads the
    layer's inputs, which do not change, and is kept. With test-time
    augmentation (``tta``) the layer is fitted on the images as given and
    then scores their views as well.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted model.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        The site's labelled sample, drawn by patient; images of every class.
    y : array-like of shape (n,)
        Its labels, among ``clf.classes_``.
    pull : float, default=DEFAULT_PULL
        Weight of the squared distance to the trained layer; larger keeps
        the layer closer to it (a very large value changes nothing).

    Returns
    -------
    PneumoniaClassifier
        A copy with the refitted layer; ``adaptation_["steps"]`` records the
        step, its sample size and its loss before and after.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(60, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="cnn4", image_size=32, max_epochs=2,
    ...                           random_state=0).fit(X[:40], y[:40])
    >>> site = adapt_head(clf, X[40:], y[40:])
    >>> step = site.adaptation_["steps"][-1]
    >>> step["step"], step["n_images"], step["loss_after"] <= step["loss_before"]
    ('head', 20, True)
    """
    check_is_fitted(clf, "net_")
    _check_pull(pull)
    state = _state(clf)
    later = [s["step"] for s in state["steps"] if s["step"] in ("prior", "calibrate")]
    if later:
        raise ValueError(
            f"the model was already adapted by {later}, which correct the head's "
            "outputs: call adapt_head on the model before adapt_prior and "
            "calibrate, then repeat them"
        )
    # Fitted on the images as given; with test-time augmentation the refitted
    # layer then scores their views too.
    passes, y_idx, weight0, bias0, _ = _head_inputs(clf, X, y, views=False)
    weight, bias, before, after = _pulled_logistic(
        passes[0], y_idx, weight0, bias0, float(pull)
    )
    step = {
        "step": "head",
        "n_images": len(y),
        "pull": float(pull),
        "loss_before": round(before, 6),
        "loss_after": round(after, 6),
    }
    out = _adapted(clf, state, step)
    new_head = classifier_head(out.net_.module_, out.model)
    with torch.no_grad():
        new_head.weight.copy_(torch.as_tensor(weight, dtype=new_head.weight.dtype))
        new_head.bias.copy_(torch.as_tensor(bias, dtype=new_head.bias.dtype))
    if getattr(out, "operating_threshold_", None) is not None:
        warnings.warn(
            "the recorded operating threshold was chosen for the trained head's "
            "scores and no longer holds; it is dropped: choose one with "
            "calibrate on the same sample, given its out-of-fold probabilities "
            "(proba=head_cross_val_proba(clf, X, y))",
            UserWarning,
            stacklevel=2,
        )
        out.operating_threshold_ = None
    return out


def _head_inputs(
    clf: PneumoniaClassifier,
    X: ImageInput,
    y: Sequence | np.ndarray,
    *,
    views: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple | None]:
    """What the head refit needs: the features ``predict_proba``'s forward
    passes feed the final layer, ``(1 + tta, n, n_features)`` (the images as
    given, then each test-time view; with ``views=False`` the images as
    given only, ``(1, n, n_features)``), the labels as indices, that layer,
    and the paths of ``X`` (None for an array)."""
    clf._validate_params()  # tta may be set after fit, as for predict_proba
    _, y_idx = _labelled(clf, y, "refitting the head")
    decoded = model_images(clf, X, verbose=clf.verbose)
    _check_count(len(decoded.pixels), len(y_idx), "refitting the head")
    if views and clf.tta:
        # the features of every pass of predict_proba, from that pass itself
        with head_inputs(clf.net_.module_, clf.model) as seen:
            network_proba(
                clf.net_, decoded.pixels, tta=clf.tta, random_state=clf.random_state
            )
        features = torch.cat(seen).numpy()
    else:
        features = penultimate_features(clf, decoded.pixels)
    head = classifier_head(clf.net_.module_, clf.model)
    return (
        features.astype(np.float64).reshape(-1, len(y_idx), features.shape[-1]),
        y_idx,
        head.weight.detach().double().cpu().numpy(),
        head.bias.detach().double().cpu().numpy(),
        decoded.paths,
    )


def _check_pull(pull: Any) -> None:
    if not (isinstance(pull, numbers.Real) and np.isfinite(pull) and pull > 0):
        raise ValueError(
            f"pull must be a positive number, got {pull!r} (the recommended "
            f"{DEFAULT_PULL}; larger keeps the trained layer)"
        )


def head_cross_val_proba(
    clf: PneumoniaClassifier,
    X: ImageInput,
    y: Sequence | np.ndarray,
    *,
    pull: float = DEFAULT_PULL,
    cv: int = 5,
    groups: Sequence | np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold probabilities of the head refit, for a threshold on the same sample.

    ``adapt_head(clf, X, y)`` separates its own sample, so a threshold chosen
    on its probabilities of ``X`` does not hold for new patients. Here the
    sample is split into ``cv`` folds by patient; each fold is scored by a
    head refitted (as ``adapt_head`` does, with the same ``pull``) on the
    other folds only. Give the result to ``calibrate(adapt_head(clf, X, y),
    X, y, sensitivity=..., proba=...)``: the calibration and the threshold
    are then fitted on scores of images that their head did not see, and
    applied to the head refitted on all of them (cross-fitting, as
    scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` does). Each
    fold head saw about a fifth fewer images than the final one.

    Parameters
    ----------
    clf : PneumoniaClassifier
        The fitted model *before* ``adapt_head`` (as given to it).
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        The labelled sample given to ``adapt_head``.
    y : array-like of shape (n,)
    pull : float, default=DEFAULT_PULL
        As in ``adapt_head``.
    cv : int, default=5
        Number of folds; fewer when a class has fewer patients.
    groups : array-like of shape (n,), optional
        Patient of each image, so that no patient is in two folds. Default:
        [`patient_groups`][cxrkit.images.patient_groups] of ``X`` when it
        holds paths, else one group per image.

    Returns
    -------
    ndarray of shape (n, n_classes)
        Probabilities of ``X`` as ``predict_proba`` of the refitted model
        gives them before any later step, each from a head that did not see
        its image's patient.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(100, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="cnn4", image_size=32, max_epochs=2,
    ...                           random_state=0).fit(X[:40], y[:40])
    >>> oof = head_cross_val_proba(clf, X[40:], y[40:])
    >>> site = calibrate(adapt_head(clf, X[40:], y[40:]), X[40:], y[40:],
    ...                  sensitivity=0.9, proba=oof)
    >>> oof.shape, site.operating_threshold_["criterion"]
    ((60, 2), 'sensitivity >= 0.9')
    """
    check_is_fitted(clf, "net_")
    _check_pull(pull)
    if not (isinstance(cv, numbers.Integral) and cv >= 2):
        raise ValueError(f"cv must be an integer of at least 2, got {cv!r}")
    passes, y_idx, weight0, bias0, paths = _head_inputs(clf, X, y)
    if groups is None and paths is not None:
        groups = patient_groups(paths)
    groups = np.arange(len(y_idx)) if groups is None else np.asarray(groups)
    _check_count(
        len(groups), len(y_idx), "the patient groups", "groups has {n} entries"
    )
    per_class = [len(np.unique(groups[y_idx == c])) for c in np.unique(y_idx)]
    n_splits = min(int(cv), *per_class)
    if n_splits < 2:
        raise ValueError(
            "head_cross_val_proba needs at least 2 patients of each class in the "
            "sample: label more patients"
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=0)
    proba = np.empty((len(y_idx), weight0.shape[0]))
    for fit_idx, score_idx in folds.split(passes[0], y_idx, groups):
        weight, bias, _, _ = _pulled_logistic(
            passes[0][fit_idx], y_idx[fit_idx], weight0, bias0, float(pull)
        )
        # as predict_proba: the softmax averaged over the image and its
        # test-time views (if any), then the model's adaptation (if any)
        proba[score_idx] = np.mean(
            [softmax(p[score_idx] @ weight.T + bias, axis=1) for p in passes], axis=0
        )
    return adjust_probabilities(proba, clf.adaptation_)


def _sample_proba(
    clf: PneumoniaClassifier, X: ImageInput, proba: np.ndarray | None
) -> np.ndarray:
    """``clf.predict_proba(X)``, or the probabilities given in its place."""
    if proba is None:
        return clf.predict_proba(X)
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[1] != len(clf.classes_):
        raise ValueError(
            f"proba must have one column per class ({len(clf.classes_)}), got "
            f"shape {proba.shape}: give predict_proba's output or "
            "head_cross_val_proba's"
        )
    if proba.size and (
        not np.all(np.isfinite(proba)) or proba.min() < 0 or proba.max() > 1
    ):
        raise ValueError(
            "proba must hold probabilities in [0, 1], without NaN: give "
            "predict_proba's output or head_cross_val_proba's"
        )
    return proba


def _nll(
    logp: np.ndarray, y_idx: np.ndarray, temperature: float, bias: np.ndarray
) -> float:
    z = logp / temperature + bias
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), y_idx]))


def calibrate(
    clf: PneumoniaClassifier,
    X: ImageInput,
    y: Sequence | np.ndarray,
    *,
    method: str = "temperature",
    sensitivity: float | None = None,
    threshold: str | None = None,
    n_bootstrap: int = 2000,
    random_state: int | None = 0,
    proba: np.ndarray | None = None,
) -> PneumoniaClassifier:
    """Recalibrate on a labelled site sample, and choose its operating threshold.

    ``method="temperature"`` fits one temperature that divides the
    log-probabilities (Guo et al. 2017); ``"platt"`` also fits a bias per
    class (for two classes, Platt scaling of the log-odds). Both minimise
    the log-loss on ``X``, ``y``, with a weak prior that keeps the
    temperature near 1 (``log T ~ N(0, 1)``), so that a small sample the
    model already separates cannot sharpen the probabilities to exactly 0
    and 1; both keep the order of the images. With
    ``sensitivity``, the threshold that keeps that share of *new* patients'
    positive images, in expectation over samples, becomes the model's
    ``operating_threshold_``: the split-conformal quantile of the sample's
    positive images (as ``conformalize`` makes for the positive class;
    Vovk et al. 2005), the ``ceil((n + 1) * sensitivity)``-th highest of
    the ``n`` positive probabilities. The highest threshold that merely
    reaches the floor on the sample
    ([`select_threshold`][cxrkit.metrics.select_threshold]) keeps only
    ``(n - k) / (n + 1)`` of new positives with ``k`` positives below it:
    0.93 to 0.94 for a 0.95 floor on 25 to 100 site images, as measured.
    Fewer than ``sensitivity / (1 - sensitivity)`` positive images (19 for
    0.95) cannot promise the floor: the lowest positive probability is used,
    with a warning. The threshold is recorded with the sample's size and the
    bootstrap 95% intervals of the sensitivity and specificity it reaches on
    the sample: a floor kept on average is still a loose promise for one
    sample, and the interval says how loose. With ``threshold="accuracy"`` (two
    classes, ``method="platt"``), the operating threshold becomes 0.5 on the
    recalibrated probabilities: Platt scaling's bias learns the site's
    class mix from the sample, so 0.5 is the threshold with the fewest
    expected errors there (no sensitivity floor). With neither, a threshold
    the model had keeps its decisions: it is carried through the new
    calibration, so that only the probabilities change.

    Use images of patients that you will not score afterwards (a small
    labelled sample drawn by patient); figures measured on the same images
    are optimistic.

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted model (possibly adapted already).
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        The site's labelled sample.
    y : array-like of shape (n,)
        Its labels, among ``clf.classes_``.
    method : {"temperature", "platt"}, default="temperature"
    sensitivity : float in (0, 1], optional
        Two classes: the sensitivity floor of the operating threshold.
    threshold : {None, "accuracy"}, default=None
        Two classes, with ``method="platt"``: the operating threshold with
        the fewest expected errors at the site (0.5 after recalibration).
        Give ``sensitivity`` or ``threshold``, not both.
    n_bootstrap : int, default=2000
        Resamples for the intervals of the recorded threshold.
    random_state : int or None, default=0
    proba : ndarray of shape (n, n_classes), optional
        Probabilities of ``X`` to fit on instead of ``clf.predict_proba(X)``:
        the out-of-fold probabilities of
        [`head_cross_val_proba`][cxrkit.adaptation.head_cross_val_proba]
        when ``clf`` is ``adapt_head``'s model refitted on these images.

    Returns
    -------
    PneumoniaClassifier
        A copy with ``adaptation_`` and ``operating_threshold_`` updated.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(60, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=2,
    ...                           random_state=0).fit(X[:40], y[:40])
    >>> site = calibrate(clf, X[40:], y[40:], sensitivity=0.9)
    >>> step = site.adaptation_["steps"][-1]
    >>> step["method"], step["n_images"]
    ('temperature', 20)
    >>> site.operating_threshold_["criterion"]
    'sensitivity >= 0.9'
    >>> site = calibrate(clf, X[40:], y[40:], method="platt", threshold="accuracy")
    >>> site.operating_threshold_["threshold"]
    0.5
    """
    check_is_fitted(clf, "net_")
    if method not in ("temperature", "platt"):
        raise ValueError(f"method must be 'temperature' or 'platt', got {method!r}")
    y, y_idx = _labelled(clf, y, "calibration")
    classes = clf.classes_.tolist()
    if sensitivity is not None and len(classes) != 2:
        raise ValueError("sensitivity applies to two classes only")
    if threshold not in (None, "accuracy"):
        raise ValueError(f"threshold must be None or 'accuracy', got {threshold!r}")
    if threshold is not None:
        if sensitivity is not None:
            raise ValueError("give sensitivity or threshold='accuracy', not both")
        if len(classes) != 2 or method != "platt":
            raise ValueError(
                "threshold='accuracy' needs two classes and method='platt' (its "
                "bias learns the site's class mix; temperature scaling has none)"
            )
    own = proba is None
    proba = _sample_proba(clf, X, proba)
    _check_count(
        len(proba),
        len(y),
        "calibration",
        "X gave {n} images" if own else "proba has {n} rows",
    )
    logp = np.log(np.clip(proba, _TINY, None))
    k = len(classes)

    # A weak Gaussian prior on log(temperature), N(0, 1), added to the summed
    # log-loss (a MAP fit). Without it, a small sample that the model already
    # separates has no finite maximum-likelihood temperature: the fit drives
    # it towards 0 and every probability to exactly 0 or 1 (6 of 20 samples
    # of 25 site images did, each losing the order of the images). Platt's
    # regularised targets (as in scikit-learn) also stop that, but flattened
    # this model's probabilities: expected calibration error 0.08 against
    # 0.04 with the prior, on 25 images of the Kermany test site.
    def loss(theta: np.ndarray) -> float:
        bias = np.zeros(k) if method == "temperature" else np.r_[0.0, theta[1:]]
        nll = _nll(logp, y_idx, float(np.exp(theta[0])), bias)
        return nll + 0.5 * theta[0] ** 2 / len(y_idx)

    start = np.zeros(1 if method == "temperature" else k)
    theta = minimize(loss, start, method="L-BFGS-B").x
    temperature = float(np.exp(theta[0]))
    new_bias = np.zeros(k) if method == "temperature" else np.r_[0.0, theta[1:]]
    state = _state(clf)
    # the new map is applied after the old one: log p' = (log p / T0 + b0) / T + b
    state["bias"] = (np.asarray(state["bias"]) / temperature + new_bias).tolist()
    state["temperature"] = float(state["temperature"]) * temperature
    step = {
        "step": "calibrate",
        "method": method,
        "n_images": len(y),
        "temperature": round(temperature, 6),
        "log_loss_before": round(_nll(logp, y_idx, 1.0, np.zeros(k)), 6),
        "log_loss_after": round(_nll(logp, y_idx, temperature, new_bias), 6),
    }
    out = _adapted(clf, state, step)
    if sensitivity is None and threshold is None:
        out.operating_threshold_ = _carried_threshold(clf, temperature, new_bias)
    else:
        # proba is the model as it stood (earlier steps included), so only
        # this step's map is applied to it: the probabilities predict_proba
        # of the adapted model gives
        calibrated = adjust_probabilities(
            proba, {"temperature": temperature, "bias": new_bias.tolist()}
        )
        pos_label = positive_label(clf.classes_)
        if sensitivity is not None:
            point = _conformal_floor(calibrated, y_idx, classes, sensitivity)
        else:
            pos = classes.index(pos_label)
            called = calibrated[:, pos] >= 0.5
            positive = y_idx == pos
            point = OperatingPoint(
                0.5,
                float(np.mean(called[positive])),
                float(np.mean(~called[~positive])),
                "fewest expected errors at the site (Platt-scaled, 0.5)",
            )
        report = clinical_report(
            y,
            calibrated,
            threshold=point.threshold,
            classes=clf.classes_,
            n_bootstrap=n_bootstrap,
            random_state=random_state,
        )
        n_pos = int(np.sum(y_idx == classes.index(pos_label)))
        out.operating_threshold_ = operating_threshold(
            point,
            pos_label=pos_label,
            source=(
                f"site calibration: {len(y)} images ({n_pos} {pos_label}"
                f"{'' if own else ', out-of-fold probabilities'}); "
                f"sensitivity 95% CI {_interval(report.metrics['sensitivity'])}, "
                f"specificity 95% CI {_interval(report.metrics['specificity'])} "
                "on that sample"
            ),
        )
    return out


def _conformal_rank(n: int, coverage: float) -> int:
    """``ceil((n + 1) * coverage)``: the rank, among ``n`` calibration images
    of a class sorted from most to least typical of it, of the split-conformal
    quantile that covers ``coverage`` of new images of that class in
    expectation; above ``n``, no image of the sample does."""
    return math.ceil((n + 1) * coverage)


def _images_needed(coverage: float) -> int:
    """The fewest images of a class whose quantile can give ``coverage``
    (``_conformal_rank(n, coverage) <= n``); rounded so that 0.9 gives 9."""
    return math.ceil(round(coverage / (1 - coverage), 9))


def _conformal_floor(
    proba: np.ndarray, y_idx: np.ndarray, classes: list, sensitivity: float
) -> OperatingPoint:
    """The threshold that keeps ``sensitivity`` of new positives in expectation.

    The positive class's split-conformal quantile, as ``conformalize`` takes
    it: the ``_conformal_rank``-th highest probability of the sample's
    positive images.
    """
    if not 0 < sensitivity <= 1:
        raise ValueError(f"sensitivity must be in (0, 1], got {sensitivity!r}")
    pos = classes.index(positive_label(np.asarray(classes)))
    scores = proba[:, pos]
    positives = np.sort(scores[y_idx == pos])[::-1]  # most typical first
    n = len(positives)
    rank = _conformal_rank(n, sensitivity)
    if rank > n:
        needed = (
            f"at least {_images_needed(sensitivity)} are needed"
            if sensitivity < 1
            else "no sample can"
        )
        warnings.warn(
            f"{n} {classes[pos]} images cannot promise sensitivity {sensitivity:g} "
            f"on new patients ({needed}); the threshold is their lowest "
            f"probability, which keeps {n / (n + 1):.3f} of new ones in "
            f"expectation: label more {classes[pos]} images or lower the floor",
            UserWarning,
            stacklevel=3,
        )
        rank = n
    # A hair below the boundary image's probability: the adapted model
    # computes it by one composed map, here it came through two, and the
    # last bits may differ; the boundary image must keep its call.
    threshold = float(positives[rank - 1]) * (1 - 1e-9)
    called = scores >= threshold
    return OperatingPoint(
        threshold,
        float(np.mean(called[y_idx == pos])),
        float(np.mean(~called[y_idx != pos])),
        f"sensitivity >= {sensitivity:g}",
    )


def _carried_threshold(
    clf: PneumoniaClassifier,
    temperature: float,
    bias: np.ndarray,
    through: str = "site calibration",
) -> dict[str, Any] | None:
    """The model's recorded threshold, moved through one more calibration map
    (``log p / temperature + bias``) so that every image keeps its call."""
    record = getattr(clf, "operating_threshold_", None)
    if record is None or len(clf.classes_) != 2:
        return record
    names = [str(c) for c in clf.classes_]
    pos = names.index(str(record["pos_label"]))
    t = float(np.clip(record["threshold"], _TINY, 1 - _TINY))
    logit = np.log(t / (1 - t)) / temperature + (bias[pos] - bias[1 - pos])
    carried = dict(record)
    carried["threshold"] = float(1 / (1 + np.exp(-logit)))
    carried["source"] = (
        f"{record.get('source') or 'recorded threshold'}; carried through "
        f"{through} (same calls)"
    )
    return carried


def _interval(estimate: Any) -> str:
    return f"{estimate.low:.3f}-{estimate.high:.3f}"


def _labels_as_indices(clf: PneumoniaClassifier, y: np.ndarray) -> np.ndarray:
    names = [str(c) for c in clf.classes_]
    unknown = sorted({str(v) for v in np.unique(y)} - set(names))
    if unknown:
        raise ValueError(
            f"y holds labels the model does not know: {unknown}; its classes are "
            f"{names}"
        )
    return np.array([names.index(str(v)) for v in y])


def _labelled(
    clf: PneumoniaClassifier, y: Any, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """``y`` as a 1-d array and as indices into ``clf.classes_``; a labelled
    step (``what``) needs images of at least two classes."""
    y = column_or_1d(np.asarray(y))
    y_idx = _labels_as_indices(clf, y)
    if len(np.unique(y_idx)) < 2:
        raise ValueError(
            f"y holds one class only; {what} needs images of every class (draw "
            "the labelled sample by patient within each class)"
        )
    return y, y_idx


def _check_count(
    n_images: int, n_labels: int, what: str, counted: str = "X gave {n} images"
) -> None:
    """Refuse ``n_images != n_labels``, naming what gave ``n_images``."""
    if n_images != n_labels:
        raise ValueError(
            f"{counted.format(n=n_images)} but y has {n_labels} labels; every "
            f"image must be readable ({what} cannot skip files)"
        )


def conformalize(
    clf: PneumoniaClassifier,
    X: ImageInput,
    y: Sequence | np.ndarray,
    *,
    coverage: float = 0.9,
    proba: np.ndarray | None = None,
) -> PneumoniaClassifier:
    """Class-conditional split conformal prediction sets, on a labelled sample.

    For each class ``c``, the score of a calibration image of that class is
    ``1 - p_c`` (the "least ambiguous" score of Sadinle, Lei & Wasserman,
    JASA 2019), and ``q_c`` is its ``ceil((n_c + 1) * coverage)``-th
    smallest value over the ``n_c`` images of class ``c``. A new image's set
    holds every class with ``1 - p_c <= q_c``. Conditioning on the class
    (Mondrian conformal prediction; Vovk et al. 2005) guarantees, for images
    exchangeable with the sample, that an image of class ``c`` gets ``c`` in
    its set with probability at least ``coverage``, for NORMAL as for
    PNEUMONIA, whatever the class mix. A set of both classes means the
    model cannot tell at that coverage: refer the image; an empty set means
    the image is unlike the sample's images of either class.

    The sets use the model's probabilities as they stand: call this after
    the last [`calibrate`][cxrkit.adaptation.calibrate] or other adaptation
    step (a later step drops the sets, with a warning). No library was
    used here because the quantiles must be kept in the model file without
    pickle (MAPIE's ``SplitConformalClassifier`` is a wrapper estimator with
    no class-conditional option).

    Parameters
    ----------
    clf : PneumoniaClassifier
        A fitted model.
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Labelled images of patients the model was not trained on (and that
        will not be scored with the sets).
    y : array-like of shape (n,)
    coverage : float in (0, 1), default=0.9
    proba : ndarray of shape (n, n_classes), optional
        As in ``calibrate``: probabilities of ``X`` to use instead of
        ``clf.predict_proba(X)``, e.g. out-of-fold ones after ``adapt_head``
        on the same sample (through the later steps, as ``predict_proba``
        applies them: ``adjust_probabilities(oof, clf.adaptation_)``).

    Returns
    -------
    PneumoniaClassifier
        A copy with ``conformal_``: the coverage, the score, and per class
        the quantile and the number of images it came from.

    Examples
    --------
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(80, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=2,
    ...                           random_state=0).fit(X[:40], y[:40])
    >>> sets = prediction_sets(conformalize(clf, X[40:], y[40:]), X[:3])
    >>> sets.shape, sets.dtype
    ((3, 2), dtype('bool'))
    """
    check_is_fitted(clf, "net_")
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
    y_idx = _labels_as_indices(clf, column_or_1d(np.asarray(y)))
    own = proba is None
    proba = _sample_proba(clf, X, proba)
    _check_count(
        len(proba),
        len(y_idx),
        "conformal calibration",
        "X gave {n} images" if own else "proba has {n} rows",
    )
    scores = 1.0 - proba[np.arange(len(y_idx)), y_idx]
    quantiles, counts = {}, {}
    for i, label in enumerate(clf.classes_.tolist()):
        own = np.sort(scores[y_idx == i])
        rank = _conformal_rank(len(own), coverage)
        if rank > len(own):
            raise ValueError(
                f"{len(own)} images of class {label!r} cannot give {coverage:.0%} "
                f"coverage (at least {_images_needed(coverage)} are "
                "needed): add images of that class or lower the coverage"
            )
        quantiles[str(label)] = float(own[rank - 1])
        counts[str(label)] = len(own)
    out = copy.deepcopy(clf)
    out.conformal_ = {
        "coverage": float(coverage),
        "score": "1 - p(class), class-conditional",
        "quantiles": quantiles,
        "n_images": counts,
    }
    return out


def prediction_sets(clf: PneumoniaClassifier, X: ImageInput) -> np.ndarray:
    """Conformal prediction sets of a model made by ``conformalize``.

    Parameters
    ----------
    clf : PneumoniaClassifier
        With ``conformal_`` (see [`conformalize`][cxrkit.adaptation.conformalize]).
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)

    Returns
    -------
    ndarray of shape (n, n_classes), dtype bool
        ``True`` where the class is in the image's set (columns in the order
        of ``classes_``).
    """
    return sets_from_probabilities(clf, clf.predict_proba(X))


def sets_from_probabilities(clf: PneumoniaClassifier, proba: np.ndarray) -> np.ndarray:
    """``prediction_sets`` from probabilities already computed (no new pass)."""
    conformal = getattr(clf, "conformal_", None)
    if conformal is None:
        raise ValueError(
            "this model has no conformal prediction sets: make them with "
            "cxrkit.adaptation.conformalize(clf, X_labelled, y_labelled) "
            "(or `cxrkit adapt MODEL --labelled DIR --coverage 0.9`)"
        )
    q = np.array([conformal["quantiles"][str(c)] for c in clf.classes_.tolist()])
    return (1.0 - np.asarray(proba)) <= q[None, :]
