"""What the service programs' command lines share: --config, settings, logging."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TypeVar

from abiquo_runtime.logs import configure_logging
from abiquo_runtime.settings import LogSettings, SettingsError, load_settings

T = TypeVar("T")


def service_arguments(program: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"the TOML settings file (default: $ABIQUO_CONFIG, else /etc/abiquo/{program}.toml "
        "when it exists, else built-in defaults)",
    )
    return parser


def settings_path(explicit: Path | None, program: str) -> Path | None:
    """The file to read: given, from ABIQUO_CONFIG, or the packaged default if installed."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get("ABIQUO_CONFIG")
    if from_env:
        return Path(from_env)
    default = Path(f"/etc/abiquo/{program}.toml")
    return default if default.exists() else None


def load_or_exit(cls: type[T], explicit: Path | None, *, program: str) -> T:
    """Load settings and configure logging; on a settings error print one line, exit 2."""
    try:
        settings = load_settings(cls, settings_path(explicit, program))
    except SettingsError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    log = getattr(settings, "log", None)
    configure_logging(log if isinstance(log, LogSettings) else LogSettings(), program=program)
    return settings
