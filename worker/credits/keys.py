"""Virtual keys: made here, stored only encrypted (Fernet) and as the sha256 the proxy and its spend logs use."""

from __future__ import annotations

import hashlib
import secrets

from cryptography.fernet import Fernet

from worker.settings import get_settings


def new_key() -> str:
    return "sk-" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """The proxy's token for a key: sha256 of the plaintext, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def _fernet() -> Fernet:
    return Fernet(get_settings().required("key_encryption_key").get_secret_value().encode())


def encrypt(key: str) -> str:
    return _fernet().encrypt(key.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def alias_for(user_id: str) -> str:
    return get_settings().key_alias_prefix + user_id
