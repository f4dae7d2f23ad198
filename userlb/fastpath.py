"""Per-packet fast path: the established-flow packets of a batch, in plain Python.

What it does: FastPath.process(batch, now) takes the common case, a well-formed,
unfragmented IPv4 TCP/UDP packet of an existing, untraced connection in either
direction (client → VIP found in the IN index, real server → client in the OUT
index), and does for it exactly what Engine's vector path does, with struct and
Python ints instead of numpy column operations: parse.py's validity rules (one
struct read of a 20-byte IP header and the L4 ports, flags and checksum),
ConnTable's scalar lookups (remembered per connection with the rewrite's sums in
fastmemo.LookupMemo), the TCP state table, `expires`, the active/inactive moves and
per-server statistics (accounting.py), ASSURED templates (persist.Templates.assure),
the sync dirty mark, and nat.py's rewrite with RFC 1624 checksums, written straight
into the batch rows. Same bytes, same state, same counters;
tests/property/test_fastpath_equivalence.py holds it to that.

Rows the TUN flagged NEEDS_CSUM (offload: FrameBatch.vnet) get nat.py's
CHECKSUM_PARTIAL update of the L4 field (address delta without complement, no
port delta).

What it does not do: anything else. New connections, ICMP, malformed frames,
pure SYNs to a VIP (connection reuse), DEST_GONE, traced connections, UDP sent
without a checksum (nat.py fills one in) and misses of either index go to the
vector path, which assigns their drop reasons, schedules and traces. A batch of
both kinds is split (the longest eligible prefix here, the rest there) only where
fastsplit.py shows it equals the vector path on the whole batch; otherwise all of it
goes there. Nor does it keep what the lookups found: fastmemo.LookupMemo does.

Mirrors: the hit paths of ip_vs_in_hook / handle_response, set_tcp_state, and
ip_vs_nat_xmit's tcp/udp dnat/snat handlers, as engine.py does.
"""

from __future__ import annotations

import struct

import numpy as np

from userlb import tcpstate
from userlb.conntable import CONN_F_INACTIVE
from userlb.fastmemo import LookupMemo
from userlb.fastsplit import BACKOFF_MAX, FAST_SPLIT_MAX, split_ok
from userlb.persist import ASSURED
from userlb.services import IPPROTO_TCP, IPPROTO_UDP

FAST_BATCH_MAX = 256
"""Batches of at most this many frames try the fast path (Engine.fast_max): the TUN read
batch. From `userlb bench engine` and the same batches with each path forced (92-byte
TCP and 64-byte UDP of established flows): this path costs ~1.9-2.0 µs/packet at any
batch size from 8 up (~3.7-4 at 1), the vector path 7.5 / 4.2 / 2.6 at 64 / 128 / 256
(its fixed cost per call is a few hundred µs, its cost per extra packet ~1 µs)."""

# The common frame, a 20-byte IPv4 header and the first 18 bytes of TCP (or UDP's 8),
# in one read: the header as 16-bit words (version + IHL + TOS, total length, id, flags
# + fragment offset, TTL + protocol, checksum) and both addresses, then sport, dport,
# TCP's sequence number (UDP: length << 16 | checksum), data offset, flags, checksum.
_HDR = struct.Struct("!HHHHHHIIHHI4xBB2xH")
_HDR_BYTES = _HDR.size                  # 38: rows must be at least this wide to read it
_NAT = struct.Struct("!HIIHH")          # IP checksum, saddr, daddr, sport, dport (IHL 5)
_NAT_UDP = struct.Struct("!HIIHHHH")    # ... and UDP's length and checksum right after
_IP = struct.Struct("!BxHxxHxBHII")     # any IHL: version + IHL, total, frag, proto, csum, addrs
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


_ROW = _rows(1)


def _fold(s: int) -> int:
    """End-around carry to 16 bits; two steps suffice below 2**32 (checksum.fold32)."""
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


class FastPath:
    """The engine's scalar path; holds memoryviews of its arrays (written in place only).

    Per frame it costs one struct read of the headers, a dict probe of a lookup memo
    (or ConnTable's scalar lookup), the state and counter updates on memoryviews and
    one or two struct writes; per batch, a Verdict whose `lengths` is a view of `batch.length`
    (the rows' lengths are the datagrams' total lengths once NAT'd)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        v = engine.table.views()
        self._lookup_in, self._lookup_out = engine.table.lookup_in_one, engine.table.lookup_out_one
        self._state, self._flags, self._expires = v["state"], v["flags"], v["expires"]
        self._dest, self._service = v["dest"], v["service"]
        # lookups and rewrite sums per live connection; its dicts are bound once, below
        self.memo = memo = LookupMemo(v)
        self._remember, self._remember_out = memo.remember_in, memo.remember_out
        self._valid_out_hits, self._nat_of = memo.valid_out_hits, memo.nat_of
        self.split_max = FAST_SPLIT_MAX
        self._skip = self._backoff = 0     # large batches to leave to the vector path; next
                                           # time (FAST_SPLIT_MAX)
        self._dirty = memoryview(engine.dirty)
        self._traced = memoryview(engine.traced)
        self._control = memoryview(engine.templates.control)
        self._index = self._vips = None
        self._dest_cache: dict[int, tuple] = {}
        self._timeout_src = self._timeouts = None
        from userlb.engine import Verdict        # engine.py imports this module
        self._verdict = Verdict
        # what the two loops of process() use, bound in one load each (the arrays behind
        # the views and the dicts are never rebound)
        self._plan_refs = (_HDR.unpack_from, memo.in_hits, memo.nat_out, self._dest,
                           self._traced)
        self._commit_refs = (self._state, self._flags, self._expires, self._dest, self._service,
                             self._dirty, self._control, self._dest_cache, _NAT.pack_into,
                             _NAT_UDP.pack_into, _U16.pack_into, _U32.pack_into)

    def process(self, batch, now: float):
        """The whole batch's Verdict, from this path alone or with the vector path on a tail.

        One method with two loops, the plans (parse and look up the longest eligible
        prefix, reads only) and the commit (advance and rewrite), so that the names the
        loops use are bound once per batch. FrameBatch rows are C-contiguous, so struct
        reads the frame at row * snaplen.

        A plan is (off, ihl, proto, total, tcp_flags, inbound, conn, ip_csum, l4_csum,
        saddr, daddr, sport, dport, partial, length, nat, udp_len); `partial`: the TUN
        flagged the row NEEDS_CSUM (offload; nat.py's CHECKSUM_PARTIAL rule); `nat`: see
        LookupMemo.nat_of. The checks are parse.py's for rows that come out OK as
        TCP/UDP, on the one read of _HDR: IPv4 with a 20-byte header (others go field
        by field through _plan_any) whose header words sum to 0 modulo 0xFFFF (RFC 1071
        verify: 2**16 = 1 modulo 0xFFFF, so each 32-bit address counts as its two
        halves; with version 4 the sum is never 0)."""
        eng = self.engine
        n = batch.count
        whole = n > self.split_max
        if whole and self._skip:
            self._skip -= 1
            return eng.process_vector(batch, now)
        if eng.index is not self._index or eng.timeout_of is not self._timeout_src:
            self._refresh()
        buf, out_len, vnet = batch.buf, batch.length, batch.vnet
        snaplen = buf.shape[1]
        if n == 1:                                     # item() is cheaper than a slice
            lengths = [out_len.item(0)]
            partial = [0] if vnet is None else [vnet.item(0, 0)]
        else:
            lengths = out_len[:n].tolist()
            partial = [0] * n if vnet is None else vnet[:n, 0].tolist()   # & 1: NEEDS_CSUM
        plans = []
        if snaplen < _HDR_BYTES:
            self._plans_any(plans, buf, n, snaplen, lengths, partial)
        else:
            hdr, in_hits, nat_out, dest, traced = self._plan_refs
            vips, out_hits = self._vips, None
            for row in range(n):
                off = row * snaplen
                length = lengths[row]
                (w0, total, ident, frag, w4, ip_csum, saddr, daddr, sport, dport, seq, doff,
                 tcp_flags, l4_csum) = hdr(buf, off)
                if w0 >> 8 != 0x45:                    # not IPv4, or IP options
                    p = self._plan_any(buf, off, length, snaplen, partial[row] & 1)
                    if p is None:
                        break
                    plans.append(p)
                    continue
                if total < 20 or total > length or length >= snaplen or frag & _FRAG_BITS \
                        or (w0 + total + ident + frag + w4 + ip_csum + saddr + daddr) % 0xFFFF:
                    break
                proto = w4 & 0xFF
                if proto == IPPROTO_TCP:
                    if total < 40 or doff < 0x50 or (doff >> 4) << 2 > total - 20:
                        break
                    if daddr in vips:
                        if tcp_flags & _TCP_SYN_ACK_RST == _TCP_SYN:
                            break                      # may reuse a TIME_WAIT/CLOSE connection
                        inbound = True
                    else:
                        inbound = False
                elif proto == IPPROTO_UDP:
                    l4_csum = seq & 0xFFFF             # seq: UDP length << 16 | checksum
                    if total < 28 or seq < 0x80000 or seq >> 16 > total - 20 or not l4_csum:
                        break                          # csum 0: nat.py computes a full one
                    tcp_flags = 0
                    inbound = daddr in vips
                else:
                    break
                key = (proto, saddr, sport, daddr, dport)
                if inbound:                            # ConnTable.lookup_in_one, memoised
                    hit = in_hits.get(key)
                    if hit is None:
                        hit = self._remember(key, self._lookup_in(proto, saddr, sport, daddr,
                                                                  dport))
                        if hit is None:
                            break
                    c, nat = hit
                else:                                  # ConnTable.lookup_out_one, memoised
                    if out_hits is None:
                        out_hits = self._valid_out_hits(len(eng.table) + eng.removed)
                    c = out_hits.get(key)
                    if c is None:
                        c = self._remember_out(key, self._lookup_out(proto, saddr, sport, daddr,
                                                                     dport))
                        if c < 0:
                            break
                    nat = nat_out.get(c) or self._nat_of(c, False)
                if dest[c] < 0 or traced[c]:
                    break
                plans.append((off, 20, proto, total, tcp_flags, inbound, c, ip_csum, l4_csum,
                              saddr, daddr, sport, dport, partial[row] & 1, length, nat,
                              seq >> 16))
        k = len(plans)
        if k < n and (k == 0 or whole or not split_ok(
                eng.table, batch, {(p[9], p[11]) if p[5] else (p[10], p[12]) for p in plans},
                k, n)):
            if whole:
                self._skip = self._backoff = min(2 * self._backoff or 1, BACKOFF_MAX)
            return eng.process_vector(batch, now)
        if whole:
            self._backoff = 0
        (state, cflags, expires, dest, service, dirty, control, dest_views, pack_nat, pack_udp,
         pack16, pack32) = self._commit_refs
        timeouts, services = self._timeouts, eng.services
        svc_now = -1                              # the service whose DestTable views are bound
        done = 0
        for (off, ihl, proto, total, tcp_flags, inbound, c, ip_csum, l4_csum, saddr,
             daddr, sport, dport, partial, length, (new_addr, new_port, m, m_l4),
             udp_len) in plans:
            old = state[c]
            if proto == IPPROTO_UDP:
                new = _UDP_STATE
            else:
                new = (_IN_TABLE if inbound else _OUT_TABLE)[tcp_flags][old]
            f = cflags[c]
            was_active = not f & CONN_F_INACTIVE
            moves = _ACTIVE[new] != was_active
            if moves and k < n:
                break          # fastsplit's condition 2: the rest goes to the vector path
            # engine._advance for one packet: state, dirty mark, expires, ASSURED template
            state[c] = new
            if new != old:
                dirty[c] = True
            expires[c] = now + timeouts[new]
            ctl = control[c]
            if ctl >= 0 and (new == _ESTABLISHED or (proto == IPPROTO_UDP and not inbound)):
                state[ctl] = ASSURED
            # Accounting.transition: counter move with the INACTIVE flag, packets and bytes.
            # Nothing in a batch rebinds a DestTable, so a service's views are checked once.
            d = dest[c]
            svc = service[c]
            if svc != svc_now:
                dv = dest_views.get(svc)
                if dv is None or dv[0] is not services[svc].dests.inpkts:
                    dv = self._dest_views(svc)
                _, active, inactive, inpkts, inbytes, outpkts, outbytes = dv
                svc_now = svc
            if moves:
                delta = -1 if was_active else 1
                cflags[c] = (f | CONN_F_INACTIVE) if was_active else (f & _ACTIVE_MASK)
                active[d] += delta
                inactive[d] -= delta
            # nat.rewrite_dst / rewrite_src with the sums of LookupMemo.nat_of
            if inbound:
                inpkts[d] += 1
                inbytes[d] += total
                daddr, dport = new_addr, new_port
            else:
                outpkts[d] += 1
                outbytes[d] += total
                saddr, sport = new_addr, new_port
            x = 0xFFFF - ip_csum + m
            x = (x & 0xFFFF) + (x >> 16)
            ip_csum = 0xFFFF - ((x & 0xFFFF) + (x >> 16))
            if partial:
                # CHECKSUM_PARTIAL: the field is the uncomplemented pseudo-header sum;
                # P' = fold(P + ~old + new) for the address, the port is not in it
                x = l4_csum + m
                x = (x & 0xFFFF) + (x >> 16)
                l4_csum = (x & 0xFFFF) + (x >> 16)
            else:
                x = 0xFFFF - l4_csum + m_l4
                x = (x & 0xFFFF) + (x >> 16)
                l4_csum = 0xFFFF - ((x & 0xFFFF) + (x >> 16))
                if not l4_csum and proto == IPPROTO_UDP:
                    l4_csum = 0xFFFF             # RFC 768: 0 goes as all ones
            if ihl != 20:
                pack16(buf, off + 10, ip_csum)
                pack32(buf, off + 12, saddr)
                pack32(buf, off + 16, daddr)
                pack16(buf, off + ihl, sport)
                pack16(buf, off + ihl + 2, dport)
                pack16(buf, off + ihl + (_UDP_CSUM_AT if proto == IPPROTO_UDP else _TCP_CSUM_AT),
                       l4_csum)
            elif proto == IPPROTO_UDP:           # checksum, addresses, ports ... are adjacent
                pack_udp(buf, off + 10, ip_csum, saddr, daddr, sport, dport, udp_len, l4_csum)
            else:
                pack_nat(buf, off + 10, ip_csum, saddr, daddr, sport, dport)
                pack16(buf, off + 20 + _TCP_CSUM_AT, l4_csum)
            if total != length:
                out_len[done] = total            # plans are rows 0, 1, ...
            done += 1
        if done == n:                 # every row's length is its datagram's total length
            return self._verdict(_ROW if n == 1 else _rows(n), out_len[:n], [])
        if done == 0:
            return eng.process_vector(batch, now)
        rest = eng.process_vector(batch.tail(done), now)
        return self._verdict(np.concatenate([_rows(done), rest.rows + done]),
                             np.concatenate([out_len[:done].astype(np.int64), rest.lengths]),
                             rest.extra)

    def _refresh(self) -> None:
        """Re-derive the VIP set and timeouts when control swapped the engine's objects."""
        eng = self.engine
        if eng.index is not self._index:
            self._index, self._vips = eng.index, frozenset(eng.index.vips.tolist())
        if eng.timeout_of is not self._timeout_src:
            self._timeout_src, self._timeouts = eng.timeout_of, eng.timeout_of.tolist()

    def _plans_any(self, plans, buf, n: int, snaplen: int, lengths, partial) -> None:
        """The plans of rows too narrow for _HDR, field by field."""
        for row in range(n):
            p = self._plan_any(buf, row * snaplen, lengths[row], snaplen, partial[row] & 1)
            if p is None:
                break
            plans.append(p)

    def _plan_any(self, buf, off: int, length: int, snaplen: int, partial: int):
        """One frame's plan (see process), read field by field; None unless eligible."""
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
            udp_len = 0
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
        return (off, ihl, proto, total, tcp_flags, inbound, c, ip_csum, l4_csum, saddr, daddr,
                sport, dport, partial, length, self._nat_of(c, inbound), udp_len)

    def _dest_views(self, svc: int) -> tuple:
        """(inpkts array, memoryviews of activeconns, inactconns, inpkts, inbytes, outpkts,
        outbytes) of service `svc`. DestTable rebinds all its columns together when a
        server is added or removed, so `inpkts` being the same array means all are."""
        dests = self.engine.services[svc].dests
        dv = (dests.inpkts, *(memoryview(getattr(dests, name)) for name in _DEST_COLUMNS))
        self._dest_cache[svc] = dv
        return dv

