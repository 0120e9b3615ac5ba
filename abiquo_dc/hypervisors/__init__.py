"""Hypervisor drivers: one contract (base.py), one module per hypervisor type, and the
simulator. Nothing here knows of the subsystems; they reach a hypervisor only through
the contract."""
