"""Read the PBX's database from tests (the PBX writes it from its own process)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any


def rows(db: Path, sql: str, *args: object) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args).fetchall()]
    finally:
        con.close()


def wait_rows(db: Path, sql: str, *args: object, count: int = 1, timeout: float = 5.0,
              where: str = "") -> list[dict[str, Any]]:
    """Poll until the query returns at least ``count`` rows (the writer thread batches)."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            found = rows(db, sql, *args)
        except sqlite3.OperationalError:
            found = []
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"expected {count} rows for {sql!r} {args}, got {found} {where}")
