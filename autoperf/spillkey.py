"""The log directory's secret for spill files (the PostgreSQL store's and the OTLP exporter's).

A spill file's first line carries an HMAC of its name under a 32-byte key kept in the log directory
(created 0600 on first use), so a file someone else dropped there is never replayed or sent.
"""
from __future__ import annotations

import hashlib
import hmac
import os


def directory_key(log_dir, filename: str) -> bytes:
    """The key in ``<log_dir>/<filename>``: 32 random bytes, created 0600 by the first process to ask."""
    path = os.path.join(log_dir, filename)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as handle:
            key = handle.read()
        if len(key) != 32:
            raise ValueError(f"{path} is not a spill key") from None
        return key
    with os.fdopen(fd, "wb") as handle:
        key = os.urandom(32)
        handle.write(key)
    return key


def mac(key: bytes, name: str) -> str:
    """The hex HMAC-SHA256 of a spill file's base name."""
    return hmac.new(key, name.encode(), hashlib.sha256).hexdigest()
