"""cxrkit.plot heatmap figures and the ``cxrkit explain`` command (headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from matplotlib.figure import Figure

from cxrkit import PneumoniaClassifier
from cxrkit.cli import main
from cxrkit.datasets import make_synthetic_cxr
from cxrkit.explain import DEFAULT_METHOD, method_caption
from cxrkit.plot import plot_explanations, plot_heatmap, plot_heatmap_grid


def test_overlay_has_colour_bar_and_covers_the_image():
    image = np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8)
    heatmap = np.zeros((5, 5))
    heatmap[2, 2] = 1
    ax = plot_heatmap(image, heatmap, title="t")
    gray, overlay = ax.images
    assert gray.get_extent() == overlay.get_extent() == [0, 30, 40, 0]
    assert overlay.get_clim() == (0, 1)
    assert len(ax.figure.axes) == 2  # the image and its colour bar
    assert ax.figure.axes[1].get_ylabel() == "relevance"
    no_bar = plot_heatmap(image, heatmap, colorbar=False)
    assert len(no_bar.figure.axes) == 1


def test_overlay_draws_into_a_given_axes():
    ax = Figure().subplots()
    assert plot_heatmap(np.zeros((8, 8)), np.ones((8, 8)), ax=ax) is ax


def test_grid_titles_mark_wrong_predictions():
    fig = plot_heatmap_grid(
        np.zeros((3, 16, 16, 3)),
        np.ones((3, 4, 4)),
        y_true=["A", "B", "B"],
        y_pred=["A", "A", "B"],
        proba=[0.91, 0.6, 0.8],
        ncols=2,
    )
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    titles = [ax.get_title() for ax in panels]
    assert titles[0] == "true: A\npred: A (p=0.91)"
    colors = [ax.title.get_color() for ax in panels]
    assert colors[1] == "tab:red" and colors[0] == colors[2] == "black"


def test_grid_checks_lengths():
    with pytest.raises(ValueError, match="one heatmap per image"):
        plot_heatmap_grid(np.zeros((3, 8, 8)), np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="y_pred has 1 entries for 2 images"):
        plot_heatmap_grid(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), y_pred=["A"])


@pytest.fixture(scope="module")
def tiny_clf():
    X, y, _ = make_synthetic_cxr(32, image_size=32, random_state=0)
    return PneumoniaClassifier(model="simple_cnn", **FAST).fit(X, y), X, y


def test_plot_explanations_on_real_images(tiny_clf, sample_cxr, tmp_path):
    clf, _, _ = tiny_clf
    X, y = sample_cxr.data, sample_cxr.target
    fig = plot_explanations(clf, X[[0, -1]], y[[0, -1]])
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2
    # file name, true label, prediction
    assert panels[0].get_title().startswith(f"{Path(X[0]).name}\ntrue: {y[0]}\npred: ")
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000
    # the default method, named with what it shows and its caveat
    assert fig.get_suptitle().startswith("Occlusion (adaptive): ")
    assert "not where disease is" in fig.get_suptitle()


def test_every_heatmap_figure_names_its_method(tiny_clf):
    from cxrkit.explain import grad_cam
    from cxrkit.plot import method_title

    clf, X, y = tiny_clf
    fig = plot_explanations(clf, X[:2], y[:2], method=grad_cam)
    assert fig.get_suptitle().startswith("Grad-CAM: ")
    maps = grad_cam(clf, X[:2])
    fig = plot_explanations(clf, X[:2], heatmaps=maps, method_name="grad_cam")
    assert fig.get_suptitle().startswith("Grad-CAM: ")
    fig = plot_explanations(clf, X[:2], heatmaps=maps)  # method unknown
    assert fig.get_suptitle().startswith("Heatmaps: ")
    fig = plot_heatmap_grid(
        X[:2], maps, title="Grad-CAM", proba=[0.2, 0.9], proba_label="P(PNEUMONIA)"
    )
    assert fig.get_suptitle() == "Grad-CAM"
    assert [a.get_title() for a in fig.axes if a.images][1] == "P(PNEUMONIA)=0.90"
    from cxrkit.explain import METHODS

    titles = {name: method_title(name) for name in METHODS}
    assert titles["grad_cam"] == "Grad-CAM" and titles["occlusion"] == "Occlusion"
    assert all("_" not in t for t in titles.values())


def test_plot_explanations_draws_given_heatmaps_without_computing(tiny_clf):
    clf, X, y = tiny_clf
    maps = np.zeros((3, 32, 32))
    maps[:, 5, 7] = 1.0  # one hot pixel each: drawn as given

    def never(*args, **kwargs):
        raise AssertionError("the method ran although heatmaps were given")

    fig = plot_explanations(clf, X[:3], y[:3], heatmaps=maps)
    overlays = [im for ax in fig.axes for im in ax.images[1:]]
    assert len(overlays) == 3
    for im in overlays:
        drawn = np.asarray(im.get_array())
        assert np.unravel_index(drawn.argmax(), drawn.shape) == (5, 7)
    with pytest.raises(ValueError, match="both method and heatmaps"):
        plot_explanations(clf, X[:3], heatmaps=maps, method=never)
    with pytest.raises(ValueError, match="one heatmap per image"):
        plot_explanations(clf, X[:3], heatmaps=maps[:2])


def test_cli_explain_writes_pngs(tiny_clf, sample_cxr, tmp_path, capsys):
    clf, _, _ = tiny_clf
    model = clf.save(tmp_path / "model.cxr")
    X = sample_cxr.data
    out = tmp_path / "out"
    code = main(["explain", str(model), str(X[0]), str(X[1]), "--out", str(out)])
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3 and f"grid_{DEFAULT_METHOD}.png" in names
    assert method_caption(DEFAULT_METHOD) in capsys.readouterr().out
    code = main(["explain", str(model), str(X[0]), "--out", str(out), "--target", "X"])
    assert code == 2
    assert "not a class" in capsys.readouterr().err
    args = ["explain", str(model), str(X[0]), "--out", str(out), "--method"]
    assert main([*args, "layer_cam"]) == 0
    assert (out / f"{Path(X[0]).stem}_layer_cam.png").is_file()
    assert main([*args, "gradcam"]) == 2
    assert "is not a heatmap method" in capsys.readouterr().err
