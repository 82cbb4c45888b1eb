"""The tutorial and the Quickstart run as shown, on real images.

Their pages (docs/tutorial.md, docs/quickstart.md) are made of the sections
of ``examples/tutorial.py`` and ``examples/quickstart.py``; the scripts run
here on small settings (the tutorial: 80 patients of the Kermany folder, one
epoch at 32 px, the 16 ``val`` images as the test folder; the Quickstart: 80
patients of the sample in the package), in an empty folder, as a new user
would run them.
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"tutorial": "docs/tutorial.md", "quickstart": "docs/quickstart.md"}
# this checkout's cxrkit, whichever one is installed
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("name", PAGES)
def test_the_page_shows_every_section_of_the_script_in_order(name: str) -> None:
    script = (ROOT / "examples" / f"{name}.py").read_text("utf-8")
    sections = re.findall(r"# --8<-- \[start:(\w+)\]", script)
    page = (ROOT / PAGES[name]).read_text("utf-8")
    shown = re.findall(rf'--8<-- "examples/{name}.py:(\w+)"', page)
    assert sections == shown


@pytest.mark.parametrize("name", PAGES)
def test_code_lines_fit_the_page(name: str) -> None:
    """About 80 characters fit a code block of the docs at 1280 px."""
    text = (ROOT / "examples" / f"{name}.py").read_text("utf-8")
    blocks = re.findall(r"\[start:(\w+)\]\n(.*?)# --8<-- \[end:\1\]", text, re.S)
    long = [line for _, code in blocks for line in code.splitlines() if len(line) > 79]
    assert not long, long


@pytest.mark.parametrize("name", PAGES)
def test_every_section_imports_what_it_uses(name: str) -> None:
    """Each block is pasted on its own: a name it reads comes from its own
    imports and assignments, or from an earlier block."""
    text = (ROOT / "examples" / f"{name}.py").read_text("utf-8")
    blocks = re.findall(r"\[start:(\w+)\]\n(.*?)# --8<-- \[end:\1\]", text, re.S)
    assert len(blocks) >= 4
    defined = set(dir(builtins))
    for name, code in blocks:
        read, stored = set(), set()
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Name):
                (stored if isinstance(node.ctx, ast.Store) else read).add(node.id)
            elif isinstance(node, ast.alias):
                stored.add((node.asname or node.name).split(".")[0])
        missing = read - stored - defined
        assert not missing, f"section {name} reads {sorted(missing)} undefined"
        defined |= stored


def _run_example(name: str, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    """``python examples/<name>.py ARGS`` in ``cwd``, with this checkout's cxrkit."""
    result = subprocess.run(
        [sys.executable, ROOT / "examples" / f"{name}.py", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow  # about 30 s: a subprocess trains, reports and explains
def test_tutorial_runs_on_real_images(kermany_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tutorial-output"
    small = ["--n-patients", 80, "--epochs", 1, "--image-size", 32, "--out", out]
    test_dir = kermany_dir / "val"
    printed = _run_example(
        "tutorial", "--data", kermany_dir, "--test-dir", test_dir, *small, cwd=tmp_path
    ).stdout
    assert "NORMAL:" in printed and "patients" in printed
    assert "threshold" in printed
    assert (out / "model.cxr").is_file()
    html = (out / "report" / "report.html").read_text("utf-8")
    assert str(test_dir) in html
    n_wrong = int(re.search(r"(\d+) of 16 test images misclassified", printed)[1])
    assert (out / "heatmap_errors.png").is_file() == (n_wrong > 0)
    # nothing written outside the output folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tutorial-output"]


@pytest.mark.slow  # about 60 s: seven short fits
def test_quickstart_runs_on_the_sample(tmp_path: Path) -> None:
    """The Quickstart's default data: the real sample in the package."""
    result = _run_example("quickstart", "--n-patients", 80, cwd=tmp_path)
    assert "80 images of 80 patients" in result.stdout
    assert "best parameters" in result.stdout and "Sensitivity" in result.stdout
    assert "[CV] END" in result.stdout + result.stderr  # progress, one per fit
    assert list(tmp_path.iterdir()) == []  # writes nothing
