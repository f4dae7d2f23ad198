"""The sans-I/O boundary (STYLE.md): pure modules import no I/O or clock modules.

Parses each pure module's source and lists its imports, so a pure module that
grows an `import socket` or `import time` fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ["userlb/parse.py", "userlb/checksum.py", "userlb/nat.py", "userlb/icmp.py",
        "userlb/conntable.py", "userlb/connindex.py", "userlb/tcpstate.py", "userlb/services.py",
        "userlb/engine.py",
        "userlb/fastpath.py", "userlb/fastmemo.py", "userlb/fastsplit.py",
        "userlb/accounting.py", "userlb/related.py", "userlb/classify.py", "userlb/runtime.py",
        "userlb/config.py", "userlb/configcheck.py", "userlb/configdiff.py",
        "userlb/tomllines.py", "userlb/listing.py", "userlb/frames.py", "userlb/drops.py",
        "userlb/connsync.py", "userlb/hacheck.py", "userlb/destctl.py", "userlb/persist.py",
        "userlb/webstate.py", "userlb/webapi.py",
        *(f"health/{m}.py" for m in ("spec", "policy", "schedule", "presets")),
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "sched").glob("*.py")),
        *(f"ha/{m}.py" for m in ("vrrp", "heartbeat", "fsm", "garp", "sync", "actions", "config"))]
FORBIDDEN = {"socket", "asyncio", "pytun", "pyroute2", "time", "select", "subprocess",
             "threading", "uvloop"}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module):
    assert imports(ROOT / module) & FORBIDDEN == set()


def test_every_module_opens_with_a_docstring():
    missing = [str(p.relative_to(ROOT))
               for folder in ("userlb", "sched", "health", "ha", "bench")
               for p in sorted((ROOT / folder).glob("*.py"))
               if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []
