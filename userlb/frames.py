"""FrameBatch: a batch of raw IPv4 datagrams in one preallocated uint8 matrix.

Row i holds one datagram from byte 0; `length[i]` is how many bytes of it are
valid. The TUN edge reads straight into the rows (no per-packet objects); the
pure core (parse, nat) reads and rewrites them in place. This module knows
nothing about protocols.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

DEFAULT_SNAPLEN = 2048   # > TUN MTU 1500; a frame that fills a row is treated as cut (OVERSIZE)
DEFAULT_CAPACITY = 256
OFFLOAD_SNAPLEN = 65550  # > the 65,535-byte IPv4 maximum: a TSO super-packet fits a row
VNET_HDR_LEN = 10        # struct virtio_net_hdr (include/uapi/linux/virtio_net.h)
VNET_F_NEEDS_CSUM = 1    # the L4 checksum field holds the uncomplemented pseudo-header sum


class FrameBatch:
    """`capacity` rows of `snaplen` bytes, of which the first `count` are in use."""

    __slots__ = ("buf", "length", "count", "vnet")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, snaplen: int = DEFAULT_SNAPLEN,
                 vnet: bool = False, inline_vnet: bool = False) -> None:
        self.length = np.zeros(capacity, dtype=np.int32)
        self.count = 0
        # With TUN offload: each row's virtio_net_hdr, kept apart so the datagram stays at
        # byte 0 of its row; None without offload (every checksum is complete).
        # inline_vnet: the header sits in the VNET_HDR_LEN bytes just before its row (the
        # first row's in a leading pad, the others' in the tail of the row above), so one
        # read fills header and datagram and one write sends them (tunring.py). A frame
        # longer than snaplen - VNET_HDR_LEN would share bytes with the next row's header.
        if vnet and inline_vnet:
            flat = np.zeros(VNET_HDR_LEN + capacity * snaplen, dtype=np.uint8)
            self.buf = flat[VNET_HDR_LEN:].reshape(capacity, snaplen)
            self.vnet = np.lib.stride_tricks.as_strided(
                flat, (capacity, VNET_HDR_LEN), (snaplen, 1), writeable=True)
        else:
            self.buf = np.zeros((capacity, snaplen), dtype=np.uint8)
            self.vnet = np.zeros((capacity, VNET_HDR_LEN), dtype=np.uint8) if vnet else None

    def partial(self, n: int | None = None) -> np.ndarray | None:
        """Boolean mask of rows 0..n-1 flagged NEEDS_CSUM, or None without offload."""
        if self.vnet is None:
            return None
        n = self.count if n is None else n
        return (self.vnet[:n, 0] & VNET_F_NEEDS_CSUM) != 0

    @property
    def capacity(self) -> int:
        return self.buf.shape[0]

    @property
    def snaplen(self) -> int:
        return self.buf.shape[1]

    @classmethod
    def from_frames(cls, frames: Iterable[bytes], snaplen: int = DEFAULT_SNAPLEN) -> "FrameBatch":
        """Build a batch from byte strings (tests, pcaps). Frames longer than snaplen are cut."""
        frames = list(frames)
        batch = cls(max(1, len(frames)), snaplen)
        for frame in frames:
            batch.append(frame)
        return batch

    def append(self, frame: bytes) -> None:
        """Copy one frame into the next free row (cut to snaplen, as a short read would)."""
        i = self.count
        n = min(len(frame), self.snaplen)
        self.buf[i, :n] = np.frombuffer(frame, dtype=np.uint8, count=n)
        self.length[i] = n
        self.count = i + 1

    def tail(self, start: int) -> "FrameBatch":
        """Rows start..count-1 as a batch sharing this one's memory (row i is row start+i)."""
        return self.window(start, None, self.count - start)

    def window(self, start: int, end: int | None, count: int) -> "FrameBatch":
        """Rows start..end-1 (end None: to the last) as a batch sharing this one's memory,
        of which the first `count` are in use (row i is row start+i)."""
        view = FrameBatch.__new__(FrameBatch)
        view.buf, view.length = self.buf[start:end], self.length[start:end]
        view.vnet = None if self.vnet is None else self.vnet[start:end]
        view.count = count
        return view

    def clear(self) -> None:
        self.count = 0

    def frame(self, i: int) -> bytes:
        """Row i's valid bytes."""
        return self.buf[i, : self.length[i]].tobytes()

    def frames(self) -> list[bytes]:
        return [self.frame(i) for i in range(self.count)]
