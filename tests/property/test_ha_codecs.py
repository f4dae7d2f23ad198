"""Hypothesis: round trips for the HA codecs, garbage never escapes as a crash, and the
replay window agrees with an obvious set-based model."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRPv3

from userlb.ha import garp, heartbeat, sync, vrrp
from userlb.ha.heartbeat import Heartbeat, HeartbeatError, RejectReason, ReplayWindow, Role
from userlb.ha.sync import SyncConn, SyncError
from userlb.ha.vrrp import Advert, VrrpError

ipv4 = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(IPv6Address)
unicast4 = st.integers(0x01000000, 0xDFFFFFFF).map(IPv4Address)

adverts = st.builds(Advert, vrid=st.integers(1, 255), priority=st.integers(0, 255),
                    max_advert_int_cs=st.integers(1, 4095),
                    addrs=st.lists(ipv4, min_size=1, max_size=20).map(tuple), saddr=unicast4)


@given(adverts, unicast4)
def test_vrrp_round_trip(adv, unicast_daddr):
    assert vrrp.decode(vrrp.encode(adv), adv.saddr) == adv
    assert vrrp.decode_ip(vrrp.encode_ip(adv)) == adv
    assert vrrp.decode_ip(vrrp.encode_ip(adv, unicast_daddr), expect_daddr=None) == adv


@settings(max_examples=40)
@given(adverts)
def test_vrrp_equals_scapy(adv):
    pkt = IP(src=str(adv.saddr), dst="224.0.0.18", ttl=255, tos=0xC0, id=0) / VRRPv3(
        vrid=adv.vrid, priority=adv.priority, adv=adv.max_advert_int_cs,
        addrlist=[str(a) for a in adv.addrs])
    assert vrrp.encode_ip(adv) == bytes(pkt)


@given(st.binary(max_size=120), unicast4)
def test_vrrp_garbage_raises_only_vrrp_error(data, saddr):
    for attempt in (lambda: vrrp.decode(data, saddr), lambda: vrrp.decode_ip(data, None)):
        try:
            assert isinstance(attempt(), Advert)
        except VrrpError:
            pass


@given(adverts, st.data())
def test_vrrp_any_single_byte_corruption_is_rejected(adv, data):
    wire = bytearray(vrrp.encode_ip(adv))
    i = data.draw(st.integers(0, len(wire) - 1))
    wire[i] ^= data.draw(st.integers(1, 255))
    try:
        vrrp.decode_ip(bytes(wire))
    except VrrpError:
        return
    raise AssertionError(f"byte {i} corrupted unnoticed")     # RFC 1071 sums catch any one byte


heartbeats = st.builds(Heartbeat, node_id=st.integers(0, 2**32 - 1), role=st.sampled_from(Role),
                       priority=st.integers(0, 255), boot_id=st.integers(0, 2**32 - 1),
                       seq=st.integers(0, 2**64 - 1), timestamp_ms=st.integers(0, 2**64 - 1),
                       vip_digest=st.binary(min_size=8, max_size=8))
keys = st.binary(min_size=16, max_size=64)


@given(heartbeats, keys)
def test_heartbeat_round_trip(hb, key):
    assert heartbeat.decode(heartbeat.encode(hb, key), key) == hb


@given(st.binary(max_size=100), keys)
def test_heartbeat_garbage_raises_only_heartbeat_error(data, key):
    try:
        heartbeat.decode(data, key)
    except HeartbeatError:
        return
    raise AssertionError("random bytes authenticated")


@given(heartbeats, keys, keys)
def test_heartbeat_other_key_never_verifies(hb, key, other):
    if key != other:
        try:
            heartbeat.decode(heartbeat.encode(hb, other), key)
        except HeartbeatError as err:
            assert err.reason is RejectReason.BAD_MAC
        else:
            raise AssertionError("verified under the wrong key")


class WindowModel:
    """The obvious rule: newest boot wins; in a boot, accept unseen seqs within `window` of the top."""

    def __init__(self, window):
        self.window, self.boot, self.top, self.seen = window, None, None, set()

    def offer(self, boot, seq):
        if self.boot is None or boot > self.boot:
            self.boot, self.top, self.seen = boot, seq, {seq}
            return None
        if boot < self.boot:
            return RejectReason.STALE_BOOT
        if seq <= self.top - self.window:
            return RejectReason.TOO_OLD
        if seq in self.seen:
            return RejectReason.REPLAY
        self.seen.add(seq)
        self.top = max(self.top, seq)
        return None


@given(st.integers(1, 16), st.lists(st.tuples(st.integers(0, 3), st.integers(0, 60)), max_size=80))
def test_replay_window_matches_model(window, offers):
    real, model = ReplayWindow(window), WindowModel(window)
    for boot, seq in offers:
        verdict = real.check(7, boot, seq)
        if verdict is None:
            real.record(7, boot, seq)
        assert verdict == model.offer(boot, seq), (boot, seq)


def _conn(family):
    addr = ipv4 if family == 4 else ipv6
    tlv = st.tuples(st.integers(1, 255), st.binary(min_size=1, max_size=30)).map(
        lambda t: bytes([t[0], len(t[1])]) + t[1])
    return st.builds(SyncConn, proto=st.sampled_from([6, 17, 132]), caddr=addr,
                     cport=st.integers(0, 65535), vaddr=addr, vport=st.integers(0, 65535), daddr=addr,
                     dport=st.integers(0, 65535), state=st.integers(0, 65535),
                     flags=st.integers(0, 2**32 - 1), timeout_s=st.integers(0, 2**32 - 1),
                     fwmark=st.integers(0, 2**32 - 1),
                     options=st.lists(tlv, max_size=3).map(b"".join))


conns = st.one_of(_conn(4), _conn(6))


@given(st.integers(0, 255), st.lists(conns, max_size=30))
def test_sync_round_trip(syncid, batch):
    assert sync.decode_message(sync.encode_message(syncid, batch)) == sync.SyncMessage(syncid, tuple(batch))


@given(st.lists(conns, max_size=60), st.integers(300, 3000))
def test_sync_batch_split_preserves_order_and_limits(batch, maxlen):
    messages = sync.encode_batch(1, batch, maxlen_bytes=maxlen)
    assert all(len(m) <= maxlen for m in messages)
    assert [c for m in messages for c in sync.decode_message(m).conns] == batch


@given(st.binary(max_size=200))
def test_sync_garbage_raises_only_sync_error(data):
    for candidate in (data, data[:2] + len(data).to_bytes(2, "big") + data[4:] if len(data) >= 4 else data):
        try:
            sync.decode_message(candidate)
        except SyncError:
            pass


@settings(max_examples=40)
@given(st.binary(min_size=6, max_size=6), ipv4, st.sampled_from([garp.ARP_REQUEST, garp.ARP_REPLY]))
def test_garp_equals_scapy(mac, vip, op):
    text = ":".join(f"{b:02x}" for b in mac)
    hwdst = "ff:ff:ff:ff:ff:ff" if op == garp.ARP_REQUEST else text
    expected = Ether(dst="ff:ff:ff:ff:ff:ff", src=text) / ARP(
        op=op, hwsrc=text, psrc=str(vip), hwdst=hwdst, pdst=str(vip))
    assert garp.garp_frame(mac, vip, op=op) == bytes(expected)
