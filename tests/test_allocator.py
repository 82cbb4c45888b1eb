"""reuse_large_buffers: large freed buffers are reused, not faulted in again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from cxrkit.training import _allocator as allocator
from cxrkit.training import reuse_large_buffers

# Run in a fresh interpreter: the setting is process-wide (this test must not
# change pytest's process), and glibc's behaviour as a process starts cannot
# be restored once changed.
_COUNT_FAULTING_ROUNDS = """
import json, resource, sys
import torch
from cxrkit.training import reuse_large_buffers
applied = reuse_large_buffers() if sys.argv[1] == "reuse" else None
faulted = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 << 20)  # 16 Mi float32 = 64 MiB (16,384 pages), freed at once
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    faulted.append(faults > 4096)  # a quarter of its pages or more
print(json.dumps({"applied": applied, "faulted": faulted}))
"""


def _faulting_rounds(setting: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_FAULTING_ROUNDS, setting],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the setting exists on glibc only"
)
def test_large_buffers_are_reused_only_when_switched_on():
    default = _faulting_rounds("default")
    reused = _faulting_rounds("reuse")
    # glibc's behaviour: a fresh mmap, faulted in page by page, every time
    assert all(default["faulted"])
    # switched on: the heap grows for the first block or two, then the
    # freed block is taken again
    assert reused["applied"] is True
    assert not any(reused["faulted"][3:]), reused


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(
        allocator.ctypes, "CDLL", lambda *a: pytest.fail("mallopt was called")
    )
    assert reuse_large_buffers() is False
