"""VM templates: the enterprises' repositories in each datacenter, the templates the
datacenters' Appliance Managers report in them, and their disks' conversions."""
