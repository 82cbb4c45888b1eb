"""The command line as a new user meets it: options, defaults and messages.

Real images, linked (never copied) from ``../shared/data``; tiny models.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest

from cxrkit import PneumoniaClassifier, explain
from cxrkit.cli import (
    TRAIN_DEFAULTS,
    TRAIN_PARAMETERS,
    _build_parser,
    _hint_stuck_accuracy,
    main,
)

TINY = ["--model", "simple_cnn", "--epochs", "1", "--image-size", "32"]


def _link_folder(kermany_dir: Path, root: Path, names=("NORMAL", "PNEUMONIA"), n=8):
    for source, name in zip(("NORMAL", "PNEUMONIA"), names):
        (root / name).mkdir(parents=True)
        for src in sorted((kermany_dir / "train" / source).glob("*.jpeg"))[:n]:
            os.symlink(src, root / name / src.name)
    return root


@pytest.fixture(scope="module")
def folder(kermany_dir, tmp_path_factory):
    return _link_folder(kermany_dir, tmp_path_factory.mktemp("xray"))


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    """A model trained with the new options, and what train printed."""
    out = tmp_path_factory.mktemp("model")
    capture = out / "stdout.txt"
    argv = [
        *("train", str(folder), *TINY, "--out", str(out / "model.cxr")),
        *("--augment", "none", "--sampler", "balanced", "--lr-schedule", "none"),
        *("--label-smoothing", "0.1", "--tta", "1", "--on-error", "skip"),
        *("--checkpoint-dir", str(out / "checkpoints"), "--threshold", "0.3"),
        *("--validation-fraction", "0.25", "--device", "cpu"),
        *("--preprocess", "crop+equalize"),
    ]
    with capture.open("w") as fh, contextlib.redirect_stdout(fh):  # not a tty
        assert main(argv) == 0
    return out / "model.cxr", capture.read_text()


def test_train_options_reach_the_model_file(trained, folder):
    path, printed = trained
    clf = PneumoniaClassifier.load(path)
    params = clf.get_params()
    assert params["augment"] is None and params["sampler"] == "balanced"
    assert params["lr_schedule"] is None and params["label_smoothing"] == 0.1
    assert params["tta"] == 1 and params["on_error"] == "skip"
    assert params["preprocess"] == "crop+equalize"
    assert Path(params["checkpoint_dir"]).is_dir()
    assert clf.operating_threshold_["threshold"] == 0.3
    data = clf.training_data_
    assert data["source"] == str(folder)
    assert data["classes"]["NORMAL"]["images"] == 8
    assert data["classes"]["NORMAL"]["patients"] >= 1
    assert "valid_acc" in printed and "\x1b[" not in printed  # no colour codes


def test_evaluate_predict_explain_use_the_recorded_threshold(
    trained, folder, tmp_path, capsys, monkeypatch
):
    path, _ = trained
    assert main(["evaluate", str(path), str(folder), "--out", str(tmp_path / "r")]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["metrics"]["threshold"] == 0.3
    assert metrics["training"]["threshold"]["threshold"] == 0.3
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Operating threshold recorded with the model" in page
    monkeypatch.chdir(tmp_path)  # explain's default --out is ./heatmaps
    image = next((folder / "NORMAL").iterdir())
    assert main(["explain", str(path), str(image)]) == 0
    method = explain.DEFAULT_METHOD  # the recommended heatmap method
    assert (tmp_path / "heatmaps" / f"{image.stem}_{method}.png").is_file()
    capsys.readouterr()
    assert main(["predict", str(path), str(folder), "--quiet"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 16
    for row in rows:
        _, predicted, _, p_pneumonia = row.split(",")[:4]
        assert predicted == ("PNEUMONIA" if float(p_pneumonia) >= 0.3 else "NORMAL")


def test_lower_case_class_folders_match_the_model(trained, kermany_dir, tmp_path):
    path, _ = trained
    lower = _link_folder(kermany_dir, tmp_path / "lower", ("normal", "pneumonia"), 4)
    out = tmp_path / "r"
    argv = ["evaluate", str(path), str(lower), "--out", str(out), "-q"]
    assert main([*argv, "--n-bootstrap", "50"]) == 0
    assert json.loads((out / "metrics.json").read_text())["metrics"]["n"] == 8


def test_messages_name_the_input_and_the_command_line_fix(
    trained, kermany_dir, tmp_path, capsys
):
    path, _ = trained
    other = _link_folder(kermany_dir, tmp_path / "other", ("healthy", "sick"), 2)
    bad = _link_folder(kermany_dir, tmp_path / "bad", n=3)
    (bad / "NORMAL" / "broken.jpeg").write_bytes(b"not an image")
    picture = next((bad / "PNEUMONIA").iterdir())
    single = _link_folder(kermany_dir, tmp_path / "single", ("NORMAL",), 3)
    cases = [
        (["evaluate", str(path), str(other)], "the model's classes are"),
        (["evaluate", str(path), str(bad)], "add --on-error skip"),
        (["evaluate", str(picture), str(bad)], "it is a JPEG image"),
        (["evaluate", str(tmp_path), str(bad)], "is a folder, not a model file"),
        (
            ["train", str(single), *TINY, "--out", str(tmp_path / "m.cxr")],
            "class folder",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err, err
        assert err.startswith(f"cxrkit {argv[0]}: error:"), err
        assert "np.str_" not in err and "weights_only" not in err
        assert "on_error=" not in err and "Traceback" not in err
    out = tmp_path / "skip"
    argv = ["evaluate", str(path), str(bad), "--on-error", "skip", "--out", str(out)]
    assert main([*argv, "--n-bootstrap", "50"]) == 0
    err = capsys.readouterr().err
    assert "cxrkit evaluate: warning: skipped 1 unreadable" in err
    assert ".py:" not in err  # no source line of cxrkit


def test_a_stray_file_warns_in_one_line(folder, tmp_path, capsys):
    stray = tmp_path / "data"
    for label in ("NORMAL", "PNEUMONIA"):
        (stray / label).mkdir(parents=True)
        for src in sorted((folder / label).iterdir())[:4]:
            os.symlink(src, stray / label / src.name)
    (stray / "NORMAL" / "notes.txt").write_text("to do")
    argv = ["train", str(stray), *TINY, "--validation-fraction", "0", "-q"]
    assert main([*argv, "--out", str(tmp_path / "m.cxr")]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # --quiet
    warning = [line for line in captured.err.splitlines() if "notes.txt" in line]
    assert warning and warning[0].startswith("cxrkit train: warning:")
    assert "UserWarning" not in captured.err and ".py:" not in captured.err


def test_train_help_lists_the_models(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in ("cnn4", "resnet18", "efficientnet_b0", "--on-error", "--tta"):
        assert name in text


def test_stuck_accuracy_gets_a_hint(capsys):
    class Args:
        quiet = False

    rising = [{"valid_acc": 0.5, "valid_auc": a} for a in (0.6, 0.75, 0.92)]
    _hint_stuck_accuracy(Args(), rising)
    err = capsys.readouterr().err
    assert "valid_acc stayed at 0.5000" in err and "the threshold, not the model" in err
    moving = [{"valid_acc": a, "valid_auc": a} for a in (0.6, 0.75, 0.92)]
    _hint_stuck_accuracy(Args(), moving)
    assert capsys.readouterr().err == ""


def _options() -> list[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    """(command, its parser, option) for every option of every command."""
    parser = _build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [
        (name, command, action)
        for name, command in sub.choices.items()
        for action in command._actions
        if action.help
    ]


def _help_of(command: str, dest: str) -> str:
    """The help of one option as ``--help`` prints it (``%(default)s`` expanded)."""
    for name, parser, action in _options():
        if name == command and action.dest == dest:
            return parser._get_formatter()._expand_help(action)
    raise AssertionError(f"cxrkit {command} has no option {dest!r}")


def test_each_default_help_states_is_the_option_default():
    checked = 0
    for name, parser, action in _options():
        if action.default in (None, False, argparse.SUPPRESS):
            continue  # the help says what None means; checked below
        text = parser._get_formatter()._expand_help(action)
        stated = re.search(r"\bdefault: ([^,;)\s]+)", text)
        if stated:
            assert stated.group(1) == str(action.default), (name, action.dest, text)
            checked += 1
    assert checked >= 20  # the seeds, devices, ports and folders of every command


def test_help_defaults_are_the_code_defaults():
    from cxrkit.adaptation import calibrate
    from cxrkit.demo import run_demo
    from cxrkit.recipes import RECIPES
    from cxrkit.report import evaluation_report

    def default(function, parameter):
        return inspect.signature(function).parameters[parameter].default

    demo = _build_parser().parse_args(["demo"])
    assert (demo.model, demo.epochs, demo.image_size, demo.seed, demo.out) == tuple(
        default(run_demo, p)
        for p in ("model", "max_epochs", "image_size", "random_state", "out_dir")
    )
    assert f"default: {default(run_demo, 'n_samples')})" in _help_of(
        "demo", "n_samples"
    )
    estimator = PneumoniaClassifier().get_params()
    stated = [d for d in TRAIN_PARAMETERS if "default:" in _help_of("train", d)]
    assert len(stated) >= 12
    for dest in stated:
        parameter = TRAIN_PARAMETERS[dest]
        value = TRAIN_DEFAULTS.get(parameter, estimator[parameter])
        shown = "none" if value is None else str(value)
        assert f"(default: {shown}" in _help_of("train", dest), dest
    recipes = _help_of("train", "recipe")
    assert all(name in recipes for name in RECIPES)
    methods = _help_of("explain", "method")
    assert all(name in methods for name in explain.METHODS)
    assert f"default: {explain.DEFAULT_METHOD}," in methods
    evaluate = _build_parser().parse_args(["evaluate", "m.cxr", "d"])
    assert evaluate.n_bootstrap == default(evaluation_report, "n_bootstrap")
    adapt = _build_parser().parse_args(["adapt", "m.cxr", "--out", "a.cxr"])
    assert adapt.method == default(calibrate, "method")


def test_an_option_of_several_commands_reads_the_same_in_each():
    """--device, --threshold and MODEL are declared once (``cxrkit.cli``'s
    ``_device_argument`` and friends); --device's default is the API's."""
    by_option: dict[str, dict[str, argparse.Action]] = {}
    for name, _, action in _options():
        key = action.option_strings[-1] if action.option_strings else action.dest
        by_option.setdefault(key, {})[name] = action
    load = inspect.signature(PneumoniaClassifier.load).parameters["device"].default
    device = by_option["--device"].values()
    assert len(device) >= 8
    assert {(a.default, a.help) for a in device} == {
        (load, "auto, cpu or cuda (default: %(default)s)")
    }
    threshold = by_option["--threshold"]
    assert {(a.type, a.default) for a in threshold.values()} == {(float, None)}
    assert len({threshold[c].help for c in ("serve", "listen", "pacs")}) == 1
    model = by_option["model_file"]
    assert set(model) >= {"evaluate", "predict", "explain", "export", "serve"}
    assert {(a.metavar, a.help) for a in model.values()} == {
        ("MODEL", "model file (written by cxrkit train or clf.save)")
    }


@pytest.mark.parametrize(
    ("command", "module", "name"),
    [("serve", "cxrkit.serve", "serve"), ("listen", "cxrkit.pacs", "Listener")],
)
def test_a_listening_command_defaults_to_its_api(command, module, name):
    """The defaults of serve and listen (host, port, spool, queues, ...) are
    those of the function they call: written once in the CLI, where the
    parser cannot import the optional extras to read them."""
    api = getattr(pytest.importorskip(module, reason="needs its extra"), name)
    parameters = inspect.signature(api).parameters
    compared = []
    for cli_name, _, action in _options():
        if cli_name == command and action.dest in parameters:
            expected = parameters[action.dest].default
            if expected is not inspect.Parameter.empty:
                assert action.default == expected, (command, action.dest)
                compared.append(action.dest)
    assert {"host", "port", "device"} <= set(compared)
