"""Kernel-exact hash functions for dh, sh, lblc, lblcr and mh, scalar and numpy.

Mirrors include/linux/hash.h (hash_32), lib/siphash.c (hsiphash on a 64-bit
host, i.e. SipHash-1-3 with 64-bit key words, truncated to 32 bits) and the
per-scheduler key helpers ip_vs_dh_hashkey, ip_vs_sh_hashkey,
ip_vs_lblc_hashkey and ip_vs_mh_hashkey (IPv4 only: the IPv6 XOR fold is not
needed). Does not pick servers; every function is pure.
"""

from __future__ import annotations

import numpy as np

GOLDEN_RATIO_32 = 0x61C88647          # include/linux/hash.h
MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF

# SipHash initial state, "somepseudorandomlygeneratedbytes" [siphash.h]
SIP_CONST = (0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573)

# ip_vs_mh.c generate_hash_secret(): fixed, not random, so tables are reproducible
MH_HASH1 = (2654435761, 2654435761)
MH_HASH2 = (2654446892, 2654446892)


# -- hash_32 ------------------------------------------------------------------------------
def hash_32(value: int, bits: int) -> int:
    # as hash.h: (val * GOLDEN_RATIO_32) >> (32 - bits), the high bits of a u32 product
    return ((value * GOLDEN_RATIO_32) & MASK32) >> (32 - bits)


def hash_32_array(values: np.ndarray, bits: int) -> np.ndarray:
    return hash_32_u32(u32_array(values), bits).astype(np.int64)


def hash_32_u32(values: np.ndarray, bits: int) -> np.ndarray:
    """hash_32 of a uint32 array as uint32: numpy's uint32 product wraps as C's does."""
    return (values * np.uint32(GOLDEN_RATIO_32)) >> np.uint32(32 - bits)


def u32_array(values) -> np.ndarray:
    """Values mod 2**32 as uint32 (any integer dtype; two's complement for negatives)."""
    values = np.asarray(values)
    if values.dtype == np.uint32:
        return values
    if values.dtype.kind == "u" and values.dtype.itemsize < 4:
        return values.astype(np.uint32)
    return (values.astype(np.int64, copy=False) & MASK32).astype(np.uint32)


def addr_hash(addr: int, bits: int) -> int:
    """dh (8 bits), lblc/lblcr (10 bits): hash_32(ntohl(addr), bits)."""
    return hash_32(addr, bits)


def sh_hash(addr: int, port: int, offset: int = 0, bits: int = 8) -> int:
    # as ip_vs_sh_hashkey: (offset + hash_32(ntohs(port) + ntohl(addr), bits)) & mask
    return (offset + hash_32((port + addr) & MASK32, bits)) & ((1 << bits) - 1)


def sh_hash_array(addrs: np.ndarray, ports: np.ndarray, bits: int = 8) -> np.ndarray:
    # uint32 + uint32 wraps mod 2**32, as the kernel's u32 sum does
    return hash_32_u32(u32_array(addrs) + u32_array(ports), bits).astype(np.int64)


# -- hsiphash (64-bit host) -----------------------------------------------------------------
def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & MASK64


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    # SIPHASH_PERMUTATION: rotations 13, 32, 16, 21, 17, 32
    v0 = (v0 + v1) & MASK64; v1 = _rotl(v1, 13); v1 ^= v0; v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & MASK64; v3 = _rotl(v3, 16); v3 ^= v2
    v0 = (v0 + v3) & MASK64; v3 = _rotl(v3, 21); v3 ^= v0
    v2 = (v2 + v1) & MASK64; v1 = _rotl(v1, 17); v1 ^= v2; v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def hsiphash(data: bytes, key: tuple[int, int]) -> int:
    """The kernel's hsiphash() where BITS_PER_LONG == 64: SipHash-1-3, low 32 bits."""
    k0, k1 = key
    v0, v1, v2, v3 = (SIP_CONST[0] ^ k0, SIP_CONST[1] ^ k1, SIP_CONST[2] ^ k0,
                      SIP_CONST[3] ^ k1)
    n = len(data)
    b = (n << 56) & MASK64
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)   # one compression round
        v0 ^= m
    b |= int.from_bytes(data[end:], "little")
    v3 ^= b
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):                                # three finalization rounds
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return (v0 ^ v1 ^ v2 ^ v3) & MASK32


def hsiphash_u32(value: int, key: tuple[int, int]) -> int:
    """hsiphash(&v, 4, key) of a u32 as x86 stores it (little-endian)."""
    return hsiphash((value & MASK32).to_bytes(4, "little"), key)


def _rotl_inplace(x: np.ndarray, b: int, tmp: np.ndarray) -> None:
    np.left_shift(x, np.uint64(b), out=tmp)
    x >>= np.uint64(64 - b)
    x |= tmp


def hsiphash_u32_array(values: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """hsiphash_u32 over an array (numpy uint64 arithmetic wraps like u64)."""
    return hsiphash_u32_raw(u32_array(values), key).astype(np.int64)


def hsiphash_u32_raw(values: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """hsiphash_u32 of a uint32 array, as uint64; every step in place on four word arrays.

    The first round runs while v0, v1 and v2 are still the same for every value,
    so their parts of it are Python integers: 15 numpy calls instead of 26.
    """
    k0, k1 = key
    shape, values = values.shape, values.reshape(-1)
    tmp = np.empty(len(values), np.uint64)
    b = values.astype(np.uint64)
    b |= np.uint64(4 << 56)                             # len 4 < 8: all bytes go in b
    c0, c1, c2 = SIP_CONST[0] ^ k0, SIP_CONST[1] ^ k1, SIP_CONST[2] ^ k0
    v3 = b ^ np.uint64(SIP_CONST[3] ^ k1)
    # SIPHASH_PERMUTATION, first (compression) round
    c0 = (c0 + c1) & MASK64; c1 = _rotl(c1, 13) ^ c0; c0 = _rotl(c0, 32)
    v2 = v3 + np.uint64(c2); _rotl_inplace(v3, 16, tmp); v3 ^= v2
    v0 = v3 + np.uint64(c0); _rotl_inplace(v3, 21, tmp); v3 ^= v0
    v2 += np.uint64(c1); v1 = v2 ^ np.uint64(_rotl(c1, 17)); _rotl_inplace(v2, 32, tmp)
    v0 ^= b
    v2 ^= np.uint64(0xFF)
    for _ in range(3):                                # three finalization rounds
        v0 += v1; _rotl_inplace(v1, 13, tmp); v1 ^= v0; _rotl_inplace(v0, 32, tmp)
        v2 += v3; _rotl_inplace(v3, 16, tmp); v3 ^= v2
        v0 += v3; _rotl_inplace(v3, 21, tmp); v3 ^= v0
        v2 += v1; _rotl_inplace(v1, 17, tmp); v1 ^= v2; _rotl_inplace(v2, 32, tmp)
    v0 ^= v1
    v2 ^= v3
    v0 ^= v2
    v0 &= np.uint64(MASK32)
    return v0.reshape(shape)


# -- mh ------------------------------------------------------------------------------------
def mh_hash(addr: int, port: int, key: tuple[int, int], offset: int = 0) -> int:
    # as ip_vs_mh_hashkey: v = offset + ntohs(port) + ntohl(addr) (u32), hsiphash(&v, 4)
    return hsiphash_u32((offset + port + addr) & MASK32, key)


def mh_hash_array(addrs: np.ndarray, ports: np.ndarray, key: tuple[int, int],
                  offsets: np.ndarray | int = 0) -> np.ndarray:
    total = u32_array(addrs) + u32_array(ports) + u32_array(offsets)   # wraps as u32
    return hsiphash_u32_raw(total, key).astype(np.int64)
