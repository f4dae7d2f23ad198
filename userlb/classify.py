"""Which virtual service a packet is for: vectorised (protocol, VIP, port) lookup.

Mirrors ip_vs_service_find's exact match and its port-0 fallback (§3.8), and
tells packets to a VIP apart from everything else. Firewall-mark services are
not handled here (a TUN has no netfilter mark). Pure: arrays in,
arrays out.
"""

from __future__ import annotations

import numpy as np

from userlb.services import VirtualService, ip_to_int


def service_key(proto, vaddr, vport):
    """Pack (proto u8, vaddr u32, vport u16) into one uint64 (arrays or ints)."""
    return ((np.asarray(proto, np.uint64) << np.uint64(48))
            | (np.asarray(vaddr, np.uint64) << np.uint64(16))
            | np.asarray(vport, np.uint64))


class ServiceIndex:
    """Sorted service keys and VIP addresses for searchsorted lookups."""

    def __init__(self, services: list[VirtualService] | tuple[VirtualService, ...]) -> None:
        keys = service_key([s.proto for s in services], [ip_to_int(s.vip) for s in services],
                           [s.port for s in services]) if services else np.zeros(0, np.uint64)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.service_of_key = order.astype(np.int32)
        self.vips = np.unique(np.array([ip_to_int(s.vip) for s in services], np.uint32))
        self.has_port_zero = any(s.port == 0 for s in services)

    def is_vip(self, addrs: np.ndarray) -> np.ndarray:
        if not len(self.vips):
            return np.zeros(len(addrs), bool)
        pos = np.minimum(np.searchsorted(self.vips, addrs), len(self.vips) - 1)
        return self.vips[pos] == addrs

    def lookup(self, proto: np.ndarray, vaddr: np.ndarray, vport: np.ndarray) -> np.ndarray:
        """Service index per packet, -1 where no service matches."""
        if not len(self.keys):
            return np.full(len(proto), -1, np.int32)
        found = self._exact(service_key(proto, vaddr, vport))
        if self.has_port_zero and (found < 0).any():     # step (4): <protocol, vaddr, 0>
            miss = found < 0
            found[miss] = self._exact(service_key(proto[miss], vaddr[miss], 0))
        return found

    def _exact(self, keys: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[pos] == keys, self.service_of_key[pos], -1).astype(np.int32)
