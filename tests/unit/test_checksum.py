"""checksum.py against the worked examples of RFC 1071 and RFC 1624 and a plain reference."""

from __future__ import annotations

import numpy as np
from scapy.all import IP, TCP, raw

from userlb import checksum


def reference(data: bytes) -> int:
    """The obvious RFC 1071 loop."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_rfc1071_example() -> None:
    # RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (after the carry); checksum = ~ddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert checksum.full(data) == 0x220D
    assert checksum.full(np.frombuffer(data, np.uint8)) == 0x220D


def test_odd_length_pads_with_zero() -> None:
    assert checksum.full(b"\x01") == reference(b"\x01") == 0xFEFF
    assert checksum.full(b"") == 0xFFFF
    assert checksum.full(b"\xab\xcd\xef") == reference(b"\xab\xcd\xef")


def test_verifies_to_zero_over_a_correct_header() -> None:
    header = raw(IP(src="10.0.0.1", dst="10.0.0.2") / TCP())[:20]
    assert checksum.full(header) == 0
    assert checksum.full(header[:10] + b"\0\0" + header[12:]) == int.from_bytes(header[10:12], "big")


def test_fold32_scalar_and_array() -> None:
    assert checksum.fold32(0x1FFFE) == 0xFFFF
    assert checksum.fold32(0xFFFFFFFF) == 0xFFFF
    assert checksum.fold32(0x12345) == 0x2346
    out = checksum.fold32(np.array([0x1FFFE, 0xFFFFFFFF, 0x12345, 0], np.uint32))
    assert out.dtype == np.uint16
    assert out.tolist() == [0xFFFF, 0xFFFF, 0x2346, 0]
    assert checksum.fold_wide(np.array([2**40 + 5], np.uint64)).tolist() == [checksum.fold32(2**40 + 5)]


def test_rfc1624_section4_example() -> None:
    # RFC 1624 §4: HC = 0xDD2F, m = 0x5555 → m' = 0x3285. Eqn 3 gives 0x0000; eqn 2 would give 0xFFFF.
    assert checksum.adjust(0xDD2F, 0x5555, 0x3285) == 0x0000
    out = checksum.adjust(np.array([0xDD2F], np.uint16), np.array([0x5555]), np.array([0x3285]))
    assert out.tolist() == [0]


def test_adjust_scalar_returns_int_and_array_returns_uint16() -> None:
    assert isinstance(checksum.adjust(1, 2, 3), int)
    assert isinstance(checksum.adjust32(1, 2, 3), int)
    assert checksum.adjust(np.array([1, 2]), np.array([2, 2]), np.array([3, 3])).dtype == np.uint16


def test_adjust_several_words_per_checksum() -> None:
    data = bytearray(b"\x45\x00\x00\x28\x12\x34\x40\x00\x40\x06\x00\x00\x0a\x00\x00\x01\x0a\x00\x00\x02")
    csum = checksum.full(bytes(data))
    new = bytearray(data)
    new[12:16] = bytes((192, 0, 2, 7))
    words_old = [0x0A00, 0x0001]
    words_new = [0xC000, 0x0207]
    assert checksum.adjust(csum, words_old, words_new) == checksum.full(bytes(new))
    assert checksum.adjust32(csum, 0x0A000001, 0xC0000207) == checksum.full(bytes(new))
    arr = checksum.adjust32(np.array([csum, csum]), np.array([0x0A000001] * 2, np.uint32),
                            np.array([0xC0000207] * 2, np.uint32))
    assert arr.tolist() == [checksum.full(bytes(new))] * 2


def test_adjust_identity_and_inverse() -> None:
    for csum in (0x0000, 0x1234, 0xFFFE):
        there = checksum.adjust32(csum, 0x01020304, 0xA0B0C0D0)
        back = checksum.adjust32(there, 0xA0B0C0D0, 0x01020304)
        assert back == csum or {back, csum} == {0, 0xFFFF}


def test_split32() -> None:
    assert checksum.split32(0x12345678) == (0x1234, 0x5678)
    hi, lo = checksum.split32(np.array([0x12345678], np.uint32))
    assert hi.tolist() == [0x1234] and lo.tolist() == [0x5678]
