"""The representation models: what every resource is made of.

A resource is an `Entity` subclass: a msgspec Struct whose fields, in declared order,
are the representation's fields (snake_case in Python, camelCase on the wire), plus
`links`. Its class variable `media` names it. JSON and XML are both rendered from (and
parsed into) the same model; see render.py, xml.py and body.py.

    class Datacenter(Entity, kw_only=True):
        media = Media.of("datacenter")
        id: int | None = None
        name: str
        remote_services: Collection[RemoteService] = msgspec.field(
            default_factory=Collection.empty
        )

Nested objects that are not resources (a VDC's `network`) are `Value`s; nested
collections (a datacenter's `remoteServices`) are `Collection`s of entities.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

import msgspec

from abiquo_central.api.media import Media


class Link(msgspec.Struct, omit_defaults=True, frozen=True):
    """`{rel, href, type, title}`: how a representation points at another resource."""

    rel: str
    href: str
    type: str | None = None
    title: str | None = None


class Value(msgspec.Struct, kw_only=True, rename="camel"):
    """A nested object that is not a resource by itself: no media type, no links."""


class Entity(msgspec.Struct, kw_only=True, rename="camel"):
    """A resource's representation. Subclasses set `media` and declare their fields.

    Declare subclasses with kw_only=True, so that fields with and without defaults can
    come in the order the representation shows them.
    """

    media: ClassVar[Media]

    links: list[Link] = []

    def link(self, rel: str) -> Link | None:
        """The first link with this rel (request bodies refer to resources by links)."""
        return next((link for link in self.links if link.rel == rel), None)


E = TypeVar("E", bound=msgspec.Struct)


class Collection(msgspec.Struct, Generic[E], kw_only=True, rename="camel", omit_defaults=True):
    """`{collection, totalSize, links}`: a page of a listing, or a nested list.

    totalSize and links are left out when unset: a nested collection (remoteServices)
    is just `{"collection": [...]}`, as is the list of errors. `collection` has no
    default so that it is always there, empty or not.
    """

    collection: list[E]
    total_size: int | None = None
    links: list[Link] = []

    @classmethod
    def empty(cls) -> Collection[E]:
        """An empty one: the default of a nested collection field, as
        `msgspec.field(default_factory=Collection.empty)`."""
        return cls(collection=[])


class AcceptedRequest(Entity, kw_only=True):
    """What an asynchronous action answers (202): its `status` link says where to follow
    it (a task, a conversion, a template being downloaded)."""

    media = Media.of("acceptedrequest")

    message: str = "You can keep track of the progress in the link"
