"""structlog for every program, with the standard library's loggers routed through it.

On a terminal the output is for eyes; anywhere else (journald, a file, a pipe) it is one
JSON object per line, so that aiohttp's, aio-pika's and our own lines parse alike.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from abiquo_runtime.settings import LogSettings


def configure_logging(settings: LogSettings, *, program: str, stream: Any = None) -> None:
    out = stream if stream is not None else sys.stderr
    use_console = settings.format == "console" or (
        settings.format == "auto" and hasattr(out, "isatty") and out.isatty()
    )
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # aio-pika and aiormq are chatty at INFO about every channel; keep their warnings.
    for noisy in ("aio_pika", "aiormq", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.contextvars.bind_contextvars(program=program)
