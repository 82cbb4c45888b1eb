"""`cxrkit demo`, the README's main command, end to end (smaller than default)."""

from __future__ import annotations

import json
import re

import pytest

from cxrkit.cli import main


def test_demo_trains_reports_and_explains(capsys, tmp_path):
    out_dir = tmp_path / "demo"
    argv = ["demo", "--synthetic", "--n-samples", "300", "--epochs", "6"]
    code = main([*argv, "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 0
    accuracy = float(re.search(r"accuracy: ([0-9.]+)", out).group(1))
    auc = float(re.search(r"ROC AUC[^:]*: ([0-9.]+)", out).group(1))
    assert accuracy > 0.8 and auc > 0.9  # the synthetic lesions are learnable
    assert "not a medical device" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics  # the report's numbers were written
    assert "synthetic" in metrics["note"]
    assert (out_dir / "report.html").stat().st_size > 10_000  # figures embedded
    assert (out_dir / "heatmaps.png").stat().st_size > 10_000


def test_demo_on_the_real_sample_by_default(capsys, tmp_path):
    """No --data, no --synthetic: the package's sample, split by patient."""
    out_dir = tmp_path / "demo"
    argv = ["demo", "--epochs", "1", "--image-size", "32", "--model", "simple_cnn"]
    assert main([*argv, "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "real sample shipped with cxrkit" in out
    assert re.search(r"accuracy: [0-9.]+ \(95% CI [0-9.]+-[0-9.]+\)", out)
    assert "A demonstration" in out and "trained on 450 images" in out
    # the heatmaps are named after the method that drew them
    assert "occlusion heatmaps:" in out and "Grad-CAM heatmaps" not in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["data"]["n"] == 150
    assert metrics["data"]["support"] == {"NORMAL": 75, "PNEUMONIA": 75}
    assert "real sample" in metrics["data"]["description"]
    assert "450 images" in metrics["note"]
    html = (out_dir / "report.html").read_text("utf-8")
    assert "A demonstration" in html and "CC BY 4.0" in html


def test_demo_split_keeps_patients_apart():
    from cxrkit import patient_groups
    from cxrkit.datasets import load_sample_cxr
    from cxrkit.demo import _split

    X, y = load_sample_cxr(return_X_y=True)
    X_train, X_test, y_train, y_test = _split(X, y, 0, patient_groups(X))
    assert len(X_train) == 450 and len(X_test) == 150
    assert (y_train == "NORMAL").sum() == 225 and (y_test == "NORMAL").sum() == 75
    assert not set(patient_groups(X_train)) & set(patient_groups(X_test))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n-samples", "60"], "applies to --synthetic"),
        (["--pos-label", "NORMAL"], "applies to --data"),
    ],
)
def test_demo_options_that_need_another(argv, message, capsys):
    assert main(["demo", *argv]) == 2
    assert message in capsys.readouterr().err


def test_demo_data_and_synthetic_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--synthetic", "--data", str(tmp_path)])
    assert info.value.code == 2


def test_demo_on_missing_folder_exits_2(capsys, tmp_path):
    code = main(["demo", "--data", str(tmp_path / "nowhere")])
    assert code == 2
    assert "not found" in capsys.readouterr().err
