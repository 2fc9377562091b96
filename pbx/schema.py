"""The database schema: brings whatever database the PBX is given to the newest revision.

The tables are made and changed only by the Alembic migrations in ``pbx/migrations/versions``
(one module per revision, ``0001_baseline.py`` first). :func:`upgrade`, run at start, handles
four kinds of database:

- empty: every migration runs, from the baseline on;
- made before revisions existed (the PBX's tables, no ``alembic_version``): it is checked against
  the baseline, missing baseline tables are added, it is stamped at ``0001`` and upgraded;
- at an older revision: the later migrations run;
- at a revision this version does not know (a newer PBX upgraded it): :class:`SchemaError`,
  and nothing is changed.

Everything runs in one transaction under a lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an
advisory lock), so two PBX processes starting on one database do not race, and a migration that
fails leaves the database as it was.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, Table, inspect, text

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""The Alembic script directory (``env.py`` and ``versions/``)."""

BASELINE = "0001"
"""The revision of the tables as the PBX made them before its schema had revisions."""

# Any fixed number will do: it only has to be the same for every PBX sharing the database.
_PG_LOCK_KEY = 0x50425853


class SchemaError(Exception):
    """The database cannot be brought to this version's schema; the message says why."""


def alembic_config(
    connection: Connection | None = None, target_metadata: Sequence[MetaData] = ()
) -> Config:
    """An Alembic configuration for the PBX's migrations, built in code (no alembic.ini).

    ``connection`` is the one ``env.py`` migrates; ``target_metadata`` (the models' MetaData
    objects) is needed only to autogenerate a revision or compare a database with the models.
    """
    cfg = Config()
    # The value goes through ConfigParser interpolation, where "%" is special.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    if target_metadata:
        cfg.attributes["target_metadata"] = list(target_metadata)
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this version of the PBX knows."""
    heads = _script().get_heads()
    if len(heads) != 1:
        raise SchemaError(
            f"the migrations in {MIGRATIONS_DIR} have {len(heads)} heads ({', '.join(heads)});"
            " each revision must follow exactly one other"
        )
    return heads[0]


def current(engine: Engine) -> str | None:
    """The revision the database is at, or None if it has none (empty, or made before)."""
    with engine.connect() as conn:
        return _current(conn)


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision (see the module docstring).

    Raises :class:`SchemaError` for a database this version cannot take: one at an unknown
    (newer) revision, or one made before revisions whose tables lack baseline columns.
    """
    target = head()
    with _locked(engine) as conn:
        rev = _current(conn)
        if rev is None:
            present = _baseline_tables_in(conn)
            if present:
                _adopt(conn, present)
                rev = BASELINE
        else:
            _check_known(rev, target)
        if rev == target:
            return
        command.upgrade(alembic_config(conn), target)
    logger.info("database schema upgraded from %s to revision %s", rev or "nothing", target)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the database back to ``revision`` (``"base"``: drop every table the PBX made).

    This loses whatever the dropped tables and columns held; it exists to undo an upgrade
    before running an older version of the PBX on the same database.
    """
    with _locked(engine) as conn:
        rev = _current(conn)
        if rev is not None:
            _check_known(rev, head())
        command.downgrade(alembic_config(conn), revision)
    logger.info("database schema downgraded from %s to %s", rev, revision)


def _current(conn: Connection) -> str | None:
    heads = MigrationContext.configure(conn).get_current_heads()
    if len(heads) > 1:
        raise SchemaError(f"the database records several schema revisions: {', '.join(heads)}")
    return heads[0] if heads else None


def _check_known(rev: str, target: str) -> None:
    known = {script.revision for script in _script().walk_revisions()}
    if rev not in known:
        raise SchemaError(
            f"the database is at schema revision {rev!r}, which this version of the PBX does not"
            f" know (its newest is {target!r}): a newer version has upgraded it. Run that"
            " version, or restore a backup of the database taken before the upgrade."
        )


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection inside one transaction that holds the schema lock until it commits."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # The sqlite3 module opens no transaction before DDL by itself, so a failed
            # migration would leave half its changes behind. Take the transaction by hand;
            # IMMEDIATE also takes the write lock, so a second PBX on the same file waits.
            conn.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin():
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
            return
        with conn.begin():
            if conn.dialect.name == "postgresql":
                # Released at commit or rollback; PostgreSQL's DDL is transactional.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            yield conn


def _baseline_tables_in(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) & set(_baseline_create())


def _baseline_create() -> dict[str, Callable[[], Table]]:
    """The baseline module's ``CREATE``: each table's name and the function creating it."""
    script = _script().get_revision(BASELINE)
    if script is None:
        raise SchemaError(f"the baseline revision {BASELINE} is missing from {MIGRATIONS_DIR}")
    create: dict[str, Callable[[], Table]] = script.module.CREATE
    return create


def _baseline_columns(dialect: str) -> dict[str, set[str]]:
    """Each baseline table's columns, as the baseline migration defines them.

    The migration's functions run in offline mode (they render SQL into a buffer that is
    thrown away), which gives their Table objects without touching any database.
    """
    ctx = MigrationContext.configure(
        dialect_name=dialect, opts={"as_sql": True, "output_buffer": io.StringIO()}
    )
    with Operations.context(ctx):
        return {
            name: {col.name for col in create().columns}
            for name, create in _baseline_create().items()
        }


def _adopt(conn: Connection, present: set[str]) -> None:
    """Stamp a database made before revisions at the baseline, after checking its tables."""
    expected = _baseline_columns(conn.dialect.name)
    problems = []
    insp = inspect(conn)
    for name in sorted(present):
        missing = expected[name] - {col["name"] for col in insp.get_columns(name)}
        if missing:
            problems.append(f"table {name} lacks {', '.join(sorted(missing))}")
    if problems:
        raise SchemaError(
            "the database has tables of the PBX but no schema revision, and they do not match"
            f" the baseline ({BASELINE}): {'; '.join(problems)}. It was made by an older version"
            " than this one can upgrade, or by another program."
        )
    absent = [name for name in expected if name not in present]
    if absent:
        create = _baseline_create()
        ctx = MigrationContext.configure(
            conn, opts={"render_as_batch": conn.dialect.name == "sqlite"}
        )
        with Operations.context(ctx):
            for name in absent:
                create[name]()
    command.stamp(alembic_config(conn), BASELINE)
    logger.info(
        "database made before schema revisions: tables checked against the baseline%s,"
        " stamped at revision %s",
        f", added {', '.join(absent)}" if absent else "",
        BASELINE,
    )
