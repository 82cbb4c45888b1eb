"""benchmarks/experiments/localization.py on real images: NIH boxes, their scores, V7
lung masks matched to originals, and the model-randomisation control."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from PIL import Image

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import make_synthetic_cxr

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "benchmarks" / "experiments" / "localization.py"
    spec = importlib.util.spec_from_file_location("localization", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nih_boxes_are_read_matched_and_scaled(bench, tmp_path):
    # NIH's list: name, label, x, y, w, h on the 1,024 px original
    rows = [
        "Image Index,Finding Label,Bbox [x,y,w,h],,,",
        "00000001_000.png,Pneumonia,512,256,256,128",
        "00000001_000.png,Nodule,0,0,64,64",
        "00000002_000.png,Infiltrate,0,0,1024,1024",
        "00000003_000.png,Pneumonia,0,0,10,10",  # not in the folder
    ]
    box_file = tmp_path / "BBox_List_2017.csv.gz"
    with gzip.open(box_file, "wt") as f:
        f.write("\n".join(rows) + "\n")
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("00000001_000.png", "00000002_000.png", "00000009_000.png"):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / name)
    paths, boxes = bench.read_nih_boxes(box_file, [folder], ["Pneumonia"])
    assert [p.name for p in paths] == ["00000001_000.png"]
    assert boxes == [[("Pneumonia", 512.0, 256.0, 256.0, 128.0)]]
    paths, boxes = bench.read_nih_boxes(box_file, [folder], None)
    assert [len(b) for b in boxes] == [2, 1]
    masks = bench.box_masks(boxes, 16)  # 1,024 px -> 16 px: 64 px per cell
    assert masks[0, 4:6, 8:12].all() and masks[0, 0, 0]
    assert masks[0].sum() == 8 + 1 and masks[1].all()


@pytest.mark.parametrize("zipped", [False, True])
def test_rsna_boxes_are_read_by_patient_id(bench, tmp_path, zipped):
    # RSNA's labels: one row per box; Target 0 rows have no box
    rows = [
        "patientId,x,y,width,height,Target",
        "aa-1,264,152,213,379,1",
        "aa-1,562,152,256,453,1",
        "bb-2,,,,,0",
        "cc-3,0,0,10,10,1",  # not in the folder
    ]
    labels = tmp_path / "stage_2_train_labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    if zipped:
        import zipfile

        with zipfile.ZipFile(tmp_path / "labels.csv.zip", "w") as archive:
            archive.write(labels, labels.name)
        labels = tmp_path / "labels.csv.zip"
    folder = tmp_path / "rsna"
    folder.mkdir()
    for name in ("aa-1.jpg", "bb-2.jpg", "dd-4.jpg"):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / name)
    (folder / "aa-1.txt").write_text("notes")  # not an image: left out, said
    with pytest.warns(UserWarning, match=r"ignored 1 file.*aa-1\.txt"):
        paths, boxes = bench.read_rsna_boxes(labels, [folder])
    assert [p.name for p in paths] == ["aa-1.jpg"]
    assert boxes == [
        [
            ("Lung Opacity", 264.0, 152.0, 213.0, 379.0),
            ("Lung Opacity", 562.0, 152.0, 256.0, 453.0),
        ]
    ]
    (folder / "aa-1.txt").unlink()
    # two images of one patient, or an archive without the list: refused
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "aa-1.png")
    with pytest.raises(ValueError, match="two images of patient aa-1"):
        bench.read_rsna_boxes(labels, [folder])
    if zipped:
        import zipfile

        with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
            archive.writestr("readme.txt", "")
        with pytest.raises(ValueError, match=r"holds no \.csv"):
            bench.read_rsna_boxes(tmp_path / "empty.zip", [folder])


def test_chestx_det_boxes_are_read_and_merged_with_nih_boxes(bench, tmp_path):
    # ChestX-Det10 as first published: NIH names, corner boxes per finding
    entries = [
        {"file_name": "00000001_000.png", "syms": [], "boxes": []},
        {
            "file_name": "00000002_000.png",
            "syms": ["Consolidation", "Nodule", "Consolidation"],
            "boxes": [[100, 200, 300, 500], [0, 0, 10, 10], [600, 600, 700, 900]],
        },
        {
            "file_name": "00000009_000.png",  # not in the folder
            "syms": ["Consolidation"],
            "boxes": [[0, 0, 1, 1]],
        },
    ]
    det = tmp_path / "train.json"
    det.write_text(json.dumps(entries))
    folder = tmp_path / "nih"
    folder.mkdir()
    for name in ("00000001_000.png", "00000002_000.png"):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / name)
    paths, boxes = bench.read_chestx_det_boxes(det, [folder], ["Consolidation"])
    assert [p.name for p in paths] == ["00000002_000.png"]
    assert boxes == [
        [("Consolidation", 100, 200, 200, 300), ("Consolidation", 600, 600, 100, 300)]
    ]
    assert len(bench.read_chestx_det_boxes(det, [folder], None)[1][0]) == 3
    # the same image in NIH's list counts once, with the boxes of both
    nih = ([folder / "00000002_000.png"], [[("Pneumonia", 0, 0, 64, 64)]])
    paths, boxes = bench.merge_boxes(
        nih, bench.read_chestx_det_boxes(det, [folder], None)
    )
    assert [p.name for p in paths] == ["00000002_000.png"]
    assert boxes[0][0] == ("Pneumonia", 0, 0, 64, 64) and len(boxes[0]) == 4
    # a folder that is not there is refused by name, not read as empty
    with pytest.raises(FileNotFoundError, match="missing"):
        bench.read_chestx_det_boxes(det, [tmp_path / "missing"], None)
    det.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a ChestX-Det10 list"):
        bench.read_chestx_det_boxes(det, [folder], None)
    # a finding without its box: refused, naming the image
    broken = [entries[1] | {"syms": ["Consolidation"]}]
    det.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"00000002_000\.png has 1 findings for 3"):
        bench.read_chestx_det_boxes(det, [folder], None)
    # the later, renamed files would match no NIH image: refused by name
    det.write_text(json.dumps([{"file_name": "36204.png", "syms": [], "boxes": []}]))
    with pytest.raises(ValueError, match="as first published"):
        bench.read_chestx_det_boxes(det, [folder], None)


def test_box_scores_exact_values(bench):
    masks = np.zeros((2, 8, 8), bool)
    masks[:, :4, :4] = True  # a quarter of each image
    maps = np.zeros((2, 8, 8))
    maps[0, 1, 1] = 1  # all heat in the box, peak inside
    maps[1] = 1  # heat spread evenly: a flat map points nowhere
    scores = bench.box_scores(maps, masks)
    assert scores["pointing"] == 0.5 and scores["box_area"] == 0.25
    assert scores["heat_in_boxes"] == pytest.approx((1 + 0.25) / 2, abs=1e-3)
    assert scores["heat_ratio"] == pytest.approx((4 + 1) / 2)
    assert bench.box_scores(maps[:0], masks[:0]) == {"images": 0}
    # two images, one hit: the interval spans both images' values
    assert scores["pointing_95ci"] == [0.0, 1.0]
    assert scores["heat_ratio_95ci"] == [1.0, 4.0]
    assert "minus_baseline" not in scores
    assert scores["per_image"] == {"pointing": [1, 0], "heat_ratio": [4.0, 1.0]}


def test_box_scores_intervals_and_paired_differences(bench):
    masks = np.zeros((20, 8, 8), bool)
    masks[:, :4, :4] = True
    hit, miss = np.zeros((8, 8)), np.zeros((8, 8))
    hit[1, 1] = miss[6, 6] = 1
    # the method hits 15 of 20 images, the baseline the first 5 of those
    maps = np.stack([hit] * 15 + [miss] * 5)
    baseline = np.stack([hit] * 5 + [miss] * 15)
    scores = bench.box_scores(maps, masks, baseline=baseline)
    assert scores["pointing"] == 0.75
    low, high = scores["pointing_95ci"]
    assert 0.5 < low < 0.75 < high < 0.95
    # paired: it hits 10 images more, misses none the baseline hits
    difference, low, high = scores["minus_baseline"]["pointing"]
    assert difference == 0.5 and 0.25 < low < 0.5 < high < 0.75
    assert scores["minus_baseline"]["heat_ratio"][0] == pytest.approx(2.0)
    # the same maps as the baseline: no difference on any resample
    same = bench.box_scores(maps, masks, baseline=maps)["minus_baseline"]
    assert same == {"pointing": [0.0, 0.0, 0.0], "heat_ratio": [0.0, 0.0, 0.0]}
    # a map without heat is left out of the heat means, not counted as 0
    maps[0] = 0
    scores = bench.box_scores(maps, masks)
    assert scores["heat_ratio"] == pytest.approx(4 * 14 / 19, abs=0.01)


def test_v7_masks_are_matched_by_a_unique_pixel_size(bench, tmp_path):
    masks, originals = tmp_path / "masks", tmp_path / "fullres" / "NORMAL"
    masks.mkdir()
    originals.mkdir(parents=True)
    lung = np.zeros((30, 40), np.uint8)
    lung[5:20, 5:15] = 255
    Image.fromarray(lung).save(masks / "101.png")
    for name in ("102.png", "103.png"):  # two masks of one size: ambiguous
        Image.fromarray(np.zeros((50, 60), np.uint8)).save(masks / name)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(originals / "a.jpeg")
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(originals / "b.jpeg")
    Image.fromarray(np.zeros((70, 70), np.uint8)).save(originals / "c.jpeg")
    matched = bench.matched_lung_masks(masks, tmp_path / "fullres")
    assert [p.name for p in matched] == ["a.jpeg"]
    np.testing.assert_array_equal(next(iter(matched.values())), lung == 255)


def test_randomised_model_is_a_fresh_copy(bench):
    X, y, _ = make_synthetic_cxr(32, image_size=32, random_state=0)
    clf = PneumoniaClassifier(model="cnn4", **FAST).fit(X, y)
    before = {k: v.clone() for k, v in clf.net_.module_.state_dict().items()}
    twin = bench.randomized(clf)
    after = clf.net_.module_.state_dict()
    assert all((before[k] == after[k]).all() for k in before)  # untouched
    weights = twin.net_.module_.state_dict()
    changed = [k for k in weights if k.endswith("weight") and weights[k].dim() > 1]
    assert changed and all(not (weights[k] == before[k]).all() for k in changed)
    np.testing.assert_array_equal(twin.mean_image_, clf.mean_image_)
    r = bench._correlations(
        np.stack([X[:2], X[:2]]).reshape(4, 32, 32), X[[0, 1, 0, 1]]
    )
    np.testing.assert_allclose(r, 1, atol=1e-6)


def test_real_benchmark_scores_both_box_sources_and_the_prior(bench, tmp_path):
    import argparse

    X, y, _ = make_synthetic_cxr(32, image_size=32, random_state=0)
    clf = PneumoniaClassifier(model="cnn4", **FAST).fit(X, y)
    nih, rsna = tmp_path / "nih", tmp_path / "rsna"
    nih.mkdir()
    rsna.mkdir()
    image = (X[0] * 255).astype(np.uint8)
    Image.fromarray(image).save(nih / "00000001_000.png")
    Image.fromarray(image).save(rsna / "aa-1.png")
    # the model's calls, fixed: NIH's image positive, RSNA's not (a model
    # trained for one epoch calls nothing positive)
    clf.predict = lambda decoded: np.array(
        ["PNEUMONIA" if Path(p).parent == nih else "NORMAL" for p in decoded.paths]
    )
    box_file = tmp_path / "BBox_List_2017.csv.gz"
    with gzip.open(box_file, "wt") as f:
        f.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        f.write("00000001_000.png,Pneumonia,0,0,512,512\n")
    labels = tmp_path / "stage_2_train_labels.csv"
    labels.write_text("patientId,x,y,width,height,Target\naa-1,512,512,512,512,1\n")
    # ChestX-Det10 boxes the same NIH image (inside NIH's box): one image,
    # both boxes
    det = tmp_path / "test.json"
    entry = {"file_name": "00000001_000.png", "syms": ["Consolidation"]}
    det.write_text(json.dumps([entry | {"boxes": [[0, 0, 256, 256]]}]))
    args = argparse.Namespace(
        nih_boxes=box_file,
        nih_images=[nih],
        box_labels=["Pneumonia"],
        det_boxes=[det],
        det_labels=["Consolidation"],
        rsna_boxes=labels,
        rsna_images=[rsna],
        box_target="PNEUMONIA",
        kermany=None,
        n_kermany=0,
        v7_masks=None,
        n_v7=None,
        methods=["grad_cam"],
        box_figure=tmp_path / "boxes.png",
    )
    out = bench.real_benchmark(args, clf)
    assert out["box_images"] == ["00000001_000.png", "aa-1.png"]
    assert out["boxes"] == 3 and out["chance"]["box_area"] == 0.25
    # the prior's scores are those of the same typical lung field on every
    # image: the top-left and bottom-right quarters hold different shares
    prior = bench.lung_field_prior(32)
    top_left, bottom_right = prior[:16, :16].sum(), prior[16:, 16:].sum()
    expected = (top_left + bottom_right) / prior.sum() / 2
    scores = out["lung_field_prior"]["boxes"]
    assert scores["heat_in_boxes"] == pytest.approx(expected, abs=1e-3)
    assert top_left != pytest.approx(bottom_right, rel=0.05)
    # on the called positive (NIH's image, its box the top-left quarter)
    assert out["called_positive"] == 1
    called = out["lung_field_prior"]["boxes_called_positive"]
    assert called["images"] == 1
    assert called["heat_in_boxes"] == pytest.approx(top_left / prior.sum(), abs=1e-3)
    assert out["methods"]["grad_cam"]["boxes"]["images"] == 2
    # every method is paired with the lung field, image by image
    method = out["methods"]["grad_cam"]["boxes"]
    prior_hits = np.array(out["lung_field_prior"]["boxes"]["per_image"]["pointing"])
    difference = np.mean(np.array(method["per_image"]["pointing"]) - prior_hits)
    versus = method["minus_baseline"]["pointing"]
    assert versus[0] == pytest.approx(difference, abs=1e-3)
    assert versus[1] <= versus[0] <= versus[2]
    # chance: the boxes' share of each image, a quarter on both
    assert out["chance"]["pointing"] == 0.25
    # two rows (grad_cam, the lung field) of two columns: taller than wide
    with Image.open(out["box_figure"]) as figure:
        assert figure.height > figure.width
    masks = bench.box_masks([[("P", 0, 0, 512, 512)], [("P", 0, 0, 1024, 1024)]], 32)
    maps = {"a": np.zeros((2, 32, 32)), "b": np.ones((2, 32, 32))}
    maps["a"][0, 3, 5] = 1
    paths = [nih / "00000001_000.png", rsna / "aa-1.png"]
    fig = bench.box_figure(paths, np.zeros((2, 32, 32), np.uint8), masks, maps)
    assert len(fig.axes) == 4
    # the scored box outlined (not a box covering the whole image)
    assert fig.axes[0].collections and not fig.axes[1].collections
    # every pixel at the maximum marked: one peak, or all 1,024 of a flat map
    (peak,) = fig.axes[0].lines
    assert list(peak.get_xdata()) == [5] and list(peak.get_ydata()) == [3]
    assert len(fig.axes[2].lines[0].get_xdata()) == 32 * 32
