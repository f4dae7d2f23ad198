"""Hypothesis: RFC 1624 incremental updates equal a full RFC 1071 recomputation.

Checked on raw words (scalar and vectorised `adjust`/`adjust32`) and end to end
through nat.rewrite_dst / rewrite_src on batches of random TCP/UDP datagrams
with random IP options, payloads, addresses and ports, against frames rebuilt
from scratch with a plain-Python checksum.
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from userlb import checksum, nat
from userlb.frames import FrameBatch
from userlb.parse import parse_ipv4

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])   # reproducible: same examples every run
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def ref_csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@SETTINGS
@given(st.binary(max_size=300))
def test_full_matches_reference(data: bytes) -> None:
    assert checksum.full(data) == ref_csum(data)
    assert checksum.full(np.frombuffer(data, np.uint8)) == ref_csum(data)


@SETTINGS
@given(st.binary(min_size=2, max_size=80), st.data())
def test_adjust_scalar(data: bytes, draw) -> None:
    data = data[: len(data) & ~1]
    at = draw.draw(st.integers(0, len(data) // 2 - 1)) * 2
    new_word = draw.draw(u16)
    changed = data[:at] + new_word.to_bytes(2, "big") + data[at + 2:]
    assume(any(changed))                          # all-zero data: +0 vs -0, both "zero"
    old_word = int.from_bytes(data[at:at + 2], "big")
    assert checksum.adjust(ref_csum(data), old_word, new_word) == ref_csum(changed)


@SETTINGS
@given(st.binary(min_size=4, max_size=80), st.data())
def test_adjust32_scalar(data: bytes, draw) -> None:
    data = data[: len(data) & ~1]
    at = draw.draw(st.integers(0, len(data) // 2 - 2)) * 2
    new = draw.draw(u32)
    changed = data[:at] + new.to_bytes(4, "big") + data[at + 4:]
    assume(any(changed))
    old = int.from_bytes(data[at:at + 4], "big")
    assert checksum.adjust32(ref_csum(data), old, new) == ref_csum(changed)


@SETTINGS
@given(st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_adjust_vectorised_equals_scalar_and_full(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (n, 20), dtype=np.uint8)
    rows[:, 0] |= 0x40                             # never all zero
    csum = np.array([ref_csum(r.tobytes()) for r in rows], np.uint16)
    new_addr = rng.integers(0, 1 << 32, n, dtype=np.uint32)
    old_addr = rows[:, 12:16].copy().view(">u4").ravel().astype(np.uint32)
    new_port = rng.integers(0, 1 << 16, n).astype(np.uint32)
    old_port = (rows[:, 4].astype(np.uint32) << 8) | rows[:, 5]
    vec32 = checksum.adjust32(csum, old_addr, new_addr)
    hi_o, lo_o = checksum.split32(old_addr)
    hi_n, lo_n = checksum.split32(new_addr)
    vec3 = checksum.adjust(csum, np.stack([hi_o, lo_o, old_port], 1), np.stack([hi_n, lo_n, new_port], 1))
    for i in range(n):
        changed = bytearray(rows[i].tobytes())
        changed[12:16] = int(new_addr[i]).to_bytes(4, "big")
        assert int(vec32[i]) == checksum.adjust32(int(csum[i]), int(old_addr[i]), int(new_addr[i])) \
            == ref_csum(bytes(changed))
        changed[4:6] = int(new_port[i]).to_bytes(2, "big")
        assert int(vec3[i]) == ref_csum(bytes(changed))


def build(proto: int, opts: bytes, payload: bytes, saddr: int, daddr: int, sport: int, dport: int,
          udp_no_csum: bool = False) -> bytes:
    """An IPv4 TCP/UDP datagram with correct checksums (UDP: 0 if udp_no_csum, 0 → 0xFFFF)."""
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 2, 5 << 4, 0x18, 512, 0, 0) + payload
        at = 16
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        at = 6
    pseudo = struct.pack("!IIBBH", saddr, daddr, 0, proto, len(l4))
    value = ref_csum(pseudo + l4)
    if proto == 17:
        value = 0 if udp_no_csum else (value or 0xFFFF)
    l4 = l4[:at] + value.to_bytes(2, "big") + l4[at + 2:]
    ihl = 5 + len(opts) // 4
    ip = struct.pack("!BBHHHBBHII", 0x40 | ihl, 0, ihl * 4 + len(l4), 77, 0, 64, proto, 0, saddr, daddr)
    ip += opts
    ip = ip[:10] + ref_csum(ip).to_bytes(2, "big") + ip[12:]
    return ip + l4


packets = st.tuples(
    st.sampled_from([6, 17]),
    st.integers(0, 10).map(lambda k: b"\x01" * (4 * k)),          # NOP options, 0..40 bytes
    st.binary(max_size=64), u32, u32, u16, u16, st.booleans(),
    u32, u16,                                                      # new address, new port
)


@SETTINGS
@given(st.lists(packets, min_size=1, max_size=24), st.booleans())
def test_nat_equals_rebuilt_frames(pkts, inbound: bool) -> None:
    frames = [build(p, o, pl, sa, da, sp, dp, zero) for p, o, pl, sa, da, sp, dp, zero, _, _ in pkts]
    batch = FrameBatch.from_frames(frames)
    headers = parse_ipv4(batch)
    assert headers.ok.all()
    rows = np.arange(len(pkts))
    new_addr = np.array([x[8] for x in pkts], np.uint32)
    new_port = np.array([x[9] for x in pkts], np.uint16)
    if inbound:
        nat.rewrite_dst(batch, rows, headers, new_addr, new_port)
    else:
        nat.rewrite_src(batch, rows, headers, new_addr, new_port)
    for i, (p, o, pl, sa, da, sp, dp, _zero, na, np_) in enumerate(pkts):
        expected = build(p, o, pl, sa, na, sp, np_) if inbound else build(p, o, pl, na, da, np_, dp)
        assert batch.frame(i) == expected, i


@SETTINGS
@given(st.integers(0, 10), st.binary(max_size=40), u32, u32, u16, u16, u32, u16, st.booleans(),
       st.booleans())
def test_udp_checksum_that_becomes_zero_is_sent_as_ffff(n_opts, tail, sa, da, sp, dp, na, np_, zero,
                                                        inbound) -> None:
    opts = b"\x01" * (4 * n_opts)
    args = (sa, na, sp, np_) if inbound else (na, da, np_, dp)
    probe = build(17, opts, b"\0\0" + tail, *args)
    word = probe[len(opts) + 26: len(opts) + 28]       # UDP checksum of the rewritten datagram
    payload = word + tail                              # adding it makes the sum 0xFFFF → checksum 0
    frame = build(17, opts, payload, sa, da, sp, dp, udp_no_csum=zero)
    batch = FrameBatch.from_frames([frame])
    headers = parse_ipv4(batch)
    rewrite = nat.rewrite_dst if inbound else nat.rewrite_src
    rewrite(batch, [0], headers, np.array([na], np.uint32), np.array([np_], np.uint16))
    out = batch.frame(0)
    assert out[len(opts) + 26: len(opts) + 28] == b"\xff\xff"
    assert out == build(17, opts, payload, *args)
