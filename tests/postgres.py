"""A throw-away PostgreSQL server for tests: its own data directory, port and lifetime.

:func:`postgres_server` runs ``initdb`` into a temporary directory, starts ``postgres`` on a
free loopback port (its Unix socket in the same directory, never the system's), yields a
:class:`PostgresServer`, and at the end stops the server by its PID and removes the directory.
PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` system
user that Debian's ``postgresql`` package creates.

The binaries come from Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``), which
.ci/run installs: a test that needs the server FAILS when they are missing, unless
``PBX_SKIP_POSTGRES=1`` is set, which skips every such test (for local runs without it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

import pytest

from tests.peers import ports

SKIP_ENV = "PBX_SKIP_POSTGRES"
_SUPERUSER = "pbx"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


@dataclass
class PostgresServer:
    """A running server; every database on it is reachable without a password."""

    host: str
    port: int
    user: str
    pid: int
    log: Path
    _next: int = field(default=0, repr=False)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """Create a new, empty database and return its URL."""
        import psycopg
        from psycopg import sql

        self._next += 1
        name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())[:40]}_{self._next}"
        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


def find_bindir() -> Path | None:
    """The directory of the newest installed ``initdb`` and ``postgres``, or None."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _missing(reason: str) -> NoReturn:
    pytest.fail(
        f"{reason}: install Debian's postgresql package (apt-get install postgresql; .ci/run"
        f" does), or set {SKIP_ENV}=1 to skip the tests that need it"
    )


def _run_as() -> tuple[int, int] | None:
    """The (uid, gid) to run the server as: ``postgres`` under root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        _missing("running as root and there is no postgres user to run PostgreSQL as")
    return entry.pw_uid, entry.pw_gid


def _spawn(
    argv: list[str], user: tuple[int, int] | None, cwd: Path, out: int | IO[bytes]
) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(cwd)}
    if user is None:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
        user=user[0], group=user[1], extra_groups=[],
    )


def _ready(server: PostgresServer) -> bool:
    import psycopg

    try:
        with psycopg.connect(
            host=server.host, port=server.port, user=server.user, dbname="postgres",
            connect_timeout=2,
        ):
            return True
    except psycopg.OperationalError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT): the server ends its sessions and exits; SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(_STOP_TIMEOUT)


def _start(bindir: Path, root: Path, user: tuple[int, int] | None) -> tuple[
        PostgresServer, subprocess.Popen[bytes]]:
    """Start the server on a free port; a port taken meanwhile gets another try."""
    data = root / "data"
    log = root / "server.log"
    for _attempt in range(3):
        port = ports.free_port()
        with log.open("ab") as out:
            proc = _spawn(
                [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                 "-k", str(root),
                 # A test server: durability buys nothing and costs seconds.
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=50"],
                user, root, out,
            )
        server = PostgresServer("127.0.0.1", port, _SUPERUSER, proc.pid, log)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(server):
                return server, proc
            time.sleep(0.1)
        _stop(proc)
        if "could not bind" not in log.read_text(errors="replace"):
            break
    raise RuntimeError(f"PostgreSQL did not start; its log:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Run a fresh PostgreSQL server for the duration of the block (see the module docstring).

    Inside a test it fails (or, with ``PBX_SKIP_POSTGRES=1``, skips) when PostgreSQL is missing.
    """
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"PostgreSQL tests skipped ({SKIP_ENV}=1)")
    bindir = find_bindir()
    if bindir is None or not (bindir / "postgres").exists():
        _missing("the PostgreSQL server binaries (initdb, postgres) are not installed")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg is not installed (pip install 'psycopg[binary]', a dependency)")
    user = _run_as()
    # Not pytest's tmp_path: its parents are private to root, and the server user must reach
    # the directory; a short path also keeps the socket name under the 107-byte limit.
    root = Path(tempfile.mkdtemp(prefix="pbx-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        if user is not None:
            os.chown(root, *user)
        init = _spawn(
            [str(bindir / "initdb"), "-D", str(root / "data"), "-U", _SUPERUSER,
             "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
            user, root, subprocess.PIPE,
        )
        try:
            out, _ = init.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            init.kill()
            init.wait()
            raise
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{out.decode(errors='replace')}")
        server, proc = _start(bindir, root, user)
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)
