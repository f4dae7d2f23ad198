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
- Each key is packed once into two 64-bit words (``key_words``); they give the
  hash, and a copy per entry (``_in_words``/``_out_words``) makes the exact key
  compare one gather. Each index slot also keeps a tag, the top byte of its
  entry's hash. Lookups read a window of 8 slots per key at once and compare
  words only where the tag matches, about once per key; a key stops at a match
  or an EMPTY slot, and after ``max_probe + 1`` slots at most, where
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
  32 (key words) + 2 x 5 x (slots / capacity) for the indexes and their tags:
  about 108 bytes at 1,000,000.
"""

from __future__ import annotations

import sys

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


# The table's own path: each key packed once into two words, [hi, lo] as key_hash
# forms them. The words give the hash and, stored per entry, the exact key match:
# one gather and two compares per candidate instead of five columns.
_LITTLE_ENDIAN = sys.byteorder == "little"


def key_words(addr_a: NDArray, addr_b: NDArray, proto: NDArray, port_a: NDArray,
              port_b: NDArray) -> NDArray[np.uint64]:
    """(n, 2) uint64: addr_a << 32 | addr_b, proto << 32 | port_a << 16 | port_b.

    1-d inputs of one length; proto as uint8, the others cast as the columns do
    (assignment wraps to 32 and 16 bits). Five strided copies on little-endian hosts.
    """
    n = len(addr_a)
    if not _LITTLE_ENDIAN:
        words = np.empty((n, 2), np.uint64)
        words[:, 0] = (np.asarray(addr_a).astype(np.uint32).astype(np.uint64) << _U32) | \
            np.asarray(addr_b).astype(np.uint32)
        words[:, 1] = ((np.asarray(proto).astype(np.uint64) << _U32)
                       | (np.asarray(port_a).astype(np.uint16).astype(np.uint64) << _U16)
                       | np.asarray(port_b).astype(np.uint16))
        return words
    words = np.zeros((n, 2), np.uint64)
    half = words.view(np.uint32)          # (n, 4): the words' 32-bit halves, low first
    half[:, 0] = addr_b
    half[:, 1] = addr_a
    quarter = words.view(np.uint16)       # (n, 8): their 16-bit quarters, low first
    quarter[:, 4] = port_b
    quarter[:, 5] = port_a
    quarter[:, 6] = proto
    return words


def _mix64_inplace(x: NDArray[np.uint64], tmp: NDArray[np.uint64]) -> None:
    """_mix64 without temporaries (tmp: scratch of x's shape)."""
    np.right_shift(x, _S1, out=tmp)
    x ^= tmp
    x *= _M1
    np.right_shift(x, _S2, out=tmp)
    x ^= tmp
    x *= _M2
    np.right_shift(x, _S3, out=tmp)
    x ^= tmp


def key_hash_words(words: NDArray[np.uint64], seed: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """key_hash of key_words rows (the same values)."""
    x = words[:, 0] ^ seed[0]
    tmp = np.empty_like(x)
    _mix64_inplace(x, tmp)
    x ^= words[:, 1]
    x ^= seed[1]
    _mix64_inplace(x, tmp)
    return x


_MASK64 = (1 << 64) - 1
_M1_INT, _M2_INT = int(_M1), int(_M2)


def _mix64_one(x: int) -> int:
    """_mix64 on one Python int (products reduced mod 2**64, as uint64 arithmetic wraps)."""
    x ^= x >> 30
    x = (x * _M1_INT) & _MASK64
    x ^= x >> 27
    x = (x * _M2_INT) & _MASK64
    return x ^ (x >> 31)


def key_hash_one(addr_a: int, addr_b: int, proto: int, port_a: int, port_b: int,
                 seed: tuple[int, int]) -> int:
    """key_hash for one key in Python ints: the same 64-bit value (for per-packet paths)."""
    hi = (addr_a << 32) | addr_b
    lo = (proto << 32) | (port_a << 16) | port_b
    return _mix64_one(_mix64_one(hi ^ seed[0]) ^ lo ^ seed[1])


class _Index:
    """One open-addressing index: slot → entry id, EMPTY or TOMB; linear probing."""

    def __init__(self, nslots: int) -> None:
        self.slots = np.full(nslots, EMPTY, dtype=np.int32)
        self.tags = np.zeros(nslots, dtype=np.uint8)   # top hash byte of the slot's entry
        self.mask = nslots - 1
        self.filled = 0      # slots that are not EMPTY (live ids + TOMB)
        self.max_probe = 0   # longest displacement placed since the last clear

    def clear(self) -> None:
        self.slots.fill(EMPTY)
        self.filled = 0
        self.max_probe = 0

    def find(self, home: NDArray[np.int64], tag: NDArray[np.uint8], words: NDArray[np.uint64],
             entry_words: NDArray[np.uint64], unique: bool = False) -> NDArray[np.int32]:
        """Id per key (-1 = none): the first slot from home whose entry has the key's words
        (entry_words[id] == words[i]), unless an EMPTY slot comes first; a TOMB does not
        end a chain; at most max_probe + 1 slots.

        Slots are read _WINDOW at a time, so one round settles almost every key (99% sit
        within 6 slots of home at the table's fill), where a slot per round took as many
        rounds as the longest chain in the batch. Only slots whose tag matches are
        checked against the entries' words, about one per key. A live entry never sits
        past an EMPTY slot of its own chain (it would have been placed there, and only
        clear() makes slots EMPTY again), so the nearest match is the answer and EMPTY
        only tells a miss from a chain that goes on. ``unique``: no two live entries share
        a key (the IN index), so as many matches as keys means every key is found.
        """
        out = np.full(len(home), -1, dtype=np.int32)
        span = self.max_probe + 1
        width = min(_WINDOW, span)
        rows, start, done = None, home, 0
        while True:
            m = len(start)
            window = (_OFFSETS[:width, None] + start) & self.mask      # (width, m)
            ids = self.slots.take(window)
            same = self.tags.take(window) == tag
            same &= ids >= 0
            at = same.ravel().nonzero()[0]                   # offset-major: nearest first
            cand = ids.ravel().take(at)
            r = at % m
            want = words.take(r if rows is None else rows[r], axis=0)
            got = entry_words.take(cand, axis=0)
            hit = got[:, 0] == want[:, 0]
            hit &= got[:, 1] == want[:, 1]
            r, cand = r[hit][::-1], cand[hit][::-1]          # last write wins: nearest match
            out[r if rows is None else rows[r]] = cand
            done += width
            if done >= span or (unique and len(r) == m):
                return out
            more = (ids != EMPTY).all(axis=0)                # no EMPTY yet: the chain goes on
            more[r] = False
            more = more.nonzero()[0]
            if not len(more):
                return out
            rows = more if rows is None else rows[more]
            start, tag = start[more] + width, tag[more]
            width = min(width, span - done)

    def place(self, home: NDArray[np.int64], tag: NDArray[np.uint8],
              ids: NDArray[np.int32]) -> NDArray[np.int64]:
        """Put ids (with their tags) in their first free slot from home; returns the slots."""
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
                self.tags[slot[won]] = tag[rows[won]]
                where[rows[won]] = slot[won]
                self.max_probe = max(self.max_probe, probe)
                keep = np.ones(rows.size, dtype=bool)
                keep[won] = False
                rows, slot = rows[keep], slot[keep]
            slot = (slot + 1) & self.mask
            probe += 1
        return where


_WINDOW = 8  # index slots a lookup reads per key at once
_OFFSETS = np.arange(_WINDOW, dtype=np.int64)
_TAG_SHIFT = np.uint64(56)


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
        self._in_words = np.zeros((self.capacity, 2), dtype=np.uint64)   # key_words per entry
        self._out_words = np.zeros((self.capacity, 2), dtype=np.uint64)
        self._free = np.arange(self.capacity - 1, -1, -1, dtype=np.int32)  # top = smallest id
        self._nfree = self.capacity
        self._in, self._out = _Index(nslots), _Index(nslots)
        seeds = np.random.default_rng(seed).integers(0, 2**64, size=4, dtype=np.uint64)
        self._seed_in, self._seed_out = seeds[:2], seeds[2:]
        self._seed_in_int = (int(seeds[0]), int(seeds[1]))
        self._seed_out_int = (int(seeds[2]), int(seeds[3]))
        self._views: dict[str, memoryview] | None = None
        self._probe_in = self._probe_out = ()

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
                                                       self._in_words, self._out_words,
                                                       self._free, self._in.slots, self._out.slots,
                                                       self._in.tags, self._out.tags]
        return sum(a.nbytes for a in arrays)

    def live_ids(self) -> NDArray[np.int32]:
        return np.flatnonzero(self.used).astype(np.int32)

    # --- hashing --------------------------------------------------------------
    @staticmethod
    def _home(index: _Index, words: NDArray[np.uint64], seed) -> tuple[NDArray, NDArray]:
        """(home slot, tag) per key: the hash's low bits and its top byte."""
        h = key_hash_words(words, seed)
        tag = (h >> _TAG_SHIFT).astype(np.uint8)
        h &= np.uint64(index.mask)
        return h.view(np.int64), tag

    # --- lookups --------------------------------------------------------------
    def _lookup(self, index: _Index, entry_words, seed, names, keys) -> NDArray[np.int32]:
        words = _query_words(names, keys)
        return index.find(*self._home(index, words, seed), words, entry_words,
                          unique=index is self._in)

    def lookup_in(self, proto: ArrayLike, caddr: ArrayLike, cport: ArrayLike,
                  vaddr: ArrayLike, vport: ArrayLike) -> NDArray[np.int32]:
        """Entry id per client→VIP packet (-1 = miss); mirrors __ip_vs_conn_in_get."""
        return self._lookup(self._in, self._in_words, self._seed_in, _IN_KEY,
                            (proto, caddr, cport, vaddr, vport))

    def lookup_out(self, proto: ArrayLike, saddr: ArrayLike, sport: ArrayLike,
                   daddr: ArrayLike, dport: ArrayLike) -> NDArray[np.int32]:
        """Entry id per reply packet (-1 = miss); mirrors ip_vs_conn_out_get for NAT.

        Arguments are the reply's own fields: saddr:sport is the real server
        (entry daddr:dport), daddr:dport the client (entry caddr:cport). If
        several live entries share the key, any one of them is returned.
        """
        return self._lookup(self._out, self._out_words, self._seed_out, _OUT_KEY,
                            (proto, saddr, sport, daddr, dport))

    # Scalar twins of lookup_in/lookup_out for a per-packet path: the same hash in
    # Python ints, the same probe (a TOMB does not end a chain; at most max_probe + 1
    # slots), so they return exactly what the vector lookups return for one key.
    def views(self) -> dict[str, memoryview]:
        """Memoryviews of every column (and both indexes, as "_in"/"_out"), built once.

        Indexing a memoryview costs a third of a numpy scalar access. Valid because
        columns and index arrays are only ever written in place, never rebound."""
        if self._views is None:
            views = {name: memoryview(getattr(self, name)) for name in COLUMNS}
            views["_in"], views["_out"] = memoryview(self._in.slots), memoryview(self._out.slots)
            self._views = views
            self._probe_in = (self._in, views["_in"], *(views[n] for n in _IN_KEY))
            self._probe_out = (self._out, views["_out"], *(views[n] for n in _OUT_KEY))
        return self._views

    def lookup_in_one(self, proto: int, caddr: int, cport: int, vaddr: int, vport: int) -> int:
        """lookup_in for one client→VIP key of ints (wrapped to the column widths, as the
        vector path's casts do); the entry id or -1."""
        if self._views is None:
            self.views()
        return _probe_one(self._probe_in, self._seed_in_int, proto & 0xFF, caddr & 0xFFFFFFFF,
                          cport & 0xFFFF, vaddr & 0xFFFFFFFF, vport & 0xFFFF)

    def lookup_out_one(self, proto: int, saddr: int, sport: int, daddr: int, dport: int) -> int:
        """lookup_out for one reply key (the reply's own fields, as lookup_out takes them)."""
        if self._views is None:
            self.views()
        return _probe_one(self._probe_out, self._seed_out_int, proto & 0xFF, saddr & 0xFFFFFFFF,
                          sport & 0xFFFF, daddr & 0xFFFFFFFF, dport & 0xFFFF)

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
        self._in_words[ids] = _words_of(*(getattr(self, c)[ids] for c in _IN_KEY))
        self._out_words[ids] = _words_of(*(getattr(self, c)[ids] for c in _OUT_KEY))
        self.in_slot[ids] = self._in.place(*self._home(self._in, self._in_words[ids],
                                                       self._seed_in), ids)
        self.out_slot[ids] = self._out.place(*self._home(self._out, self._out_words[ids],
                                                         self._seed_out), ids)
        out[:n] = ids
        return out

    def _reserve(self, n: int) -> None:
        """Rebuild each index that could pass the fill limit while n more entries go in."""
        limit = self._in.slots.size * _FILL_NUM // _FILL_DEN
        for index, slot_column, words, seed in (
                (self._in, self.in_slot, self._in_words, self._seed_in),
                (self._out, self.out_slot, self._out_words, self._seed_out)):
            if index.filled + n > limit:
                live = self.live_ids()
                index.clear()
                slot_column[live] = index.place(*self._home(index, words[live], seed), live)

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


def _probe_one(probe, seed: tuple[int, int], k0: int, k1: int, k2: int, k3: int,
               k4: int) -> int:
    """_Index.find for one key (k0..k4 in the index's key-column order): home slot from
    key_hash(k1, k3, k0, k2, k4) inlined, then linear probing over memoryviews."""
    index, slots, c0, c1, c2, c3, c4 = probe
    x = ((k1 << 32) | k3) ^ seed[0]                     # _mix64_one, twice, inlined
    x ^= x >> 30
    x = (x * _M1_INT) & _MASK64
    x ^= x >> 27
    x = (x * _M2_INT) & _MASK64
    x = (x ^ (x >> 31)) ^ ((k0 << 32) | (k2 << 16) | k4) ^ seed[1]
    x ^= x >> 30
    x = (x * _M1_INT) & _MASK64
    x ^= x >> 27
    x = (x * _M2_INT) & _MASK64
    mask = index.mask
    slot = (x ^ (x >> 31)) & mask
    for _ in range(index.max_probe + 1):
        i = slots[slot]
        if i >= 0:
            if c1[i] == k1 and c2[i] == k2 and c3[i] == k3 and c4[i] == k4 and c0[i] == k0:
                return i
        elif i == EMPTY:
            return -1
        slot = (slot + 1) & mask
    return -1


def _words_of(proto, addr_a, port_a, addr_b, port_b) -> NDArray[np.uint64]:
    """key_words of key columns given in _IN_KEY/_OUT_KEY order."""
    return key_words(addr_a, addr_b, proto, port_a, port_b)


def _query_words(names: tuple[str, ...], keys: tuple) -> NDArray[np.uint64]:
    """key_words of lookup arguments: 1-d arrays of one length go straight in (proto is
    cast to uint8 first; the other casts happen on assignment, wrapping as astype does);
    anything else is broadcast by _keys first."""
    proto = keys[0]
    if all(isinstance(k, np.ndarray) and k.ndim == 1 and len(k) == len(proto)
           and k.dtype.kind in "ui" for k in keys):
        if proto.dtype != np.uint8:
            proto = proto.astype(np.uint8)
        return _words_of(proto, *keys[1:])
    return _words_of(*_keys(names, *keys))


def _keys(names: tuple[str, ...], *arrays: ArrayLike) -> list[NDArray]:
    """Broadcast key arrays to one length, in the dtypes of the columns they match."""
    cast = [np.asarray(a).astype(COLUMNS[n], copy=False) for n, a in zip(names, arrays)]
    return [np.ravel(a) for a in np.broadcast_arrays(*cast)]
