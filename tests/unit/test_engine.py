"""Engine.process end to end on synthetic batches (pure: no root, no TUN).

Checks the NAT path against spec/ipvs.md §3 and §6.16: inbound DNAT, outbound
SNAT, state and counter trace, drops by reason, several packets of one
connection in one batch, table-full eviction order, and the real tcpdump corpus
going through without an exception and with every frame accounted for.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, UDPerror, IPerror

from userlb import tcpstate
from userlb.drops import DropReason
from userlb.engine import Engine
from userlb.frames import FrameBatch
from userlb.services import RealServer, VirtualService

VIP, CLIENT = "198.18.1.100", "198.18.1.2"
RS = ["198.18.2.11", "198.18.2.12", "198.18.2.13"]
DATA = Path(__file__).parent.parent / "data"


def engine(scheduler="rr", table_size=1024, **kw) -> Engine:
    reals = tuple(RealServer(a, 8080) for a in RS)
    udp_reals = tuple(RealServer(a, 7) for a in RS)
    return Engine([VirtualService("tcp", VIP, 80, scheduler, reals),
                   VirtualService("udp", VIP, 7, scheduler, udp_reals)],
                  table_size=table_size, **kw)


def run(eng: Engine, frames, now=0.0) -> tuple[list[bytes], np.ndarray]:
    batch = FrameBatch.from_frames([bytes(f) for f in frames])
    verdict = eng.process(batch, now)
    out = [batch.buf[r, :n].tobytes() for r, n in zip(verdict.rows, verdict.lengths)]
    return out, verdict.rows


def syn(sport=40000, flags="S", src=CLIENT):
    return IP(src=src, dst=VIP) / TCP(sport=sport, dport=80, flags=flags, seq=1000)


def reply(rs, sport=40000, flags="SA"):
    return IP(src=rs, dst=CLIENT) / TCP(sport=8080, dport=sport, flags=flags, seq=5000, ack=1001)


def checks_ok(frame: bytes) -> bool:
    pkt = IP(frame)
    rebuilt = IP(frame)
    del rebuilt.chksum
    layer = rebuilt.payload
    del layer.chksum
    again = IP(bytes(rebuilt))
    return pkt.chksum == again.chksum and pkt.payload.chksum == again.payload.chksum


def dest_counts(eng: Engine, service=0) -> list[tuple[int, int]]:
    d = eng.services[service].dests
    return [(int(a), int(i)) for a, i in zip(d.activeconns, d.inactconns)]


def test_dnat_then_snat_round_trip():
    eng = engine()
    out, _ = run(eng, [syn()])
    fwd = IP(out[0])
    assert fwd.dst in RS and fwd[TCP].dport == 8080 and fwd.src == CLIENT
    assert checks_ok(out[0])
    back, _ = run(eng, [reply(fwd.dst)])
    rep = IP(back[0])
    assert (rep.src, rep[TCP].sport, rep.dst, rep[TCP].dport) == (VIP, 80, CLIENT, 40000)
    assert checks_ok(back[0])


def test_state_and_counter_trace_matches_spec_6_16():
    eng = engine()
    out, _ = run(eng, [syn()])
    rs = IP(out[0]).dst
    row = RS[::-1].index(rs)          # scan order is the reverse of configuration order
    conn = int(eng.table.live_ids()[0])
    steps = [  # (frames, now, expected state, active/inact, timeout)
        ([reply(rs, flags="SA")], 1, "SYN_RECV", (1, 0), 60),
        ([syn(flags="A")], 2, "ESTABLISHED", (1, 0), 900),
        ([syn(flags="FA")], 3, "CLOSE_WAIT", (0, 1), 60),
        ([reply(rs, flags="A")], 4, "CLOSE_WAIT", (0, 1), 60),
        ([reply(rs, flags="FA")], 5, "TIME_WAIT", (0, 1), 120),
        ([syn(flags="A")], 6, "TIME_WAIT", (0, 1), 120),
    ]
    for frames, now, state, counts, timeout in steps:
        run(eng, frames, now)
        assert tcpstate.STATE_NAMES[eng.table.state[conn]] == state
        assert dest_counts(eng)[row] == counts
        assert eng.table.expires[conn] == now + timeout
    assert eng.expire(6 + 119) == 0
    assert eng.expire(6 + 120) == 1
    assert dest_counts(eng)[row] == (0, 0)


def test_handshake_in_one_batch_advances_in_order():
    eng = engine()
    out, _ = run(eng, [syn(), syn(flags="A"), syn(flags="PA") / b"GET / HTTP/1.0\r\n\r\n"])
    assert len(out) == 3
    assert len({IP(f).dst for f in out}) == 1
    conn = int(eng.table.live_ids()[0])
    assert tcpstate.STATE_NAMES[eng.table.state[conn]] == "ESTABLISHED"
    assert sum(a for a, _ in dest_counts(eng)) == 1


def test_rr_spreads_new_connections_in_scan_order():
    eng = engine("rr")
    out, _ = run(eng, [syn(sport=p) for p in range(40000, 40006)])
    assert [IP(f).dst for f in out] == RS[::-1] * 2


@pytest.mark.parametrize("frame,reason", [
    (IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=22, flags="S"), DropReason.NO_SERVICE),
    (IP(src=CLIENT, dst=VIP) / TCP(sport=1, dport=80, flags="A"), DropReason.NO_CONNECTION),
    (IP(src=CLIENT, dst=VIP) / ICMP(), DropReason.ICMP_NOT_RELATED),
    (IP(src=CLIENT, dst=VIP, flags="MF") / UDP(sport=1, dport=7), DropReason.FRAGMENT),
])
def test_drops_are_counted_by_reason(frame, reason):
    eng = engine()
    out, _ = run(eng, [frame])
    assert out == []
    assert eng.drops[reason] == 1 and eng.drops.sum() == 1


def test_reply_without_connection_passes_unmodified():
    eng = engine()
    frame = bytes(reply(RS[0]))
    out, _ = run(eng, [frame])
    assert out == [frame] and eng.passed == 1


def test_udp_connection_is_inactive_and_refreshed():
    eng = engine()
    out, _ = run(eng, [IP(src=CLIENT, dst=VIP) / UDP(sport=5353, dport=7) / b"hi"], now=10)
    fwd = IP(out[0])
    assert fwd[UDP].dport == 7 and checks_ok(out[0])
    conn = int(eng.table.live_ids()[0])
    assert tcpstate.STATE_NAMES[eng.table.state[conn]] == "UDP"
    assert eng.table.expires[conn] == 10 + 300
    assert sum(i for _, i in dest_counts(eng, 1)) == 1
    back, _ = run(eng, [IP(src=fwd.dst, dst=CLIENT) / UDP(sport=7, dport=5353) / b"x"], now=20)
    assert IP(back[0]).src == VIP and eng.table.expires[conn] == 20 + 300


def test_zero_udp_checksum_is_filled_in():
    eng = engine()
    frame = IP(src=CLIENT, dst=VIP) / UDP(sport=5353, dport=7, chksum=0) / b"payload"
    out, _ = run(eng, [frame])
    assert IP(out[0])[UDP].chksum != 0 and checks_ok(out[0])


def test_icmp_port_unreachable_from_real_server_is_rewritten():
    eng = engine()
    out, _ = run(eng, [IP(src=CLIENT, dst=VIP) / UDP(sport=5353, dport=7) / b"q"])
    fwd = IP(out[0])
    err = IP(src=fwd.dst, dst=CLIENT) / ICMP(type=3, code=3) / bytes(fwd)[:28]
    back, _ = run(eng, [err])
    got = IP(back[0])
    assert got.src == VIP and got[IPerror].dst == VIP and got[UDPerror].dport == 7
    rebuilt = IP(back[0])
    del rebuilt.chksum
    del rebuilt[ICMP].chksum
    again = IP(bytes(rebuilt))
    assert again.chksum == got.chksum and again[ICMP].chksum == got[ICMP].chksum


def test_no_available_server_answers_port_unreachable():
    eng = Engine([VirtualService("tcp", VIP, 80, "rr", (RealServer(RS[0], 80, weight=0),))])
    batch = FrameBatch.from_frames([bytes(syn())])
    verdict = eng.process(batch, 0.0)
    assert len(verdict.rows) == 0 and eng.drops[DropReason.NO_DEST] == 1
    icmp = IP(verdict.extra[0])
    assert (icmp.src, icmp.dst, icmp[ICMP].type, icmp[ICMP].code) == (VIP, CLIENT, 3, 3)


def test_syn_flood_evicts_embryonic_not_established():
    eng = engine(table_size=8)
    run(eng, [syn(sport=1000)], 0)
    run(eng, [syn(sport=1000, flags="A")], 0)      # established
    established = int(eng.table.live_ids()[0])
    flood = [syn(sport=p, src=f"198.18.1.{50 + p % 100}") for p in range(2000, 2100)]
    out, _ = run(eng, flood, 1)
    assert len(eng.table) <= 8
    assert tcpstate.STATE_NAMES[eng.table.state[established]] == "ESTABLISHED"
    back, _ = run(eng, [syn(sport=1000, flags="PA") / b"still here"], 2)
    assert len(back) == 1
    active = sum(a for a, _ in dest_counts(eng))
    assert active == len(eng.table)    # every live entry is SYN_RECV or ESTABLISHED: active


def test_time_wait_connection_is_rescheduled_by_new_syn():
    eng = engine("rr")
    out, _ = run(eng, [syn()])
    first = IP(out[0]).dst
    for flags in ("A", "FA"):
        run(eng, [syn(flags=flags)])
    run(eng, [reply(first, flags="FA")])
    out, _ = run(eng, [syn()])
    assert IP(out[0]).dst != first      # rr moved on: a new connection was scheduled
    assert len(eng.table) == 1


def _corpus() -> list[bytes]:
    raw = (DATA / "tcpdump-ipv4.pcap").read_bytes()
    frames, off = [], 24
    while off + 16 <= len(raw):
        incl = struct.unpack_from("<I", raw, off + 8)[0]
        frames.append(raw[off + 16 : off + 16 + incl])
        off += 16 + incl
    return frames


def test_corpus_through_engine_never_raises_and_accounts_for_every_frame():
    frames = _corpus()
    assert len(frames) == 4196
    eng = engine()
    written = 0
    for i in range(0, len(frames), 256):
        chunk = frames[i : i + 256]
        batch = FrameBatch.from_frames(chunk)
        verdict = eng.process(batch, float(i))
        written += len(verdict.rows)
    assert written + int(eng.drops.sum()) == len(frames)


def test_new_connection_retires_finished_one_with_same_server_four_tuple():
    """Two services on one real server: a client port reused for the second service must
    not have its replies caught by the first service's TIME_WAIT entry."""
    reals = (RealServer(RS[0], 8080),)
    eng = Engine([VirtualService("tcp", VIP, 80, "rr", reals),
                  VirtualService("tcp", VIP, 81, "rr", reals)])
    for flags in ("S", "A", "FA"):
        run(eng, [syn(flags=flags)])
    run(eng, [reply(RS[0], flags="FA")])                   # port-80 connection in TIME_WAIT
    run(eng, [IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=81, flags="S")])
    back, _ = run(eng, [reply(RS[0], flags="SA")])
    assert IP(back[0])[TCP].sport == 81                    # SNAT'd for the new service
    assert len(eng.table) == 1
