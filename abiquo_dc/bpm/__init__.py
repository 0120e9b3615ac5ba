"""Business Process Manager: disk format conversions, one at a time per repository."""
