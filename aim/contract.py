"""The thrift contract, loaded once from aim.thrift beside this file."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import thriftpy2

THRIFT_FILE = Path(__file__).with_name("aim.thrift")


def load() -> ModuleType:
    return thriftpy2.load(str(THRIFT_FILE), module_name="aim_thrift")
