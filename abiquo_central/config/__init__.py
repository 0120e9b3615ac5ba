"""Platform configuration: hypervisor types, disk formats, template categories and the
system properties administrators change at run time."""
