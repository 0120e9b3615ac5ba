"""abiquo-central: serve the API (run `abiquo db upgrade` first)."""

from __future__ import annotations

from abiquo_central.app import Central
from abiquo_central.link import new_process_name
from abiquo_central.settings import CentralSettings
from abiquo_runtime.cli import load_or_exit, service_arguments
from abiquo_runtime.messaging.amqp import AmqpTransport
from abiquo_runtime.process import run_service, serve


def main(argv: list[str] | None = None) -> int:
    args = service_arguments("abiquo-central").parse_args(argv)
    settings = load_or_exit(CentralSettings, args.config, program="abiquo-central")

    async def run() -> int:
        transport = AmqpTransport(
            settings.rabbitmq.url,
            connection_name=new_process_name(),
            publish_timeout=settings.rabbitmq.publish_timeout,
        )
        return await serve(Central(settings, transport=transport))

    return run_service(run)


if __name__ == "__main__":
    raise SystemExit(main())
