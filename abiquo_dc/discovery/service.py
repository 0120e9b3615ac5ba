"""Discovery Manager: what hypervisor answers at an address, and what it holds.

A shell for now: it runs, reports its state and answers its check.
"""

from __future__ import annotations

from abiquo_dc.subsystem import Subsystem


class DiscoveryManager(Subsystem):
    name = "discovery"
    path = "nodecollector"
