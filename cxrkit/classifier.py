"""``PneumoniaClassifier``: a scikit-learn classifier around a skorch net.

Composition, not inheritance: the estimator has flat parameters (so
``GridSearchCV`` grids stay simple, ``{"lr": [...]}``) and builds its skorch
``NeuralNetClassifier`` in ``fit``. This module is the estimator only: its
parameters and their constraints, and the order of the steps of ``fit`` and
``predict``. How the net is built and trained (the one net builder, LR
schedules, callbacks, the validation split, the frozen-backbone fit, TTA) is
in ``cxrkit.training._fit``; decoding and the cache in ``cxrkit.images``; model
files in ``cxrkit.persistence``.

Parameters are checked before anything else, with scikit-learn's own
mechanism (``_parameter_constraints``): a bad value raises scikit-learn's
``InvalidParameterError`` (a ``ValueError``) naming the parameter and the
allowed values, before a single image is decoded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
)
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted

from cxrkit.images._cache import DecodedImages
from cxrkit.images._inputs import check_fit_inputs, reject_sparse
from cxrkit.images._preprocess import check_preprocess, model_images
from cxrkit.metrics import apply_threshold
from cxrkit.models._accelerated import resolve_accelerator
from cxrkit.models._net import PRECISIONS
from cxrkit.models._registry import available_models, supports_pretrained
from cxrkit.ood import detector_for, no_detector_error, penultimate_features
from cxrkit.persistence._model_files import (
    load_model,
    model_file_class,
    reset_chosen_attributes,
    save_model,
)
from cxrkit.persistence._provenance import decision_rule, training_data_summary
from cxrkit.training import _fit
from cxrkit.training._augmentation import AUGMENT_PRESETS, build_augmentation
from cxrkit.training._fit import (
    LR_SCHEDULES,
    NetSpec,
    build_net,
    checkpoint_callbacks,
    default_groups,
    fit_head_on_features,
    fit_seed,
    image_datasets,
    resolve_device,
    validation_split,
)

__all__ = ["PneumoniaClassifier"]

ImageInput = Sequence[str | os.PathLike] | np.ndarray | DecodedImages


@model_file_class
class PneumoniaClassifier(ClassifierMixin, BaseEstimator):
    """Chest X-ray classifier with the scikit-learn interface.

    ``X`` is a sequence of image paths (as returned by
    [`load_image_folder`][cxrkit.load_image_folder]) or an array of images of shape
    ``(n, H, W)`` or ``(n, H, W, C)``; ``y`` holds any labels (strings or
    ints), two classes or more. Images are decoded and resized once per call
    (and cached across calls, see [`clear_image_cache`][cxrkit.clear_image_cache]),
    not once per epoch.

    For research and education; not a medical device.

    Parameters
    ----------
    model : str, default="cnn4"
        Architecture, one of [`available_models`][cxrkit.models.available_models].
    pretrained : None, "imagenet" or path, default=None
        Initial weights of torchvision backbones; a path is a local
        ``state_dict`` file (works offline).
    freeze : None or "backbone", default=None
        ``"backbone"`` trains only the final linear layer, on backbone
        features computed once per ``fit`` (the
        backbone runs in eval mode, and ``augment`` does not apply).
    image_size : int, default=128
        Images are resized (squashed) to ``image_size x image_size``.
    preprocess : None, str or sequence of str, default=None
        Deterministic steps applied to every image after resizing, in
        ``fit`` and ``predict`` alike, so a saved model applies them too:
        ``"equalize"``, ``"clahe"``, ``"stretch"``, ``"crop"``, or several
        joined by ``"+"`` (see [`PREPROCESSING`][cxrkit.images.PREPROCESSING]).
    augment : str, dict, bool or None, default="default"
        Random rotation, translation, scale, brightness and contrast while
        training: a preset, ``"default"``, ``"light"``, ``"strong"`` or
        ``"blur"`` (``"default"`` plus random Gaussian blur, see
        ``cxrkit.training.AUGMENT_PRESETS``), drawn per image and
        applied to whole batches on the training device; or a dict of the
        options of [`BatchAugmentation`][cxrkit.training.BatchAugmentation] (blur,
        downscaling, noise, JPEG, gamma, interpolation, fill, ...). Never
        applied in ``predict`` (except with ``tta``).
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
    mixup : float or None, default=None
        Mixup while training: each batch is mixed with a shuffled copy of
        itself, inputs and loss alike, by a weight drawn from
        ``Beta(mixup, mixup)`` per batch (0.2-0.4 are usual). With
        ``freeze="backbone"`` the backbone's feature vectors are mixed
        (mixup at the last layer), so head epochs still cost next to
        nothing. None or 0: no mixup.
    ema_decay : float or None, default=None
        Keep an exponential moving average of the weights over training
        steps with this decay (e.g. 0.99, about the last 100 steps) and use
        it as the final model ([`WeightAveraging`][cxrkit.training.WeightAveraging]).
        Not with ``early_stopping``, which would restore raw weights.
    tta : int, default=0
        Test-time augmentation: ``predict_proba`` averages the probabilities
        of each image and of ``tta`` shifted, rotated, rescaled, brightened
        and contrast-changed copies: fixed views drawn once from the
        ``"light"`` augmentation, seeded by ``random_state``, so an image's
        probabilities do not depend on the other images in the call, and the
        ONNX export runs the same views. Costs ``1 + tta`` forward passes per
        image. Heatmaps ([`explain`][cxrkit.explain.explain]) explain the
        image as given, the first of those passes.
    validation_fraction : float or None, default=0.1
        About this fraction of the training images is held out (stratified,
        and grouped by patient when ``X`` holds Kermany-style paths or
        ``fit`` gets ``groups``) to score each epoch and drive early
        stopping: one of ``k = max(2, round(1 / validation_fraction))``
        folds of scikit-learn's ``StratifiedGroupKFold``, about ``1 / k`` of
        the images (0.1 and 0.2 are kept; 0.4 becomes 1/2, with a warning
        when ``1 / k`` is more than 0.05 away). None or 0 trains on
        everything.
    early_stopping : None or int, default=None
        Patience in epochs on the validation loss; the best epoch's weights
        are restored at the end. Not with ``ema_decay``.
    on_error : {"raise", "skip"}, default="raise"
        Unreadable image files in ``fit``: raise one error listing them all,
        or leave them out with a warning that lists them.
    checkpoint_dir : str, path-like or None, default=None
        Save the weights, optimizer state and history to this folder after
        every epoch (skorch's ``Checkpoint``). A ``fit`` interrupted by Ctrl-C
        or a crash, called again with the same parameters and data, resumes
        from the last finished epoch up to ``max_epochs``, with the weight
        average of ``ema_decay`` saved with each epoch, and (with
        ``random_state=None``) the seed the run first drew, hence the same
        validation split. Use a new folder per run: a checkpoint of a
        different run raises an error.
    device : str, default="auto"
        ``"auto"`` uses CUDA when available, else the CPU; or any torch
        device string. On CUDA the decoded training images are copied to the
        GPU once per ``fit`` (when they take less than half its free memory)
        and augmented there; cuDNN's autotuner picks the convolutions.
    precision : {"32", "bf16", "16"}, default="32"
        ``"bf16"`` and ``"16"`` run the model in mixed precision (bfloat16 or
        float16 autocast; ``"16"`` with a gradient scaler): faster, and
        lighter on memory, on GPUs. ``"16"`` needs CUDA: on a CPU it falls
        back to float32 with a warning. ``"bf16"`` works on CPUs, and pays
        on those with AMX tiles; with AVX-512 BF16 alone it was slower than
        float32 (the docs' *Training recipe* page says by how much).
    accelerator : None, bool or accelerate.Accelerator, default=None
        Train through Hugging Face Accelerate (skorch's ``AccelerateMixin``,
        see [`cxrkit.models`][cxrkit.models]): on several GPUs when
        the script runs under ``accelerate launch``. True creates an
        ``accelerate.Accelerator()`` in ``fit``, configured by ``accelerate
        launch`` / ``accelerate config``; or pass your own ``Accelerator``.
        The accelerator chooses the devices and the mixed precision (its
        ``mixed_precision``), so ``device`` must stay ``"auto"`` and
        ``precision`` ``"32"``; ``freeze="backbone"`` (a linear head on
        features computed once) does not use it, and in several processes
        ``early_stopping`` and ``ema_decay`` are not supported yet. A model
        file records an ``Accelerator`` as None (it is this process's devices,
        not a setting): the loaded model predicts on one device. Needs ``pip
        install "cxrkit[accelerate]"``.
    ood_alarm_rate : float or None, default=0.05
        After training, ``fit`` fits an out-of-distribution detector on the
        network's penultimate features of the training images (one more
        forward pass over them, none with ``freeze="backbone"``; see
        [`cxrkit.ood`][cxrkit.ood]), with its
        threshold set so that at most this share of new images like the
        training images is flagged by ``is_ood``. None fits no detector.
    random_state : int, RandomState or None, default=None
        Seeds weights, shuffling, augmentation and the validation split; an
        int makes a fit on CPU repeatable.
    verbose : int, default=0
        1 prints skorch's table of epochs; 2 adds progress bars.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the ``predict_proba`` columns.
    net_ : cxrkit.models._net.ImageClassifierNet
        The trained skorch net, a ``skorch.NeuralNetClassifier``
        (``net_.module_`` is the torch model).
    history_ : skorch.History
        Per-epoch losses, ``valid_auc`` and durations.
    device_ : str
        The device used.
    skipped_files_ : list of str
        Image files left out of ``fit`` because they could not be read
        (only with ``on_error="skip"``; empty otherwise).
    training_data_ : dict
        What ``fit`` trained on: the folder, images and patients per class,
        images held out for validation, the cxrkit and torch versions
        ([`training_data_summary`][cxrkit.persistence.training_data_summary]);
        kept in model files.
    mean_image_ : ndarray of shape (image_size, image_size), dtype float32
        The mean of the images given to ``fit``, after resizing and
        ``preprocess``, in [0, 1]: what a typical training image looks like
        at each place. Occlusion fills its patch from it
        ([`occlusion`][cxrkit.explain.occlusion]); kept in model files
        (None in files saved before cxrkit stored it).
    operating_threshold_ : dict or None
        The decision threshold chosen for this model, recorded by
        ``save(path, threshold=...)`` and read back by ``load``. When it is
        set (two classes), ``predict`` (and so ``score``) calls the positive
        class at probability ``>= threshold``, and the report, ``cxrkit
        evaluate``, ``predict``, ``explain``, ``serve`` and ``export`` use
        it unless given another threshold (see
        [`decision_rule`][cxrkit.persistence.decision_rule]). None after
        ``fit``: ``predict`` gives the most probable class.
    ood_detector_ : cxrkit.ood.FeatureDistanceDetector or None
        The out-of-distribution detector behind ``ood_score`` and
        ``is_ood`` (its ``threshold_`` is the flag's threshold); kept in
        model files. None with ``ood_alarm_rate=None``, and in files saved
        before cxrkit fitted one
        ([`fit_ood_detector`][cxrkit.ood.fit_ood_detector] adds one).
    adaptation_ : dict or None
        The adaptation to a new site's images made by
        [`cxrkit.adaptation`][cxrkit.adaptation] (temperature and class
        biases that ``predict_proba`` applies to the log-probabilities, and
        the steps that made them); kept in model files. None after ``fit``.
    conformal_ : dict or None
        Class-conditional conformal prediction sets made by
        [`conformalize`][cxrkit.adaptation.conformalize] on labelled images
        (coverage, and per class the score quantile); kept in model files.
        None after ``fit``.
    net_spec_ : NetSpec
        Read-only: what the net was built for that the parameters do not
        say, learnt from the data: ``n_classes``, ``class_weights`` (in the
        order of ``classes_``), ``n_train`` (images in the training part,
        without the internal validation part) and ``validation`` (whether an
        internal validation split scored the epochs); kept in model files.

    Every fitted attribute is declared once, with how model files keep it,
    in [`FITTED_ATTRIBUTES`][cxrkit.persistence.FITTED_ATTRIBUTES].

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

    _parameter_constraints: ClassVar[dict] = {
        "model": [StrOptions(set(available_models()))],
        "pretrained": [None, str, os.PathLike],
        "freeze": [None, StrOptions({"backbone"})],
        "image_size": [Interval(Integral, 16, None, closed="left")],
        "preprocess": [None, str, list, tuple],
        "augment": [None, "boolean", StrOptions({*AUGMENT_PRESETS, "none"}), dict],
        "flip": ["boolean"],
        "class_weight": [None, StrOptions({"balanced"}), dict],
        "sampler": [None, StrOptions({"balanced"})],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr_schedule": [None, StrOptions(set(LR_SCHEDULES))],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "mixup": [None, Interval(Real, 0, None, closed="left")],
        "ema_decay": [None, Interval(Real, 0, 1, closed="neither")],
        "tta": [Interval(Integral, 0, None, closed="left")],
        "validation_fraction": [None, Interval(Real, 0, 0.5, closed="left")],
        "early_stopping": [None, Interval(Integral, 1, None, closed="left")],
        "on_error": [StrOptions({"raise", "skip"})],
        "checkpoint_dir": [None, str, os.PathLike],
        "device": [str],
        "precision": [StrOptions(set(PRECISIONS))],
        "accelerator": [
            None,
            "boolean",
            HasMethods(["prepare", "backward", "autocast", "unwrap_model"]),
        ],
        "ood_alarm_rate": [None, Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        model: str = "cnn4",
        pretrained: str | os.PathLike | None = None,
        freeze: str | None = None,
        image_size: int = 128,
        preprocess: str | Sequence[str] | None = None,
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
        mixup: float | None = None,
        ema_decay: float | None = None,
        tta: int = 0,
        validation_fraction: float | None = 0.1,
        early_stopping: int | None = None,
        on_error: str = "raise",
        checkpoint_dir: str | os.PathLike | None = None,
        device: str = "auto",
        precision: str = "32",
        accelerator: Any = None,
        ood_alarm_rate: float | None = 0.05,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        self.model = model
        self.pretrained = pretrained
        self.freeze = freeze
        self.image_size = image_size
        self.preprocess = preprocess
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
        self.mixup = mixup
        self.ema_decay = ema_decay
        self.tta = tta
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.on_error = on_error
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.precision = precision
        self.accelerator = accelerator
        self.ood_alarm_rate = ood_alarm_rate
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X: ImageInput, y: Sequence | np.ndarray, groups: Sequence | None = None
    ) -> PneumoniaClassifier:
        """Train on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
            Or a [`DecodedImages`][cxrkit.DecodedImages] of them
            ([`decode_images`][cxrkit.decode_images]).
        y : array-like of shape (n,)
            Class labels (strings or ints), at least two classes.
        groups : array-like of shape (n,), optional
            Patient ids for the internal validation split. By default they
            are parsed from Kermany-style paths (each image its own group
            when a name cannot be parsed, or for arrays).

        Returns
        -------
        self

        Raises
        ------
        sklearn.utils._param_validation.InvalidParameterError
            A parameter has a bad type or value, or parameters that do not
            go together; raised before any image is decoded.
        """
        device = self._check_params()
        accelerator = resolve_accelerator(self.accelerator)
        if accelerator is not None:
            self._check_processes(accelerator.num_processes)
            device = str(accelerator.device)
        y, groups = check_fit_inputs(X, y, groups, estimator=type(self).__name__)
        self._check_classes(np.unique(y))
        given_groups = groups

        decoded = model_images(self, X, on_error=self.on_error, verbose=self.verbose)
        images = decoded.pixels
        y = y[decoded.kept]
        self.skipped_files_ = list(decoded.skipped)
        # float64 sums; numpy reduces in buffered chunks (no float copy of images)
        self.mean_image_ = (images.mean(axis=0, dtype=np.float64) / 255).astype(
            np.float32
        )
        groups = default_groups(decoded) if groups is None else groups[decoded.kept]

        self.classes_, y_enc = np.unique(y, return_inverse=True)
        self._check_classes(self.classes_)
        weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
        self.device_ = device
        params = self.get_params()
        seed = fit_seed(params)  # a resumed run's own seed
        fork_devices = (
            [torch.cuda.current_device()] if device.startswith("cuda") else []
        )
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            train_idx, valid_idx = validation_split(
                y_enc,
                groups,
                self.validation_fraction,
                seed,
                required=self.early_stopping is not None,
            )
            train_ds, valid_ds = image_datasets(
                images,
                y_enc,
                [train_idx, valid_idx],
                frozen=self.freeze == "backbone",
                device=device,
            )
            self._net_spec = NetSpec(
                n_classes=len(self.classes_),
                class_weights=tuple(float(w) for w in weights),
                n_train=len(train_idx),
                validation=valid_ds is not None,
            )
            resume, fit_kwargs = checkpoint_callbacks(
                params, self.classes_, images, y_enc, seed=seed
            )
            self.net_ = build_net(
                params,
                self._net_spec,
                device=device,
                valid_ds=valid_ds,
                y_train=y_enc[train_idx],
                resume_callbacks=resume,
                accelerator=accelerator,
            )
            features = None
            if self.freeze == "backbone":
                seen = fit_head_on_features(
                    self.net_, self.model, train_ds, valid_ds, **fit_kwargs
                )
                if self.precision == "32" and accelerator is None:
                    # the detector's features, as penultimate_features would
                    # compute them (no autocast): no second backbone pass
                    order = (
                        train_idx if valid_idx is None else np.r_[train_idx, valid_idx]
                    )
                    features = np.empty_like(seen)
                    features[order] = seen
            else:
                self.net_.fit(train_ds, y=None, **fit_kwargs)
        self.history_ = self.net_.history
        self.training_data_ = training_data_summary(
            decoded,
            y,
            None if given_groups is None else groups,
            n_validation=0 if valid_idx is None else len(valid_idx),
        )
        reset_chosen_attributes(self)  # a new fit: no threshold, no adaptation
        with torch.random.fork_rng(devices=fork_devices):  # the caller's RNG stays
            self.ood_detector_ = (
                None
                if self.ood_alarm_rate is None
                else detector_for(
                    self,
                    images,
                    y_enc,
                    groups,
                    alarm_rate=self.ood_alarm_rate,
                    features=features,
                )
            )
        return self

    # ------------------------------------------------------- parameter rules
    def _invalid(self, name: str, message: str) -> InvalidParameterError:
        return InvalidParameterError(
            f"The {name!r} parameter of {type(self).__name__} {message}"
        )

    def _check_params(self) -> str:
        """Rules between parameters, and values the constraints cannot express.

        Runs after ``_validate_params`` (types and ranges) and before any
        image is decoded. Returns the resolved device.
        """
        try:
            build_augmentation(self.augment, self.flip)
        except (TypeError, ValueError) as exc:
            raise self._invalid(
                "augment",
                f"must be one of {sorted(AUGMENT_PRESETS)}, True, False, None or a "
                f"dict of augmentation options. Got {self.augment!r} instead ({exc})",
            ) from None
        try:
            check_preprocess(self.preprocess)
        except ValueError as exc:
            raise self._invalid("preprocess", f"is not valid: {exc}") from None
        if self.early_stopping is not None and not self.validation_fraction:
            raise self._invalid(
                "early_stopping",
                "needs a validation split: set validation_fraction (e.g. 0.1) or "
                f"early_stopping=None. Got early_stopping={self.early_stopping!r} "
                f"with validation_fraction={self.validation_fraction!r}.",
            )
        if self.early_stopping is not None and self.ema_decay is not None:
            # Early stopping scores and keeps the raw weights of its best
            # epoch, which would replace the weight average at the end.
            raise self._invalid(
                "early_stopping",
                "does not go with 'ema_decay': early stopping picks and restores "
                "the raw weights of its best epoch, not the weight average. Use "
                "one or the other: early_stopping=None to keep the average, or "
                f"ema_decay=None. Got early_stopping={self.early_stopping!r} "
                f"with ema_decay={self.ema_decay!r}.",
            )
        self._check_pretrained()
        if isinstance(self.class_weight, dict):
            bad = {
                k: w
                for k, w in self.class_weight.items()
                if isinstance(w, bool)
                or not isinstance(w, Real)
                or not np.isfinite(w)
                or w < 0
            }
            if bad:
                raise self._invalid(
                    "class_weight",
                    "must map classes to non-negative numbers. Got "
                    f"{self.class_weight!r} instead.",
                )
        if self.checkpoint_dir is not None and os.path.isfile(self.checkpoint_dir):
            raise self._invalid(
                "checkpoint_dir",
                f"must be a folder (new or from an earlier fit of this run). Got "
                f"{os.fspath(self.checkpoint_dir)!r}, which is a file.",
            )
        self._check_accelerator()
        device = resolve_device(self.device, owner=type(self).__name__)
        if self.precision == "16" and not device.startswith("cuda"):
            warnings.warn(
                "precision='16' (float16) needs CUDA; training in float32 on "
                f"{device!r} (precision='bf16' is mixed precision on CPUs)",
                UserWarning,
                stacklevel=4,
            )
        return device

    def _check_accelerator(self) -> None:
        """With an accelerator, the devices and mixed precision are its own."""
        if not self.accelerator:  # None or False
            return
        rules = {
            "device": (
                self.device == "auto",
                "the accelerator places the model (one device per process)",
                "'auto'",
            ),
            "precision": (
                self.precision == "32",
                "mixed precision is the accelerator's (Accelerator(mixed_precision="
                "'bf16') or `accelerate launch --mixed_precision bf16`)",
                "'32'",
            ),
            "freeze": (
                self.freeze is None,
                "freeze='backbone' trains a linear head on features computed once, "
                "without the accelerator",
                "None (or accelerator=None)",
            ),
        }
        for name, (ok, why, allowed) in rules.items():
            if not ok:
                raise self._invalid(
                    name,
                    f"must be {allowed} with an accelerator: {why}. Got "
                    f"{name}={getattr(self, name)!r} with "
                    f"accelerator={self.accelerator!r}.",
                )

    def _check_processes(self, processes: int) -> None:
        """What does not work yet when an accelerator runs several processes."""
        if processes == 1:
            return
        # Both keep copies of the model's state taken while it is wrapped for
        # DDP, which do not load into the bare model at the end of training.
        for name in ("early_stopping", "ema_decay"):
            if getattr(self, name) is not None:
                raise self._invalid(
                    name,
                    f"must be None when an accelerator trains in {processes} "
                    f"processes (not supported yet); set {name}=None and a fixed "
                    f"max_epochs. Got {name}={getattr(self, name)!r}.",
                )

    def _check_pretrained(self) -> None:
        if self.pretrained is None:
            if self.freeze == "backbone" and supports_pretrained(self.model):
                warnings.warn(
                    f"freeze='backbone' with pretrained=None trains the head on the "
                    f"features of an untrained {self.model}; pass "
                    "pretrained='imagenet' or a weights file to use learnt features",
                    UserWarning,
                    stacklevel=5,
                )
            return
        if not supports_pretrained(self.model):
            backbones = [m for m in available_models() if supports_pretrained(m)]
            raise self._invalid(
                "pretrained",
                f"must be None for model={self.model!r}, which has no pretrained "
                f"weights (backbones that do: {backbones}). Got {self.pretrained!r} "
                "instead.",
            )
        if self.pretrained != "imagenet" and not os.path.isfile(self.pretrained):
            raise FileNotFoundError(
                f"pretrained weights file not found: {os.fspath(self.pretrained)} "
                "(the 'pretrained' parameter is None, 'imagenet' or the path of a "
                "torchvision state_dict file)"
            )

    def _check_classes(self, classes: np.ndarray) -> None:
        """Rules that need the classes of ``y`` (known before decoding)."""
        if len(classes) < 2:
            raise ValueError(
                f"y holds a single class ({classes.tolist()[0]!r}); a classifier needs "
                "images of at least 2 classes"
            )
        if isinstance(self.class_weight, dict):
            unknown = [k for k in self.class_weight if k not in set(classes.tolist())]
            if unknown:
                raise self._invalid(
                    "class_weight",
                    f"must have keys among the classes of y ({classes.tolist()}). "
                    f"Got {self.class_weight!r} instead.",
                )

    # -------------------------------------------------------------- predict
    def predict_proba(self, X: ImageInput) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
            Or a [`DecodedImages`][cxrkit.DecodedImages] of them
            ([`decode_images`][cxrkit.decode_images]).

        Returns
        -------
        ndarray of shape (n, n_classes)
        """
        return self._proba_of(self._model_images(X))

    def _model_images(self, X: ImageInput) -> np.ndarray:
        """``X`` checked, decoded, resized and preprocessed for the network."""
        check_is_fitted(self, "net_")
        self._validate_params()  # tta, preprocess, ... may be set after fit
        reject_sparse(X)
        return model_images(self, X, verbose=self.verbose).pixels

    def _shares_one_pass(self) -> bool:
        """Whether ``cxrkit.ood.proba_and_ood_score`` may take this model's
        probabilities and OOD scores from one pass: it has a detector, and
        both methods are this class's (a subclass may override either)."""
        cls = type(self)
        return (
            getattr(self, "ood_detector_", None) is not None
            and cls.predict_proba is PneumoniaClassifier.predict_proba
            and cls.ood_score is PneumoniaClassifier.ood_score
        )

    def _proba_of(self, images: np.ndarray) -> np.ndarray:
        """``predict_proba`` of images already resized and preprocessed."""
        proba = _fit.predict_proba(
            self.net_, images, tta=self.tta, random_state=self.random_state
        )
        return _fit.adjust_probabilities(proba, getattr(self, "adaptation_", None))

    def predict(self, X: ImageInput) -> np.ndarray:
        """Predicted class label per image.

        The most probable class; but for two classes with an operating
        threshold recorded with the model (``operating_threshold_``, e.g.
        from ``save(path, threshold=...)`` and ``load``), the positive class
        when its probability is ``>= threshold``, else the other class
        (scikit-learn's ``FixedThresholdClassifier`` convention; see
        [`decision_rule`][cxrkit.persistence.decision_rule]).
        ``predict_proba`` is the same either way.

        Parameters
        ----------
        X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
            Or a [`DecodedImages`][cxrkit.DecodedImages] of them
            ([`decode_images`][cxrkit.decode_images]).

        Returns
        -------
        ndarray of shape (n,)
        """
        proba = self.predict_proba(X)  # checks first that the model is fitted
        rule = decision_rule(self)
        if rule.threshold is None:
            return self.classes_[np.argmax(proba, axis=1)]
        return apply_threshold(
            proba, rule.threshold, classes=self.classes_, pos_label=rule.pos_label
        )

    # ------------------------------------------------ out-of-distribution
    def ood_score(self, X: ImageInput) -> np.ndarray:
        """How unlike the training images each image is (higher: less alike).

        The distance of the image's penultimate features (the network's, on
        the image resized and preprocessed as for ``predict_proba``) to
        those of the training images, from the detector fitted with the
        model (``ood_detector_``, see [`cxrkit.ood`][cxrkit.ood]). A
        heuristic: an unusual image can still be read well, and a usual one
        badly.

        Parameters
        ----------
        X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
            Or a [`DecodedImages`][cxrkit.DecodedImages] of them
            ([`decode_images`][cxrkit.decode_images]).

        Returns
        -------
        ndarray of shape (n,), dtype float64

        Raises
        ------
        cxrkit.ood.NoOODDetectorError
            The model has no detector (``ood_alarm_rate=None``, or a file
            saved before cxrkit fitted one); the message says how to fit one.

        Examples
        --------
        >>> from cxrkit.datasets import make_synthetic_cxr
        >>> X, y, _ = make_synthetic_cxr(40, image_size=32, random_state=0)
        >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32,
        ...                           max_epochs=1, random_state=0).fit(X, y)
        >>> noise = np.random.default_rng(0).integers(0, 256, (2, 32, 32))
        >>> clf.ood_score(X[:2]).shape
        (2,)
        >>> bool(clf.ood_score(noise).min() > clf.ood_score(X).max())
        True
        """
        check_is_fitted(self, "net_")
        detector = getattr(self, "ood_detector_", None)
        if detector is None:
            raise no_detector_error(self)
        return detector.score(penultimate_features(self, self._model_images(X)))

    def is_ood(self, X: ImageInput) -> np.ndarray:
        """Whether each image is flagged as unlike the training images.

        ``ood_score(X) > ood_detector_.threshold_``, the threshold fitted
        with the model for the false-alarm rate ``ood_alarm_rate``. A flagged
        image's prediction is unreliable; ``predict`` and ``predict_proba``
        still answer for it.

        Parameters
        ----------
        X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
            Or a [`DecodedImages`][cxrkit.DecodedImages] of them
            ([`decode_images`][cxrkit.decode_images]).

        Returns
        -------
        ndarray of shape (n,), dtype bool

        Examples
        --------
        >>> from cxrkit.datasets import make_synthetic_cxr
        >>> X, y, _ = make_synthetic_cxr(40, image_size=32, random_state=0)
        >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32,
        ...                           max_epochs=1, random_state=0).fit(X, y)
        >>> noise = np.random.default_rng(0).integers(0, 256, (2, 32, 32))
        >>> clf.is_ood(noise).tolist()
        [True, True]
        """
        scores = self.ood_score(X)  # checks the detector first
        return scores > self.ood_detector_.threshold_

    @property
    def net_spec_(self) -> NetSpec:
        """What the net was built for: classes, class weights, training size.

        Read-only; set by ``fit`` and by ``load``. Raises ``AttributeError``
        (so ``hasattr`` is False) before the model is fitted.
        """
        try:
            return self.__dict__["_net_spec"]
        except KeyError:
            raise AttributeError(
                f"This {type(self).__name__} is not fitted yet: net_spec_ is set "
                "by fit (or load)"
            ) from None

    # ---------------------------------------------------------- model files
    def save(
        self, path: str | os.PathLike, *, threshold: Any = None, pos_label: Any = None
    ) -> os.PathLike:
        """Write the fitted model to ``path``, without pickle.

        See [`cxrkit.persistence`][cxrkit.persistence] for what the file
        holds: parameters, weights, history, ``training_data_``, the cxrkit
        and torch versions.

        Parameters
        ----------
        path : str or path-like
        threshold : float or OperatingPoint, optional
            Two classes: the operating threshold chosen on validation data
            (e.g. ``select_threshold(y_valid, clf.predict_proba(X_valid),
            sensitivity=0.95)``), recorded in the file as
            ``operating_threshold_``. Default: the model's own
            ``operating_threshold_`` (None after ``fit``).
        pos_label : class label, optional
            The class ``threshold`` applies to: by default ``"PNEUMONIA"``
            when it is a class, 1 for 0/1 labels; other classes need it.

        Examples
        --------
        >>> import tempfile
        >>> from cxrkit.datasets import make_synthetic_cxr
        >>> X, y, _ = make_synthetic_cxr(20, image_size=32, random_state=0)
        >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32,
        ...                           max_epochs=1, random_state=0).fit(X, y)
        >>> path = clf.save(tempfile.mkdtemp() + "/model.cxr")
        >>> same = PneumoniaClassifier.load(path)
        >>> same.get_params() == clf.get_params()
        True
        >>> bool(np.allclose(same.predict_proba(X), clf.predict_proba(X)))
        True
        """
        return save_model(self, path, threshold=threshold, pos_label=pos_label)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> PneumoniaClassifier:
        """Read a model written by ``save``; nothing in the file is executed.

        Parameters
        ----------
        path : str or path-like
        device : str, default="auto"
            As the ``device`` parameter: ``"auto"`` uses CUDA when available,
            else the CPU. The loaded model's ``device_`` is this device; its
            parameters, ``device`` included, are the saved model's.
        """
        return load_model(path, device=device, estimator_class=cls)

    def export_onnx(self, path: str | os.PathLike, **kwargs: Any) -> os.PathLike:
        """Write the network as ONNX (dynamic batch; preprocessing in metadata).

        Needs ``pip install "cxrkit[onnx]"``; ``kwargs`` (``threshold``,
        ``pos_label``) and the format: [`cxrkit.persistence.export_onnx`][].
        """
        from cxrkit.persistence._onnx import export_onnx

        return export_onnx(self, path, **kwargs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags
