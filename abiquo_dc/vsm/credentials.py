"""Monitored hosts as the store keeps them: credentials encrypted with the DC's own key.

The key is made once (Fernet: AES-128-CBC with an HMAC) and kept in the DC's state
directory, readable by the DC only. Redis holds ciphertext: its dump files and its
replicas reveal no hypervisor's password.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
from cryptography.fernet import Fernet, InvalidToken

from abiquo_dc.protocol.definitions import Credentials
from abiquo_dc.protocol.monitoring import MonitoredHost
from abiquo_runtime.errors import PermanentError

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(MonitoredHost)


class UnreadableHost(PermanentError):
    """A stored host this DC's key does not open (the key was replaced)."""

    code = "VSM-KEY"


class HostVault:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def open(cls, path: Path) -> HostVault:
        """The vault with the key at `path`, made there (mode 0600) when there is none."""
        try:
            return cls(path.read_bytes().strip())
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return cls(key)

    def encrypt(self, host: MonitoredHost) -> bytes:
        secret = _encoder.encode(host.credentials)
        public = msgspec.structs.replace(host, credentials=Credentials())
        return _encoder.encode(public) + b"\n" + self._fernet.encrypt(secret)

    def decrypt(self, blob: bytes) -> MonitoredHost:
        public, _, secret = blob.partition(b"\n")
        host = _decoder.decode(public)
        try:
            credentials = msgspec.json.decode(self._fernet.decrypt(secret), type=Credentials)
        except InvalidToken as exc:
            raise UnreadableHost(f"the credentials of {host.address} do not open") from exc
        return msgspec.structs.replace(host, credentials=credentials)
