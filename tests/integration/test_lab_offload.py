"""TUN offload (`[router] offload = true`, spec/perf.md A1) in the namespace lab.

A balancer with IFF_VNET_HDR + TSO/checksum offload: HTTP reaches every real
server, a 20 MB download through the VIP arrives whole (a wrong partial checksum
would make the client drop segments and the transfer stall), it crosses the TUN as
super-packets (far fewer packets than MSS-sized segments) and UDP echo works.
"""

from __future__ import annotations

import collections
import socket

import pytest

from userlb import ctlclient
from userlb.lab import ECHO_PORT, VIP, Lab

pytestmark = [pytest.mark.root, pytest.mark.tun]

DOWNLOAD = 20_000_000


@pytest.fixture(scope="module")
def lab():
    with Lab(servers=3) as lab:
        lab.balancer = lab.start_balancer(lab.config_text(scheduler="rr",
                                                          extra="offload = true"))
        yield lab


def _out_packets(lab) -> int:
    stats = ctlclient.request(lab.balancer.ctl_path, "services")
    total = 0

    def walk(node):
        nonlocal total
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "outpkts" and isinstance(v, int):
                    total += v
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(stats)
    return total


def test_http_through_vip_reaches_every_real_server(lab):
    served = collections.Counter(lab.http_get("/")[1]["x-server"] for _ in range(9))
    assert set(served) == {"rs1", "rs2", "rs3"}


def test_download_arrives_intact_as_super_packets(lab):
    before = _out_packets(lab)
    status, headers, body = lab.http_get(f"/bytes/{DOWNLOAD}", timeout_s=30)
    assert status == 200 and len(body) == DOWNLOAD and body == bytes(DOWNLOAD)
    sent = _out_packets(lab) - before
    assert 0 < sent < DOWNLOAD // 1448 // 2, sent      # TSO: well under one per MSS


def test_udp_echo_through_vip(lab):
    for i, (peer, _, echoed) in enumerate(lab.udp_echo(5)):
        assert peer == (VIP, ECHO_PORT) and echoed == b"hello %d" % i


def test_full_size_udp_datagram_through_vip(lab):
    sock = lab.client_socket(socket.SOCK_DGRAM)
    sock.settimeout(3)
    with sock:
        sock.sendto(b"x" * 1400, (VIP, ECHO_PORT))
        data, peer = sock.recvfrom(4096)
        assert peer == (VIP, ECHO_PORT) and data.endswith(b"x" * 1400)
