"""Logs: readable on a terminal, one JSON object per line anywhere else."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from abiquo_runtime.correlation import correlation
from abiquo_runtime.logs import configure_logging
from abiquo_runtime.settings import LogSettings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_test_logging() -> Iterator[None]:
    yield
    configure_logging(LogSettings(level="info", format="console"), program="tests")


def test_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(format="auto"), program="abiquo-dc", stream=out)
    with correlation("req-1"):
        structlog.get_logger("abiquo.test").info("hello", vm="web-1")
    logging.getLogger("aiohttp.server").warning("from the standard library")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "hello"
    assert first["vm"] == "web-1"
    assert first["correlation_id"] == "req-1"
    assert first["program"] == "abiquo-dc"
    assert first["level"] == "info"
    assert second["event"] == "from the standard library"
    assert second["level"] == "warning"


def test_console_on_a_terminal() -> None:
    out = Terminal()
    configure_logging(LogSettings(format="auto"), program="abiquo-dc", stream=out)
    structlog.get_logger("abiquo.test").info("hello", vm="web-1")
    line = out.getvalue().strip()
    assert "hello" in line and "vm=web-1" in line
    with pytest.raises(ValueError):
        json.loads(line)


def test_level_filters() -> None:
    out = io.StringIO()
    configure_logging(LogSettings(level="warning", format="json"), program="x", stream=out)
    structlog.get_logger("abiquo.test").info("quiet")
    structlog.get_logger("abiquo.test").warning("loud")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]
