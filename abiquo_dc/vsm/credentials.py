"""Monitored hosts as the store keeps them: credentials encrypted with the DC's own key.

The key is made once (Fernet: AES-128-CBC with an HMAC) and kept in the DC's state
directory, readable by the DC only. Redis holds ciphertext: its dump files and its
replicas reveal no hypervisor's password.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from abiquo_dc.protocol.definitions import Credentials
from abiquo_dc.protocol.monitoring import MonitoredHost
from abiquo_runtime.errors import PermanentError
from abiquo_runtime.secrets import SecretBox, UnreadableSecret, load_or_create_key

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(MonitoredHost)


class UnreadableHost(PermanentError):
    """A stored host this DC's key does not open (the key was replaced)."""

    code = "VSM-KEY"


class HostVault:
    def __init__(self, key: bytes) -> None:
        self._box = SecretBox(key)

    @classmethod
    def open(cls, path: Path) -> HostVault:
        """The vault with the key at `path`, made there (mode 0600) when there is none."""
        return cls(load_or_create_key(path))

    def encrypt(self, host: MonitoredHost) -> bytes:
        secret = _encoder.encode(host.credentials)
        public = msgspec.structs.replace(host, credentials=Credentials())
        return _encoder.encode(public) + b"\n" + self._box.encrypt_bytes(secret)

    def decrypt(self, blob: bytes) -> MonitoredHost:
        public, _, secret = blob.partition(b"\n")
        host = _decoder.decode(public)
        try:
            credentials = msgspec.json.decode(self._box.decrypt_bytes(secret), type=Credentials)
        except UnreadableSecret as exc:
            raise UnreadableHost(f"the credentials of {host.address} do not open") from exc
        return msgspec.structs.replace(host, credentials=credentials)
