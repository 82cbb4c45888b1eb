"""TLS contexts for DICOM over TLS (PS3.15 Annex B): the listener and the sender."""

from __future__ import annotations

import os
import ssl

__all__ = ["client_tls_context", "server_tls_context"]


def _check_files(**files: str | os.PathLike | None) -> None:
    for option, path in files.items():
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(
                f"{option} {os.fspath(path)}: no such file (a PEM file is expected)"
            )


def server_tls_context(
    cert: str | os.PathLike,
    key: str | os.PathLike,
    *,
    ca: str | os.PathLike | None = None,
) -> ssl.SSLContext:
    """The listener's TLS context: its certificate, and client checks with ``ca``.

    Parameters
    ----------
    cert, key : path
        The listener's certificate chain and private key (PEM).
    ca : path, optional
        Certificates of the authorities whose client certificates are
        accepted; with it, a sender without such a certificate is refused
        during the handshake (mutual TLS). Without it, any sender may
        connect (encrypted), and only the AE-title allow-list applies.

    Returns
    -------
    ssl.SSLContext
        TLS 1.2 or newer.
    """
    _check_files(cert=cert, key=key, ca=ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=ca)
    return context


def client_tls_context(
    ca: str | os.PathLike,
    *,
    cert: str | os.PathLike | None = None,
    key: str | os.PathLike | None = None,
) -> ssl.SSLContext:
    """The sender's TLS context: the node's authority, and a client certificate.

    Parameters
    ----------
    ca : path
        Certificates of the authority that signed the receiving node's
        certificate (PEM); the node's host name is checked against it.
    cert, key : path, optional
        A client certificate and key, for nodes that require one.

    Returns
    -------
    ssl.SSLContext
        TLS 1.2 or newer.
    """
    _check_files(ca=ca, cert=cert, key=key)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context
