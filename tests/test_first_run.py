"""What a newcomer meets first: defaults stated truly, guards against the
first mistakes (a parent folder of splits, evaluating on the training
folder), train's first-run defaults and output, and the version.

Tiny synthetic images written as PNG files (32 px, one epoch).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from PIL import Image

import cxrkit
from cxrkit import PneumoniaClassifier
from cxrkit.cli import (
    TRAIN_PARAMETERS,
    _build_parser,
    _training_verbosity,
    main,
    train_default,
)
from cxrkit.datasets import make_synthetic_cxr

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "simple_cnn", "--epochs", "1", "--image-size", "32", "-q"]


def _write_folder(root: Path, n: int = 24, seed: int = 0) -> Path:
    """A class-per-subfolder tree of ``n`` synthetic PNGs (NORMAL, PNEUMONIA)."""
    X, y, _ = make_synthetic_cxr(n, image_size=32, random_state=seed)
    for i, (image, label) in enumerate(zip(X, y)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / label / f"person{i}_virus_{i}.png")
    return root


# ---------------------------------------------------------- stated defaults
def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _effective_defaults() -> dict[tuple[str, str], object]:
    """Options whose parser default is None, and the value they then take."""
    from cxrkit.demo import run_demo
    from cxrkit.explain import DEFAULT_METHOD

    effective = {
        ("train", dest): train_default(p) for dest, p in TRAIN_PARAMETERS.items()
    }
    demo = inspect.signature(run_demo).parameters
    effective[("demo", "n_samples")] = demo["n_samples"].default
    effective[("explain", "method")] = DEFAULT_METHOD
    return effective


def _same(stated: str, value: object) -> bool:
    if value is None:
        return stated == "none"
    if isinstance(value, bool):  # a flag: "False" or "off" for store_true
        return stated.lower() in ({str(value).lower()} | ({"on"} if value else {"off"}))
    if isinstance(value, (int, float)):
        try:
            return float(stated) == float(value)
        except ValueError:
            return False
    return stated == str(value)


def stated_default_problems(commands=None) -> list[str]:
    """Each CLI option whose help states a default other than the one it has,
    or has a default that its help does not state."""
    effective = _effective_defaults()
    problems = []
    for command, parser in (commands or _subcommands()).items():
        for action in parser._actions:
            flag = action.default is False or action.default == argparse.SUPPRESS
            if not action.option_strings or flag:
                continue  # --help, --version, flags
            where = f"cxrkit {command} {action.option_strings[-1]}"
            # the help as printed: argparse expands %(default)s and the like
            shown = parser._get_formatter()._expand_help(action) if action.help else ""
            match = re.search(r"default: ([^;),]+)", shown)
            stated = match.group(1).strip() if match else None
            value = action.default
            if value is None:
                if (command, action.dest) not in effective:
                    continue  # no default, or one described in words
                value = effective[(command, action.dest)]
            if stated is None and value is None:
                continue
            if stated is None:
                problems.append(f"{where}: default {value!r} is not stated")
            elif not _same(stated, value):
                problems.append(f"{where}: states {stated!r}, the default is {value!r}")
    return problems


def test_every_cli_option_states_its_true_default():
    assert stated_default_problems() == []


def test_the_check_catches_wrong_and_missing_defaults():
    commands = _subcommands()
    actions = {a.dest: a for a in commands["evaluate"]._actions}
    actions["n_bootstrap"].default = 500  # a help written out by hand goes stale
    actions["n_bootstrap"].help = "bootstrap resamples (default: 2000)"
    actions["seed"].help = "bootstrap seed"
    assert stated_default_problems(commands) == [
        "cxrkit evaluate --n-bootstrap: states '2000', the default is 500",
        "cxrkit evaluate --seed: default 0 is not stated",
    ]


def test_train_help_follows_the_code(monkeypatch):
    """train's stated defaults are read from the code, not written twice."""
    monkeypatch.setitem(cxrkit.cli.TRAIN_DEFAULTS, "class_weight", "none-test")
    train = _subcommands()["train"]
    action = next(a for a in train._actions if a.dest == "class_weight")
    assert "(default: none-test;" in action.help


def _docstring_defaults():
    """(where, stated, code) for every parameter default the API pages show."""
    griffe = pytest.importorskip("griffe")
    package = griffe.load("cxrkit", search_paths=[str(ROOT)])

    def walk(obj):
        for member in obj.members.values():
            if member.is_alias:
                continue
            if member.is_module or member.is_class:
                if member.is_class:
                    yield member
                yield from walk(member)
            elif member.is_function:
                yield member

    import importlib

    for obj in walk(package):
        if obj.docstring is None:
            continue
        sections = obj.docstring.parse("numpy", warn_unknown_params=False)
        params = [p for s in sections if s.kind.value == "parameters" for p in s.value]
        stated = {p.name: p.default for p in params if p.default is not None}
        if not stated:
            continue
        module = importlib.import_module(obj.module.path)
        target = module
        for part in obj.path[len(obj.module.path) + 1 :].split("."):
            target = getattr(target, part, None)
        if target is None:
            continue
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        for name, text in stated.items():
            parameter = signature.parameters.get(name)
            if parameter is None or parameter.default is inspect.Parameter.empty:
                continue
            yield obj.path + "." + name, str(text), parameter.default, vars(module)


def _literal(text: str, namespace: dict | None = None) -> object:
    """A stated default's value: a literal, 1/3, or a module constant that
    the page shows by name (griffe takes it from the signature)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if text.isidentifier() and namespace and text in namespace:
            return namespace[text]
        try:  # 1/3
            return eval(compile(ast.parse(text, mode="eval"), "<doc>", "eval"), {})
        except Exception:
            return text


def test_api_pages_state_the_defaults_of_the_code():
    """mkdocstrings shows each parameter's default as the numpydoc type line
    reads (a {choices} type reads as its first choice): it must be the code's."""
    wrong = [
        f"{where}: the docs say {stated}, the code has {code!r}"
        for where, stated, code, namespace in _docstring_defaults()
        if _literal(stated, namespace) != code
    ]
    assert wrong == []


def test_augment_default_on_the_api_page_is_default():
    found = {w: s for w, s, _, _ in _docstring_defaults()}
    assert _literal(found["cxrkit.classifier.PneumoniaClassifier.augment"]) == (
        "default"
    )


# -------------------------------------------------------------------- guards
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """chest_xray/{train,val}/{NORMAL,PNEUMONIA}, as the tutorial lays it out."""
    root = tmp_path_factory.mktemp("data") / "chest_xray"
    _write_folder(root / "train", 24, seed=0)
    _write_folder(root / "val", 8, seed=1)
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """``cxrkit train chest_xray/train`` with first-run defaults, and its output."""
    out = tmp_path_factory.mktemp("model") / "model.cxr"
    argv = ["train", str(dataset / "train"), *TINY[:-1], "--out", str(out)]
    argv += ["--validation-fraction", "0.25"]
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out, printed.getvalue()


def test_train_refuses_a_folder_of_splits_and_names_the_right_one(
    dataset, tmp_path, capsys
):
    out = tmp_path / "m.cxr"
    assert main(["train", str(dataset), *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "dataset splits, not classes" in err
    assert f"cxrkit train {dataset / 'train'}" in err and "--force" in err
    assert not out.exists()


def test_train_force_uses_split_folders_as_classes(dataset, tmp_path):
    out = tmp_path / "m.cxr"
    argv = ["train", str(dataset), *TINY, "--out", str(out), "--force"]
    assert main([*argv, "--validation-fraction", "0"]) == 0
    assert list(PneumoniaClassifier.load(out).classes_) == ["train", "val"]


def test_evaluate_on_a_folder_of_splits_names_the_split(trained, dataset, capsys):
    path, _ = trained
    assert main(["evaluate", str(path), str(dataset), "-q"]) == 2
    err = capsys.readouterr().err
    assert "dataset splits, not classes" in err
    assert f"cxrkit evaluate MODEL {dataset / 'val'}" in err


def test_evaluate_warns_on_the_recorded_training_folder(
    trained, dataset, tmp_path, capsys
):
    path, _ = trained
    argv = ["evaluate", str(path), str(dataset / "train"), "-q"]
    assert main([*argv, "--out", str(tmp_path / "r"), "--n-bootstrap", "20"]) == 0
    err = capsys.readouterr().err
    assert "cxrkit evaluate: warning:" in err
    assert "the folder this model was trained on" in err and "optimistic" in err
    argv = ["evaluate", str(path), str(dataset / "val"), "-q"]
    assert main([*argv, "--out", str(tmp_path / "v"), "--n-bootstrap", "20"]) == 0
    assert "trained on" not in capsys.readouterr().err


# ---------------------------------------------------------- first-run output
def test_train_weighs_classes_and_says_what_it_held_out(trained):
    path, printed = trained
    clf = PneumoniaClassifier.load(path)
    assert clf.class_weight == "balanced"  # train's default
    held = clf.training_data_["n_validation"]
    assert held > 0
    assert f"trained on {24 - held} images; {held} held out" in printed


def test_no_held_out_images_is_said_too(dataset, tmp_path, capsys):
    out = tmp_path / "m.cxr"
    argv = ["train", str(dataset / "train"), *TINY[:-1], "--out", str(out)]
    assert main([*argv, "--validation-fraction", "0"]) == 0
    assert "trained on all 24 images; none held out" in capsys.readouterr().out


def test_a_recipe_keeps_its_class_weights_and_unweighted_imbalance_is_said(
    tmp_path, capsys
):
    root = tmp_path / "imbalanced"
    X, y, _ = make_synthetic_cxr(40, image_size=32, random_state=0)
    keep = np.r_[np.flatnonzero(y == "NORMAL")[:6], np.flatnonzero(y == "PNEUMONIA")]
    for i in keep:
        (root / y[i]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(X[i]).save(root / y[i] / f"person{i}_virus_{i}.png")
    out = tmp_path / "m.cxr"
    argv = ["train", str(root), "--recipe", "simple_cnn_150", "--epochs", "1"]
    argv += ["--image-size", "32", "-q", "--out", str(out)]
    assert main(argv) == 0
    assert PneumoniaClassifier.load(out).class_weight is None  # the recipe's
    err = capsys.readouterr().err
    assert "the classes are not weighted" in err and "--class-weight balanced" in err


def test_a_terminal_gets_a_progress_bar_within_each_epoch(monkeypatch):
    args = argparse.Namespace()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert _training_verbosity(args) == 2
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert _training_verbosity(args) == 1
    assert _training_verbosity(argparse.Namespace(quiet=True)) == 0


def test_explain_takes_the_on_error_it_suggests(trained, dataset, tmp_path, capsys):
    path, _ = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    image = next((dataset / "val" / "NORMAL").iterdir())
    argv = ["explain", str(path), str(image), str(broken), "--out", str(tmp_path)]
    assert main([*argv, "--method", "grad_cam"]) == 2
    err = capsys.readouterr().err
    assert "add --on-error skip" in err
    assert main([*argv, "--method", "grad_cam", "--on-error", "skip"]) == 0
    assert "skipped 1 unreadable" in capsys.readouterr().err
    assert (tmp_path / f"{image.stem}_grad_cam.png").is_file()


def test_serve_help_does_not_offer_on_error_it_lacks(capsys):
    """A command without --on-error is not told to add it."""
    from cxrkit.cli import _user_message
    from cxrkit.images import ImageReadError

    error = ImageReadError({"x.png": "cannot identify image file"})
    assert "--on-error" not in _user_message(error, argparse.Namespace())
    with_option = _user_message(error, argparse.Namespace(on_error="raise"))
    assert "--on-error skip" in with_option


# ------------------------------------------------------------------ version
def test_version_is_one_value_with_a_changelog_entry():
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert version == cxrkit.__version__
    assert not cxrkit.__version__.startswith("0.1")
    release = re.match(r"\d+\.\d+\.\d+", cxrkit.__version__).group(0)
    changelog = (ROOT / "docs" / "changelog.md").read_text()
    assert f"## {release}" in changelog


def test_option_tables_of_the_guides_state_the_parsers_defaults():
    """A guide's table of options (| `--opt` | default | ...) agrees with the
    parser of the command the guide is about."""
    tables = {"serve": ROOT / "docs" / "guide" / "serve.md"}
    row = re.compile(r"^\| `(--[a-z-]+)[^`]*` \| ([^|]+) \|", re.M)
    checked = 0
    for command, page in tables.items():
        actions = {
            a.option_strings[-1]: a
            for a in _subcommands()[command]._actions
            if a.option_strings
        }
        for option, stated in row.findall(page.read_text()):
            default = actions[option].default
            stated = stated.strip().strip("`")
            if default is None:
                assert stated.startswith(("none", "the ")), (option, stated)
            else:
                assert _same(stated, default), f"{page.name}: {option} {stated!r}"
            checked += 1
    assert checked >= 5
