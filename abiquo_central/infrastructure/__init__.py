"""Infrastructure: datacenters, their remote services, racks, machines, datastores."""
