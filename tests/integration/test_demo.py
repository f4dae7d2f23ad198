"""`userlb demo` end to end: it balances, traces one connection and leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from userlb.netns import list_namespaces

pytestmark = [pytest.mark.root, pytest.mark.tun]


def test_demo_balances_traces_and_cleans_up():
    before = set(list_namespaces())
    proc = subprocess.run([sys.executable, "-m", "userlb", "demo", "--requests", "30"],
                          capture_output=True, text=True, timeout=120, cwd="/")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    served = dict(re.findall(r"^  (rs\d)\s+(\d+)$", out, re.M))
    assert set(served) == {"rs1", "rs2", "rs3"} and sum(map(int, served.values())) == 30
    assert "IPVS connection entries" in out and "TIME_WAIT" in out
    trace = out.split("hop by hop")[1]
    assert "client → VIP" in trace and "after DNAT" in trace and "after SNAT" in trace
    assert "[S]" in trace and "[SA]" in trace
    assert "(BAD)" not in trace                     # scapy verified every checksum
    assert set(list_namespaces()) == before
