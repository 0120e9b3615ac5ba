"""Secrets at rest: a key kept in a file of its own, and values encrypted under it.

Fernet (AES-128-CBC with an HMAC): what is stored (a database row, a Redis key, their
backups and replicas) reveals nothing without the key file, which only the program's
user may read.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from abiquo_runtime.errors import PermanentError


class UnreadableSecret(PermanentError):
    """A value this key does not open: it was encrypted under another key."""

    code = "GEN-KEY"


def load_or_create_key(path: Path) -> bytes:
    """The key at `path`; made there (mode 0600, never overwritten) when there is none."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process sharing the file made it meanwhile: theirs is the key.
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class SecretBox:
    """Encrypts and decrypts text under one key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def open(cls, path: Path) -> SecretBox:
        return cls(load_or_create_key(path))

    def encrypt(self, plain: str) -> str:
        """`plain` encrypted; the empty string stays empty (there is nothing to hide)."""
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii") if plain else ""

    def decrypt(self, token: str) -> str:
        if not token:
            return ""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise UnreadableSecret("a stored secret does not open with this key") from exc

    def decrypt_bytes(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise UnreadableSecret("a stored secret does not open with this key") from exc

    def encrypt_bytes(self, plain: bytes) -> bytes:
        return self._fernet.encrypt(plain)
