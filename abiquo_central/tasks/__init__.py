"""Asynchronous work on VMs: tasks and their jobs, and the outbox that carries them."""
