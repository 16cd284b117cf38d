"""Alembic migrations of the metadata schema (run with `broker db upgrade`)."""
