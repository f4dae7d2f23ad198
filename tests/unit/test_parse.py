"""parse.py: fields, drop-reason order, robustness on odd batches, agreement with scapy."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.all import ICMP, IP, TCP, UDP, raw

from tests.fixtures.corpus import corpus
from userlb.drops import DropReason
from userlb.frames import FrameBatch
from userlb.parse import TCP_ACK, TCP_FIN, TCP_SYN, l4_checksum_ok, parse_ipv4
from userlb.services import ip_to_int

SYN = raw(IP(src="10.1.2.3", dst="10.9.8.7") / TCP(sport=1234, dport=80, flags="S"))
UDP_PKT = raw(IP(src="10.1.2.3", dst="10.9.8.7") / UDP(sport=5353, dport=53) / b"q")
ICMP_PKT = raw(IP(src="10.1.2.3", dst="10.9.8.7") / ICMP(type=3, code=1) / (b"\0" * 28))


def parse(*frames: bytes, snaplen: int = 2048):
    batch = FrameBatch.from_frames(frames, snaplen=snaplen)
    return batch, parse_ipv4(batch)


def test_fields_tcp_udp_icmp() -> None:
    fin = raw(IP(src="1.2.3.4", dst="5.6.7.8", options=b"\x94\x04\0\0") /
              TCP(sport=7, dport=9, flags="FA") / b"xyz")
    _, h = parse(SYN, UDP_PKT, ICMP_PKT, fin)
    assert h.drop.tolist() == [0, 0, 0, 0]
    assert h.ihl.tolist() == [20, 20, 20, 24]
    assert h.total_len.tolist() == [40, 29, 56, 47]
    assert h.proto.tolist() == [6, 17, 1, 6]
    assert h.saddr.tolist()[:3] == [ip_to_int("10.1.2.3")] * 3
    assert h.daddr.tolist()[3] == ip_to_int("5.6.7.8")
    assert h.sport.tolist() == [1234, 5353, 0, 7]
    assert h.dport.tolist() == [80, 53, 0, 9]
    assert h.tcp_flags.tolist() == [TCP_SYN, 0, 0, TCP_FIN | TCP_ACK]
    assert h.icmp_type.tolist() == [0, 0, 3, 0]
    assert h.icmp_code.tolist() == [0, 0, 1, 0]
    assert h.ok.all()
    dtypes = {name: getattr(h, name).dtype for name in ("drop", "ihl", "total_len", "proto", "saddr",
                                                          "daddr", "sport", "dport", "tcp_flags")}
    assert dtypes == {"drop": np.uint8, "ihl": np.int32, "total_len": np.int32, "proto": np.uint8,
                      "saddr": np.uint32, "daddr": np.uint32, "sport": np.uint16, "dport": np.uint16,
                      "tcp_flags": np.uint8}


def test_trailing_bytes_are_fine() -> None:
    _, h = parse(SYN + b"\xff" * 10)
    assert h.drop.tolist() == [0] and h.total_len.tolist() == [40]


@pytest.mark.parametrize("mutate, reason", [
    (lambda f: f[:19], DropReason.TRUNCATED),
    (lambda f: b"\x65" + f[1:], DropReason.BAD_VERSION),
    (lambda f: b"\x44" + f[1:], DropReason.BAD_IHL),
    (lambda f: b"\x4f" + f[1:], DropReason.BAD_IHL),                       # 60 > 40 bytes
    (lambda f: f[:2] + b"\x00\x13" + f[4:], DropReason.BAD_TOTAL_LENGTH),
    (lambda f: f[:2] + b"\x00\x29" + f[4:], DropReason.BAD_TOTAL_LENGTH),
    (lambda f: f[:10] + b"\0\0" + f[12:], DropReason.BAD_IP_CHECKSUM),
])
def test_ip_level_reasons(mutate, reason) -> None:
    _, h = parse(mutate(SYN))
    assert DropReason(int(h.drop[0])) == reason


def test_first_reason_wins() -> None:
    bad_version_and_checksum = b"\x65" + SYN[1:10] + b"\0\0" + SYN[12:]
    _, h = parse(bad_version_and_checksum, b"\x45" * 3)
    assert h.drop.tolist() == [DropReason.BAD_VERSION, DropReason.TRUNCATED]


def test_oversize_when_the_frame_fills_the_row() -> None:
    _, h = parse(SYN, SYN + b"\0" * 30, snaplen=64)
    assert h.drop.tolist() == [DropReason.OK, DropReason.OVERSIZE]


def test_snaplen_smaller_than_the_parse_window() -> None:
    udp28 = raw(IP(src="10.1.2.3", dst="10.9.8.7") / UDP(sport=9, dport=53))
    batch = FrameBatch(capacity=3, snaplen=30)       # parse looks at 80 bytes: padded copy
    for frame in (SYN, b"", udp28):
        batch.append(frame)
    h = parse_ipv4(batch)
    assert h.drop.tolist() == [DropReason.OVERSIZE, DropReason.TRUNCATED, DropReason.OK]
    assert h.dport.tolist()[2] == 53
    assert l4_checksum_ok(batch, h, [2]).tolist() == [True]


def test_empty_batch_and_rows_beyond_count() -> None:
    batch = FrameBatch(capacity=4)
    assert len(parse_ipv4(batch)) == 0
    batch.buf[:] = 0x45
    batch.length[:] = 100
    batch.append(SYN)
    h = parse_ipv4(batch)
    assert len(h) == 1 and h.drop.tolist() == [0]


def test_bytes_beyond_length_are_ignored() -> None:
    batch = FrameBatch.from_frames([SYN[:30], UDP_PKT])
    batch.buf[:, 30:] = 0xAB                      # stale bytes from an earlier, longer frame
    batch.buf[1, : len(UDP_PKT)] = np.frombuffer(UDP_PKT, np.uint8)
    h = parse_ipv4(batch)
    assert h.drop.tolist() == [DropReason.BAD_TOTAL_LENGTH, 0]


def test_negative_and_zero_lengths() -> None:
    batch = FrameBatch.from_frames([SYN, SYN])
    batch.length[0] = -5
    batch.length[1] = 0
    assert parse_ipv4(batch).drop.tolist() == [DropReason.TRUNCATED] * 2


def test_l4_checksum_ok() -> None:
    bad_tcp = SYN[:36] + b"\x12\x34" + SYN[38:]
    no_csum = UDP_PKT[:26] + b"\0\0" + UDP_PKT[28:]
    # UDP length (9) shorter than the IP payload: the checksum covers the UDP length only.
    short = raw(IP(src="10.1.2.3", dst="10.9.8.7") / UDP(sport=1, dport=2) / b"q")
    padded = IP(short[:2] + (len(short) + 3).to_bytes(2, "big") + short[4:] + b"pad")
    del padded.chksum
    frames = [SYN, UDP_PKT, ICMP_PKT, bad_tcp, no_csum, raw(padded)]
    batch, h = parse(*frames)
    assert h.drop.tolist() == [0] * 6
    assert l4_checksum_ok(batch, h, np.arange(6)).tolist() == [True, True, True, False, True, True]
    assert l4_checksum_ok(batch, h, np.array([], np.intp)).tolist() == []


def _scapy_fields(frame: bytes) -> tuple:
    ip = IP(frame)
    l4 = ip.payload
    ports = (l4.sport, l4.dport) if ip.proto in (6, 17) else (0, 0)
    flags = int(l4.flags) & 0xFF if ip.proto == 6 else 0     # scapy adds NS (0x100) from byte 12
    icmp = (l4.type, l4.code) if ip.proto == 1 else (0, 0)
    return (ip.ihl * 4, ip.len, ip.proto, ip_to_int(ip.src), ip_to_int(ip.dst), *ports, flags, *icmp)


def test_agrees_with_scapy_on_clean_corpus() -> None:
    clean = [f.data for f in corpus() if "clean" in f.labels and f.proto in ("tcp", "udp", "icmp")
             and "ip_fragment" not in f.labels and len(f.data) < 2048]
    assert len(clean) > 1000
    _, h = parse(*clean)
    assert h.ok.all()
    columns = np.stack([h.ihl, h.total_len, h.proto, h.saddr, h.daddr, h.sport, h.dport, h.tcp_flags,
                        h.icmp_type, h.icmp_code], axis=1).astype(np.int64)
    for i in range(len(clean)):
        assert tuple(columns[i].tolist()) == _scapy_fields(clean[i]), i
