"""The packet path in the namespace lab: real sockets through a real TUN.

One lab (client, router, three real servers) and one balancer serve the
module; each test drives traffic from the client namespace through the VIP.
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time

import pytest

from userlb import ctlclient
from userlb.lab import ECHO_PORT, VIP, Lab, client_ip
from userlb.netns import in_namespace, ip_cmd

pytestmark = [pytest.mark.root, pytest.mark.tun]

UNREACH_PORT = 9     # a UDP service whose real servers have no listener


@pytest.fixture(scope="module")
def lab():
    with Lab(servers=3) as lab:
        extra = lab.service_text("udp", UNREACH_PORT, UNREACH_PORT, "rr")
        cfg = lab.config_text(scheduler="rr", trace_connections=1)
        lab.balancer = lab.start_balancer(cfg + extra)
        yield lab


def stats(lab) -> dict:
    return ctlclient.request(lab.balancer.ctl_path, "stats")


def test_http_through_vip_reaches_every_real_server(lab):
    served = collections.Counter(lab.http_get("/")[1]["x-server"] for _ in range(12))
    assert set(served) == {"rs1", "rs2", "rs3"}
    assert all(n == 4 for n in served.values())       # rr: an even spread


def test_client_learns_vip_from_router_by_arp(lab):
    lab.http_get("/")
    neigh = ip_cmd(lab.client_ns, "neigh", "show", VIP).stdout
    mac = ip_cmd(lab.router_ns, "-br", "link", "show", "rc0").stdout.split()[2]
    assert mac in neigh


def test_udp_through_vip_both_ways(lab):
    for i, (peer, name, echoed) in enumerate(lab.udp_echo(5)):
        assert peer == (VIP, ECHO_PORT)                    # SNAT back to the VIP
        assert echoed == b"hello %d" % i and name in (b"rs1", b"rs2", b"rs3")


def test_icmp_port_unreachable_from_real_server_reaches_client(lab):
    sock = lab.client_socket(socket.SOCK_DGRAM)
    sock.settimeout(3)
    with sock:
        sock.connect((VIP, UNREACH_PORT))
        sock.send(b"anyone?")
        # The client kernel reports ECONNREFUSED only if the ICMP error's checksum is
        # right and its quoted header names this socket: client:port → VIP:9.
        with pytest.raises(ConnectionRefusedError):
            sock.recv(2048)


def _echo_client(lab, stop: threading.Event, result: dict) -> None:
    sock = lab.client_socket()
    sock.settimeout(5)
    sock.connect((VIP, ECHO_PORT))
    rounds = 0
    try:
        while not stop.is_set() and rounds < 100_000:
            msg = b"stream %08d\n" % rounds
            sock.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += sock.recv(len(msg) - len(got))
            assert got == msg
            rounds += 1
            stop.wait(0.005)
    except Exception as exc:  # reported to the test
        result["error"] = exc
    finally:
        result["rounds"] = rounds
        sock.close()


def _short_connections(count: int, deadline: float) -> tuple[int, int]:
    ok = failed = 0
    for i in range(count):
        if time.monotonic() > deadline:
            break
        try:
            with socket.socket() as s:
                s.settimeout(5)
                s.bind((client_ip(0), 0))
                s.connect((VIP, ECHO_PORT))
                s.sendall(b"x")
                ok += s.recv(16) == b"x"
        except OSError:
            failed += 1
    return ok, failed


def test_long_stream_survives_10000_short_connections(lab):
    stop, result = threading.Event(), {}
    streamer = threading.Thread(target=_echo_client, args=(lab, stop, result))
    streamer.start()
    try:
        ok, failed = in_namespace(lab.client_ns, _short_connections, 10_000,
                                  time.monotonic() + 240)
    finally:
        stop.set()
        streamer.join(10)
    assert "error" not in result, result.get("error")
    assert result["rounds"] > 10
    assert (ok, failed) == (10_000, 0)


def _syn_flood(count: int) -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    vip = socket.inet_aton(VIP)
    for i in range(count):
        src = socket.inet_aton(f"198.18.1.{150 + i % 100}")   # no such hosts: stays SYN_RECV
        sport = 10_000 + i
        tcp = struct.pack("!HHIIBBHHH", sport, 80, i, 0, 5 << 4, 0x02, 8192, 0, 0)
        pseudo = src + vip + struct.pack("!BBH", 0, 6, len(tcp))
        total = sum(struct.unpack("!%dH" % ((len(pseudo) + len(tcp)) // 2), pseudo + tcp))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        tcp = tcp[:16] + struct.pack("!H", ~total & 0xFFFF) + tcp[18:]
        # IP_HDRINCL: our own IP header, so the source can be spoofed
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xFFFF, 0, 64, 6, 0, src, vip)
        s = sum(struct.unpack("!10H", ip))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        ip = ip[:10] + struct.pack("!H", ~s & 0xFFFF) + ip[12:]
        raw.sendto(ip + tcp, (VIP, 0))
    raw.close()


def test_syn_flood_against_small_table_keeps_established_connection():
    with Lab(servers=3) as small:
        balancer = small.start_balancer(small.config_text(scheduler="wlc", table_size=64))
        sock = small.client_socket()
        sock.settimeout(5)
        sock.connect((VIP, ECHO_PORT))
        sock.sendall(b"before")
        assert sock.recv(16) == b"before"
        in_namespace(small.client_ns, _syn_flood, 3000)
        got = ctlclient.request(balancer.ctl_path, "stats")
        assert got["connections"] <= 64
        cport = sock.getsockname()[1]
        conns = ctlclient.request(balancer.ctl_path, "conns")
        mine = [c for c in conns if c["cport"] == cport and c["caddr"] == client_ip(0)]
        assert [c["state"] for c in mine] == ["ESTABLISHED"]
        sock.sendall(b"after")
        assert sock.recv(16) == b"after"
        sock.close()
        assert got["drops"].get("table_full", 0) + len(conns) >= 64   # the flood filled it


def test_balancer_removes_its_plumbing_on_sigterm():
    with Lab(servers=1) as one:
        balancer = one.start_balancer(one.config_text())
        assert "ulb0" in ip_cmd(one.router_ns, "link").stdout
        assert balancer.stop() == 0
        assert "ulb0" not in ip_cmd(one.router_ns, "link").stdout
        assert "lookup 100" not in ip_cmd(one.router_ns, "rule").stdout
        assert VIP not in ip_cmd(one.router_ns, "neigh", "show", "proxy").stdout
        assert "ready" in balancer.log() and "plumbing removed" in balancer.log()


def test_live_trace_shows_scheduler_view_and_state_changes(lab, tmp_path):
    import subprocess
    import sys
    pcap = tmp_path / "flow.pcapng"
    proc = subprocess.Popen([sys.executable, "-m", "userlb", "trace", "--ctl",
                             lab.balancer.ctl_path, "--client", client_ip(0), "--vip", VIP,
                             "--seconds", "3", "--pcap", str(pcap)],
                            stdout=subprocess.PIPE, text=True, cwd="/")
    assert proc.stdout.readline().startswith("tracing the next 1 connection")
    lab.http_get("/")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "classification: new connection for TCP 198.18.1.100:80; rr considered" in out
    assert "← picked" in out and "state NONE → SYN_RECV, expires in 60 s" in out
    assert "classification: connection table hit" in out
    assert "state SYN_RECV → ESTABLISHED, expires in 900 s" in out
    assert "after DNAT" in out and "after SNAT" in out and "(BAD)" not in out
    from scapy.utils import rdpcap
    packets = rdpcap(str(pcap))
    assert len(packets) >= 8 and all(b"userlb conn" in p.comment for p in packets)
