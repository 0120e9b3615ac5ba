"""The virtual side of the cloud: virtual datacenters with their private networks,
virtual appliances and virtual machines."""
