"""The signing key: the environment's, or a random one kept in a git-ignored file."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def secret_key(configured: str | None, path: Path) -> str:
    """`configured` when set; else the key in `path`, created once with a random value.

    An empty or blank SECRET_KEY is refused: it would sign every session with nothing.
    """
    if configured is not None:
        if not configured.strip():
            raise ImproperlyConfigured(
                "SECRET_KEY is set but empty: unset it (a random key is kept in a file) or set a long random value."
            )
        return configured
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    # Write a temporary file, then link it into place: concurrent starts all
    # end up reading the one key that won the link, never a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(64))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read(path)


def _read(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{path} is empty: delete it to have a new random key made.")
    return key
