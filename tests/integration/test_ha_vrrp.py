"""HA with VRRPv3 between two userlb routers, connection sync off, failback off.

One lab for the module, in order: r1 (priority 150, master) is SIGKILLed while a
paced download and UDP probes cross the VIP; r2 takes over within
Master_Down_Interval + one advert interval, and the download, whose connection
r2 never heard of, fails (no sync). Then r1 returns and, with failback off
(Piranha's behaviour, keepalived's nopreempt), stays backup. A clean stop
(SIGTERM) of the master sends priority 0, and the backup takes over after
Skew_Time instead of the whole down interval. Timers: advert_int 0.1 s.
"""

from __future__ import annotations

import time

import pytest

from userlb.halab import CLIENT_IF, VIP, HaLab, failover, report

pytestmark = [pytest.mark.root, pytest.mark.tun, pytest.mark.timeout(180)]

ADVERT_S = 0.1
HA = {"advert_int": ADVERT_S, "vrid": 7, "failback": False, "sync": False}


def down_interval_s(priority: int) -> float:
    """RFC 5798 §6.1: 3 * Master_Adver_Interval + (256 - Priority) * interval / 256."""
    return 3 * ADVERT_S + (256 - priority) * ADVERT_S / 256


@pytest.fixture(scope="module")
def lab():
    with HaLab(servers=2, clients=2) as lab:
        lab.start_router(1, lab.router_config(1, 150, "vrrp", **HA))
        lab.start_router(2, lab.router_config(2, 100, "vrrp", **HA))
        assert lab.wait_until(lambda: lab.state(1) == "MASTER" and lab.state(2) == "BACKUP", 10)
        yield lab


@pytest.fixture(scope="module")
def killed(lab):
    result = failover(lab, victim=1, survivor=2, stall_s=3.0)
    report("VRRPv3 failover (advert_int 0.1 s, priority 100 backup, sync off)", result)
    return result


def test_backup_serves_vip_within_down_interval_plus_one_advert(killed):
    assert killed["took_over"]
    limit_ms = (down_interval_s(100) + ADVERT_S) * 1000
    assert killed["gap_ms"] is not None and killed["gap_ms"] <= limit_ms, killed


def test_download_breaks_without_sync(killed):
    dl = killed["download"]
    assert dl["received"] < dl["expected"] and dl["error"], dl


def test_no_failback_the_returning_primary_stays_backup(lab, killed):
    transitions = lab.ha(2)["transitions"]
    lab.start_router(1, lab.router_config(1, 150, "vrrp", **HA))
    assert lab.wait_until(lambda: lab.state(1) == "BACKUP", 10)
    # Wait (on adverts, not on the clock) for far longer than r1's own down interval.
    needed = 3 * down_interval_s(150) / ADVERT_S
    assert lab.wait_until(lambda: lab.ha(1)["counters"].get("adverts_received", 0) >= needed, 10)
    assert (lab.state(1), lab.state(2)) == ("BACKUP", "MASTER")
    assert lab.ha(2)["transitions"] == transitions
    assert lab.ha(1)["claimed"] is False and lab.ha(2)["claimed"] is True
    assert lab.http_get("/")[0] == 200


def test_clean_stop_hands_over_after_skew_time(lab):
    asked = time.time()
    lab.stop_router(2)                          # SIGTERM: priority-0 advert, VIPs released
    assert lab.wait_until(lambda: lab.state(1) == "MASTER", 5)
    status = lab.ha(1)
    assert status["counters"].get("release_adverts_received", 0) >= 1
    became = [t["at"] for t in status["transitions"] if t["new"] == "MASTER"][-1]
    # Skew_Time (41 ms at priority 150) instead of the down interval (341 ms after the last advert)
    assert became - asked < 0.25
    assert lab.wait_until(lambda: lab.neigh_mac(lab.client_ns, VIP)
                          == lab.mac(lab.router_ns_of(1), CLIENT_IF), 5)
    assert lab.http_get("/")[0] == 200
