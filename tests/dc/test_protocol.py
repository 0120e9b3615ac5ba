"""The datacenter's published contract: what central can decode of what the DC sends."""

from __future__ import annotations

import typing

from abiquo_dc.protocol import jobs, messages, monitoring, templates
from abiquo_dc.protocol.envelope import Message


def _outbound_types() -> set[type[Message]]:
    """Every message type the DC publishes to central (it names an outbound queue)."""
    found: set[type[Message]] = set()
    for module in (messages, jobs, monitoring, templates):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Message)
                and value is not Message
                and getattr(value, "outbound_queue", None)
            ):
                found.add(value)
    return found


def test_every_message_the_dc_publishes_is_one_central_decodes() -> None:
    published = _outbound_types()
    assert templates.TemplateStatusChanged in published
    assert templates.ConversionStateChanged in published
    assert published <= set(typing.get_args(messages.Outbound))
