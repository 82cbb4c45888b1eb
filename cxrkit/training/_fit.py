"""How ``cxrkit.PneumoniaClassifier`` trains and predicts, behind its parameters.

The estimator decides *what* goes in (decoded images, labels, groups); this
module holds *how* the skorch net is made and run, in one place for ``fit``,
``load`` and resumed fits:

* ``build_net``, the one builder of the skorch net (model, loss with class
  weights, AdamW, LR schedule and other callbacks, sampling, device);
* the table of LR schedules (``LR_SCHEDULES``) and the other callbacks;
* ``validation_split``, the stratified, patient-grouped internal split;
* ``checkpoint_callbacks``, resuming from ``checkpoint_dir``;
* ``fit_head_on_features``, the ``freeze="backbone"`` fit on features
  computed once;
* ``predict_proba``, with test-time augmentation;
* ``resolve_device``, ``seed_from`` and ``fit_seed``.

Everything here takes the estimator's parameters as a plain mapping
(``clf.get_params()``), so nothing here imports the estimator.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError
from skorch import NeuralNetClassifier
from skorch.callbacks import EarlyStopping, EpochScoring, LRScheduler, ProgressBar
from skorch.helper import predefined_split
from torch import nn
from torch.utils.data import Dataset, TensorDataset, WeightedRandomSampler

from cxrkit.images._batches import ImageBatches, ImageDataset
from cxrkit.images._cache import DecodedImages
from cxrkit.images._folders import patient_id
from cxrkit.models._accelerated import AcceleratedImageClassifierNet
from cxrkit.models._features import backbone_features, headless
from cxrkit.models._net import ImageClassifierNet, data_device
from cxrkit.models._registry import build_model
from cxrkit.training._augmentation import build_augmentation
from cxrkit.training._callbacks import WeightAveraging, print_epoch_table
from cxrkit.training._checkpoint import (
    data_fingerprint,
    recorded_seed,
    training_checkpoint,
)
from cxrkit.training._tta import shared_views

__all__ = [
    "LR_SCHEDULES",
    "NetSpec",
    "build_net",
    "checkpoint_callbacks",
    "default_groups",
    "fit_head_on_features",
    "fit_seed",
    "image_datasets",
    "predict_proba",
    "resolve_device",
    "sampling",
    "seed_from",
    "training_callbacks",
    "validation_split",
]


@dataclass(frozen=True)
class NetSpec:
    """What a net is built for that the parameters do not say: learnt from the data.

    ``fit`` finds it, a model file records it, ``load`` builds the same net
    from it.

    Attributes
    ----------
    n_classes : int
    class_weights : tuple of float
        Weight of each class in the loss, in the order of ``classes_``.
    n_train : int
        Images in the training part (sets the steps of a one-cycle schedule).
    validation : bool
        Whether an internal validation split scores the epochs.
    """

    n_classes: int
    class_weights: tuple[float, ...]
    n_train: int = 0
    validation: bool = False


# ------------------------------------------------------------------ devices
def resolve_device(device: str, *, owner: str = "") -> str:
    """The torch device for a ``device`` parameter; ``"auto"``: CUDA if present.

    Parameters
    ----------
    device : str
        ``"auto"``, or a torch device string (``"cpu"``, ``"cuda"``,
        ``"cuda:1"``, ``"mps"``) that this machine has.
    owner : str
        Whose parameter it is, for error messages (``"PneumoniaClassifier"``).

    Returns
    -------
    str

    Raises
    ------
    sklearn.utils._param_validation.InvalidParameterError
        Not a torch device string (e.g. ``"gpu0"``), or a device this machine
        does not have.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    >>> resolve_device("auto") in ("cpu", "cuda")
    True
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    name = f"The 'device' parameter{' of ' + owner if owner else ''}"
    allowed = "'auto' or a torch device string such as 'cpu', 'cuda' or 'cuda:0'"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidParameterError(
            f"{name} must be {allowed}. Got {device!r} instead."
        ) from None
    if parsed.type == "cuda":
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= n_gpus:
            raise InvalidParameterError(
                f"{name} is {device!r}, but this machine has {n_gpus} CUDA "
                "device(s): use device='auto' or 'cpu'"
            )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameterError(
            f"{name} is {device!r}, but MPS is not available here: use "
            "device='auto' or 'cpu'"
        )
    return str(device)


def seed_from(random_state: int | np.random.RandomState | None) -> int:
    """One int seed for torch, drawn from a ``random_state`` parameter."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def fit_seed(params: Mapping[str, Any]) -> int:
    """The seed of a ``fit`` (validation split, weights, augmentation).

    Drawn from ``random_state`` (``seed_from``); but a fit that resumes a
    ``checkpoint_dir`` with ``random_state=None`` takes the seed that the run
    drew first and recorded there, so that it validates on the same images.

    Examples
    --------
    >>> fit_seed({"random_state": 0, "checkpoint_dir": None}) == seed_from(0)
    True
    """
    if params["random_state"] is None and params["checkpoint_dir"] is not None:
        seed = recorded_seed(params["checkpoint_dir"])
        if seed is not None:
            return seed
    return seed_from(params["random_state"])


# ------------------------------------------------------------ validation split
def default_groups(decoded: DecodedImages) -> np.ndarray:
    """Patient ids parsed from paths (each unparsed image its own group)."""
    if decoded.paths is None:
        return np.arange(len(decoded)).astype(str)
    return np.array([patient_id(p) or p for p in decoded.paths], dtype=object)


def validation_split(
    y_enc: np.ndarray,
    groups: np.ndarray,
    fraction: float | None,
    seed: int,
    *,
    required: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stratified, patient-grouped train / validation indices.

    Parameters
    ----------
    y_enc : ndarray of int
        Encoded labels.
    groups : ndarray
        Patient id per image.
    fraction : float or None
        About this share of the images is held out, as one of
        ``max(2, round(1 / fraction))`` folds (a warning when that is more
        than 0.05 off); None or 0: none.
    seed : int
    required : bool
        Raise (rather than warn and train on everything) when there are too
        few patients per class for the split (early stopping needs it).

    Returns
    -------
    train_idx : ndarray
    valid_idx : ndarray or None

    Examples
    --------
    >>> y = np.array([0, 0, 1, 1] * 5)
    >>> train, valid = validation_split(y, np.arange(20).astype(str), 0.2, seed=0)
    >>> len(train), len(valid)
    (16, 4)
    """
    everything = np.arange(len(y_enc))
    if not fraction:
        return everything, None
    n_splits = max(2, round(1 / fraction))
    if abs(1 / n_splits - fraction) > 0.05 + 1e-9:
        # stacklevel: validation_split <- fit <- _fit_context <- the caller
        warnings.warn(
            f"validation_fraction={fraction} is rounded to 1/{n_splits}: one of "
            f"{n_splits} patient-grouped folds, about {1 / n_splits:.2f} of the "
            "images, is held out",
            UserWarning,
            stacklevel=4,
        )
    _, group_codes = np.unique(groups.astype(str), return_inverse=True)
    groups_per_class = [
        len(np.unique(group_codes[y_enc == k])) for k in range(y_enc.max() + 1)
    ]
    if min(groups_per_class) < n_splits:
        msg = (
            f"too few patients per class ({min(groups_per_class)}) for "
            f"validation_fraction={fraction}"
        )
        if required:
            raise ValueError(
                f"{msg}; early stopping needs a validation split. Use more "
                "images, a larger validation_fraction, or early_stopping=None."
            )
        # stacklevel: validation_split <- fit <- _fit_context <- the caller
        warnings.warn(f"{msg}: training on all images", UserWarning, stacklevel=4)
        return everything, None
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        train_idx, valid_idx = next(splitter.split(everything, y_enc, group_codes))
    return train_idx, valid_idx


# ------------------------------------------------------------------ callbacks
def _valid_auc(net: NeuralNetClassifier, X: Any, y: np.ndarray) -> float:
    """ROC AUC on the internal validation split (one-vs-rest for >2 classes)."""
    proba = net.predict_proba(X)  # skorch serves this from its epoch cache
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return roc_auc_score(y, proba[:, 1])
    return roc_auc_score(y, proba, multi_class="ovr", labels=np.arange(proba.shape[1]))


#: ``lr_schedule`` name -> the skorch ``LRScheduler`` for it, given the
#: parameters, the optimizer steps per epoch and whether there is a
#: validation split.
LR_SCHEDULES: dict[str, Callable[[Mapping[str, Any], int, bool], LRScheduler]] = {
    "cosine": lambda p, steps, valid: LRScheduler(
        policy=torch.optim.lr_scheduler.CosineAnnealingLR, T_max=p["max_epochs"]
    ),
    "onecycle": lambda p, steps, valid: LRScheduler(
        policy=torch.optim.lr_scheduler.OneCycleLR,
        max_lr=p["lr"],
        epochs=p["max_epochs"],
        steps_per_epoch=steps,
        step_every="batch",
    ),
    "plateau": lambda p, steps, valid: LRScheduler(
        policy=torch.optim.lr_scheduler.ReduceLROnPlateau,
        monitor="valid_loss" if valid else "train_loss",
        patience=2,
    ),
}


def training_callbacks(
    params: Mapping[str, Any], spec: NetSpec, *, processes: int = 1
) -> list:
    """The skorch callbacks for the estimator's parameters.

    Validation AUC scoring (with a validation split), the LR schedule,
    weight averaging, early stopping and progress bars. ``processes``: the
    processes that share each epoch's batches (an accelerator's), so that a
    per-batch schedule spans the steps each process takes.

    Examples
    --------
    >>> spec = NetSpec(n_classes=2, class_weights=(1.0, 1.0), n_train=64)
    >>> params = {"lr": 1e-3, "max_epochs": 3, "batch_size": 32,
    ...           "lr_schedule": "onecycle", "ema_decay": None,
    ...           "early_stopping": None, "verbose": 0}
    >>> [type(c).__name__ for c in training_callbacks(params, spec)]
    ['LRScheduler']
    """
    callbacks: list = []
    if spec.validation:
        callbacks.append(
            EpochScoring(
                _valid_auc, name="valid_auc", lower_is_better=False, use_caching=True
            )
        )
    if params["lr_schedule"] is not None:
        batches = max(1, math.floor(spec.n_train / params["batch_size"]))
        # Accelerate's data loader deals each process ceil(batches / processes)
        # batches, repeating a few when they do not divide evenly.
        steps = math.ceil(batches / processes)
        callbacks.append(
            LR_SCHEDULES[params["lr_schedule"]](params, steps, spec.validation)
        )
    if params["ema_decay"] is not None:
        callbacks.append(
            WeightAveraging(params["ema_decay"], dirname=params.get("checkpoint_dir"))
        )
    if params["early_stopping"] is not None:
        callbacks.append(
            EarlyStopping(
                monitor="valid_loss",
                patience=int(params["early_stopping"]),
                load_best=True,
            )
        )
    if params["verbose"] >= 2:
        callbacks.append(ProgressBar())
    return callbacks


def checkpoint_callbacks(
    params: Mapping[str, Any],
    classes: np.ndarray,
    images: np.ndarray,
    y_enc: np.ndarray,
    *,
    seed: int,
) -> tuple[list, dict[str, Any]]:
    """Callbacks and ``net.fit`` arguments for ``checkpoint_dir`` (resume).

    ``seed`` (``fit_seed``) is recorded with the run. Returns ``([], {})``
    without a ``checkpoint_dir``; else skorch's
    ``[LoadInitState, Checkpoint]`` (see
    [`training_checkpoint`][cxrkit.training._checkpoint.training_checkpoint]) and
    ``{"epochs": epochs left}``.
    """
    if params["checkpoint_dir"] is None:
        return [], {}
    skip = ("checkpoint_dir", "device", "verbose", "accelerator")
    run = {
        "params": {k: v for k, v in params.items() if k not in skip},
        "classes": classes.tolist(),
        "data": data_fingerprint(images, y_enc),
        "seed": int(seed),
    }
    callbacks, epochs_done = training_checkpoint(params["checkpoint_dir"], run)
    return callbacks, {"epochs": max(0, params["max_epochs"] - epochs_done)}


# ------------------------------------------------------------------- the net
def image_datasets(
    images: np.ndarray,
    y_enc: np.ndarray,
    splits: Sequence[np.ndarray | None],
    *,
    frozen: bool,
    device: str,
) -> list[ImageBatches | ImageDataset | None]:
    """The training and validation images, as the net takes them.

    ``uint8`` batches (``ImageBatches``), kept on ``device`` when they fit
    there (``cxrkit.models._net.data_device``), which the net augments and
    normalises; or, for the frozen-backbone features (``cxrkit.models._features``),
    normalised images (``ImageDataset``). None for a split that is None.
    """
    where = data_device(images, device)
    return [
        None
        if idx is None
        else ImageDataset(images[idx], y_enc[idx])
        if frozen
        else ImageBatches(images[idx], y_enc[idx], device=where)
        for idx in splits
    ]


def sampling(sampler: str | None, y_enc: np.ndarray | None) -> dict[str, Any]:
    """skorch ``iterator_train__*`` arguments: shuffle, or class-balanced draws.

    Without labels (a net rebuilt from a model file) there is nothing to
    balance, and the training images are shuffled.
    """
    if sampler is None or y_enc is None:
        return {"iterator_train__shuffle": True}
    per_class = np.bincount(y_enc).astype(np.float64)
    weights = torch.as_tensor(1.0 / per_class[y_enc], dtype=torch.double)
    # torch's global RNG draws the samples; fit seeds it (fork_rng).
    return {
        "iterator_train__sampler": WeightedRandomSampler(
            weights, num_samples=len(y_enc), replacement=True
        ),
        "iterator_train__shuffle": False,
    }


def build_net(
    params: Mapping[str, Any],
    spec: NetSpec,
    *,
    device: str,
    valid_ds: Dataset | None = None,
    y_train: np.ndarray | None = None,
    resume_callbacks: Sequence = (),
    initial_weights: bool = True,
    accelerator: Any = None,
) -> ImageClassifierNet:
    """The skorch net of a ``PneumoniaClassifier``, for ``fit`` and ``load`` alike.

    Parameters
    ----------
    params : mapping
        The estimator's parameters (``clf.get_params()``).
    spec : NetSpec
        Classes, class weights, training-set size, validation or not.
    device : str
        A resolved torch device (``resolve_device``).
    valid_ds : torch Dataset, optional
        The internal validation split (``fit`` only).
    y_train : ndarray of int, optional
        Encoded training labels, for ``sampler="balanced"`` (``fit`` only).
    resume_callbacks : sequence
        ``[LoadInitState, Checkpoint]`` from ``checkpoint_callbacks``.
    initial_weights : bool
        Load the ``pretrained`` weights; False when the weights will be
        replaced anyway (a model file), so that nothing is downloaded or read.
    accelerator : accelerate.Accelerator, optional
        Train through it (``resolve_accelerator``): the net is then a
        ``cxrkit.models.AcceleratedImageClassifierNet`` whose devices
        the accelerator chooses (``device`` is not used).

    Returns
    -------
    cxrkit.models._net.ImageClassifierNet
        A skorch ``NeuralNetClassifier`` that augments (training steps only),
        normalises and runs ``uint8`` image batches; not initialised.

    Examples
    --------
    >>> params = {"model": "simple_cnn", "image_size": 32, "pretrained": None,
    ...           "freeze": None, "augment": "light", "flip": False,
    ...           "precision": "32", "lr": 1e-3, "weight_decay": 0.0,
    ...           "label_smoothing": 0.0, "mixup": None, "max_epochs": 1,
    ...           "batch_size": 8, "sampler": None, "lr_schedule": None,
    ...           "ema_decay": None, "early_stopping": None, "verbose": 0}
    >>> net = build_net(params, NetSpec(2, (1.0, 1.0)), device="cpu").initialize()
    >>> net.predict_proba(ImageBatches(np.zeros((3, 32, 32), np.uint8))).shape
    (3, 2)
    """
    module = build_model(
        params["model"],
        spec.n_classes,
        image_size=params["image_size"],
        pretrained=params["pretrained"] if initial_weights else None,
        freeze=params["freeze"],
    )
    if accelerator is None:
        net_class, placement, processes = ImageClassifierNet, {"device": device}, 1
    else:
        net_class = AcceleratedImageClassifierNet
        placement = {"accelerator": accelerator, "device": None}
        processes = accelerator.num_processes
    callbacks = [
        *resume_callbacks[:1],  # LoadInitState before the LR schedule
        *training_callbacks(params, spec, processes=processes),
        *resume_callbacks[1:],  # Checkpoint after the scores
    ]
    return net_class(
        module,
        augmentation=build_augmentation(params["augment"], params["flip"]),
        precision=params["precision"],
        criterion=nn.CrossEntropyLoss,
        criterion__weight=torch.as_tensor(spec.class_weights, dtype=torch.float32),
        criterion__label_smoothing=params["label_smoothing"],
        mixup=params["mixup"],
        optimizer=torch.optim.AdamW,
        optimizer__fused=True,  # one kernel per step: several times faster
        optimizer__weight_decay=params["weight_decay"],
        lr=params["lr"],
        max_epochs=params["max_epochs"],
        batch_size=params["batch_size"],
        **sampling(params["sampler"], y_train),
        iterator_train__drop_last=spec.n_train > params["batch_size"],
        train_split=predefined_split(valid_ds) if valid_ds is not None else None,
        callbacks=callbacks,
        # no colour codes in logs (skorch calls a sink other than print even
        # with verbose=0, hence only when verbose)
        **(
            {"callbacks__print_log__sink": print_epoch_table}
            if params["verbose"]
            else {}
        ),
        classes=list(range(spec.n_classes)),
        verbose=params["verbose"],
        **placement,
    )


def fit_head_on_features(
    net: ImageClassifierNet,
    model_name: str,
    train_ds: ImageDataset,
    valid_ds: ImageDataset | None,
    **fit_kwargs: Any,
) -> np.ndarray:
    """Train only the head of ``net``, on backbone features computed once.

    See ``cxrkit.models._features``: the frozen backbone runs once (in eval mode,
    without augmentation) instead of once per epoch, in the memory format the
    net keeps its module in. A second skorch net with the same settings
    trains the head on the feature vectors; its callbacks are fresh clones of
    ``net``'s, checkpoints included, and ``fit_kwargs`` (``epochs`` left when
    resuming) reach its ``fit``.

    Returns
    -------
    ndarray of shape (n_train + n_valid, n_features)
        The features of the training then the validation images: what the
        out-of-distribution detector is fitted on, so that it need not run
        the backbone over them again.
    """
    module = net.module
    if net.channels_last:  # as initialize_module will leave it
        module.to(memory_format=torch.channels_last)
    with headless(module, model_name) as (backbone, head):
        sets = [
            None
            if ds is None
            else TensorDataset(
                torch.from_numpy(
                    backbone_features(
                        backbone,
                        ds,
                        batch_size=net.batch_size,
                        device=net.device,
                        channels_last=net.channels_last,
                    )
                ),
                ds.y,
            )
            for ds in (train_ds, valid_ds)
        ]
    params = clone(net).get_params(deep=False)  # fresh callbacks
    params.update(
        module=head,
        train_split=predefined_split(sets[1]) if sets[1] is not None else None,
    )
    head_net = type(net)(**params)
    head_net.fit(sets[0], y=None, **fit_kwargs)
    # The trained head is back inside ``module``; serve predictions from it.
    net.initialize()
    net.history = head_net.history
    return torch.cat([ds.tensors[0] for ds in sets if ds is not None]).numpy()


# ------------------------------------------------------------------- predict
def predict_proba(
    net: ImageClassifierNet,
    images: np.ndarray,
    *,
    tta: int = 0,
    random_state: int | np.random.RandomState | None = None,
) -> np.ndarray:
    """Class probabilities of decoded images, averaged over ``tta`` copies.

    The copies are the fixed views of ``TestTimeViews``
    (``cxrkit.training._tta``): ``tta`` shifts, rotations, zooms, brightness
    and contrast changes of the ``"light"`` augmentation, drawn once from
    ``random_state`` (0 unless an int), copy ``k`` of every image getting
    view ``k``. An image's probabilities thus
    depend only on the model, the image and the seed: the same on every
    call, alone or among other images, and in the model's ONNX export. The
    images as they are run first, then the copies, view by view
    (``cxrkit.ood.proba_and_ood_score`` relies on that order).

    With copies and a net on a CUDA device, the images and the views are
    placed there once per call when the images fit (``data_device``, as in
    ``fit``), and the copies are computed there (equal to the CPU's up to
    float rounding); otherwise the copies are computed on the CPU and, for a
    CUDA net, their batches cross from page-locked memory.
    """
    device = str(net.device)
    where = data_device(images, device) if tta else "cpu"
    # pinned only where the images stay on the CPU (ImageBatches decides)
    batches = ImageBatches(images, device=where, pin_memory=device.startswith("cuda"))
    proba = net.predict_proba(batches).astype(np.float64)
    if tta:
        views = shared_views(images.shape[-1], tta, random_state)
        if where != "cpu":  # a copy: the shared module stays on the CPU
            views = copy.deepcopy(views).to(where)
        for k in range(tta):
            copies = copy.copy(batches)  # the same images, not copied again
            copies.transform = functools.partial(views.view, k=k)
            proba += net.predict_proba(copies)
        proba /= 1 + tta
    return proba


def adjust_probabilities(proba: np.ndarray, adaptation: dict | None) -> np.ndarray:
    """Apply a recorded adaptation: ``softmax(log(proba) / temperature + bias)``.

    Parameters
    ----------
    proba : ndarray of shape (n, n_classes)
        Probabilities, columns in the order of ``classes_``.
    adaptation : dict or None
        ``clf.adaptation_``; None returns ``proba`` unchanged.

    Returns
    -------
    ndarray of shape (n, n_classes)

    Examples
    --------
    >>> p = np.array([[0.8, 0.2], [0.4, 0.6]])
    >>> adjust_probabilities(p, {"temperature": 1.0, "bias": [0.0, 0.0]}).round(3)
    array([[0.8, 0.2],
           [0.4, 0.6]])
    >>> adjust_probabilities(p, {"temperature": 2.0, "bias": [0.0, 0.0]}).round(3)
    array([[0.667, 0.333],
           [0.449, 0.551]])
    """
    if adaptation is None:
        return proba
    logits = np.log(np.clip(proba, 1e-12, None)) / float(adaptation["temperature"])
    logits = logits + np.asarray(adaptation["bias"], dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)
