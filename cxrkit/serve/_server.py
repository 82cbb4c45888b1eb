"""Running the application with uvicorn."""

from __future__ import annotations

import ipaddress
import os
import warnings
from typing import Any

from fastapi import FastAPI

from cxrkit.serve._app import create_app

__all__ = ["serve"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def serve(
    model_or_path: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    threshold: float | None = None,
    max_upload_mb: float = 50,
    keep_uploads: str | os.PathLike | None = None,
    device: str = "auto",
    refuse_ood: bool = False,
    log_level: str = "info",
) -> None:
    """Serve a model's page and API with uvicorn until interrupted.

    Parameters
    ----------
    model_or_path : PneumoniaClassifier, str, path-like or fastapi.FastAPI
        A fitted classifier, a model file, or an application made by
        [`create_app`][cxrkit.serve.create_app] (then the options it takes
        are not given here).
    host : str, default="127.0.0.1"
        The address to bind. Only this machine can connect to the default;
        any other address warns that there is no authentication (put the
        server behind a reverse proxy that authenticates).
    port : int, default=8000
    threshold : float, optional
        As for [`create_app`][cxrkit.serve.create_app].
    max_upload_mb : float, default=50
        As for [`create_app`][cxrkit.serve.create_app].
    keep_uploads : str or path-like, optional
        As for [`create_app`][cxrkit.serve.create_app].
    device : str, default="auto"
        As for [`create_app`][cxrkit.serve.create_app].
    refuse_ood : bool, default=False
        As for [`create_app`][cxrkit.serve.create_app].
    log_level : str, default="info"
        uvicorn's log level.
    """
    import uvicorn

    if not _is_loopback(host):
        warnings.warn(
            f"serving on {host}, reachable from other machines, with NO "
            "authentication: anyone who can connect can upload images. Bind "
            "127.0.0.1 behind a reverse proxy that authenticates (see the user "
            "guide, 'Serving a model'). For research and education only; not a "
            "medical device.",
            UserWarning,
            stacklevel=2,
        )
    if isinstance(model_or_path, FastAPI):
        app = model_or_path
    else:
        app = create_app(
            model_or_path,
            threshold=threshold,
            max_upload_mb=max_upload_mb,
            keep_uploads=keep_uploads,
            device=device,
            refuse_ood=refuse_ood,
        )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
