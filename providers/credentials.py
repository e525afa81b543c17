"""Vendor credentials at rest: encrypted with Fernet under CREDENTIALS_KEYS (newest first).

Encrypt with the newest key, decrypt with any; ``credentials_rotate`` re-encrypts under the newest
key so an old key can then be removed. Interfaces only ever show ``mask(value)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class CredentialsKeyError(Exception):
    """The stored credentials cannot be decrypted with any configured key."""


def _fernet() -> MultiFernet:
    keys = settings.CREDENTIALS_KEYS
    if not keys:
        raise CredentialsKeyError("CREDENTIALS_KEYS is empty: set at least one Fernet key.")
    try:
        return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])
    except ValueError:
        raise CredentialsKeyError(
            "A key in CREDENTIALS_KEYS is not a valid Fernet key (32 url-safe base64-encoded bytes)."
        ) from None


def encrypt(credentials: Mapping[str, str]) -> str:
    return _fernet().encrypt(json.dumps(dict(credentials), sort_keys=True).encode()).decode()


def decrypt(token: str) -> dict[str, str]:
    try:
        data = json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken:
        raise CredentialsKeyError(
            "The vendor credentials cannot be decrypted with any key in CREDENTIALS_KEYS: "
            "restore the key they were encrypted with (keep old keys listed until `rotate_credentials` ran)."
        ) from None
    return {str(k): str(v) for k, v in data.items()}


def rotate(token: str) -> str:
    """The same credentials, encrypted under the newest key."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialsKeyError("Credentials encrypted with an unknown key cannot be rotated.") from None


def mask(value: str) -> str:
    """``sk-admin-1234abcdef`` -> ``sk-admin-…def``: the key's kind stays visible, the secret does not."""
    if len(value) < 12:
        return "…" + value[-2:] if len(value) > 4 else "…"
    head = value[:10]
    prefix = head[: head.rfind("-") + 1] if "-" in head else value[:3]
    return f"{prefix}…{value[-3:]}"
