"""abiquo-aim: run the agent."""

from __future__ import annotations

from abiquo_runtime.cli import load_or_exit, service_arguments
from abiquo_runtime.process import run_service, serve
from aim.server import AimServer
from aim.settings import AimSettings


def main(argv: list[str] | None = None) -> int:
    args = service_arguments("abiquo-aim").parse_args(argv)
    settings = load_or_exit(AimSettings, args.config, program="abiquo-aim")
    return run_service(lambda: serve(AimServer(settings)))


if __name__ == "__main__":
    raise SystemExit(main())
