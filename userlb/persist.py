"""Persistence templates (ipvsadm -p / -M): a client network sticks to one real server.

Mirrors ip_vs_sched_persist and ip_vs_check_template (spec/ipvs.md §3.7, §3.6):
- key <protocol, client address & netmask, cport 0, vaddr, vport>, where vport is
  the packet's port when it equals the service port (FTP's 21 uses 0) and 0 for
  port-0 services;
- a valid template (its server still in the service) picks the server and the
  scheduler is not called; otherwise the scheduler picks and a template is made
  with dport = the server's port (0 for port-0 services) and the persistence
  timeout;
- every new connection through a template re-arms it; a template whose timer
  fires while it still controls connections is re-armed with 60 s and keeps a
  60 s timeout from then on;
- templates count in persistconns, not active/inactive; a template becomes
  ASSURED when a controlled TCP connection reaches ESTABLISHED or a controlled
  UDP connection sees a reply.
Templates live in the connection table with the TEMPLATE flag and protocol
number | 0x80, so no packet lookup can ever hit one. Pure: `now` passed in.
"""

from __future__ import annotations

import ipaddress

import numpy as np

from userlb import tcpstate
from userlb.conntable import CONN_F_TEMPLATE
from userlb.sched import NO_DEST, Flow

TEMPLATE_PROTO_BIT = 0x80
TEMPLATE_REARM_S = 60.0              # ip_vs_conn_expire: a template still in use
FTP_PORT = 21
NONE, ASSURED = 0, 1
TEMPLATE_STATE_NAMES = ("NONE", "ASSURED")


def _one(value, dtype) -> np.ndarray:
    return np.array([value], dtype)


class Templates:
    """Template bookkeeping next to an engine's connection table."""

    def __init__(self, table) -> None:
        self.table = table
        self.control = np.full(table.capacity, -1, np.int32)   # conn → its template
        self.n_control = np.zeros(table.capacity, np.int32)    # template → live conns
        self.timeout_s = np.zeros(table.capacity)              # template's own timeout

    @staticmethod
    def template_vport(config, dport: int) -> int:
        if dport == config.port and config.port != FTP_PORT:
            return dport
        return 0

    def pick(self, engine, svc: int, flow: Flow, now: float) -> tuple[int, int]:
        """(dest row, template id) for a new flow of persistent service `svc`.

        The connection keeps the packet's port when the template's vport is 0
        (port-0 and fwmark services); see keeps_client_port()."""
        rt = engine.services[svc]
        cfg = rt.config
        mask = int(ipaddress.IPv4Address(cfg.netmask))
        snet = flow.saddr & mask
        if cfg.fwmark:           # <IPPROTO_IP, snet, 0, htonl(fwmark), 0>
            proto, vaddr, vport = 0, cfg.fwmark, 0
        else:
            proto, vaddr, vport = flow.proto, flow.daddr, self.template_vport(cfg, flow.dport)
        key = (_one(proto | TEMPLATE_PROTO_BIT, np.uint8), _one(snet, np.uint32),
               _one(0, np.uint16), _one(vaddr, np.uint32), _one(vport, np.uint16))
        t = self.table
        tid = int(t.lookup_in(*key)[0])
        if tid >= 0 and t.dest[tid] >= 0:
            t.expires[tid] = now + self.timeout_s[tid]
            return int(t.dest[tid]), tid
        if tid >= 0:                                   # its server is gone: disable it
            engine.remove_ids(np.array([tid]))
        row = rt.scheduler.schedule(rt.dests, flow, now)
        if row == NO_DEST:
            return NO_DEST, -1
        engine.make_room(1, now)
        dport = int(rt.dests.port[row]) if vport else 0
        tid = int(t.insert(*key, _one(rt.dests.addr[row], np.uint32), _one(dport, np.uint16),
                           _one(svc, np.int32), _one(row, np.int32), _one(NONE, np.uint8),
                           _one(CONN_F_TEMPLATE, np.uint16),
                           _one(now + cfg.persistent_s, np.float64))[0])
        if tid < 0:
            return row, -1
        self.timeout_s[tid] = cfg.persistent_s
        self.n_control[tid] = 0
        rt.dests.persistconns[row] += 1
        return row, tid

    def keeps_client_port(self, engine, svc: int, dport: int) -> bool:
        cfg = engine.services[svc].config
        return bool(cfg.fwmark) or self.template_vport(cfg, dport) == 0

    def attach(self, conn_ids: np.ndarray, tids: np.ndarray) -> None:
        ok = tids >= 0
        self.control[conn_ids] = -1
        self.control[conn_ids[ok]] = tids[ok]
        np.add.at(self.n_control, tids[ok], 1)

    def is_template(self, ids: np.ndarray) -> np.ndarray:
        return (self.table.flags[ids] & CONN_F_TEMPLATE) != 0

    def assure(self, ids: np.ndarray, new_state: np.ndarray, inbound: np.ndarray,
               is_udp: np.ndarray) -> None:
        ctl = self.control[ids]
        hit = (ctl >= 0) & ((new_state == tcpstate.ESTABLISHED) | (is_udp & ~inbound))
        self.table.state[ctl[hit]] = ASSURED

    def split_due(self, due: np.ndarray, now: float) -> np.ndarray:
        """Of the entries whose timer fired, re-arm templates still in use; return the rest."""
        busy = self.is_template(due) & (self.n_control[due] > 0)
        keep = due[busy]
        self.timeout_s[keep] = TEMPLATE_REARM_S
        self.table.expires[keep] = now + TEMPLATE_REARM_S
        return due[~busy]

    def on_remove(self, ids: np.ndarray) -> None:
        """Unlink removed connections from their templates and removed templates from theirs."""
        ctl = self.control[ids]
        np.add.at(self.n_control, ctl[ctl >= 0], -1)
        self.control[ids] = -1
        templates = ids[self.is_template(ids)]
        if len(templates):
            self.control[np.isin(self.control, templates)] = -1
            self.n_control[templates] = 0
