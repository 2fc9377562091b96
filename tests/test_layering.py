"""The package layering of DESIGN.md, checked by walking every import with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"pbx", "sip", "media", "ivr", "crmsync"}
ALLOWED = {
    "sip": set(),
    "media": set(),
    "ivr": set(),
    "crmsync": {"pbx.records"},
    "pbx": {"sip", "media", "ivr", "crmsync"},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_design_allows(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top not in PROJECT or top == package:
                continue
            if top in ALLOWED[package] or name in ALLOWED[package]:
                continue
            bad.append(f"{path.relative_to(ROOT)}: imports {name}")
    assert not bad, "\n".join(bad)


def test_crmsync_is_imported_only_by_the_composition_root() -> None:
    users = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "pbx").rglob("*.py")
        if any(n.split(".")[0] == "crmsync" for n in _imports(p))
    )
    assert users == ["pbx/server.py"]


def test_sans_io_cores_never_read_the_clock() -> None:
    """Only the adapter modules may read the clock or sleep (STYLE.md 3.2)."""
    adapters = {"sip/transport.py", "media/udp.py", "media/playback.py", "media/local.py",
                "ivr/runner.py"}
    bad = []
    for package in ("sip", "media", "ivr"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel in adapters:
                continue
            text = path.read_text()
            for needle in ("time.time(", "time.monotonic(", "loop.time(", "asyncio.sleep(",
                           "import asyncio"):
                if needle in text:
                    bad.append(f"{rel}: {needle}")
    assert not bad, "\n".join(bad)
