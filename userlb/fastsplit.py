"""When a batch may be split between the fast path and the vector path.

What it does: states the rule FastPath.process (fastpath.py) follows when it does an
eligible prefix of a batch itself and hands the rest to Engine's vector path, sets
the sizes that bound it (FAST_SPLIT_MAX, BACKOFF_MAX), and checks the two conditions
that look at the rest of the batch (split_ok: 3 and 4 below).

Why a prefix, and when splitting is safe. The vector path handles a batch as a
whole: the inbound lookups all run before any insert or reuse removal, the
outbound ones after them, schedulers read the counters as they were when the
batch began, and make_room may expire or evict before any packet advances.
Frames taken one at a time can therefore come out differently (an ACK ahead of
its SYN in one batch finds the connection the SYN makes; alone it does not). So
the fast path takes the longest eligible prefix and hands the rest, as one
sub-batch, to the vector path, and only when that provably equals the vector
path on the whole batch:
  1. the prefix inserts and removes nothing, so every lookup sees the same keys;
  2. no prefix packet moves a connection across the active/inactive line (the
     rest's schedulers read those counters); the prefix stops before one that would;
  3. the table has room for two inserts (connection + template) per remaining
     frame, so make_room neither expires nor evicts;
  4. no remaining UDP frame or TCP frame with SYN set comes from the client endpoint
     of a prefix connection, so no SYN reuses a prefix connection and no new
     connection shares an OUT key with one.
Otherwise the whole batch goes to the vector path. A batch whose frames are all
eligible is done by the fast path alone: with no insert or removal, one-at-a-time is
the batch semantics (per-connection arrival order; counter sums commute). Batches
larger than FAST_SPLIT_MAX are never split: done by the fast path whole, or in the
vector path.

What it does not do: enforce 1 and 2 (the fast path's plans only look up, and its
commit loop stops before a move across the line), choose the prefix, or keep the
backoff count (FastPath does, with BACKOFF_MAX); it reads the rest of the batch and
changes nothing.
"""

from __future__ import annotations

import struct

from userlb.services import IPPROTO_TCP, IPPROTO_UDP

FAST_SPLIT_MAX = 64
"""Batches larger than this are done by the fast path whole or not at all: a prefix
there and the rest in the vector path costs more than the vector path on the whole
batch from about 128 frames (the vector path's cost per extra packet is below the
fast path's). After such a batch falls back, the next 1, 2, 4 ... up to BACKOFF_MAX
batches that large go straight to the vector path, so that traffic with a new flow in
every batch wastes little parsing; a batch done by the fast path whole resets that."""

BACKOFF_MAX = 32

_PEEK = struct.Struct("!B8xB2xI")        # version + IHL, protocol, saddr (any IHL)
_U16 = struct.Struct("!H")
_TCP_SYN = 0x02


def split_ok(table, batch, clients: set, k: int, n: int) -> bool:
    """Conditions 3 and 4 for frames k..n-1 of `batch`, `clients` being the (address,
    port) client endpoints of the prefix's connections. For 4, only a frame that could
    open or reuse a connection counts: UDP, or TCP with SYN set."""
    if table.capacity - len(table) < 2 * (n - k):
        return False
    buf = batch.buf
    snaplen = buf.shape[1]
    for row in range(k, n):
        off, length = row * snaplen, int(batch.length[row])
        if length < 20:
            continue
        vihl, proto, saddr = _PEEK.unpack_from(buf, off)
        ihl = (vihl & 0x0F) << 2
        if ihl < 20 or ihl + 4 > length or proto not in (IPPROTO_TCP, IPPROTO_UDP):
            continue                          # the vector path drops or passes it
        if (saddr, _U16.unpack_from(buf, off + ihl)[0]) not in clients:
            continue
        if proto == IPPROTO_UDP or ihl + 14 > length or buf[row, ihl + 13] & _TCP_SYN:
            return False
    return True
