"""Template categories, on SQLite and on MariaDB."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.config import categories as cats
from abiquo_central.db import tables
from abiquo_central.db.paging import PageRequest
from abiquo_central.events import Actor
from abiquo_runtime.errors import Conflict, InvalidInput, NotFound
from tests.central.conftest import Seeded


@pytest.fixture
async def actor(engine: AsyncEngine, seeded: Seeded) -> Actor:
    return Actor(user_id=seeded.user_id, nick="jdoe", enterprise_id=seeded.enterprise_id)


async def _actions(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    ev = tables.event
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ev.c.component, ev.c.action, ev.c.target).order_by(ev.c.id)
        )
        return [(r.component, r.action, r.target) for r in rows]


async def test_the_default_category(engine: AsyncEngine, actor: Actor) -> None:
    default = await cats.default_category(engine)
    assert (default.name, default.erasable, default.is_default) == ("Others", False, True)
    listed = await cats.list_categories(engine, page=PageRequest())
    assert list(listed.items) == [default]


async def test_crud_records_events(engine: AsyncEngine, actor: Actor) -> None:
    made = await cats.create_category(engine, cats.CategorySpec(name=" Databases "), actor=actor)
    assert (made.name, made.erasable, made.is_default) == ("Databases", True, False)
    assert await cats.get_category(engine, made.id) == made
    changed = await cats.update_category(
        engine, made.id, cats.CategorySpec(name="DB", erasable=True), actor=actor
    )
    assert changed.name == "DB" and await cats.get_category(engine, made.id) == changed
    await cats.delete_category(engine, made.id, actor=actor)
    with pytest.raises(NotFound) as gone:
        await cats.get_category(engine, made.id)
    assert gone.value.code == cats.CATEGORY_NOT_FOUND
    target = f"/config/categories/{made.id}"
    assert await _actions(engine) == [
        ("APPLIANCE_MANAGER", "CATEGORY_CREATE", target),
        ("APPLIANCE_MANAGER", "CATEGORY_MODIFY", target),
        ("APPLIANCE_MANAGER", "CATEGORY_DELETE", target),
    ]


async def test_names_are_unique_and_valid(engine: AsyncEngine, actor: Actor) -> None:
    made = await cats.create_category(engine, cats.CategorySpec(name="Web"), actor=actor)
    with pytest.raises(Conflict) as dup:
        await cats.create_category(engine, cats.CategorySpec(name="Others"), actor=actor)
    assert dup.value.code == cats.DUPLICATED_NAME
    with pytest.raises(Conflict):
        await cats.update_category(engine, made.id, cats.CategorySpec(name="Others"), actor=actor)
    for bad in ("", "   ", "x" * 129):
        with pytest.raises(InvalidInput) as refused:
            await cats.create_category(engine, cats.CategorySpec(name=bad), actor=actor)
        assert refused.value.code == cats.INVALID_NAME


async def test_the_default_stays(engine: AsyncEngine, actor: Actor) -> None:
    default = await cats.default_category(engine)
    with pytest.raises(Conflict) as undeletable:
        await cats.delete_category(engine, default.id, actor=actor)
    assert undeletable.value.code == cats.DEFAULT_CATEGORY
    for spec in (cats.CategorySpec(name="Misc", erasable=False), cats.CategorySpec(name="Others")):
        with pytest.raises(Conflict) as kept:
            await cats.update_category(engine, default.id, spec, actor=actor)
        assert kept.value.code == cats.DEFAULT_CATEGORY
    # Saying it back as it is changes nothing and is fine.
    same = await cats.update_category(
        engine, default.id, cats.CategorySpec(name="Others", erasable=False), actor=actor
    )
    assert same == default


async def test_not_erasable_cannot_be_deleted(engine: AsyncEngine, actor: Actor) -> None:
    kept = await cats.create_category(
        engine, cats.CategorySpec(name="Golden", erasable=False), actor=actor
    )
    with pytest.raises(Conflict) as refused:
        await cats.delete_category(engine, kept.id, actor=actor)
    assert refused.value.code == cats.NOT_ERASABLE
    await cats.update_category(
        engine, kept.id, cats.CategorySpec(name="Golden", erasable=True), actor=actor
    )
    await cats.delete_category(engine, kept.id, actor=actor)


async def test_listing_pages_and_filters(engine: AsyncEngine, actor: Actor) -> None:
    for name in ("Web", "Databases", "Webcache"):
        await cats.create_category(engine, cats.CategorySpec(name=name), actor=actor)
    page = await cats.list_categories(engine, page=PageRequest(limit=2))
    assert ([c.name for c in page.items], page.total) == (["Databases", "Others"], 4)
    web = await cats.list_categories(engine, page=PageRequest(has="Web", by="id"))
    assert [c.name for c in web.items] == ["Web", "Webcache"]
