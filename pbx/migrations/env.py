"""Alembic environment of the PBX's database, run by :mod:`pbx.schema` (no alembic.ini).

The caller hands over what it already has in ``config.attributes``:

- ``connection``: an open SQLAlchemy connection, usually inside the caller's transaction (then
  every step runs in that one transaction, which :mod:`pbx.schema` holds with a lock);
- ``target_metadata`` (optional): the MetaData objects the models define, a sequence. Only
  ``alembic revision --autogenerate`` and schema comparisons need it; the composition root owns
  the models, so this module does not import them.

Without a connection, the URL in the ``sqlalchemy.url`` option is opened the way the PBX opens
it (:func:`pbx.db.open_engine`), or, in offline mode, rendered as SQL for that URL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from pbx.db import open_engine

config = context.config
target_metadata = config.attributes.get("target_metadata")


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: Alembic rebuilds the table (copy and rename) instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("offline migrations need the sqlalchemy.url option")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database: pass a connection in config.attributes or set sqlalchemy.url"
        )
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            _configure(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
