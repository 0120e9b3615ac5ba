"""Tests of the platform configuration, and the defaults migration 0006 writes."""

from __future__ import annotations

import importlib.util
from functools import cache
from types import ModuleType

from abiquo_central.db.migrate import MIGRATIONS_DIR


@cache
def config_defaults() -> ModuleType:
    """Migration 0006 as a module (its file name is no module name)."""
    path = MIGRATIONS_DIR / "versions" / "0006_config_defaults.py"
    spec = importlib.util.spec_from_file_location("migration_0006", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
