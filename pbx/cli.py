"""The ``pbx`` command: check the configuration, run the PBX, ask a running PBX to reload.

Exit codes: 0 success; 1 the configuration is invalid or the running PBX could not be
signalled; 2 usage errors and configuration files that cannot be found or read.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Protocol, cast

from pbx.config import Config, ConfigError
from pbx.prompts import load_resolved

__all__ = ["main"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


class _RunServer(Protocol):
    def __call__(self, config: Config, config_path: Path, pidfile: Path | None) -> int: ...


def _version() -> str:
    try:
        return metadata.version("pbx")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbx", description="Self-hosted SIP PBX with call queues, IVR, recording and CRM sync."
    )
    parser.add_argument("--version", action="version", version=f"pbx {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate the configuration and report every problem")
    check.add_argument(
        "--config",
        required=True,
        type=Path,
        metavar="PATH",
        help="YAML file, or a directory of *.yaml files",
    )

    run = commands.add_parser("run", help="validate the configuration and run the PBX")
    run.add_argument(
        "--config",
        required=True,
        type=Path,
        metavar="PATH",
        help="YAML file, or a directory of *.yaml files",
    )
    run.add_argument(
        "--pidfile", type=Path, metavar="PATH", help="write the process id here (for pbx reload)"
    )

    reload = commands.add_parser(
        "reload", help="tell a running PBX to reload its configuration (SIGHUP)"
    )
    reload.add_argument(
        "--pidfile",
        required=True,
        type=Path,
        metavar="PATH",
        help="the pidfile the PBX was started with",
    )
    reload.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="check this configuration first and do not signal if it is invalid",
    )
    return parser


def _error(message: str) -> None:
    print(f"pbx: {message}", file=sys.stderr)


def _load(path: Path) -> Config | int:
    """The configuration with its prompts resolved (files decoded, URLs fetched, text
    spoken), or the exit code after reporting why it cannot be used."""
    try:
        config = load_resolved(path)
    except FileNotFoundError:
        _error(f"{path}: no such file or directory")
        return EXIT_USAGE
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        _error(f"{path}: cannot read: {exc.strerror or exc}")
        return EXIT_USAGE
    prompts = config.resolved_prompts
    for warning in prompts.warnings if prompts is not None else ():
        print(f"warning: {warning}", file=sys.stderr)
    return config


def _summary(path: Path, config: Config) -> str:
    count = len(config.users)
    users = f"{count} user" if count == 1 else f"{count} users"
    listen = ", ".join(str(address) for address in config.sip.listen)
    return f"ok: {path} ({users}; domain {config.sip.domain}; listen {listen})"


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if isinstance(config, int):
        return config
    print(_summary(args.config, config))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if isinstance(config, int):
        return config
    # Imported here so that `pbx check` and `pbx reload` stay light and never start anything.
    server = importlib.import_module("pbx.server")
    run_server = cast(_RunServer, server.run)
    try:
        return int(run_server(config, args.config, args.pidfile))
    except KeyboardInterrupt:
        return 130


def _read_pid(pidfile: Path) -> int | str:
    """The PID in ``pidfile``, or a message saying why there is none."""
    try:
        text = pidfile.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return f"pidfile {pidfile} not found; is the PBX running (pbx run --pidfile {pidfile})?"
    except OSError as exc:
        return f"cannot read pidfile {pidfile}: {exc.strerror or exc}"
    if not text.isdigit():
        return f"pidfile {pidfile} does not hold a process id (found {text[:40]!r})"
    pid = int(text)
    # kill(0) and kill(-1) signal whole groups and kill(1) is init: never from a bad pidfile.
    if pid <= 1:
        return f"pidfile {pidfile} holds an invalid process id {pid}"
    return pid


def _reload(args: argparse.Namespace) -> int:
    if args.config is not None:
        config = _load(args.config)
        if isinstance(config, int):
            _error("not reloading: the configuration has errors; the PBX keeps running as it is")
            return config
    pid = _read_pid(args.pidfile)
    if isinstance(pid, str):
        _error(pid)
        return EXIT_INVALID
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        _error(f"no process {pid}: pidfile {args.pidfile} is stale (is the PBX running?)")
        return EXIT_INVALID
    except PermissionError:
        _error(f"not allowed to signal process {pid}; run as the PBX's user or root")
        return EXIT_INVALID
    print(f"sent SIGHUP to process {pid}; the PBX logs whether the new configuration applied")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pbx`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handlers = {"check": _check, "run": _run, "reload": _reload}
    return handlers[args.command](args)
