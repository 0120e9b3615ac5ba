"""Virtual System Monitor: every VM state change on the monitored hosts, sent to central.

A shell for now: it runs, reports its state and answers its check.
"""

from __future__ import annotations

from abiquo_dc.subsystem import Subsystem


class VirtualSystemMonitor(Subsystem):
    name = "vsm"
    path = "vsm"
