"""The one kind of error a client is told about, and how it is sent."""

from __future__ import annotations

import json

__all__ = ["ClientError", "error_body"]


class ClientError(Exception):
    """A request the server refuses: an HTTP status and a message naming the fix.

    Parameters
    ----------
    status : int
        A 4xx status code.
    message : str
        Names the bad input and what to send instead; sent to the client as
        ``{"error": message}``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> bytes:
    """The JSON body of every error response: ``{"error": message}``."""
    return json.dumps({"error": message}).encode()
