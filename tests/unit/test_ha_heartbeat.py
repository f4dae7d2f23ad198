"""ha/heartbeat.py: layout, authentication, forgery, replay and the window."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest

from userlb.ha import heartbeat as hbm
from userlb.ha.heartbeat import (Heartbeat, HeartbeatError, HeartbeatReceiver, HeartbeatSender,
                                 RejectReason, Role, ReplayWindow, vip_digest)

KEY = b"k" * 32
OTHER_KEY = b"x" * 32
A, B = 0x0A000001, 0x0A000002          # node ids: 10.0.0.1, 10.0.0.2
VIPS = ["198.18.0.100", "198.18.0.101"]


def hb(seq=1, boot=100, node=A, role=Role.MASTER, prio=150, ts=5000) -> Heartbeat:
    return Heartbeat(node, role, prio, boot, seq, ts, vip_digest(VIPS))


def wire(**kw) -> bytes:
    return hbm.encode(hb(**kw), KEY)


def test_layout_is_72_bytes_big_endian_with_hmac_sha256_trailer():
    data = wire(seq=0x0102030405060708, boot=0x11223344, ts=0x55)
    assert len(data) == hbm.DATAGRAM_LEN == 72
    assert data[:8] == b"ULHB" + bytes([1, Role.MASTER, 150, 0])
    assert data[8:12] == A.to_bytes(4, "big") and data[12:16] == bytes.fromhex("11223344")
    assert data[16:24] == bytes.fromhex("0102030405060708")
    assert data[24:32] == (0x55).to_bytes(8, "big") and data[32:40] == vip_digest(VIPS)
    assert data[40:] == hmac.new(KEY, data[:40], hashlib.sha256).digest()


def test_round_trip():
    assert hbm.decode(wire(), KEY) == hb()


def test_vip_digest_ignores_order_and_duplicates():
    assert vip_digest(VIPS) == vip_digest(list(reversed(VIPS)) + VIPS[:1])
    assert vip_digest(VIPS) != vip_digest(VIPS[:1])


def test_wrong_key_is_bad_mac():
    with pytest.raises(HeartbeatError) as err:
        hbm.decode(hbm.encode(hb(), OTHER_KEY), KEY)
    assert err.value.reason is RejectReason.BAD_MAC


def test_every_bit_flip_is_rejected():
    good = wire()
    for bit in range(len(good) * 8):
        corrupt = bytearray(good)
        corrupt[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(HeartbeatError) as err:
            hbm.decode(bytes(corrupt), KEY)
        expected = {0: RejectReason.BAD_MAGIC, 1: RejectReason.BAD_MAGIC, 2: RejectReason.BAD_MAGIC,
                    3: RejectReason.BAD_MAGIC, 4: RejectReason.BAD_VERSION}
        assert err.value.reason is expected.get(bit // 8, RejectReason.BAD_MAC)


@pytest.mark.parametrize("data,reason", [
    (b"", RejectReason.BAD_LENGTH),
    (wire()[:-1], RejectReason.BAD_LENGTH),
    (wire() + b"\0", RejectReason.BAD_LENGTH),
    (struct.pack("!I", 0xBDADDBDA), RejectReason.BAD_LENGTH),       # a pulse "running" heartbeat
    (b"XXXX" + wire()[4:], RejectReason.BAD_MAGIC),
])
def test_malformed(data, reason):
    with pytest.raises(HeartbeatError) as err:
        hbm.decode(data, KEY)
    assert err.value.reason is reason


def test_authentic_but_out_of_range_role_is_bad_field():
    body = bytearray(wire()[:40])
    body[5] = 9
    data = bytes(body) + hmac.new(KEY, bytes(body), hashlib.sha256).digest()
    with pytest.raises(HeartbeatError) as err:
        hbm.decode(data, KEY)
    assert err.value.reason is RejectReason.BAD_FIELD


def test_short_keys_are_refused():
    with pytest.raises(ValueError):
        HeartbeatReceiver(b"short", B)
    with pytest.raises(ValueError):
        hbm.encode(hb(), b"0123456789abcde")


def test_sender_numbers_heartbeats_and_stamps_time():
    sender = HeartbeatSender(KEY, A, boot_id=7, vips=VIPS)
    first, second = (hbm.decode(sender.build(Role.BACKUP, 90, now_s=t), KEY) for t in (1.5, 3.5))
    assert (first.seq, second.seq) == (1, 2)
    assert (first.timestamp_ms, second.timestamp_ms) == (1500, 3500)
    assert first.role is Role.BACKUP and first.priority == 90 and first.boot_id == 7


# ---- the receiver: each row is a sequence of datagrams and the expected verdicts --------------
SCENARIOS = [
    ("in order", [wire(seq=1), wire(seq=2), wire(seq=3)], ["ok", "ok", "ok"]),
    ("exact replay", [wire(seq=1), wire(seq=1)], ["ok", RejectReason.REPLAY]),
    ("replay after newer", [wire(seq=5), wire(seq=6), wire(seq=5)], ["ok", "ok", RejectReason.REPLAY]),
    ("reordered inside window", [wire(seq=10), wire(seq=8), wire(seq=9), wire(seq=8)],
     ["ok", "ok", "ok", RejectReason.REPLAY]),
    ("left of window", [wire(seq=100), wire(seq=36), wire(seq=37)],
     ["ok", RejectReason.TOO_OLD, "ok"]),
    ("sequence gap is fine", [wire(seq=1), wire(seq=10_000)], ["ok", "ok"]),
    ("peer restarted: new boot id resets", [wire(seq=500, boot=1), wire(seq=1, boot=2)], ["ok", "ok"]),
    ("old life replayed", [wire(seq=1, boot=2), wire(seq=900, boot=1)], ["ok", RejectReason.STALE_BOOT]),
    ("forged with higher seq does not move the window",
     [wire(seq=1), hbm.encode(hb(seq=1000), OTHER_KEY), wire(seq=2)],
     ["ok", RejectReason.BAD_MAC, "ok"]),
    ("own heartbeat looped back", [wire(node=B)], [RejectReason.OWN]),
    ("unknown peer", [wire(node=0x0A0000FF)], [RejectReason.UNKNOWN_PEER]),
    ("windows are per peer", [wire(seq=5, node=A), wire(seq=5, node=0x0A000003)], ["ok", "ok"]),
]


@pytest.mark.parametrize("desc,datagrams,verdicts", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_receiver_scenarios(desc, datagrams, verdicts):
    rx = HeartbeatReceiver(KEY, own_node_id=B, peers={A, 0x0A000003}, window=64)
    got = []
    for data in datagrams:
        result = rx.verify(data)
        got.append("ok" if isinstance(result, Heartbeat) else result)
    assert got == verdicts
    assert rx.accepted == verdicts.count("ok")
    assert sum(rx.rejected.values()) == len(verdicts) - verdicts.count("ok")
    for reason in set(v for v in verdicts if v != "ok"):
        assert rx.rejected[reason] == verdicts.count(reason)


def test_rejections_leave_replay_state_untouched():
    rx = HeartbeatReceiver(KEY, own_node_id=B)
    rx.verify(wire(seq=10))
    before = rx.replay.snapshot()
    for bad in (hbm.encode(hb(seq=99, boot=999), OTHER_KEY), wire(seq=10), wire(seq=10, boot=1),
                wire(node=B, seq=50), b"garbage"):
        assert isinstance(rx.verify(bad), RejectReason)
    assert rx.replay.snapshot() == before == {A: (100, 10)}


def test_window_size_one_accepts_only_increasing():
    window = ReplayWindow(window=1)
    assert window.check(A, 1, 5) is None
    window.record(A, 1, 5)
    assert window.check(A, 1, 4) is RejectReason.TOO_OLD
    assert window.check(A, 1, 5) is RejectReason.REPLAY
    assert window.check(A, 1, 6) is None


def test_window_edge():
    window = ReplayWindow(window=64)
    window.record(A, 1, 100)
    assert window.check(A, 1, 37) is None          # 63 behind: last slot
    assert window.check(A, 1, 36) is RejectReason.TOO_OLD
