"""Training augmentation on whole batches.

The data flow of [`PneumoniaClassifier`][cxrkit.PneumoniaClassifier]: cached ``uint8``
images ``(n, S, S)`` -> ``uint8`` batches
([`ImageBatches`][cxrkit.images.ImageBatches]) -> the training device -> float
in [0, 1] -> augmentation (training only) -> normalisation
([`normalize`][cxrkit.images.normalize]) -> model.
[`BatchAugmentation`][cxrkit.training.BatchAugmentation] augments a float batch
where it lies (CPU or GPU), drawing its random parameters **per image**
(torchvision's v2 transforms draw one set per call, so a batch would be
rotated as a whole).

Library or own code: the geometric, intensity, blur and flip steps are
kornia's (per-image parameters, batched, on any device): faster than a
per-image torchvision pipeline and close to a hand-written
``affine_grid``/``grid_sample`` version (the docs' *Benchmarks* page
*Training recipe*, "Data pipeline", has the timings), so the library is
used. kornia has no downscale-then-upscale step, its Gaussian noise has one
fixed standard deviation, and its differentiable JPEG is an approximation
that is slower than the real codec: those three steps are written here (a
few lines each, on torch and Pillow).

Augmentation is applied while training only, never in ``predict``. Horizontal
flips are off unless asked for: the heart and the lungs are not symmetric, and
a flipped radiograph is not a plausible patient.
"""

from __future__ import annotations

import inspect
import io
import math
from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cxrkit.images._normalize import MEAN

__all__ = ["AUGMENT_PRESETS", "BatchAugmentation", "build_augmentation"]


#: Augmentation presets: options of
#: [`BatchAugmentation`][cxrkit.training.BatchAugmentation] (options not
#: named are off; ``interpolation`` and ``fill`` default to ``"bilinear"`` and
#: ``"border"``). ``"blur"`` is ``"default"`` plus a random Gaussian blur on
#: half the images: radiographs from other machines and resizing pipelines
#: differ in sharpness.
AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "light": {
        "degrees": 5,
        "translate": 0.05,
        "scale": (0.95, 1.05),
        "brightness": 0.1,
        "contrast": 0.1,
    },
    "default": {
        "degrees": 10,
        "translate": 0.1,
        "scale": (0.9, 1.1),
        "brightness": 0.2,
        "contrast": 0.2,
    },
    "strong": {
        "degrees": 15,
        "translate": 0.15,
        "scale": (0.8, 1.2),
        "brightness": 0.3,
        "contrast": 0.3,
    },
    "blur": {
        "degrees": 10,
        "translate": 0.1,
        "scale": (0.9, 1.1),
        "brightness": 0.2,
        "contrast": 0.2,
        "blur_sigma": (0.1, 1.5),
        "blur_p": 0.5,
    },
}

_INTERPOLATIONS = ("bilinear", "nearest")
#: ``fill`` option -> ``grid_sample`` padding mode. "black" pads with 0 in
#: [0, 1] units, i.e. black, before normalisation.
_FILLS = {"border": "border", "reflection": "reflection", "black": "zeros"}


def _pair(name: str, value: Any, low: float, high: float) -> tuple[float, float]:
    """A validated ``(low, high)`` range option."""
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, (int, float, np.integer, np.floating)) for v in value)
    )
    if not ok or not low <= value[0] <= value[1] <= high:
        raise ValueError(
            f"augmentation option {name} must be a (low, high) pair with "
            f"{low} <= low <= high <= {high}, got {value!r}"
        )
    return float(value[0]), float(value[1])


def _number(name: str, value: Any, low: float, high: float) -> float:
    """A validated number option in [low, high]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not low <= value <= high
    ):
        raise ValueError(
            f"augmentation option {name} must be a number in [{low}, {high}], "
            f"got {value!r}"
        )
    return float(value)


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(
            f"augmentation option {name} must be one of {list(choices)}, got {value!r}"
        )
    return value


class BatchAugmentation:
    """Random augmentation of a batch, with parameters drawn per image.

    Takes float images in [0, 1] of shape ``(B, C, H, W)`` (or one image
    ``(C, H, W)``) on any device and returns the same shape, in [0, 1]. The
    steps run in the order of the parameters below (geometry, resolution,
    sharpness, intensity, noise, compression, flip); each draws its own
    random values for every image from torch's random number generators, so
    seeding torch (``PneumoniaClassifier`` does, with ``random_state``) makes
    it repeatable. Every option defaults to "off". (A plain callable, not an
    ``nn.Module``: it has no weights, and skorch would take a module
    attribute of its net for a part of the model.)

    Parameters
    ----------
    degrees : float, default=0
        Rotation by up to +/- ``degrees``.
    translate : float, default=0
        Shift by up to +/- this fraction of the width and of the height.
    scale : (low, high), default=(1, 1)
        Zoom factor range.
    aspect : (low, high), default=(1, 1)
        Extra horizontal stretch range: the width is scaled by a zoom from
        ``scale`` times a factor from ``aspect``, the height by the zoom
        alone. Originals of other aspect ratios, squashed to a square, look
        stretched or compressed sideways (Kermany PNEUMONIA originals are
        wider, aspect 1.48, than NORMAL ones, 1.22: a shortcut that
        ``(0.8, 1.25)`` covers).
    interpolation : {"bilinear", "nearest"}, default="bilinear"
        Resampling of the rotation, shift and zoom.
    fill : {"border", "reflection", "black"}, default="border"
        What fills the area moved in from outside the image: the edge pixels
        repeated, the image mirrored, or black (the old default; black
        corners appear that no radiograph has).
    brightness, contrast : float, default=0
        Multiply the brightness, and the contrast around the image's mean,
        by a factor in ``[1 - value, 1 + value]`` (torchvision's
        ``ColorJitter`` formulas).
    gamma : (low, high), default=(1, 1)
        Gamma exponent range: ``image ** gamma``.
    blur_sigma : (low, high) or None, default=None
        Gaussian blur with a standard deviation in this range, in pixels.
    blur_p : float, default=0.5
        Share of the images blurred (when ``blur_sigma`` is set).
    downscale : (low, high) or None, default=None
        Shrink by a factor in this range (antialiased) and enlarge back
        (bilinear): what an original of lower resolution looks like after
        resizing. ``(0.5, 1.0)`` simulates originals of half to full size.
    downscale_p : float, default=0.5
        Share of the images downscaled (when ``downscale`` is set).
    noise_std : (low, high) or None, default=None
        Additive Gaussian noise with a standard deviation in this range, in
        units of the [0, 1] intensity scale (e.g. ``(0.0, 0.03)``).
    noise_p : float, default=0.5
        Share of the images given noise (when ``noise_std`` is set).
    jpeg_quality : (low, high) or None, default=None
        Re-compress as JPEG with a quality in this range (integers 1-100),
        with the real codec (Pillow's libjpeg); this step runs image by
        image on the CPU.
    jpeg_p : float, default=0.5
        Share of the images re-compressed (when ``jpeg_quality`` is set).
    erase_scale : (low, high) or None, default=None
        Random erasing (Zhong et al., 2020; kornia's ``RandomErasing``): a
        rectangle covering this fraction of the image's area (less where
        a large one is clipped at the image's edge), of aspect ratio
        0.3-3.3, is set to the mean gray level (``MEAN``, which
        normalises to 0: the fill of
        [`occlusion`][cxrkit.explain.occlusion]). A model trained with it
        has seen such patches, so occlusion maps do not measure its
        reaction to an unfamiliar gray square. Last step before the flip.
    erase_p : float, default=0.5
        Share of the images given a rectangle (when ``erase_scale`` is set).
    flip : bool, default=False
        Flip half the images left-right. Off by default: the left and right
        lungs are not interchangeable.

    Attributes
    ----------
    options : dict
        The validated options, complete (what the augmentation does).

    Examples
    --------
    >>> augment = BatchAugmentation(degrees=10, translate=0.1, brightness=0.2)
    >>> _ = torch.manual_seed(0)
    >>> out = augment(torch.rand(8, 1, 32, 32))
    >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
    (torch.Size([8, 1, 32, 32]), True, True)
    """

    def __init__(
        self,
        *,
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: tuple[float, float] = (1.0, 1.0),
        aspect: tuple[float, float] = (1.0, 1.0),
        interpolation: str = "bilinear",
        fill: str = "border",
        brightness: float = 0.0,
        contrast: float = 0.0,
        gamma: tuple[float, float] = (1.0, 1.0),
        blur_sigma: tuple[float, float] | None = None,
        blur_p: float = 0.5,
        downscale: tuple[float, float] | None = None,
        downscale_p: float = 0.5,
        noise_std: tuple[float, float] | None = None,
        noise_p: float = 0.5,
        jpeg_quality: tuple[int, int] | None = None,
        jpeg_p: float = 0.5,
        erase_scale: tuple[float, float] | None = None,
        erase_p: float = 0.5,
        flip: bool = False,
    ) -> None:
        if not isinstance(flip, (bool, np.bool_)):
            raise ValueError(
                f"augmentation option flip must be True or False, got {flip!r}"
            )
        self.options = {
            "degrees": _number("degrees", degrees, 0, 180),
            "translate": _number("translate", translate, 0, 0.5),
            "scale": _pair("scale", scale, 1e-3, 100),
            "aspect": _pair("aspect", aspect, 1e-2, 100),
            "interpolation": _choice("interpolation", interpolation, _INTERPOLATIONS),
            "fill": _choice("fill", fill, tuple(_FILLS)),
            "brightness": _number("brightness", brightness, 0, 1),
            "contrast": _number("contrast", contrast, 0, 1),
            "gamma": _pair("gamma", gamma, 1e-3, 100),
            "blur_sigma": None
            if blur_sigma is None
            else _pair("blur_sigma", blur_sigma, 1e-3, 10),
            "blur_p": _number("blur_p", blur_p, 0, 1),
            "downscale": None
            if downscale is None
            else _pair("downscale", downscale, 0.05, 1),
            "downscale_p": _number("downscale_p", downscale_p, 0, 1),
            "noise_std": None
            if noise_std is None
            else _pair("noise_std", noise_std, 0, 1),
            "noise_p": _number("noise_p", noise_p, 0, 1),
            "jpeg_quality": None
            if jpeg_quality is None
            else _pair("jpeg_quality", jpeg_quality, 1, 100),
            "jpeg_p": _number("jpeg_p", jpeg_p, 0, 1),
            "erase_scale": None
            if erase_scale is None
            else _pair("erase_scale", erase_scale, 1e-4, 1),
            "erase_p": _number("erase_p", erase_p, 0, 1),
            "flip": bool(flip),
        }
        self.steps = _steps(self.options)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() not in (3, 4) or not images.is_floating_point():
            raise ValueError(
                "BatchAugmentation takes float images in [0, 1] of shape (B, C, H, W) "
                f"or (C, H, W); got dtype {images.dtype}, shape {tuple(images.shape)}"
            )
        x = images.unsqueeze(0) if images.dim() == 3 else images
        for step in self.steps:
            x = step(x)
        x = x.clamp(0.0, 1.0)
        return x[0] if images.dim() == 3 else x

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({options})"


def _steps(o: dict[str, Any]) -> list[nn.Module]:
    """The augmentation steps for validated options ``o``, in order."""
    steps: list[nn.Module] = []
    zoom = o["scale"] if o["scale"] != (1.0, 1.0) else None
    stretch = o["aspect"] != (1.0, 1.0)
    if o["degrees"] or o["translate"] or zoom is not None or stretch:
        steps.append(
            _RandomAffine(
                degrees=o["degrees"],
                translate=(o["translate"], o["translate"]) if o["translate"] else None,
                scale=zoom,
                aspect=o["aspect"],
                resample=o["interpolation"].upper(),
                padding_mode=_FILLS[o["fill"]].upper(),
                align_corners=False,
                p=1.0,
            )
        )
    if o["downscale"] is not None and o["downscale"] != (1.0, 1.0):
        steps.append(_Downscale(o["downscale"], o["downscale_p"]))
    if o["blur_sigma"] is not None:
        high = o["blur_sigma"][1]
        steps.append(
            K.RandomGaussianBlur(
                kernel_size=2 * math.ceil(3 * high) + 1,
                sigma=o["blur_sigma"],
                border_type="reflect",
                p=o["blur_p"],
            )
        )
    # Brightness, then contrast: kornia's ColorJitter uses torchvision's
    # formulas (multiply; blend with the mean). One step each keeps the order
    # fixed (a single ColorJitter shuffles it per call).
    if o["brightness"]:
        steps.append(K.ColorJitter(brightness=o["brightness"], p=1.0))
    if o["contrast"]:
        steps.append(K.ColorJitter(contrast=o["contrast"], p=1.0))
    if o["gamma"] != (1.0, 1.0):
        steps.append(K.RandomGamma(gamma=o["gamma"], p=1.0))
    if o["noise_std"] is not None and o["noise_std"][1] > 0:
        steps.append(_GaussianNoise(o["noise_std"], o["noise_p"]))
    if o["jpeg_quality"] is not None:
        steps.append(_JPEG(o["jpeg_quality"], o["jpeg_p"]))
    if o["erase_scale"] is not None:
        steps.append(
            K.RandomErasing(scale=o["erase_scale"], value=MEAN, p=o["erase_p"])
        )
    if o["flip"]:
        steps.append(K.RandomHorizontalFlip(p=0.5))
    return steps


class _RandomAffine(K.RandomAffine):
    """kornia's ``RandomAffine`` with one zoom per image, and a stretch of the width.

    kornia draws one zoom factor per image for both axes from a two-value
    ``scale``; from a four-value one it draws the width and height factors
    independently, which would not keep their ratio in ``aspect``. Here the
    zoom is kornia's (two values), and the width factor is then multiplied
    by a factor drawn from ``aspect`` (uniform, from torch's global
    generator on the CPU like kornia's own draws; one for the whole batch
    when ``same_on_batch``).
    """

    def __init__(self, *, aspect: tuple[float, float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aspect = aspect

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, Any]:
        params = super().generate_parameters(batch_shape)
        low, high = self.aspect
        if (low, high) == (1.0, 1.0):
            return params
        n = batch_shape[0]
        stretch = low + (high - low) * torch.rand(1 if self.same_on_batch else n)
        scale = params["scale"].clone()  # (n, 2): width and height factors
        scale[:, 0] *= stretch.expand(n).to(scale)
        params["scale"] = scale
        return params


def same_on_batch(augmentation: BatchAugmentation) -> BatchAugmentation:
    """A copy of ``augmentation`` that gives every image of a batch the same draw.

    Each call draws one set of random values (kornia's ``same_on_batch``)
    for the whole batch, as many of them, from torch's global generator,
    whatever the batch size: seeded before each call, an image is then
    transformed the same way alone or among others (test-time augmentation,
    ``cxrkit.training._tta.TestTimeViews`` draws its views so).

    Parameters
    ----------
    augmentation : BatchAugmentation
        Of kornia steps only (geometry, blur, brightness, contrast, gamma,
        erasing, flip).

    Returns
    -------
    BatchAugmentation

    Raises
    ------
    ValueError
        A step of cxrkit's own (downscale, noise, JPEG) draws per image.

    Examples
    --------
    >>> augment = same_on_batch(build_augmentation("light"))
    >>> _ = torch.manual_seed(0)
    >>> out = augment(torch.rand(1, 1, 32, 32).expand(4, 1, 32, 32))
    >>> bool((out == out[:1]).all())
    True
    """
    same = BatchAugmentation(**augmentation.options)
    for step in same.steps:
        if not isinstance(step, K.AugmentationBase2D):
            raise ValueError(
                f"{type(step).__name__} draws per image; same_on_batch takes "
                "kornia's steps only"
            )
        step.same_on_batch = True
    return same


def _draw(
    n: int, low: float, high: float, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image values uniform in [low, high], and which images get the step.

    Drawn on the CPU from torch's global generator (like kornia's parameters),
    so the same seed gives the same augmentation on any device.
    """
    values = low + (high - low) * torch.rand(n)
    return values, torch.rand(n) < p


class _Downscale(nn.Module):
    """Shrink (antialiased) and enlarge back (bilinear), by a factor per image.

    Images shrunk to the same size are resampled together; a batch holds at
    most a few dozen distinct sizes.
    """

    def __init__(self, factor: tuple[float, float], p: float) -> None:
        super().__init__()
        self.factor, self.p = factor, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factors, on = _draw(len(x), *self.factor, self.p)
        height, width = x.shape[-2:]
        sizes = (factors * height).round().clamp(min=2).long()
        sizes[~on] = height
        out = x.clone()
        for size in sizes.unique().tolist():
            if size >= height:
                continue
            chosen = (sizes == size).nonzero().flatten().to(x.device)
            small = F.interpolate(
                x[chosen],
                size=(size, max(2, round(size * width / height))),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            out[chosen] = F.interpolate(
                small, size=(height, width), mode="bilinear", align_corners=False
            )
        return out


class _GaussianNoise(nn.Module):
    """Additive Gaussian noise with a standard deviation drawn per image.

    (kornia's ``RandomGaussianNoise`` has one fixed standard deviation.)
    """

    def __init__(self, std: tuple[float, float], p: float) -> None:
        super().__init__()
        self.std, self.p = std, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std, on = _draw(len(x), *self.std, self.p)
        std = (std * on).to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
        # The noise itself is drawn where the images are (the device's generator).
        return x + torch.randn_like(x) * std


class _JPEG(nn.Module):
    """Re-compression with the real JPEG codec, quality drawn per image.

    Runs image by image on the CPU (Pillow): kornia's differentiable JPEG
    only approximates the codec's rounding, takes RGB only, and took about
    10x longer on a 32 x 128 x 128 batch.
    """

    def __init__(self, quality: tuple[float, float], p: float) -> None:
        super().__init__()
        self.quality, self.p = quality, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = int(self.quality[0]), int(self.quality[1])
        quality = torch.randint(low, high + 1, (len(x),))
        on = torch.rand(len(x)) < self.p
        chosen = on.nonzero().flatten().tolist()
        if not chosen:
            return x
        out = x.clone()
        pixels = x[chosen].mul(255).round_().clamp_(0, 255).to("cpu", torch.uint8)
        for i, image in zip(chosen, pixels):
            for c, channel in enumerate(image):  # grayscale JPEG per channel
                buffer = io.BytesIO()
                Image.fromarray(channel.numpy()).save(
                    buffer, format="JPEG", quality=int(quality[i])
                )
                coded = torch.from_numpy(np.array(Image.open(buffer)))
                out[i, c] = coded.to(x.device, x.dtype).div_(255.0)
        return out


def build_augmentation(
    augment: str | bool | dict | None, flip: bool = False
) -> BatchAugmentation | None:
    """The training-time augmentation for a preset name or a dict of options.

    Parameters
    ----------
    augment : {"light", "default", "strong", "blur"}, dict, True, False or None
        A name of ``AUGMENT_PRESETS``; ``True`` means ``"default"``;
        ``False``/``None``/``"none"`` none. A dict holds options of
        ``BatchAugmentation``, complete on its own: options it does not name
        are off. To change one option of a preset, write
        ``{**AUGMENT_PRESETS["default"], "fill": "black"}``.
    flip : bool
        Add random horizontal flips (off by default: left and right lungs
        are not interchangeable).

    Returns
    -------
    BatchAugmentation or None
        None when nothing would be augmented.

    Raises
    ------
    ValueError
        An unknown preset name, an unknown option (the error names it), or an
        option out of range.

    Examples
    --------
    >>> build_augmentation(None) is None
    True
    >>> augment = build_augmentation("light")
    >>> augment(torch.zeros(4, 1, 32, 32)).shape
    torch.Size([4, 1, 32, 32])
    >>> build_augmentation({"degrees": 5, "fill": "black"}).options["fill"]
    'black'
    """
    if augment is True:
        augment = "default"
    if (
        augment is None
        or augment is False
        or (isinstance(augment, str) and augment == "none")
    ):
        options: dict[str, Any] = {}
    elif isinstance(augment, str) and augment in AUGMENT_PRESETS:
        options = dict(AUGMENT_PRESETS[augment])
    elif isinstance(augment, dict):
        known = _option_names()
        unknown = sorted(str(k) for k in augment if k not in known)
        if unknown:
            raise ValueError(
                f"augment has unknown option(s) {unknown}; known options: "
                f"{sorted(known)}"
            )
        options = dict(augment)
    else:
        raise ValueError(
            f"augment must be one of {sorted(AUGMENT_PRESETS)}, a dict of options "
            f"(see cxrkit.training.BatchAugmentation), True, False or None; got "
            f"{augment!r}"
        )
    if flip:
        options["flip"] = True
    augmentation = BatchAugmentation(**options)
    return augmentation if len(augmentation.steps) else None


def _option_names() -> set[str]:
    return set(inspect.signature(BatchAugmentation.__init__).parameters) - {"self"}
