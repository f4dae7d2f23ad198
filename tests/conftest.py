"""Shared test set-up: root/tun markers and the namespace lab fixtures.

Tests marked `root` need root, ip(8) and network namespaces; `tun` needs
/dev/net/tun. Elsewhere they skip with the reason; under CI (CI set) they fail
instead of skipping, because CI runs as root and must execute them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("CI"))
DATA = Path(__file__).parent / "data"


def _missing(marker: str) -> str | None:
    if marker == "root":
        if os.geteuid() != 0:
            return "needs root (network namespaces): run `sudo ./dev test`"
        if not shutil.which("ip"):
            return "needs ip(8) from iproute2"
    if marker == "tun" and not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in ("root", "tun"):
        if item.get_closest_marker(marker) and (reason := _missing(marker)):
            if IN_CI:
                pytest.fail(f"CI must run this test, but it {reason}")
            pytest.skip(reason)
