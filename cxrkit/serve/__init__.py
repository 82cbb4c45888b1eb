"""A trained model behind a web page and a JSON API (``cxrkit serve``).

[`create_app`][cxrkit.serve.create_app] builds the FastAPI application;
[`serve`][cxrkit.serve.serve] runs it with uvicorn, on 127.0.0.1 unless told
otherwise. There is no authentication: to open it to others, put it behind a
reverse proxy that authenticates (see the user guide, "Serving a model").

Needs ``pip install "cxrkit[serve]"`` (FastAPI, uvicorn, python-multipart).
For research and education only; not a medical device.
"""

try:
    import fastapi  # noqa: F401
    import python_multipart  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"cxrkit.serve needs FastAPI, uvicorn and python-multipart ({exc}): "
        'pip install "cxrkit[serve]"'
    ) from exc

from cxrkit.serve._app import create_app
from cxrkit.serve._server import serve

__all__ = ["create_app", "serve"]
