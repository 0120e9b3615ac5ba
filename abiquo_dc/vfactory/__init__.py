"""Virtualization Manager: VM jobs from central run on the hypervisors."""
