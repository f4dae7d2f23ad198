"""The connection table: a bounded struct of numpy arrays with two hash indexes.

What it does: stores up to ``capacity`` connection entries as columns (one
array per field, indexed by entry id) and finds them a batch at a time by their
IN key (proto, caddr, cport, vaddr, vport), as ``ip_vs_conn_in_get`` does for
client→VIP packets, or by their OUT key (proto, daddr, dport, caddr, cport), as
``ip_vs_conn_out_get`` does for NAT replies from a real server
(spec/ipvs.md §3.1-§3.2). It inserts and removes batches, lists expired entries,
and picks eviction victims.

What it does not do: it never decides. It runs no state machine (tcpstate.py),
moves no active/inactive counters and removes nothing on its own: the engine
asks ``expired(now)``, unbinds the counters, then calls ``remove``. The engine
may write the value columns (``state``, ``flags``, ``expires``, ``dest``,
``in_pkts``) of live entries in place; the key columns must not change while an
entry is live, since the indexes hash them.

Design.
- Entry ids come from a free-id stack, so which id an entry gets depends only on
  the order of inserts and removes (smallest freed id first), never on hashing.
- Each index is an int32 array of 2^k >= 2 x capacity slots holding an entry id,
  EMPTY or TOMB, probed linearly. The hash is a keyed splitmix64 mix of the key
  packed into two 64-bit words, with a random seed per table, as the kernel seeds
  jhash with random bytes (ip_vs_conn_init) so clients cannot choose collisions.
- Lookups advance all unresolved keys of a batch one slot per round; a round is a
  gather and a few compares over the keys still unresolved. A key stops at a
  match or an EMPTY slot, and after ``max_probe + 1`` rounds at most, where
  ``max_probe`` is the longest displacement placed since the last rebuild.
- Inserts claim slots in rounds: every pending key looks at its next slot, and
  each free slot (EMPTY or TOMB) goes to the first key in batch order that wants
  it (np.unique return_index).
- Deletion writes TOMB into both indexes, found through each entry's stored
  ``in_slot``/``out_slot``: one scatter per batch, however many entries expire
  at once. Backward-shift deletion would keep probe chains short with no
  rebuilds, but it moves entries one cluster at a time, a sequential loop that
  does not vectorise. Tombstones are reused by inserts; when used + tombstone
  slots would pass 3/4 of an index, that index is rebuilt from the live entries
  with the same batch placement. A rebuild follows at least capacity/2 removals,
  so its O(capacity) cost is amortised O(1) per connection.
- Memory per entry: 43 bytes of columns + 8 (slot positions) + 4 (free stack) +
  2 x 4 x (slots / capacity) for the indexes: about 72 bytes at 1,000,000.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

# include/uapi/linux/ip_vs.h connection flags used here.
CONN_F_MASQ = 0x0000
CONN_F_INACTIVE = 0x0100
CONN_F_TEMPLATE = 0x1000

EMPTY = -1
TOMB = -2
_FILL_NUM, _FILL_DEN = 3, 4  # rebuild an index before its used + TOMB slots pass 3/4

_U32 = np.uint64(32)
_U16 = np.uint64(16)
# splitmix64 finaliser (Steele, Lea, Flood, "Fast splittable PRNGs", OOPSLA 2014).
_S1, _S2, _S3 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    x = x ^ (x >> _S1)
    x = x * _M1
    x = x ^ (x >> _S2)
    x = x * _M2
    return x ^ (x >> _S3)


def key_hash(addr_a: ArrayLike, addr_b: ArrayLike, proto: ArrayLike, port_a: ArrayLike,
             port_b: ArrayLike, seed: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Keyed 64-bit hash of (two addresses, protocol, two ports), vectorised."""
    hi = (np.asarray(addr_a, np.uint64) << _U32) | np.asarray(addr_b, np.uint64)
    lo = ((np.asarray(proto, np.uint64) << _U32) | (np.asarray(port_a, np.uint64) << _U16)
          | np.asarray(port_b, np.uint64))
    return _mix64(_mix64(hi ^ seed[0]) ^ lo ^ seed[1])


class _Index:
    """One open-addressing index: slot → entry id, EMPTY or TOMB; linear probing."""

    def __init__(self, nslots: int) -> None:
        self.slots = np.full(nslots, EMPTY, dtype=np.int32)
        self.mask = nslots - 1
        self.filled = 0      # slots that are not EMPTY (live ids + TOMB)
        self.max_probe = 0   # longest displacement placed since the last clear

    def clear(self) -> None:
        self.slots.fill(EMPTY)
        self.filled = 0
        self.max_probe = 0

    def find(self, home: NDArray[np.int64], match) -> NDArray[np.int32]:
        """Id per key (-1 = none): ``match(ids, rows)`` says whether entry ids[i] has key rows[i]."""
        out = np.full(home.size, -1, dtype=np.int32)
        rows = np.arange(home.size)
        slot = home
        for _ in range(self.max_probe + 1):
            if rows.size == 0:
                break
            ids = self.slots[slot]
            hit = np.zeros(rows.size, dtype=bool)
            cand = np.flatnonzero(ids >= 0)
            if cand.size:
                hit[cand] = match(ids[cand], rows[cand])
            out[rows[hit]] = ids[hit]
            go_on = ~hit & (ids != EMPTY)  # a TOMB does not end a probe chain
            rows, slot = rows[go_on], (slot[go_on] + 1) & self.mask
        return out

    def place(self, home: NDArray[np.int64], ids: NDArray[np.int32]) -> NDArray[np.int64]:
        """Put ids in their first free slot from home; returns the slot of each."""
        where = np.empty(ids.size, dtype=np.int64)
        rows = np.arange(ids.size)
        slot = home
        probe = 0
        while rows.size:
            current = self.slots[slot]
            free = np.flatnonzero(current < 0)
            if free.size:
                _, first = np.unique(slot[free], return_index=True)
                won = free[first]  # each free slot goes to the first key that wants it
                self.filled += int(np.count_nonzero(current[won] == EMPTY))
                self.slots[slot[won]] = ids[rows[won]]
                where[rows[won]] = slot[won]
                self.max_probe = max(self.max_probe, probe)
                keep = np.ones(rows.size, dtype=bool)
                keep[won] = False
                rows, slot = rows[keep], slot[keep]
            slot = (slot + 1) & self.mask
            probe += 1
        return where


# Entry columns: name → dtype (spec/ipvs.md §3.1; struct ip_vs_conn).
COLUMNS: dict[str, type] = {
    "proto": np.uint8, "caddr": np.uint32, "cport": np.uint16,
    "vaddr": np.uint32, "vport": np.uint16, "daddr": np.uint32, "dport": np.uint16,
    "service": np.int32, "dest": np.int32, "state": np.uint8, "flags": np.uint16,
    "expires": np.float64, "in_pkts": np.uint32,
}
_IN_KEY = ("proto", "caddr", "cport", "vaddr", "vport")
_OUT_KEY = ("proto", "daddr", "dport", "caddr", "cport")


class ConnTable:
    """Up to ``capacity`` connections; columns are public arrays indexed by entry id."""

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        """``seed`` keys the hashes; None draws one from the OS (results never depend on it)."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = int(capacity)
        nslots = max(8, 1 << (2 * self.capacity - 1).bit_length())  # power of two >= 2 x capacity
        for name, dtype in COLUMNS.items():
            setattr(self, name, np.zeros(self.capacity, dtype=dtype))
        self.used = np.zeros(self.capacity, dtype=bool)
        self.expires.fill(np.inf)
        self.in_slot = np.zeros(self.capacity, dtype=np.int32)
        self.out_slot = np.zeros(self.capacity, dtype=np.int32)
        self._free = np.arange(self.capacity - 1, -1, -1, dtype=np.int32)  # top = smallest id
        self._nfree = self.capacity
        self._in, self._out = _Index(nslots), _Index(nslots)
        seeds = np.random.default_rng(seed).integers(0, 2**64, size=4, dtype=np.uint64)
        self._seed_in, self._seed_out = seeds[:2], seeds[2:]

    # --- sizes ----------------------------------------------------------------
    def __len__(self) -> int:
        return self.capacity - self._nfree

    @property
    def index_slots(self) -> int:
        return self._in.slots.size

    @property
    def nbytes(self) -> int:
        """Bytes held by all arrays (columns, indexes, free stack)."""
        arrays = [getattr(self, n) for n in COLUMNS] + [self.used, self.in_slot, self.out_slot,
                                                       self._free, self._in.slots, self._out.slots]
        return sum(a.nbytes for a in arrays)

    def live_ids(self) -> NDArray[np.int32]:
        return np.flatnonzero(self.used).astype(np.int32)

    # --- hashing --------------------------------------------------------------
    def _home_in(self, proto, caddr, cport, vaddr, vport) -> NDArray[np.int64]:
        h = key_hash(caddr, vaddr, proto, cport, vport, self._seed_in)
        return (h & np.uint64(self._in.mask)).astype(np.int64)

    def _home_out(self, proto, daddr, dport, caddr, cport) -> NDArray[np.int64]:
        h = key_hash(daddr, caddr, proto, dport, cport, self._seed_out)
        return (h & np.uint64(self._out.mask)).astype(np.int64)

    def _homes_of(self, ids: NDArray[np.int32]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Home slots of stored entries in the IN and OUT index."""
        home_in = self._home_in(*(getattr(self, c)[ids] for c in _IN_KEY))
        home_out = self._home_out(*(getattr(self, c)[ids] for c in _OUT_KEY))
        return home_in, home_out

    # --- lookups --------------------------------------------------------------
    def _lookup(self, index: _Index, home, names, values) -> NDArray[np.int32]:
        columns = [getattr(self, n) for n in names]

        def match(ids, rows):
            ok = columns[0][ids] == values[0][rows]
            for column, value in zip(columns[1:], values[1:]):
                ok &= column[ids] == value[rows]
            return ok

        return index.find(home, match)

    def lookup_in(self, proto: ArrayLike, caddr: ArrayLike, cport: ArrayLike,
                  vaddr: ArrayLike, vport: ArrayLike) -> NDArray[np.int32]:
        """Entry id per client→VIP packet (-1 = miss); mirrors __ip_vs_conn_in_get."""
        keys = _keys(_IN_KEY, proto, caddr, cport, vaddr, vport)
        return self._lookup(self._in, self._home_in(*keys), _IN_KEY, keys)

    def lookup_out(self, proto: ArrayLike, saddr: ArrayLike, sport: ArrayLike,
                   daddr: ArrayLike, dport: ArrayLike) -> NDArray[np.int32]:
        """Entry id per reply packet (-1 = miss); mirrors ip_vs_conn_out_get for NAT.

        Arguments are the reply's own fields: saddr:sport is the real server
        (entry daddr:dport), daddr:dport the client (entry caddr:cport). If
        several live entries share the key, any one of them is returned.
        """
        keys = _keys(_OUT_KEY, proto, saddr, sport, daddr, dport)
        return self._lookup(self._out, self._home_out(*keys), _OUT_KEY, keys)

    # --- insert / remove ------------------------------------------------------
    def insert(self, proto, caddr, cport, vaddr, vport, daddr, dport, service, dest,
               state, flags, expires) -> NDArray[np.int32]:
        """Add one entry per row; ids, or -1 for rows beyond the free entries.

        The caller guarantees the IN keys are neither live nor repeated in the
        batch. Arguments broadcast (scalars allowed). ``in_pkts`` starts at 0.
        """
        columns = (proto, caddr, cport, vaddr, vport, daddr, dport, service, dest, state, flags,
                   expires)
        values = dict(zip(COLUMNS, np.broadcast_arrays(*map(np.atleast_1d, columns))))
        m = values["proto"].size
        out = np.full(m, -1, dtype=np.int32)
        n = min(m, self._nfree)
        if n == 0:
            return out
        self._reserve(n)
        ids = self._free[self._nfree - n:self._nfree][::-1].copy()
        self._nfree -= n
        for name, value in values.items():
            getattr(self, name)[ids] = np.asarray(value[:n]).astype(COLUMNS[name], copy=False)
        self.in_pkts[ids] = 0
        self.used[ids] = True
        home_in, home_out = self._homes_of(ids)
        self.in_slot[ids] = self._in.place(home_in, ids)
        self.out_slot[ids] = self._out.place(home_out, ids)
        out[:n] = ids
        return out

    def _reserve(self, n: int) -> None:
        """Rebuild each index that could pass the fill limit while n more entries go in."""
        limit = self._in.slots.size * _FILL_NUM // _FILL_DEN
        for index, slot_column, which in ((self._in, self.in_slot, 0), (self._out, self.out_slot, 1)):
            if index.filled + n > limit:
                live = self.live_ids()
                index.clear()
                slot_column[live] = index.place(self._homes_of(live)[which], live)

    def remove(self, ids: ArrayLike) -> None:
        """Free entries; ids that are -1, repeated or not live are ignored."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        ids = ids[(ids >= 0) & (ids < self.capacity)]
        ids = ids[self.used[ids]].astype(np.int32)
        if ids.size == 0:
            return
        self._in.slots[self.in_slot[ids]] = TOMB
        self._out.slots[self.out_slot[ids]] = TOMB
        self.used[ids] = False
        self.expires[ids] = np.inf
        self._free[self._nfree:self._nfree + ids.size] = ids[::-1]  # smallest id reused first
        self._nfree += ids.size

    # --- time -----------------------------------------------------------------
    def expired(self, now: float) -> NDArray[np.int32]:
        """Live entries with ``expires <= now``, by id; they stay until ``remove``."""
        return np.flatnonzero(self.used & (self.expires <= now)).astype(np.int32)

    def next_deadline(self) -> float:
        """Earliest ``expires`` of a live entry; +inf when the table is empty."""
        return float(np.min(self.expires, where=self.used, initial=np.inf))

    def victims(self, n: int, states: ArrayLike) -> NDArray[np.int32]:
        """Up to n live entries whose state is in ``states``, earliest expires first, then by id."""
        wanted = np.zeros(256, dtype=bool)
        wanted[np.asarray(states, dtype=np.uint8)] = True
        cand = np.flatnonzero(self.used & wanted[self.state])
        if n <= 0:
            return np.empty(0, dtype=np.int32)
        if cand.size > n:  # O(k) selection, then a sort of only n entries
            exp = self.expires[cand]
            kth = np.partition(exp, n - 1)[n - 1]
            below = cand[exp < kth]
            cand = np.concatenate([below, cand[exp == kth][:n - below.size]])
        order = np.lexsort((cand, self.expires[cand]))
        return cand[order].astype(np.int32)


def _keys(names: tuple[str, ...], *arrays: ArrayLike) -> list[NDArray]:
    """Broadcast key arrays to one length, in the dtypes of the columns they match."""
    cast = [np.asarray(a).astype(COLUMNS[n], copy=False) for n, a in zip(names, arrays)]
    return [np.ravel(a) for a in np.broadcast_arrays(*cast)]
