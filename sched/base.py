"""The scheduler plug-in interface and the loop-based batch form.

A scheduler picks a row of a DestTable (a service's real servers in kernel scan
order) for a new flow, or NO_DEST. It mirrors struct ip_vs_scheduler: the
dests_changed hook stands for add_dest/del_dest/upd_dest, schedule() for
->schedule(). A scheduler never binds connections: the engine does, and
schedule_batch() binds on a scratch copy only so that each pick sees the
previous ones, exactly as scheduling the flows one at a time would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from userlb.services import IPPROTO_TCP, DestTable

NO_DEST = -1


@dataclass(frozen=True)
class Flow:
    """The first packet of a new connection, as schedulers see it (host-order ints)."""

    proto: int
    saddr: int
    sport: int
    daddr: int
    dport: int


@dataclass
class FlowBatch:
    """Many new flows as parallel arrays (proto u8, saddr u32, sport u16, daddr u32, dport u16)."""

    proto: np.ndarray
    saddr: np.ndarray
    sport: np.ndarray
    daddr: np.ndarray
    dport: np.ndarray

    def __len__(self) -> int:
        return len(self.saddr)

    def __getitem__(self, i: int) -> Flow:
        return Flow(int(self.proto[i]), int(self.saddr[i]), int(self.sport[i]),
                    int(self.daddr[i]), int(self.dport[i]))

    @classmethod
    def from_flows(cls, flows: list[Flow]) -> "FlowBatch":
        return cls(np.array([f.proto for f in flows], np.uint8),
                   np.array([f.saddr for f in flows], np.uint32),
                   np.array([f.sport for f in flows], np.uint16),
                   np.array([f.daddr for f in flows], np.uint32),
                   np.array([f.dport for f in flows], np.uint16))


class Scheduler(Protocol):
    name: ClassVar[str]

    def dests_changed(self, dests: DestTable) -> None: ...

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int: ...

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray: ...

    def expire(self, now: float) -> None: ...


def binds_active(proto: int) -> bool:
    """A new TCP connection (opened by a SYN) is active at once; UDP never is."""
    return proto == IPPROTO_TCP


class BaseScheduler:
    """Default hooks and the reference batch form: schedule() on each flow in turn."""

    name: ClassVar[str] = ""

    def __init__(self, flags: tuple[str, ...] = (), **params) -> None:
        self.flags = tuple(flags)
        self.params = params

    def dests_changed(self, dests: DestTable) -> None:
        """Called after any add/remove/edit of the service's servers."""

    def schedule(self, dests: DestTable, flow: Flow, now: float) -> int:
        raise NotImplementedError

    def schedule_batch(self, dests: DestTable, flows: FlowBatch, now: float) -> np.ndarray:
        if len(flows) == 1:                 # nothing to bind before a later pick: no scratch
            return np.array([self.schedule(dests, flows[0], now)], np.int32)
        scratch = dests.copy()
        picks = np.full(len(flows), NO_DEST, np.int32)
        for i in range(len(flows)):
            flow = flows[i]
            row = self.schedule(scratch, flow, now)
            picks[i] = row
            if row != NO_DEST:
                scratch.bind(row, binds_active(flow.proto))
        return picks

    def expire(self, now: float) -> None:
        """Garbage-collect time-based state (lblc, lblcr); no-op for others."""
