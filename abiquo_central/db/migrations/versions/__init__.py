"""One module per schema revision; alembic reads them as files."""
