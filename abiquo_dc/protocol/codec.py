"""Bytes on the wire to messages and back: JSON through msgspec."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from abiquo_dc.protocol.messages import Message

M = TypeVar("M", bound=Message)

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


class DecodeError(ValueError):
    """The bytes are not a message of any type this reader accepts."""


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes, kinds: Any) -> Any:
    """Decode `data` as one of `kinds` (a Message subclass or a Union of them)."""
    decoder = _decoders.get(kinds)
    if decoder is None:
        decoder = _decoders[kinds] = msgspec.json.Decoder(kinds)
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(str(exc)) from exc
