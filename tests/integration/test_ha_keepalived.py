"""VRRPv3 interoperability with real keepalived (Debian's package, `keepalived -P` in a namespace).

Both directions, each with priorities and preemption checked:
- userlb (priority 150) master, keepalived (100) backup: keepalived stays backup while
  userlb advertises; userlb's clean stop (priority 0) makes keepalived master; userlb
  restarted preempts it, and keepalived logs the higher-priority advert and goes backup.
- keepalived (150) master, userlb (100) backup: userlb stays backup; keepalived's stop
  makes userlb master; keepalived restarted preempts userlb.
advert_int 0.1 s on both sides; the VRRP advert carries the VIP and the gateway on both.
"""

from __future__ import annotations

import os

import pytest

from userlb.halab import CLIENT_IF, GATEWAY, PRIVATE_IF, VIP, HaLab, keepalived_path

pytestmark = [pytest.mark.root, pytest.mark.tun, pytest.mark.timeout(120)]

ADVERT_S = 0.1
VRID = 51
HA = {"advert_int": ADVERT_S, "vrid": VRID, "sync": False, "failback": True}
KEEPALIVED_CONF = """\
global_defs {{
    router_id r{router}
    vrrp_version 3
    vrrp_garp_master_delay 0
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface {client_if}
    virtual_router_id {vrid}
    priority {priority}
    advert_int {advert}
    virtual_ipaddress {{
        {vip}/32 dev {client_if}
        {gateway}/24 dev {private_if}
    }}
}}
"""


@pytest.fixture(autouse=True)
def _keepalived_installed():
    if not keepalived_path():
        message = "needs keepalived (./dev installs Debian's package)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def keepalived_conf(router: int, priority: int) -> str:
    return KEEPALIVED_CONF.format(router=router, vrid=VRID, priority=priority, advert=ADVERT_S,
                                  vip=VIP, gateway=GATEWAY, client_if=CLIENT_IF,
                                  private_if=PRIVATE_IF)


def adverts_from_peer(lab: HaLab, r: int) -> int:
    return lab.ha(r)["counters"].get("adverts_received", 0)


def wait_adverts(lab: HaLab, r: int, count: int) -> bool:
    """Wait until userlb on router r has heard `count` more adverts (a clock made of adverts)."""
    start = adverts_from_peer(lab, r)
    return lab.wait_until(lambda: adverts_from_peer(lab, r) >= start + count, 10)


def test_userlb_master_keepalived_backup():
    with HaLab(servers=1) as lab:
        lab.start_keepalived(2, keepalived_conf(2, 100))
        lab.start_router(1, lab.router_config(1, 150, "vrrp", **HA))
        assert lab.wait_until(lambda: lab.state(1) == "MASTER"
                              and lab.keepalived_state(2) == "BACKUP", 10), lab.keepalived_log(2)
        log_before = lab.keepalived_log(2)
        # keepalived hears userlb's adverts and stays backup: use its own log lines as the
        # clock, waiting for userlb to send three of keepalived's down intervals' worth.
        sent = lab.ha(1)["counters"]["adverts_sent"]
        assert lab.wait_until(lambda: lab.ha(1)["counters"]["adverts_sent"] >= sent + 12, 5)
        assert lab.keepalived_state(2) == "BACKUP"
        assert "Entering MASTER" not in lab.keepalived_log(2)[len(log_before):]
        assert lab.http_get("/")[0] == 200                     # userlb serves the VIP
        # A clean stop sends priority 0: keepalived takes over.
        lab.stop_router(1)
        assert lab.wait_until(lambda: lab.keepalived_state(2) == "MASTER", 5)
        assert "priority 0" in lab.keepalived_log(2)
        # userlb comes back with the higher priority and preempts keepalived.
        lab.start_router(1, lab.router_config(1, 150, "vrrp", **HA))
        assert lab.wait_until(lambda: lab.state(1) == "MASTER"
                              and lab.keepalived_state(2) == "BACKUP", 10), lab.keepalived_log(2)
        assert "higher priority 150, ours 100" in lab.keepalived_log(2)
        assert lab.wait_until(lambda: lab.http_ok(), 5)


def test_keepalived_master_userlb_backup():
    with HaLab(servers=1) as lab:
        lab.start_keepalived(1, keepalived_conf(1, 150))
        assert lab.wait_until(lambda: lab.keepalived_state(1) == "MASTER", 10), \
            lab.keepalived_log(1)
        lab.start_router(2, lab.router_config(2, 100, "vrrp", **HA))
        assert lab.wait_until(lambda: lab.state(2) == "BACKUP", 10)
        # userlb accepts the higher-priority master: far more than its down interval passes
        # (counted in keepalived's adverts) without a takeover.
        assert wait_adverts(lab, 2, 12)
        status = lab.ha(2)
        assert status["state"] == "BACKUP" and status["claimed"] is False
        assert [t["new"] for t in status["transitions"]] == ["BACKUP"]
        assert status["dropped"] == {}                         # every keepalived advert decoded
        # keepalived stops (priority 0): userlb takes over and serves the VIP.
        lab.stop_router(1)
        assert lab.wait_until(lambda: lab.state(2) == "MASTER", 5)
        assert lab.ha(2)["counters"].get("release_adverts_received", 0) >= 1
        assert lab.wait_until(lambda: lab.http_ok(), 5)
        # keepalived returns with priority 150 and preempts userlb.
        lab.start_keepalived(1, keepalived_conf(1, 150))
        assert lab.wait_until(lambda: lab.state(2) == "BACKUP"
                              and lab.keepalived_state(1) == "MASTER", 10), lab.keepalived_log(1)
        assert lab.ha(2)["claimed"] is False
        assert [t["new"] for t in lab.ha(2)["transitions"]][-2:] == ["MASTER", "BACKUP"]
