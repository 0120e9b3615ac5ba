"""Appliance Manager: the template repository, OVF packages, uploads and downloads.

A shell for now: it runs, reports its state and answers its check.
"""

from __future__ import annotations

from abiquo_dc.subsystem import Subsystem


class ApplianceManager(Subsystem):
    name = "am"
    path = "am"
