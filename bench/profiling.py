"""Profiling helpers for the SIPp benchmarks: py-spy on the PBX, cProfile tables."""

from __future__ import annotations

import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness import ROOT, SIPP_CORE

# -- profiling -----------------------------------------------------------------------------------


class Profiler:
    """``py-spy record`` attached to a PID, writing collapsed stacks (one thread per root)."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 200,
                 gil_only: bool = False) -> None:
        self.out = out
        # py-spy runs on the load generator's core so the PBX's core only pays for the pauses.
        self.command = ["taskset", "-c", SIPP_CORE, "py-spy", "record", "--pid", str(pid),
                        "--duration", str(max(1, int(seconds))), "--rate", str(rate),
                        "--format", "raw", "--threads", "--function", "--output", str(out)]
        if gil_only:
            # Only samples of the thread holding the GIL: where the interpreter's time goes,
            # without threads that merely wait for the GIL (or in C code that released it).
            self.command.append("--gil")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Profiler:
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        return self

    def wait(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode != 0 or not self.out.exists():
            raise RuntimeError(f"py-spy failed ({self.proc.returncode}): "
                               f"{err.decode(errors='replace')[-2000:]}")


@dataclass
class ProfileSummary:
    """Samples per function: self (the leaf) and cumulative (anywhere on the stack)."""

    total: int
    by_thread: Counter[str]
    self_samples: Counter[str]
    cumulative: Counter[str]

    def render(self, top: int = 15) -> str:
        """Tables of threads, top self and top cumulative functions, as percentages."""
        out = [f"{self.total} samples"]
        out.append("by thread: " + ", ".join(
            f"{name} {100 * n / self.total:.1f}%" for name, n in self.by_thread.most_common()))
        for title, counts in (("self", self.self_samples), ("cumulative", self.cumulative)):
            out.append(f"\ntop {top} by {title} time:")
            out.append(f"{'%':>6}  function")
            ranked = [(name, n) for name, n in counts.most_common()
                      if title == "self" or not _is_entry(name.split(" (")[0],
                                                          name.split(" (")[-1].rstrip(")"))]
            for name, n in ranked[:top]:
                out.append(f"{100 * n / self.total:6.1f}  {name}")
        return "\n".join(out)


def _short(frame: str) -> str:
    # "handle (pbx/sipapp.py)" or "handle (/abs/path/pbx/sipapp.py)": keep the repo-relative path.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    root = str(ROOT) + "/"
    if where.startswith(root):
        where = where[len(root):]
    elif "/lib/python" in where:
        where = where[where.index("/lib/python") + 1:]
        where = where.split("/", 1)[1] if "/" in where else where
        where = where.removeprefix("site-packages/")
    return f"{name} ({where})" if where else name


def summarise_profile(path: Path) -> ProfileSummary:
    """Read py-spy's ``--format raw`` output: ``thread;frame;...;leaf count`` per line."""
    total = 0
    by_thread: Counter[str] = Counter()
    self_samples: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], [_short(f) for f in frames[1:]]
        total += count
        by_thread[thread.split(" ")[-1].strip('"') if thread else "?"] += count
        if frames:
            self_samples[frames[-1]] += count
        for name in set(frames):
            cumulative[name] += count
    return ProfileSummary(total, by_thread, self_samples, cumulative)


def cprofile_args(out: Path | None) -> list[str]:
    """Interpreter arguments running the PBX under cProfile (dumped when it stops)."""
    return [] if out is None else ["-m", "cProfile", "-o", str(out.resolve())]


def render_cprofile(path: Path, operations: int, what: str, top: int = 15) -> str:
    """Top functions of a cProfile dump of the PBX's main thread (the event loop), in
    microseconds per ``operation`` (a registration, a call), by own and by cumulative time.

    Functions called fewer than once per 20 operations, start-up work (reading the config)
    and the loop's own run call (which also counts idle waiting) are left out. cProfile
    roughly doubles the cost of Python calls, so read the figures relative to each other.
    """
    import pstats

    raw = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    ops = max(operations, 1)
    rows = [((file, line, name), ncalls, tt, ct)
            for (file, line, name), (_, ncalls, tt, ct, _) in raw.items()
            if ncalls * 20 >= ops and not _is_entry(name, file) and not _is_startup(name, file)]
    out = [f"cProfile of the PBX's main thread, per {what} ({operations} {what}s):"]
    for title, index in (("own", 2), ("cumulative", 3)):
        out.append(f"\ntop {top} by {title} time:")
        out.append(f"{'us/' + what:>12} {'calls/' + what:>12}  function")
        for (file, line, name), ncalls, tt, ct in sorted(
                rows, key=lambda r: r[index], reverse=True)[:top]:
            value = tt if index == 2 else ct
            out.append(f"{1e6 * value / ops:12.1f} {ncalls / ops:12.1f}  "
                       f"{_short(f'{name} ({file}:{line})')}")
    return "\n".join(out)


def _is_startup(name: str, file: str) -> bool:
    # Reading a config of a thousand users makes many calls once: not the per-message path.
    return (any(part in file for part in ("/ruamel/", "/pydantic", "/re/", "importlib",
                                          "<frozen", "/typing", "/enum.py"))
            # Built-ins (len, isinstance, __build_class__, ...) mix start-up and message work.
            or name.startswith(("<built-in method builtins.", "<built-in method marshal.")))


_ENTRY_NAMES = ("_bootstrap", "_bootstrap_inner", "_run_module_as_main", "_run_code", "<module>",
                "run", "main", "_run", "Runner.run", "Thread.run", "WriteBehind._run",
                "<built-in method builtins.exec>", "runctx", "serve", "_run_once")


def _is_entry(name: str, file: str) -> bool:
    # Frames every sample passes through (thread and interpreter start-up, the CLI, the loop's
    # run call) say nothing about where the time goes: leave them out of cumulative tables.
    return name in _ENTRY_NAMES or file.endswith(("runpy.py", "cProfile.py", "threading.py"))


