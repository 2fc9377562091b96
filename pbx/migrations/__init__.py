"""Alembic migrations of the PBX's database (see :mod:`pbx.schema`, which runs them)."""
