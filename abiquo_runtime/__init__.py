"""What every abiquo program shares to run as a service.

Settings, logging, correlation ids, guarded background tasks, staged shutdown, systemd
notification, the error taxonomy and the message transports (RabbitMQ and its in-process
twin). It knows none of the programs: central, the datacenter and the AIM build on it.
"""
