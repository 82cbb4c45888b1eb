"""A throwaway Orthanc on loopback: a real PACS to try a node against, and to test.

Orthanc (https://www.orthanc-server.com, GPL) is a lightweight open-source
PACS with a DICOMweb plugin; Debian and Ubuntu package both
(``apt-get install orthanc orthanc-dicomweb``). This module writes its own
configuration in a temporary folder and runs the ``Orthanc`` binary as a
child process, never the system service.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxrkit.pacs._destinations import DicomNode

__all__ = ["LocalOrthanc", "find_dcmtk", "find_orthanc", "free_port"]

_PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)
_INSTALL = "apt-get install orthanc orthanc-dicomweb (Debian, Ubuntu)"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the system picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_orthanc() -> tuple[str | None, str | None]:
    """The ``Orthanc`` binary and the DICOMweb plugin, or None where missing."""
    # Debian installs it in /usr/sbin, which may not be on a user's PATH
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
    for pattern in _PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return binary, found[0]
    return binary, None


def find_dcmtk(tool: str) -> str | None:
    """DCMTK's ``tool`` (``storescu``, ``echoscu``): the first on PATH that
    is not a script, or None.

    pynetdicom installs Python console scripts of the same names, with
    other options, and a virtual environment whose scripts come first on
    PATH (an activated one, or cxrkit's own) would answer with them.
    """
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which(tool, path=folder) if folder else None
        if found is None:
            continue
        with open(found, "rb") as file:
            if file.read(2) != b"#!":
                return found
    return None


class LocalOrthanc:
    """Orthanc on 127.0.0.1, in a temporary folder, for as long as it is used.

    Parameters
    ----------
    modalities : mapping of str to DicomNode, optional
        The DICOM nodes Orthanc knows, by name. Only they may store to it
        over DICOM (``DicomAlwaysAllowStore`` false), and only from their
        host; DICOMweb (STOW-RS) is open to this machine.
    ae_title : str, default="ORTHANC"
    dicomweb : bool, default=True
        Load the DICOMweb plugin (``/dicom-web``); raises if it is missing.
    folder : path, optional
        Where its configuration, database and log go (default: a new
        temporary folder, deleted at ``stop``).

    Attributes
    ----------
    node : DicomNode
        Its DICOM address (``ORTHANC@127.0.0.1:port``).
    http_url : str
        Its REST API and web interface (``/app/explorer.html``).
    dicomweb_url : str
        Its DICOMweb root.

    Raises
    ------
    FileNotFoundError
        Orthanc, or its DICOMweb plugin, is not installed (the message
        says how to install them).
    """

    def __init__(
        self,
        modalities: Mapping[str, DicomNode] | None = None,
        *,
        ae_title: str = "ORTHANC",
        dicomweb: bool = True,
        folder: str | os.PathLike | None = None,
    ) -> None:
        binary, plugin = find_orthanc()
        if binary is None:
            raise FileNotFoundError(f"the Orthanc binary is not installed: {_INSTALL}")
        if dicomweb and plugin is None:
            raise FileNotFoundError(
                f"the Orthanc DICOMweb plugin is not installed: {_INSTALL}"
            )
        self._binary, self._plugin = binary, plugin if dicomweb else None
        self.modalities = dict(modalities or {})
        self.ae_title = ae_title
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="cxrkit-orthanc-"))
        self.node = DicomNode(ae_title, "127.0.0.1", free_port())
        self.http_port = free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = f"{self.http_url}/dicom-web"
        self._process: subprocess.Popen | None = None
        self._log: Any = None

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Name": "cxrkit-local-orthanc",
            "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"),
            "DicomAet": self.ae_title,
            "DicomPort": self.node.port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowEcho": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {
                name: [node.ae_title, node.host, node.port]
                for name, node in self.modalities.items()
            },
            "SaveJobs": False,
            "Plugins": [],
        }
        if self._plugin is not None:
            config["Plugins"] = [self._plugin]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        return config

    def start(self, timeout: float = 30) -> LocalOrthanc:
        """Start Orthanc and wait until its REST API answers."""
        (self.folder / "db").mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self._config(), indent=2), encoding="utf-8")
        self._log = open(self.folder / "orthanc.log", "wb")
        self._process = subprocess.Popen(
            [self._binary, str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = (self.folder / "orthanc.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"Orthanc stopped at start:\n{log[-2000:]}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"Orthanc did not answer within {timeout} s")

    def get(self, path: str) -> Any:
        """GET a path of the REST API (without proxies); JSON answers decoded."""
        return self._request(urllib.request.Request(self.http_url + path))

    def post(self, path: str, body: Any) -> Any:
        """POST JSON to a path of the REST API, e.g. ``/tools/find``."""
        request = urllib.request.Request(
            self.http_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        return self._request(request)

    def _request(self, request: urllib.request.Request) -> Any:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            body = response.read()
            if response.headers.get_content_type() == "application/json":
                return json.loads(body)
            return body

    def stop(self) -> None:
        """Stop Orthanc, and delete its folder if it made it."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LocalOrthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
