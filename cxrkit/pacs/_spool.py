"""The listener's spool: every acknowledged instance is on disk until reported.

Layout under the spool folder (created readable by its owner only: it holds
patient data)::

    incoming/   being received; never acknowledged (cleared at start)
    pending/    acknowledged, not yet reported: <key>.dcm
    failed/     acknowledged, could not be reported: <key>.dcm, <key>.txt
    done/       reported, kept when asked (--keep): <key>.dcm

``<key>`` is the SHA-256 of the SOP Instance UID
([`instance_key`][cxrkit.pacs.instance_key]). An instance
is written to ``incoming/``, flushed to the disk (``fsync``), and renamed
into ``pending/`` before the listener answers success; a listener that
stops, or is killed, resumes from ``pending/``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["Spool"]


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Spool:
    """Durable storage of received instances (see the module's description).

    Parameters
    ----------
    root : str or path-like
        The spool folder; created (mode 0700) if missing.

    Examples
    --------
    >>> import tempfile
    >>> spool = Spool(tempfile.mkdtemp())
    >>> part = spool.receive("ab12", b"DICOM bytes")
    >>> path = spool.commit(part, "ab12")
    >>> [p.name for p in spool.pending()]
    ['ab12.dcm']
    >>> spool.finish(path, keep=False)
    >>> spool.pending()
    []
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.pending_dir = self.root / "pending"
        self.failed_dir = self.root / "failed"
        self.done_dir = self.root / "done"
        for folder in (self.root, self.incoming, self.pending_dir, self.failed_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def clear_incoming(self) -> int:
        """Delete partial files (never acknowledged); returns how many."""
        removed = 0
        for part in self.incoming.iterdir():
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def receive(self, key: str, data: bytes) -> Path:
        """Write ``data`` to a new file in ``incoming/``, on the disk."""
        part = self.incoming / f"{key}-{secrets.token_hex(4)}.dcm"
        with open(part, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return part

    def pending_path(self, key: str) -> Path:
        """Where the instance ``key`` waits in ``pending/`` once committed."""
        return self.pending_dir / f"{key}.dcm"

    def commit(self, part: Path, key: str) -> Path:
        """Move a received file into ``pending/`` (atomically, durably).

        It replaces a file of the same key already there: the caller checks
        first (the listener acknowledges a duplicate without committing it).
        """
        target = self.pending_path(key)
        os.replace(part, target)
        _fsync_folder(self.pending_dir)
        return target

    def pending(self) -> list[Path]:
        """The acknowledged instances not reported yet, oldest first."""
        found = []
        for path in self.pending_dir.glob("*.dcm"):
            try:
                found.append((path.stat().st_mtime_ns, path))
            except FileNotFoundError:  # reported meanwhile
                continue
        return [path for _, path in sorted(found)]

    def finish(self, path: Path, *, keep: bool) -> None:
        """The instance was reported: keep it in ``done/`` or delete it."""
        if keep:
            self.done_dir.mkdir(mode=0o700, exist_ok=True)
            os.replace(path, self.done_dir / path.name)
        else:
            path.unlink(missing_ok=True)

    def fail(self, path: Path, reason: str) -> Path:
        """The instance cannot be reported: move it to ``failed/`` with why."""
        target = self.failed_dir / path.name
        if path.exists():
            os.replace(path, target)
        target.with_suffix(".txt").write_text(reason + "\n", encoding="utf-8")
        return target
