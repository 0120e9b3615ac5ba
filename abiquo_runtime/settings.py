"""Typed settings: a TOML file, then ABIQUO_* environment variables over it.

`ABIQUO_HTTP__PORT=9000` sets `[http] port = 9000`: the double underscore separates a
section from its key. Values from the environment are strings; msgspec converts them to
the declared type and a bad one is reported with its path, as a bad TOML value is.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

ENV_PREFIX = "ABIQUO_"
T = TypeVar("T")


class SettingsError(Exception):
    """The settings cannot be loaded: the message names the file or variable and the field."""


class HttpSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    # The externally visible base URL, for links, when a proxy does not send X-Forwarded-*.
    public_url: str = ""


class LogSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: a console rendering on a terminal, JSON lines otherwise (journald, files).
    format: Literal["auto", "console", "json"] = "auto"


class ShutdownSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    stop_accepting_timeout: float = 2.0
    drain_timeout: float = 5.0
    close_timeout: float = 2.0


class RabbitSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    prefetch: int = 16
    # How long a publish waits for the broker (reconnects included) before it gives up.
    publish_timeout: float = 30.0


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _env_value(raw: str) -> Any:
    # Lists and tables can be given as JSON; anything else stays a string for msgspec.
    if raw[:1] in "[{":
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return raw
    return raw


def env_overrides(
    fields: set[str], env: Mapping[str, str], prefix: str = ENV_PREFIX
) -> dict[str, Any]:
    """The nested mapping that the environment sets, limited to the known top-level fields."""
    found: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(prefix):
            continue
        path = [p for p in key[len(prefix) :].lower().split("__") if p]
        if path and path[0] in fields:
            _set_path(found, path, _env_value(raw))
    return found


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    cls: type[T],
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build `cls` from the TOML file at `path`, the environment and explicit overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path} is not valid TOML: {exc}") from exc
    fields = set(getattr(cls, "__struct_fields__", ()))
    data = _merge(data, env_overrides(fields, os.environ if env is None else env))
    if overrides:
        data = _merge(data, overrides)
    try:
        return msgspec.convert(data, cls, strict=False)
    except msgspec.ValidationError as exc:
        where = f"{path}" if path is not None else "settings"
        raise SettingsError(f"{where}: {exc}") from exc
