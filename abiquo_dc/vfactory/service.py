"""Virtualization Manager: vM jobs from central run on the hypervisors.

A shell for now: it runs, reports its state and answers its check.
"""

from __future__ import annotations

from abiquo_dc.subsystem import Subsystem


class VirtualFactory(Subsystem):
    name = "vfactory"
    path = "virtualfactory"
    check_answers_uuid = True
