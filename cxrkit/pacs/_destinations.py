"""Where results go: a DICOM node (C-STORE), a DICOMweb server (STOW-RS), a folder.

Each destination has ``store(datasets)``, which raises
[`DeliveryError`][cxrkit.pacs.DeliveryError] when the results did not
arrive: ``transient`` when trying again later may work (the node is down or
busy), not when the node refused them (a failure status).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cxrkit.pacs._radiographs import instance_key

__all__ = [
    "DeliveryError",
    "DicomNode",
    "DicomwebDestination",
    "DimseDestination",
    "FolderDestination",
    "parse_dicom_node",
]

_log = logging.getLogger("cxrkit.pacs")

#: C-STORE statuses that mean stored: success, and the warnings (coercion,
#: elements discarded, data set does not match the SOP class).
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}
#: Seconds an idle association stays open before it is released.
IDLE_RELEASE_S = 10.0


class DeliveryError(Exception):
    """Results that did not reach their destination.

    Parameters
    ----------
    message : str
    transient : bool
        Whether trying again later may work (the node was down, busy or out
        of resources) rather than the node having refused the results.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class DicomNode(NamedTuple):
    """A DICOM application entity: its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def no_delay(assoc: Any) -> None:
    """Send small DICOM messages at once (TCP_NODELAY) on an association.

    pynetdicom leaves Nagle's algorithm on; with the peer's delayed
    acknowledgements, each C-STORE then waits tens of milliseconds for
    nothing. Best effort: the socket is reached through pynetdicom's
    attributes, and nothing happens where they differ.
    """
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def parse_dicom_node(text: str) -> DicomNode:
    """Read ``AE@HOST:PORT`` (IPv6 hosts in brackets: ``AE@[::1]:104``).

    Raises
    ------
    ValueError
        Naming the text and the form expected.

    Examples
    --------
    >>> parse_dicom_node("ORTHANC@127.0.0.1:4242")
    DicomNode(ae_title='ORTHANC', host='127.0.0.1', port=4242)
    """
    how = (
        f"{text!r} is not a DICOM node; write AE@HOST:PORT, e.g. "
        "ORTHANC@127.0.0.1:4242 (the AE title at most 16 characters)"
    )
    ae_title, at, address = text.partition("@")
    host, colon, port = address.rpartition(":")
    if not (at and colon and ae_title.strip() and host and port.isdigit()):
        raise ValueError(how)
    if len(ae_title) > 16 or "\\" in ae_title:
        raise ValueError(how)
    if not 0 < int(port) < 65536:
        raise ValueError(f"{how}; the port must be 1 to 65535")
    return DicomNode(ae_title.strip(), host.strip("[]"), int(port))


class DimseDestination:
    """C-STORE to a DICOM node, over one association kept open while busy.

    Parameters
    ----------
    node : DicomNode or str
        Where to send (``AE@HOST:PORT``).
    calling_ae_title : str, default="CXRKIT"
        The AE title cxrkit sends as.
    ssl_context : ssl.SSLContext, optional
        Connect with TLS (DICOM over TLS, PS3.15 Annex B), verifying the
        node with this context.
    timeout : float, default=30
        Seconds to wait for the node at each step.
    """

    def __init__(
        self,
        node: DicomNode | str,
        *,
        calling_ae_title: str = "CXRKIT",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30,
    ) -> None:
        from pynetdicom import AE
        from pynetdicom.sop_class import (
            ComprehensiveSRStorage,
            SecondaryCaptureImageStorage,
        )

        self.node = parse_dicom_node(node) if isinstance(node, str) else node
        self._ae = AE(calling_ae_title)
        for sop_class in (ComprehensiveSRStorage, SecondaryCaptureImageStorage):
            self._ae.add_requested_context(
                sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            )
        for attribute in ("acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(self._ae, attribute, timeout)
        self._tls = None if ssl_context is None else (ssl_context, self.node.host)
        self._assoc: Any = None
        self._last_use = 0.0
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return f"C-STORE to {self.node}"

    def _association(self) -> Any:
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        node = self.node
        kwargs = {} if self._tls is None else {"tls_args": self._tls}
        assoc = self._ae.associate(
            node.host, node.port, ae_title=node.ae_title, **kwargs
        )
        if not assoc.is_established:
            why = "rejected the association" if assoc.is_rejected else "did not answer"
            raise DeliveryError(f"{node} {why}", transient=True)
        no_delay(assoc)
        self._assoc = assoc
        return assoc

    def store(self, datasets: Sequence[Dataset]) -> None:
        """Send each data set; raises ``DeliveryError`` unless all are stored."""
        with self._lock:
            for ds in datasets:
                assoc = self._association()
                try:
                    status = assoc.send_c_store(ds)
                except ValueError as exc:  # no presentation context for it
                    raise DeliveryError(
                        f"{self.node} does not accept this kind of result ({exc})",
                        transient=False,
                    ) from None
                except (RuntimeError, OSError) as exc:
                    self._drop()
                    raise DeliveryError(
                        f"C-STORE to {self.node} failed ({exc})", transient=True
                    ) from None
                self._last_use = time.monotonic()
                code = status.get("Status") if status else None
                if code is None:  # no response: the association was lost
                    self._drop()
                    raise DeliveryError(
                        f"{self.node} did not answer a C-STORE", transient=True
                    )
                if code not in _STORED:
                    comment = str(status.get("ErrorComment", "") or "")
                    raise DeliveryError(
                        f"{self.node} refused a result with status 0x{code:04X}"
                        + (f" ({comment})" if comment else ""),
                        transient=0xA700 <= code <= 0xA7FF,
                    )

    def release_if_idle(self, idle_s: float = IDLE_RELEASE_S) -> None:
        """Release the association when unused for ``idle_s`` seconds."""
        with self._lock:
            if self._assoc is not None and time.monotonic() - self._last_use > idle_s:
                self._drop()

    def _drop(self) -> None:
        if self._assoc is not None:
            if self._assoc.is_established:
                self._assoc.release()
            self._assoc = None

    def close(self) -> None:
        """Release the association, if one is open."""
        with self._lock:
            self._drop()


class DicomwebDestination:
    """STOW-RS to a DICOMweb server.

    Parameters
    ----------
    url : str
        The DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
    client : dicomweb_client.DICOMwebClient, optional
        A client made beforehand (authentication, TLS settings, headers).
    """

    def __init__(self, url: str, *, client: Any = None) -> None:
        from dicomweb_client import DICOMwebClient

        self.url = url
        self.client = client if client is not None else DICOMwebClient(url)

    def __str__(self) -> str:
        return f"STOW-RS to {self.url}"

    def store(self, datasets: Sequence[Dataset]) -> None:
        """Store the data sets; raises ``DeliveryError`` unless all are stored."""
        import requests

        try:
            response = self.client.store_instances(list(datasets))
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            raise DeliveryError(
                f"STOW-RS to {self.url} failed with HTTP {code}",
                transient=code in (408, 429) or code >= 500,
            ) from None
        except (requests.RequestException, OSError) as exc:
            raise DeliveryError(
                f"STOW-RS to {self.url} failed ({type(exc).__name__})", transient=True
            ) from None
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reasons = sorted({int(item.get("FailureReason", 0)) for item in failed})
            raise DeliveryError(
                f"{self.url} refused {len(failed)} result(s) (failure reasons "
                f"{', '.join(f'0x{r:04X}' for r in reasons)})",
                transient=False,
            )

    def release_if_idle(self, idle_s: float = IDLE_RELEASE_S) -> None:
        """Nothing to release (HTTP)."""

    def close(self) -> None:
        """Nothing to close (HTTP)."""


class FolderDestination:
    """DICOM files in a folder, named by the hash of their SOP Instance UID.

    For trying a node without a PACS, or for a PACS that imports a folder.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __str__(self) -> str:
        return f"files in {self.folder}"

    def store(self, datasets: Sequence[Dataset]) -> None:
        """Write each data set as ``<hash>.dcm`` (atomically)."""
        for ds in datasets:
            target = self.folder / f"{instance_key(ds.SOPInstanceUID)}.dcm"
            part = target.with_suffix(".part")
            try:
                ds.save_as(part, enforce_file_format=True)
                os.replace(part, target)
            except OSError as exc:
                raise DeliveryError(
                    f"could not write {target} ({exc})", transient=True
                ) from None

    def release_if_idle(self, idle_s: float = IDLE_RELEASE_S) -> None:
        """Nothing to release."""

    def close(self) -> None:
        """Nothing to close."""
