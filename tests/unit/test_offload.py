"""TUN offload (spec/perf.md A1): the CHECKSUM_PARTIAL NAT rule and offload batches.

A NEEDS_CSUM row's L4 checksum field holds the folded, uncomplemented
pseudo-header sum P; the kernel later completes it as ~fold(P + sum of the L4
bytes). Each test builds such a row from a scapy packet, NATs it (nat.py, and
the fast path against the vector path), completes the sum as the kernel would
and compares with the checksum scapy computes for the rewritten packet.
"""

from __future__ import annotations

import random
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP

from userlb import checksum, nat
from userlb.engine import Engine
from userlb.frames import OFFLOAD_SNAPLEN, VNET_F_NEEDS_CSUM, FrameBatch
from userlb.parse import parse_ipv4
from userlb.services import RealServer, VirtualService, int_to_ip, ip_to_int

VIP, RS, CLIENT = "198.18.1.100", "198.18.2.11", "10.0.0.7"


def _fold(x: int) -> int:
    while x > 0xFFFF:
        x = (x & 0xFFFF) + (x >> 16)
    return x


def _csum_at(pkt: bytes) -> int:
    ihl = (pkt[0] & 0x0F) * 4
    return ihl + (6 if pkt[9] == 17 else 16)


def make_partial(pkt: bytes) -> bytes:
    """The frame as a NEEDS_CSUM read gives it: the L4 field = fold(pseudo-header sum)."""
    ihl = (pkt[0] & 0x0F) * 4
    total = struct.unpack_from("!H", pkt, 2)[0]
    words = struct.unpack_from("!4H", pkt, 12)
    p = _fold(sum(words) + pkt[9] + total - ihl)
    at = _csum_at(pkt)
    return pkt[:at] + struct.pack("!H", p) + pkt[at + 2:]


def complete(pkt: bytes) -> bytes:
    """What the kernel (or the NIC) does with a CHECKSUM_PARTIAL packet: sum from
    csum_start to the end with the field as is, store the complement."""
    ihl = (pkt[0] & 0x0F) * 4
    total = struct.unpack_from("!H", pkt, 2)[0]
    l4 = pkt[ihl:total]
    value = ~_fold(checksum._sum_words(l4)) & 0xFFFF
    if pkt[9] == 17 and value == 0:
        value = 0xFFFF
    at = _csum_at(pkt)
    return pkt[:at] + struct.pack("!H", value) + pkt[at + 2:total]


def scapy_reference(pkt: bytes) -> bytes:
    """Full checksums recomputed by scapy for the same header fields and payload."""
    p = IP(pkt)
    del p.chksum
    del p[p.payload.__class__].chksum
    return bytes(p)


def _offload_batch(frames, partial=True) -> FrameBatch:
    batch = FrameBatch(len(frames), OFFLOAD_SNAPLEN, vnet=True)
    for f in frames:
        batch.append(f)
    if partial:
        batch.vnet[: len(frames), 0] = VNET_F_NEEDS_CSUM
    return batch


def _packet(proto: str, rng: random.Random, size: int) -> bytes:
    payload = bytes(rng.getrandbits(8) for _ in range(size))
    src = int_to_ip(rng.getrandbits(32) | 0x01000000)
    dst = int_to_ip(rng.getrandbits(32) | 0x01000000)
    l4 = (TCP(sport=rng.randrange(1, 65536), dport=rng.randrange(1, 65536), flags="A",
              seq=rng.getrandbits(32))
          if proto == "tcp" else UDP(sport=rng.randrange(1, 65536), dport=rng.randrange(1, 65536)))
    return bytes(IP(src=src, dst=dst, id=rng.getrandbits(16)) / l4 / payload)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("direction", ["dst", "src"])
def test_partial_rewrite_completes_to_scapy_checksum(seed, proto, direction):
    rng = random.Random(seed * 7 + (proto == "udp") * 3 + (direction == "src"))
    size = rng.choice([0, 1, 17, 1000, 1460, 30000 if proto == "tcp" else 1200])
    pkt = make_partial(_packet(proto, rng, size))
    batch = _offload_batch([pkt])
    h = parse_ipv4(batch)
    assert h.drop[0] == 0
    new_addr, new_port = rng.getrandbits(32), rng.randrange(1, 65536)
    fn = nat.rewrite_dst if direction == "dst" else nat.rewrite_src
    fn(batch, [0], h, [new_addr], [new_port])
    out = batch.frame(0)
    assert IP(out).chksum == IP(scapy_reference(out)).chksum      # IP header: full update
    assert complete(out) == scapy_reference(out)                  # L4: partial rule
    # the L4 field is still the pseudo-header sum of the rewritten packet
    assert out == make_partial(out)


def test_port_change_leaves_partial_sum_alone():
    rng = random.Random(1)
    pkt = make_partial(_packet("tcp", rng, 100))
    batch = _offload_batch([pkt])
    h = parse_ipv4(batch)
    daddr = int(h.daddr[0])
    nat.rewrite_dst(batch, [0], h, [daddr], [(int(h.dport[0]) + 1234) & 0xFFFF])
    at = _csum_at(pkt)
    assert batch.frame(0)[at:at + 2] == pkt[at:at + 2]


def test_udp_partial_zero_field_is_not_filled_in():
    """A NEEDS_CSUM UDP row is never treated as "sent without a checksum"."""
    rng = random.Random(2)
    pkt = make_partial(_packet("udp", rng, 40))
    at = _csum_at(pkt)
    pkt = pkt[:at] + b"\0\0" + pkt[at + 2:]
    batch = _offload_batch([pkt])
    h = parse_ipv4(batch)
    old_daddr, new_daddr = int(h.daddr[0]), 0x0A000001
    nat.rewrite_dst(batch, [0], h, [new_daddr], [53])
    got = struct.unpack_from("!H", batch.frame(0), at)[0]
    delta = sum((~w) & 0xFFFF for w in (old_daddr >> 16, old_daddr & 0xFFFF)) + \
        (new_daddr >> 16) + (new_daddr & 0xFFFF)
    assert got == _fold(delta)


def test_without_offload_flag_full_update_is_kept():
    rng = random.Random(3)
    pkt = _packet("tcp", rng, 50)
    batch = _offload_batch([pkt], partial=False)
    h = parse_ipv4(batch)
    nat.rewrite_dst(batch, [0], h, [0x0A000001], [8080])
    out = batch.frame(0)
    assert out == scapy_reference(out)


def test_super_packet_parses():
    """A 60 KB TSO super-packet: IP checksum valid, total_len <= length, not OVERSIZE."""
    pkt = make_partial(_packet("tcp", random.Random(4), 60000))
    batch = _offload_batch([pkt])
    h = parse_ipv4(batch)
    assert h.drop[0] == 0 and h.total_len[0] == len(pkt)


def _engines():
    services = (VirtualService("tcp", VIP, 80, "rr", (RealServer(RS, 8080),)),
                VirtualService("udp", VIP, 53, "rr", (RealServer(RS, 5353),)))
    fast, vec = Engine(services, table_size=64), Engine(services, table_size=64)
    fast.fast_max, vec.fast_max = 10**6, 0
    return fast, vec


def _tcp(src, dst, sport, dport, flags, size=0):
    return bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=5)
                 / bytes(i & 0xFF for i in range(size)))


def _udp(src, dst, sport, dport, size=10):
    return bytes(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport)
                 / bytes(i & 0xFF for i in range(size)))


@pytest.mark.parametrize("size", [0, 1, 1400, 20000])
def test_fast_path_equals_vector_path_on_partial_rows(size):
    fast, vec = _engines()
    opening = [_tcp(CLIENT, VIP, 40000, 80, "S"), _udp(CLIENT, VIP, 40001, 53)]
    for eng in (fast, vec):
        b = FrameBatch.from_frames(opening)
        eng.process_vector(b, 1.0)
        reply = FrameBatch.from_frames([_tcp(RS, CLIENT, 8080, 40000, "SA")])
        eng.process_vector(reply, 1.0)
    frames = [_tcp(CLIENT, VIP, 40000, 80, "A", size), _tcp(RS, CLIENT, 8080, 40000, "A", size),
              _udp(CLIENT, VIP, 40001, 53, size), _udp(RS, CLIENT, 5353, 40001, size)]
    frames = [make_partial(f) for f in frames]
    out = {}
    for name, eng in (("fast", fast), ("vec", vec)):
        batch = _offload_batch(frames)
        verdict = eng.process(batch, 2.0)
        assert verdict.rows.tolist() == [0, 1, 2, 3]
        out[name] = [batch.frame(r)[: int(n)] for r, n in zip(verdict.rows, verdict.lengths)]
    assert fast.fast is not None and out["fast"] == out["vec"]
    for f in out["fast"]:
        assert complete(f) == scapy_reference(f)
    assert IP(out["fast"][0]).dst == RS and IP(out["fast"][1]).src == VIP
    assert ip_to_int(IP(out["fast"][2]).dst) == ip_to_int(RS)


def test_trace_of_partial_rows_checks_the_pseudo_header_sum():
    """With offload the trace shows a NEEDS_CSUM row's L4 field as what it is, the folded
    pseudo-header sum, and checks it as such before and after NAT (not as a full sum,
    which would call every offloaded packet BAD); a wrong value is still BAD."""
    from userlb import trace
    services = (VirtualService("tcp", VIP, 80, "rr", (RealServer(RS, 8080),)),)
    eng = Engine(services, table_size=64, trace_connections=4)
    frames = [make_partial(_tcp(CLIENT, VIP, 40000, 80, "S", 100))]
    eng.process(_offload_batch(frames), 1.0)
    [hops] = eng.trace.hops.values()
    assert hops[0].note["l4_csum_partial"] is True
    text = trace.render(hops)
    assert text.count("(partial)") == 2 and "BAD" not in text
    assert IP(hops[0].after).dst == RS
    wrong = bytearray(hops[0].after)
    wrong[_csum_at(wrong) + 1] ^= 0x01
    assert not trace.describe(bytes(wrong), l4_partial=True)["l4_csum_ok"]
    assert trace.describe(hops[0].after, l4_partial=True)["l4_csum_ok"]
    assert not trace.describe(hops[0].after)["l4_csum_ok"]   # not a complete checksum
