"""Storage System Manager: iSCSI volumes on the storage servers.

A shell for now: it runs, reports its state and answers its check.
"""

from __future__ import annotations

from abiquo_dc.subsystem import Subsystem


class StorageSystemManager(Subsystem):
    name = "ssm"
    path = "ssm"
