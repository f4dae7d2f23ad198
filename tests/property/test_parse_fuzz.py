"""Fuzz parse_ipv4 with >100,000 mutated and random frames; NAT the real corpus and re-verify.

Every generated frame must get exactly the verdict (and, when OK, the fields) of
`reference_parse`, a plain per-packet transcription of the rules in parse.py's
brief: the vectorised parser is trusted only next to the obvious one (style rule
9). The seed is fixed, so a failure reproduces.
"""

from __future__ import annotations

import numpy as np
from scapy.all import IP, TCP, UDP, raw

from tests.fixtures.corpus import corpus
from userlb import icmp, nat
from userlb.drops import DropReason
from userlb.frames import FrameBatch
from userlb.parse import l4_checksum_ok, parse_ipv4

SEED = 20240601
SNAPLEN = 2048
BATCH_ROWS = 4096
BATCHES = 26                      # 26 × 4096 = 106,496 frames
FIELDS = ("ihl", "total_len", "proto", "saddr", "daddr", "sport", "dport", "tcp_flags",
          "icmp_type", "icmp_code")


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def reference_parse(f: bytes, snaplen: int = SNAPLEN):
    """(DropReason, fields-or-None) for one frame, straight from the brief's rule list."""
    n = len(f)
    if n >= snaplen:
        return DropReason.OVERSIZE, None
    if n < 20:
        return DropReason.TRUNCATED, None
    if f[0] >> 4 != 4:
        return DropReason.BAD_VERSION, None
    ihl = (f[0] & 15) * 4
    if ihl < 20 or ihl > n:
        return DropReason.BAD_IHL, None
    total = int.from_bytes(f[2:4], "big")
    if total < ihl or total > n:
        return DropReason.BAD_TOTAL_LENGTH, None
    if _csum(f[:ihl]) != 0:
        return DropReason.BAD_IP_CHECKSUM, None
    if int.from_bytes(f[6:8], "big") & 0x3FFF:
        return DropReason.FRAGMENT, None
    proto, l4 = f[9], f[ihl:total]
    if proto not in (1, 6, 17):
        return DropReason.UNKNOWN_PROTOCOL, None
    if len(l4) < (20 if proto == 6 else 8):
        return DropReason.TRUNCATED, None
    if proto == 6 and not 20 <= (l4[12] >> 4) * 4 <= len(l4):
        return DropReason.BAD_L4_HEADER, None
    if proto == 17 and not 8 <= int.from_bytes(l4[4:6], "big") <= len(l4):
        return DropReason.BAD_L4_HEADER, None
    ports = (int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")) if proto != 1 else (0, 0)
    return DropReason.OK, (ihl, total, proto, int.from_bytes(f[12:16], "big"),
                           int.from_bytes(f[16:20], "big"), *ports, l4[13] if proto == 6 else 0,
                           *((l4[0], l4[1]) if proto == 1 else (0, 0)))


def _fix_ip_checksums(buf: np.ndarray, rows: np.ndarray) -> None:
    """Give `rows` a valid header checksum (so mutations reach the deeper checks)."""
    ihl = np.clip(buf[rows, 0] & 15, 5, 15).astype(np.int64)
    buf[rows, 10:12] = 0
    words = (buf[rows, :60:2].astype(np.uint32) << 8) | buf[rows, 1:60:2]
    total = (words * (np.arange(30) < ihl[:, None] * 2)).sum(axis=1)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    csum = ~total & 0xFFFF
    buf[rows, 10], buf[rows, 11] = csum >> 8, csum & 0xFF


def _mutated_batch(rng: np.random.Generator, sources: list[bytes]) -> FrameBatch:
    """One batch of corpus frames, each mutated in one of eight ways, plus random frames."""
    batch = FrameBatch(BATCH_ROWS, SNAPLEN)
    for i in rng.integers(0, len(sources), BATCH_ROWS):
        batch.append(sources[i])
    buf, length = batch.buf, batch.length
    kind = rng.integers(0, 9, BATCH_ROWS)
    r = np.arange(BATCH_ROWS)
    head = np.maximum(np.minimum(length, 80), 1)
    for _ in range(3):                                             # 0: header bit flips
        sel = r[kind == 0]
        pos = rng.integers(0, 1 << 30, len(sel)) % head[sel]
        buf[sel, pos] ^= (1 << rng.integers(0, 8, len(sel))).astype(np.uint8)
    sel = r[kind == 1]                                             # 1: truncation
    length[sel] = rng.integers(0, 1 << 30, len(sel)) % (length[sel] + 1)
    sel = r[kind == 2]                                             # 2: total length ± a little / random
    tl = ((buf[sel, 2].astype(np.int64) << 8) | buf[sel, 3]) + rng.integers(-24, 25, len(sel))
    tl = np.where(rng.random(len(sel)) < 0.2, rng.integers(0, 65536, len(sel)), tl) & 0xFFFF
    buf[sel, 2], buf[sel, 3] = tl >> 8, tl & 0xFF
    sel = r[kind == 3]                                             # 3: IHL nibble
    buf[sel, 0] = (buf[sel, 0] & 0xF0) | rng.integers(0, 16, len(sel))
    sel = r[kind == 4]                                             # 4: L4 length / data offset bytes
    ihl = (buf[sel, 0] & 15).astype(np.int64) * 4
    for off in (4, 5, 12):
        buf[sel, np.clip(ihl + off, 0, SNAPLEN - 1)] = rng.integers(0, 256, len(sel))
    sel = r[kind == 5]                                             # 5: protocol
    buf[sel, 9] = rng.choice(np.array([1, 6, 17, 47, 0, 255], np.uint8), len(sel))
    sel = r[kind == 6]                                             # 6: flags / fragment offset
    buf[sel, 6] = rng.choice(np.array([0, 0x20, 0x40, 0x80, 0x00, 0x1F], np.uint8), len(sel))
    buf[sel, 7] = rng.choice(np.array([0, 0, 1, 0xFF], np.uint8), len(sel))
    sel = r[kind == 7]                                             # 7: random bytes, version 4 sometimes
    length[sel] = rng.integers(0, 120, len(sel))
    buf[sel, :128] = rng.integers(0, 256, (len(sel), 128), dtype=np.uint8)
    buf[sel, 0] = np.where(rng.random(len(sel)) < 0.7, 0x40 | (buf[sel, 0] & 15), buf[sel, 0])
    fix = r[(kind >= 2) & (kind <= 7) & (rng.random(BATCH_ROWS) < 0.7) & (length >= 20)]
    _fix_ip_checksums(buf, fix)
    # 8: untouched. Then stale garbage after every frame's end (the parser must not read it).
    tail = np.arange(128)[None, :] >= length[:, None]
    buf[:, :128] = np.where(tail, rng.integers(0, 256, (BATCH_ROWS, 128), dtype=np.uint8), buf[:, :128])
    return batch


def _check_against_reference(batch: FrameBatch) -> tuple[int, int]:
    h = parse_ipv4(batch)
    columns = np.stack([getattr(h, name).astype(np.int64) for name in FIELDS], axis=1).tolist()
    ok = 0
    for i in range(batch.count):
        reason, fields = reference_parse(batch.frame(i))
        assert int(h.drop[i]) == reason, (i, batch.frame(i).hex(), DropReason(int(h.drop[i])), reason)
        if fields is not None:
            assert tuple(columns[i]) == fields, (i, batch.frame(i).hex())
            ok += 1
            if fields[2] == 1:                                     # ICMP: parse_error must not raise
                icmp.parse_error(batch.buf[i], int(batch.length[i]), fields[0])
    return batch.count, ok


def test_fuzz_parse_matches_reference() -> None:
    rng = np.random.default_rng(SEED)
    sources = [f.data for f in corpus()]
    total = ok = 0
    seen = set()
    for _ in range(BATCHES):
        batch = _mutated_batch(rng, sources)
        n, k = _check_against_reference(batch)
        total, ok = total + n, ok + k
        seen.update(parse_ipv4(batch).drop.tolist())
    assert total >= 100_000
    assert ok > total // 10                                        # many frames get through to the end
    assert seen == {int(r) for r in DropReason if r <= DropReason.OVERSIZE}   # every parse reason occurs


def test_l4_checksum_ok_on_fuzzed_rows() -> None:
    rng = np.random.default_rng(SEED + 1)
    batch = _mutated_batch(rng, [f.data for f in corpus()])
    h = parse_ipv4(batch)
    rows = np.flatnonzero(h.ok)
    got = l4_checksum_ok(batch, h, rows)
    for i, verdict in zip(rows.tolist(), got.tolist()):
        assert verdict == _reference_l4_ok(batch.frame(i)), i


def _reference_l4_ok(f: bytes) -> bool:
    ihl, total, proto = (f[0] & 15) * 4, int.from_bytes(f[2:4], "big"), f[9]
    l4 = f[ihl:total]
    if proto == 1:
        return _csum(l4) == 0
    if proto == 17:
        if l4[6:8] == b"\0\0":
            return True
        l4 = l4[: int.from_bytes(l4[4:6], "big")]
    return _csum(f[12:20] + bytes((0, proto)) + len(l4).to_bytes(2, "big") + l4) == 0


def _corpus_batches():
    frames = [f.data for f in corpus()]
    small = [f for f in frames if len(f) < SNAPLEN]
    large = [f for f in frames if len(f) >= SNAPLEN]
    yield FrameBatch.from_frames(small, SNAPLEN)
    yield FrameBatch.from_frames(large, max(map(len, large)) + 1)


def test_corpus_nat_round_keeps_checksums() -> None:
    """DNAT then SNAT every OK TCP/UDP corpus frame to random addresses: a valid L4 checksum stays
    valid, an invalid one stays invalid, the IP header checksum verifies, the fields move."""
    rng = np.random.default_rng(SEED + 2)
    checked = 0
    for batch in _corpus_batches():
        h = parse_ipv4(batch)
        rows = np.flatnonzero(h.ok & np.isin(h.proto, [6, 17]))
        before = np.array([_reference_l4_ok(batch.frame(i)) for i in rows])
        new_daddr = rng.integers(0, 1 << 32, len(rows), dtype=np.uint32)
        new_dport = rng.integers(0, 1 << 16, len(rows), dtype=np.uint16)
        new_saddr = rng.integers(0, 1 << 32, len(rows), dtype=np.uint32)
        new_sport = rng.integers(0, 1 << 16, len(rows), dtype=np.uint16)
        nat.rewrite_dst(batch, rows, h, new_daddr, new_dport)
        h1 = parse_ipv4(batch)
        assert (h1.drop[rows] == 0).all()
        assert (h1.daddr[rows] == new_daddr).all() and (h1.dport[rows] == new_dport).all()
        assert (h1.saddr[rows] == h.saddr[rows]).all() and (h1.sport[rows] == h.sport[rows]).all()
        nat.rewrite_src(batch, rows, h1, new_saddr, new_sport)
        h2 = parse_ipv4(batch)
        assert (h2.drop[rows] == 0).all()                         # includes the IP header checksum
        assert (h2.saddr[rows] == new_saddr).all() and (h2.sport[rows] == new_sport).all()
        after = np.array([_reference_l4_ok(batch.frame(i)) for i in rows])
        assert (after == before).all()
        assert (l4_checksum_ok(batch, h2, rows) == before).all()
        checked += len(rows)
    assert checked > 2000


def test_corpus_nat_sample_against_scapy() -> None:
    """scapy recomputes the checksums of NAT'd clean corpus frames and agrees byte for byte."""
    clean = [f.data for f in corpus() if "clean" in f.labels and f.proto in ("tcp", "udp")
             and "ip_fragment" not in f.labels and "udp_zero_checksum" not in f.labels
             and len(f.data) < SNAPLEN][::5]
    batch = FrameBatch.from_frames(clean)
    h = parse_ipv4(batch)
    rows = np.arange(len(clean))
    nat.rewrite_dst(batch, rows, h, np.uint32(0xC6120102), np.uint16(8080))
    for i in rows.tolist():
        pkt = IP(batch.frame(i))
        l4 = pkt[TCP] if pkt.proto == 6 else pkt[UDP]
        del pkt.chksum, l4.chksum
        assert raw(pkt) == batch.frame(i), i
