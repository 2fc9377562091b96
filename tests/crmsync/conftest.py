"""The CRM store's tests run on both databases the PBX supports: a SQLite file, and a database
on one throw-away PostgreSQL server shared by the whole session (see tests/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from crmsync.models import Base
from pbx.db import open_engine
from tests.postgres import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The PBX's database with every table: a SQLite file, or a fresh database on the
    PostgreSQL server (where several PBX nodes would share it)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'pbx.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("pg")
        url = server.create_database("crm")
    engine = open_engine(url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()
