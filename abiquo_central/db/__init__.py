"""abiquo-central's database: SQLAlchemy Core tables, the engine, alembic migrations."""
