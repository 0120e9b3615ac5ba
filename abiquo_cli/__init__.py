"""abiquo: the operator's command line (database migrations, the all-in-one)."""
