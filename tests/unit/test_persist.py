"""Persistence templates through the engine: spec/ipvs.md §6.15 and §3.6–3.7."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP

from userlb import snapshot
from userlb.engine import Engine
from userlb.frames import FrameBatch
from userlb.services import RealServer, VirtualService

VIP = "198.18.0.1"
A, B = "198.18.1.1", "198.18.1.2"


def persistent_engine(**kw) -> Engine:
    # added B then A: scan order A, B (head insertion)
    svc = VirtualService("tcp", VIP, 443, "rr", (RealServer(B, 443), RealServer(A, 443)),
                         persistent_s=360, netmask="255.255.255.0", **kw)
    return Engine([svc])


def send(eng, src, sport, flags="S", now=0.0, dport=443):
    batch = FrameBatch.from_frames([bytes(IP(src=src, dst=VIP) /
                                          TCP(sport=sport, dport=dport, flags=flags))])
    v = eng.process(batch, now)
    return [IP(batch.buf[r, :n].tobytes()).dst for r, n in zip(v.rows, v.lengths)]


def templates(eng, now=0.0):
    return [c for c in snapshot.connections(eng, now) if c["template"]]


def test_spec_6_15_worked_example():
    eng = persistent_engine()
    dests = eng.services[0].dests
    assert send(eng, "198.18.100.1", 1000, now=0) == [A]
    (tpl,) = templates(eng)
    assert (tpl["caddr"], tpl["cport"], tpl["vport"], tpl["daddr"], tpl["dport"],
            tpl["state"], tpl["expires_s"]) == ("198.18.100.0", 0, 443, A, 443, "NONE", 360)
    assert int(dests.persistconns[dests.find(0xC6120101, 443)]) == 1
    assert send(eng, "198.18.100.2", 2000, now=10) == [A]      # same /24: template hit
    assert templates(eng, 10)[0]["expires_s"] == 360            # re-armed at 10
    assert send(eng, "198.18.101.1", 3000, now=11) == [B]      # rr cursor stayed on A
    eng.edit_dest(0, A, 443, 0)
    assert send(eng, "198.18.100.3", 4000, now=12) == [A]      # quiesced, template still valid
    send(eng, "198.18.100.1", 1000, flags="A", now=13)
    states = {t["caddr"]: t["state"] for t in templates(eng, 13)}
    assert states == {"198.18.100.0": "ASSURED", "198.18.101.0": "NONE"}
    assert int(dests.persistconns.sum()) == 2 and int(dests.activeconns.sum()) == 4


def test_template_outlives_timer_while_it_controls_connections():
    eng = persistent_engine()
    send(eng, "198.18.100.1", 1000, now=0)
    send(eng, "198.18.100.1", 1000, flags="A", now=1)          # ESTABLISHED: 900 s
    assert eng.expire(360) == 0                                 # template busy: re-armed 60 s
    assert templates(eng, 360)[0]["expires_s"] == 60
    send(eng, "198.18.100.1", 1000, flags="R", now=361)         # CLOSE, 10 s
    assert eng.expire(371) == 1                                 # the connection goes
    assert eng.expire(420) == 1                                 # then the template
    assert len(eng.table) == 0 and int(eng.services[0].dests.persistconns.sum()) == 0


def test_client_released_after_persistence_timeout():
    eng = persistent_engine()
    assert send(eng, "198.18.100.1", 1000, flags="S", now=0) == [A]
    send(eng, "198.18.100.1", 1000, flags="R", now=1)
    eng.expire(400)
    assert len(eng.table) == 0
    assert send(eng, "198.18.100.1", 1001, flags="S", now=401) == [B]   # rr moved on


def test_persistent_time_wait_connection_is_reused_on_same_server():
    eng = persistent_engine()
    send(eng, "198.18.100.1", 1000, now=0)
    for flags in ("A", "FA"):
        send(eng, "198.18.100.1", 1000, flags=flags, now=1)
    assert send(eng, "198.18.100.1", 1000, flags="S", now=2) == [A]
    assert len([c for c in snapshot.connections(eng, 2) if not c["template"]]) == 1


def test_port_zero_service_keeps_client_port_and_shares_template():
    svc = VirtualService("tcp", VIP, 0, "rr", (RealServer(B, 0), RealServer(A, 0)),
                         persistent_s=60)
    eng = Engine([svc])
    batch = FrameBatch.from_frames([bytes(IP(src="198.18.100.1", dst=VIP) /
                                          TCP(sport=5, dport=p, flags="S")) for p in (80, 443)])
    v = eng.process(batch, 0)
    out = [IP(batch.buf[r, :n].tobytes()) for r, n in zip(v.rows, v.lengths)]
    assert [(p.dst, p[TCP].dport) for p in out] == [(A, 80), (A, 443)]
    (tpl,) = templates(eng)
    assert (tpl["vport"], tpl["dport"]) == (0, 0)


def test_udp_template_assured_by_reply():
    svc = VirtualService("udp", VIP, 53, "rr", (RealServer(A, 53),), persistent_s=60)
    eng = Engine([svc])
    eng.process(FrameBatch.from_frames([bytes(IP(src="198.18.100.1", dst=VIP) /
                                              UDP(sport=9, dport=53))]), 0)
    assert templates(eng)[0]["state"] == "NONE"
    eng.process(FrameBatch.from_frames([bytes(IP(src=A, dst="198.18.100.1") /
                                              UDP(sport=53, dport=9))]), 1)
    assert templates(eng)[0]["state"] == "ASSURED"


def fwmark_engine(persistent_s=60) -> Engine:
    svc = VirtualService("tcp", "0.0.0.0", 0, "rr", (RealServer(B, 0), RealServer(A, 0)),
                         persistent_s=persistent_s, fwmark=7,
                         match=(("tcp", VIP, 80), ("tcp", VIP, 443), ("udp", VIP, 0)))
    plain = VirtualService("tcp", VIP, 80, "rr", (RealServer("198.18.1.9", 8080),))
    return Engine([plain, svc])


def test_fwmark_service_groups_ports_and_wins_over_exact_service():
    eng = fwmark_engine()
    batch = FrameBatch.from_frames([
        bytes(IP(src="198.18.100.1", dst=VIP) / TCP(sport=5, dport=80, flags="S")),
        bytes(IP(src="198.18.100.1", dst=VIP) / TCP(sport=6, dport=443, flags="S")),
        bytes(IP(src="198.18.100.1", dst=VIP) / UDP(sport=7, dport=5353))])
    v = eng.process(batch, 0)
    out = [IP(batch.buf[r, :n].tobytes()) for r, n in zip(v.rows, v.lengths)]
    assert [(p.dst, p.dport) for p in out] == [(A, 80), (A, 443), (A, 5353)]
    conns = snapshot.connections(eng, 0)
    (tpl,) = [c for c in conns if c["template"]]
    assert (tpl["protocol"], tpl["caddr"], tpl["vaddr"], tpl["vport"], tpl["daddr"]) == \
        ("IP", "198.18.100.1", "0.0.0.7", 0, A)
    assert {(c["vaddr"], c["vport"]) for c in conns if not c["template"]} == \
        {(VIP, 80), (VIP, 443), (VIP, 5353)}                  # the packet's own vaddr:vport


def test_fwmark_without_persistence_uses_scheduler_per_connection():
    eng = fwmark_engine(persistent_s=0)
    assert send(eng, "198.18.100.1", 5, dport=80) == [A]
    assert send(eng, "198.18.100.1", 6, dport=443) == [B]
