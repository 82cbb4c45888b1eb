"""Turn ``X`` (paths or arrays) into one ``(n, size, size)`` ``uint8`` batch.

Decoding is the hidden cost of training on folders of radiographs: a
full-size JPEG takes milliseconds to decode and resize, as much as a training
step of a small CNN. ``GridSearchCV`` refits on the same paths again and again,
so decoded, resized images are kept in a process-wide cache keyed on the
file's path, size and modification time and the target size. A changed file is
decoded again; the cache is bounded in bytes and drops the least recently used
images first.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from joblib import Parallel, delayed

from cxrkit.images._inputs import (
    check_image_array,
    is_path_like_sequence,
    reject_single_path,
)
from cxrkit.images._pixels import resize_square, to_grayscale_uint8
from cxrkit.images._reading import ImageReadError, list_failures, read_image

__all__ = [
    "DecodedImages",
    "ImageCache",
    "clear_image_cache",
    "decode_images",
    "image_cache",
    "load_images",
]

_DEFAULT_MAX_BYTES = int(os.environ.get("CXRKIT_CACHE_BYTES", 2 * 1024**3))


class ImageCache:
    """A thread-safe, byte-bounded LRU cache of decoded, resized images.

    Parameters
    ----------
    max_bytes : int
        Upper bound on the bytes of image data held (2 GiB by default, or the
        ``CXRKIT_CACHE_BYTES`` environment variable). 0 disables caching.

    Examples
    --------
    >>> cache = ImageCache(max_bytes=1000)
    >>> cache.put(("a", 1), np.zeros((10, 10), np.uint8))
    >>> cache.get(("a", 1)).shape
    (10, 10)
    >>> cache.put(("b", 1), np.zeros((40, 40), np.uint8))  # too big: not kept
    >>> len(cache)
    1
    """

    def __init__(self, max_bytes: int = _DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes of image data held now."""
        return self._bytes

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            image = self._items.get(key)
            if image is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return image

    def put(self, key: tuple, image: np.ndarray) -> None:
        if image.nbytes > self.max_bytes:
            return
        image.setflags(write=False)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = image
            self._bytes += image.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self.hits = self.misses = 0


#: The process-wide cache used by [`load_images`][cxrkit.images.load_images].
image_cache = ImageCache()


def clear_image_cache() -> None:
    """Empty the process-wide image cache (for example to free memory)."""
    image_cache.clear()


def _cache_key(path: str, size: int) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, size)


def _load_path(path: str, size: int) -> np.ndarray:
    try:
        key = _cache_key(path, size)
    except OSError:
        return read_image(path, size)  # raises a FileNotFoundError that names it
    image = image_cache.get(key)
    if image is None:
        image = read_image(path, size)
        image_cache.put(key, image)
    return image


def _image_at(X: np.ndarray, i: int) -> np.ndarray:
    try:
        return to_grayscale_uint8(X[i])
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"X[{i}]: {exc}") from None


@dataclass(frozen=True, eq=False)
class DecodedImages:
    """``X`` decoded once: the pixels, where they came from, and which rows were kept.

    What [`decode_images`][cxrkit.decode_images] returns, and what the
    code below the public entry points receives instead of ``X``: whether
    ``X`` held paths or an array is decided once, when it is decoded.

    Parameters
    ----------
    pixels : ndarray of shape (n_kept, size, size), dtype uint8
        The images read, resized to ``size`` (and preprocessed when
        ``preprocess`` names steps).
    paths : tuple of str, or None
        The path of each image in ``pixels``; None when ``X`` was an array.
    kept : ndarray of shape (n_kept,), dtype int
        Row of ``X`` each image comes from (all rows unless unreadable files
        were skipped, ``on_error="skip"``).
    n_input : int
        Rows in ``X``.
    input_shape : tuple of int, or None
        ``(H, W)`` of the images of an array ``X``; None for paths.
    preprocess : tuple of str, default=()
        The ``cxrkit.images.PREPROCESSING`` steps already applied to ``pixels``.
    skipped : tuple of str, default=()
        The paths of ``X`` left out as unreadable (``on_error="skip"``).

    Examples
    --------
    >>> decoded = decode_images(np.zeros((3, 50, 40)), size=32)
    >>> len(decoded), decoded.paths, decoded.input_shape
    (3, None, (50, 40))
    >>> decoded.subset([2, 0]).kept.tolist()
    [2, 0]
    """

    pixels: np.ndarray
    paths: tuple[str, ...] | None
    kept: np.ndarray
    n_input: int
    input_shape: tuple[int, int] | None
    preprocess: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def size(self) -> int:
        """Side of the square images in ``pixels``."""
        return int(self.pixels.shape[1])

    @property
    def kept_mask(self) -> np.ndarray:
        """Boolean mask of shape ``(n_input,)``: which rows of ``X`` were read."""
        mask = np.zeros(self.n_input, dtype=bool)
        mask[self.kept] = True
        return mask

    def subset(self, rows: Sequence[int] | np.ndarray) -> DecodedImages:
        """The images at positions ``rows`` of ``pixels`` (not of ``X``).

        ``kept`` of the result still says which row of the original ``X``
        each image comes from.
        """
        rows = np.asarray(rows, dtype=int).reshape(-1)
        paths = None if self.paths is None else tuple(self.paths[i] for i in rows)
        return replace(
            self, pixels=self.pixels[rows], paths=paths, kept=self.kept[rows]
        )


def load_images(
    X: Sequence[str | os.PathLike] | np.ndarray,
    size: int,
    *,
    on_error: str = "raise",
    n_jobs: int | None = None,
    verbose: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize ``X`` into a ``(n, size, size)`` ``uint8`` batch.

    The images and kept rows of ``decode_images`` (internal),
    as a tuple.

    Parameters
    ----------
    X : sequence of paths, or ndarray of shape (n, H, W) or (n, H, W, C)
        Paths are decoded (in threads) and cached; arrays are checked
        (``cxrkit.images._inputs.check_image_array``) and converted with
        ``cxrkit.images.to_grayscale_uint8``.
    size : int
        Side of the square output images.
    on_error : {"raise", "skip"}
        What to do with files that cannot be read. ``"raise"`` (default)
        raises one [`ImageReadError`][cxrkit.images.ImageReadError] listing
        every bad file;
        ``"skip"`` leaves them out with one warning that lists them.
    n_jobs : int, optional
        Decoding threads; defaults to the number of CPUs.
    verbose : int
        Show a progress bar above 0 when decoding more than 64 files.

    Returns
    -------
    images : ndarray of shape (n_kept, size, size), dtype uint8
    kept : ndarray of shape (n,), dtype bool
        Which inputs were read (all True unless ``on_error="skip"``).

    Examples
    --------
    >>> import numpy as np
    >>> images, kept = load_images(np.zeros((2, 50, 40)), size=32)
    >>> images.shape, kept.tolist()
    ((2, 32, 32), [True, True])
    """
    decoded = decode_images(
        X, size, on_error=on_error, n_jobs=n_jobs, verbose=verbose, stacklevel=3
    )
    return decoded.pixels, decoded.kept_mask


def decode_images(
    X: Sequence[str | os.PathLike] | np.ndarray | DecodedImages,
    size: int,
    *,
    on_error: str = "raise",
    n_jobs: int | None = None,
    verbose: int = 0,
    stacklevel: int = 2,
) -> DecodedImages:
    """Decode and resize ``X`` once: the one place that asks paths or array.

    Parameters
    ----------
    X : sequence of paths, ndarray of shape (n, H, W) or (n, H, W, C), or DecodedImages
        Paths are decoded (in threads) and cached; arrays are checked
        (``cxrkit.images._inputs.check_image_array``) and converted with
        ``cxrkit.images.to_grayscale_uint8``. A ``DecodedImages`` decoded
        at ``size`` is returned with its images, as rows all kept.
    size : int
        Side of the square output images.
    on_error : {"raise", "skip"}
        What to do with files that cannot be read, as in
        [`load_images`][cxrkit.images.load_images].
    n_jobs : int, optional
        Decoding threads; defaults to the number of CPUs.
    verbose : int
        Show a progress bar above 0 when decoding more than 64 files.
    stacklevel : int, default=2
        Of the warning that lists skipped files.

    Returns
    -------
    DecodedImages

    Raises
    ------
    ValueError
        ``X`` is a ``DecodedImages`` of another ``size``; unreadable input.

    Examples
    --------
    >>> decoded = decode_images(np.zeros((2, 50, 40)), size=32)
    >>> decoded.pixels.shape, decoded.kept.tolist()
    ((2, 32, 32), [0, 1])
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if isinstance(X, DecodedImages):
        if X.size != size:
            raise ValueError(
                f"X holds images decoded at {X.size} px, but {size} px are needed "
                "here; pass the original X (paths or array) instead"
            )
        # its rows are now those of the X given: all kept
        return replace(X, kept=np.arange(len(X)), n_input=len(X))
    if not is_path_like_sequence(X):
        reject_single_path(X)
        X = check_image_array(X)
        images = [resize_square(_image_at(X, i), size) for i in range(len(X))]
        return DecodedImages(
            pixels=np.stack(images),
            paths=None,
            kept=np.arange(len(images)),
            n_input=len(images),
            input_shape=(int(X.shape[1]), int(X.shape[2])),
        )

    paths = [os.fspath(p) for p in X]
    results = _decode_all(paths, size, n_jobs=n_jobs, verbose=verbose)
    failures = {p: r for p, r in zip(paths, results) if isinstance(r, str)}
    kept = np.array([not isinstance(r, str) for r in results], dtype=bool)
    if failures and on_error == "raise":
        raise ImageReadError(
            failures,
            hint="Remove or fix these files, or pass on_error='skip' to leave "
            "them out with a warning.",
        )
    if failures:
        listed = list_failures(failures)
        warnings.warn(
            f"skipped {len(failures)} unreadable image file(s):\n{listed}",
            UserWarning,
            stacklevel=stacklevel,
        )
    good = [r for r in results if not isinstance(r, str)]
    if not good:
        raise ValueError("none of the images in X could be read")
    return DecodedImages(
        pixels=np.stack(good),
        paths=tuple(p for p, k in zip(paths, kept) if k),
        kept=np.flatnonzero(kept),
        n_input=len(paths),
        input_shape=None,
        skipped=tuple(p for p, k in zip(paths, kept) if not k),
    )


def _decode_one(path: str, size: int) -> np.ndarray | str:
    try:
        return _load_path(path, size)
    except (ValueError, FileNotFoundError) as exc:
        return str(exc)


def _decode_all(
    paths: list[str], size: int, *, n_jobs: int | None, verbose: int
) -> list[np.ndarray | str]:
    n_jobs = n_jobs or os.cpu_count() or 1
    # Pillow releases the GIL while decoding and resizing, so threads scale.
    jobs = (delayed(_decode_one)(p, size) for p in paths)
    parallel = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")
    results = (
        parallel(jobs)
        if n_jobs > 1 and len(paths) > 8
        else map(lambda p: _decode_one(p, size), paths)
    )
    if verbose and len(paths) > 64:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(paths), desc="decoding images")
    return list(results)
