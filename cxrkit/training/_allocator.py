"""Keep large freed CPU buffers for reuse: faster CPU work at 128 px and up.

PyTorch takes the memory of every CPU tensor from the C library's
``malloc``. glibc serves a request above its mmap threshold (adjusted as the
program runs, at most 32 MiB) with a fresh ``mmap`` and hands the pages back
to the kernel at ``free``. A training step at 128 px or more allocates and
frees activations larger than that in every step (``simple_cnn``'s first
block at 128 px, batch 32: 64 MiB), so every step pays one page fault per
4 KiB page to get zeroed memory from the kernel again.

Why this is written here: PyTorch has no CPU caching allocator that can be
switched on from Python. Its ``THP_MEM_ALLOC_ENABLE`` variable (huge pages
for large buffers) must be set before torch starts, and it still takes
fresh, zeroed pages from the kernel in every step, only in larger pieces.
Intel's launcher (``python -m torch.backends.xeon.run_cpu``) preloads
jemalloc or tcmalloc, which needs those libraries installed and the program
started through it. glibc's own ``mallopt`` does the same from a running
process. It raises the mmap threshold, so that large blocks come from the
heap, and the trim threshold, so that freed blocks stay there for the next
step.

What it gains and costs depends on the model: it speeds up ``simple_cnn``
and ``cnn4`` from 128 px, not the ``"cpu"`` recipe's ``resnet18`` (whose
activations stay under 32 MiB up to 128 px), and the process keeps the
memory it frees, so its peak resident memory can grow. The measurements
are on the docs' *Benchmarks* pages (*Training recipe*, "Large freed
buffers").

Because of that cost, and because it is a setting of the whole process,
it is off unless you ask: call it from Python, or set the environment
variable ``CXRKIT_REUSE_BUFFERS=1`` for the ``cxrkit`` command line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["reuse_large_buffers"]

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# 1 GiB: above any activation of cxrkit's models at the sizes it trains; mallopt
# takes a C int, so the largest value it could take is 2 GiB - 1.
_REUSE_BYTES = 1 << 30
# glibc's starting values of both thresholds (DEFAULT_MMAP_THRESHOLD_MIN and
# DEFAULT_TRIM_THRESHOLD).
_GLIBC_DEFAULT_BYTES = 128 * 1024


def reuse_large_buffers(enable: bool = True) -> bool:
    """Let this process reuse large freed CPU buffers instead of returning them.

    Raises glibc's mmap and trim thresholds to 1 GiB, so that tensors
    larger than 32 MiB come from the heap and their memory is kept for the
    next allocation; see the module docstring for why, and for where it
    helps and what it costs. The numbers computed are the same; only where their
    memory comes from changes.

    It is a setting of the whole process (every library in it allocates
    through the same ``malloc``), off by default. The ``cxrkit`` command
    line calls it when the environment variable ``CXRKIT_REUSE_BUFFERS=1``
    is set.

    Parameters
    ----------
    enable : bool, default=True
        False sets both thresholds back to glibc's starting values (128 KiB;
        glibc's own adjustment of them as the program runs stays off).

    Returns
    -------
    bool
        True if the setting was applied; False where the C library is not
        glibc (macOS, Windows, musl-based Linux), where nothing is changed.

    Examples
    --------
    Not run by the doctests, as it would change the whole test process
    (``tests/test_allocator.py`` checks it in a process of its own):

    >>> from cxrkit.training import reuse_large_buffers
    >>> reuse_large_buffers()  # doctest: +SKIP
    True
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:  # pragma: no cover - glibc without a findable libc.so
        return False
    mallopt = ctypes.CDLL(name).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    value = _REUSE_BYTES if enable else _GLIBC_DEFAULT_BYTES
    # mallopt returns 1 on success, 0 when glibc refuses the value
    applied = mallopt(_M_MMAP_THRESHOLD, value) == 1
    return bool(mallopt(_M_TRIM_THRESHOLD, value) == 1 and applied)
