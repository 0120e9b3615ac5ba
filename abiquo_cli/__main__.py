"""abiquo: the operator's command line.

abiquo db upgrade [--config central.toml]     apply the database migrations
abiquo db current [--config central.toml]     print the database's revision
abiquo all-in-one [--config all-in-one.toml] [--port N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from abiquo_runtime.cli import settings_path
from abiquo_runtime.settings import SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abiquo")
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="the central database")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    for name, text in (("upgrade", "apply every migration"), ("current", "print the revision")):
        sub = db_commands.add_parser(name, help=text)
        sub.add_argument("--config", type=Path, default=None, help="central's settings file")
    aio = commands.add_parser("all-in-one", help="central, a datacenter and an AIM in one process")
    aio.add_argument("--config", type=Path, default=None, help="all-in-one's settings file")
    aio.add_argument("--port", type=int, default=None, help="the API's port")
    aio.add_argument("--host", default=None, help="the address to listen on (127.0.0.1)")
    return parser


def _db(command: str, config: Path | None) -> int:
    from abiquo_central.db.migrate import current, upgrade
    from abiquo_central.settings import CentralSettings

    settings = load_settings(CentralSettings, settings_path(config, "abiquo-central"))
    if command == "upgrade":
        upgrade(settings.database.url)
        print(f"database at revision {current(settings.database.url)}")
    else:
        print(current(settings.database.url) or "empty")
    return 0


def _all_in_one(config: Path | None, port: int | None, host: str | None) -> int:
    from abiquo_cli.allinone import AllInOne, AllInOneSettings, admin_password_from_env, announce
    from abiquo_runtime.logs import configure_logging
    from abiquo_runtime.process import run_service, serve

    overrides: dict[str, object] = {}
    if port is not None:
        overrides["port"] = port
    if host is not None:
        overrides["host"] = host
    settings = load_settings(
        AllInOneSettings,
        settings_path(config, "abiquo-all-in-one"),
        overrides={"http": overrides} if overrides else None,
    )
    configure_logging(settings.log, program="abiquo-all-in-one")

    async def run() -> int:
        aio = AllInOne(settings, admin_password=admin_password_from_env())

        async def ready() -> None:
            announce(aio)

        return await serve(aio, on_ready=ready)

    return run_service(run)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "db":
            return _db(args.db_command, args.config)
        return _all_in_one(args.config, args.port, args.host)
    except SettingsError as exc:
        print(f"abiquo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
