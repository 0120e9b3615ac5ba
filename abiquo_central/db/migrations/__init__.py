"""Alembic migrations of abiquo-central's schema (run them with abiquo_central.db.migrate)."""
