"""ha/runner.py and ha/syncstream.py with a fake link, plumbing and data path (no root needed).

The runner runs on a real asyncio loop with short timers; the tests wait for
conditions on the fakes, never for fixed times.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from ipaddress import IPv4Address

import pytest

from userlb import connsync, tcpstate
from userlb.ha import sync as wire
from userlb.ha import vrrp
from userlb.ha.config import HaConfig
from userlb.ha.heartbeat import HeartbeatSender, Role, decode
from userlb.ha.runner import HaRunner

KEY = b"k" * 16
ME, PEER = "198.18.1.251", "198.18.1.252"
VIP, GW = "198.18.1.100", "198.18.2.1"


class FakeLink:
    def __init__(self) -> None:
        self.sent: list = []        # ("vrrp", Advert) | ("hb", bytes) | ("garp", if, vips) | ("sync", b)
        self.sync = type("S", (), {"ifname": "rp0"})()
        self.garps = {"rc0": None, "rp0": None}

    def readers(self):
        return []

    def send_vrrp(self, adv):
        self.sent.append(("vrrp", adv))
        return 0

    def send_heartbeat(self, build):
        self.sent.append(("hb", build()))
        return 0

    def send_garp(self, ifname, vips):
        self.sent.append(("garp", ifname, tuple(str(v) for v in vips)))
        return 0

    def send_sync(self, datagram):
        self.sent.append(("sync", datagram))
        return True

    def mac(self, ifname):
        return "02:00:00:00:00:01"

    def close(self):
        pass

    def of(self, kind):
        return [s for s in self.sent if s[0] == kind]


class FakePlumbing:
    def __init__(self) -> None:
        self.claimed = False
        self.log: list[str] = []

    def claim(self):
        self.claimed = True
        self.log.append("claim")

    def release(self):
        self.claimed = False
        self.log.append("release")


class FakeDataPath:
    """Runs fn(engine, now) at once; the engine is a stand-in that records imports."""

    def __init__(self, exports=()) -> None:
        self.exports = list(exports)
        self.imported: list = []
        self.full_requests = 0

    def call(self, fn) -> Future:
        fut: Future = Future()
        fut.set_result(fn(self, 0.0))
        return fut


@pytest.fixture(autouse=True)
def fake_connsync(monkeypatch):
    def export(dp, now, everything=False):
        dp.full_requests += everything
        out, dp.exports = dp.exports, []
        return out

    def import_entries(dp, entries, now):
        dp.imported += entries
        return len(entries)
    monkeypatch.setattr(connsync, "export_changes", export)
    monkeypatch.setattr(connsync, "import_entries", import_entries)


def config(**kw) -> HaConfig:
    base = {"primary": ME, "vips": (VIP, GW), "interface": "rc0", "private_interface": "rp0",
            "nat_router": GW + "/24", "peer": PEER, "key": KEY, "priority": 100,
            "keepalive_s": 0.02, "deadtime_s": 0.1, "advert_int_cs": 2, "garp_delay_s": 0,
            "sync_interval_s": 0.01}
    return HaConfig(**{**base, **kw})


async def until(predicate, timeout_s: float = 2.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.005)
    return bool(predicate())


def run(coro):
    return asyncio.run(coro)


def test_heartbeat_backup_takes_over_claims_and_garps_both_sides():
    async def scenario():
        link, plumbing = FakeLink(), FakePlumbing()
        runner = HaRunner(config(protocol="heartbeat"), plumbing, FakeDataPath(), link)
        await runner.start()
        assert runner.node.state is Role.BACKUP and link.of("hb")
        assert await until(lambda: runner.node.state is Role.MASTER)
        assert plumbing.log == ["claim"]
        garps = link.of("garp")
        assert ("garp", "rc0", (VIP,)) in garps and ("garp", "rp0", (GW,)) in garps
        assert len(garps) == 2 * 5                                  # garp_repeat, both sides
        last = decode(link.of("hb")[-1][1], KEY)
        assert last.role is Role.MASTER and last.node_id == int(IPv4Address(ME))
        await runner.stop()
        final = decode(link.of("hb")[-1][1], KEY)
        assert (final.role, final.priority) == (Role.INIT, 0)      # priority 0 on shutdown
        assert plumbing.log == ["claim", "release"] and not plumbing.claimed
    run(scenario())


def test_forged_replayed_and_foreign_heartbeats_change_nothing():
    async def scenario():
        link, plumbing = FakeLink(), FakePlumbing()
        runner = HaRunner(config(protocol="heartbeat", priority=200, deadtime_s=5.0),
                          plumbing, FakeDataPath(), link)
        await runner.start()
        peer = HeartbeatSender(KEY, int(IPv4Address(PEER)), 7, (VIP, GW))
        real = peer.build(Role.MASTER, 100, 0.0)
        runner.on_datagram("advert", real, IPv4Address(PEER))
        forged = HeartbeatSender(b"x" * 16, int(IPv4Address(PEER)), 8, (VIP, GW))
        runner.on_datagram("advert", forged.build(Role.INIT, 0, 0.0), IPv4Address(PEER))
        runner.on_datagram("advert", real, IPv4Address(PEER))                    # replay
        runner.on_datagram("advert", peer.build(Role.INIT, 0, 0.0), IPv4Address("198.18.1.9"))
        status = runner.status()
        assert status["heartbeat"] == {"accepted": 1, "rejected": {"bad_mac": 1, "replay": 1}}
        assert status["dropped"] == {"unknown_source": 1}
        assert status["state"] == "BACKUP" and plumbing.log == []
        assert status["counters"].get("release_adverts_received", 0) == 0
        await runner.stop()
    run(scenario())


def test_vrrp_master_yields_to_a_higher_priority_advert():
    async def scenario():
        link, plumbing = FakeLink(), FakePlumbing()
        runner = HaRunner(config(priority=255), plumbing, FakeDataPath(), link)
        await runner.start()
        assert runner.node.state is Role.MASTER and plumbing.log == ["claim"]
        assert link.of("vrrp")[0][1].priority == 255
        higher = vrrp.Advert(1, 255, 2, (VIP, GW), "198.18.1.252")
        runner.on_datagram("advert", vrrp.encode_ip(higher), IPv4Address(PEER))
        assert runner.node.state is Role.BACKUP and plumbing.log == ["claim", "release"]
        runner.on_datagram("advert", b"\x45" + bytes(30), IPv4Address(PEER))     # garbage
        assert runner.status()["dropped"] == {"bad_ip_header": 1}
        await runner.stop()
    run(scenario())


def entry(cport: int, state: int = tcpstate.ESTABLISHED) -> connsync.SyncEntry:
    return connsync.SyncEntry(6, int(IPv4Address("198.18.1.2")), cport, int(IPv4Address(VIP)), 80,
                              int(IPv4Address("198.18.2.11")), 8080, state, 899.5)


def test_master_streams_changes_and_a_snapshot_when_a_backup_appears():
    async def scenario():
        link, dp = FakeLink(), FakeDataPath([entry(1000)])
        runner = HaRunner(config(priority=255, sync_interval_s=0.01), FakePlumbing(), dp, link)
        await runner.start()
        assert await until(lambda: link.of("sync"))
        message = wire.decode_message(link.of("sync")[0][1])
        assert connsync.from_sync_conns(message.conns) == [entry(1000)._replace(timeout_s=900.0)]
        assert dp.full_requests == 1                             # became master: full snapshot
        hello = wire.encode_message(0, [])
        runner.on_datagram("sync", hello, IPv4Address("198.18.2.252"))   # any: no peer_private
        assert await until(lambda: dp.full_requests == 2)
        await runner.stop()
    run(scenario())


def test_backup_imports_and_says_hello():
    async def scenario():
        link, dp = FakeLink(), FakeDataPath()
        runner = HaRunner(config(deadtime_s=5.0, advert_int_cs=100, private_address="198.18.2.251",
                                 peer_private="198.18.2.252"), FakePlumbing(), dp, link)
        await runner.start()
        assert await until(lambda: link.of("sync"))
        assert wire.decode_message(link.of("sync")[0][1]).conns == ()     # the hello
        data = wire.encode_message(0, connsync.to_sync_conns([entry(1001), entry(1002, 2)]))
        runner.on_datagram("sync", data, IPv4Address("198.18.2.9"))           # not the peer
        assert dp.imported == []
        runner.on_datagram("sync", data, IPv4Address("198.18.2.252"))
        assert [e.cport for e in dp.imported] == [1001, 1002]
        assert runner.status()["sync"]["conns_imported"] == 2
        await runner.stop()
    run(scenario())


def test_sync_mapping_round_trip_and_flags():
    udp = connsync.SyncEntry(17, 1, 53, 2, 53, 3, 53, tcpstate.UDP, 10.2)
    conns = connsync.to_sync_conns([entry(5, tcpstate.SYN_RECV), udp,
                                    entry(6)._replace(proto=6 | 0x80)])         # template: skipped
    assert [c.state for c in conns] == [tcpstate.SYN_RECV, 0]
    assert conns[0].flags & wire.IP_VS_CONN_F_INACTIVE and not conns[1].flags
    assert conns[1].timeout_s == 11
    back = connsync.from_sync_conns(wire.decode_message(wire.encode_message(0, conns)).conns)
    assert back == [entry(5, tcpstate.SYN_RECV)._replace(timeout_s=900.0),
                    udp._replace(timeout_s=11.0)]
