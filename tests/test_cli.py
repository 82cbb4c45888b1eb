"""`cxrkit train / evaluate / predict / demo` end to end on real images."""

from __future__ import annotations

import csv
import json
import os

import matplotlib

matplotlib.use("Agg")

import pytest

from cxrkit.cli import main


@pytest.fixture(scope="module")
def small_folder(sample_cxr, tmp_path_factory):
    """12 NORMAL and 12 PNEUMONIA real images of the package's sample, linked."""
    root = tmp_path_factory.mktemp("xray")
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label).mkdir()
        for src in sample_cxr.data[sample_cxr.target == label][:12]:
            os.symlink(src, root / label / os.path.basename(src))
    return root


@pytest.fixture(scope="module")
def model_file(small_folder, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.cxr"
    code = main(
        [
            "train",
            str(small_folder),
            "--model",
            "simple_cnn",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--class-weight",
            "balanced",
            "--validation-fraction",
            "0",
            "--out",
            str(path),
        ]
    )
    assert code == 0
    return path


def test_train_writes_a_loadable_model(model_file, capsys):
    from cxrkit import PneumoniaClassifier

    clf = PneumoniaClassifier.load(model_file)
    assert list(clf.classes_) == ["NORMAL", "PNEUMONIA"]
    assert clf.image_size == 32 and clf.class_weight == "balanced"


def test_evaluate_writes_the_report(model_file, small_folder, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            *("evaluate", str(model_file), str(small_folder), "--out", str(out)),
            *("--n-bootstrap", "200", "--threshold", "0.4"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Sensitivity (recall)" in printed and "report.html" in printed
    data = json.loads((out / "metrics.json").read_text())
    assert data["metrics"]["n"] == 24 and data["metrics"]["threshold"] == 0.4
    assert str(small_folder) in data["data"]["description"]
    assert (out / "report.html").stat().st_size > 10_000


def test_predict_folder_and_files_to_csv(model_file, small_folder, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    image = next((small_folder / "NORMAL").iterdir())
    code = main(
        ["predict", str(model_file), str(small_folder), str(image), "--csv", str(out)]
    )
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 25
    assert ",".join(rows[0]) == "path,predicted,p_NORMAL,p_PNEUMONIA,ood_score,ood"
    for row in rows:
        assert row["predicted"] in ("NORMAL", "PNEUMONIA")
        total = float(row["p_NORMAL"]) + float(row["p_PNEUMONIA"])
        assert total == pytest.approx(1, abs=1e-3)
    assert main(["predict", str(model_file), str(image)]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0] == "path,predicted,p_NORMAL,p_PNEUMONIA,ood_score,ood"
    assert stdout[1].split(",")[:2] == [str(image), rows[-1]["predicted"]]


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0])
def test_predict_threshold_labels_by_the_pneumonia_probability(
    model_file, small_folder, tmp_path, threshold
):
    out = tmp_path / "pred.csv"
    argv = ["predict", str(model_file), str(small_folder), "--csv", str(out)]
    assert main([*argv, "--threshold", str(threshold)]) == 0
    rows = list(csv.DictReader(out.open()))
    for row in rows:
        sick = float(row["p_PNEUMONIA"]) >= threshold
        assert row["predicted"] == ("PNEUMONIA" if sick else "NORMAL"), row
    if threshold == 0.0:
        assert {r["predicted"] for r in rows} == {"PNEUMONIA"}


def test_train_from_a_recipe_with_overrides(small_folder, tmp_path):
    from cxrkit import PneumoniaClassifier
    from cxrkit.recipes import RECIPES

    path = tmp_path / "recipe.cxr"
    argv = ["train", str(small_folder), "--recipe", "cpu", "--epochs", "1"]
    overrides = ["--image-size", "32", "--precision", "bf16", "--mixup", "0.3"]
    overrides += ["--preprocess", "none"]  # the recipe equalizes
    assert main([*argv, *overrides, "--out", str(path)]) == 0
    params = PneumoniaClassifier.load(path).get_params()
    assert params["max_epochs"] == 1 and params["image_size"] == 32  # overridden
    assert params["precision"] == "bf16" and params["mixup"] == 0.3
    assert RECIPES["cpu"]["preprocess"] and params["preprocess"] is None
    for key in ("model", "label_smoothing", "lr_schedule", "class_weight"):
        assert params[key] == RECIPES["cpu"][key]  # from the recipe


def test_user_errors_exit_2_with_one_line(model_file, small_folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_model = tmp_path / "model.cxr"
    not_a_model.write_bytes(b"not a model")
    cases = [
        (["evaluate", str(tmp_path / "missing.cxr"), str(small_folder)], "not found"),
        (["evaluate", str(not_a_model), str(small_folder)], "not a cxrkit model"),
        (["predict", str(model_file), str(empty)], "holds no image files"),
        (["predict", str(model_file), str(tmp_path / "nope.png")], "no such image"),
        (["train", str(empty), "--out", str(tmp_path / "m.cxr")], "class folder"),
        (["train", str(small_folder), "--recipe", "gpu"], "is not a recipe"),
        (  # refused before the (missing) folder is read
            ["train", str(tmp_path / "missing"), "--preprocess", "sharpen"],
            "['clahe', 'crop', 'equalize', 'stretch'], or several joined by '+' "
            "(e.g. 'crop+clahe') (--preprocess: steps joined by '+', or none)",
        ),
        (["predict", str(model_file), str(small_folder), "--threshold", "2"], "[0, 1]"),
        (["evaluate", str(model_file), str(small_folder), "--pos-label", "X"], "X"),
        (["demo", "--pos-label", "NORMAL"], "applies to --data"),
        (
            ["export", str(model_file), str(tmp_path / "m.onnx"), "--threshold", "2"],
            "[0, 1]",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and err.startswith(f"cxrkit {argv[0]}: error:"), err
        assert "Traceback" not in err


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "demo"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: cxrkit " + command in capsys.readouterr().out


def test_demo_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        [
            *("demo", "--synthetic", "--n-samples", "60"),
            *("--image-size", "32", "--epochs", "1"),
            *("--model", "simple_cnn", "--out", str(out)),
        ]
    )
    assert code == 0
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file()
    assert "evaluation report" in capsys.readouterr().out


def test_predict_threshold_on_another_positive_class(
    model_file, small_folder, tmp_path
):
    out = tmp_path / "pred.csv"
    argv = ["predict", str(model_file), str(small_folder), "--csv", str(out)]
    assert main([*argv, "--threshold", "0.4", "--pos-label", "NORMAL"]) == 0
    for row in csv.DictReader(out.open()):
        normal = float(row["p_NORMAL"]) >= 0.4
        assert row["predicted"] == ("NORMAL" if normal else "PNEUMONIA"), row
    assert main([*argv, "--threshold", "0.4", "--pos-label", "COVID"]) == 2


def test_internal_errors_show_their_traceback(model_file, small_folder, monkeypatch):
    import cxrkit.report

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(cxrkit.report, "predictions", broken)
    with pytest.raises(ValueError, match="an internal bug"):  # not exit code 2
        main(["predict", str(model_file), str(small_folder)])


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_of_user_errors(model_file, tmp_path, where):
    argv = ["predict", str(model_file), str(tmp_path / "nope.png")]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(Exception, match="no such image file") as info:
        main(argv)
    assert isinstance(info.value.__cause__ or info.value, FileNotFoundError)


def test_predict_into_a_closed_pipe_exits_quietly(model_file, small_folder):
    """`cxrkit predict ... | head`: the reader leaves before the CSV is written."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "cxrkit.cli", "predict", str(model_file)]
    process = subprocess.Popen(
        [*command, str(small_folder)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # the reader is gone before the first row
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize(
    ("setting", "called"), [(None, False), ("0", False), ("1", True)]
)
def test_the_command_line_reuses_large_buffers_when_asked(
    model_file, small_folder, monkeypatch, setting, called
):
    import cxrkit.cli

    calls = []
    monkeypatch.setattr(cxrkit.cli, "reuse_large_buffers", lambda: calls.append(1))
    if setting is None:
        monkeypatch.delenv("CXRKIT_REUSE_BUFFERS", raising=False)
    else:
        monkeypatch.setenv("CXRKIT_REUSE_BUFFERS", setting)
    image = next((small_folder / "NORMAL").iterdir())
    assert main(["predict", str(model_file), str(image)]) == 0
    assert calls == ([1] if called else [])


@pytest.mark.parametrize("command", ["predict", "explain", "evaluate"])
def test_skip_with_every_file_unreadable_is_a_user_error(
    model_file, tmp_path, capsys, command
):
    bad = tmp_path / "bad"
    for label in ("NORMAL", "PNEUMONIA"):
        (bad / label).mkdir(parents=True)
        (bad / label / "broken.jpeg").write_bytes(b"not an image")
    argv = [command, str(model_file), str(bad), "--on-error", "skip"]
    out = ["--out", str(tmp_path / "out")] if command != "predict" else []
    assert main([*argv, *out]) == 2
    err = capsys.readouterr().err
    assert "warning: skipped 2 unreadable image file(s)" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"cxrkit {command}: error: none of the 2 image file")
    assert "Traceback" not in err


def test_explain_writes_one_png_per_image_when_names_repeat(
    model_file, sample_cxr, tmp_path, capsys
):
    from PIL import Image

    from cxrkit import explain

    # scan.png twice and scan.jpg, in two folders; grid.png would take the
    # grid's name, and unique.png keeps its plain name
    images = tmp_path / "images"
    sources = iter(sample_cxr.data[:5])
    for name in ("dupA/scan.png", "dupA/scan.jpg", "dupB/scan.png", "grid.png"):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.open(next(sources)).convert("L").save(images / name)
    Image.open(next(sources)).convert("L").save(images / "unique.png")
    out = tmp_path / "heatmaps"
    argv = ["explain", str(model_file), str(images), "--out", str(out)]
    assert main(argv) == 0
    printed = [
        line for line in capsys.readouterr().out.splitlines() if out.name in line
    ]
    method = explain.DEFAULT_METHOD
    expected = {
        f"dupA_scan.png_{method}.png",
        f"dupA_scan.jpg_{method}.png",
        f"dupB_scan.png_{method}.png",
        f"grid.png_{method}.png",
        f"unique_{method}.png",
        f"grid_{method}.png",
    }
    assert sorted(os.path.basename(p) for p in printed) == sorted(expected)
    assert {p.name for p in out.iterdir()} == expected
    assert main(argv) == 0  # the same names again, in place
    assert {p.name for p in out.iterdir()} == expected
