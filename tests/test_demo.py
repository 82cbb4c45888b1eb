"""`cxrkit demo`, the README's main command, end to end (smaller than default)."""

from __future__ import annotations

import json
import re

from cxrkit.cli import main


def test_demo_trains_reports_and_explains(capsys, tmp_path):
    out_dir = tmp_path / "demo"
    code = main(["demo", "--n-samples", "300", "--epochs", "6", "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 0
    accuracy = float(re.search(r"accuracy: ([0-9.]+)", out).group(1))
    auc = float(re.search(r"ROC AUC[^:]*: ([0-9.]+)", out).group(1))
    assert accuracy > 0.8 and auc > 0.9  # the synthetic lesions are learnable
    assert "not a medical device" in out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics  # the report's numbers were written
    assert (out_dir / "report.html").stat().st_size > 10_000  # figures embedded
    assert (out_dir / "heatmaps.png").stat().st_size > 10_000


def test_demo_on_missing_folder_exits_2(capsys, tmp_path):
    code = main(["demo", "--data", str(tmp_path / "nowhere")])
    assert code == 2
    assert "not found" in capsys.readouterr().err
