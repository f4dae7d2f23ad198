"""The connection table's hash index: key words, the keyed hash, buckets with tags.

What it does: packs a lookup key into two 64-bit words (key_words), hashes them
(key_hash_words, key_hash_one: the same 64-bit value vectorised and in Python
ints), and keeps one index (BucketIndex): 2^k slots of entry ids in buckets of
BUCKET, a 16-bit tag per slot and per-bucket overflow counts; it finds (batch),
places and unplaces ids. probe_one / probe_rest are the same search for one key
in plain Python, for the per-packet fast path. The layout and why it is shaped so
are in conntable.py's docstring ("Design").

What it does not do: store entries or their keys (ConnTable holds the columns and
the key words the probes compare), decide anything, or grow: an index has the
size it was made with.
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import ArrayLike, NDArray

EMPTY = -1

BUCKET = 16                      # slots per bucket
BUCKET_BITS = 4
MIN_SLOTS = 2 * BUCKET           # at least two buckets, so the bucket shift stays < 64
MARK = 0x40 << 56                # top byte of every key word: a normal float64 exponent
_MASK64 = (1 << 64) - 1
_BYTEORDER = sys.byteorder


def key_words(proto: ArrayLike, addr_a: ArrayLike, port_a: ArrayLike, addr_b: ArrayLike,
              port_b: ArrayLike) -> NDArray[np.uint64]:
    """(n, 2) uint64 words [A, B] of keys: A = addr_a | port_a << 32 | proto << 48,
    B = addr_b | port_b << 32, each with the 0x40 top byte (fields wrap to 8/32/16 bits)."""
    mark = np.uint64(MARK)
    a = (_u64(addr_a, np.uint32) | (_u64(port_a, np.uint16) << np.uint64(32))
         | (_u64(proto, np.uint8) << np.uint64(48)) | mark)
    b = _u64(addr_b, np.uint32) | (_u64(port_b, np.uint16) << np.uint64(32)) | mark
    return np.stack(np.broadcast_arrays(a, b), axis=-1).reshape(-1, 2)


def _u64(x: ArrayLike, dtype) -> NDArray[np.uint64]:
    return np.asarray(x).astype(dtype).astype(np.uint64)


def key_hash_words(a: NDArray[np.uint64], b: NDArray[np.uint64],
                   mults: tuple[int, int, int]) -> NDArray[np.uint64]:
    """The keyed hash of word columns A and B, vectorised (arithmetic mod 2^64):
    x = (A ^ B k0) k1; x ^= x >> 32; x k2."""
    k0, k1, k2 = (np.uint64(k) for k in mults)
    x = (a ^ (b * k0)) * k1
    return (x ^ (x >> np.uint64(32))) * k2


def key_hash_one(a: int, b: int, mults: tuple[int, int, int]) -> int:
    """key_hash_words for one key in Python ints: the same 64-bit value."""
    k0, k1, k2 = mults
    x = ((a ^ ((b * k0) & _MASK64)) * k1) & _MASK64
    return ((x ^ (x >> 32)) * k2) & _MASK64


class BucketIndex:
    """One index: slots of entry ids in buckets of BUCKET, a tag per slot, overflow counts."""

    def __init__(self, nslots: int, mults: tuple[int, int, int]) -> None:
        self.nbuckets = nslots // BUCKET
        self.bmask = self.nbuckets - 1
        self.shift = 64 - (self.nbuckets.bit_length() - 1)   # top bits → bucket
        self.slots = np.full(nslots, EMPTY, dtype=np.int32)
        self._tagbuf = bytearray(2 * nslots)                   # the scalar path searches it
        self.tags = np.frombuffer(self._tagbuf, dtype=np.uint16)
        self.overflow = np.zeros(self.nbuckets, dtype=np.int32)
        self.slots2d = self.slots.reshape(self.nbuckets, BUCKET)
        self.tags2d = self.tags.reshape(self.nbuckets, BUCKET)
        self.shift0 = np.array(self.shift, dtype=np.uint64)   # 0-d: ufuncs take it fastest
        self.set_mults(mults)

    def set_mults(self, mults: tuple[int, int, int]) -> None:
        """The hash's three multipliers (odd; tests zero them to put every key in bucket 0
        with tag 0). Only while the index is empty."""
        self.mults = tuple(int(k) for k in mults)
        self.mults0 = tuple(np.array(k, dtype=np.uint64) for k in self.mults)

    @property
    def nbytes(self) -> int:
        return self.slots.nbytes + self.tags.nbytes + self.overflow.nbytes

    def home(self, a: NDArray[np.uint64], b: NDArray[np.uint64]) -> tuple[NDArray, NDArray]:
        """(home bucket as int64, tag as uint16) per key of word columns A and B."""
        h = key_hash_words(a, b, self.mults)
        tag = (h >> np.uint64(32)).astype(np.uint16)
        return (h >> np.uint64(self.shift)).astype(np.int64), tag

    def find(self, bucket: NDArray[np.int64], tag: NDArray[np.uint16],
             key: NDArray[np.complex128], entry_key: NDArray[np.complex128]) -> NDArray[np.int32]:
        """Full probe: id per key (-1 = none), the first slot in probe order whose entry
        has the key. Probe order: the home bucket's slots in order, then the next bucket
        while ``overflow`` of the one just searched is not zero (at most every bucket)."""
        out = np.full(len(bucket), -1, dtype=np.int32)
        rows = np.arange(len(bucket))
        for _ in range(self.nbuckets):
            ids = self.slots2d[bucket]                              # (m, BUCKET)
            r, c = np.nonzero((self.tags2d[bucket] == tag[:, None]) & (ids >= 0))
            cand = ids[r, c]
            ok = entry_key[cand] == key[rows[r]]
            r, cand = r[ok], cand[ok]
            first = np.unique(r, return_index=True)[1]              # row-major: lowest slot
            out[rows[r[first]]] = cand[first]
            more = self.overflow[bucket] > 0
            more[r] = False
            if not more.any():
                break
            rows, bucket, tag = rows[more], (bucket[more] + 1) & self.bmask, tag[more]
        return out

    def place(self, bucket: NDArray[np.int64], tag: NDArray[np.uint16],
              ids: NDArray[np.int32]) -> NDArray[np.int64]:
        """Put ids (with their tags) in the first bucket from home with a free slot, in
        batch order; count every full bucket passed in ``overflow``. Returns the slots."""
        where = np.empty(ids.size, dtype=np.int64)
        rows = np.arange(ids.size)
        while rows.size:
            free = self.slots2d[bucket] == EMPTY
            if rows.size > 1:
                order = np.argsort(bucket, kind="stable")
                rows, bucket, tag, free = rows[order], bucket[order], tag[order], free[order]
                k = np.arange(rows.size)
                start = np.ones(rows.size, dtype=bool)
                np.not_equal(bucket[1:], bucket[:-1], out=start[1:])
                rank = k - np.maximum.accumulate(np.where(start, k, 0))  # place in its bucket's queue
            else:
                rank = np.zeros(1, dtype=np.int64)
            # the (rank+1)-th free slot of the bucket, if there is one
            pos = np.count_nonzero(np.cumsum(free, axis=1) <= rank[:, None], axis=1)
            slot = (bucket << BUCKET_BITS) + pos
            fits = pos < BUCKET
            if fits.all():
                self.slots[slot] = ids[rows]
                self.tags[slot] = tag
                where[rows] = slot
                break
            put = slot[fits]
            self.slots[put] = ids[rows[fits]]
            self.tags[put] = tag[fits]
            where[rows[fits]] = put
            passed = bucket[~fits]
            np.add.at(self.overflow, passed, 1)
            rows, bucket, tag = rows[~fits], (passed + 1) & self.bmask, tag[~fits]
        return where

    def unplace(self, slot: NDArray[np.int64], home: NDArray[np.int64]) -> None:
        """Empty these slots, and take their entries out of the overflow counts they raised."""
        self.slots[slot] = EMPTY
        self.tags[slot] = 0
        passed = ((slot >> BUCKET_BITS) - home) & self.bmask      # full buckets passed
        far = passed > 0
        if far.any():
            home, passed = home[far], passed[far]
            for step in range(int(passed.max())):
                np.subtract.at(self.overflow, (home[passed > step] + step) & self.bmask, 1)


def probe_one(probe: tuple, a: int, b: int) -> int:
    """BucketIndex.find for one key of words a (A) and b (B). The home bucket's first tag match
    settles almost every key; probe_rest does the rest in the same order."""
    (k0, k1, k2), shift, tags, slots, words, a_col = probe[:6]
    h = ((a ^ ((b * k0) & _MASK64)) * k1) & _MASK64       # key_hash_one, inlined
    h = ((h ^ (h >> 32)) * k2) & _MASK64
    lo = (h >> shift) << 5                # byte offset of the home bucket's first tag
    at = tags.find(((h >> 32) & 0xFFFF).to_bytes(2, _BYTEORDER), lo, lo + 2 * BUCKET)
    if at >= 0 and not at & 1:
        i = slots[at >> 1]                # EMPTY reads the last row of words: zeros
        if words[2 * i + a_col] == a and words[2 * i + 1 - a_col] == b:
            return i
    return probe_rest(probe, a, b, h)


def probe_rest(probe: tuple, a: int, b: int, h: int) -> int:
    """The full probe for one key (hash h): each bucket's tag matches searched as two bytes
    in its slice of the tag buffer (even offsets only) and their entries' words
    compared, then the next bucket while the overflow count says so."""
    _, shift, tags, slots, words, a_col, bmask, nbuckets, overflow = probe
    bucket = h >> shift
    tag = ((h >> 32) & 0xFFFF).to_bytes(2, _BYTEORDER)
    for _ in range(nbuckets):
        lo = bucket << 5
        hi = lo + 2 * BUCKET
        at = tags.find(tag, lo, hi)
        while at >= 0:
            if not at & 1:
                i = slots[at >> 1]
                if i >= 0 and words[2 * i + a_col] == a and words[2 * i + 1 - a_col] == b:
                    return i
            at = tags.find(tag, at + 1, hi)
        if not overflow[bucket]:
            return -1
        bucket = (bucket + 1) & bmask
    return -1
