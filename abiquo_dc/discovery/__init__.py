"""Discovery Manager: what hypervisor answers at an address, and what it holds."""
