"""Message transports: RabbitMQ (aio-pika) and its in-process twin, behind one interface."""

from abiquo_runtime.messaging.transport import (
    Consumer,
    Delivery,
    Handler,
    QueueSpec,
    Transport,
    TransportClosed,
)

__all__ = ["Consumer", "Delivery", "Handler", "QueueSpec", "Transport", "TransportClosed"]
