"""EDGE: connection sync between the two routers, on the daemon's asyncio loop.

What it does: while this router is MASTER it sends, every `sync_interval_s`,
the connections created or changed since the last send (connsync.export_changes
run on the data-path thread through `datapath.call`) as IPVS sync v1 datagrams;
it sends a full snapshot instead when it has just become master or a backup has
appeared. While BACKUP it imports what it receives (connsync.import_entries,
again on the data-path thread), so a takeover finds the established
connections already in its table, bound to its own copy of the real servers.

How a master learns that a backup appeared: VRRP backups are silent, so every
non-master sends an empty sync v1 message (nr_conns 0, a valid datagram a kernel
backup would ignore) every HELLO_INTERVAL_S; a master that hears one from an
address it has not heard within PEER_TIMEOUT_S sends a full snapshot next.

What it does not do: decide roles (it asks `role()`), or choose what a
connection's state means (connsync, ha/sync.py). Transport: ha/net.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from ipaddress import IPv4Address
from typing import Callable

from userlb import connsync
from userlb.ha import sync as wire
from userlb.ha.config import HaConfig
from userlb.ha.heartbeat import Role

log = logging.getLogger("userlb.ha.sync")

HELLO_INTERVAL_S = 1.0
PEER_TIMEOUT_S = 3.0


class SyncStream:
    """Sends (master) or imports (backup) connection-table changes; see the module docstring."""

    def __init__(self, config: HaConfig, link, datapath, role: Callable[[], Role]) -> None:
        self.config = config
        self.link = link
        self.datapath = datapath
        self.role = role
        self.counters: Counter[str] = Counter()
        self._full = False
        self._peers: dict[IPv4Address, float] = {}
        self._last_hello = float("-inf")
        self._task: asyncio.Task | None = None
        # The partner's address on the sync segment, when configured; otherwise any sender.
        sync_if = config.sync_interface or config.private_interface or config.interface
        partner = config.peer if sync_if == config.interface else config.peer_private
        self._allowed = frozenset() if partner is None else frozenset({partner})
        self._own = frozenset(a for a in (config.primary, config.private_address) if a is not None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ha-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def became_master(self) -> None:
        """The next send is a full snapshot (a backup may hold less than we do)."""
        self._full = True

    # ---- sending ------------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self.role() is Role.MASTER:
                    await self._send_changes()
                elif loop.time() - self._last_hello >= HELLO_INTERVAL_S:
                    self._last_hello = loop.time()
                    self.link.send_sync(wire.encode_message(self.config.syncid, []))
                    self.counters["hellos_sent"] += 1
            except Exception:          # never let sync take the HA loop down
                self.counters["errors"] += 1
                log.exception("connection sync step failed")
            await asyncio.sleep(self.config.sync_interval_s)

    async def _send_changes(self) -> None:
        everything, self._full = self._full, False
        entries = await asyncio.wrap_future(self.datapath.call(
            lambda engine, now: connsync.export_changes(engine, now, everything)))
        conns = connsync.to_sync_conns(entries)
        for datagram in wire.encode_batch(self.config.syncid, conns):
            if self.link.send_sync(datagram):
                self.counters["messages_sent"] += 1
        self.counters["conns_sent"] += len(conns)
        self.counters["snapshots_sent"] += everything

    # ---- receiving ------------------------------------------------------------------------------
    def on_datagram(self, data: bytes, source: IPv4Address, now: float) -> None:
        """One datagram from the sync socket."""
        if source in self._own:
            return
        if self._allowed and source not in self._allowed:
            self.counters["rejected_source"] += 1
            return
        try:
            message = wire.decode_message(data, self.config.syncid)
        except wire.SyncError as err:
            self.counters[f"dropped_{err.reason.name.lower()}"] += 1
            return
        if not message.conns:
            self._hello(source, now)
        elif self.role() is Role.MASTER:
            self.counters["ignored_as_master"] += 1     # split brain: each keeps its own table
        else:
            self._import(message)

    def _hello(self, source: IPv4Address, now: float) -> None:
        self.counters["hellos_received"] += 1
        last = self._peers.get(source)
        if last is None or now - last > PEER_TIMEOUT_S:
            log.info("sync peer %s appeared: full snapshot next", source)
            self._full = True
        self._peers[source] = now

    def _import(self, message: wire.SyncMessage) -> None:
        entries = connsync.from_sync_conns(message.conns)
        self.counters["messages_received"] += 1
        self.counters["conns_received"] += len(message.conns)
        if not entries:
            return
        fut = self.datapath.call(lambda engine, now: connsync.import_entries(engine, entries, now))
        fut.add_done_callback(self._imported)

    def _imported(self, fut) -> None:       # runs on the data-path thread: counters only
        if fut.exception() is not None:
            self.counters["import_errors"] += 1
        else:
            self.counters["conns_imported"] += fut.result()

    def status(self) -> dict:
        return {"enabled": True, "interface": self.link.sync.ifname if self.link.sync else "",
                "peers": sorted(str(p) for p in self._peers), **self.counters}
