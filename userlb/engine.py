"""The sans-I/O packet engine: a batch of frames in, NAT'd frames and drops out.

Engine.process(batch, now) mirrors IPVS's NAT path (ip_vs_in_hook,
handle_response, ip_vs_nat_xmit; spec/ipvs.md §3): parse, classify, look
connections up (in: client → VIP; out: real server → client), schedule new
flows through the scheduler plug-in, advance IPVS's TCP/UDP state machine with
the active/inactive counters, rewrite addresses, ports and checksums, and
handle ICMP errors about NAT'd connections. Every frame ends either in the
write list or counted under a DropReason; nothing in here raises on packet
data, reads a clock or touches a socket. Counter bookkeeping lives in
accounting.py, ICMP in related.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from userlb import icmp, nat, tcpstate
from userlb.accounting import Accounting
from userlb.classify import ServiceIndex
from userlb.conntable import ConnTable
from userlb.drops import DropReason
from userlb.fastpath import FAST_BATCH_MAX, FastPath
from userlb.frames import VNET_F_NEEDS_CSUM, FrameBatch
from userlb.parse import Headers, parse_ipv4
from userlb.persist import Templates
from userlb.related import handle_icmp
from userlb.runtime import ServiceRuntime, build_runtimes
from userlb.sched import NO_DEST, Flow, FlowBatch
from userlb.services import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, VirtualService
from userlb import trace
from userlb.trace import FlowTrace

TCP_SYN, TCP_RST, TCP_ACK = 0x02, 0x04, 0x10
CONN_F_INACTIVE = 0x0100
MAX_ICMP_PER_BATCH = 16
EMBRYONIC = (tcpstate.SYN_RECV, tcpstate.NONE)
CLOSING = (tcpstate.CLOSE, tcpstate.TIME_WAIT, tcpstate.LAST_ACK, tcpstate.CLOSE_WAIT,
           tcpstate.FIN_WAIT, tcpstate.SYNACK, tcpstate.SYN_SENT, tcpstate.LISTEN)


@dataclass
class Verdict:
    """What to write back: rows of the batch (in arrival order) and originated frames.

    `lengths` (bytes per row) may be a view of the batch's own `length` column: like the
    rows' bytes, a Verdict holds until the batch is refilled."""

    rows: np.ndarray
    lengths: np.ndarray
    extra: list[bytes] = field(default_factory=list)


def _first_of_each(h: Headers, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `rows` of each distinct 5-tuple's first frame, in arrival order, and
    for every row the index of its tuple among them. A dict over the few new flows of a
    batch: np.unique(axis=0) costs tens of µs even for one row."""
    if len(rows) == 1:
        zero = np.zeros(1, np.intp)
        return zero, zero
    seen: dict[tuple, int] = {}
    firsts: list[int] = []
    inverse: list[int] = []
    for i, key in enumerate(zip(h.proto[rows].tolist(), h.saddr[rows].tolist(),
                                h.sport[rows].tolist(), h.daddr[rows].tolist(),
                                h.dport[rows].tolist())):
        j = seen.get(key)
        if j is None:
            j = seen[key] = len(firsts)
            firsts.append(i)
        inverse.append(j)
    return np.array(firsts, np.intp), np.array(inverse, np.intp)


class Engine:
    """Connection table + services + schedulers; see the module docstring."""

    def __init__(self, services: list[VirtualService] | tuple[VirtualService, ...],
                 table_size: int = 65536, timeouts: tcpstate.Timeouts | None = None,
                 trace_connections: int = 0) -> None:
        self.services: list[ServiceRuntime] = build_runtimes(services)
        self.index = ServiceIndex([s.config for s in self.services])
        self.table = ConnTable(table_size)
        self.timeouts = timeouts or tcpstate.Timeouts()
        self.timeout_of = self.timeouts.as_array()
        self.acct = Accounting(self.services, self.table)
        self.drops = np.zeros(len(DropReason), np.int64)
        self.passed = 0            # frames forwarded unmodified (not ours, as the kernel does)
        self.removed = 0           # entries removed so far: len(table) + removed counts inserts
        self.trace = FlowTrace()
        self.trace_budget = trace_connections
        self.trace_filter: dict | None = None      # {"client"|"vip"|"server": u32}
        self._pre_schedule: dict = {}              # service → its DestTable before this batch
        self._steps: dict = {}                     # traced conn → [(old, new, timeout_s)]
        self.traced = np.zeros(self.table.capacity, bool)
        self.dirty = np.zeros(self.table.capacity, bool)   # created or changed state (for sync)
        self.templates = Templates(self.table)
        self.fast_max = FAST_BATCH_MAX   # batches up to this size try fastpath.py first
        self.fast = FastPath(self)

    # -- the packet path --------------------------------------------------------------
    def process(self, batch: FrameBatch, now: float) -> Verdict:
        """Established flows per packet in Python (fastpath.py), the rest here; the two
        give the same bytes and state (numpy costs a few hundred µs per batch here, so it
        pays only when a batch holds frames the fast path defers)."""
        if 0 < batch.count <= self.fast_max:
            return self.fast.process(batch, now)
        return self.process_vector(batch, now)

    def process_vector(self, batch: FrameBatch, now: float) -> Verdict:
        """The whole batch with numpy column operations (the reference path)."""
        n = batch.count
        h = parse_ipv4(batch)
        drop = h.drop.copy()
        conn = np.full(n, -1, np.int64)
        inbound = np.zeros(n, bool)
        l4 = (drop == 0) & ((h.proto == IPPROTO_TCP) | (h.proto == IPPROTO_UDP))
        to_vip = l4 & self.index.is_vip(h.daddr)
        extra: list[bytes] = []
        if to_vip.any():
            self._inbound(batch, h, np.flatnonzero(to_vip), now, drop, conn, extra)
            inbound[to_vip] = True
        rest = np.flatnonzero(l4 & ~to_vip)
        if len(rest):
            ids = self.table.lookup_out(h.proto[rest], h.saddr[rest], h.sport[rest],
                                        h.daddr[rest], h.dport[rest])
            conn[rest] = ids
        live = np.flatnonzero(conn >= 0)
        traced = live[self.traced[conn[live]]] if self.trace_budget >= 0 else live[:0]
        before = {int(r): batch.frame(int(r)) for r in traced}
        self._steps = {}
        if len(live):
            self._advance(h, live, conn[live], inbound[live], now)
            self._nat(batch, h, live, conn[live], inbound[live], drop)
        icmp_rows = np.flatnonzero((drop == 0) & (h.proto == IPPROTO_ICMP))
        for row in icmp_rows.tolist():
            drop[row] = handle_icmp(self, batch, h, row, now)
        for row in traced.tolist():
            if drop[row] == 0:
                steps = self._steps.get(int(conn[row])) or [None]
                step = steps.pop(0)
                note = {} if step is None else dict(zip(("state_before", "state_after",
                                                         "timeout_s"), step))
                if batch.vnet is not None and batch.vnet[row, 0] & VNET_F_NEEDS_CSUM:
                    note["l4_csum_partial"] = True     # the field holds the pseudo-header sum
                self.trace.record(int(conn[row]), "in" if inbound[row] else "out", now,
                                  before[row], batch.frame(row)[: h.total_len[row]], note)
        self.passed += int(((drop == 0) & (conn < 0) & ~inbound & l4).sum())
        counted = np.bincount(drop, minlength=len(self.drops))[: len(self.drops)]
        counted[DropReason.OK] = 0
        self.drops += counted
        rows = np.flatnonzero(drop == 0)
        return Verdict(rows, h.total_len[rows].astype(np.int64), extra)

    def _inbound(self, batch, h: Headers, rows, now, drop, conn, extra) -> None:
        """Packets to a VIP: the connection first (as ip_vs_in_hook: conn_in_get), the
        service only for misses (conn_schedule), so connections outlive a deleted service."""
        ids = self.table.lookup_in(h.proto[rows], h.saddr[rows], h.sport[rows], h.daddr[rows],
                                   h.dport[rows]).astype(np.int64)
        flags = h.tcp_flags[rows]
        is_tcp = h.proto[rows] == IPPROTO_TCP
        opens = ~is_tcp | (((flags & TCP_SYN) != 0) & ((flags & TCP_RST) == 0))
        self._reuse(ids, is_tcp, flags)
        miss = ids < 0
        svc = np.full(len(rows), -1, np.int32)
        if miss.any():
            r = rows[miss]
            svc[miss] = self.index.lookup(h.proto[r], h.daddr[r], h.dport[r])
        unserved = miss & (svc < 0)
        drop[rows[unserved]] = DropReason.NO_SERVICE
        new = miss & opens & ~unserved
        later = miss & ~opens & ~unserved
        if new.any():
            ids[new] = self._open(batch, h, rows[new], svc[new], now, drop, extra)
            if later.any():   # e.g. the handshake's ACK in the same batch as its SYN
                r = rows[later]
                ids[later] = self.table.lookup_in(h.proto[r], h.saddr[r], h.sport[r],
                                                  h.daddr[r], h.dport[r])
        drop[rows[later & (ids < 0)]] = DropReason.NO_CONNECTION
        conn[rows] = ids

    def _reuse(self, ids, is_tcp, flags) -> None:
        """conn_reuse_mode=1: a SYN (no ACK) on an uncontrolled TIME_WAIT/CLOSE connection
        expires it and is scheduled afresh [core: is_new_conn_expected]."""
        syn = is_tcp & ((flags & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_SYN) & (ids >= 0)
        if not syn.any():
            return
        old = ids[syn]
        state = self.table.state[old]
        uncontrolled = self.templates.control[old] < 0     # persistent ones are reused as is
        stale = old[((state == tcpstate.TIME_WAIT) | (state == tcpstate.CLOSE)) & uncontrolled]
        if len(stale):
            self.remove_ids(np.unique(stale))
            ids[np.isin(ids, stale)] = -1

    def _open(self, batch, h: Headers, rows, svc, now, drop, extra) -> np.ndarray:
        """Schedule and insert the new flows among `rows`; returns a conn id per row."""
        firsts, inverse = _first_of_each(h, rows)   # schedule in arrival order
        dest = np.full(len(firsts), NO_DEST, np.int64)
        ids = np.full(len(firsts), -1, np.int64)
        fr, fsvc = rows[firsts], svc[firsts]
        persistent = np.array([self.services[s].config.persistent_s > 0 for s in fsvc.tolist()],
                              bool)
        for s in np.unique(fsvc[~persistent]).tolist():
            pick = (fsvc == s) & ~persistent
            r = fr[pick]
            flows = FlowBatch(h.proto[r], h.saddr[r], h.sport[r], h.daddr[r], h.dport[r])
            rt = self.services[s]
            if self.trace_budget > 0:
                self._pre_schedule[s] = rt.dests.copy()
            dest[pick] = rt.scheduler.schedule_batch(rt.dests, flows, now)
        ok = (dest != NO_DEST) & ~persistent
        if ok.any():
            ids[ok] = self._insert(h, fr[ok], fsvc[ok], dest[ok], now)
        for i in np.flatnonzero(persistent).tolist():   # one at a time: each sees the last
            dest[i], ids[i] = self._open_persistent(h, int(fr[i]), int(fsvc[i]), now)
        ok = dest != NO_DEST
        for r in fr[~ok][:MAX_ICMP_PER_BATCH].tolist():
            extra.append(icmp.build_dest_unreachable(batch.frame(r)[: h.total_len[r]],
                                                     int(h.daddr[r])))
        per_row = ids[inverse]
        drop[rows[(per_row < 0) & ~ok[inverse]]] = DropReason.NO_DEST
        drop[rows[(per_row < 0) & ok[inverse]]] = DropReason.TABLE_FULL
        return per_row

    def _open_persistent(self, h: Headers, row: int, svc: int, now: float) -> tuple[int, int]:
        flow = Flow(int(h.proto[row]), int(h.saddr[row]), int(h.sport[row]), int(h.daddr[row]),
                    int(h.dport[row]))
        dest, tid = self.templates.pick(self, svc, flow, now)
        if dest == NO_DEST:
            return NO_DEST, -1
        keep = self.templates.keeps_client_port(self, svc, flow.dport)
        ids = self._insert(h, np.array([row]), np.array([svc]), np.array([dest]), now, keep)
        self.templates.attach(ids[ids >= 0], np.full(int((ids >= 0).sum()), tid))
        return dest, int(ids[0])

    def _insert(self, h: Headers, rows, svc, dest, now, keep_client_port=False) -> np.ndarray:
        d_addr = np.empty(len(rows), np.uint32)
        d_port = np.empty(len(rows), np.uint16)
        for s in np.unique(svc).tolist():
            m = svc == s
            dt = self.services[s].dests
            d_addr[m] = dt.addr[dest[m]]
            # the connection's port is the server's, or the packet's when it is 0 [core]
            use_rs = (dt.port[dest[m]] != 0) & (not keep_client_port)
            d_port[m] = np.where(use_rs, dt.port[dest[m]], h.dport[rows[m]])
        self._retire_shadowed(h.proto[rows], d_addr, d_port, h.saddr[rows], h.sport[rows])
        self.make_room(len(rows), now)
        ids = self.table.insert(
            h.proto[rows], h.saddr[rows], h.sport[rows], h.daddr[rows], h.dport[rows], d_addr,
            d_port, svc.astype(np.int32), dest.astype(np.int32),
            np.full(len(rows), tcpstate.NONE, np.uint8),
            np.full(len(rows), CONN_F_INACTIVE, np.uint16),
            np.full(len(rows), now + tcpstate.INITIAL_TIMEOUT_S)).astype(np.int64)
        made = ids >= 0
        self.templates.attach(ids[made], np.full(int(made.sum()), -1))
        self.acct.bind(ids[made])
        self.dirty[ids[made]] = True
        if self.trace_budget > 0 and made.any():
            self._trace_new(ids[made])
        self._pre_schedule.clear()
        return ids

    def _trace_new(self, ids: np.ndarray) -> None:
        """Mark new connections matching the trace filter, noting the scheduler's view."""
        t = self.table
        for cid in ids.tolist():
            if self.trace_budget <= 0:
                return
            if not trace.matches(self.trace_filter, int(t.caddr[cid]), int(t.vaddr[cid]),
                                 int(t.daddr[cid])):
                continue
            s = int(t.service[cid])
            rt = self.services[s]
            self.trace.decisions[cid] = trace.scheduler_view(
                rt.config, self._pre_schedule.get(s, rt.dests), int(t.dest[cid]))
            self.traced[cid] = True
            self.trace_budget -= 1

    def _retire_shadowed(self, proto, daddr, dport, caddr, cport) -> None:
        """A new connection reuses the real server's 4-tuple (client:port → server:port) of a
        finished one, e.g. of another service on the same server: the old entry would
        catch the new one's replies in the outbound lookup, so it goes (as conn reuse)."""
        for _ in range(4):
            ids = self.table.lookup_out(proto, daddr, dport, caddr, cport).astype(np.int64)
            ids = ids[ids >= 0]
            state = self.table.state[ids]
            stale = ids[((state == tcpstate.TIME_WAIT) | (state == tcpstate.CLOSE))
                        & (self.templates.control[ids] < 0)]
            if not len(stale):
                return
            self.remove_ids(np.unique(stale))

    def make_room(self, wanted: int, now: float) -> None:
        """Expire what is due; then evict embryonic, then closing entries (never ESTABLISHED)."""
        if self.table.capacity - len(self.table) >= wanted:
            return
        self.expire(now)
        for states in (EMBRYONIC, CLOSING):
            short = wanted - (self.table.capacity - len(self.table))
            if short <= 0:
                return
            victims = self.table.victims(max(short, self.table.capacity // 64), states)
            victims = victims[~self.templates.is_template(victims)]
            if len(victims):
                self.remove_ids(victims)

    def _advance(self, h: Headers, rows, ids, inbound, now) -> None:
        """State transitions in arrival order, with the outcome of taking the packets one
        at a time. Only the states need a round per repeat of a connection (one seen k
        times takes k rounds of one gather); the rest follows from the rounds at once:
        the dirty mark (any change), the timer (the last state's), ASSURED templates (any
        hit), the active/inactive counters (the moves of the rounds telescope to the
        first and last activity) and the packet and byte counts (sums)."""
        table = self.table
        is_tcp = h.proto[rows] == IPPROTO_TCP
        direction = np.where(inbound, tcpstate.DIR_INPUT, tcpstate.DIR_OUTPUT)
        flags = h.tcp_flags[rows]
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        repeat = sorted_ids[1:] == sorted_ids[:-1]
        if not repeat.any():                       # each connection once: one round
            old = table.state[ids]
            new = np.where(is_tcp, tcpstate.next_state(old, direction, flags),
                           tcpstate.UDP).astype(np.uint8)
            table.state[ids] = new
            conns = ids
        else:
            starts = np.r_[0, np.flatnonzero(~repeat) + 1]
            rank = np.empty(len(ids), np.int64)
            rank[order] = np.arange(len(ids)) - np.repeat(starts, np.diff(np.r_[starts, len(ids)]))
            old = np.empty(len(ids), np.uint8)
            new = np.empty(len(ids), np.uint8)
            for k in range(int(rank.max()) + 1):
                sel = np.flatnonzero(rank == k)
                cid = ids[sel]
                old[sel] = before = table.state[cid]
                new[sel] = after = np.where(is_tcp[sel], tcpstate.next_state(
                    before, direction[sel], flags[sel]), tcpstate.UDP).astype(np.uint8)
                table.state[cid] = after
            conns = sorted_ids[starts]
        final = table.state[conns]
        self.dirty[ids[new != old]] = True
        table.expires[conns] = now + self.timeout_of[final]
        self.templates.assure(ids, new, inbound, ~is_tcp)
        self.acct.move(conns, final)
        self.acct.count(ids, inbound, h.total_len[rows])
        for i in np.flatnonzero(self.traced[ids]).tolist():     # in arrival order
            self._steps.setdefault(int(ids[i]), []).append(
                (tcpstate.STATE_NAMES[old[i]], tcpstate.STATE_NAMES[new[i]],
                 float(self.timeout_of[new[i]])))

    def _nat(self, batch, h: Headers, rows, ids, inbound, drop) -> None:
        dest = self.table.dest[ids]
        gone = dest < 0
        drop[rows[gone]] = DropReason.DEST_GONE
        rows, ids, inbound = rows[~gone], ids[~gone], inbound[~gone]
        if len(rows):                          # DNAT to the server, SNAT back to the VIP
            t = self.table
            nat.rewrite(batch, rows, h, inbound, np.where(inbound, t.daddr[ids], t.vaddr[ids]),
                        np.where(inbound, t.dport[ids], t.vport[ids]))

    # -- timers -----------------------------------------------------------------------
    def next_deadline(self) -> float:
        return self.table.next_deadline()

    def expire(self, now: float) -> int:
        due = self.table.expired(now)
        template = self.templates.is_template(due)
        conns = due[~template]           # connections first: they free their templates
        if len(conns):
            self.remove_ids(conns)
        templates = self.templates.split_due(due[template], now)
        if len(templates):
            self.remove_ids(templates)
        return len(conns) + len(templates)

    def remove_ids(self, ids: np.ndarray) -> None:
        """Unbind and delete entries (connections or templates). The only way entries leave
        the table (ConnTable removes nothing on its own): fastmemo's LookupMemo relies on it."""
        ids = np.asarray(ids, np.int64)
        self.fast.memo.forget(ids)
        self.acct.unbind(ids)
        self.templates.on_remove(ids)
        self.traced[ids] = False
        live = len(self.table)
        self.table.remove(ids)
        self.removed += live - len(self.table)

    # -- control ----------------------------------------------------------------------
    def service_of(self, protocol: str, vip: str, port: int) -> int:
        for i, rt in enumerate(self.services):
            c = rt.config if rt is not None else None
            if c is not None and (c.protocol, c.vip, c.port) == (protocol, vip, port):
                return i
        raise KeyError(f"no service {protocol} {vip}:{port}")

    def edit_dest(self, service: int, address: str, port: int, weight: int | None,
                  u_threshold: int | None = None, l_threshold: int | None = None) -> None:
        """Change a real server's weight (0 quiesces: no new flows, existing ones drain) and
        thresholds, as ipvsadm -e; None leaves a value as it is."""
        rt = self.services[service]
        row = rt.find(address, port)
        rt.dests.edit(row, weight=weight, u_threshold=u_threshold, l_threshold=l_threshold)
        rt.scheduler.dests_changed(rt.dests)

    def drop_counts(self) -> dict[str, int]:
        return {r.name.lower(): int(self.drops[r]) for r in DropReason if r and self.drops[r]}
