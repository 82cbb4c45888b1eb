"""`cxrkit demo`, the README's main command, end to end (small)."""

from __future__ import annotations

import re

from cxrkit.cli import main


def test_demo_trains_and_reports(capsys, tmp_path):
    code = main(
        ["demo", "--n-samples", "160", "--epochs", "4", "--out", str(tmp_path / "demo")]
    )
    out = capsys.readouterr().out
    assert code == 0
    accuracy = float(re.search(r"accuracy: ([0-9.]+)", out).group(1))
    auc = float(re.search(r"ROC AUC[^:]*: ([0-9.]+)", out).group(1))
    assert 0.0 <= accuracy <= 1.0
    assert auc > 0.8  # the synthetic lesions are learnable in a few epochs
    assert "not a medical device" in out
