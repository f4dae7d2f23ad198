"""icmp.py: quote parsing, both rewrites, originating port-unreachable; robustness on garbage."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.all import ICMP, IP, TCP, UDP, Raw, raw

from userlb import checksum, icmp
from userlb.drops import DropReason
from userlb.frames import FrameBatch
from userlb.parse import parse_ipv4
from userlb.services import ip_to_int

CLIENT, VIP, RS = "198.18.100.1", "198.18.0.1", "198.18.1.2"


def _error(src, dst, inner, icmp_type=3, code=3) -> bytes:
    quoted = raw(inner)
    quoted = quoted[: (quoted[0] & 15) * 4 + 8]
    return raw(IP(src=src, dst=dst) / ICMP(type=icmp_type, code=code) / Raw(quoted))


def _row(frame: bytes):
    batch = FrameBatch.from_frames([frame])
    headers = parse_ipv4(batch)
    assert headers.ok.all()
    return batch, batch.buf[0], int(batch.length[0]), int(headers.ihl[0])


def test_related_types() -> None:
    assert icmp.RELATED_TYPES == (3, 4, 11)


@pytest.mark.parametrize("icmp_type, code", [(3, 3), (4, 0), (11, 0), (3, 4)])
def test_parse_error_fields(icmp_type: int, code: int) -> None:
    inner = IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="SA")
    _, row, length, ihl = _row(_error(CLIENT, VIP, inner, icmp_type, code))
    quote = icmp.parse_error(row, length, ihl)
    assert quote == icmp.IcmpQuote(icmp_type=icmp_type, icmp_code=code, proto=6, saddr=ip_to_int(VIP),
                                   sport=80, daddr=ip_to_int(CLIENT), dport=40000, ihl=20)


def test_rewrite_from_client_then_reparse() -> None:
    inner = IP(src=VIP, dst=CLIENT) / UDP(sport=53, dport=40000)
    batch, row, length, ihl = _row(_error(CLIENT, VIP, inner))
    icmp.rewrite_from_client(row, length, ihl, ip_to_int(RS), 5353)
    headers = parse_ipv4(batch)
    assert headers.ok.all() and headers.daddr[0] == ip_to_int(RS)      # outer checksum verifies
    quote = icmp.parse_error(row, length, ihl)                           # ICMP checksum verifies
    flow = (quote.saddr, quote.sport, quote.daddr, quote.dport)
    assert flow == (ip_to_int(RS), 5353, ip_to_int(CLIENT), 40000)
    assert checksum.full(row[ihl + 8: ihl + 28]) == 0                   # quoted IP checksum verifies


def test_rewrite_from_server_then_reparse() -> None:
    inner = IP(src=CLIENT, dst=RS) / TCP(sport=40000, dport=8080)
    batch, row, length, ihl = _row(_error(RS, CLIENT, inner, 11, 0))
    icmp.rewrite_from_server(row, length, ihl, ip_to_int(VIP), 80)
    headers = parse_ipv4(batch)
    assert headers.ok.all() and headers.saddr[0] == ip_to_int(VIP)
    quote = icmp.parse_error(row, length, ihl)
    flow = (quote.saddr, quote.sport, quote.daddr, quote.dport)
    assert flow == (ip_to_int(CLIENT), 40000, ip_to_int(VIP), 80)
    assert checksum.full(row[ihl + 8: ihl + 28]) == 0


def test_length_shorter_than_total_len_does_not_raise() -> None:
    inner = IP(src=VIP, dst=CLIENT) / UDP(sport=53, dport=40000)
    frame = _error(CLIENT, VIP, inner)
    row = np.frombuffer(frame, np.uint8).copy()
    assert icmp.parse_error(row[:30], 30, 20) == DropReason.BAD_TOTAL_LENGTH
    assert icmp.parse_error(row, 10, 20) == DropReason.BAD_TOTAL_LENGTH
    assert icmp.parse_error(row[:10], 10, 20) == DropReason.BAD_ICMP_QUOTE
    assert icmp.parse_error(row, len(frame), 4) == DropReason.BAD_ICMP_QUOTE


def test_garbage_never_raises_and_good_quotes_rewrite_cleanly() -> None:
    rng = np.random.default_rng(7)
    base = np.frombuffer(_error(CLIENT, VIP, IP(src=VIP, dst=CLIENT) / UDP(sport=53, dport=9)), np.uint8)
    outcomes = set()
    for _ in range(3000):
        row = np.zeros(128, np.uint8)
        row[: len(base)] = base
        flips = rng.integers(20, len(base), rng.integers(1, 4))
        row[flips] = rng.integers(0, 256, len(flips))
        if rng.random() < 0.5:                     # fix the ICMP checksum so the quote checks run
            row[22:24] = 0
            value = checksum.full(row[20: len(base)])
            row[22], row[23] = value >> 8, value & 0xFF
        length = int(rng.integers(0, 129))
        result = icmp.parse_error(row, length, 20)
        outcomes.add(result if isinstance(result, DropReason) else "quote")
        if not isinstance(result, DropReason):
            icmp.rewrite_from_server(row, length, 20, 0x01020304, 99)
            assert checksum.full(row[20: (int(row[2]) << 8) | int(row[3])]) == 0
    assert outcomes == {"quote", DropReason.BAD_ICMP_QUOTE, DropReason.BAD_ICMP_CHECKSUM,
                        DropReason.ICMP_NOT_RELATED, DropReason.BAD_TOTAL_LENGTH}


def test_build_dest_unreachable_matches_scapy() -> None:
    orig = raw(IP(src=CLIENT, dst=VIP, tos=0x04) / TCP(sport=40000, dport=80, flags="S") / b"payload")
    out = icmp.build_dest_unreachable(orig, ip_to_int(VIP))
    pkt = IP(out)
    assert (pkt.src, pkt.dst, pkt.ttl, pkt.proto, pkt.tos) == (VIP, CLIENT, 64, 1, 0xC4)
    assert (pkt[ICMP].type, pkt[ICMP].code) == (3, 3)
    assert bytes(pkt[ICMP].payload) == orig[:28]
    rebuilt = IP(out)
    del rebuilt.chksum, rebuilt[ICMP].chksum
    assert raw(rebuilt) == out


def test_build_frag_needed_and_short_original() -> None:
    orig = raw(IP(src=CLIENT, dst=VIP) / UDP(sport=1, dport=2))[:20]
    out = icmp.build_dest_unreachable(orig, ip_to_int(RS), code=4, next_hop_mtu=1400)
    expected = IP(src=RS, dst=CLIENT, id=0, tos=0xC0) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(orig)
    assert out == raw(expected)
    with pytest.raises(ValueError):
        icmp.build_dest_unreachable(b"\x45" * 10, 1)
