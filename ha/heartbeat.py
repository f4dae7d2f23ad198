"""Native authenticated heartbeat: codec, sender and replay-checking receiver.

What it does: the UDP payload userlb routers exchange on port 539 (pulse's
`heartbeat_port`) when they run the native protocol instead of VRRPv3. Each
datagram says who sends (node id), in which role and at which priority, and
carries a sequence number, the sender's timestamp and a digest of its VIP set,
authenticated with HMAC-SHA256 over a shared key. `HeartbeatReceiver.verify`
returns a `Heartbeat` or a `RejectReason` and counts every rejection; a
rejected datagram never reaches the state machine, so it cannot change state.

What it does not do: sockets, clocks, or deciding anything (ha/fsm.py does).

Mirrors: pulse's heartbeat (§1.8 of the HA spec: UDP 539, one datagram every
`keepalive` seconds, "partner dead" after `deadtime`) but fixes its defects:
pulse sends a 4-byte host-order magic with no authentication, so anyone on the
segment can forge "running"/"stopped" and move the VIPs. Replay protection is
the IPsec anti-replay window (RFC 4303 §3.4.3) per peer, plus a boot id.

Wire layout (big-endian, 72 bytes)::

    0  magic "ULHB"        4
    4  version = 1         1
    5  role                1   Role: INIT 0, BACKUP 1, MASTER 2, FAULT 3
    6  priority            1   0..255, as VRRP (0 = releasing)
    7  flags = 0           1   reserved
    8  node_id             4   sender id; by convention its primary IPv4 as an integer
   12  boot_id             4   increases at every start of the sender (epoch seconds or a counter)
   16  seq                 8   increases with every heartbeat within one boot
   24  timestamp_ms        8   sender's clock when sent (diagnostics, RTT); not trusted
   32  vip_digest          8   first 8 bytes of SHA-256 over the sorted VIPs
   40  hmac                32  HMAC-SHA256(key, bytes 0..39)

Replay rules, per peer node id, applied only after the HMAC verifies (so a
forged datagram cannot move the window): a boot id lower than the one seen is
STALE_BOOT; a higher one resets the window; within a boot a sequence number
more than `window` behind the highest is TOO_OLD and one already seen is
REPLAY. Limit: after *our* restart the first authentic heartbeat of a peer is
trusted whatever its boot id (no persisted state here); a replay then can at
worst hold us BACKUP until the peer's fresh heartbeats (higher seq) take over.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address
from typing import Iterable

HEARTBEAT_PORT = 539            # pulse's default heartbeat_port
MAGIC = b"ULHB"
VERSION = 1
MIN_KEY_BYTES = 16
DIGEST_BYTES = 8
MAC_BYTES = 32
_BODY = struct.Struct("!4sBBBBIIQQ8s")
BODY_LEN = _BODY.size            # 40
DATAGRAM_LEN = BODY_LEN + MAC_BYTES
_U32, _U64 = (1 << 32) - 1, (1 << 64) - 1


class Role(IntEnum):
    """A node's state as carried on the wire; ha/fsm.py uses the same enum as its states."""

    INIT = 0
    BACKUP = 1
    MASTER = 2
    FAULT = 3


class RejectReason(IntEnum):
    """Why a heartbeat datagram was rejected (values are stable counter indexes)."""

    BAD_LENGTH = 1      # not exactly DATAGRAM_LEN bytes
    BAD_MAGIC = 2       # not a userlb heartbeat ("Incompatible heartbeat" in pulse)
    BAD_VERSION = 3     # a version we do not speak
    BAD_MAC = 4         # HMAC does not verify: forged, corrupted or wrong key
    BAD_FIELD = 5       # authentic but a field is out of range (role, flags)
    UNKNOWN_PEER = 6    # authentic but the node id is not a configured peer
    OWN = 7             # our own heartbeat looped back
    STALE_BOOT = 8      # boot id older than the peer's current one: replay of an old life
    TOO_OLD = 9         # sequence number left of the replay window
    REPLAY = 10         # sequence number already received


class HeartbeatError(ValueError):
    """A datagram that `decode` refuses; `reason` says why."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason.name.lower()}: {detail}" if detail else reason.name.lower())
        self.reason = reason


@dataclass(frozen=True)
class Heartbeat:
    """One authenticated heartbeat, decoded."""

    node_id: int
    """Sender id (u32); by convention int(primary IPv4 address), the split-brain tie-break."""
    role: Role
    """Sender's state when it sent."""
    priority: int
    """Sender's priority 0..255 (0 = releasing, 255 = owner), as VRRP."""
    boot_id: int
    """Sender's boot/epoch id (u32); must increase across the sender's restarts."""
    seq: int
    """Sequence number (u64), strictly increasing within one boot id."""
    timestamp_ms: int
    """Sender's clock in milliseconds when sent (u64); informational."""
    vip_digest: bytes
    """vip_digest() of the sender's VIP set, to detect configuration mismatch."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))
        for name, top in (("node_id", _U32), ("boot_id", _U32), ("seq", _U64),
                          ("timestamp_ms", _U64), ("priority", 255)):
            if not 0 <= getattr(self, name) <= top:
                raise ValueError(f"{name} {getattr(self, name)} out of range")
        if len(self.vip_digest) != DIGEST_BYTES:
            raise ValueError(f"vip_digest must be {DIGEST_BYTES} bytes")


def vip_digest(vips: Iterable[IPv4Address | str]) -> bytes:
    """8-byte digest of a VIP set, independent of order and duplicates."""
    packed = sorted({IPv4Address(v).packed for v in vips})
    return hashlib.sha256(b"".join(packed)).digest()[:DIGEST_BYTES]


def _check_key(key: bytes) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"heartbeat key must be at least {MIN_KEY_BYTES} bytes")
    return bytes(key)


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def encode(hb: Heartbeat, key: bytes) -> bytes:
    """The authenticated datagram for `hb`."""
    body = _BODY.pack(MAGIC, VERSION, hb.role, hb.priority, 0, hb.node_id, hb.boot_id,
                      hb.seq, hb.timestamp_ms, hb.vip_digest)
    return body + _mac(_check_key(key), body)


def decode(datagram: bytes, key: bytes) -> Heartbeat:
    """Check length, magic, version and HMAC (stateless); raises HeartbeatError."""
    if len(datagram) != DATAGRAM_LEN:
        raise HeartbeatError(RejectReason.BAD_LENGTH, f"{len(datagram)} bytes")
    magic, version, role, prio, flags, node, boot, seq, ts_ms, digest = _BODY.unpack_from(datagram)
    if magic != MAGIC:
        raise HeartbeatError(RejectReason.BAD_MAGIC, magic.hex())
    if version != VERSION:
        raise HeartbeatError(RejectReason.BAD_VERSION, str(version))
    body, tag = datagram[:BODY_LEN], datagram[BODY_LEN:]
    if not hmac.compare_digest(_mac(_check_key(key), body), tag):
        raise HeartbeatError(RejectReason.BAD_MAC)
    if role not in Role._value2member_map_ or flags != 0:
        raise HeartbeatError(RejectReason.BAD_FIELD, f"role {role}, flags {flags}")
    return Heartbeat(node, Role(role), prio, boot, seq, ts_ms, digest)


@dataclass
class _PeerWindow:
    boot_id: int
    top_seq: int
    bitmap: int         # bit i set = seq (top_seq - i) received


class ReplayWindow:
    """Anti-replay state for all peers (RFC 4303 §3.4.3 sliding window, plus boot ids)."""

    def __init__(self, window: int = 64) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._peers: dict[int, _PeerWindow] = {}

    def check(self, node_id: int, boot_id: int, seq: int) -> RejectReason | None:
        """Why (node, boot, seq) must be rejected, or None; does not record it."""
        st = self._peers.get(node_id)
        if st is None or boot_id > st.boot_id or seq > st.top_seq and boot_id == st.boot_id:
            return None
        if boot_id < st.boot_id:
            return RejectReason.STALE_BOOT
        behind = st.top_seq - seq
        if behind >= self.window:
            return RejectReason.TOO_OLD
        return RejectReason.REPLAY if st.bitmap >> behind & 1 else None

    def record(self, node_id: int, boot_id: int, seq: int) -> None:
        """Mark (node, boot, seq) as received; call only after check() returned None."""
        st = self._peers.get(node_id)
        if st is None or boot_id > st.boot_id:
            self._peers[node_id] = _PeerWindow(boot_id, seq, 1)
        elif seq > st.top_seq:
            mask = (1 << self.window) - 1
            st.bitmap = ((st.bitmap << (seq - st.top_seq)) | 1) & mask
            st.top_seq = seq
        else:
            st.bitmap |= 1 << (st.top_seq - seq)

    def snapshot(self) -> dict[int, tuple[int, int]]:
        """{node_id: (boot_id, highest seq)} for display and tests."""
        return {n: (p.boot_id, p.top_seq) for n, p in self._peers.items()}


class HeartbeatReceiver:
    """Verifies datagrams from peers: authenticity, then identity, then freshness."""

    def __init__(self, key: bytes, own_node_id: int, peers: Iterable[int] | None = None,
                 window: int = 64) -> None:
        self._key = _check_key(key)
        self.own_node_id = own_node_id
        self.peers = None if peers is None else frozenset(peers)
        self.replay = ReplayWindow(window)
        self.rejected: Counter[RejectReason] = Counter()
        self.accepted = 0

    def verify(self, datagram: bytes) -> Heartbeat | RejectReason:
        """The heartbeat if it is authentic and fresh; otherwise the counted reason."""
        try:
            hb = decode(datagram, self._key)
        except HeartbeatError as err:
            return self._reject(err.reason)
        if hb.node_id == self.own_node_id:
            return self._reject(RejectReason.OWN)
        if self.peers is not None and hb.node_id not in self.peers:
            return self._reject(RejectReason.UNKNOWN_PEER)
        reason = self.replay.check(hb.node_id, hb.boot_id, hb.seq)
        if reason is not None:
            return self._reject(reason)
        self.replay.record(hb.node_id, hb.boot_id, hb.seq)
        self.accepted += 1
        return hb

    def _reject(self, reason: RejectReason) -> RejectReason:
        self.rejected[reason] += 1
        return reason


class HeartbeatSender:
    """Builds this node's heartbeats, numbering them; the edge sends the bytes."""

    def __init__(self, key: bytes, node_id: int, boot_id: int,
                 vips: Iterable[IPv4Address | str], first_seq: int = 1) -> None:
        self._key = _check_key(key)
        self.node_id = node_id
        self.boot_id = boot_id
        self.digest = vip_digest(vips)
        self.next_seq = first_seq

    def build(self, role: Role, priority: int, now_s: float) -> bytes:
        """The next datagram; `now_s` is the sender's clock in seconds (any epoch)."""
        hb = Heartbeat(self.node_id, role, priority, self.boot_id, self.next_seq,
                       max(0, int(now_s * 1000)) & _U64, self.digest)
        self.next_seq += 1
        return encode(hb, self._key)
