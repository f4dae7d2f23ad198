"""Schedulers and persistence in the lab: real connections through the VIP."""

from __future__ import annotations

import collections
import socket

import pytest

from userlb import ctlclient
from userlb.lab import ECHO_PORT, HTTP_PORT, VIP, Lab

pytestmark = [pytest.mark.root, pytest.mark.tun]


@pytest.fixture(scope="module")
def lab():
    with Lab(servers=3, clients=2) as lab:
        services = (lab.service_text("tcp", 80, HTTP_PORT, "wrr", weights=[1, 2, 3])
                    + lab.service_text("tcp", 81, HTTP_PORT, "sh")
                    + lab.service_text("udp", ECHO_PORT, ECHO_PORT, "rr")
                    .replace('scheduler = "rr"\n', 'scheduler = "rr"\npersistent = 2\n'))
        cfg = lab.config_text(services=services, extra="[timeouts]\nudp = 1\n")
        lab.balancer = lab.start_balancer(cfg)
        yield lab


def test_wrr_1_2_3_over_600_connections(lab):
    served = collections.Counter(lab.http_get("/")[1]["x-server"] for _ in range(600))
    assert served == {"rs1": 100, "rs2": 200, "rs3": 300}


def test_sh_keeps_each_client_on_one_server(lab):
    for client in (0, 1):
        served = {lab.http_get("/", client=client, vport=81)[1]["x-server"] for _ in range(20)}
        assert len(served) == 1


def _echo_from(lab, count: int) -> set[str]:
    names = set()
    for _ in range(count):
        with lab.client_socket(socket.SOCK_DGRAM) as sock:      # a new client port each time
            sock.settimeout(3)
            sock.sendto(b"x", (VIP, ECHO_PORT))
            names.add(sock.recv(64).split(b":")[0].decode())
    return names


def test_persistence_holds_then_releases_after_timeout(lab):
    first = _echo_from(lab, 6)
    assert len(first) == 1                      # rr would have spread six new flows
    ctl = lab.balancer.ctl_path
    assert lab.wait_until(
        lambda: not ctlclient.request(ctl, "conns") or
        all(c["vport"] != ECHO_PORT or c["protocol"] != "UDP"
            for c in ctlclient.request(ctl, "conns")), timeout_s=15)
    assert _echo_from(lab, 1) != first          # template gone: rr moved on
