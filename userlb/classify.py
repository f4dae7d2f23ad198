"""Which virtual service a packet is for: vectorised (protocol, VIP, port) lookup.

Mirrors ip_vs_service_find (§3.8): (1) firewall-mark services, (2) the exact
<protocol, vaddr, vport>, (4) the <protocol, vaddr, 0> port-0 fallback; and tells
packets to a VIP apart from everything else. A TUN has no netfilter mark, so a
fwmark service names the (protocol, address, port) triples that carry its mark
and they are matched here first. FTP's port-20 rule (3) is not implemented. Pure: arrays in,
arrays out.
"""

from __future__ import annotations

import numpy as np

from userlb.services import PROTOCOLS, VirtualService, ip_to_int


def service_key(proto, vaddr, vport):
    """Pack (proto u8, vaddr u32, vport u16) into one uint64 (arrays or ints)."""
    return ((np.asarray(proto, np.uint64) << np.uint64(48))
            | (np.asarray(vaddr, np.uint64) << np.uint64(16))
            | np.asarray(vport, np.uint64))


_DELETED = VirtualService("tcp", "0.0.0.0", 0, fwmark=-1)   # matches nothing


class ServiceIndex:
    """Sorted service keys and VIP addresses for searchsorted lookups."""

    def __init__(self, services: list[VirtualService | None] | tuple[VirtualService, ...]) -> None:
        """`services` by engine index; None marks a deleted service (its index stays unused)."""
        services = [s or _DELETED for s in services]
        triples = [(PROTOCOLS[p], ip_to_int(a), port, i)          # step (1): fwmark rules first
                   for i, s in enumerate(services) if s.fwmark for p, a, port in s.match]
        triples += [(s.proto, ip_to_int(s.vip), s.port, i)
                    for i, s in enumerate(services) if not s.fwmark and s is not _DELETED]
        if triples:
            proto, addr, port, owner = (np.array(c) for c in zip(*triples))
            keys = service_key(proto, addr.astype(np.uint32), port.astype(np.uint16))
        else:
            keys, owner = np.zeros(0, np.uint64), np.zeros(0, np.int32)
        keys, first = np.unique(keys, return_index=True)        # the first rule for a key wins
        self.keys = keys
        self.service_of_key = owner[first].astype(np.int32)
        self.vips = np.unique(np.array([a for _, a, _, _ in triples], np.uint32))
        self.has_port_zero = any(port == 0 for _, _, port, _ in triples)

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
