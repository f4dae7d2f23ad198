"""Internet checksum: the full RFC 1071 sum and the RFC 1624 incremental update.

What it does: computes the 16-bit one's complement checksum of a byte string
(`full`, for tests, ICMP and the rare UDP-without-checksum case) and patches an
existing checksum after 16-bit words change (`adjust`, `adjust32`), vectorised
over numpy arrays so the NAT patches a whole batch with a handful of array ops.

What it does not do: know where checksums live in a header (parse.py and nat.py
do), or handle CHECKSUM_PARTIAL fields from offloading NICs (those hold the
uncomplemented pseudo-header sum and are adjusted without the final `~`).

Mirrors: csum_fold / csum_replace2 / csum_replace4 / inet_proto_csum_replace4 in
include/net/checksum.h, which use RFC 1624 eqn 3 for the same reason we do: eqn 2
(`HC - ~m - m'`) can produce 0xFFFF where a full recomputation gives 0x0000.
"""

from __future__ import annotations

import numpy as np

_MASK16 = 0xFFFF


def _sum_words(data) -> int:
    """Plain (unfolded) sum of the big-endian 16-bit words of `data`, odd byte padded with 0."""
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) \
        else np.asarray(data, dtype=np.uint8).ravel()
    if arr.size & 1:
        arr = np.concatenate([arr, np.zeros(1, np.uint8)])   # RFC 1071 §4.1: pad with a zero octet
    words = arr.view(">u2")
    return int(words.sum(dtype=np.uint64))


def fold32(x):
    """End-around-carry fold of a 32-bit sum to 16 bits (csum_fold without the final ~).

    Works on Python ints and on numpy unsigned arrays; any value below 2**32 folds
    correctly in two steps: after the first it is at most 0x1FFFE.
    """
    if isinstance(x, np.ndarray):
        x = x.astype(np.uint32, copy=False)
        x = (x & _MASK16) + (x >> 16)
        return ((x & _MASK16) + (x >> 16)).astype(np.uint16)
    x = int(x)
    while x > _MASK16:                      # ints may be wider than 32 bits
        x = (x & _MASK16) + (x >> 16)
    return x


def full(data) -> int:
    """RFC 1071 checksum of `data` (bytes or a uint8 array): the value to store in the field.

    Zero the checksum field before calling. Over data that already contains a
    correct checksum, the result is 0 (that is how to verify one).
    """
    return ~fold32(_sum_words(data)) & _MASK16


def _is_scalar(*values) -> bool:
    return all(np.ndim(v) == 0 and not isinstance(v, np.ndarray) for v in values)


def adjust(csum, old16, new16):
    """RFC 1624 eqn 3 for 16-bit words m → m': HC' = ~(~HC + ~m + m').

    `csum` is an int or an array of checksums. `old16`/`new16` either have the
    same shape (one changed word per checksum) or one more trailing axis (several
    changed words per checksum, e.g. shape (n, 3) for address high, address low
    and port). A scalar `csum` gives a plain int; an array `csum` a uint16 array.
    """
    if _is_scalar(csum, old16, new16):
        total = (~int(csum) & _MASK16) + (~int(old16) & _MASK16) + (int(new16) & _MASK16)
        return ~fold32(total) & _MASK16
    hc = np.asarray(csum).astype(np.uint32)
    old = np.asarray(old16).astype(np.uint32)
    new = np.asarray(new16).astype(np.uint32)
    delta = (~old & _MASK16) + (new & _MASK16)             # ~m + m' per word, < 2**17
    if delta.ndim > hc.ndim:
        delta = delta.sum(axis=-1, dtype=np.uint32)         # < 2**17 per word: fine for < 2**15 words
    total = np.asarray((~hc & _MASK16) + delta)             # RFC 1624 eqn 3: ~HC + ~m + m'
    result = ~fold32(total)
    return int(result) if result.ndim == 0 else result


def split32(x):
    """A 32-bit value (int or uint32 array) as its (high, low) 16-bit words."""
    if _is_scalar(x):
        x = int(x)
        return (x >> 16) & _MASK16, x & _MASK16
    x = np.asarray(x).astype(np.uint32)
    return x >> 16, x & _MASK16


def adjust32(csum, old32, new32):
    """Adjust `csum` for a 32-bit field change (an IPv4 address): both halves at once.

    As inet_proto_csum_replace4 / csum_replace4. Scalar in, scalar out; arrays
    broadcast like `adjust`.
    """
    old_hi, old_lo = split32(old32)
    new_hi, new_lo = split32(new32)
    if _is_scalar(csum, old32, new32):
        return adjust(adjust(csum, old_hi, new_hi), old_lo, new_lo)
    old = np.stack([old_hi, old_lo], axis=-1)
    new = np.stack([new_hi, new_lo], axis=-1)
    return adjust(csum, old, new)


def rows_sum(words: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Unfolded per-row sums of a (n, k) array of 16-bit words, optionally masked (uint64).

    Building block for vectorised full checksums over many rows; fold with fold32
    after bringing the sum below 2**32 (`fold_wide`).
    """
    w = words.astype(np.uint64)
    if mask is not None:
        w = w * mask
    return w.sum(axis=-1, dtype=np.uint64)


def fold_wide(x: np.ndarray) -> np.ndarray:
    """Fold a uint64 array of sums (any size) to 16 bits."""
    x = x.astype(np.uint64)
    x = (x & 0xFFFFFFFF) + (x >> 32)          # < 2**33
    x = (x & _MASK16) + (x >> 16)             # < 2**18
    return fold32(x)
