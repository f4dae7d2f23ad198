"""`userlb bench path --smoke`: the kernel, the C forwarder, userlb (TUN offload on, the
default) and userlb without offload in one namespace lab.

Checks that the report has all four paths with every figure, that the kernel
path and the C forwarder really forwarded traffic, and that the bench leaves no
namespace behind. No timing thresholds: benchmarks are never timed tests.
"""

from __future__ import annotations

import json
import os

import pytest

from userlb.bench import main
from userlb.bench.path import FIGURES, missing_prerequisites
from userlb.netns import ip_cmd, list_namespaces

pytestmark = [pytest.mark.root, pytest.mark.tun]

FORWARDED = ("tcp_gbps", "udp_loss_free_pps", "udp_2x_delivered_pps", "udp_4x_delivered_pps",
             "http_requests_per_s")


def own_namespaces() -> list[str]:
    return [ns for ns in list_namespaces() if ns.startswith(f"ulb-{os.getpid()}-")]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if missing := missing_prerequisites():
        message = "needs " + ", ".join(missing) + " (./dev test installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("bench-path")
    before = own_namespaces()
    assert main(["path", "--smoke", "--out", str(out)]) == 0
    payload = json.loads((out / "path.json").read_text())
    payload["namespaces_before"], payload["namespaces_after"] = before, own_namespaces()
    return payload


@pytest.mark.timeout(400)
def test_report_has_every_path_and_figure(report):
    assert list(report["paths"]) == ["kernel", "c", "userlb", "userlb:no-offload"]
    assert report["meta"]["mode"] == "smoke"
    for name, path in report["paths"].items():
        figs = path["figures"]
        for key, _, _ in FIGURES:
            assert key in figs, (name, key)
            if not (name == "kernel" and key == "forwarder_us_per_packet_udp"):
                assert isinstance(figs[key], (int, float)) and figs[key] >= 0, (name, key)
        assert len(path["overload"]) == 2 and path["udp_sweep"] and path["tcp"]
    assert set(report["ratios"]) == {"userlb/kernel", "userlb/c", "userlb:no-offload/kernel",
                                     "userlb:no-offload/c"}
    for base in report["ratios"]:
        assert set(report["ratios"][base]) == {key for key, _, _ in FIGURES}
    assert "userlb/kernel" in report["table"] and "userlb:no-offload/kernel" in report["table"]
    png = report["files"]["png"]
    assert png and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(400)
def test_kernel_and_c_paths_forwarded_traffic(report):
    for name in ("kernel", "c"):
        path = report["paths"][name]
        assert path["http_check_status"] == 200
        for key in FORWARDED:
            assert path["figures"][key] > 0, (name, key)
        assert all(run["router_packets"] > 0 and not run["errors"] for run in path["tcp"])
    counters = report["paths"]["c"]["detail"]["cfwd_counters"]
    assert counters["dnat"] > 0 and counters["snat"] > 0 and counters["write_failed"] == 0


@pytest.mark.timeout(400)
def test_userlb_paths_answered(report):
    for name in ("userlb", "userlb:no-offload"):
        assert report["paths"][name]["http_check_status"] == 200
        assert report["paths"][name]["figures"]["udp_loss_free_pps"] > 0


@pytest.mark.timeout(400)
def test_no_namespace_or_device_left_behind(report):
    assert report["namespaces_after"] == report["namespaces_before"] == []
    assert ip_cmd(None, "link", "show", "ulb0", check=False).returncode != 0
