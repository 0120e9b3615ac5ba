"""abiquo-dc: run one datacenter's remote services."""

from __future__ import annotations

from pathlib import Path

from abiquo_dc.app import build_datacenter
from abiquo_dc.identity import datacenter_uuid
from abiquo_dc.settings import DCSettings
from abiquo_runtime.cli import load_or_exit, service_arguments
from abiquo_runtime.messaging.amqp import AmqpTransport
from abiquo_runtime.process import run_service, serve


def main(argv: list[str] | None = None) -> int:
    args = service_arguments("abiquo-dc").parse_args(argv)
    settings = load_or_exit(DCSettings, args.config, program="abiquo-dc")

    async def run() -> int:
        uuid = datacenter_uuid(settings.datacenter.uuid, Path(settings.datacenter.state_dir))
        transport = AmqpTransport(
            settings.rabbitmq.url,
            connection_name=f"abiquo-dc {uuid}",
            publish_timeout=settings.rabbitmq.publish_timeout,
        )
        return await serve(build_datacenter(settings, transport=transport, dc_uuid=uuid))

    return run_service(run)


if __name__ == "__main__":
    raise SystemExit(main())
