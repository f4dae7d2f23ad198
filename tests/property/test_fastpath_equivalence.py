"""The per-packet fast path (fastpath.py) against the vector path (style rule 9).

Two engines, built alike with the same connection-table seed, take the same
random batches: one with the fast path forced on for every batch size, one with
it forced off. After every batch the written bytes, the verdict rows and
lengths, originated frames, drop and pass counters, every column of every live
connection (state, expires, flags, dest, ...), sync dirty marks, traced flags,
template links, traces and each DestTable's counters and statistics must be the
same. The frames mix handshakes, data, FIN/RST/odd flags and replies from real
servers (some unknown) over a few clients, with malformed, fragmented, ICMP and
unknown-protocol frames, UDP with and without a checksum, persistent and port-0
services, two services sharing real servers (equal OUT keys), time steps with
expiry, a tiny table (eviction), real-server removal (dest_gone), weight changes
and sync clearing the dirty marks. Most frames are drawn from the live
connections so that long fast prefixes occur. Deterministic cases follow for
what a random walk reaches rarely: each parser rule on a live connection's frame,
a UDP checksum that comes out 0, and each condition under which a batch may be
split between the two paths (fastsplit.py's docstring). Each was checked to fail
when the fast path leaves the rule out.
"""

from __future__ import annotations

import struct
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from userlb import checksum, destctl
from userlb import engine as engine_module
from userlb.conntable import COLUMNS, ConnTable
from userlb.engine import Engine
from userlb.frames import FrameBatch
from userlb.services import RealServer, VirtualService, ip_to_int

VIP1, VIP2 = "198.18.1.100", "198.18.1.101"
R1, R2, R3, STRANGER = "198.18.2.11", "198.18.2.12", "198.18.2.13", "198.18.2.99"
CLIENTS = ("10.0.0.1", "10.0.0.2", "10.0.1.1")
CPORTS = (1000, 1001)
SERVICES = (
    VirtualService("tcp", VIP1, 80, "wlc", (RealServer(R1, 8080), RealServer(R2, 8080),
                                            RealServer(R3, 8080))),
    VirtualService("udp", VIP1, 53, "rr", (RealServer(R1, 5353), RealServer(R2, 5353))),
    VirtualService("tcp", VIP1, 443, "wlc", (RealServer(R2, 443), RealServer(R3, 443)),
                   persistent_s=30, netmask="255.255.255.0"),
    VirtualService("tcp", VIP2, 80, "lc", (RealServer(R1, 8080), RealServer(R2, 8080))),
    VirtualService("udp", VIP2, 0, "sh", (RealServer(R3, 0),), persistent_s=20),
)
OPENERS = ((6, VIP1, 80), (6, VIP1, 443), (6, VIP2, 80), (17, VIP1, 53), (17, VIP2, 7))
TCP_FLAGS = (0x02, 0x12, 0x10, 0x18, 0x11, 0x01, 0x04, 0x14, 0x00, 0x20, 0x03, 0x06, 0x19)
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- frame building (struct + checksum.full: fast enough for hypothesis) --------------
def _ip(src: str, dst: str, proto: int, l4: bytes, *, options=b"", frag=0, bad_csum=False,
        total_delta=0, version=4) -> bytes:
    ihl = (20 + len(options)) // 4
    total = 20 + len(options) + len(l4) + total_delta
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, total, 0x1234, frag, 64, proto,
                      0, bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))) + options
    csum = checksum.full(hdr) ^ (1 if bad_csum else 0)
    return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + l4


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    return (ip_to_int(src).to_bytes(4, "big") + ip_to_int(dst).to_bytes(4, "big")
            + bytes((0, proto)) + length.to_bytes(2, "big"))


def tcp(src, dst, sport, dport, flags, payload=b"", doff=5, **ip) -> bytes:
    hdr = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, doff << 4, flags, 8192, 0, 0)
    hdr += bytes(max(0, 4 * doff - 20))
    csum = checksum.full(_pseudo(src, dst, 6, len(hdr) + len(payload)) + hdr + payload)
    return _ip(src, dst, 6, hdr[:16] + struct.pack("!H", csum) + hdr[18:] + payload, **ip)


def udp(src, dst, sport, dport, payload=b"", zero_csum=False, udp_len_delta=0, **ip) -> bytes:
    length = 8 + len(payload)
    hdr = struct.pack("!HHHH", sport, dport, length + udp_len_delta, 0)
    csum = 0 if zero_csum else (checksum.full(_pseudo(src, dst, 17, length) + hdr + payload)
                                or 0xFFFF)
    return _ip(src, dst, 17, hdr[:6] + struct.pack("!H", csum) + payload, **ip)


def icmp_unreachable(src: str, dst: str, quoted: bytes) -> bytes:
    body = struct.pack("!BBHI", 3, 3, 0, 0) + quoted[:28]
    csum = checksum.full(body)
    return _ip(src, dst, 1, body[:2] + struct.pack("!H", csum) + body[4:])


# -- strategies -------------------------------------------------------------------------
clients = st.tuples(st.sampled_from(CLIENTS), st.sampled_from(CPORTS))
payloads = st.sampled_from([b"", b"x", b"hello world!", bytes(100)])
extras = st.fixed_dictionaries({}, optional={
    "options": st.just(b"\x01\x01\x01\x00"), "frag": st.sampled_from([0x4000, 0x2000, 0x0001]),
    "bad_csum": st.just(True), "total_delta": st.sampled_from([-1, 1]),
    "version": st.just(6)})


@st.composite
def frames(draw) -> bytes:
    kind = draw(st.sampled_from(["tcp_in"] * 6 + ["tcp_out"] * 4 + ["udp_in"] * 2
                                + ["udp_out"] * 2 + ["icmp", "odd"]))
    (caddr, cport), payload = draw(clients), draw(payloads)
    flags = draw(st.sampled_from(TCP_FLAGS) | st.integers(0, 255))
    ip = draw(extras) if draw(st.integers(0, 9)) == 0 else {}
    if kind == "tcp_in":
        vip, port = draw(st.sampled_from([(VIP1, 80), (VIP1, 443), (VIP2, 80), (VIP1, 22)]))
        return tcp(caddr, vip, cport, port, flags, payload, **ip)
    if kind == "tcp_out":
        rs, rport = draw(st.sampled_from([(R1, 8080), (R2, 8080), (R3, 8080), (R2, 443),
                                          (R3, 443), (STRANGER, 8080)]))
        return tcp(rs, caddr, rport, cport, flags, payload, **ip)
    zero = draw(st.integers(0, 5)) == 0
    if kind == "udp_in":
        vip, port = draw(st.sampled_from([(VIP1, 53), (VIP2, 53), (VIP2, 7)]))
        return udp(caddr, vip, cport, port, payload, zero_csum=zero, **ip)
    if kind == "udp_out":
        rs, rport = draw(st.sampled_from([(R1, 5353), (R2, 5353), (R3, 53), (R3, 7)]))
        return udp(rs, caddr, rport, cport, payload, zero_csum=zero, **ip)
    if kind == "icmp":
        rs = draw(st.sampled_from([R1, R2, R3]))
        quoted = tcp(caddr, rs, cport, 8080, 0x02)           # what we forwarded to rs
        return icmp_unreachable(rs, caddr, quoted)
    return draw(st.sampled_from([
        _ip(caddr, VIP1, 47, bytes(8)),                        # unknown protocol
        tcp(caddr, VIP1, cport, 80, 0x10, doff=4),            # bad data offset
        udp(caddr, VIP1, cport, 53, b"abc", udp_len_delta=5),  # UDP length too long
        tcp(caddr, VIP1, cport, 80, 0x10)[:30],                # truncated
        bytes(10)]))


def conn_frame(draw, eng: Engine) -> bytes | None:
    """A frame of a live connection (either direction), so that many frames hit; None if
    there is none. Flags, payload and the odd malformation are drawn as for others."""
    t = eng.table
    live = [int(i) for i in t.live_ids() if t.proto[i] in (6, 17)]     # not templates
    if not live:
        return None
    c = draw(st.sampled_from(live))
    caddr, vaddr, daddr = (".".join(map(str, int(a).to_bytes(4, "big")))
                           for a in (t.caddr[c], t.vaddr[c], t.daddr[c]))
    cport, vport, dport = int(t.cport[c]), int(t.vport[c]), int(t.dport[c])
    inbound = draw(st.booleans())
    src, sport, dst, dport_ = (caddr, cport, vaddr, vport) if inbound else \
        (daddr, dport, caddr, cport)
    ip = draw(extras) if draw(st.integers(0, 12)) == 0 else {}
    payload = draw(payloads)
    if t.proto[c] == 17:
        return udp(src, dst, sport, dport_, payload, zero_csum=draw(st.integers(0, 24)) == 0, **ip)
    flags = draw(st.integers(0, 255)) if draw(st.integers(0, 7)) == 0 else \
        draw(st.sampled_from((0x10, 0x18, 0x18, 0x10, 0x12, 0x11, 0x14, 0x04, 0x01, 0x02)))
    return tcp(src, dst, sport, dport_, flags, payload, **ip)


def draw_batch(data, eng: Engine) -> list[bytes]:
    """Mostly frames of live connections (they take the fast path), some of anything."""
    out = []
    pure = data.draw(st.booleans(), label="pure")
    for _ in range(data.draw(st.integers(1, 12), label="size")):
        frame = conn_frame(data.draw, eng) if pure or data.draw(st.integers(0, 9)) < 8 else None
        out.append(frame if frame is not None else data.draw(frames()))
    return out


# -- the comparison ---------------------------------------------------------------------
def make_engine(seed: int, table_size: int, fast: bool, traced: int = 1) -> Engine:
    with patch.object(engine_module, "ConnTable", lambda n: ConnTable(n, seed=seed)):
        eng = Engine(SERVICES, table_size=table_size, trace_connections=traced)
    eng.fast_max = 10**9 if fast else 0
    return eng


def control(eng: Engine, op: str | None, now: float) -> None:
    if op == "expire":
        eng.expire(now)
    elif op == "remove" and eng.services[0].dests.find(ip_to_int(R2), 8080) >= 0:
        destctl.remove_dest(eng, 0, R2, 8080)
    elif op == "add" and eng.services[0].dests.find(ip_to_int(R2), 8080) < 0:
        destctl.add_dest(eng, 0, RealServer(R2, 8080))
    elif op == "weight":
        dests = eng.services[0].dests
        eng.edit_dest(0, R3, 8080, 1 - int(dests.weight[dests.find(ip_to_int(R3), 8080)]))
    elif op == "sync":                    # connsync.changed() clears the marks it sends
        eng.dirty[:] = False


def state_of(eng: Engine) -> dict:
    t = eng.table
    live = t.live_ids()
    out = {name: getattr(t, name)[live].tolist() for name in COLUMNS}
    out.update(live=live.tolist(), dirty=eng.dirty.tolist(), traced=eng.traced.tolist(),
               control=eng.templates.control[live].tolist(),
               n_control=eng.templates.n_control[live].tolist(),
               template_timeout=eng.templates.timeout_s[live].tolist(),
               drops=eng.drops.tolist(), passed=eng.passed, trace=eng.trace.as_json(),
               deadline=eng.next_deadline())
    for i, rt in enumerate(eng.services):
        out[f"dests{i}"] = {c: getattr(rt.dests, c).tolist() for c in rt.dests.COLUMNS
                            if c != "uid"}
    return out


def run_batch(eng: Engine, frames_: list[bytes], now: float):
    batch = FrameBatch.from_frames(frames_)
    v = eng.process(batch, now)
    written = [batch.buf[r, :n].tobytes() for r, n in zip(v.rows.tolist(), v.lengths.tolist())]
    return v.rows.tolist(), written, v.extra


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), table_size=st.sampled_from([8, 64]),
       traced=st.sampled_from([0, 0, 1]))
def test_fast_path_equals_vector_path(data, seed, table_size, traced):
    fast = make_engine(seed, table_size, True, traced)
    vector = make_engine(seed, table_size, False, traced)
    now = 100.0
    opening = data.draw(st.lists(st.tuples(clients, st.sampled_from(OPENERS)), max_size=10))
    batch = [tcp(c, vip, p, port, 0x02) if proto == 6 else udp(c, vip, p, port, b"q")
             for (c, p), (proto, vip, port) in opening]
    if batch:
        assert run_batch(fast, batch, now) == run_batch(vector, batch, now)
    for _ in range(data.draw(st.integers(1, 10), label="batches")):
        now += data.draw(st.sampled_from([0.0, 0.0, 0.5, 3.0, 20.0, 61.0, 400.0]), label="dt")
        op = data.draw(st.sampled_from([None] * 5 + ["sync"] * 3 + ["expire", "remove", "add",
                                                                   "weight"]))
        for eng in (fast, vector):
            control(eng, op, now)
        batch = draw_batch(data, vector)
        assert run_batch(fast, batch, now) == run_batch(vector, batch, now)
        assert state_of(fast) == state_of(vector)


# -- deterministic checks that the fast path is really taken ----------------------------
def _established(eng: Engine, now: float) -> tuple[bytes, bytes]:
    """Open one connection through svc 0; return a client data frame and the reply."""
    run_batch(eng, [tcp(CLIENTS[0], VIP1, 1000, 80, 0x02)], now)
    c = int(eng.table.lookup_in_one(6, ip_to_int(CLIENTS[0]), 1000, ip_to_int(VIP1), 80))
    rs = ".".join(str(b) for b in int(eng.table.daddr[c]).to_bytes(4, "big"))
    return tcp(CLIENTS[0], VIP1, 1000, 80, 0x18, b"data"), tcp(rs, CLIENTS[0], 8080, 1000, 0x18)


def test_established_batch_never_reaches_the_vector_path():
    eng = make_engine(1, 64, True, traced=0)
    data, reply = _established(eng, 1.0)
    with patch.object(Engine, "process_vector", side_effect=AssertionError("vector path")):
        rows, written, _ = run_batch(eng, [data, reply, data], 2.0)
    assert rows == [0, 1, 2] and len(written) == 3


def test_new_flow_after_established_prefix_is_split_off():
    eng = make_engine(1, 64, True, traced=0)
    data, reply = _established(eng, 1.0)
    seen = []
    real = Engine.process_vector

    def spy(self, batch, now):
        seen.append(batch.count)
        return real(self, batch, now)

    with patch.object(Engine, "process_vector", spy):
        rows, _, _ = run_batch(eng, [data, reply, tcp(CLIENTS[1], VIP1, 1001, 80, 0x02), data], 2.0)
    assert seen == [2] and rows == [0, 1, 2, 3]


def test_default_threshold_routes_large_batches_to_the_vector_path():
    eng = make_engine(1, 1024, True, traced=0)
    eng.fast_max = engine_module.FAST_BATCH_MAX
    data, _ = _established(eng, 1.0)
    with patch.object(Engine, "process_vector", side_effect=AssertionError("vector")):
        run_batch(eng, [data] * eng.fast_max, 2.0)
    seen = []
    with patch.object(Engine, "process_vector", lambda self, b, now: seen.append(b.count) or
                      engine_module.Verdict(np.zeros(0, np.int64), np.zeros(0, np.int64))):
        run_batch(eng, [data] * (eng.fast_max + 1), 2.0)
    assert seen == [eng.fast_max + 1]


def test_large_batch_is_done_whole_or_not_at_all():
    """Past split_max a batch with a frame the fast path defers goes to the vector path
    whole, and so do the next one, two, four ... batches that large; one done here whole
    resets that. Either way the bytes and the state are the vector path's."""
    pair = _pair(table_size=512)
    data, reply = _open_tcp(pair, CLIENTS[0], 1000)
    size = pair[0].fast.split_max + 1
    clean = [data, reply] * (size // 2) + [data] * (size % 2)
    mixed = clean[:5] + [tcp(CLIENTS[1], VIP1, 1001, 80, 0x02)] + clean[6:]
    seen = []
    real = Engine.process_vector

    def spy(self, batch, now):
        if self is pair[0]:
            seen.append(batch.count)
        return real(self, batch, now)

    with patch.object(Engine, "process_vector", spy):
        _both(pair, mixed, 2.0)                # deferred: whole to the vector path
        _both(pair, clean, 2.0)                # skipped once
        _both(pair, clean, 2.0)                # done here whole: resets
        _both(pair, mixed, 2.0)
        _both(pair, clean, 2.0)
        _both(pair, mixed[:pair[0].fast.split_max], 2.0)   # small batches split as before
    assert seen == [size, size, size, size, size - 6]


# -- deterministic cases the random walk reaches rarely ---------------------------------
def _pair(table_size: int = 64) -> tuple[Engine, Engine]:
    return make_engine(7, table_size, True, 0), make_engine(7, table_size, False, 0)


def _both(pair, frames_: list[bytes], now: float):
    fast, vector = pair
    out = run_batch(fast, frames_, now)
    assert out == run_batch(vector, frames_, now)
    assert state_of(fast) == state_of(vector)
    return out


def _open_tcp(pair, client: str, cport: int, vip: str = VIP1, port: int = 80,
              now: float = 1.0) -> tuple[bytes, bytes]:
    """SYN, SYN-ACK, ACK through both engines; (client data frame, server data frame)."""
    _both(pair, [tcp(client, vip, cport, port, 0x02)], now)
    t = pair[1].table
    c = t.lookup_in_one(6, ip_to_int(client), cport, ip_to_int(vip), port)
    rs = ".".join(map(str, int(t.daddr[c]).to_bytes(4, "big")))
    rport = int(t.dport[c])
    _both(pair, [tcp(rs, client, rport, cport, 0x12), tcp(client, vip, cport, port, 0x10)], now)
    return (tcp(client, vip, cport, port, 0x18, b"req"), tcp(rs, client, rport, cport, 0x18, b"r"))


def _udp_flow(pair, client: str, cport: int) -> tuple[str, int]:
    _both(pair, [udp(client, VIP1, cport, 53, b"q")], 1.0)
    t = pair[1].table
    c = t.lookup_in_one(17, ip_to_int(client), cport, ip_to_int(VIP1), 53)
    return ".".join(map(str, int(t.daddr[c]).to_bytes(4, "big"))), int(t.dport[c])


MALFORMED = {
    "bad IP checksum": dict(bad_csum=True),
    "more fragments": dict(frag=0x2000),
    "fragment offset": dict(frag=0x0001),
    "don't fragment is fine": dict(frag=0x4000),
    "IP options are fine": dict(options=b"\x01\x01\x01\x00"),
    "total length past the frame": dict(total_delta=1),
    "trailing bytes are cut": dict(total_delta=-1),
    "IPv6 version": dict(version=6),
}


@pytest.mark.parametrize("how", sorted(MALFORMED))
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_malformed_frames_of_live_connections(how, proto):
    pair = _pair()
    if proto == "tcp":
        good, _ = _open_tcp(pair, CLIENTS[0], 1000)
        bad = tcp(CLIENTS[0], VIP1, 1000, 80, 0x18, b"req", **MALFORMED[how])
    else:
        _udp_flow(pair, CLIENTS[0], 1000)
        good = udp(CLIENTS[0], VIP1, 1000, 53, b"q")
        bad = udp(CLIENTS[0], VIP1, 1000, 53, b"q", **MALFORMED[how])
    for frames_ in ([bad], [good, bad, good], [bad, good]):
        _both(pair, frames_, 2.0)


def _with_byte(frame: bytes, at: int, value: int) -> bytes:
    return frame[:at] + bytes([value]) + frame[at + 1:]


@pytest.mark.parametrize("frame", [
    tcp(CLIENTS[0], VIP1, 1000, 80, 0x10, doff=4),                 # data offset < 5
    _with_byte(tcp(CLIENTS[0], VIP1, 1000, 80, 0x10, b"abc"), 32, 0x60),  # offset past the end
    tcp(CLIENTS[0], VIP1, 1000, 80, 0x10)[:39],                    # L4 header cut
    tcp(CLIENTS[0], VIP1, 1000, 80, 0x10)[:19],                    # shorter than an IP header
    _ip(CLIENTS[0], VIP1, 6, b"\x03\xe8\x00\x50" + bytes(12)),     # 16-byte TCP header
    tcp(CLIENTS[0], VIP1, 1000, 80, 0x10, b"x" * 40) + bytes(2048),   # fills the row: cut
], ids=["doff<5", "doff>len", "l4 cut", "ip cut", "short tcp", "oversize"])
def test_bad_l4_headers_and_sizes(frame):
    pair = _pair()
    good, _ = _open_tcp(pair, CLIENTS[0], 1000)
    _both(pair, [good, frame, good], 2.0)


@pytest.mark.parametrize("ihl_bytes", [0, 16, 64])
def test_bad_ihl(ihl_bytes):
    pair = _pair()
    good, _ = _open_tcp(pair, CLIENTS[0], 1000)
    bad = bytearray(good)
    bad[0] = 0x40 | (ihl_bytes // 4 & 0x0F)
    _both(pair, [good, bytes(bad), good], 2.0)


def test_udp_without_checksum_and_checksum_that_comes_out_zero():
    pair = _pair()
    rs, rport = _udp_flow(pair, CLIENTS[0], 1000)
    _both(pair, [udp(CLIENTS[0], VIP1, 1000, 53, b"q", zero_csum=True)], 2.0)
    # choose two payload bytes so that the DNAT'd datagram's checksum is 0: sent as 0xFFFF
    body = struct.pack("!HHHH", 1000, rport, 10, 0)
    s = checksum.fold32(checksum._sum_words(_pseudo(CLIENTS[0], rs, 17, 10) + body))
    payload = (0xFFFF - s).to_bytes(2, "big")
    assert checksum.full(_pseudo(CLIENTS[0], rs, 17, 10) + body + payload) == 0
    rows, written, _ = _both(pair, [udp(CLIENTS[0], VIP1, 1000, 53, payload)], 2.0)
    assert written[0][26:28] == b"\xff\xff"


@pytest.mark.parametrize("closer", [0, 1])
def test_prefix_crossing_active_inactive_before_a_new_flow(closer):
    """A FIN moves its server's count from active to inactive; lc must schedule the SYN
    after it on the counts as the batch began (a tie: the head of the scan order), as
    the vector path does, not on the moved ones."""
    pair = _pair()
    a, _ = _open_tcp(pair, CLIENTS[0], 1000, VIP2)      # lc: the head of the scan order
    _open_tcp(pair, CLIENTS[1], 1000, VIP2)             # ... and the other server
    fin = tcp(CLIENTS[closer], VIP2, 1000, 80, 0x11)
    _both(pair, [a, fin, tcp(CLIENTS[2], VIP2, 1000, 80, 0x02)], 2.0)


def test_prefix_connection_expired_and_reaped_by_a_new_flow():
    """A full table: the new flow's make_room expires the connection the prefix hits."""
    pair = _pair(table_size=2)
    a, _ = _open_tcp(pair, CLIENTS[0], 1000)
    _open_tcp(pair, CLIENTS[1], 1000)
    _both(pair, [a, tcp(CLIENTS[2], VIP1, 1000, 80, 0x02)], 2000.0)


def test_syn_reusing_a_connection_the_prefix_touched():
    pair = _pair()
    a, b = _open_tcp(pair, CLIENTS[0], 1000)
    rst = tcp(CLIENTS[0], VIP1, 1000, 80, 0x04)
    _both(pair, [rst], 2.0)                                     # CLOSE
    _both(pair, [b, tcp(CLIENTS[0], VIP1, 1000, 80, 0x02)], 3.0)


# -- the fast path's lookup memo (fastmemo.LookupMemo: in_hits, out_hits) ---------------
SHARED_SERVER = (VirtualService("tcp", VIP1, 80, "rr", (RealServer(R1, 8080),)),
                 VirtualService("tcp", VIP2, 80, "rr", (RealServer(R1, 8080),)))


def _shared_pair(seed: int) -> tuple[Engine, Engine]:
    def make(fast: bool) -> Engine:
        with patch.object(engine_module, "ConnTable", lambda n: ConnTable(n, seed=seed)):
            eng = Engine(SHARED_SERVER, table_size=16)
        eng.fast_max = 10**9 if fast else 0
        return eng
    return make(True), make(False)


def _close_and_expire(pair, flows, now: float) -> None:
    for client, cport in flows:
        _both(pair, [tcp(client, VIP1, cport, 80, 0x04)], now)      # RST: CLOSE, 10 s
    for eng in pair:
        eng.expire(now + 20.0)


def test_reply_after_an_equal_out_key_is_inserted():
    """Two services on one real server give a client's connections to both VIPs equal OUT
    keys; the lookup finds whichever comes first in probe order, and the second one's
    insert usually goes ahead of the first (into a slot freed before it). A reply the fast
    path has already looked up must then be looked up again, as the vector path does."""
    second_first = 0
    for seed in range(8):
        pair = _shared_pair(seed)
        fillers = [(f"10.0.2.{i}", 2000 + i) for i in range(6)]
        for client, cport in fillers:
            _open_tcp(pair, client, cport)
        _open_tcp(pair, CLIENTS[0], 1000, VIP1)
        _close_and_expire(pair, fillers, 2.0)
        reply = tcp(R1, CLIENTS[0], 8080, 1000, 0x10, b"r")
        _both(pair, [reply], 30.0)                     # the fast path remembers VIP1's
        _open_tcp(pair, CLIENTS[0], 1000, VIP2, now=30.0)
        _, written, _ = _both(pair, [reply], 31.0)
        second_first += written[0][12:16] == bytes(map(int, VIP2.split(".")))
    assert second_first > 0                            # the case did occur


def test_entry_id_reused_by_another_flow():
    """A connection the fast path has looked up both ways leaves the table, and its id
    goes to a new flow: the old flow's frames must miss, the new one's must hit."""
    pair = _pair(table_size=8)
    old_in, old_out = _open_tcp(pair, CLIENTS[0], 1000)
    _both(pair, [old_in, old_out], 2.0)
    _close_and_expire(pair, [(CLIENTS[0], 1000)], 3.0)
    new_in, new_out = _open_tcp(pair, CLIENTS[1], 1001, now=30.0)
    _both(pair, [old_in, old_out, new_in, new_out], 31.0)
    _both(pair, [new_in, new_out, old_in, old_out], 32.0)


@pytest.mark.parametrize("snaplen", [30, 36, 40])
def test_rows_narrower_than_the_one_read_header(snaplen):
    """Rows narrower than fastpath._HDR go field by field (_plan_any), with the same
    result: a 28-byte UDP datagram of a live flow both ways, and a cut TCP one."""
    pair = _pair()
    rs, rport = _udp_flow(pair, CLIENTS[0], 1000)
    good, _ = _open_tcp(pair, CLIENTS[1], 1000)
    frames_ = [udp(CLIENTS[0], VIP1, 1000, 53), udp(rs, CLIENTS[0], rport, 1000), good]
    out = []
    for eng in pair:
        batch = FrameBatch.from_frames(frames_, snaplen=snaplen)
        v = eng.process(batch, 2.0)
        out.append(([batch.buf[r, :n].tobytes() for r, n in zip(v.rows.tolist(),
                                                                 v.lengths.tolist())],
                    state_of(eng)))
    assert out[0] == out[1] and len(out[0][0]) >= 2
