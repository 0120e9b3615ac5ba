"""Business Process Manager: disk format conversions, one at a time per repository.

A shell for now: it runs, reports its state and answers its check.
"""

from __future__ import annotations

from abiquo_dc.subsystem import Subsystem


class BusinessProcessManager(Subsystem):
    name = "bpm"
    path = "bpm-async"
    check_answers_uuid = True
