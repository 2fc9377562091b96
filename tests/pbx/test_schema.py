"""The schema migrations on SQLite (a file, as the PBX uses it) and on a real PostgreSQL server.

Every test runs once per backend. The PostgreSQL server is started once for the module
(tests/postgres.py) and each test gets a database of its own on it.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select, text

from crmsync.models import Base, Call, Contact, PhoneNumber
from pbx import schema
from pbx.bindings import metadata as bindings_metadata
from pbx.bindings import registrations
from pbx.db import open_engine
from pbx.presence import metadata as presence_metadata
from pbx.presence import presence_table
from pbx.schema import SchemaError
from tests.postgres import PostgresServer, postgres_server

MODELS = [Base.metadata, bindings_metadata, presence_metadata]
# The tables a PBX made with create_all at every start before the schema had revisions.
LEGACY_TABLES = ["calls", "contacts", "leads", "phone_numbers", "registrations", "presence"]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pbx.db'}"
    server: PostgresServer = request.getfixturevalue("pg")
    return server.create_database("schema")


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    eng = open_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="pbx.schema")
    caplog.set_level(logging.INFO, logger="alembic.runtime.migration")
    return caplog


def _schema_lines(log: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in log.records if r.name == "pbx.schema"]


def _ran_migrations(log: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in log.records if r.getMessage().startswith("Running ")]


# --- what the database holds, in a form to compare with the models ---------------------------

def _reflected(engine: Engine) -> dict[str, dict[str, Any]]:
    insp = inspect(engine)
    out: dict[str, dict[str, Any]] = {}
    for name in insp.get_table_names():
        if name == "alembic_version":
            continue
        out[name] = {
            "columns": {c["name"]: c["nullable"] for c in insp.get_columns(name)},
            "primary_key": insp.get_pk_constraint(name)["constrained_columns"],
            "indexes": {
                i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
                for i in insp.get_indexes(name)
                # PostgreSQL lists the index behind a UNIQUE constraint too; the models
                # declare those as constraints, not indexes.
                if not i.get("duplicates_constraint")
            },
        }
    return out


def _declared() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for md in MODELS:
        for table in md.tables.values():
            out[table.name] = {
                "columns": {c.name: c.nullable for c in table.columns},
                "primary_key": [c.name for c in table.primary_key.columns],
                "indexes": {
                    i.name: (tuple(c.name for c in i.columns), bool(i.unique))
                    for i in table.indexes
                },
            }
    return out


def _assert_matches_models(engine: Engine) -> None:
    assert _reflected(engine) == _declared()
    # Alembic's own comparison also covers column types (String lengths, DateTime, ...).
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), MODELS)  # type: ignore[arg-type]
    assert diff == []


def _version_rows(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


# --- rows a running PBX would have written ----------------------------------------------------

_NOW = datetime(2026, 3, 1, 9, 30, 0)


def _write_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Call).values(
            id="c0ffee00-0000-4000-8000-000000000001", sip_call_id="abc@10.0.0.5",
            direction="inbound", from_number="+81312345678", from_name="Tanaka",
            to_number="101", started_at=_NOW, disposition="answered", hangup_cause="",
            transfers=0, callback_attempts=0,
        ))
        conn.execute(insert(Contact).values(
            id="c0ffee00-0000-4000-8000-000000000002", first_name="Hanako", last_name="Tanaka",
            company="Example KK", email="hanako@example.com", created_at=_NOW, updated_at=_NOW,
        ))
        conn.execute(insert(PhoneNumber).values(
            id="c0ffee00-0000-4000-8000-000000000003", owner_kind="contact",
            record_id="c0ffee00-0000-4000-8000-000000000002", number_e164="+81312345678",
            label="work", raw="03-1234-5678",
        ))
        conn.execute(insert(registrations).values(
            aor="sip:alice@pbx.test", uri="sip:alice@127.0.0.1:5070", expires_at=2e9, q=None,
            call_id="reg-1", cseq=7, source="udp:127.0.0.1:5070", path="", user_agent="test",
            params="", updated_at=1.0,
        ))
        conn.execute(insert(presence_table).values(user_id="bob", state="offline", updated_at=1.0))


def _assert_rows_kept(engine: Engine) -> None:
    with engine.connect() as conn:
        call = conn.execute(select(Call.__table__)).mappings().one()
        assert (call["sip_call_id"], call["from_name"], call["started_at"]) == (
            "abc@10.0.0.5", "Tanaka", _NOW)
        assert conn.execute(select(Contact.__table__.c.last_name)).scalar_one() == "Tanaka"
        assert conn.execute(select(PhoneNumber.__table__.c.raw)).scalar_one() == "03-1234-5678"
        assert conn.execute(select(registrations.c.cseq)).scalar_one() == 7
        assert conn.execute(select(presence_table.c.state)).scalar_one() == "offline"


def _create_all_legacy(engine: Engine, skip: tuple[str, ...] = ()) -> None:
    """What the PBX's start did before revisions: create_all of its tables, nothing else."""
    for md in MODELS:
        md.create_all(engine, tables=[
            t for t in md.sorted_tables if t.name in LEGACY_TABLES and t.name not in skip])


# --- a revision after the newest, in a copy of the migrations -----------------------------

NEXT = "9001"

_NEXT_REVISION = '''
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "NEXT"
down_revision = "HEAD"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("note", sa.String(length=64), nullable=True))
        batch.create_index("ix_calls_note", ["note"], unique=False)
    # Widening a column: SQLite cannot ALTER it, so batch mode rebuilds the table.
    with op.batch_alter_table("presence") as batch:
        batch.alter_column("state", type_=sa.String(length=32), existing_nullable=False)
    FAIL


def downgrade() -> None:
    with op.batch_alter_table("presence") as batch:
        batch.alter_column("state", type_=sa.String(length=16), existing_nullable=False)
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_note")
        batch.drop_column("note")
'''


def _migrations_with_next(tmp_path: Path, fail: bool = False) -> Path:
    """A copy of the migrations with one more revision (NEXT) after the newest."""
    copy = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    fail_line = f'raise RuntimeError("{NEXT} failed half way")' if fail else "pass"
    text = _NEXT_REVISION.replace("FAIL", fail_line).replace("HEAD", schema.head())
    (copy / "versions" / f"{NEXT}_calls_note.py").write_text(text.replace("NEXT", NEXT))
    return copy


def _columns(engine: Engine, table: str) -> dict[str, Any]:
    return {c["name"]: c for c in inspect(engine).get_columns(table)}


# --- the tests ----------------------------------------------------------------------------

def test_an_empty_database_is_created_at_head_matching_the_models(
        engine: Engine, log: pytest.LogCaptureFixture) -> None:
    assert schema.current(engine) is None
    schema.upgrade(engine)
    head = schema.head()
    assert schema.current(engine) == head
    _assert_matches_models(engine)
    assert _schema_lines(log) == [f"database schema upgraded from nothing to revision {head}"]
    assert _ran_migrations(log)[0].startswith("Running upgrade  -> 0001, Baseline")


def test_upgrading_a_database_at_head_changes_nothing(
        engine: Engine, log: pytest.LogCaptureFixture) -> None:
    schema.upgrade(engine)
    _write_rows(engine)
    before = _reflected(engine)
    log.clear()
    schema.upgrade(engine)
    assert _ran_migrations(log) == []
    assert _schema_lines(log) == []
    assert _reflected(engine) == before
    assert _version_rows(engine) == [schema.head()]
    _assert_rows_kept(engine)


def test_a_database_made_by_create_all_is_stamped_and_keeps_its_rows(
        engine: Engine, log: pytest.LogCaptureFixture) -> None:
    _create_all_legacy(engine)
    _write_rows(engine)
    assert schema.current(engine) is None
    schema.upgrade(engine)
    assert schema.current(engine) == schema.head()
    head = schema.head()
    assert _schema_lines(log) == [
        "database made before schema revisions: tables checked against the baseline,"
        " stamped at revision 0001",
        *([f"database schema upgraded from 0001 to revision {head}"] if head != "0001" else []),
    ]
    # The baseline itself did not run: its tables were already there.
    assert not any("-> 0001," in m for m in _ran_migrations(log))
    _assert_rows_kept(engine)
    _assert_matches_models(engine)


def test_baseline_tables_missing_from_an_old_database_are_added(
        engine: Engine, log: pytest.LogCaptureFixture) -> None:
    # A PBX from before presence and the CRM's contacts made only these two tables.
    _create_all_legacy(engine, skip=("contacts", "leads", "phone_numbers", "presence"))
    schema.upgrade(engine)
    assert schema.current(engine) == schema.head()
    line = _schema_lines(log)[0]
    assert "added contacts, leads, phone_numbers, presence" in line
    _assert_matches_models(engine)


def test_an_unrevisioned_table_lacking_baseline_columns_is_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE calls (id VARCHAR(36) PRIMARY KEY, sip_call_id VARCHAR(255))"))
    with pytest.raises(SchemaError, match=r"table calls lacks .*started_at"):
        schema.upgrade(engine)
    # Refused before anything was written: no version table, no other tables.
    assert inspect(engine).get_table_names() == ["calls"]


def test_a_database_at_an_unknown_revision_is_refused_untouched(engine: Engine) -> None:
    schema.upgrade(engine)
    _write_rows(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    newest = re.escape(f"newest is '{schema.head()}'")
    with pytest.raises(SchemaError, match=rf"revision '0999'.*{newest}"):
        schema.upgrade(engine)
    assert schema.current(engine) == "0999"
    _assert_rows_kept(engine)


def test_downgrade_to_base_and_up_again(engine: Engine) -> None:
    schema.upgrade(engine)
    schema.downgrade(engine, "base")
    assert schema.current(engine) is None
    assert inspect(engine).get_table_names() == ["alembic_version"]
    schema.upgrade(engine)
    assert schema.current(engine) == schema.head()
    _assert_matches_models(engine)


def test_a_database_at_an_older_revision_is_upgraded(
        engine: Engine, log: pytest.LogCaptureFixture, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    schema.upgrade(engine)
    _write_rows(engine)
    head = schema.head()
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", _migrations_with_next(tmp_path))
    log.clear()
    schema.upgrade(engine)
    assert schema.current(engine) == NEXT
    assert _schema_lines(log) == [f"database schema upgraded from {head} to revision {NEXT}"]
    assert _columns(engine, "calls")["note"]["nullable"] is True
    assert _columns(engine, "presence")["state"]["type"].length == 32
    assert "ix_calls_note" in {i["name"] for i in inspect(engine).get_indexes("calls")}
    _assert_rows_kept(engine)
    # And back: the newer revision's own downgrade.
    schema.downgrade(engine, head)
    assert schema.current(engine) == head
    _assert_matches_models(engine)
    _assert_rows_kept(engine)


def test_a_database_upgraded_by_a_newer_version_is_refused(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS_DIR", _migrations_with_next(tmp_path))
        schema.upgrade(engine)
    assert schema.current(engine) == NEXT
    with pytest.raises(SchemaError, match="a newer version has upgraded it"):
        schema.upgrade(engine)
    with pytest.raises(SchemaError, match="a newer version has upgraded it"):
        schema.downgrade(engine, "base")
    assert schema.current(engine) == NEXT
    assert "note" in _columns(engine, "calls")


def test_a_migration_that_fails_leaves_the_database_as_it_was(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    schema.upgrade(engine)
    _write_rows(engine)
    head = schema.head()
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", _migrations_with_next(tmp_path, fail=True))
    with pytest.raises(RuntimeError, match=f"{NEXT} failed half way"):
        schema.upgrade(engine)
    assert schema.current(engine) == head
    assert "note" not in _columns(engine, "calls")
    assert _columns(engine, "presence")["state"]["type"].length == 16
    _assert_rows_kept(engine)


def test_two_pbx_processes_starting_together_migrate_once(
        url: str, log: pytest.LogCaptureFixture) -> None:
    engines = [open_engine(url) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def start(eng: Engine) -> None:
        try:
            barrier.wait()
            schema.upgrade(eng)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        head = schema.head()
        assert _schema_lines(log) == [f"database schema upgraded from nothing to revision {head}"]
        assert _version_rows(engines[0]) == [head]
        _assert_matches_models(engines[0])
    finally:
        for e in engines:
            e.dispose()



def test_records_at_0004_get_the_call_fields_from_what_they_hold(engine: Engine) -> None:
    """Revision 0005 adds the Calls-module fields: rows already there get their type, status,
    owner and (ended ones) subject worked out as the record writer does it."""
    schema.upgrade(engine)
    schema.downgrade(engine, "0004")
    assert "call_type" not in _columns(engine, "calls")
    base: dict[str, Any] = {
        "sip_call_id": "x", "from_name": "", "started_at": _NOW, "hangup_cause": "",
        "transfers": 0, "callback_attempts": 0, "legal_hold": False, "ended_at": _NOW,
        "caller_user": None, "callee_user": None, "answered_by": None, "queue": None,
        "queue_result": None}
    rows: dict[str, dict[str, Any]] = {
        "answered": {"direction": "inbound", "from_number": "+81312345678",
                     "from_name": "Tanaka", "to_number": "101", "callee_user": "alice",
                     "answered_by": "bob", "disposition": "answered"},
        "rang-out": {"direction": "inbound", "from_number": "+81312345678", "to_number": "101",
                     "callee_user": "alice", "disposition": "no_answer"},
        # The PBX answered a queue caller who never reached an agent: missed all the same.
        "abandoned": {"direction": "inbound", "from_number": "", "to_number": "5000",
                      "disposition": "answered", "queue": "support",
                      "queue_result": "abandoned"},
        "outbound": {"direction": "outbound", "from_number": "102", "to_number": "0312345678",
                     "caller_user": "bob", "disposition": "busy"},
        "internal": {"direction": "internal", "from_number": "101", "to_number": "102",
                     "caller_user": "alice", "callee_user": "bob", "answered_by": "bob",
                     "disposition": "answered"},
        "ringing": {"direction": "inbound", "from_number": "+81312345678", "to_number": "101",
                    "callee_user": "alice", "disposition": "in_progress", "ended_at": None},
    }
    with engine.begin() as conn:
        for name, fields in rows.items():
            values = {**base, **fields, "id": name}
            columns = ", ".join(values)
            conn.execute(text(f"INSERT INTO calls ({columns}) VALUES "
                              f"({', '.join(':' + key for key in values)})"), values)
    schema.upgrade(engine)
    _assert_matches_models(engine)
    with engine.connect() as conn:
        got = {r.id: (r.call_type, r.status, r.owner, r.subject, r.revision, r.who_id)
               for r in conn.execute(select(Call.__table__))}
    assert got == {
        "answered": ("inbound", "completed", "bob", "Inbound call from Tanaka", 1, None),
        "rang-out": ("missed", "completed", "alice", "Missed call from +81312345678", 1, None),
        "abandoned": ("missed", "completed", None, "Missed call from an unknown caller", 1,
                      None),
        "outbound": ("outbound", "completed", "bob", "Outbound call to 0312345678", 1, None),
        "internal": ("internal", "completed", "bob", "Internal call 101 → 102", 1, None),
        # Its subject comes when it ends.
        "ringing": ("inbound", "in_progress", "alice", None, 1, None),
    }
    assert "ix_calls_owner" in {i["name"] for i in inspect(engine).get_indexes("calls")}
    assert "call_legs" in inspect(engine).get_table_names()
