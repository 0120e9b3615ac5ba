"""What the template modules share: error codes, lookups and the category a template is
filed under."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from abiquo_central.db import tables
from abiquo_central.db.rows import inserted_id
from abiquo_runtime.errors import NotFound

REPOSITORY_NOT_FOUND = "AM-0"
TEMPLATE_NOT_FOUND = "AM-1"
TEMPLATE_IN_USE = "AM-2"
INVALID_TEMPLATE = "AM-3"
# The datacenter has no APPLIANCE_MANAGER remote service registered.
NO_APPLIANCE_MANAGER = "AM-4"
# The Appliance Manager refused or failed a request.
APPLIANCE_MANAGER_FAILED = "AM-5"
INVALID_DOWNLOAD = "AM-6"
CONVERSION_NOT_FOUND = "AM-7"
INVALID_CONVERSION = "AM-8"
# A template that is not downloaded yet has no disk to convert.
TEMPLATE_NOT_READY = "AM-9"

_cat = tables.category


def ovf_key(ovf_id: str) -> str:
    """The unique key's stand-in for ovf_id (an index on 1024 characters is too long)."""
    return hashlib.sha256(ovf_id.encode("utf-8")).hexdigest()


def repository_not_found() -> NotFound:
    return NotFound("The requested datacenter repository does not exist", code=REPOSITORY_NOT_FOUND)


def template_not_found() -> NotFound:
    return NotFound(
        "The requested virtual machine template does not exist", code=TEMPLATE_NOT_FOUND
    )


async def default_category_id(conn: AsyncConnection) -> int | None:
    return (
        await conn.execute(
            select(_cat.c.id).where(_cat.c.is_default.is_(True)).order_by(_cat.c.id).limit(1)
        )
    ).scalar_one_or_none()


async def ensure_category(engine: AsyncEngine, name: str) -> int | None:
    """The id of the category called `name`, created (erasable) when missing, as Abiquo
    filed a template under the category its OVF envelope names; the default category
    when `name` is empty. In a transaction of its own, so that a concurrent creation of
    the same name is simply read back."""
    name = name.strip()[:128]
    async with engine.connect() as conn:
        if not name:
            return await default_category_id(conn)
        found = (
            await conn.execute(select(_cat.c.id).where(_cat.c.name == name))
        ).scalar_one_or_none()
    if found is not None:
        return int(found)
    try:
        async with engine.begin() as conn:
            return inserted_id(
                await conn.execute(_cat.insert().values(name=name, erasable=True, is_default=False))
            )
    except IntegrityError:
        async with engine.connect() as conn:
            return int(
                (await conn.execute(select(_cat.c.id).where(_cat.c.name == name))).scalar_one()
            )
