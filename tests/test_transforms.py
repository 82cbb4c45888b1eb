"""Batched augmentation (per-image parameters), its options, and the data path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrkit import PneumoniaClassifier
from cxrkit.images import MEAN, ImageBatches, ImageDataset, normalize
from cxrkit.models._net import ImageClassifierNet
from cxrkit.training import AUGMENT_PRESETS, BatchAugmentation, build_augmentation


def _same_image_batch(n: int = 16, size: int = 32) -> torch.Tensor:
    """``n`` copies of one image with structure (a gradient and a bright disc)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 5) ** 2).float()
    image = 0.2 + 0.4 * xx / size + 0.3 * disc
    return image.expand(n, 1, size, size).clone()


def _distinct_outputs(out: torch.Tensor) -> int:
    return len({tuple(o.flatten().tolist()) for o in out.round(decimals=5)})


# --------------------------------------------------- per-image parameters
@pytest.mark.parametrize(
    "options",
    [
        {"degrees": 20},
        {"translate": 0.2},
        {"scale": (0.7, 1.3)},
        {"brightness": 0.3},
        {"contrast": 0.3},
        {"gamma": (0.6, 1.6)},
        {"blur_sigma": (0.3, 2.0), "blur_p": 1.0},
        {"downscale": (0.2, 0.9), "downscale_p": 1.0},
        {"noise_std": (0.01, 0.1), "noise_p": 1.0},
        {"jpeg_quality": (5, 95), "jpeg_p": 1.0},
        {"erase_scale": (0.05, 0.2), "erase_p": 1.0},
    ],
    ids=lambda o: next(iter(o)),
)
def test_each_image_of_a_batch_gets_its_own_parameters(options):
    torch.manual_seed(0)
    out = BatchAugmentation(**options)(_same_image_batch(16))
    # torchvision's v2 transforms on a batch would give 1 distinct output
    assert _distinct_outputs(out) >= 12


def test_probability_applies_to_a_share_of_the_batch():
    torch.manual_seed(0)
    x = torch.zeros(400, 1, 17, 17)
    x[:, :, 8, 8] = 1.0  # a point: blurring lowers its peak
    out = BatchAugmentation(blur_sigma=(0.8, 1.5), blur_p=0.3)(x)
    blurred = (out[:, 0, 8, 8] < 0.9).float().mean()
    assert 0.22 < blurred < 0.38


def test_blur_preset_blurs_about_half_the_images_and_default_none():
    torch.manual_seed(0)
    x = torch.full((200, 1, 33, 33), 0.2)
    x[:, :, 16, 16] = 1.0
    # no geometry or intensity: compare the blur step alone
    blur_only = {**AUGMENT_PRESETS["blur"], "degrees": 0, "translate": 0}
    blur_only.update(scale=(1, 1), brightness=0, contrast=0)
    peaks = BatchAugmentation(**blur_only)(x)[:, 0, 16, 16]
    assert 0.35 < (peaks < 0.9).float().mean() < 0.65  # blur_p=0.5
    assert peaks.min() < 0.3  # sigma reaches well above 1 pixel
    assert "blur_sigma" not in AUGMENT_PRESETS["default"]


# ------------------------------------------------ shapes, dtypes, ranges
_options = st.fixed_dictionaries(
    {},
    optional={
        "degrees": st.floats(0, 45),
        "translate": st.floats(0, 0.3),
        "scale": st.tuples(st.floats(0.5, 1.0), st.floats(1.0, 1.5)),
        "interpolation": st.sampled_from(["bilinear", "nearest"]),
        "fill": st.sampled_from(["border", "reflection", "black"]),
        "brightness": st.floats(0, 0.9),
        "contrast": st.floats(0, 0.9),
        "gamma": st.tuples(st.floats(0.3, 1.0), st.floats(1.0, 3.0)),
        "blur_sigma": st.tuples(st.floats(0.1, 0.5), st.floats(0.5, 2.0)),
        "downscale": st.tuples(st.floats(0.1, 0.5), st.floats(0.5, 1.0)),
        "noise_std": st.tuples(st.floats(0, 0.05), st.floats(0.05, 0.3)),
        "jpeg_quality": st.tuples(st.integers(1, 50), st.integers(50, 100)),
        "erase_scale": st.tuples(st.floats(0.01, 0.1), st.floats(0.1, 0.4)),
        "flip": st.booleans(),
    },
)


@settings(max_examples=40, deadline=None)
@given(
    options=_options,
    batch=st.integers(1, 5),
    size=st.sampled_from([16, 24, 33]),
    seed=st.integers(0, 2**16),
)
def test_any_options_keep_shape_dtype_and_range(options, batch, size, seed):
    torch.manual_seed(seed)
    x = torch.rand(batch, 1, size, size)
    out = BatchAugmentation(**options)(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_single_image_keeps_its_shape():
    out = build_augmentation("default")(torch.rand(1, 20, 20))
    assert out.shape == (1, 20, 20)


# --------------------------------------------------- interpolation, fill
def test_border_fill_keeps_a_constant_image_constant_black_fill_does_not():
    torch.manual_seed(0)
    x = torch.full((8, 1, 32, 32), 0.6)
    geometry = {"degrees": 30, "translate": 0.2, "scale": (0.6, 0.7)}
    for fill in ("border", "reflection"):
        out = BatchAugmentation(fill=fill, **geometry)(x)
        torch.testing.assert_close(out, x)
    out = BatchAugmentation(fill="black", degrees=30, scale=(0.6, 0.7))(x)
    corners = out[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0).all()  # shrunk to 0.6-0.7: every corner is outside


def test_nearest_interpolation_only_copies_pixel_values():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 24, 24)).float() / 255
    values = set((x * 255).round().flatten().tolist())
    nearest = BatchAugmentation(degrees=20, scale=(0.8, 1.2), interpolation="nearest")
    bilinear = BatchAugmentation(degrees=20, scale=(0.8, 1.2))
    assert set((nearest(x) * 255).round(decimals=3).flatten().tolist()) <= values
    new = set((bilinear(x) * 255).round(decimals=3).flatten().tolist()) - values
    assert len(new) > 100  # bilinear mixes neighbours


def test_downscale_removes_fine_detail_and_keeps_flat_areas():
    checker = (torch.arange(32)[:, None] + torch.arange(32)) % 2
    x = torch.stack([checker.float(), torch.full((32, 32), 0.5)])[:, None]
    out = BatchAugmentation(downscale=(0.25, 0.25), downscale_p=1.0)(x)
    assert out[0].std() < 0.1 * x[0].std()  # the 1-px pattern is gone
    torch.testing.assert_close(out[1], x[1])


def test_noise_std_follows_the_option():
    torch.manual_seed(0)
    x = torch.full((64, 1, 32, 32), 0.5)
    out = BatchAugmentation(noise_std=(0.02, 0.04), noise_p=1.0)(x)
    std = (out - x).flatten(1).std(dim=1)
    assert 0.015 < std.min() and std.max() < 0.045


def test_probability_zero_leaves_images_alone():
    x = _same_image_batch(4)
    off = {"blur_p": 0, "downscale_p": 0, "noise_p": 0, "jpeg_p": 0}
    out = BatchAugmentation(
        blur_sigma=(1, 2),
        downscale=(0.3, 0.5),
        noise_std=(0.1, 0.2),
        jpeg_quality=(5, 10),
        **off,
    )(x)
    torch.testing.assert_close(out, x)


def test_erasing_fills_one_rectangle_per_image_with_occlusions_gray():
    torch.manual_seed(0)
    x = 0.4 * torch.rand(200, 1, 40, 40)  # below MEAN: no pixel is gray before
    out = BatchAugmentation(erase_scale=(0.04, 0.1), erase_p=0.5)(x)
    gray = out == MEAN
    erased = gray.flatten(1).any(dim=1)
    assert 0.38 < erased.float().mean() < 0.62
    assert (out[~erased] == x[~erased]).all()
    area = gray[erased].flatten(1).float().mean(dim=1)
    assert area.min() >= 0.03 and area.max() <= 0.11  # pixel rounding at the edges
    for mask in gray[erased][:, 0]:  # the gray pixels form one filled rectangle
        rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()
    # occlusion's fill: normalised, the erased pixels are 0
    assert normalize(out[erased][:1])[gray[erased][:1]].abs().max() < 1e-6


# ------------------------------------------------------------ seeding
def test_seeded_augmentation_is_repeatable():
    x = torch.rand(8, 1, 32, 32)
    augment = build_augmentation({**AUGMENT_PRESETS["blur"], "noise_std": (0, 0.1)})
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        outs.append(augment(x))
    torch.testing.assert_close(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])


def test_augmented_fit_is_repeatable_and_differs_from_unaugmented(fast):
    from cxrkit.datasets import make_synthetic_cxr

    X, y, _ = make_synthetic_cxr(48, image_size=32, random_state=1)
    params = dict(model="simple_cnn", augment="blur", **fast)
    a = PneumoniaClassifier(**params).fit(X, y).predict_proba(X)
    b = PneumoniaClassifier(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    c = PneumoniaClassifier(**{**params, "augment": None}).fit(X, y).predict_proba(X)
    assert not np.allclose(a, c)


# --------------------------------------------------- presets and options
@pytest.mark.parametrize("preset", sorted(AUGMENT_PRESETS))
def test_presets_build_and_change_images(preset):
    augment = build_augmentation(preset)
    assert augment.options["interpolation"] == "bilinear"
    assert augment.options["fill"] == "border"
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    assert not torch.equal(augment(x), x)


def test_true_is_default_and_off_is_none():
    assert build_augmentation(True).options == build_augmentation("default").options
    for off in (None, False, "none", {}):
        assert build_augmentation(off) is None
    assert build_augmentation(None, flip=True).options["flip"] is True


def test_a_dict_is_complete_on_its_own():
    options = build_augmentation({"degrees": 5}).options
    assert options["degrees"] == 5 and options["brightness"] == 0
    assert options["blur_sigma"] is None


def test_options_survive_json_lists():
    # model files keep parameters as JSON: pairs come back as lists
    a = build_augmentation({"scale": [0.9, 1.1], "jpeg_quality": [40, 90]})
    assert a.options["scale"] == (0.9, 1.1)


@pytest.mark.parametrize(
    ("augment", "match"),
    [
        ("extreme", "augment must be one of"),
        ({"rotation": 10, "degrees": 5}, r"unknown option\(s\) \['rotation'\]"),
        ({"fill": "white"}, "fill must be one of"),
        ({"interpolation": "bicubic"}, "interpolation must be one of"),
        ({"degrees": -1}, "degrees must be a number"),
        ({"scale": 0.1}, r"scale must be a \(low, high\) pair"),
        ({"scale": (1.2, 0.8)}, "low <= high"),
        ({"blur_p": 1.5}, "blur_p"),
        ({"downscale": (0.5, 2.0)}, "downscale"),
        ({"jpeg_quality": (0, 50)}, "jpeg_quality"),
        ({"erase_scale": (0.1, 1.5)}, "erase_scale"),
        ({"flip": "yes"}, "flip must be True or False"),
        (3, "augment must be one of"),
    ],
)
def test_bad_options_raise_clear_errors(augment, match):
    with pytest.raises(ValueError, match=match):
        build_augmentation(augment)


def test_classifier_validates_augment_before_decoding(fast):
    clf = PneumoniaClassifier(augment={"rotate": 5}, **fast)
    with pytest.raises(ValueError, match="rotate"):
        clf.fit(np.zeros((4, 32, 32), np.uint8), [0, 1, 0, 1])


# ------------------------------------------------- the data path, eval
def test_image_batches_gather_whole_batches():
    images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    ds = ImageBatches(images, np.array([0, 1, 0, 1, 1]))
    x, y = ds.__getitems__([3, 1])
    assert x.dtype == torch.uint8 and x.shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(x[:, 0].numpy(), images[[3, 1]])
    assert y.tolist() == [1, 1] and len(ds) == 5
    assert torch.equal(ds[3][0], x[0])


def test_image_batches_with_transform_give_normalised_floats():
    ds = ImageBatches(np.full((3, 8, 8), 255, np.uint8), transform=lambda x: x * 0)
    x, _ = ds.__getitems__([0, 1])
    torch.testing.assert_close(x, normalize(torch.zeros(2, 1, 8, 8)))


def test_image_dataset_numbers_are_unchanged():
    images = np.random.default_rng(0).integers(0, 256, (3, 6, 6), dtype=np.uint8)
    x, _ = ImageDataset(images)[1]
    expected = (torch.from_numpy(images[1]).float()[None] / 255.0 - 0.449) / 0.226
    torch.testing.assert_close(x, expected)


def _linear_net(augment) -> ImageClassifierNet:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    net = ImageClassifierNet(
        module,
        criterion=torch.nn.CrossEntropyLoss,
        augmentation=augment,
        max_epochs=1,
        train_split=None,
    )
    return net.initialize()


def test_net_augments_in_training_mode_only():
    net = _linear_net(
        BatchAugmentation(brightness=0.5, noise_std=(0.1, 0.1), noise_p=1)
    )
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    net.module_.eval()
    torch.testing.assert_close(net.model_input(x), normalize(x))
    net.module_.train()
    assert not torch.allclose(net.model_input(x), normalize(x))
    floats = torch.randn(4, 1, 8, 8)
    assert torch.equal(net.model_input(floats), floats)  # already model inputs


def test_predict_never_augments():
    augment = BatchAugmentation(noise_std=(0.2, 0.2), noise_p=1.0)
    net = _linear_net(augment)
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    ds = ImageBatches(images, np.array([0, 1] * 3))
    expected = torch.softmax(net.module_(normalize(ds.images)), dim=1)
    np.testing.assert_allclose(net.predict_proba(ds), expected.detach(), rtol=1e-6)
    net.fit(ds, y=None)  # training augments, and leaves prediction alone
    expected = torch.softmax(net.module_(normalize(ds.images)), dim=1)
    np.testing.assert_allclose(net.predict_proba(ds), expected.detach(), rtol=1e-6)


def test_aspect_stretches_the_width_only():
    square = torch.zeros(64, 1, 64, 64)
    square[:, :, 16:48, 16:48] = 1.0
    torch.manual_seed(0)
    out = BatchAugmentation(aspect=(0.7, 1.4), fill="black")(square)
    width = (out[:, 0, 32, :] > 0.5).sum(1).float()
    height = (out[:, 0, :, 32] > 0.5).sum(1).float()
    assert (height == 32).all()
    assert width.min() <= 32 * 0.8 and width.max() >= 32 * 1.25
    assert ((width >= 32 * 0.7 - 1) & (width <= 32 * 1.4 + 1)).all()


def test_aspect_keeps_the_stretch_in_aspect_and_the_zoom_in_scale():
    torch.manual_seed(0)
    affine = BatchAugmentation(scale=(0.9, 1.1), aspect=(0.8, 1.25)).steps[0]
    factors = affine.forward_parameters(torch.Size([4000, 1, 32, 32]))["scale"]
    width, height = factors[:, 0], factors[:, 1]
    ratio = width / height
    assert 0.8 - 1e-6 <= ratio.min() < 0.82 and 1.23 < ratio.max() <= 1.25 + 1e-6
    assert 0.9 - 1e-6 <= height.min() and height.max() <= 1.1 + 1e-6


def test_zoom_without_stretch_keeps_a_square_square():
    square = torch.zeros(32, 1, 64, 64)
    square[:, :, 24:40, 24:40] = 1.0
    torch.manual_seed(0)
    out = BatchAugmentation(scale=(0.5, 2.0), aspect=(1.0, 1.001), fill="black")(square)
    width, height = out[:, 0, 32, :].sum(1), out[:, 0, :, 32].sum(1)  # sub-pixel
    assert width.max() - width.min() > 8  # zoomed by different factors
    assert ((width - height).abs() <= 0.5).all()  # but the same along both axes
