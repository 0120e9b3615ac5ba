"""The VSM's HTTP routes, as Abiquo's VSM answered them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from abiquo_dc.vsm.service import VirtualSystemMonitor


def vsm_routes(vsm: VirtualSystemMonitor) -> list[web.RouteDef]:
    return []
