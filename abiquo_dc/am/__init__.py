"""Appliance Manager: the template repository, OVF packages, uploads and downloads."""
