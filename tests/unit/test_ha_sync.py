"""ha/sync.py: IPVS sync v1 byte layout (spec §5.2, ip_vs_sync.c), splitting, and rejects."""

from __future__ import annotations

import struct

import pytest

from userlb.ha import sync
from userlb.ha.sync import SyncConn, SyncDropReason, SyncError, SyncMessage

TCP, UDP = 6, 17
ESTABLISHED = 1


def conn(i: int = 0, **kw) -> SyncConn:
    base = dict(proto=TCP, caddr=f"203.0.113.{7 + i}", cport=40000 + i, vaddr="198.18.0.100", vport=80,
                daddr="10.1.0.11", dport=8080, state=ESTABLISHED, flags=0, timeout_s=900)
    return SyncConn(**{**base, **kw})


ENTRY_HEX = ("00 06 0024 00000000 0001 9c40 0050 1f90 00000000 00000384"
             " cb007107 c6120064 0a01000b")


def test_ipv4_entry_layout_by_hand():
    entry = bytes.fromhex(ENTRY_HEX)
    assert len(entry) == 36
    assert sync.encode_conn(conn()) == entry
    message = sync.encode_message(5, [conn()])
    assert message == bytes.fromhex("00 05 002c 01 01 0000") + entry
    assert sync.decode_message(message) == SyncMessage(5, (conn(),))


def test_ipv6_entry_is_72_bytes_with_type_bit():
    v6 = conn(caddr="2001:db8::7", vaddr="2001:db8::100", daddr="2001:db8:1::11")
    entry = sync.encode_conn(v6)
    assert len(entry) == 72 and entry[0] == sync.STYPE_F_INET6
    assert entry[2:4] == struct.pack("!H", 72)
    assert sync.decode_message(sync.encode_message(0, [v6])).conns == (v6,)


def test_options_and_padding_before_the_next_entry():
    seq = bytes([sync.IPVS_OPT_SEQ_DATA, 24]) + bytes(range(24))       # 26 bytes → entry 62
    first = conn(0, flags=0x0600, options=seq)
    message = sync.encode_message(1, [first, conn(1)])
    assert struct.unpack_from("!H", message, 8 + 2)[0] == 62           # ver_size, unpadded
    assert message[8 + 62:8 + 64] == b"\0\0"                           # pad to 4
    assert message[8 + 64:] == sync.encode_conn(conn(1))
    assert len(message) == struct.unpack_from("!H", message, 2)[0] == 8 + 64 + 36
    assert sync.decode_message(message).conns == (first, conn(1))


def test_last_entry_is_not_padded():
    odd = conn(options=bytes([sync.IPVS_OPT_PE_NAME, 3]) + b"sip")     # entry 41 bytes
    message = sync.encode_message(0, [odd])
    assert len(message) == 8 + 41
    assert sync.decode_message(message).conns == (odd,)


def test_flags_state_timeout_fwmark_survive():
    c = conn(proto=UDP, state=0, flags=sync.IP_VS_CONN_F_TEMPLATE | sync.IP_VS_CONN_F_INACTIVE,
             timeout_s=0xFFFFFFFF, fwmark=0xDEADBEEF)
    assert sync.decode_message(sync.encode_message(0, [c])).conns == (c,)


def test_batch_splits_at_maxlen_and_255_entries():
    conns = [conn(i % 200, cport=i) for i in range(100)]
    messages = sync.encode_batch(3, conns)                              # default 1472 bytes
    assert [m[4] for m in messages] == [40, 40, 20]                     # (1472 - 8) // 36 = 40
    assert all(len(m) <= 1472 for m in messages)
    assert [c for m in messages for c in sync.decode_message(m, syncid=3).conns] == conns
    big = sync.encode_batch(0, [conn(0, cport=i) for i in range(300)], maxlen_bytes=65507)
    assert [m[4] for m in big] == [255, 45]
    assert sync.encode_batch(0, []) == []


def test_batch_rejects_an_entry_larger_than_maxlen():
    with pytest.raises(ValueError):
        sync.encode_batch(0, [conn()], maxlen_bytes=40)


def test_encode_rejects_too_many_or_bad_fields():
    with pytest.raises(ValueError):
        sync.encode_message(0, [conn()] * 256)
    with pytest.raises(ValueError):
        sync.encode_message(256, [conn()])
    with pytest.raises(ValueError):
        conn(cport=70000)
    with pytest.raises(ValueError):
        conn(daddr="2001:db8::1")                                       # mixed families
    with pytest.raises(ValueError):
        conn(options=b"\x01\x05ab")                                     # TLV overruns


GOOD = sync.encode_message(7, [conn(0), conn(1)])


def _resize(data: bytes) -> bytes:
    return data[:2] + struct.pack("!H", len(data)) + data[4:]


def _entry_byte(offset: int, value: int, data: bytes = GOOD) -> bytes:
    return data[:8 + offset] + bytes([value]) + data[8 + offset + 1:]


def _with_raw_options(options: bytes) -> bytes:
    """A one-entry message whose entry carries `options` unchecked (the encoder would refuse)."""
    entry = bytearray(sync.encode_conn(conn()) + options)
    entry[2:4] = struct.pack("!H", len(entry))
    return _resize(bytes.fromhex("00 00 0000 01 01 0000") + bytes(entry))


REJECTS = [
    ("empty", b"", SyncDropReason.TRUNCATED),
    ("7 bytes", GOOD[:7], SyncDropReason.TRUNCATED),
    ("size says more", GOOD + b"\0", SyncDropReason.BAD_SIZE),
    ("size says less", GOOD[:-1], SyncDropReason.BAD_SIZE),
    ("version 0 header (first byte = nr_conns)", b"\x02" + GOOD[1:], SyncDropReason.UNSUPPORTED_VERSION),
    ("version 2", GOOD[:5] + b"\x02" + GOOD[6:], SyncDropReason.UNSUPPORTED_VERSION),
    ("spare not zero", GOOD[:7] + b"\x01" + GOOD[8:], SyncDropReason.UNSUPPORTED_VERSION),
    ("nr_conns beyond data", _resize(GOOD[:4] + b"\x03" + GOOD[5:]), SyncDropReason.TRUNCATED),
    ("entry type 2", _entry_byte(0, 2), SyncDropReason.BAD_ENTRY_TYPE),
    ("entry version 1", _entry_byte(2, 0x10), SyncDropReason.BAD_ENTRY_VERSION),
    ("entry shorter than IPv4 fixed part", _entry_byte(3, 30), SyncDropReason.BAD_ENTRY_LENGTH),
    ("IPv6 type on an IPv4-sized entry", _entry_byte(0, 1), SyncDropReason.BAD_ENTRY_LENGTH),
    ("entry past the end", _entry_byte(3 + 36, 200), SyncDropReason.BAD_ENTRY_LENGTH),
    ("option with zero length", _with_raw_options(b"\x01\x00\x00"), SyncDropReason.BAD_OPTION),
    ("option header cut", _with_raw_options(b"\x01"), SyncDropReason.BAD_OPTION),
    ("option data past the entry", _with_raw_options(b"\x02\x09abc"), SyncDropReason.BAD_OPTION),
]


@pytest.mark.parametrize("desc,data,reason", REJECTS, ids=[r[0] for r in REJECTS])
def test_rejects(desc, data, reason):
    with pytest.raises(SyncError) as err:
        sync.decode_message(data)
    assert err.value.reason is reason


def test_syncid_filter_as_the_kernel():
    assert sync.decode_message(GOOD, syncid=0).syncid == 7             # 0 accepts any
    assert sync.decode_message(GOOD, syncid=7).syncid == 7
    with pytest.raises(SyncError) as err:
        sync.decode_message(GOOD, syncid=8)
    assert err.value.reason is SyncDropReason.WRONG_SYNCID


def test_every_truncation_is_rejected_cleanly():
    for cut in range(len(GOOD)):
        with pytest.raises(SyncError):
            sync.decode_message(GOOD[:cut])
        with pytest.raises(SyncError):
            sync.decode_message(_resize(GOOD[:cut]) if cut >= 4 else GOOD[:cut])
