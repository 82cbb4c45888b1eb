"""Decoded ``uint8`` images as torch datasets: one image, or a batch, at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cxrkit.images._normalize import normalize

__all__ = ["ImageBatches", "ImageDataset"]


class ImageDataset(Dataset):
    """Decoded ``uint8`` images (and labels) as normalised float tensors.

    One image at a time, for code that feeds a model directly (explanations,
    frozen-backbone features). Training and prediction in
    [`PneumoniaClassifier`][cxrkit.PneumoniaClassifier] use
    [`ImageBatches`][cxrkit.images.ImageBatches] instead,
    which gives the same model inputs a whole batch at a time.

    Parameters
    ----------
    images : ndarray of shape (n, H, W), dtype uint8
    y : ndarray of shape (n,) of int, optional
        Encoded labels; a dummy 0 is returned when None (prediction).
    transform : callable, optional
        Applied to each ``(1, H, W)`` float image in [0, 1] before
        normalisation (e.g. a
        [`BatchAugmentation`][cxrkit.training.BatchAugmentation]).

    Examples
    --------
    >>> ds = ImageDataset(np.zeros((2, 8, 8), np.uint8))
    >>> x, target = ds[0]
    >>> x.shape, x.dtype, int(target)
    (torch.Size([1, 8, 8]), torch.float32, 0)
    """

    def __init__(
        self,
        images: np.ndarray,
        y: np.ndarray | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.y = None if y is None else torch.as_tensor(np.asarray(y), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].unsqueeze(0)
        if self.transform is not None:
            x = self.transform(x.float().div_(255.0)).clamp_(0.0, 1.0)
        target = self.y[i] if self.y is not None else torch.tensor(0)
        return normalize(x), target


class ImageBatches(Dataset):
    """Decoded ``uint8`` images and labels, served a whole batch at a time.

    Indexing with a list of indices (``__getitems__``, which torch's
    ``DataLoader`` calls) gathers the batch with one tensor operation, where
    the images lie: on the GPU when ``device`` is one, so that the decoded
    cache crosses to the device once per ``fit`` instead of once per epoch.
    The batches stay ``uint8`` (``(B, 1, H, W)``);
    ``cxrkit.models._net.ImageClassifierNet`` turns them into model inputs.
    Use
    it with a ``DataLoader`` whose ``collate_fn`` is
    ``cxrkit.models._net.collate_batches``.

    Parameters
    ----------
    images : ndarray of shape (n, H, W), dtype uint8
    y : ndarray of shape (n,) of int, optional
        Encoded labels; zeros when None (prediction).
    device : str or torch.device, default="cpu"
        Where the images are kept.
    pin_memory : bool, default=False
        Return batches of images kept on the CPU in page-locked memory, so
        that their copy to a GPU can run asynchronously.
    transform : callable, optional
        Applied to each float batch in [0, 1] (e.g. a
        [`BatchAugmentation`][cxrkit.training.BatchAugmentation], for test-time
        augmentation); the batches
        are then normalised float model inputs instead of ``uint8``.

    Examples
    --------
    >>> ds = ImageBatches(np.zeros((5, 8, 8), np.uint8), np.arange(5))
    >>> x, y = ds.__getitems__([4, 0])
    >>> x.shape, x.dtype, y.tolist()
    (torch.Size([2, 1, 8, 8]), torch.uint8, [4, 0])
    """

    def __init__(
        self,
        images: np.ndarray,
        y: np.ndarray | None = None,
        device: str | torch.device = "cpu",
        pin_memory: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
        self.images = images.unsqueeze(1).to(device)
        labels = np.zeros(len(images), np.int64) if y is None else np.asarray(y)
        self.y = torch.as_tensor(labels, dtype=torch.long).to(device)
        self.pin_memory = pin_memory and self.images.device.type == "cpu"
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        x, y = self.images[index], self.y[index]
        if self.transform is not None:
            x = normalize(self.transform(x.float().div_(255.0)))
        if self.pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y
