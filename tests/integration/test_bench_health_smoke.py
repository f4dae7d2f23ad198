"""`userlb bench health --smoke`: 1,000 TCP checks a second in one namespace, runner and baseline.

Checks the report's fields, that nearly every expected check ran and passed on the baseline and
the many-service runner (the one-service runner is reported, not judged: its per-result cost
grows with the service's size), and that no namespace is left. No timing thresholds.
"""

from __future__ import annotations

import json
import os

import pytest

from userlb.bench import main
from userlb.bench.health import RUNNERS, SIDES
from userlb.netns import list_namespaces

pytestmark = pytest.mark.root


def own_namespaces() -> list[str]:
    return [ns for ns in list_namespaces() if ns.startswith(f"ulb-{os.getpid()}-")]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-health")
    before = own_namespaces()
    assert main(["health", "--smoke", "--out", str(out)]) == 0
    payload = json.loads((out / "health.json").read_text())
    payload["namespaces_before"], payload["namespaces_after"] = before, own_namespaces()
    return payload


@pytest.mark.timeout(120)
def test_report_fields(report):
    assert report["bench"] == "health" and report["meta"]["mode"] == "smoke"
    assert report["servers"] == 1000 and report["interval_s"] == 1.0
    assert list(report["sides"]) == list(SIDES)
    for side in SIDES:
        s = report["sides"][side]
        for key in ("probes", "passed", "expected", "completion", "checks_per_s", "cpu_pct_one_core",
                    "cpu_us_per_check"):
            assert isinstance(s[key], (int, float)) and s[key] >= 0, (side, key)
        assert set(s["lateness_ms"]) == {"p50", "p90", "p99", "p999", "max"}
    assert set(report["ratios"]) == set(report["summary"]) == set(RUNNERS)
    assert "baseline" in report["table"]
    png = report["files"]["png"]
    assert png and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(120)
def test_nearly_all_checks_ran_and_passed(report):
    for side in ("runner 100 svc", "baseline"):
        s = report["sides"][side]
        assert s["probes"] >= 0.8 * s["expected"], side
        assert s["passed"] >= 0.99 * s["probes"], side
    for side in RUNNERS:
        s = report["sides"][side]
        # probes still in flight when the phase ends are cancelled: at most max_concurrent of them
        assert s["probes"] > 0 and s["passed"] >= s["probes"] - report["max_concurrent"], side
        assert s["state_changes"] == 0, side


@pytest.mark.timeout(120)
def test_no_namespace_left_behind(report):
    assert report["namespaces_after"] == report["namespaces_before"] == []
