"""Tokens of the labelling and status links.

A token is ``<database, urlsafe base64>.<secrets.token_urlsafe(32)>``: the web face finds the
database from it before any lookup, and only its SHA-256 is stored (a leaked table grants
nothing)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets

RANDOM_BYTES = 32


def new_token(database: str) -> str:
    prefix = base64.urlsafe_b64encode(database.encode()).decode().rstrip("=")
    return f"{prefix}.{secrets.token_urlsafe(RANDOM_BYTES)}"


def database_of(token: str) -> str | None:
    """The database a token belongs to, read off its prefix; None when it has none."""
    prefix, dot, rest = token.partition(".")
    if not dot or not prefix or not rest:
        return None
    try:
        return base64.urlsafe_b64decode(prefix + "=" * (-len(prefix) % 4)).decode()
    except (binascii.Error, ValueError):
        return None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
