"""The connection table: a bounded struct of numpy arrays with two hash indexes.

What it does: stores up to ``capacity`` connection entries as columns (one
array per field, indexed by entry id) and finds them a batch at a time by their
IN key (proto, caddr, cport, vaddr, vport), as ``ip_vs_conn_in_get`` does for
client→VIP packets, or by their OUT key (proto, daddr, dport, caddr, cport), as
``ip_vs_conn_out_get`` does for NAT replies from a real server
(spec/ipvs.md §3.1-§3.2), or one key at a time for the per-packet fast path. It
inserts and removes batches, lists expired entries, and picks eviction victims.

What it does not do: it never decides. It runs no state machine (tcpstate.py),
moves no active/inactive counters and removes nothing on its own: the engine
asks ``expired(now)``, unbinds the counters, then calls ``remove``. The engine
may write the value columns (``state``, ``flags``, ``expires``, ``dest``,
``in_pkts``) of live entries in place; the key columns must not change while an
entry is live, since the indexes hash them.

Design. A batch lookup costs a fixed number of numpy calls (0.3-2 µs each on
small arrays) plus a little per row, so the layout is chosen to make that number
small: 21 calls for a batch whose keys are all found in their home bucket, and
batches of up to 6 keys go key by key through the scalar probe instead.
- Keys are packed into two 64-bit words: A = caddr | cport << 32 | proto << 48
  (the client side, in both keys) and B = vaddr | vport << 32 (IN) or daddr |
  dport << 32 (OUT). Each word's top byte is 0x40, so read as a float64 it is a
  normal number: a pair of words read as one complex128 compares equal exactly
  when both words are equal, so one gather and one compare match a whole key.
  Each entry keeps its IN pair [B, A] and OUT pair [A, B]; a batch of query keys
  is packed with five copies into preallocated words (``_Scratch``, one per size).
- The hash is x = (A ^ B k0) k1; x ^= x >> 32; x k2 (mod 2^64), with random odd
  multipliers per index and per table, as the kernel seeds jhash with random bytes
  (ip_vs_conn_init): six numpy calls per batch. Its top bits pick the home bucket,
  bits 32-47 the key's 16-bit tag. Plain multiply-shift of A ^ B (two calls) spreads
  most structured key sets perfectly, but for some multipliers it piles lattices of
  keys (16 clients x 62,500 ports; a /22 of templates x 1,000 VIPs) into a few
  buckets, and A ^ B itself collides where fields overlap; B k0 and the second
  round make every tried key set spread like random keys, for every seed tried.
- Each index is 2^k >= 2 x capacity slots (entry id or EMPTY) in buckets of 16, with
  a uint16 tag per slot. A lookup gathers the home bucket's 16 tags, takes the first
  slot whose tag matches (argmax) and compares that entry's key: one pass settles
  every key found in its home bucket (all but about 1 in 2,000 at 1/2 load, against
  about 1 in 5 for a single home slot). The rest (misses, the rare key placed in a
  later bucket, a false tag match in front) take the full probe: every tag match
  of the bucket in slot order, then the next bucket while ``overflow`` says an entry
  homed earlier was placed past it. The first slot in that order whose entry has
  the key is the answer, for the batch and the scalar path alike (OUT keys may
  repeat: both return the same entry). Up to 6 such rows go key by key.
- ``overflow[b]`` counts live entries placed past bucket b (cf. F14's overflow
  counts): insert raises it for each full bucket an entry passes, remove lowers
  it again, so removal is one scatter of EMPTY: no tombstones, no rebuilds.
- Inserts claim slots in rounds: the keys that want one bucket take its free slots
  in batch order (ranks from a stable sort); those left over move one bucket on.
- Entry ids come from a free-id stack, so which id an entry gets depends only on
  the order of inserts and removes (smallest freed id first), never on hashing.
- Memory per entry: 43 bytes of columns + 8 (slot positions) + 4 (free stack) + 32
  (key words) + 2 x 6 x (slots / capacity) for the slots and tags + 2 x 4 / 16 x
  (slots / capacity) for the overflow counts: about 113 bytes at 1,000,000.
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import ArrayLike, NDArray

from userlb.connindex import BUCKET, BUCKET_BITS, MARK, MIN_SLOTS, BucketIndex, probe_one

# include/uapi/linux/ip_vs.h connection flags used here.
CONN_F_MASQ = 0x0000
CONN_F_INACTIVE = 0x0100
CONN_F_TEMPLATE = 0x1000

_LITTLE_ENDIAN = sys.byteorder == "little"
_SCALAR_ROWS = 6                 # batches up to this many rows, and leftovers, go per key
_SCRATCH_ROWS = 4096              # batch sizes up to this keep their scratch buffers
_SCRATCH_SIZES = 32              # ... for this many distinct sizes at most (~15 MB)

# Entry columns: name → dtype (spec/ipvs.md §3.1; struct ip_vs_conn).
COLUMNS: dict[str, type] = {
    "proto": np.uint8, "caddr": np.uint32, "cport": np.uint16,
    "vaddr": np.uint32, "vport": np.uint16, "daddr": np.uint32, "dport": np.uint16,
    "service": np.int32, "dest": np.int32, "state": np.uint8, "flags": np.uint16,
    "expires": np.float64, "in_pkts": np.uint32,
}
_IN_KEY = ("proto", "caddr", "cport", "vaddr", "vport")
_OUT_KEY = ("proto", "daddr", "dport", "caddr", "cport")
_B_IN, _A, _B_OUT = 0, 1, 2      # columns of the per-entry and per-query word rows


class _Scratch:
    """Preallocated query words for one batch size and views of their fields, so that
    packing a batch of keys is five plain copies. Rows are [B_in, A, B_out] as the
    entries' words; the top bytes hold the 0x40 mark and are never written. A table is
    used by one thread at a time (the engine's loop), so one set per size is enough."""

    def __init__(self, n: int) -> None:
        w = np.zeros((n, 3), dtype=np.uint64)
        for col in range(3):
            _field(w, col, 56, np.uint8)[...] = 0x40
        self.words = w
        self.a_addr, self.a_port = _field(w, _A, 0, np.uint32), _field(w, _A, 32, np.uint16)
        self.proto = _field(w, _A, 48, np.uint8)
        self.b_addr = (_field(w, _B_IN, 0, np.uint32), _field(w, _B_OUT, 0, np.uint32))
        self.b_port = (_field(w, _B_IN, 32, np.uint16), _field(w, _B_OUT, 32, np.uint16))
        self.a, self.b = w[:, _A], (w[:, _B_IN], w[:, _B_OUT])
        self.key = (_complex_view(w, _B_IN), _complex_view(w, _A))   # IN, OUT
        self.h = np.empty(n, dtype=np.uint64)
        self.tag = _field(self.h.reshape(n, 1), 0, 32, np.uint16)[:, None]  # bits 32-47
        self.slot = np.empty(n, dtype=np.int64)
        self.slot_u = self.slot.view(np.uint64)
        self.tags = np.empty((n, BUCKET), dtype=np.uint16)
        self.match = np.empty((n, BUCKET), dtype=bool)
        self.first = np.empty(n, dtype=np.int64)
        self.got = np.empty(n, dtype=np.complex128)
        self.hit = np.empty(n, dtype=bool)


def _field(words: NDArray[np.uint64], col: int, bit: int, dtype) -> NDArray:
    """View of the field at bits [bit, bit + width) of column col of a 2-d uint64 array."""
    size = np.dtype(dtype).itemsize
    byte = bit // 8 if _LITTLE_ENDIAN else 8 - size - bit // 8
    return words.view(dtype)[:, (8 * col + byte) // size]


def _complex_view(words: NDArray[np.uint64], col: int) -> NDArray[np.complex128]:
    """Columns col, col + 1 of an (n, 3) uint64 array as n complex128 (no copy)."""
    return np.ndarray(shape=(words.shape[0],), dtype=np.complex128, buffer=words,
                      offset=8 * col, strides=(words.strides[0],))


_FOUR = np.array(BUCKET_BITS, dtype=np.int64)
_32 = np.array(32, dtype=np.uint64)


class ConnTable:
    """Up to ``capacity`` connections; columns are public arrays indexed by entry id."""

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        """``seed`` keys the hashes; None draws one from the OS (results never depend on it)."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = int(capacity)
        nslots = max(MIN_SLOTS, 1 << (2 * self.capacity - 1).bit_length())  # 2^k >= 2 x capacity
        for name, dtype in COLUMNS.items():
            setattr(self, name, np.zeros(self.capacity, dtype=dtype))
        self.used = np.zeros(self.capacity, dtype=bool)
        self.expires.fill(np.inf)
        self.in_slot = np.zeros(self.capacity, dtype=np.int32)
        self.out_slot = np.zeros(self.capacity, dtype=np.int32)
        # Key words per entry: [B_in, A] (IN) and [A, B_out] (OUT), each pair also read as
        # one complex128; one more row of zeros, which no key matches, is what EMPTY (-1)
        # reads when a lookup gathers keys by slot content.
        self._in_words = np.zeros((self.capacity + 1, 2), dtype=np.uint64)
        self._out_words = np.zeros((self.capacity + 1, 2), dtype=np.uint64)
        self._keys = (self._in_words.view(np.complex128).ravel(),
                      self._out_words.view(np.complex128).ravel())
        self._free = np.arange(self.capacity - 1, -1, -1, dtype=np.int32)  # top = smallest id
        self._nfree = self.capacity
        mults = np.random.default_rng(seed).integers(0, 2**64, size=6, dtype=np.uint64) | 1
        self._in, self._out = BucketIndex(nslots, mults[:3]), BucketIndex(nslots, mults[3:])
        self._scratch: dict[int, _Scratch] = {}
        self._views: dict[str, memoryview] | None = None
        self._probe_in = self._probe_out = None

    # --- sizes ----------------------------------------------------------------
    def __len__(self) -> int:
        return self.capacity - self._nfree

    @property
    def index_slots(self) -> int:
        return self._in.slots.size

    @property
    def nbytes(self) -> int:
        """Bytes held by all arrays (columns, key words, indexes, free stack)."""
        arrays = [getattr(self, n) for n in COLUMNS] + [self.used, self.in_slot, self.out_slot,
                                                       self._in_words, self._out_words,
                                                       self._free]
        return sum(a.nbytes for a in arrays) + self._in.nbytes + self._out.nbytes

    def live_ids(self) -> NDArray[np.int32]:
        return np.flatnonzero(self.used).astype(np.int32)

    # --- lookups --------------------------------------------------------------
    def lookup_in(self, proto: ArrayLike, caddr: ArrayLike, cport: ArrayLike,
                  vaddr: ArrayLike, vport: ArrayLike) -> NDArray[np.int32]:
        """Entry id per client→VIP packet (-1 = miss); mirrors __ip_vs_conn_in_get."""
        return self._lookup(0, proto, caddr, cport, vaddr, vport)

    def lookup_out(self, proto: ArrayLike, saddr: ArrayLike, sport: ArrayLike,
                   daddr: ArrayLike, dport: ArrayLike) -> NDArray[np.int32]:
        """Entry id per reply packet (-1 = miss); mirrors ip_vs_conn_out_get for NAT.

        Arguments are the reply's own fields: saddr:sport is the real server
        (entry daddr:dport), daddr:dport the client (entry caddr:cport). If
        several live entries share the key, the first in probe order is returned
        (lookup_out_one returns the same one).
        """
        return self._lookup(1, proto, daddr, dport, saddr, sport)

    def _lookup(self, side: int, proto, a_addr, a_port, b_addr, b_port) -> NDArray[np.int32]:
        """side 0 = IN, 1 = OUT; A = the client's address and port, B = the other end's."""
        try:
            n = a_addr.shape[0]           # the common case: 1-d arrays (scalars broadcast)
        except (AttributeError, IndexError):
            return self._lookup(side, *_keys(proto, a_addr, a_port, b_addr, b_port))
        if n <= _SCALAR_ROWS:
            return self._lookup_rows(side, n, proto, a_addr, a_port, b_addr, b_port)
        s = self._scratch.get(n) or self._new_scratch(n)
        try:
            s.a_addr[...] = a_addr
            s.a_port[...] = a_port
            s.proto[...] = proto
            s.b_addr[side][...] = b_addr
            s.b_port[side][...] = b_port
        except (ValueError, OverflowError, TypeError):
            return self._lookup(side, *_keys(proto, a_addr, a_port, b_addr, b_port))
        index = self._out if side else self._in
        h, slot, k0, k1, k2 = s.h, s.slot, *index.mults0
        np.multiply(s.b[side], k0, out=h)                           # key_hash_words
        np.bitwise_xor(h, s.a, out=h)
        np.multiply(h, k1, out=h)
        np.right_shift(h, _32, out=s.slot_u)
        np.bitwise_xor(h, s.slot_u, out=h)
        np.multiply(h, k2, out=h)
        np.right_shift(h, index.shift0, out=s.slot_u)                # home bucket
        index.tags2d.take(slot, axis=0, out=s.tags, mode="wrap")
        np.equal(s.tags, s.tag, out=s.match)
        s.match.argmax(axis=1, out=s.first)
        np.left_shift(slot, _FOUR, out=slot)
        np.add(slot, s.first, out=slot)                             # first tag match's slot
        ids = index.slots.take(slot)
        self._keys[side].take(ids, out=s.got, mode="wrap")          # EMPTY: the zero row
        hit = np.equal(s.got, s.key[side], out=s.hit)
        if np.count_nonzero(hit) == n:
            return ids
        return self._settle(side, s, ids, np.flatnonzero(~hit))

    def _settle(self, side: int, s: _Scratch, ids: NDArray[np.int32],
                rows: NDArray[np.intp]) -> NDArray[np.int32]:
        """Full probes for the rows the home-bucket pass left open."""
        if len(rows) <= _SCALAR_ROWS:
            probe = self._probes()[side]
            a, b = s.a.take(rows).tolist(), s.b[side].take(rows).tolist()
            for r, ka, kb in zip(rows.tolist(), a, b):
                ids[r] = probe_one(probe, ka, kb)
            return ids
        index = self._out if side else self._in
        h = s.h.take(rows)
        bucket = (h >> index.shift0).view(np.int64)
        tag = (h >> np.uint64(32)).astype(np.uint16)
        ids[rows] = index.find(bucket, tag, s.key[side].take(rows), self._keys[side])
        return ids

    def _new_scratch(self, n: int) -> _Scratch:
        s = _Scratch(n)
        if n <= _SCRATCH_ROWS:
            if len(self._scratch) >= _SCRATCH_SIZES:
                self._scratch.clear()
            self._scratch[n] = s
        return s

    def _lookup_rows(self, side: int, n: int, *keys) -> NDArray[np.int32]:
        """A small batch key by key with the scalar probe (keys: proto, A address, A port,
        B address, B port); anything but n-long 1-d integer arrays goes through _keys."""
        try:
            cols = [k.tolist() for k in keys]
            if any(len(c) != n for c in cols):
                raise TypeError
            probe = self._probes()[side]
            return np.array([probe_one(probe, (x & 0xFFFFFFFF) | (y & 0xFFFF) << 32
                                        | (p & 0xFF) << 48 | MARK,
                                        (u & 0xFFFFFFFF) | (v & 0xFFFF) << 32 | MARK)
                             for p, x, y, u, v in zip(*cols)], dtype=np.int32)
        except (AttributeError, TypeError):        # scalars, floats, other shapes
            return self._lookup(side, *_keys(*keys))

    # Scalar twins of lookup_in/lookup_out for a per-packet path: the same hash in
    # Python ints and the same probe order, so they return exactly what the vector
    # lookups return for one key.
    def views(self) -> dict[str, memoryview]:
        """Memoryviews of every column (and both indexes' slots, as "_in"/"_out"), built once.

        Indexing a memoryview costs a third of a numpy scalar access. Valid because
        columns and index arrays are only ever written in place, never rebound."""
        if self._views is None:
            views = {name: memoryview(getattr(self, name)) for name in COLUMNS}
            views["_in"], views["_out"] = memoryview(self._in.slots), memoryview(self._out.slots)
            self._views = views
        return self._views

    def _probes(self) -> tuple[tuple, tuple]:
        """What probe_one reads, per index (IN, OUT): built once, like views()."""
        if self._probe_in is None:
            self._probe_in, self._probe_out = (
                (ix.mults, ix.shift, ix._tagbuf, memoryview(ix.slots), memoryview(words.reshape(-1)),
                 a_col, ix.bmask, ix.nbuckets, memoryview(ix.overflow))
                for ix, words, a_col in ((self._in, self._in_words, 1),
                                         (self._out, self._out_words, 0)))
        return self._probe_in, self._probe_out

    def lookup_in_one(self, proto: int, caddr: int, cport: int, vaddr: int, vport: int) -> int:
        """lookup_in for one client→VIP key of ints (wrapped to the column widths, as the
        vector path's casts do); the entry id or -1."""
        probe = self._probe_in or self._probes()[0]
        return probe_one(probe, (caddr & 0xFFFFFFFF) | (cport & 0xFFFF) << 32
                          | (proto & 0xFF) << 48 | MARK,
                          (vaddr & 0xFFFFFFFF) | (vport & 0xFFFF) << 32 | MARK)

    def lookup_out_one(self, proto: int, saddr: int, sport: int, daddr: int, dport: int) -> int:
        """lookup_out for one reply key (the reply's own fields, as lookup_out takes them)."""
        probe = self._probe_out or self._probes()[1]
        return probe_one(probe, (daddr & 0xFFFFFFFF) | (dport & 0xFFFF) << 32
                          | (proto & 0xFF) << 48 | MARK,
                          (saddr & 0xFFFFFFFF) | (sport & 0xFFFF) << 32 | MARK)

    # --- insert / remove ------------------------------------------------------
    def insert(self, proto, caddr, cport, vaddr, vport, daddr, dport, service, dest,
               state, flags, expires) -> NDArray[np.int32]:
        """Add one entry per row; ids, or -1 for rows beyond the free entries.

        The caller guarantees the IN keys are neither live nor repeated in the
        batch. Arguments broadcast (scalars allowed). ``in_pkts`` starts at 0.
        """
        columns = [proto, caddr, cport, vaddr, vport, daddr, dport, service, dest, state, flags,
                   expires]
        shape = np.broadcast(*columns).shape                # raises if they do not broadcast
        if len(shape) > 1:
            columns = [c.ravel() for c in np.broadcast_arrays(*columns)]
        m = int(np.prod(shape)) if shape else 1
        out = np.full(m, -1, dtype=np.int32)
        n = min(m, self._nfree)
        if n == 0:
            return out
        ids = self._free[self._nfree - n:self._nfree][::-1].copy()
        self._nfree -= n
        s = self._scratch.get(n) or self._new_scratch(n)
        fields = (s.proto, s.a_addr, s.a_port, s.b_addr[0], s.b_port[0], s.b_addr[1], s.b_port[1])
        for i, (name, value) in enumerate(zip(COLUMNS, columns)):
            if type(value) is not np.ndarray:
                value = np.asarray(value)
            if value.ndim and value.shape[0] > n:
                value = value[:n]
            column = getattr(self, name)
            column[ids] = value                            # casts as astype does
            if i < len(fields):
                fields[i][...] = column[ids]
        self.in_pkts[ids] = 0
        self.used[ids] = True
        self._in_words[ids] = s.words[:, _B_IN:_A + 1]
        self._out_words[ids] = s.words[:, _A:_B_OUT + 1]
        self.in_slot[ids] = self._in.place(*self._in.home(s.a, s.b[0]), ids)
        self.out_slot[ids] = self._out.place(*self._out.home(s.a, s.b[1]), ids)
        out[:n] = ids
        return out

    def remove(self, ids: ArrayLike) -> None:
        """Free entries; ids that are -1, repeated or not live are ignored."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        ids = ids[(ids >= 0) & (ids < self.capacity)]
        ids = ids[self.used[ids]].astype(np.int32)
        if ids.size == 0:
            return
        a = self._out_words[ids, 0]
        for index, slot, b in ((self._in, self.in_slot, self._in_words[ids, 0]),
                               (self._out, self.out_slot, self._out_words[ids, 1])):
            index.unplace(slot[ids].astype(np.int64), index.home(a, b)[0])
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


def _keys(*arrays: ArrayLike) -> list[NDArray]:
    """Broadcast lookup arguments (proto, A address, A port, B address, B port) to one
    1-d length, wrapped to the column widths as astype does."""
    dtypes = (np.uint8, np.uint32, np.uint16, np.uint32, np.uint16)
    cast = [np.asarray(a).astype(t, copy=False) for a, t in zip(arrays, dtypes)]
    return [np.ravel(a) for a in np.broadcast_arrays(*cast)]
