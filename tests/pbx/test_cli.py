"""The ``pbx`` command as an admin runs it: exit codes, output, and reload by SIGHUP."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx.cli import main
from pbx.config import Config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "pbx.yaml"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

VALID = 'sip:\n  listen: ["udp:127.0.0.1:5070"]\n  domain: pbx.test\n'
INVALID = 'sip:\n  listen: ["udp:127.0.0.1:5070"]\n  domain: pbx.test\n  domian: typo\n'

# Prints HUP and exits on SIGHUP; prints "ready" once the handler is installed.
HUP_CATCHER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGHUP, lambda *a: (print('HUP', flush=True), sys.exit(0)))\n"
    "print('ready', flush=True)\n"
    "time.sleep(30)\n"
)


def pbx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbx", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )


@pytest.fixture
def hup_catcher() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HUP_CATCHER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "helper process did not start"
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_check_ok() -> None:
    result = pbx("check", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"ok: {EXAMPLE} (3 users; domain pbx.local; listen udp:0.0.0.0:5060, tcp:0.0.0.0:5060)\n"
    )
    assert result.stderr == ""


def test_check_reports_every_issue(tmp_path: Path) -> None:
    path = tmp_path / "pbx.yaml"
    path.write_text(INVALID + "users:\n  - {id: a, extension: x1, password: p}\n")
    result = pbx("check", "--config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:4:3: sip.domian: unknown key (did you mean 'domain'?)",
        f"{path}:6:13: users[0].extension: invalid extension 'x1': use 1 to 15 digits",
    ]


def test_check_directory(tmp_path: Path) -> None:
    (tmp_path / "sip.yaml").write_text(VALID)
    (tmp_path / "users.yaml").write_text('users: [{id: a, extension: "7", password: p}]\n')
    result = pbx("check", "--config", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {tmp_path} (1 user; domain pbx.test;")


def test_check_missing_file_and_usage(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = pbx("check", "--config", str(missing))
    assert result.returncode == 2
    assert result.stderr == f"pbx: {missing}: no such file or directory\n"
    usage = pbx("check")
    assert usage.returncode == 2
    assert "--config" in usage.stderr
    assert pbx().returncode == 2


def test_version() -> None:
    result = pbx("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pbx ")


def test_reload_sends_sighup(tmp_path: Path, hup_catcher: subprocess.Popen[str]) -> None:
    pidfile = tmp_path / "pbx.pid"
    pidfile.write_text(f"{hup_catcher.pid}\n")
    result = pbx("reload", "--pidfile", str(pidfile))
    assert result.returncode == 0, result.stderr
    assert f"sent SIGHUP to process {hup_catcher.pid}" in result.stdout
    out, _ = hup_catcher.communicate(timeout=20)
    assert out.strip() == "HUP"


def test_reload_checks_config_first(tmp_path: Path, hup_catcher: subprocess.Popen[str]) -> None:
    pidfile = tmp_path / "pbx.pid"
    pidfile.write_text(str(hup_catcher.pid))
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID)
    result = pbx("reload", "--pidfile", str(pidfile), "--config", str(bad))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}:4:3: sip.domian: unknown key (did you mean 'domain'?)",
        "pbx: not reloading: the configuration has errors; the PBX keeps running as it is",
    ]
    assert hup_catcher.poll() is None  # not signalled

    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    result = pbx("reload", "--pidfile", str(pidfile), "--config", str(good))
    assert result.returncode == 0, result.stderr
    out, _ = hup_catcher.communicate(timeout=20)
    assert out.strip() == "HUP"


def test_reload_missing_pidfile(tmp_path: Path) -> None:
    pidfile = tmp_path / "pbx.pid"
    result = pbx("reload", "--pidfile", str(pidfile))
    assert result.returncode == 1
    assert result.stderr == (
        f"pbx: pidfile {pidfile} not found; is the PBX running (pbx run --pidfile {pidfile})?\n"
    )


def test_reload_stale_pidfile(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait(timeout=30)
    pidfile = tmp_path / "pbx.pid"
    pidfile.write_text(str(finished.pid))
    result = pbx("reload", "--pidfile", str(pidfile))
    assert result.returncode == 1
    assert result.stderr == (
        f"pbx: no process {finished.pid}: pidfile {pidfile} is stale (is the PBX running?)\n"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("garbage", "does not hold a process id (found 'garbage')"),
        ("", "does not hold a process id (found '')"),
        ("-1\n", "does not hold a process id (found '-1')"),
        ("1", "holds an invalid process id 1"),
        ("0", "holds an invalid process id 0"),
    ],
)
def test_reload_refuses_bad_pidfile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    pidfile = tmp_path / "pbx.pid"
    pidfile.write_text(content)
    assert main(["reload", "--pidfile", str(pidfile)]) == 1
    assert capsys.readouterr().err == f"pbx: pidfile {pidfile} {message}\n"


def test_run_refuses_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID)
    result = pbx("run", "--config", str(bad))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}:4:3: sip.domian: unknown key (did you mean 'domain'?)"
    ]


def test_run_hands_the_config_to_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Config, Path, Path | None]] = []

    def run(config: Config, config_path: Path, pidfile: Path | None) -> int:
        calls.append((config, config_path, pidfile))
        return 7

    server = types.ModuleType("pbx.server")
    server.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pbx.server", server)
    path = tmp_path / "pbx.yaml"
    path.write_text(VALID)
    pidfile = tmp_path / "pbx.pid"
    assert main(["run", "--config", str(path), "--pidfile", str(pidfile)]) == 7
    [(config, config_path, given_pidfile)] = calls
    assert config.sip.domain == "pbx.test"
    assert (config_path, given_pidfile) == (path, pidfile)
