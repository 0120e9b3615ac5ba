"""abiquo-dc: one process per datacenter hosting the six remote services on one bus."""
