"""HA with the native heartbeat, connection sync on, failback on: two userlb routers.

One lab for the module, in order: forged and replayed heartbeats change nothing;
then r1 (priority 150, active) is SIGKILLed while a paced download and UDP
probes cross the VIP, and r2 takes over within deadtime + one keepalive, the
download completes (sync), the client's ARP entry and the real servers' gateway
entry move to r2; then r1 returns and takes the VIPs back (failback), again
without breaking a download that r2 carried.
Timers: keepalive 0.2 s, deadtime 1 s.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from ipaddress import IPv4Address

import pytest

from userlb.ha.heartbeat import HEARTBEAT_PORT, HeartbeatSender, Role
from userlb.halab import (CLIENT_IF, GATEWAY, PRIVATE_IF, VIP, Download, HaLab, failover, report,
                          router_ip, run_download)
from userlb.netns import in_namespace, socket_in

pytestmark = [pytest.mark.root, pytest.mark.tun, pytest.mark.timeout(180)]

KEEPALIVE_S, DEADTIME_S = 0.2, 1.0
HA = {"keepalive": KEEPALIVE_S, "deadtime": DEADTIME_S, "failback": True, "sync": True}


@pytest.fixture(scope="module")
def lab():
    with HaLab(servers=2, clients=2) as lab:
        lab.start_router(1, lab.router_config(1, 150, "heartbeat", **HA))
        lab.start_router(2, lab.router_config(2, 100, "heartbeat", **HA))
        assert lab.wait_until(lambda: lab.state(1) == "MASTER" and lab.state(2) == "BACKUP", 10)
        for _ in range(2):                     # rr: both real servers learn the gateway's MAC
            assert lab.http_get("/")[0] == 200
        yield lab


def _capture_heartbeat(lab: HaLab, timeout_s: float = 5.0) -> bytes:
    """One heartbeat payload r1 sent to r2's public address, read off r2's interface."""
    sock = in_namespace(lab.router_ns_of(2), socket.socket, socket.AF_PACKET, socket.SOCK_DGRAM,
                        socket.htons(0x0800))
    try:
        sock.bind((CLIENT_IF, 0x0800))
        sock.settimeout(0.5)
        src = IPv4Address(router_ip(1, "c")).packed
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ip = sock.recv(2048)
            except socket.timeout:
                continue
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] == 17 and ip[12:16] == src and struct.unpack("!H", ip[ihl + 2:ihl + 4])[0] \
                    == HEARTBEAT_PORT:
                return ip[ihl + 8:]
    finally:
        sock.close()
    raise AssertionError("no heartbeat from r1 seen on r2")


def _send_from(lab: HaLab, sender: int, payload: bytes, to_router: int) -> None:
    """Send `payload` to `to_router`'s heartbeat port from router `sender`'s own address."""
    sock = socket_in(lab.router_ns_of(sender), socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind((router_ip(sender, "c"), 0))
        sock.sendto(payload, (router_ip(to_router, "c"), HEARTBEAT_PORT))


def _forged(as_router: int, role: Role, priority: int) -> bytes:
    """A well-formed heartbeat from `as_router`'s node id, authenticated with the wrong key."""
    sender = HeartbeatSender(b"not-the-lab-key!", int(IPv4Address(router_ip(as_router, "c"))),
                             0xFFFFFFFF, [VIP, GATEWAY], first_seq=time.time_ns())
    return sender.build(role, priority, time.time())


def _quiet_view(status: dict) -> tuple:
    return status["state"], status["transitions"], status["counters"].get("claims"), \
        status["counters"].get("releases")


def test_forged_and_replayed_heartbeats_change_nothing(lab):
    captured = _capture_heartbeat(lab)
    before = {r: lab.ha(r) for r in (1, 2)}
    rejected = before[2]["heartbeat"]["rejected"]
    # Forged with a wrong key: r1 "stopping" to r2 (would make r2 take over at once), and
    # r2 as an owner-priority master to r1 (would make r1 yield); then a real one replayed.
    _send_from(lab, 1, _forged(1, Role.INIT, 0), to_router=2)
    _send_from(lab, 2, _forged(2, Role.MASTER, 255), to_router=1)
    _send_from(lab, 1, captured, to_router=2)
    stale = ("replay", "too_old")

    def counted() -> bool:
        now2 = lab.ha(2)["heartbeat"]["rejected"]
        now1 = lab.ha(1)["heartbeat"]["rejected"]
        return (now2.get("bad_mac", 0) == rejected.get("bad_mac", 0) + 1
                and sum(now2.get(k, 0) for k in stale) == sum(rejected.get(k, 0) for k in stale) + 1
                and now1.get("bad_mac", 0) == before[1]["heartbeat"]["rejected"].get("bad_mac", 0) + 1)

    assert lab.wait_until(counted, 5), lab.ha(2)["heartbeat"]
    # Wait past a deadtime, so a takeover the forgeries might have caused would have happened.
    accepted = lab.ha(2)["heartbeat"]["accepted"]
    assert lab.wait_until(lambda: lab.ha(2)["heartbeat"]["accepted"]
                          >= accepted + 2 * DEADTIME_S / KEEPALIVE_S, 5)
    after = {r: lab.ha(r) for r in (1, 2)}
    for r in (1, 2):
        assert _quiet_view(after[r]) == _quiet_view(before[r])
    assert after[2]["fsm"] == before[2]["fsm"]            # the backup's state machine saw nothing
    assert (after[1]["state"], after[2]["state"]) == ("MASTER", "BACKUP")


@pytest.fixture(scope="module")
def killed(lab):
    result = failover(lab, victim=1, survivor=2)
    report("heartbeat failover (keepalive 0.2 s, deadtime 1 s, sync on)", result)
    return result


def test_backup_serves_vip_within_deadtime_plus_one_interval(killed):
    assert killed["took_over"]
    assert killed["gap_ms"] is not None and killed["gap_ms"] <= (DEADTIME_S + KEEPALIVE_S) * 1000
    assert killed["probes_answered"] >= 25


def test_download_survives_failover_with_sync(killed):
    dl = killed["download"]
    assert dl["error"] == "" and dl["received"] == dl["expected"], dl


def test_arp_and_gateway_move_to_the_backup(lab, killed):
    r2 = lab.router_ns_of(2)
    assert lab.neigh_mac(lab.client_ns, VIP) == lab.mac(r2, CLIENT_IF)
    gateway_macs = {lab.neigh_mac(lab.server_ns(i), GATEWAY) for i in range(lab.servers)}
    assert gateway_macs == {lab.mac(r2, PRIVATE_IF)}
    served = {lab.http_get("/")[1]["x-server"] for _ in range(4)}
    assert served == {"rs1", "rs2"}                         # replies flow back through r2
    assert lab.ha(2)["claimed"] is True


def test_failback_when_the_primary_returns(lab, killed):
    dl = Download(2_000_000)
    thread = threading.Thread(target=run_download, args=(lab, dl, 1_000_000), daemon=True)
    thread.start()
    assert lab.wait_until(lambda: dl.received >= 200_000 or dl.done.is_set(), 10)
    lab.start_router(1, lab.router_config(1, 150, "heartbeat", **HA))
    assert lab.wait_until(lambda: lab.state(1) == "MASTER" and lab.state(2) == "BACKUP", 10)
    assert lab.wait_until(lambda: lab.neigh_mac(lab.client_ns, VIP)
                          == lab.mac(lab.router_ns_of(1), CLIENT_IF), 5)
    assert lab.http_get("/")[0] == 200
    assert dl.done.wait(30)
    thread.join(5)
    assert dl.error == "" and dl.received == dl.expected       # r2 synced it to r1
    assert lab.ha(1)["sync"]["conns_imported"] >= 1
    events = [(t["old"], t["new"]) for t in lab.ha(2)["transitions"]]
    assert events[-1] == ("MASTER", "BACKUP")
