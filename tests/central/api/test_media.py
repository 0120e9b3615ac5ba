from __future__ import annotations

import pytest

from abiquo_central.api.media import (
    Format,
    Media,
    MediaName,
    Negotiated,
    body_format,
    error_format,
    negotiate,
)

DC = MediaName("datacenter", "datacenter")


def test_media_names_follow_abiquo_rules() -> None:
    vdc = Media.of("virtualdatacenter", xml="virtualDatacenter")
    assert vdc.one == MediaName("virtualdatacenter", "virtualDatacenter")
    assert vdc.many == MediaName("virtualdatacenters", "virtualDatacenters")
    repo = Media.of(
        "datacenterrepository",
        xml="datacenterRepository",
        plural="datacenterrepositories",
        xml_plural="datacenterRepositories",
    )
    assert repo.many.xml == "datacenterRepositories"
    assert DC.content_type(Format.XML) == "application/vnd.abiquo.datacenter+xml"
    assert (
        DC.content_type(Format.JSON, "4.0") == "application/vnd.abiquo.datacenter+json; version=4.0"
    )


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, Negotiated(Format.JSON)),
        ("", Negotiated(Format.JSON)),
        ("*/*", Negotiated(Format.JSON)),
        ("application/json", Negotiated(Format.JSON)),
        ("application/xml", Negotiated(Format.XML)),
        ("text/xml", Negotiated(Format.XML)),
        ("application/vnd.abiquo.datacenter+xml", Negotiated(Format.XML)),
        ("application/vnd.abiquo.datacenter+json;version=4.0", Negotiated(Format.JSON, "4.0")),
        ("application/vnd.abiquo.datacenter+xml; version=3.10", Negotiated(Format.XML, "3.10")),
        ("text/html, application/xml;q=0.9, */*;q=0.1", Negotiated(Format.XML)),
        ("application/json;q=0.2, application/xml", Negotiated(Format.XML)),
        ("application/xml;q=0, application/json", Negotiated(Format.JSON)),
        # A version that is not a version is not echoed into a header.
        ('application/json; version="4\r\nX: y"', Negotiated(Format.JSON)),
    ],
)
def test_accept_chooses_the_representation(accept: str | None, expected: Negotiated) -> None:
    assert negotiate(accept, DC) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "application/vnd.abiquo.datacenters+json",  # the collection, not one datacenter
        "application/vnd.abiquo.virtualmachine+xml",
        "application/json;q=0",
        "garbage",
    ],
)
def test_nothing_acceptable_is_none(accept: str) -> None:
    assert negotiate(accept, DC) is None


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (None, Format.JSON),
        ("text/html", Format.JSON),
        ("application/vnd.abiquo.datacenter+xml", Format.XML),
        ("application/vnd.abiquo.virtualmachine+xml", Format.XML),
        ("application/xml", Format.XML),
        ("application/vnd.abiquo.datacenter+json, application/xml", Format.JSON),
    ],
)
def test_errors_follow_the_preferred_format(accept: str | None, fmt: Format) -> None:
    assert error_format(accept).format is fmt


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [
        ("application/vnd.abiquo.datacenter+json", Format.JSON),
        ("application/vnd.abiquo.datacenter+xml", Format.XML),
        ("application/json", Format.JSON),
        ("application/xml", Format.XML),
        ("text/xml", Format.XML),
        ("APPLICATION/JSON", Format.JSON),
        ("text/plain", None),
        ("application/octet-stream", None),
        ("application/vnd.abiquo.rack+json", None),
        ("*/*", None),
    ],
)
def test_body_format(content_type: str, fmt: Format | None) -> None:
    assert body_format(content_type, DC) is fmt
