"""``PneumoniaClassifier``: a scikit-learn classifier around a skorch net.

Composition, not inheritance: the estimator has flat parameters (so
``GridSearchCV`` grids stay simple, ``{"lr": [...]}``) and builds its skorch
``NeuralNetClassifier`` in ``fit``. skorch runs the training loop and its
callbacks (early stopping, LR schedules, progress); this module only decides
what goes in: decoded images, the internal validation split, class weights.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d
from skorch import NeuralNetClassifier
from skorch.callbacks import EarlyStopping, EpochScoring, LRScheduler, ProgressBar
from skorch.helper import predefined_split
from torch import nn
from torch.utils.data import TensorDataset, WeightedRandomSampler

from cxrkit.cache import is_path_like_sequence, load_images
from cxrkit.callbacks import WeightAveraging
from cxrkit.data import patient_id
from cxrkit.features import backbone_features, headless
from cxrkit.models import build_model
from cxrkit.persistence import (
    data_fingerprint,
    load_model,
    save_model,
    training_checkpoint,
)
from cxrkit.transforms import ImageDataset, build_augmentation

__all__ = ["PneumoniaClassifier"]

ImageInput = Sequence[str | os.PathLike] | np.ndarray

_LR_SCHEDULES = ("cosine", "onecycle", "plateau", None)


def _valid_auc(net: NeuralNetClassifier, X: Any, y: np.ndarray) -> float:
    """ROC AUC on the internal validation split (one-vs-rest for >2 classes)."""
    proba = net.predict_proba(X)  # skorch serves this from its epoch cache
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return roc_auc_score(y, proba[:, 1])
    return roc_auc_score(y, proba, multi_class="ovr", labels=np.arange(proba.shape[1]))


class PneumoniaClassifier(ClassifierMixin, BaseEstimator):
    """Chest X-ray classifier with the scikit-learn interface.

    ``X`` is a sequence of image paths (as returned by
    :func:`cxrkit.load_image_folder`) or an array of images of shape
    ``(n, H, W)`` or ``(n, H, W, C)``; ``y`` holds any labels (strings or
    ints), two classes or more. Images are decoded and resized once per call
    (and cached across calls, see :mod:`cxrkit.cache`), not once per epoch.

    For research and education; not a medical device.

    Parameters
    ----------
    model : str, default="cnn4"
        Architecture, one of :func:`cxrkit.models.available_models`.
    pretrained : None, "imagenet" or path, default=None
        Initial weights of torchvision backbones; a path is a local
        ``state_dict`` file (works offline).
    freeze : None or "backbone", default=None
        ``"backbone"`` trains only the final linear layer, on backbone
        features computed once per ``fit`` (see :mod:`cxrkit.features`: the
        backbone runs in eval mode, and ``augment`` does not apply).
    image_size : int, default=128
        Images are resized (squashed) to ``image_size x image_size``.
    augment : {"light", "default", "strong", "blur"}, bool or None, \
default="default"
        Random rotation, translation, scale, brightness and contrast while
        training (``"blur"``: ``"default"`` plus random Gaussian blur, see
        :data:`cxrkit.transforms.AUGMENT_PRESETS`); never applied in
        ``predict`` (except with ``tta``).
    flip : bool, default=False
        Also flip horizontally while training. Off by default: the left and
        right lungs are not interchangeable.
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the loss, computed with scikit-learn's
        ``compute_class_weight`` from the ``y`` of each ``fit`` (so every CV
        fold gets its own).
    sampler : None or "balanced", default=None
        ``"balanced"`` draws training images with replacement so that each
        class is drawn equally often on average (torch's
        ``WeightedRandomSampler``), the alternative to ``class_weight`` for
        class imbalance; an epoch still has as many images as the training set.
    lr : float, default=1e-3
        Learning rate of AdamW.
    weight_decay : float, default=1e-4
        AdamW weight decay.
    batch_size : int, default=32
    max_epochs : int, default=10
    lr_schedule : {"cosine", "onecycle", "plateau"} or None, default="cosine"
        Learning-rate schedule over ``max_epochs``.
    label_smoothing : float, default=0.0
        Label smoothing of the cross-entropy loss.
    ema_decay : float or None, default=None
        Keep an exponential moving average of the weights over training
        steps with this decay (e.g. 0.99, about the last 100 steps) and use
        it as the final model (:class:`cxrkit.callbacks.WeightAveraging`).
    tta : int, default=0
        Test-time augmentation: ``predict_proba`` averages the probabilities
        of each image and of ``tta`` randomly shifted, rotated and rescaled
        copies (the ``"light"`` augmentation, seeded by ``random_state``).
        Costs ``1 + tta`` forward passes per image.
    validation_fraction : float or None, default=0.1
        Fraction of the training images held out (stratified, and grouped by
        patient when ``X`` holds Kermany-style paths or ``fit`` gets
        ``groups``) to score each epoch and drive early stopping. None or 0
        trains on everything.
    early_stopping : None or int, default=None
        Patience in epochs on the validation loss; the best epoch's weights
        are restored at the end.
    on_error : {"raise", "skip"}, default="raise"
        Unreadable image files in ``fit``: raise one error listing them all,
        or leave them out with a warning that lists them.
    checkpoint_dir : str, path-like or None, default=None
        Save the weights, optimizer state and history to this folder after
        every epoch (skorch's ``Checkpoint``). A ``fit`` interrupted by Ctrl-C
        or a crash, called again with the same parameters and data, resumes
        from the last finished epoch up to ``max_epochs``. Use a new folder per
        run: a checkpoint of a different run raises an error.
    device : str, default="auto"
        ``"auto"`` uses CUDA when available, else the CPU; or any torch
        device string.
    random_state : int, RandomState or None, default=None
        Seeds weights, shuffling, augmentation and the validation split; an
        int makes a fit on CPU repeatable.
    verbose : int, default=0
        1 prints skorch's table of epochs; 2 adds progress bars.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the ``predict_proba`` columns.
    net_ : skorch.NeuralNetClassifier
        The trained skorch net (``net_.module_`` is the torch model).
    history_ : skorch.History
        Per-epoch losses, ``valid_auc`` and durations.
    device_ : str
        The device used.
    skipped_files_ : list of str
        Image files left out of ``fit`` because they could not be read
        (only with ``on_error="skip"``; empty otherwise).

    Examples
    --------
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> X, y, _ = make_synthetic_cxr(n_samples=40, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32, max_epochs=1,
    ...                           random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
    >>> clf.classes_.tolist()
    ['NORMAL', 'PNEUMONIA']
    """

    def __init__(
        self,
        *,
        model: str = "cnn4",
        pretrained: str | os.PathLike | None = None,
        freeze: str | None = None,
        image_size: int = 128,
        augment: str | bool | None = "default",
        flip: bool = False,
        class_weight: str | dict | None = None,
        sampler: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 32,
        max_epochs: int = 10,
        lr_schedule: str | None = "cosine",
        label_smoothing: float = 0.0,
        ema_decay: float | None = None,
        tta: int = 0,
        validation_fraction: float | None = 0.1,
        early_stopping: int | None = None,
        on_error: str = "raise",
        checkpoint_dir: str | os.PathLike | None = None,
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        self.model = model
        self.pretrained = pretrained
        self.freeze = freeze
        self.image_size = image_size
        self.augment = augment
        self.flip = flip
        self.class_weight = class_weight
        self.sampler = sampler
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr_schedule = lr_schedule
        self.label_smoothing = label_smoothing
        self.ema_decay = ema_decay
        self.tta = tta
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.on_error = on_error
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    def fit(
        self, X: ImageInput, y: Sequence | np.ndarray, groups: Sequence | None = None
    ) -> PneumoniaClassifier:
        """Train on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        y : array-like of shape (n,)
            Class labels (strings or ints), at least two classes.
        groups : array-like of shape (n,), optional
            Patient ids for the internal validation split. By default they
            are parsed from Kermany-style paths (each image its own group
            when a name cannot be parsed, or for arrays).

        Returns
        -------
        self
        """
        self._check_params()
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y "
                "is None: pass one class label per image in X"
            )
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        _check_length(X, y, "y")
        if groups is not None:
            groups = np.asarray(groups)
            _check_length(X, groups, "groups")

        images, kept = load_images(
            X, self.image_size, on_error=self.on_error, verbose=self.verbose
        )
        y = y[kept]
        self.skipped_files_ = _skipped_files(X, kept)
        if groups is None:
            groups = _default_groups(X, kept)
        else:
            groups = groups[kept]

        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y holds a single class ({self.classes_[0]!r}); a classifier needs "
                "images of at least 2 classes"
            )
        weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
        self.device_ = _resolve_device(self.device)
        seed = _seed(self.random_state)

        fork_devices = (
            [torch.cuda.current_device()] if self.device_.startswith("cuda") else []
        )
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            train_idx, valid_idx = self._split(y_enc, groups, seed)
            train_ds = ImageDataset(
                images[train_idx],
                y_enc[train_idx],
                transform=build_augmentation(self.augment, self.flip),
            )
            valid_ds = (
                ImageDataset(images[valid_idx], y_enc[valid_idx])
                if valid_idx is not None
                else None
            )
            module = build_model(
                self.model,
                len(self.classes_),
                image_size=self.image_size,
                pretrained=self.pretrained,
                freeze=self.freeze,
            )
            resume_callbacks, resume_kwargs = self._checkpointing(images, y_enc)
            self.net_ = NeuralNetClassifier(
                module,
                criterion=nn.CrossEntropyLoss,
                criterion__weight=torch.as_tensor(weights, dtype=torch.float32),
                criterion__label_smoothing=self.label_smoothing,
                optimizer=torch.optim.AdamW,
                optimizer__weight_decay=self.weight_decay,
                lr=self.lr,
                max_epochs=self.max_epochs,
                batch_size=self.batch_size,
                **_sampling(self.sampler, y_enc[train_idx]),
                iterator_train__drop_last=len(train_idx) > self.batch_size,
                train_split=predefined_split(valid_ds) if valid_ds else None,
                callbacks=resume_callbacks[:1]
                + self._callbacks(len(train_idx), has_valid=valid_ds is not None)
                + resume_callbacks[1:],
                classes=list(range(len(self.classes_))),
                device=self.device_,
                verbose=self.verbose,
            )
            if self.freeze == "backbone":
                self._fit_head_on_features(train_ds, valid_ds)
            else:
                self.net_.fit(train_ds, y=None, **resume_kwargs)
        self.history_ = self.net_.history
        return self

    def _fit_head_on_features(self, train_ds: Any, valid_ds: Any) -> None:
        """Train only the head, on backbone features computed once per fit.

        See :mod:`cxrkit.features`: the frozen backbone runs once (in eval
        mode, without augmentation) instead of once per epoch.
        """
        module = self.net_.module
        with headless(module, self.model) as (backbone, head):
            sets = [
                None
                if ds is None
                else TensorDataset(
                    torch.from_numpy(
                        backbone_features(
                            backbone,
                            ds,
                            batch_size=self.batch_size,
                            device=self.device_,
                        )
                    ),
                    ds.y,
                )
                for ds in (train_ds, valid_ds)
            ]
        params = clone(self.net_).get_params(deep=False)  # fresh callbacks
        params.update(
            module=head,
            train_split=predefined_split(sets[1]) if sets[1] is not None else None,
        )
        head_net = type(self.net_)(**params)
        head_net.fit(sets[0], y=None)
        # The trained head is back inside ``module``; serve predictions from it.
        self.net_.initialize()
        self.net_.history = head_net.history

    def _checkpointing(self, images: np.ndarray, y_enc: np.ndarray) -> tuple:
        """Callbacks and ``net.fit`` arguments for ``checkpoint_dir``."""
        if self.checkpoint_dir is None:
            return [], {}
        skip = ("checkpoint_dir", "device", "verbose")
        run = {
            "params": {k: v for k, v in self.get_params().items() if k not in skip},
            "classes": self.classes_.tolist(),
            "data": data_fingerprint(images, y_enc),
        }
        callbacks, epochs_done = training_checkpoint(self.checkpoint_dir, run)
        return callbacks, {"epochs": max(0, self.max_epochs - epochs_done)}

    def _check_params(self) -> None:
        if self.lr_schedule not in _LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {_LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        for name in ("image_size", "batch_size", "max_epochs"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}")
        frac = self.validation_fraction
        if frac is not None and not 0 <= frac < 0.5:
            raise ValueError(
                f"validation_fraction must be in [0, 0.5) or None, got {frac!r}"
            )
        if self.early_stopping is not None and not frac:
            raise ValueError(
                "early_stopping needs a validation split: set validation_fraction "
                "(e.g. 0.1) or early_stopping=None"
            )
        if self.sampler not in (None, "balanced"):
            raise ValueError(
                f"sampler must be None or 'balanced', got {self.sampler!r}"
            )
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(
                "ema_decay must be None or in (0, 1), e.g. 0.99; got "
                f"{self.ema_decay!r}"
            )
        if not isinstance(self.tta, (int, np.integer)) or self.tta < 0:
            raise ValueError(
                f"tta must be a non-negative integer (0 turns it off), got {self.tta!r}"
            )
        if self.on_error not in ("raise", "skip"):
            raise ValueError(
                f"on_error must be 'raise' or 'skip', got {self.on_error!r}"
            )

    def _split(
        self, y_enc: np.ndarray, groups: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Stratified, patient-grouped train / validation indices."""
        everything = np.arange(len(y_enc))
        if not self.validation_fraction:
            return everything, None
        n_splits = max(2, round(1 / self.validation_fraction))
        _, group_codes = np.unique(groups.astype(str), return_inverse=True)
        groups_per_class = [
            len(np.unique(group_codes[y_enc == k])) for k in range(y_enc.max() + 1)
        ]
        if min(groups_per_class) < n_splits:
            msg = (
                f"too few patients per class ({min(groups_per_class)}) for "
                f"validation_fraction={self.validation_fraction}"
            )
            if self.early_stopping is not None:
                raise ValueError(
                    f"{msg}; early stopping needs a validation split. Use more "
                    "images, a larger validation_fraction, or early_stopping=None."
                )
            warnings.warn(f"{msg}: training on all images", UserWarning, stacklevel=3)
            return everything, None
        splitter = StratifiedGroupKFold(
            n_splits=n_splits, shuffle=True, random_state=seed
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            train_idx, valid_idx = next(splitter.split(everything, y_enc, group_codes))
        return train_idx, valid_idx

    def _callbacks(self, n_train: int, has_valid: bool) -> list:
        callbacks: list = []
        if has_valid:
            callbacks.append(
                EpochScoring(
                    _valid_auc,
                    name="valid_auc",
                    lower_is_better=False,
                    use_caching=True,
                )
            )
        steps_per_epoch = max(1, math.floor(n_train / self.batch_size))
        if self.lr_schedule == "cosine":
            callbacks.append(
                LRScheduler(
                    policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                    T_max=self.max_epochs,
                )
            )
        elif self.lr_schedule == "onecycle":
            callbacks.append(
                LRScheduler(
                    policy=torch.optim.lr_scheduler.OneCycleLR,
                    max_lr=self.lr,
                    epochs=self.max_epochs,
                    steps_per_epoch=steps_per_epoch,
                    step_every="batch",
                )
            )
        elif self.lr_schedule == "plateau":
            monitor = "valid_loss" if has_valid else "train_loss"
            callbacks.append(
                LRScheduler(
                    policy=torch.optim.lr_scheduler.ReduceLROnPlateau,
                    monitor=monitor,
                    patience=2,
                )
            )
        if self.ema_decay is not None:
            callbacks.append(WeightAveraging(self.ema_decay))
        if self.early_stopping is not None:
            callbacks.append(
                EarlyStopping(
                    monitor="valid_loss",
                    patience=int(self.early_stopping),
                    load_best=True,
                )
            )
        if self.verbose >= 2:
            callbacks.append(ProgressBar())
        return callbacks

    # -------------------------------------------------------------- predict
    def predict_proba(self, X: ImageInput) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)

        Returns
        -------
        ndarray of shape (n, n_classes)
        """
        check_is_fitted(self, "net_")
        _reject_sparse(X)
        images, _ = load_images(X, self.image_size, verbose=self.verbose)
        proba = self.net_.predict_proba(ImageDataset(images)).astype(np.float64)
        if self.tta:
            # Seeded copies: the same model gives the same probabilities for
            # the same image on every call, as without tta.
            seed = self.random_state
            augment = build_augmentation("light")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed if isinstance(seed, (int, np.integer)) else 0)
                for _ in range(self.tta):
                    copies = ImageDataset(images, transform=augment)
                    proba += self.net_.predict_proba(copies)
            proba /= 1 + self.tta
        return proba

    def predict(self, X: ImageInput) -> np.ndarray:
        """Predicted class label per image (the most probable class).

        Parameters
        ----------
        X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)

        Returns
        -------
        ndarray of shape (n,)
        """
        proba = self.predict_proba(X)  # checks first that the model is fitted
        return self.classes_[np.argmax(proba, axis=1)]

    def save(self, path: str | os.PathLike) -> os.PathLike:
        """Write the fitted model to ``path``, without pickle.

        See :mod:`cxrkit.persistence`.

        Examples
        --------
        >>> import tempfile
        >>> from cxrkit.datasets import make_synthetic_cxr
        >>> X, y, _ = make_synthetic_cxr(20, image_size=32, random_state=0)
        >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32,
        ...                           max_epochs=1, random_state=0).fit(X, y)
        >>> path = clf.save(tempfile.mkdtemp() + "/model.cxr")
        >>> same = PneumoniaClassifier.load(path)
        >>> bool(np.allclose(same.predict_proba(X), clf.predict_proba(X)))
        True
        """
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> PneumoniaClassifier:
        """Read a model written by :meth:`save`; nothing in the file is executed."""
        return load_model(path, device=device)

    def export_onnx(self, path: str | os.PathLike, **kwargs: Any) -> os.PathLike:
        """Write the network as ONNX (dynamic batch; preprocessing in metadata).

        Needs ``pip install "cxrkit[onnx]"``; ``kwargs`` (``threshold``,
        ``pos_label``) and the format: [`cxrkit.export.export_onnx`][].
        """
        from cxrkit.export import export_onnx

        return export_onnx(self, path, **kwargs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def _check_length(X: Any, other: np.ndarray, name: str) -> None:
    _reject_sparse(X)
    if isinstance(X, (str, bytes, os.PathLike)):
        raise TypeError(
            f"X is a single path ({X!r}); pass a list of paths, e.g. [path], or "
            "the X returned by cxrkit.load_image_folder"
        )
    try:
        n = len(X) if hasattr(X, "__len__") else len(np.asarray(X))
    except TypeError:
        raise TypeError(
            f"X of type {type(X).__name__} is not a sequence; pass a list of image "
            "paths or an array of images"
        ) from None
    if n != len(other):
        raise ValueError(f"X has {n} images but {name} has {len(other)} entries")


def _reject_sparse(X: Any) -> None:
    if sparse.issparse(X):
        raise TypeError(
            "X is a sparse matrix; sparse input is not supported: pass image "
            "paths or a dense array of images (n, H, W) or (n, H, W, C)"
        )


def _skipped_files(X: Any, kept: np.ndarray) -> list[str]:
    if kept.all() or not is_path_like_sequence(X):
        return []
    return [os.fspath(p) for p, k in zip(X, kept) if not k]


def _default_groups(X: Any, kept: np.ndarray) -> np.ndarray:
    """Patient ids parsed from paths (each unparsed image its own group)."""
    n = int(kept.sum())
    if not is_path_like_sequence(X):
        return np.arange(n).astype(str)
    paths = [os.fspath(p) for p, k in zip(X, kept) if k]
    return np.array([patient_id(p) or p for p in paths], dtype=object)


def _sampling(sampler: str | None, y_enc: np.ndarray) -> dict[str, Any]:
    """skorch ``iterator_train__*`` arguments: shuffle, or class-balanced draws."""
    if sampler is None:
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


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but CUDA is not available here; use device='auto' "
            "or 'cpu'"
        )
    return str(device)


def _seed(random_state: int | np.random.RandomState | None) -> int:
    return int(check_random_state(random_state).randint(0, 2**31 - 1))
