"""Real radiographs with radiologists' boxes around pneumonia opacities.

The box lists of NIH ChestX-ray8 (``BBox_List_2017.csv``) and of the RSNA
pneumonia challenge (``stage_2_train_labels.csv``), both shipped by the
torchxrayvision wheel, and ChestX-Det10's boxes of NIH images, read
against folders of the images they name and merged image by image; the
boxes as masks at a model's size; how well heatmaps point at them, with
bootstrap intervals over the images and paired differences from a baseline
map; and a figure of every boxed image under every map. Used by
``experiments/localization.py --nih-boxes / --det-boxes / --rsna-boxes``.

For research and education; not a medical device.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from cxrkit.explain import heat_share, pointing_game
from cxrkit.images import find_images
from cxrkit.metrics._bootstrap import Estimate, bootstrap, estimate

#: bootstrap resamples of the images behind every interval of ``box_scores``
N_RESAMPLES = 2000

#: NIH ChestX-ray8 box labels of a pneumonia opacity (``--box-labels``)
PNEUMONIA_BOXES = ("Pneumonia", "Infiltrate")
#: ChestX-Det10's category of a pneumonia opacity (``--det-labels``)
DET_PNEUMONIA_BOXES = ("Consolidation",)
#: how NIH ChestX-ray8 names its images: patient, then follow-up number
NIH_NAME = re.compile(r"\d{8}_\d{3}\.png")
#: side of NIH's and RSNA's images, in whose pixels both box lists are given
BOX_SIDE = 1024


def read_nih_boxes(
    box_file: str | Path, folders: list[str | Path], labels: list[str] | None
) -> tuple[list[Path], list[list[tuple]]]:
    """The images of ``folders`` that have boxes in NIH's ``BBox_List_2017.csv``.

    ``box_file`` is the list as NIH publishes it (``.csv`` or ``.csv.gz``;
    the torchxrayvision wheel ships it as ``torchxrayvision/data/
    BBox_List_2017.csv.gz``): image name, label, x, y, w, h in pixels of
    the 1,024 px original. Only boxes whose label is in ``labels`` count
    (all when None). Returns the image paths, sorted by name, and each
    image's boxes as ``(label, x, y, w, h)``.
    """
    opener = gzip.open if str(box_file).endswith(".gz") else open
    with opener(box_file, "rt", newline="") as f:
        rows = list(csv.reader(f))[1:]
    files = _by_name(folders)
    boxes: dict[str, list[tuple]] = defaultdict(list)
    for name, label, *xywh in (row[:6] for row in rows if len(row) >= 6):
        if name in files and (labels is None or label in labels):
            boxes[name].append((label, *map(float, xywh)))
    return _matched(files, boxes)


def read_rsna_boxes(
    label_file: str | Path, folders: list[str | Path]
) -> tuple[list[Path], list[list[tuple]]]:
    """The images of ``folders`` that RSNA's pneumonia challenge boxed.

    ``label_file`` is the challenge's ``stage_2_train_labels.csv`` (or the
    ``.csv.zip`` that the torchxrayvision wheel ships as
    ``torchxrayvision/data/kaggle_stage_2_train_labels.csv.zip``): one row per
    box, ``patientId,x,y,width,height,Target`` in pixels of the 1,024 px
    image, ``Target`` 1 for a lung opacity that radiologists took for
    pneumonia. Images are named by their ``patientId`` (any extension cxrkit
    reads: the challenge's DICOM files, or PNG/JPEG copies). Returns the image
    paths, sorted by name, and each image's boxes as ``("Lung Opacity", x, y,
    w, h)``; images without a box (``Target`` 0) are left out.
    """
    if str(label_file).endswith(".zip"):
        with zipfile.ZipFile(label_file) as archive:
            name = next((n for n in archive.namelist() if n.endswith(".csv")), None)
            if name is None:
                raise ValueError(
                    f"{label_file} holds no .csv; expected RSNA's "
                    "stage_2_train_labels.csv inside"
                )
            text = archive.read(name).decode()
    else:
        text = Path(label_file).read_text()
    boxes: dict[str, list[tuple]] = defaultdict(list)
    for row in csv.DictReader(io.StringIO(text)):
        if row["Target"] == "1":
            xywh = (float(row[k]) for k in ("x", "y", "width", "height"))
            boxes[row["patientId"]].append(("Lung Opacity", *xywh))
    files: dict[str, Path] = {}
    for path in _images(folders):
        if path.stem in files:
            raise ValueError(
                f"two images of patient {path.stem}: {files[path.stem]} and "
                f"{path}; keep one"
            )
        files[path.stem] = path
    return _matched(files, boxes)


def read_chestx_det_boxes(
    json_file: str | Path, folders: list[str | Path], labels: list[str] | None
) -> tuple[list[Path], list[list[tuple]]]:
    """The images of ``folders`` that ChestX-Det10 boxed.

    ChestX-Det10 (Liu, Lian and Yu, 2020; Deepwise-AILab/ChestX-Det10-Dataset)
    has boxes of 10 findings on 3,543 NIH ChestX-14 images, annotated by
    three board-certified radiologists. ``json_file`` is its ``train.json``
    or ``test.json`` as first published (commit 0a9d918), which names the
    images as NIH does (``00000404_000.png``); later versions renamed them
    to numbers in the same order. Entries are ``{"file_name", "syms":
    [finding, ...], "boxes": [[x1, y1, x2, y2], ...]}`` in pixels of the
    1,024 px image. Only boxes
    whose finding is in ``labels`` count (all when None). Returns the image
    paths, sorted by name, and each image's boxes as ``(finding, x, y, w,
    h)``.
    """
    entries = json.loads(Path(json_file).read_text())
    if not (isinstance(entries, list) and all("boxes" in e for e in entries)):
        raise ValueError(
            f"{json_file} is not a ChestX-Det10 list of {{file_name, syms, "
            "boxes}} entries"
        )
    if entries and not any(NIH_NAME.fullmatch(e["file_name"]) for e in entries):
        # the renamed version would match no NIH image, silently
        raise ValueError(
            f"{json_file} does not name NIH's images (e.g. "
            f"{entries[0]['file_name']!r}): use ChestX-Det10's train.json and "
            "test.json as first published (git show 0a9d918:train.json in a "
            "clone of Deepwise-AILab/ChestX-Det10-Dataset)"
        )
    files = _by_name(folders)
    boxes: dict[str, list[tuple]] = defaultdict(list)
    for entry in entries:
        if entry["file_name"] not in files:
            continue
        if len(entry["syms"]) != len(entry["boxes"]):
            raise ValueError(
                f"{json_file}: {entry['file_name']} has {len(entry['syms'])} "
                f"findings for {len(entry['boxes'])} boxes; expected one each"
            )
        for label, (x1, y1, x2, y2) in zip(entry["syms"], entry["boxes"]):
            if labels is None or label in labels:
                boxes[entry["file_name"]].append((label, x1, y1, x2 - x1, y2 - y1))
    return _matched(files, boxes)


def merge_boxes(
    *sources: tuple[list[Path], list[list[tuple]]],
) -> tuple[list[Path], list[list[tuple]]]:
    """The images of several box lists, each once, with all of its boxes.

    The same image boxed by two lists (NIH's and ChestX-Det10's both box
    NIH images) counts once, its boxes united; images are matched by file
    name. Returns the paths, sorted by name, and each image's boxes.
    """
    files: dict[str, Path] = {}
    boxes: dict[str, list[tuple]] = defaultdict(list)
    for paths, image_boxes in sources:
        for path, these in zip(paths, image_boxes, strict=True):
            files.setdefault(path.name, path)
            boxes[path.name].extend(these)
    return _matched(files, boxes)


def _images(folders: list[str | Path]) -> list[Path]:
    """The image files of ``folders`` as cxrkit finds them (``find_images``:
    a missing folder, or one without images, is refused by name)."""
    return [Path(p) for p in find_images(folders)]


def _by_name(folders: list[str | Path]) -> dict[str, Path]:
    """Every image of ``folders`` by its file name (NIH's lists name files so)."""
    return {p.name: p for p in _images(folders)}


def _matched(
    files: dict[str, Path], boxes: dict[str, list[tuple]]
) -> tuple[list[Path], list[list[tuple]]]:
    """The images that have boxes, sorted by name, and their boxes."""
    names = sorted(set(boxes) & set(files))
    return [files[n] for n in names], [boxes[n] for n in names]


def box_masks(boxes: list[list[tuple]], size: int) -> np.ndarray:
    """Union of each image's boxes at ``size`` px (cells the box touches)."""
    masks = np.zeros((len(boxes), size, size), dtype=bool)
    scale = size / BOX_SIDE
    for mask, image_boxes in zip(masks, boxes):
        for _, x, y, w, h in image_boxes:
            top, left = int(y * scale), int(x * scale)
            bottom, right = int(np.ceil((y + h) * scale)), int(np.ceil((x + w) * scale))
            mask[top:bottom, left:right] = True
    return masks


def per_image_scores(heatmaps: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Each image's hit (``pointing``: 1 when the peak lies inside a box, as
    ``pointing_game`` counts), ``heat_in_boxes``: the share of its heat inside
    the boxes, and ``heat_ratio``: that share over the share of the image the
    boxes cover (1: no better than heat spread evenly). The heat scores are
    NaN for a map without heat."""
    share = heat_share(heatmaps, masks)
    return {
        "pointing": pointing_game(heatmaps, masks).astype(float),
        "heat_ratio": share / masks.mean(axis=(1, 2)),
        "heat_in_boxes": share,
    }


def mean_intervals(values: dict[str, np.ndarray]) -> dict[str, Estimate]:
    """The mean over images of each score, with a 95% percentile bootstrap
    interval over the images (``N_RESAMPLES``, seed 0; NaN images left out
    of each resample's mean, as ``np.nanmean``). Every score is drawn from
    the same resamples, so differences of paired per-image scores come with
    their own interval."""

    def statistic(weights: np.ndarray) -> dict[str, np.ndarray]:
        means = {}
        for key, value in values.items():
            finite = np.isfinite(value)
            with np.errstate(invalid="ignore", divide="ignore"):
                means[key] = weights @ np.where(finite, value, 0) / (weights @ finite)
        return means

    n = len(next(iter(values.values())))
    point, replicates = bootstrap(
        statistic, np.zeros(n), n_resamples=N_RESAMPLES, random_state=0
    )
    return {key: estimate(point[key], replicates[key], 0.95) for key in values}


def box_scores(
    heatmaps: np.ndarray, masks: np.ndarray, baseline: np.ndarray | None = None
) -> dict:
    """Pointing (the peak inside a box) and heat in the boxes over their area.

    Means over images, each with its 95% bootstrap interval over the images
    (``*_95ci``): with tens of images one image moves pointing by several
    hundredths, and the interval says how far the figure could be from that
    of another draw of images. ``heat_ratio``: per image, the share of the
    heat inside the boxes divided by the share of the image the boxes cover
    (1: no better than heat spread evenly), then the mean over images.
    Chance, a random pixel as the peak, points with probability
    ``box_area``. With ``baseline`` (maps of the same images, e.g. the lung
    field of a typical radiograph), ``minus_baseline`` holds the paired
    differences of both scores, image by image, with their intervals: a
    method says more about an image than the baseline only where the
    difference's interval lies above 0 (each as ``[difference, low,
    high]``). ``per_image`` holds each image's hit and heat ratio, in the
    order given (NaN for a map without heat).

    The intervals are percentile intervals of the images' bootstrap: for a
    method that hits no image (or every one) the pointing interval is
    ``[0, 0]`` (or ``[1, 1]``), narrower than an exact binomial interval
    (0 of 23: 0 to 0.15). Resamples that hold only maps without heat are
    left out of the heat intervals.
    """
    if not len(heatmaps):
        return {"images": 0}
    values = per_image_scores(heatmaps, masks)
    if baseline is not None:
        base = per_image_scores(baseline, masks)
        for key in ("pointing", "heat_ratio"):
            values[f"{key}_minus_baseline"] = values[key] - base[key]
    means = mean_intervals(values)
    out = {"images": len(heatmaps)}
    for key, digits in (("pointing", 3), ("heat_ratio", 2)):
        out[key] = round(means[key].value, digits)
        out[f"{key}_95ci"] = [
            round(means[key].low, digits),
            round(means[key].high, digits),
        ]
    out["heat_in_boxes"] = round(means["heat_in_boxes"].value, 3)
    out["box_area"] = round(float(masks.mean()), 3)
    # each image's scores, in the order given: other subsets can be scored
    # from the JSON afterwards
    out["per_image"] = {
        "pointing": values["pointing"].astype(int).tolist(),
        "heat_ratio": [round(float(v), 3) for v in values["heat_ratio"]],
    }
    if baseline is not None:
        out["minus_baseline"] = {
            key: [round(x, digits) for x in means[f"{key}_minus_baseline"]]
            for key, digits in (("pointing", 3), ("heat_ratio", 2))
        }
    return out


def box_figure(
    paths: list[Path],
    images: np.ndarray,
    masks: np.ndarray,
    maps: dict[str, np.ndarray],
):
    """Each boxed image (a column) under each method's map (a row): the
    boxes as scored (``box_masks``) outlined in white, every pixel at the
    map's maximum as a cross (a hit when all of them lie in a box, as
    ``pointing_game`` counts)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(maps),
        len(paths),
        figsize=(1.9 * len(paths), 2.05 * len(maps)),
        squeeze=False,
    )
    for row, (spec, method_maps) in zip(axes, maps.items(), strict=True):
        for ax, image, heat, mask in zip(row, images, method_maps, masks, strict=True):
            ax.imshow(image, cmap="gray")
            ax.imshow(heat, cmap="jet", alpha=0.4)
            if mask.any() and not mask.all():
                ax.contour(mask, levels=[0.5], colors="white", linewidths=1.2)
            tops, lefts = np.nonzero(heat == heat.max())
            ax.plot(lefts, tops, "w+", markersize=11, markeredgewidth=2)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(spec, fontsize=8)
    for ax, path in zip(axes[0], paths, strict=True):
        ax.set_title(path.stem[:12], fontsize=7)
    fig.tight_layout()
    return fig
