"""Per-packet fast path: the established-flow packets of a small batch, in plain Python.

What it does: FastPath.process(batch, now) takes the common case of a light-load
batch, a well-formed, unfragmented IPv4 TCP/UDP packet of an existing, untraced
connection in either direction (client → VIP found in the IN index, real server
→ client in the OUT index), and does for it exactly what Engine's vector path
does, with struct and Python ints instead of numpy column operations: parse.py's
validity rules, ConnTable's scalar lookups, the TCP state table, `expires`, the
active/inactive moves and per-server statistics (accounting.py), ASSURED
templates (persist.Templates.assure), the sync dirty mark, and nat.py's rewrite
with RFC 1624 checksums, written straight into the batch rows. Same bytes, same
state, same counters; tests/property/test_fastpath_equivalence.py holds it to that.

Rows the TUN flagged NEEDS_CSUM (offload: FrameBatch.vnet) get nat.py's
CHECKSUM_PARTIAL update of the L4 field (address delta without complement, no
port delta).

What it does not do: anything else. New connections, ICMP, malformed frames,
pure SYNs to a VIP (connection reuse), DEST_GONE, traced connections, UDP sent
without a checksum (nat.py fills one in) and misses of either index go to the
vector path, which assigns their drop reasons, schedules and traces.

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
eligible is done here alone: with no insert or removal, one-at-a-time is the
batch semantics (per-connection arrival order; counter sums commute).

Mirrors: the hit paths of ip_vs_in_hook / handle_response, set_tcp_state, and
ip_vs_nat_xmit's tcp/udp dnat/snat handlers, as engine.py does.
"""

from __future__ import annotations

import struct

import numpy as np

from userlb import tcpstate
from userlb.conntable import CONN_F_INACTIVE
from userlb.persist import ASSURED
from userlb.services import IPPROTO_TCP, IPPROTO_UDP

FAST_BATCH_MAX = 64
"""Batches of at most this many frames try the fast path (Engine.fast_max). From
`userlb bench engine` with each path forced: established flows cost ~4.4 µs/packet
here at any batch size, against the vector path's 346 / 60 / 16 / 9.1 / 5.5 / 3.2 at
1 / 8 / 32 / 64 / 128 / 256. A batch with one frame this path defers still pays a
whole vector call, plus up to ~20% for the prefix done here (measured at 64; ~45% at
128). At 64 a batch of established flows is 2x faster and a mixed one <= 1.2x slower;
past it the gain shrinks below the loss. spec/perf.md: vectorise from about 64."""

# version + IHL, total length, flags + fragment offset, protocol, checksum, saddr, daddr
_IP = struct.Struct("!BxHxxHxBHII")
_TCP = struct.Struct("!HH8xBB2xH")      # sport, dport, data offset, flags, checksum
_UDP = struct.Struct("!HHHH")           # sport, dport, length, checksum
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_IHL_WORDS = {ihl: struct.Struct(f"!{ihl // 2}H") for ihl in range(20, 61, 4)}
_FRAG_BITS = 0x3FFF                     # RFC 791: MF | fragment offset
_TCP_SYN_ACK_RST, _TCP_SYN = 0x16, 0x02
_TCP_CSUM_AT, _UDP_CSUM_AT = 16, 6      # checksum offsets in the L4 header


def _next_tcp_table() -> list[list[list[int]]]:
    """[direction][flags][old state] → new state: tcpstate.next_state over every input."""
    states = np.arange(tcpstate.N_STATES)[:, None, None]
    dirs = np.array([tcpstate.DIR_INPUT, tcpstate.DIR_OUTPUT])[None, :, None]
    flags = np.arange(256)[None, None, :]
    return tcpstate.next_state(states, dirs, flags).transpose(1, 2, 0).tolist()


_NEXT_TCP = _next_tcp_table()
_ACTIVE = tcpstate.ACTIVE.tolist()
_IN_TABLE, _OUT_TABLE = _NEXT_TCP[tcpstate.DIR_INPUT], _NEXT_TCP[tcpstate.DIR_OUTPUT]
_UDP_STATE, _ESTABLISHED = tcpstate.UDP, tcpstate.ESTABLISHED
_ACTIVE_MASK = ~CONN_F_INACTIVE & 0xFFFF
_DEST_COLUMNS = ("activeconns", "inactconns", "inpkts", "inbytes", "outpkts", "outbytes")


_ROWS: dict[int, np.ndarray] = {}


def _rows(n: int) -> np.ndarray:
    """np.arange(n), shared and read-only (a Verdict's rows are not written to)."""
    rows = _ROWS.get(n)
    if rows is None:
        rows = _ROWS[n] = np.arange(n)
        rows.setflags(write=False)
    return rows


def _fold(s: int) -> int:
    """End-around carry to 16 bits; two steps suffice below 2**32 (checksum.fold32)."""
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


class FastPath:
    """The engine's scalar path; holds memoryviews of its arrays (written in place only)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        v = engine.table.views()
        self._lookup_in, self._lookup_out = engine.table.lookup_in_one, engine.table.lookup_out_one
        self._state, self._flags, self._expires = v["state"], v["flags"], v["expires"]
        self._dest, self._service = v["dest"], v["service"]
        self._daddr, self._dport, self._vaddr, self._vport = (v[n] for n in ("daddr", "dport",
                                                                              "vaddr", "vport"))
        self._dirty = memoryview(engine.dirty)
        self._traced = memoryview(engine.traced)
        self._control = memoryview(engine.templates.control)
        self._index = self._vips = None
        self._dest_cache: dict[int, tuple] = {}
        self._timeout_src = self._timeouts = None
        from userlb.engine import Verdict        # engine.py imports this module
        self._verdict = Verdict

    def process(self, batch, now: float):
        """The whole batch's Verdict, from this path alone or with the vector path on a tail.

        FrameBatch rows are C-contiguous, so struct reads the frame at row * snaplen."""
        eng = self.engine
        n = batch.count
        buf = batch.buf
        if eng.index is not self._index or eng.timeout_of is not self._timeout_src:
            self._refresh()
        snaplen = buf.shape[1]
        lengths = batch.length[:n].tolist()
        partial = [0] * n if batch.vnet is None else (batch.vnet[:n, 0] & 1).tolist()
        plan = self._plan
        plans = []
        for row in range(n):
            p = plan(buf, row * snaplen, lengths[row], snaplen, partial[row])
            if p is None:
                break
            plans.append(p)
        k = len(plans)
        if k == 0 or (k < n and not self._split_ok(buf, plans, k, n, lengths, snaplen)):
            return eng.process_vector(batch, now)
        done = self._commit(batch, plans, now, stop_on_activity=k < n)
        if done == n:
            return self._verdict(_rows(n), batch.length[:n].astype(np.int64), [])
        if done == 0:
            return eng.process_vector(batch, now)
        rest = eng.process_vector(batch.tail(done), now)
        return self._verdict(np.concatenate([_rows(done), rest.rows + done]),
                             np.concatenate([batch.length[:done].astype(np.int64), rest.lengths]),
                             rest.extra)

    def _refresh(self) -> None:
        """Re-derive the VIP set and timeouts when control swapped the engine's objects."""
        eng = self.engine
        if eng.index is not self._index:
            self._index, self._vips = eng.index, frozenset(eng.index.vips.tolist())
        if eng.timeout_of is not self._timeout_src:
            self._timeout_src, self._timeouts = eng.timeout_of, eng.timeout_of.tolist()

    def _plan(self, buf, off: int, length: int, snaplen: int, partial: int = 0):
        """Parse and look up one frame (reads only); None unless it is eligible.

        The checks are parse.py's for rows that come out OK as TCP/UDP. `partial`: the
        TUN flagged the row NEEDS_CSUM (offload; nat.py's CHECKSUM_PARTIAL rule)."""
        if length >= snaplen or length < 20:
            return None
        vihl, total, frag, proto, ip_csum, saddr, daddr = _IP.unpack_from(buf, off)
        ihl = (vihl & 0x0F) << 2
        if vihl >> 4 != 4 or ihl < 20 or ihl > length or total < ihl or total > length \
                or frag & _FRAG_BITS:
            return None
        if _fold(sum(_IHL_WORDS[ihl].unpack_from(buf, off))) != 0xFFFF:   # RFC 1071 verify
            return None
        l4_len = total - ihl
        if proto == IPPROTO_TCP:
            if l4_len < 20:
                return None
            sport, dport, doff, tcp_flags, l4_csum = _TCP.unpack_from(buf, off + ihl)
            doff = (doff >> 4) << 2
            if doff < 20 or doff > l4_len:
                return None
        elif proto == IPPROTO_UDP:
            if l4_len < 8:
                return None
            sport, dport, udp_len, l4_csum = _UDP.unpack_from(buf, off + ihl)
            if udp_len < 8 or udp_len > l4_len or l4_csum == 0:   # 0: nat.py computes a full one
                return None
            tcp_flags = 0
        else:
            return None
        inbound = daddr in self._vips
        if inbound:
            if proto == IPPROTO_TCP and tcp_flags & _TCP_SYN_ACK_RST == _TCP_SYN:
                return None                      # may reuse a TIME_WAIT/CLOSE connection
            c = self._lookup_in(proto, saddr, sport, daddr, dport)
        else:
            c = self._lookup_out(proto, saddr, sport, daddr, dport)
        if c < 0 or self._dest[c] < 0 or self._traced[c]:
            return None
        client = (saddr, sport) if inbound else (daddr, dport)
        return (off, ihl, proto, total, tcp_flags, inbound, c, ip_csum, l4_csum,
                daddr if inbound else saddr, dport if inbound else sport, partial, client)

    def _split_ok(self, buf, plans, k: int, n: int, lengths, snaplen: int) -> bool:
        """Conditions 3 and 4 of the module docstring for frames k..n-1. For 4, only a
        frame that could open or reuse a connection counts: UDP, or TCP with SYN set."""
        t = self.engine.table
        if t.capacity - len(t) < 2 * (n - k):
            return False
        clients = {p[-1] for p in plans}
        for row in range(k, n):
            off, length = row * snaplen, lengths[row]
            if length < 20:
                continue
            vihl, _, _, proto, _, saddr, _ = _IP.unpack_from(buf, off)
            ihl = (vihl & 0x0F) << 2
            if ihl < 20 or ihl + 4 > length or proto not in (IPPROTO_TCP, IPPROTO_UDP):
                continue                          # the vector path drops or passes it
            if (saddr, _U16.unpack_from(buf, off + ihl)[0]) not in clients:
                continue
            if proto == IPPROTO_UDP or ihl + 14 > length or buf[row, ihl + 13] & _TCP_SYN:
                return False
        return True

    def _dest_views(self, svc: int) -> tuple:
        """(inpkts array, memoryviews of activeconns, inactconns, inpkts, inbytes, outpkts,
        outbytes) of service `svc`. DestTable rebinds all its columns together when a
        server is added or removed, so `inpkts` being the same array means all are."""
        dests = self.engine.services[svc].dests
        dv = (dests.inpkts, *(memoryview(getattr(dests, name)) for name in _DEST_COLUMNS))
        self._dest_cache[svc] = dv
        return dv

    def _commit(self, batch, plans, now: float, stop_on_activity: bool) -> int:
        """Advance and rewrite the planned frames in order; returns how many were done
        (fewer only when `stop_on_activity` and a frame would cross active/inactive)."""
        state, cflags, expires, dest, service = (self._state, self._flags, self._expires,
                                                  self._dest, self._service)
        dirty, control, timeouts = self._dirty, self._control, self._timeouts
        services, dest_views = self.engine.services, self._dest_cache
        buf, out_len = batch.buf, batch.length
        pack16, pack32 = _U16.pack_into, _U32.pack_into
        for done, (off, ihl, proto, total, tcp_flags, inbound, c, ip_csum, l4_csum, old_addr,
                   old_port, partial, _) in enumerate(plans):
            old = state[c]
            if proto == IPPROTO_UDP:
                new = _UDP_STATE
            else:
                new = (_IN_TABLE if inbound else _OUT_TABLE)[tcp_flags][old]
            f = cflags[c]
            was_active = not f & CONN_F_INACTIVE
            moves = _ACTIVE[new] != was_active
            if moves and stop_on_activity:
                return done
            # engine._transition for one packet: state, dirty mark, expires, ASSURED template
            state[c] = new
            if new != old:
                dirty[c] = True
            expires[c] = now + timeouts[new]
            ctl = control[c]
            if ctl >= 0 and (new == _ESTABLISHED or (proto == IPPROTO_UDP and not inbound)):
                state[ctl] = ASSURED
            # Accounting.transition: counter move with the INACTIVE flag, packets and bytes
            d = dest[c]
            svc = service[c]
            dv = dest_views.get(svc)
            if dv is None or dv[0] is not services[svc].dests.inpkts:
                dv = self._dest_views(svc)
            if moves:
                delta = -1 if was_active else 1
                cflags[c] = (f | CONN_F_INACTIVE) if was_active else (f & _ACTIVE_MASK)
                dv[1][d] += delta
                dv[2][d] -= delta
            # nat.rewrite_dst / rewrite_src; RFC 1624 eqn 3: HC' = ~(~HC + ~m + m') over the
            # changed 16-bit words: the address (IP header and, through the pseudo-header,
            # the L4 checksum) and the port (L4 only)
            if inbound:
                dv[3][d] += 1
                dv[4][d] += total
                new_addr, new_port = self._daddr[c], self._dport[c]
                addr_at, port_at = off + 16, off + ihl + 2
            else:
                dv[5][d] += 1
                dv[6][d] += total
                new_addr, new_port = self._vaddr[c], self._vport[c]
                addr_at, port_at = off + 12, off + ihl
            m = 0x1FFFE - (old_addr >> 16) - (old_addr & 0xFFFF) + (new_addr >> 16) \
                + (new_addr & 0xFFFF)
            x = 0xFFFF - ip_csum + m
            x = (x & 0xFFFF) + (x >> 16)
            pack16(buf, off + 10, 0xFFFF - ((x & 0xFFFF) + (x >> 16)))
            if partial:
                # CHECKSUM_PARTIAL: the field is the uncomplemented pseudo-header sum;
                # P' = fold(P + ~old + new) for the address, the port is not in it
                x = l4_csum + m
                x = (x & 0xFFFF) + (x >> 16)
                pack16(buf, off + ihl + (_UDP_CSUM_AT if proto == IPPROTO_UDP else _TCP_CSUM_AT),
                       (x & 0xFFFF) + (x >> 16))
                pack32(buf, addr_at, new_addr)
                pack16(buf, port_at, new_port)
                out_len[done] = total
                continue
            x = 0xFFFF - l4_csum + m + 0xFFFF - old_port + new_port
            x = (x & 0xFFFF) + (x >> 16)
            x = 0xFFFF - ((x & 0xFFFF) + (x >> 16))
            if proto == IPPROTO_UDP:
                pack16(buf, off + ihl + _UDP_CSUM_AT, x or 0xFFFF)   # RFC 768: 0 goes as all ones
            else:
                pack16(buf, off + ihl + _TCP_CSUM_AT, x)
            pack32(buf, addr_at, new_addr)
            pack16(buf, port_at, new_port)
            out_len[done] = total                    # plans are rows 0, 1, ...
        return len(plans)
