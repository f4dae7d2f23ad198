"""Run-time real-server changes keep connections, counters and scan order right."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from userlb import destctl
from userlb.drops import DropReason
from userlb.engine import Engine
from userlb.frames import FrameBatch
from userlb.services import RealServer, VirtualService, ip_to_int

VIP = "198.18.1.100"
RS = ["198.18.2.11", "198.18.2.12"]


def make() -> Engine:
    return Engine([VirtualService("tcp", VIP, 80, "rr",
                                  tuple(RealServer(a, 8080) for a in RS))])


def send(eng, sport, flags="S", now=0.0):
    batch = FrameBatch.from_frames([bytes(IP(src="198.18.1.2", dst=VIP) /
                                          TCP(sport=sport, dport=80, flags=flags))])
    v = eng.process(batch, now)
    return [IP(batch.buf[r, :n].tobytes()).dst for r, n in zip(v.rows, v.lengths)]


def test_add_dest_goes_to_head_and_keeps_existing_connections():
    eng = make()
    assert send(eng, 1) == [RS[1]]                      # scan order: .12, .11
    destctl.add_dest(eng, 0, RealServer("198.18.2.13", 8080))
    d = eng.services[0].dests
    assert [int(a) & 0xFF for a in d.addr] == [13, 12, 11]
    assert send(eng, 1, "A") == [RS[1]]                 # the old connection still goes to .12
    assert int(d.activeconns[1]) == 1 and int(d.activeconns[0]) == 0


def test_remove_dest_drops_its_connections_and_keeps_others():
    eng = make()
    send(eng, 1)                                        # → .12
    send(eng, 2)                                        # → .11
    destctl.remove_dest(eng, 0, RS[1], 8080)
    assert send(eng, 1, "A") == [] and eng.drops[DropReason.DEST_GONE] == 1
    assert send(eng, 2, "A") == [RS[0]]
    assert int(eng.services[0].dests.activeconns[0]) == 1
    assert send(eng, 3) == [RS[0]]


def test_health_quiesce_then_restore():
    eng = make()
    key = eng.services[0].config.key
    real = (ip_to_int(RS[1]), 8080)
    assert destctl.apply_health(eng, key, real, up=False, weight=0) == "quiesced"
    assert send(eng, 1) == [RS[0]] and send(eng, 2) == [RS[0]]
    assert destctl.apply_health(eng, key, real, up=True, weight=None) == "weight restored"
    assert int(eng.services[0].dests.weight[0]) == 1


def test_health_remove_then_add_back():
    eng = make()
    key = eng.services[0].config.key
    real = (ip_to_int(RS[0]), 8080)
    assert destctl.apply_health(eng, key, real, up=False, weight=None) == "removed"
    assert len(eng.services[0].dests) == 1
    assert destctl.apply_health(eng, key, real, up=True, weight=3) == "added"
    d = eng.services[0].dests
    assert int(d.addr[0]) == ip_to_int(RS[0]) and int(d.weight[0]) == 3
