"""Run the real PBX (``python -m pbx run``) as a subprocess on free loopback ports."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.ports import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-admin-key-0123456789"

USERS = {
    "alice": ("101", "alice-secret-1", "Alice Sato"),
    "bob": ("102", "bob-secret-2", "Bob Tanaka"),
    "carol": ("103", "carol-secret-3", "Carol Ito"),
}


@dataclass
class PbxProcess:
    port: int
    workdir: Path
    config_path: Path
    proc: subprocess.Popen[str]
    database: Path
    log: list[str] = field(default_factory=list)
    http_port: int = 0
    """The HTTP API's port (``http.listen``); its admin key is :data:`API_KEY`."""

    @property
    def api(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/api/v1"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def log_text(self) -> str:
        return "\n".join(self.log)

    def wait_log(self, needle: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.log):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"PBX never logged {needle!r}; log:\n{self.log_text()[-4000:]}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def config_text(
    port: int, workdir: Path, extra_sip: str = "",
    users: dict[str, tuple[str, str, str]] | None = None,
    ring_timeout: str = "8s",
    extra_top: str = "",
    user_extra: dict[str, str] | None = None,
    extra_media: str = "",
    http_port: int = 0,
    database: str | None = None,
) -> str:
    rtp = random.randrange(30000, 59000, 2)
    users = users or USERS
    extra = user_extra or {}
    user_yaml = "".join(
        f"  - id: {uid}\n    extension: \"{ext}\"\n    password: {pw}\n    name: {name}\n"
        + extra.get(uid, "")
        for uid, (ext, pw, name) in users.items()
    )
    return textwrap.dedent(
        f"""\
        sip:
          listen: ["udp:{LOOPBACK}:{port}", "tcp:{LOOPBACK}:{port}"]
          domain: pbx.test
          ring_timeout: {ring_timeout}
        """
    ) + extra_sip + textwrap.dedent(
        f"""\
        media:
          rtp_ports: [{rtp}, {rtp + 400}]
          address: {LOOPBACK}
        storage:
          database: {database or f"sqlite:///{workdir}/pbx.db"}
          recordings: {workdir}/recordings
        logging:
          level: info
        http:
          listen: "{LOOPBACK}:{http_port or free_port()}"
          api_keys: [{{name: test, key: {API_KEY}, role: admin}}]
        users:
        """
    ).replace(f"  address: {LOOPBACK}\n", f"  address: {LOOPBACK}\n{extra_media}", 1) \
        + user_yaml + extra_top


@contextmanager
def run_pbx(workdir: Path, extra_sip: str = "", port: int | None = None,
            users: dict[str, tuple[str, str, str]] | None = None,
            ring_timeout: str = "8s", extra_top: str = "",
            user_extra: dict[str, str] | None = None,
            extra_media: str = "", database: str | None = None) -> Iterator[PbxProcess]:
    """The PBX as a subprocess on a free loopback port; ``user_extra`` adds YAML lines (indented
    four spaces) to a user's entry, e.g. ``{"carol": "    dtmf_mode: inband\\n"}``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    http_port = free_port()
    cfg = workdir / "pbx.yaml"
    cfg.write_text(config_text(port, workdir, extra_sip, users, ring_timeout, extra_top,
                               user_extra, extra_media, http_port, database))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbx", "run", "--config", str(cfg),
         "--pidfile", str(workdir / "pbx.pid")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    pbx = PbxProcess(port, workdir, cfg, proc, workdir / "pbx.db", http_port=http_port)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            pbx.log.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    try:
        pbx.wait_log("PBX ready", timeout=20)
        yield pbx
    finally:
        pbx.stop()
