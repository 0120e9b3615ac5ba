"""The event log: what was done, by whom, in which enterprise, and how it went.

Every mutating call records an event in its own transaction (`record_event` with its
connection); asynchronous outcomes and logins record theirs with the engine.
"""

from abiquo_central.events.log import (
    Actor,
    Event,
    EventFilter,
    Ref,
    get_event,
    list_events,
    record_action,
    record_event,
    record_login,
)
from abiquo_central.events.types import Action, Component, Severity

__all__ = [
    "Action",
    "Actor",
    "Component",
    "Event",
    "EventFilter",
    "Ref",
    "Severity",
    "get_event",
    "list_events",
    "record_action",
    "record_event",
    "record_login",
]
