"""abiquo-central: the Abiquo REST API, its database, and the link to every datacenter."""
